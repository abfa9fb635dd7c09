"""The second GPU desk check's findings (gpu-desk-check-2: K1-K5, C1-C2, W1-W3, S1-S5), each pinned on a CPU.

The real GPU path runs in tests/gpu/ and `benchmarks/gpu_check.sh run`; what is checked here is what a CPU can
show: the configs both backends train with, the kit's closure, the GPU tests' idea of "installed", the bench's
handling of a crashed backend, and the benchmark scripts' arguments.
"""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lowres.hardware import Hardware
from lowres.recipe import bundled_recipes, load_recipe

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- W2: both backends train the same algorithm

# What Unsloth 2026.10.9's generated config classes do to TRL's (unsloth/models/rl.py:3310-3338 and
# 3354-3367: the signature defaults it rewrites; 3522-3574: how it resolves the GRPO ones left None).
UNSLOTH_DEFAULTS = {
    "logging_nan_inf_filter": False, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
    "weight_decay": 0.001, "seed": 3407, "optim": "adamw_8bit", "learning_rate": 5e-05,
    "per_device_eval_batch_size": 4, "eval_accumulation_steps": 2, "torch_empty_cache_steps": 250,
    "logging_steps": 1, "max_seq_length": None, "num_generations": 8, "vllm_mode": "colocate",
    "generation_kwargs": {}, "bf16": False, "fp16": False, "report_to": "none", "include_tokens_per_second": False,
    "include_num_input_tokens_seen": False, "auto_find_batch_size": False, "dataloader_pin_memory": True,
    "padding_free": None, "warmup_steps": 0.1,
}
UNSLOTH_GRPO_DEFAULTS = {"loss_type": None, "beta": None, "vllm_importance_sampling_correction": False,
                         "router_aux_loss_coef": 0.0, "mask_truncated_completions": None}
UNSLOTH_SFT_DEFAULTS = {"loss_type": "nll"}

sys.path.insert(0, str(REPO / "benchmarks"))
from backend_parity import RUNTIME_ONLY  # noqa: E402  (the settings that may differ, each with its reason)


def unsloth_config_class(trl_class, extra: dict):
    """A stand-in for Unsloth's subclass of a TRL config: its defaults apply to every field the caller leaves
    out, and the GRPO sentinels resolve as the pinned release resolves them."""
    names = {f.name for f in dataclasses.fields(trl_class)}

    class UnslothConfig(trl_class):
        def __init__(self, **kwargs):
            for key, value in {**UNSLOTH_DEFAULTS, **extra}.items():
                if key in names and key not in kwargs:
                    kwargs[key] = value
            if "num_generations" in names:  # GRPO
                default_loss = kwargs.get("loss_type") is None
                if default_loss:
                    kwargs["loss_type"] = "dapo"
                if kwargs.get("beta") is None:
                    kwargs["beta"] = 0.0 if kwargs["loss_type"] in ("dapo", "dr_grpo") else 0.001
                if kwargs["loss_type"] == "dapo" and not default_loss:
                    if kwargs.get("mask_truncated_completions") is None:
                        kwargs["mask_truncated_completions"] = True
                    if kwargs.get("epsilon_high") is None:
                        kwargs["epsilon_high"] = 0.28
                if kwargs.get("mask_truncated_completions") is None:
                    kwargs["mask_truncated_completions"] = False
            super().__init__(**kwargs)

    return UnslothConfig


def both_backends(monkeypatch, trl_name: str, extra: dict, build) -> tuple[dict, dict]:
    import trl

    plain = build().to_dict()
    monkeypatch.setattr(trl, trl_name, unsloth_config_class(getattr(trl, trl_name), extra))
    patched = build().to_dict()
    return plain, patched


def differences(a: dict, b: dict) -> dict:
    return {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k) and k not in RUNTIME_ONLY}


