"""Several processes per training stage (lowres.distributed): a real 2-process CPU run (gloo) of the
embedded SmolLM2-135M, its failures as one line, and the checks made before anything starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lowres.cli import cli
from lowres.distributed import accelerate_arguments
from lowres.recipe import load_recipe

PROBE = Path(__file__).with_name("ddp_probe.py")


def ddp_recipe(tmp_path: Path, **changes) -> Path:
    """Two warmup steps and two GRPO steps, cut to what shows the mechanics: a global warmup batch of 4
    traces (2 per process) and a GRPO batch of 2 prompts × 2 completions (one prompt per process)."""
    raw = {
        "name": "ddp", "stages": ["warmup", "rlvr"], "seed": 0, "plugins": [str(PROBE)],
        "model": {"name_or_path": "embedded:smollm2-135m", "max_seq_length": 1024},
        "data": {"warmup": {"source": "kk-solver", "n_puzzles": 8, "people": [2], "trace_style": "brief"},
                 "target": {"task": "kk_easy", "n_examples": 8, "seed": 42}},
        "warmup": {"load_in_4bit": False, "learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 2,
                   "gradient_accumulation_steps": 1,
                   "loss_dtype": "model", "save_steps": 1, "lora": {"r": 8, "lora_alpha": 16}},
        "rlvr": {"start_from": "base", "max_steps": 2, "per_device_train_batch_size": 2, "num_generations": 2,
                 "max_prompt_length": 384, "max_completion_length": 16, "loss_dtype": "model",
                 "rollout_dtype": "model", "signal_check": "off", "lora": {"r": 8, "lora_alpha": 16}},
        "eval": {"tasks": ["kk_easy"]},
        "output": {"dir": str(tmp_path / "runs")},
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def lowres(*args: str, probe_dir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOWRES_PROBE_DIR": str(probe_dir)}
    return subprocess.run([sys.executable, "-m", "lowres", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def probe_records(probe_dir: Path, rank: int) -> list[dict]:
    path = probe_dir / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_two_processes_train_on_different_shards_and_only_the_main_one_writes(tmp_path, data_dir):
    probes = tmp_path / "probes"
    probes.mkdir()
    recipe_file = ddp_recipe(tmp_path)
    done = lowres("run", str(recipe_file), "--num-processes", "2", probe_dir=probes)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    ranks = [probe_records(probes, rank) for rank in (0, 1)]

    # Each process trained, on its own shard: the 8 traces once each, split between them; in GRPO each
    # process had its own prompt (repeated for its completions).
    for trainer, total in (("SFTTrainer", 8), ("LowresGRPOTrainer", None)):
        seen = [{row for r in records if r["kind"] == trainer for row in r["value"]} for records in ranks]
        assert seen[0] and seen[1] and not seen[0] & seen[1], trainer
        if total:
            assert len(seen[0] | seen[1]) == total

    # Only the main process wrote into the run folder; the other wrote nothing there.
    written = [{r["value"] for r in records if r["kind"] == "wrote" and r["value"].startswith(str(run_dir.resolve()))}
               for records in ranks]
    assert not written[1]
    assert str((run_dir / "warmup" / "adapter").resolve()) in written[0]
    for stage in ("warmup", "rlvr"):
        steps = [r["step"] for r in map(json.loads, (run_dir / stage / "metrics.jsonl").read_text().splitlines())
                 if "loss" in r]
        assert steps == [1, 2], stage  # logged once per step, not once per process
        summary = json.loads((run_dir / stage / "summary.json").read_text())
        assert summary["processes"] == 2 and summary["steps"] == 2
        assert (run_dir / stage / "done.json").is_file()

    # The adapter loads onto the base model, and training moved it.
    from peft import PeftModel

    from lowres.models import load_model_and_tokenizer

    base, _ = load_model_and_tokenizer("embedded:smollm2-135m")
    model = PeftModel.from_pretrained(base, str(run_dir / "warmup" / "adapter"))
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(bool(p.abs().sum() > 0) for p in lora_b)

    # The first step's loss equals a one-process run over the same global batch (4 traces per device):
    # the same rows, the token-weighted mean over all of them. Tolerance: fp32 summation order.
    from lowres.train.warmup import run_warmup

    one = load_recipe(recipe_file, ["plugins=[]", "warmup.per_device_train_batch_size=4", "warmup.max_steps=1",
                                    "warmup.warmup_ratio=0", f"output.dir={tmp_path / 'one'}"])
    single = run_warmup(one)
    first = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()][0]
    two = [json.loads(line) for line in (run_dir / "warmup" / "metrics.jsonl").read_text().splitlines()][0]
    assert first["step"] == two["step"] == 1
    assert two["loss"] == pytest.approx(first["loss"], rel=1e-4)


@pytest.mark.slow
def test_a_failure_in_the_processes_is_one_line_and_exit_2(tmp_path, data_dir):
    probes = tmp_path / "probes"
    probes.mkdir()
    recipe_file = ddp_recipe(tmp_path, stages=["warmup"], model={"max_seq_length": 64})
    failed = lowres("warmup", str(recipe_file), "--num-processes", "2", probe_dir=probes)
    assert failed.returncode == 2, failed.stderr[-3000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "longer than model.max_seq_length (64)" in errors[0]
    assert "Traceback" not in failed.stderr and "ChildFailedError" not in failed.stderr


def test_a_global_batch_that_splits_a_group_is_refused_up_front(tmp_path):
    result = CliRunner().invoke(cli, ["run", "demo", "--num-processes", "3", "--set", "rlvr.num_generations=16",
                                      "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 2
    assert ("per_device_train_batch_size × gradient_accumulation_steps × num_processes (8 × 1 × 3 = 24) must be a "
            "multiple of rlvr.num_generations (16)") in result.output
    assert not (tmp_path / "demo").exists()


def test_the_plan_shows_the_global_batch_and_the_backend(tmp_path):
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--num-processes", "2",
                                      "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    plan = " ".join(result.output.replace("│", " ").split())
    assert "global batch 4 traces = 2 per device × 1 accumulation step × 2 processes" in plan
    assert "global batch 16 = 4 prompts × 4 completions (8 per device × 1 accumulation step × 2 processes)" in plan
    assert "2 processes, backend transformers+PEFT under DDP" in plan


def test_inside_a_launch_only_the_training_commands_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["eval", "embedded:smollm2-135m"])
    assert result.exit_code == 2 and "lowres eval runs as one process" in result.output
    result = CliRunner().invoke(cli, ["warmup", "demo", "--num-processes", "3", "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 2 and "launched as 2 processes, but num_processes is 3" in result.output


def test_unsloth_is_refused_with_several_processes(tmp_path):
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "num_processes=2", "--set", "model.backend=unsloth"])
    assert result.exit_code == 2
    assert "model.backend=unsloth: unsloth runs as one process; with num_processes 2" in result.output


def test_accelerate_gets_plain_ddp_and_a_share_of_the_cores():
    args = accelerate_arguments(2, ["warmup", "r.yaml"], cpu=True, cores=8)
    assert args[:2] == ["--multi_gpu", "--num_processes"] and args[2] == "2"
    assert args[args.index("--num_cpu_threads_per_process") + 1] == "4"
    assert args[-4:] == ["-m", "lowres", "warmup", "r.yaml"]
    assert "--num_cpu_threads_per_process" not in accelerate_arguments(2, ["rlvr", "r.yaml"], cpu=False, cores=8)


def test_vllm_server_mode_reaches_trl_and_needs_vllm_installed(tmp_path, monkeypatch):
    from lowres.hardware import Hardware
    from lowres.recipe import recipe_from_dict
    from lowres.train.rlvr import vllm_args

    recipe = recipe_from_dict({"name": "v", "model": {"name_or_path": "m"},
                               "rlvr": {"vllm": "server", "vllm_server_host": "10.0.0.2", "vllm_server_port": 8001}})
    hw = Hardware("cuda", "H100", 80.0, True, "transformers", "bf16")
    assert vllm_args(recipe, hw) == {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "10.0.0.2",
                                     "vllm_server_port": 8001}
    assert vllm_args(recipe_from_dict({"name": "v", "model": {"name_or_path": "m"}}), hw) == {}
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.vllm=server"])
    assert result.exit_code == 2 and "rlvr.vllm: server needs vLLM in this environment" in result.output


def test_a_resumed_multi_process_cpu_run_can_load_its_optimizer_state(tmp_path):
    """transformers loads the optimizer state onto args.device, `cpu:0` on several CPU processes."""
    import torch

    from lowres.train.compat import ensure_cpu_index_restore

    torch.save({"exp_avg": torch.ones(3)}, tmp_path / "optimizer.pt")
    ensure_cpu_index_restore()
    state = torch.load(tmp_path / "optimizer.pt", map_location=torch.device("cpu", 0), weights_only=True)
    assert state["exp_avg"].device.type == "cpu" and state["exp_avg"].tolist() == [1.0, 1.0, 1.0]


def test_the_process_count_is_part_of_the_training_fingerprints():
    from lowres.fingerprint import stage_fingerprints
    from lowres.recipe import bundled_recipes

    one = stage_fingerprints(load_recipe(bundled_recipes()["demo"]))
    two = stage_fingerprints(load_recipe(bundled_recipes()["demo"], ["num_processes=2"]))
    assert one["base"] == two["base"]
    for stage in ("warmup", "merge", "rlvr", "rlvr-no-warmup"):
        assert one[stage] != two[stage], stage
