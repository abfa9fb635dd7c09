"""The training stages on CPU with the embedded SmolLM2-135M: warmup, QLoRA warmup, merge, GRPO, resume."""

import json
import re

import pytest

from lowres.recipe import recipe_from_dict
from lowres.tasks import Score, register_task

pytestmark = pytest.mark.slow


def make_recipe(tmp_path, **sections):
    raw = {
        "name": "t",
        "model": {"name_or_path": "embedded:smollm2-135m", "max_seq_length": 1024},
        "stages": ["warmup", "merge"],
        "data": {"warmup": {"source": "kk-solver", "n_puzzles": 12, "people": [2]}},
        "warmup": {"load_in_4bit": False, "learning_rate": 1e-3, "max_steps": 5, "per_device_train_batch_size": 2,
                   "gradient_accumulation_steps": 1, "save_steps": 2, "lora": {"r": 8, "lora_alpha": 16}},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(raw, "test")


def tensorboard_scalars(folder, tag):
    """(step, value) of one scalar in the TensorBoard event files under `folder` (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    points = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            points += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return points


def logged(path, key):
    return [r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r]


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    """One 5-step LoRA warmup on solver-written traces, shared by the tests that need an adapter."""
    from lowres.train.warmup import run_warmup

    tmp = tmp_path_factory.mktemp("warmup")
    recipe = make_recipe(tmp)
    return recipe, run_warmup(recipe)


def test_warmup_lowers_the_loss_and_writes_an_adapter(warmed):
    recipe, out = warmed
    losses = logged(out / "metrics.jsonl", "loss")
    assert len(losses) == 5
    assert losses[-1] < losses[0]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "tokenizer_config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["dropped_over_max_seq_length"] == 0
    assert "name: t" in (out / "recipe.yaml").read_text()


def test_too_long_traces_are_dropped_and_counted(tmp_path):
    from lowres.models import load_model_and_tokenizer
    from lowres.tasks.kk.task import solver_trace_rows
    from lowres.train.warmup import to_text_pairs

    _, tokenizer = load_model_and_tokenizer("embedded:smollm2-135m")
    recipe = make_recipe(tmp_path, model={"max_seq_length": 300})
    examples = solver_trace_rows(6, [2, 8], seed=3)
    pairs, dropped = to_text_pairs(examples, tokenizer, recipe)
    assert dropped > 0 and len(pairs) + dropped == 6
    assert all(p["completion"].rstrip().endswith("</answer>") for p in pairs)  # kept ones are whole


def test_qlora_warmup_runs_on_cpu(tmp_path):
    from lowres.train.warmup import run_warmup

    recipe = make_recipe(tmp_path, warmup={"load_in_4bit": True, "max_steps": 2})
    out = run_warmup(recipe)
    assert len(logged(out / "metrics.jsonl", "loss")) == 2
    assert json.loads((out / "summary.json").read_text())["load_in_4bit"] is True
    # TRL casts a 4-bit model's LoRA weights to bf16; lowres trains them in fp32 unless the run is bf16
    # (the fp16 grad scaler of a T4 cannot unscale bf16).
    from safetensors import safe_open

    with safe_open(out / "adapter" / "adapter_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}


def test_merge_agrees_with_base_plus_adapter_and_reloads(warmed, tmp_path):
    from transformers import AutoModelForCausalLM

    from lowres.train.merge import run_merge

    recipe, out = warmed
    merged = run_merge(recipe.model.name_or_path, out / "adapter", tmp_path / "merged")
    report = json.loads((merged / "merge.json").read_text())
    assert report["relative_diff"] <= report["tolerance"] and report["adapter_unchanged"] is False
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_merging_an_adapter_that_never_trained_says_so(tmp_path, capsys):
    """An adapter at its initialisation (LoRA B zero: a warmup whose every step had learning rate 0) merges into
    the base unchanged; the merge stage says so, in merge.json and on screen."""
    from peft import get_peft_model

    from lowres.models import load_model_and_tokenizer
    from lowres.recipe import LoraSection
    from lowres.train.backend import lora_config
    from lowres.train.merge import run_merge

    model, _ = load_model_and_tokenizer("embedded:smollm2-135m")
    get_peft_model(model, lora_config(LoraSection(r=4, lora_alpha=8))).save_pretrained(tmp_path / "adapter")
    merged = run_merge("embedded:smollm2-135m", tmp_path / "adapter", tmp_path / "merged", verify_prompts=1)
    report = json.loads((merged / "merge.json").read_text())
    assert report["adapter_unchanged"] is True and report["max_logit_diff"] == 0.0
    shown = " ".join(capsys.readouterr().out.split())
    assert "is unchanged from its initialisation (every LoRA B matrix is zero): no training step moved it, so " \
           "the merged model is embedded:smollm2-135m itself" in shown


def test_a_good_bf16_merge_passes_the_check(warmed, tmp_path):
    """bf16 rounding alone moves the logits by more than merge.tolerance (1e-2, meant for fp32)."""
    from lowres.train.merge import run_merge

    recipe, out = warmed
    merged = run_merge(recipe.model.name_or_path, out / "adapter", tmp_path / "merged", dtype="bf16")
    report = json.loads((merged / "merge.json").read_text())
    assert report["dtype"] == "bf16"
    assert report["tolerance"] < report["relative_diff"] <= report["allowed"]


def test_merge_check_rejects_a_merge_that_lost_the_adapter(warmed, tmp_path, monkeypatch):
    from peft import PeftModel

    from lowres.errors import UserError
    from lowres.train.merge import run_merge

    recipe, out = warmed
    # A merge that drops the LoRA update (PeftModel hands merge_and_unload on to its LoraModel).
    monkeypatch.setattr(PeftModel, "merge_and_unload", lambda self, *a, **k: self.base_model.unload(), raising=False)
    with pytest.raises(UserError, match="merged model disagrees with base\\+adapter"):
        run_merge(recipe.model.name_or_path, out / "adapter", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_to_overwrite_the_base_and_bad_adapters(warmed, tmp_path):
    from lowres.errors import UserError
    from lowres.models import resolve_model
    from lowres.train.merge import run_merge

    recipe, out = warmed
    base = resolve_model(recipe.model.name_or_path)
    with pytest.raises(UserError, match="refusing to overwrite the base model"):
        run_merge(base, out / "adapter", base)
    with pytest.raises(UserError, match="no LoRA adapter here"):
        run_merge(base, tmp_path, tmp_path / "m")


def test_a_full_disk_mid_checkpoint_keeps_the_last_one_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    import torch

    from lowres.errors import UserError
    from lowres.train.resume import checkpoint_problem
    from lowres.train.warmup import run_warmup

    recipe = make_recipe(tmp_path, warmup={"max_steps": 2, "save_steps": 1})
    real_save = torch.save

    def disk_fills_at_checkpoint_2(obj, path, *args, **kwargs):
        if "checkpoint-2" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_at_checkpoint_2)
    with pytest.raises(UserError) as caught:
        run_warmup(recipe)
    checkpoints = recipe.run_dir / "warmup" / "checkpoints"
    assert str(caught.value) == (f"warmup: the disk is full while writing to {recipe.run_dir / 'warmup'}; free some "
                                 "space and run the same command again (the last complete checkpoint is kept)")
    assert checkpoint_problem(checkpoints / "checkpoint-1") is None
    assert checkpoint_problem(checkpoints / "checkpoint-2") is not None  # torn: no optimizer, no state

    monkeypatch.setattr(torch, "save", real_save)  # space was freed
    capsys.readouterr()
    run_warmup(recipe)
    out = " ".join(capsys.readouterr().out.split())
    assert "checkpoint-2 is incomplete" in out and "resuming warmup from" in out and "checkpoint-1" in out
    assert json.loads((recipe.run_dir / "warmup" / "summary.json").read_text())["steps"] == 2
    # Step 1 was saved and not redone; step 2 was lost with its checkpoint and done again, logged once.
    assert [r["step"] for r in map(json.loads, (recipe.run_dir / "warmup" / "metrics.jsonl").read_text()
                                   .splitlines()) if "loss" in r] == [1, 2]

    # The same command once more: finished with the same settings, nothing is retrained.
    run_warmup(recipe)
    assert "warmup: finished before with the same settings" in " ".join(capsys.readouterr().out.split())


def test_out_of_gpu_memory_in_training_is_one_line_and_exit_3(tmp_path, monkeypatch):
    import torch
    import yaml
    from click.testing import CliRunner
    from trl import SFTTrainer

    from lowres.cli import cli

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.6 GiB total)")

    monkeypatch.setattr(SFTTrainer, "train", out_of_memory)
    recipe = make_recipe(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict()))
    result = CliRunner().invoke(cli, ["warmup", str(path)])
    assert result.exit_code == 3
    assert result.output.strip().splitlines()[-1] == (
        "error: warmup: out of GPU memory; lower warmup.per_device_train_batch_size (2) or model.max_seq_length "
        "(1024), or set warmup.load_in_4bit: true (gradient checkpointing is off)")
    assert "Traceback" not in result.output


class SingleDigitSums:
    """A task the 135M model sometimes gets right at T=0.7, so GRPO groups have reward variance."""

    name = "test_sums"
    description = "a+b for single digits"

    def load(self, split, limit=None, seed=0, path=None, **_):
        rows = [{"id": f"{a}+{b}", "a": a, "b": b, "answer": str(a + b)} for a in range(1, 10) for b in range(1, 10)]
        return rows[:limit] if limit else rows

    def prompt(self, row):
        return [{"role": "user", "content": f"What is {row['a']} + {row['b']}? Reply with just the number."}]

    def score(self, completion, row):
        numbers = re.findall(r"-?\d+", completion)
        correct = bool(numbers) and numbers[0] == row["answer"]
        return Score(formatted=bool(numbers), correct=correct, reward=float(correct),
                     extracted=numbers[0] if numbers else None)


def test_grpo_two_steps_writes_an_adapter_and_logs_zero_variance(tmp_path):
    from lowres.train.rlvr import run_rlvr

    register_task(SingleDigitSums())
    recipe = make_recipe(
        tmp_path, stages=["rlvr"],
        data={"target": {"task": "test_sums", "n_examples": 16}},
        rlvr={"start_from": "base", "max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
              "max_prompt_length": 128, "max_completion_length": 16, "learning_rate": 1e-5, "save_steps": 1,
              "signal_check": "off"},
        output={"report_to": ["tensorboard"]})
    out = run_rlvr(recipe)
    # output.report_to: [tensorboard] wrote event files holding the reward, one point per step.
    assert [step for step, _ in tensorboard_scalars(out / "tensorboard", "train/reward")] == [1, 2]
    metrics = out / "metrics.jsonl"
    zero_var = logged(metrics, "frac_reward_zero_std")
    assert len(zero_var) == 2 and all(0.0 <= f <= 1.0 for f in zero_var)
    assert len(logged(metrics, "reward")) == 2
    assert all(0.0 <= a <= 1.0 for a in logged(metrics, "test_sums_reward/accuracy"))
    assert len(logged(metrics, "test_sums_reward/format_rate")) == 2
    assert len(logged(metrics, "entropy")) == 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["train_examples"] == 16