@pytest.mark.parametrize("recipe_name", ["demo", "qwen2.5-3b-math"])
def test_grpo_config_is_the_same_on_both_backends(monkeypatch, tmp_path, recipe_name):
    from lowres.train.rlvr import grpo_config

    recipe = load_recipe(bundled_recipes()[recipe_name])
    hw = Hardware("cpu", None, None, True, "transformers", "fp32")
    plain, unsloth = both_backends(monkeypatch, "GRPOConfig", UNSLOTH_GRPO_DEFAULTS,
                                   lambda: grpo_config(recipe, hw, tmp_path, False))
    assert differences(plain, unsloth) == {}
    cfg = recipe.rlvr
    assert (unsloth["optim"], unsloth["weight_decay"], unsloth["warmup_steps"]) == (
        cfg.optim, cfg.weight_decay, cfg.warmup_ratio)
    assert unsloth["mask_truncated_completions"] is cfg.mask_truncated_completions
    assert unsloth["epsilon_high"] == (cfg.epsilon_high or cfg.epsilon)


def test_the_stand_in_shows_what_a_config_left_to_unsloth_would_train(monkeypatch, tmp_path):
    """The test above would catch a setting lowres leaves to the library: here dapo without the explicit
    truncation masking and clip range gets Unsloth's (as the desk check saw it), not TRL's."""
    import trl

    def left_to_the_library():
        return trl.GRPOConfig(output_dir=str(tmp_path), loss_type="dapo", use_cpu=True, report_to="none")

    plain, unsloth = both_backends(monkeypatch, "GRPOConfig", UNSLOTH_GRPO_DEFAULTS, left_to_the_library)
    found = differences(plain, unsloth)
    assert found["mask_truncated_completions"] == (False, True)
    assert found["epsilon_high"] == (None, 0.28)
    assert found["optim"][1] == "adamw_8bit" and found["weight_decay"] == (0.0, 0.001)


@pytest.mark.parametrize("held_out", [True, False])
def test_sft_config_is_the_same_on_both_backends(monkeypatch, tmp_path, held_out):
    from lowres.train.warmup import sft_config

    recipe = load_recipe(bundled_recipes()["demo"], ["warmup.optim=adamw_torch", "warmup.weight_decay=0.01"])
    hw = Hardware("cpu", None, None, True, "transformers", "fp32")
    plain, unsloth = both_backends(monkeypatch, "SFTConfig", UNSLOTH_SFT_DEFAULTS,
                                   lambda: sft_config(recipe, hw, tmp_path, False, held_out=held_out))
    assert differences(plain, unsloth) == {}
    assert (unsloth["optim"], unsloth["weight_decay"]) == ("adamw_torch", 0.01)
    assert unsloth["warmup_steps"] == recipe.warmup.warmup_ratio and unsloth["loss_type"] == "nll"


# ---------------------------------------------------------------- S1, W3: the bench keeps what it measured


def test_a_crashed_backend_is_recorded_and_the_other_still_measured(monkeypatch, tmp_path):
    """S1: the first Unsloth crash used to discard the transformers figures too; now the crash is a row, the
    other backend is measured, every stage's figures reach --json as they come, and the exit code says so."""
    from click.testing import CliRunner

    from lowres import bench
    from lowres.cli import cli
    from lowres.launch import StageFailed

    def stage(name, args, **kwargs):
        out = Path(args[args.index("--out") + 1])
        if "unsloth" in name:
            raise StageFailed(name, 1, f"{name} crashed (exit code 1)")
        assert json.loads(Path(tmp_path / "bench.json").read_text())["stages"]  # written before this stage ran
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({"train_examples": 8, "steps": 2}))
        (out / "metrics.jsonl").write_text("".join(json.dumps({"loss": 1.0, "time": t, "num_tokens": 100 * t}) + "\n"
                                                   for t in (1, 3)))

    monkeypatch.setattr(bench, "run_stage", stage)
    monkeypatch.setattr(bench, "backends_for", lambda choice: ["unsloth", "transformers"])
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "demo", "--backend", "both", "--stages", "warmup,rlvr", "--steps", "1",
                                      "--json", str(out)], terminal_width=200)
    assert result.exit_code == 1, result.output
    rows = [(r["backend"], r["stage"], r["status"]) for r in json.loads(out.read_text())["stages"]]
    assert rows == [("unsloth", "warmup", "crashed"), ("unsloth", "rlvr", "crashed"),
                    ("transformers", "warmup", "ok"), ("transformers", "rlvr", "ok")]
    assert "unsloth warmup: crashed" in result.output


