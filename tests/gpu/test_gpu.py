"""The GPU path, for real: skipped without CUDA (`pytest -m gpu`; benchmarks/gpu_check.sh runs them).

The model is a randomly initialised Qwen2.5-shaped model (4 layers of Qwen2.5-0.5B's width) built
here from a config, with the embedded SmolLM2 tokenizer: nothing is downloaded. Each stage runs as
`python -m lowres <stage>` in its own process, as `lowres run` runs it, once per backend. This pytest
process itself never imports unsloth (whether it is installed and imports is decided in a child process),
so the in-process checks see the classes unpatched.
"""

import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.gpu

# Qwen2.5-0.5B's layer shape (hidden 896, 14 query / 2 key-value heads, MLP 4864), 4 layers, and the
# SmolLM2 tokenizer's vocabulary.
QWEN_SHAPE = {"hidden_size": 896, "num_hidden_layers": 4, "num_attention_heads": 14, "num_key_value_heads": 2,
              "intermediate_size": 4864, "max_position_embeddings": 4096, "tie_word_embeddings": True}
BACKENDS = ["unsloth", "transformers"]


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lowres.models import resolve_model

    # On an offline GPU box, gpu_check.sh places the embedded model's tokenizer and config (no weights)
    # where resolve_model looks.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = Qwen2Config(**QWEN_SHAPE, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("qwen-tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_recipe(folder: Path, model: Path, backend: str, **model_settings) -> Path:
    recipe = {
        "name": f"gpu-{backend}",
        "model": {"name_or_path": str(model), "max_seq_length": 1024, "backend": backend, **model_settings},
        "stages": ["warmup", "merge", "rlvr"],
        "data": {"warmup": {"source": "kk-solver", "n_puzzles": 16, "people": [2]},
                 "target": {"task": "kk_easy", "n_examples": 8}},
        "warmup": {"load_in_4bit": True, "max_steps": 3, "per_device_train_batch_size": 2,
                   "gradient_accumulation_steps": 1, "save_steps": 100, "lora": {"r": 8, "lora_alpha": 16}},
        "rlvr": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "max_prompt_length": 384,
                 "max_completion_length": 32, "save_steps": 100, "lora": {"r": 8, "lora_alpha": 16}},
        "eval": {"tasks": ["kk_easy"], "limit": 4, "n_samples": 1, "max_new_tokens": 32, "temperature": 0.0,
                 "batch_size": 4},
        "output": {"dir": str(folder / "runs")},
    }
    path = folder / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def lowres(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m lowres ARGS` in its own process, as `lowres run` starts a stage."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lowres", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")  # shown by pytest when a test fails
    return done


@functools.cache
def unsloth_import_problem() -> str | None:
    from lowres.hardware import unsloth_import_problem

    return unsloth_import_problem()


def needs(backend: str) -> None:
    """Skip where the backend is not installed; fail where it is installed but broken. Decided without
    importing Unsloth here (desk check 2, W1): the import is tried in a child process."""
    if backend != "unsloth":
        return
    if importlib.util.find_spec("unsloth") is None:
        pytest.skip("unsloth not installed (pip install 'lowres[gpu]')")
    problem = unsloth_import_problem()
    if problem:
        pytest.fail(f"unsloth is installed but does not import: {problem}")


@pytest.fixture(scope="module", params=BACKENDS)
def stages(request, qwen_folder, tmp_path_factory):
    """4-bit warmup, merge and GRPO steps for one backend; each stage's process result by name."""
    backend = request.param
    needs(backend)
    folder = tmp_path_factory.mktemp(backend)
    recipe = write_recipe(folder, qwen_folder, backend)
    run = folder / "runs" / f"gpu-{backend}"
    results = {"backend": backend, "run": run}
    results["warmup"] = lowres("warmup", str(recipe), "--out", str(run / "warmup"))
    if results["warmup"].returncode == 0:
        results["merge"] = lowres("merge", "--base", str(qwen_folder), "--adapter", str(run / "warmup" / "adapter"),
                                  "--out", str(run / "merge"))
    if results.get("merge") is not None and results["merge"].returncode == 0:
        results["rlvr"] = lowres("rlvr", str(recipe), "--out", str(run / "rlvr"))
    return results


def test_4bit_warmup_steps(stages):
    assert stages["warmup"].returncode == 0
    out = stages["run"] / "warmup"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == stages["backend"] and summary["load_in_4bit"] is True
    assert summary["steps"] == 3 and summary["dtype"] in ("bf16", "fp16")
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_merge_passes_the_logit_check(stages):
    assert stages.get("merge") is not None and stages["merge"].returncode == 0
    report = json.loads((stages["run"] / "merge" / "merge.json").read_text())
    assert report["relative_diff"] <= report["allowed"]


def test_grpo_steps(stages):
    assert stages.get("rlvr") is not None and stages["rlvr"].returncode == 0
    out = stages["run"] / "rlvr"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == stages["backend"] and summary["steps"] == 2
    rewards = [r["reward"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "reward" in r]
    assert len(rewards) == 2
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_path_trains_a_step(backend, qwen_folder, tmp_path):
    """What a T4 runs (no bf16): fp16 weights, fp16 AMP with its grad scaler, LoRA weights in fp32."""
    needs(backend)
    recipe = write_recipe(tmp_path, qwen_folder, backend, dtype="fp16")
    done = lowres("warmup", str(recipe), "--out", str(tmp_path / "warmup"), "--set", "warmup.max_steps=2")
    assert done.returncode == 0
    summary = json.loads((tmp_path / "warmup" / "summary.json").read_text())
    assert summary["dtype"] == "fp16" and summary["steps"] == 2
    assert math.isfinite(summary["train_loss"])


def test_greedy_decode_equals_generate_on_the_gpu(qwen_folder, greedy_matches_generate):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert "unsloth" not in sys.modules  # the classes are transformers' own here
    tokenizer = AutoTokenizer.from_pretrained(qwen_folder)
    # fp32: a random model's logits are flat, and 16-bit rounding could flip a near-tie between two
    # equally valid kernels; the comparison is of the loop, not of the kernels.
    model = AutoModelForCausalLM.from_pretrained(qwen_folder, dtype=torch.float32).cuda().eval()
    greedy_matches_generate(model, tokenizer, ["The capital of France is", "1, 2, 3, 4,", "Write one word:"], 16)


def test_unsloth_patches_do_not_leak_into_a_later_stage(qwen_folder, tmp_path):
    """`lowres run` with an Unsloth warmup: the evaluations after it, in the same run, give exactly what
    `lowres eval` gives in a process that never imported unsloth. (In one process, Unsloth's patched
    forward would break lowres's decode loop: W1 in the desk check.)"""
    needs("unsloth")
    recipe = write_recipe(tmp_path, qwen_folder, "unsloth")
    done = lowres("run", str(recipe), "--set", "stages=[warmup,merge,eval]")
    assert done.returncode == 0
    run = tmp_path / "runs" / "gpu-unsloth"
    alone = tmp_path / "alone"
    done = lowres("eval", str(run / "merge"), "--tasks", "kk_easy", "--limit", "4", "--n-samples", "1",
                  "--max-new-tokens", "32", "--temperature", "0", "--batch-size", "4", "--out", str(alone))
    assert done.returncode == 0

    def completions(folder: Path) -> list[str]:
        return [json.loads(line)["completion"] for line in (folder / "kk_easy" / "samples.jsonl").open()]

    assert completions(run / "eval" / "warmup") == completions(alone)


def test_a_stage_past_the_memory_cap_does_not_fit(qwen_folder, tmp_path):
    """Under LOWRES_GPU_MEMORY_GIB a stage that needs more fails as on a card that size: exit 3, one line that
    names the cap and the settings that lower memory (the 4-layer model's warmup needs well over 0.3 GiB at a
    1,024-token batch of 8 without gradient checkpointing)."""
    recipe = write_recipe(tmp_path, qwen_folder, "transformers")
    os.environ["LOWRES_GPU_MEMORY_GIB"] = "0.3"
    try:
        done = lowres("warmup", str(recipe), "--out", str(tmp_path / "warmup"), "--set",
                      "warmup.per_device_train_batch_size=8", "--set", "warmup.load_in_4bit=false")
    finally:
        del os.environ["LOWRES_GPU_MEMORY_GIB"]
    assert done.returncode == 3
    said = done.stderr + done.stdout
    assert "under the 0.3 GiB cap (LOWRES_GPU_MEMORY_GIB): it does not fit a card that size" in said
    assert "warmup.per_device_train_batch_size (8)" in said
