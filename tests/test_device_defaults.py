"""Defaults that follow the device: warmup.load_in_4bit auto, and the dry run's memory lines."""

import importlib.util
import io
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from lowres import hardware
from lowres.cli import cli
from lowres.hardware import Hardware, resolve_load_in_4bit
from lowres.recipe import recipe_from_dict

MINIMAL = {"name": "t", "model": {"name_or_path": "embedded:smollm2-135m"}}


def with_bitsandbytes(monkeypatch, installed: bool) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real("json") if installed else None) if name == "bitsandbytes"
                        else real(name, *a))


def test_a_users_recipe_warms_up_in_16_bit_on_a_cpu_and_4_bit_on_a_gpu(monkeypatch):
    recipe = recipe_from_dict(MINIMAL, "test")
    assert recipe.warmup.load_in_4bit == "auto"  # was true: QLoRA on a CPU, slowly
    assert resolve_load_in_4bit("auto", "cpu") == (False, "auto: 16-bit on cpu (4-bit pays off on a CUDA GPU)")
    assert resolve_load_in_4bit("auto", "mps")[0] is False
    with_bitsandbytes(monkeypatch, True)
    assert resolve_load_in_4bit("auto", "cuda") == (True, "auto: 4-bit on a CUDA GPU")
    with_bitsandbytes(monkeypatch, False)
    assert resolve_load_in_4bit("auto", "cuda") == (
        False, "auto: 16-bit, bitsandbytes is not installed (pip install 'lowres[gpu]' for 4-bit)")
    for device in ("cpu", "cuda"):  # an explicit choice is honoured
        assert resolve_load_in_4bit(True, device) == (True, "asked for")
        assert resolve_load_in_4bit(False, device) == (False, "asked for")


def test_auto_counts_in_the_fingerprint_as_what_it_resolves_to(monkeypatch):
    """A recipe that leaves load_in_4bit out keeps its fingerprint on a GPU (where the old default, true, is what
    auto gives), and on a CPU is fingerprinted as the 16-bit warmup it now runs."""
    import torch

    from lowres.fingerprint import stage_fingerprints

    def fingerprints(value):
        return stage_fingerprints(recipe_from_dict({**MINIMAL, "warmup": {"load_in_4bit": value}}, "test"))["warmup"]

    assert fingerprints("auto") == fingerprints(False) != fingerprints(True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with_bitsandbytes(monkeypatch, True)
    assert fingerprints("auto") == fingerprints(True)


def plan_text(recipe) -> str:
    from lowres.plan import make_plan

    wide = Console(width=400, record=True, file=io.StringIO())
    wide.print(make_plan(recipe, gflops=lambda: 180.0).table())
    return " ".join(re.sub("[│┃]", " ", wide.export_text()).split())


def test_the_plan_and_env_show_what_auto_resolves_to(monkeypatch):
    recipe = recipe_from_dict({**MINIMAL, "stages": ["warmup", "merge"]}, "test")
    assert ("LoRA SFT on kk-solver traces (16-bit base; load_in_4bit auto: 16-bit on cpu (4-bit pays off on a CUDA "
            "GPU)); global batch 8 traces") in plan_text(recipe)
    explicit = recipe_from_dict({**MINIMAL, "stages": ["warmup", "merge"], "warmup": {"load_in_4bit": True}}, "t")
    assert "QLoRA SFT on kk-solver traces (4-bit base); global batch" in plan_text(explicit)
    result = CliRunner().invoke(cli, ["env"])
    shown = " ".join(result.output.split())
    assert "warmup base │ 16-bit where warmup.load_in_4bit is auto (the default)" in shown
    assert "warmup.load_in_4bit auto: 16-bit on cpu (4-bit pays off" in shown  # (the rest wraps)


def test_the_dry_runs_memory_lines_count_the_activations_on_a_cpu(monkeypatch):
    from lowres import estimate
    from lowres.recipe import bundled_recipes, load_recipe
    from lowres.train import backend

    monkeypatch.setattr(backend, "machine_memory_bytes", lambda: 64 * 2**30)
    lines = estimate.describe(load_recipe(bundled_recipes()["demo"]))
    config = estimate.local_config("embedded:smollm2-135m")
    from types import SimpleNamespace

    per_token = backend.activation_bytes(SimpleNamespace(**config), 1)
    rlvr = next(line for line in lines if line.startswith("rlvr"))
    # The demo's GRPO micro-batch: 8 rows × (384 prompt + 384 completion tokens)
    assert f"plus ≈{8 * 768 * per_token / 2**30:.1f} GiB of activations for a micro-batch of up to 6144 tokens " \
           "(rlvr.per_device_train_batch_size × (rlvr.max_prompt_length + rlvr.max_completion_length))" in rlvr
    assert "in all, before the Python runtime, the output logits and the sampling cache" in rlvr
    warmup = next(line for line in lines if line.startswith("warmup"))
    assert "a micro-batch of up to 2048 tokens (warmup.per_device_train_batch_size × model.max_seq_length)" in warmup

    monkeypatch.setattr(backend, "machine_memory_bytes", lambda: 8 * 2**30)  # where they would not fit
    rlvr = next(line for line in estimate.describe(load_recipe(bundled_recipes()["demo"])) if line.startswith("rlvr"))
    assert "over 40% of this machine's memory, so gradient checkpointing recomputes them instead" in rlvr

    l4 = Hardware("cuda", "NVIDIA L4", 24.0, True, "transformers", "bf16")
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: l4)
    rlvr = next(line for line in estimate.describe(load_recipe(bundled_recipes()["demo"])) if line.startswith("rlvr"))
    assert rlvr.endswith("plus activations, not counted: gradient checkpointing (always on on a GPU) keeps only a "
                         "part of them; `lowres bench` measures the peak")


@pytest.mark.parametrize("value", ["auto", True, False])
def test_load_in_4bit_takes_auto_or_a_boolean(value):
    assert recipe_from_dict({**MINIMAL, "warmup": {"load_in_4bit": value}}, "test").warmup.load_in_4bit == value