def test_the_random_model_is_built_on_the_cpu_in_bf16(monkeypatch, tmp_path):
    """W3: built under the GPU in fp32 it kept the conductor's GPU memory while the stages ran."""
    import torch
    from transformers import Qwen2ForCausalLM

    from lowres import bench

    # a shape of its own: a cached "tiny" (from another test) would be returned without being built
    monkeypatch.setitem(bench.MODEL_CONFIGS, "tiny-cpu-build", bench.MODEL_CONFIGS["tiny"])
    from lowres.models import lowres_home

    shutil.rmtree(lowres_home() / "bench-models" / "tiny-cpu-build", ignore_errors=True)
    seen = {}
    original = Qwen2ForCausalLM.save_pretrained

    def save(self, folder, **kwargs):
        seen["device"], seen["dtype"] = self.device.type, self.dtype
        return original(self, folder, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: the model still stays off it
    monkeypatch.setattr(Qwen2ForCausalLM, "save_pretrained", save)
    folder = bench.random_model("tiny-cpu-build")
    assert seen == {"device": "cpu", "dtype": torch.bfloat16}
    assert (folder / "config.json").is_file() and torch.get_default_dtype() == torch.float32
    shutil.rmtree(folder)


# ---------------------------------------------------------------- C1: the benchmark's arguments


@pytest.mark.slow
def test_grpo_step_benchmark_runs(tmp_path):
    """C1: benchmarks/grpo_step.py passed an argument load_trainable no longer has, and nothing ran it."""
    out = tmp_path / "grpo_step.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "grpo_step.py"), "--model-config", "tiny",
                           "--steps", "1", "--prompts", "2", "--generations", "2", "--micro-batch", "4",
                           "--tokens", "8", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["trainers"]) == {"lowres", "trl"}
    assert all(len(t["steps"]) == 1 and t["seconds"] > 0 for t in report["trainers"].values())
    assert "lowres is" in done.stdout


# ---------------------------------------------------------------- W1, K4: installed is not the same as usable


@pytest.fixture
def broken_unsloth(monkeypatch, tmp_path):
    """An `unsloth` that is installed but cannot be imported, as in the kit without `multiprocess`."""
    package = tmp_path / "site" / "unsloth"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import multiprocess_missing_from_the_kit\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    return package


def load_gpu_tests():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_tests", REPO / "tests" / "gpu" / "test_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_tests_fail_on_a_broken_unsloth_without_importing_it(broken_unsloth):
    """W1: pytest.importorskip called a broken Unsloth "not installed" (and a working one leaked into the pytest
    process)."""
    gpu_tests = load_gpu_tests()
    with pytest.raises(pytest.fail.Exception, match="unsloth is installed but does not import: "
                                                    "ModuleNotFoundError.*multiprocess_missing_from_the_kit"):
        gpu_tests.needs("unsloth")
    assert "unsloth" not in sys.modules
    gpu_tests.needs("transformers")  # nothing to check


def test_the_gpu_tests_skip_where_unsloth_is_not_installed(monkeypatch):
    import importlib.util

    gpu_tests = load_gpu_tests()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "unsloth" else real(name, *a))
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        gpu_tests.needs("unsloth")


