"""`lowres export`: a hand-built run folder (a tiny random Llama as the merged warmup model, a LoRA
adapter with nonzero B as the RLVR adapter, a recipe and eval results) exported and checked."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.evaluate import EvalResult
from lowres.recipe import dump_recipe, recipe_from_dict
from lowres.report import collect, results_markdown

PROMPTS = ("What is 2 + 3?", "Alice says: Bob is a knave.")


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in result.output, result.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """runs/tiny: recipe.yaml, merge/ (a random 2-layer Llama), rlvr/adapter/, eval/*/results.json, a plot."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lowres.models import resolve_model

    root = tmp_path_factory.mktemp("export")
    run = root / "runs" / "tiny"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    base = LlamaForCausalLM(config)
    base.save_pretrained(run / "merge")
    tokenizer.save_pretrained(run / "merge")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # nonzero: the adapter changes the model
    lora.save_pretrained(run / "rlvr" / "adapter")
    recipe = recipe_from_dict({
        "name": "tiny", "description": "a tiny run for the export test",
        "stages": ["warmup", "merge", "rlvr", "eval"],
        "model": {"name_or_path": str(run / "merge"), "chat_template": "r1"},
        "data": {"warmup": {"source": "kk-solver", "n_puzzles": 12, "people": [2]},
                 "target": {"task": "kk_easy", "n_examples": 16}},
        "output": {"dir": str(root / "runs")},
    }, "test")
    (run / "recipe.yaml").write_text(dump_recipe(recipe))
    for label, accuracy in (("base", 0.1), ("warmup", 0.3), ("rlvr", 0.5)):
        result = EvalResult(task="kk_easy", model=label, n_questions=8, n_samples=2, accuracy_mean=accuracy,
                            accuracy_std=0.05, pass_at_k={"1": accuracy}, format_error_rate=0.25,
                            mean_completion_tokens=40.0, truncated_rate=0.0)
        (run / "eval" / label).mkdir(parents=True)
        (run / "eval" / label / "results.json").write_text(json.dumps([dataclasses.asdict(result)]))
    (run / "comparison.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    return run


@pytest.fixture(scope="module")
def exported(tiny_run) -> Path:
    out = tiny_run.parent.parent / "export"
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(out), "--ollama", "tiny-r1"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_export_matches_merge_plus_adapter(tiny_run, exported):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported)
    ours = AutoModelForCausalLM.from_pretrained(exported).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_run / "merge"),
                                          tiny_run / "rlvr" / "adapter").eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_run / "merge").eval()
    differs = False
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            a = ours.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            b = reference.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            c = plain.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert a.tolist() == b.tolist()
        differs |= a.tolist() != c.tolist()
    assert differs, "the adapter changed nothing: the test would not catch a missing merge"


@pytest.mark.slow
def test_export_chat_template_reproduces_training_prompt(exported):
    from transformers import AutoTokenizer

    from lowres.prompting import render_prompt
    from lowres.tasks.base import r1_messages

    tokenizer = AutoTokenizer.from_pretrained(exported)
    messages = r1_messages("Is Alice a knight?")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == render_prompt(tokenizer, messages, "r1")
    # Without a system message, the R1 system prompt the model trained with is used.
    assert tokenizer.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False) == text
    assert (exported / "generation_config.json").is_file()


@pytest.mark.slow
def test_export_card_and_modelfile(tiny_run, exported):
    card = (exported / "README.md").read_text()
    table = results_markdown(collect([tiny_run]))
    assert table in card
    assert "```yaml" in card and "name: tiny" in card and "n_examples: 16" in card
    assert "kk_easy" in card and "kk-solver" in card
    # No warmup summary: the recipe's load_in_4bit (auto) as this CPU resolves it; the adapter moved the model.
    assert "- warmup: LoRA SFT on 12 solver-written" in card and "Warning" not in card
    assert "![comparison](comparison.png)" in card and (exported / "comparison.png").is_file()
    assert not (exported / "rlvr_reward.png").exists()
    modelfile = (exported / "Modelfile").read_text()
    assert modelfile.startswith("FROM .\n")
    assert 'TEMPLATE """' in modelfile and "Assistant: <think>{{ .Response }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """A conversation between User and Assistant.' in modelfile
    assert json.loads((exported / "export.json").read_text())["merge_check"]["prompts"] == 3


@pytest.mark.slow
def test_export_refuses_to_overwrite_without_force(tiny_run, exported):
    runner = CliRunner()
    before = (exported / "README.md").read_text()
    _one_line_error(runner.invoke(cli, ["export", str(tiny_run), "--out", str(exported)]), "--force")
    assert (exported / "README.md").read_text() == before
    again = runner.invoke(cli, ["export", str(tiny_run), "--out", str(exported), "--force"])
    assert again.exit_code == 0, again.output
    assert not (exported / "Modelfile").exists()  # rebuilt whole, without --ollama this time
    assert not exported.with_name(exported.name + ".partial").exists()


def test_push_to_hub_offline_is_one_line(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "o"), "--push-to-hub",
                                      "me/tiny"])
    _one_line_error(result, "HF_HUB_OFFLINE")
    assert not (tmp_path / "o").exists()


def test_bad_source_is_one_line(tmp_path):
    runner = CliRunner()
    _one_line_error(runner.invoke(cli, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]),
                    "no such folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(runner.invoke(cli, ["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]),
                    "neither a lowres run folder")


def test_missing_llama_cpp_converter_is_one_line(tiny_run, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "o"), "--gguf",
                                      "--llama-cpp", str(tmp_path)])
    _one_line_error(result, "convert_hf_to_gguf.py", "git clone")


@pytest.mark.slow
def test_a_qlora_run_whose_adapter_never_moved_is_exported_with_a_warning(tiny_run, tmp_path):
    """The card names a 4-bit warmup QLoRA, and an export that equals its base says so, on the CLI and in
    the card."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, run)
    (run / "warmup").mkdir()
    (run / "warmup" / "summary.json").write_text(json.dumps({"load_in_4bit": True, "steps": 1}))
    weights = load_file(run / "rlvr" / "adapter" / "adapter_model.safetensors")
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in weights.items()},
              run / "rlvr" / "adapter" / "adapter_model.safetensors")
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    warning = (f"the exported model equals {run / 'merge'}: the adapter {run / 'rlvr' / 'adapter'} is unchanged from "
               "initialisation (every LoRA B matrix is zero), so training changed nothing")
    assert f"export: warning: {warning}" in " ".join(result.output.split())
    card = (out / "README.md").read_text()
    assert f"**Warning: {warning}.**" in card
    assert "- warmup: QLoRA SFT on 12 solver-written Knights & Knaves traces (people [2], seed 0) (base weights in " \
           "4-bit NF4)" in card
    assert json.loads((out / "export.json").read_text())["unchanged"] == warning


def test_a_merged_warmup_that_never_trained_equals_the_base_model(tmp_path):
    """A run exported without RLVR exports its merged warmup model: the base model itself when the warmup
    adapter never moved; and after RLVR that never moved either, the export still equals the base."""
    import torch
    from safetensors.torch import save_file

    from lowres.export import Source, unchanged_note

    def adapter(folder, b):
        folder.mkdir(parents=True)
        save_file({"q_proj.lora_A.weight": torch.ones(4, 8), "q_proj.lora_B.weight": b},
                  folder / "adapter_model.safetensors")

    run = tmp_path / "runs" / "t"
    adapter(run / "warmup" / "adapter", torch.zeros(8, 4))
    recipe = recipe_from_dict({"name": "t", "model": {"name_or_path": "embedded:smollm2-135m"}}, "test")
    merged_only = Source(str(run / "merge"), None, "model", run_dir=run, recipe=recipe)
    assert unchanged_note(merged_only) == (
        f"the exported model equals embedded:smollm2-135m: the warmup adapter {run / 'warmup' / 'adapter'} is "
        "unchanged from initialisation (every LoRA B matrix is zero), so training changed nothing")
    adapter(run / "rlvr" / "adapter", torch.zeros(8, 4))
    both = Source(str(run / "merge"), run / "rlvr" / "adapter", "model", run_dir=run, recipe=recipe)
    assert unchanged_note(both).startswith(f"the exported model equals embedded:smollm2-135m: the adapter "
                                           f"{run / 'rlvr' / 'adapter'} and the warmup adapter")
    adapter(run / "rlvr2" / "adapter", torch.ones(8, 4))  # RLVR moved it: the export is a new model
    assert unchanged_note(Source(str(run / "merge"), run / "rlvr2" / "adapter", "model", run_dir=run,
                                 recipe=recipe)) is None


@pytest.mark.parametrize(("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)],
                         ids=["umask022", "umask027"])
def test_exported_files_get_the_umask_mode(tiny_run, tmp_path, umask, file_mode, folder_mode):
    """The weights, tokenizer, card, Modelfile and export record: what open() would give them, not owner-only."""
    out = tmp_path / "o"
    old = os.umask(umask)
    try:
        result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(out), "--ollama", "tiny-r1"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]
             if p.name != "comparison.png"}  # copied from the run with its own mode (as cp -p does)
    assert {"README.md", "Modelfile", "export.json", "config.json", "model.safetensors"} <= set(modes)
    assert modes == {name: folder_mode if (out / name).is_dir() else file_mode for name in modes}