def test_env_lists_unsloth_as_usable_only_if_it_imports(broken_unsloth, monkeypatch):
    """K4: `lowres env` said "backend unsloth" on the strength of find_spec while `import unsloth` failed; and a
    training command now stops with one line instead of the ImportError's traceback."""
    import torch
    from click.testing import CliRunner

    from lowres import hardware
    from lowres.cli import cli
    from lowres.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: type(
        "Props", (), {"name": "NVIDIA H200", "total_memory": 141 * 2**30})())
    monkeypatch.setattr(hardware, "gpu_has_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = CliRunner().invoke(cli, ["env"], terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "unsloth does not import: ModuleNotFoundError" in result.output
    assert "set model.backend: transformers" in result.output
    with pytest.raises(UserError, match=r"unsloth is installed but does not import \(ModuleNotFoundError"):
        hardware.import_unsloth_first()
    assert "unsloth" not in sys.modules


def test_env_names_versions_outside_the_tested_ranges_with_the_fix(monkeypatch):
    from click.testing import CliRunner

    from lowres import hardware
    from lowres.cli import cli

    real = hardware.package_versions()
    monkeypatch.setattr(hardware, "package_versions", lambda: {**real, "torch": "2.11.0", "trl": "1.9.0"})
    outside = hardware.versions_outside_tested_ranges(hardware.package_versions())
    assert outside == {"torch": ("2.11.0", ">=2.13,<2.14"), "trl": ("1.9.0", ">=1.15.0,<1.16")}
    result = CliRunner().invoke(cli, ["env"], terminal_width=250)
    assert "pip install 'torch>=2.13,<2.14' 'trl>=1.15.0,<1.16'" in " ".join(result.output.split())


def test_an_interrupted_stage_stops_the_bench(monkeypatch, tmp_path):
    """On the H200 the phase's time limit interrupted Unsloth's GRPO stage (exit 130), and the bench called it a
    crash and went on; an interrupt must stop the bench (the figures so far are already in --json)."""
    from lowres import bench
    from lowres.launch import INTERRUPTED, StageFailed

    def interrupted(name, args, **kwargs):
        raise StageFailed(name, INTERRUPTED, None)

    monkeypatch.setattr(bench, "run_stage", interrupted)
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    with pytest.raises(StageFailed):
        bench.bench(load_recipe(bundled_recipes()["demo"]), steps=1, stages=["warmup", "rlvr"], workdir=tmp_path)


# ---------------------------------------------------------------- K1, K5: the kit proves its closure


def fake_wheel(folder: Path, name: str, version: str, requires: list[str] = (), files: list[str] = ()) -> Path:
    """A minimal, installable wheel: METADATA with Requires-Dist, WHEEL, RECORD and the given files."""
    import zipfile

    info = f"{name}-{version}.dist-info"
    entries = {f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
                   name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
               f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
               **{path: "" for path in (files or [f"{name}/__init__.py"])}}
    entries[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*entries, f"{info}/RECORD"])
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in entries.items():
            zf.writestr(path, text)
    return wheel


def closure(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "kit_closure.py"), str(folder)],
                          capture_output=True, text=True)


def test_the_kit_closure_check_finds_what_the_first_kit_lacked(tmp_path):
    """K1: datasets needs multiprocess, which neither the first kit nor the GPU machine had."""
    fake_wheel(tmp_path, "datasets", "4.8.5", ["multiprocess<0.70.20", "xxhash", "requests>=2.32.2",
                                              'pandas; python_version >= "3.0"', 'zstandard; extra == "zstd"',
                                              'pywin32; sys_platform == "win32"'])
    done = closure(tmp_path)
    assert done.returncode == 1
    assert "datasets needs multiprocess<0.70.20: neither in the kit nor preinstalled" in done.stderr
    assert "xxhash" not in done.stderr and "requests" not in done.stderr  # preinstalled on the GPU machine
    assert "zstandard" not in done.stderr and "pywin32" not in done.stderr  # an extra; another platform
    fake_wheel(tmp_path, "multiprocess", "0.70.17")
    assert "datasets needs multiprocess<0.70.20; the kit has 0.70.17" not in closure(tmp_path).stderr
    fake_wheel(tmp_path, "multiprocess", "0.70.20").rename(tmp_path / "x.whl")
    (tmp_path / "multiprocess-0.70.17-py3-none-any.whl").unlink()
    assert "needs multiprocess<0.70.20; the kit has 0.70.20" in closure(tmp_path).stderr
    (tmp_path / "x.whl").unlink()
    fake_wheel(tmp_path, "multiprocess", "0.70.19")
    done = closure(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "left out on purpose: diffusers, pydantic, xformers" in done.stdout


def test_the_kit_closure_check_refuses_a_wheel_that_shadows_the_standard_library(tmp_path):
    """K5: torchao's wheel installs a top-level test/ package, first on PYTHONPATH in every process of the check."""
    fake_wheel(tmp_path, "torchao", "0.18.0", files=["torchao/__init__.py", "test/__init__.py"])
    done = closure(tmp_path)
    assert done.returncode == 1 and "installs a top-level 'test'" in done.stderr


# ---------------------------------------------------------------- K3, S1: run fails without a GPU, keeps each phase


def test_the_gpu_check_fails_without_a_gpu_and_records_each_phase_as_it_ends(tmp_path):
    """K3: on a machine without a visible GPU the check used to pass with everything skipped; S1: the phases'
    records were written only at the end."""
    (tmp_path / "benchmarks").mkdir()
    for name in ("gpu_check.sh", "gpu_preflight.py"):
        shutil.copy(REPO / "benchmarks" / name, tmp_path / "benchmarks" / name)
    (tmp_path / ".gpu_kit" / "wheels").mkdir(parents=True)
    (tmp_path / ".gpu_kit" / "embedded" / "smollm2-135m").mkdir(parents=True)
    fake_wheel(tmp_path / ".gpu_kit" / "wheels", "lowres_probe", "1.0")
    out = tmp_path / "out"
    bin_dir = tmp_path / "bin"  # `python3` is this interpreter, as on the GPU machine it is the one with torch
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(tmp_path / "benchmarks" / "gpu_check.sh"), "run", "preflight"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    record = json.loads((out / "gpu_check.json").read_text())
    assert [(p["phase"], p["exit_code"]) for p in record["phases"]] == [("install", 0), ("preflight", 1)]
    assert "expected a CUDA GPU here" in (out / "gpu_check.log").read_text()


# ---------------------------------------------------------------- S2-S5: the unsloth backend's rough edges


def test_no_false_import_order_warning_and_unsloths_cache_in_lowres_home(monkeypatch, tmp_path, capsys):
    """S4: Unsloth, imported first, imports trl and peft itself; the "imported after trl, peft" warning was false.
    S5: Unsloth writes its generated trainers to ./unsloth_compiled_cache unless told where."""
    import types

    import trl  # noqa: F401  (imported, as Unsloth itself imports it)

    from lowres.train.backend import prepare_backend

    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    monkeypatch.setenv("LOWRES_HOME", str(tmp_path))
    monkeypatch.delenv("UNSLOTH_COMPILE_LOCATION", raising=False)
    prepare_backend(Hardware("cuda", "H200", 139.8, True, "unsloth", "bf16"))
    assert "imported after" not in capsys.readouterr().out
    from lowres.hardware import keep_unsloth_cache_in_lowres_home

    keep_unsloth_cache_in_lowres_home()
    import os

    assert os.environ["UNSLOTH_COMPILE_LOCATION"] == str(tmp_path / "unsloth_compiled_cache")


def test_on_the_unsloth_backend_the_grpo_trainer_leaves_the_loss_to_unsloth():
    """S2/S3: Unsloth's compute_loss never calls _compute_loss, and its _get_per_token_logps_and_entropies takes
    other arguments: lowres's overrides are for the transformers backend only."""
    from lowres.train.rlvr import _trainer_class

    own = ("_compute_loss", "_get_per_token_logps_and_entropies")
    lean = _trainer_class(False, lean_generation=True)
    assert all(name in vars(lean) for name in own)
    unsloth = _trainer_class(True, lean_generation=False)
    assert not any(name in vars(unsloth) for name in own)
    assert "_generate_and_score_completions" in vars(unsloth)  # zero-variance groups still masked there


def test_a_backend_setting_that_cannot_be_honoured_is_refused_up_front(monkeypatch):
    """Unsloth's trainer ignores rlvr.rollout_dtype/loss_dtype; 8-bit optimizers need CUDA: one line each."""
    from click.testing import CliRunner

    from lowres import hardware
    from lowres.cli import cli

    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.optim=adamw_8bit"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].endswith(
        "rlvr.optim: adamw_8bit is bitsandbytes' 8-bit optimizer and needs a CUDA GPU; this machine trains on cpu "
        "(use adamw_torch_fused)")
    h200 = Hardware("cuda", "NVIDIA H200", 139.8, True, "unsloth", "bf16")
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: h200)
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.rollout_dtype=bf16"])
    assert result.exit_code == 2 and "Unsloth's trainer ignores it" in result.output
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.rollout_dtype=int8"])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].endswith(
        "rlvr.rollout_dtype: int8 rollouts run lowres's own sampling loop on a CPU; this machine trains on cuda with "
        "the unsloth backend: set auto (vLLM or bf16 on a GPU)")
    assert CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.optim=adamw_8bit"]).exit_code == 0
    assert CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.load_in_4bit=true"]).exit_code == 0


def test_4bit_grpo_on_a_cpu_is_refused_in_one_line():
    """The Colab recipe's 4-bit GRPO on a CPU crashed in bitsandbytes at the first training step, after
    sampling had repacked its layers (found by the GPU check's rehearsal)."""
    from click.testing import CliRunner

    from lowres.cli import cli

    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "rlvr.load_in_4bit=true"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].endswith(
        "rlvr.load_in_4bit: bitsandbytes' 4-bit layers cannot train after sampling on a CPU; set "
        "rlvr.load_in_4bit: false here (4-bit saves GPU memory)")


# ---------------------------------------------------------------- the recipe-fit probe (benchmarks/recipe_fit.py)

def test_the_fit_probe_measures_one_recipe_for_another_only_when_their_memory_settings_match(monkeypatch):
    """The 3B task recipes share qwen2.5-3b-math's measurement; a recipe whose shapes differ may not."""
    import recipe_fit

    recipe_fit.check_shares()  # the bundled ones match
    covered = {name for fit in recipe_fit.FITS for name in (fit.recipe, *fit.shares)} | set(recipe_fit.NO_WARMUP)
    assert covered == {name for name in bundled_recipes() if name.startswith(("qwen2.5-", "colab-"))}
    wrong = dataclasses.replace(recipe_fit.FITS[0], shares=["qwen2.5-1.5b-math"])
    monkeypatch.setattr(recipe_fit, "FITS", [wrong])
    with pytest.raises(SystemExit, match="qwen2.5-1.5b-math differs from qwen2.5-3b-math in model"):
        recipe_fit.check_shares()


def test_a_fit_row_fits_only_when_the_stage_ran_and_reserved_memory_stayed_under_the_cap():
    import recipe_fit

    fit = recipe_fit.FITS[2]  # the 0.5B under an 8 GB card's 6.5 GiB
    stage = {"status": "ok", "step_seconds": 1.0, "note": "", "rows_trained_share": 1.0}
    def peak(allocated, reserved):
        return {"gpu_allocated_gib": allocated, "gpu_reserved_gib": reserved}

    report = {"stages": [{**stage, "stage": "warmup", "peak_memory": peak(3.0, 4.0)},
                         {**stage, "stage": "rlvr", "peak_memory": peak(6.0, 6.6)},
                         {**stage, "stage": "merge", "status": "does not fit", "peak_memory": {}}]}
    rows = recipe_fit.rows_of(fit, "unsloth", report, "")
    assert [(r["stage"], r["fits"]) for r in rows] == [("warmup", True), ("rlvr", False), ("merge", False)]
    assert recipe_fit.rows_of(fit, "unsloth", None, "exited 1")[0]["status"] == "not measured"
