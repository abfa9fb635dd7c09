"""The GPU code paths checked on a CPU: a simulated GPU (torch.cuda answers patched) and a stand-in
`unsloth` module that records what lowres asks of it. Each test pins one finding of the GPU desk
check (shared/reviews/gpu-desk-check.md); the real thing runs in tests/gpu/ where CUDA exists."""

import re
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from lowres import hardware
from lowres.hardware import Hardware, detect
from lowres.recipe import LoraSection


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make torch believe GPU 0 is the named card; returns a function that picks the card."""

    def use(name: str, major: int, minor: int, gib: float = 15.0):
        props = SimpleNamespace(name=name, major=major, minor=minor, total_memory=int(gib * 2**30))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        # What makes a T4 say "bf16 supported": a bf16 tensor can be created there (emulation).
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
        monkeypatch.setattr(hardware, "unsloth_installed", lambda: False)

    return use


def test_a_t4_trains_in_fp16_everywhere(fake_gpu):
    """C1: torch's default bf16 check counts emulation and says yes on a T4; lowres must not."""
    from lowres.evaluate import vllm_dtype
    from lowres.train.common import precision_flags

    fake_gpu("Tesla T4", 7, 5)
    assert torch.cuda.is_bf16_supported()  # the trap: True on a T4
    hw = detect()
    assert (hw.device, hw.dtype, hw.bf16_supported) == ("cuda", "fp16", False)
    assert precision_flags(hw) == {"bf16": False, "fp16": True}
    assert hw.torch_dtype == torch.float16  # what Unsloth's loader is given
    assert vllm_dtype(hw.dtype) == "float16"
    with pytest.raises(Exception, match="bf16 is not supported"):
        detect("bf16")


def test_an_ampere_gpu_trains_in_bf16(fake_gpu):
    fake_gpu("NVIDIA A100-SXM4-40GB", 8, 0, 40)
    hw = detect()
    assert (hw.dtype, hw.bf16_supported) == ("bf16", True)


def test_lowres_env_tells_the_truth_on_a_t4(fake_gpu):
    from lowres.cli import cli

    fake_gpu("Tesla T4", 7, 5)
    result = CliRunner().invoke(cli, ["env"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Tesla T4" in result.output
    assert re.search(r"bf16 supported\W+no\b", result.output), result.output
    assert "GPU lacks bf16" in result.output


def test_trainable_parameters_leave_16_bit_unless_training_in_bf16():
    """C2: TRL casts a 4-bit model's LoRA weights to bf16; fp16 AMP's grad scaler cannot unscale them."""
    from lowres.train.backend import trainable_in_fp32

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    t4 = Hardware("cuda", "Tesla T4", 15.0, False, "transformers", "fp16")
    assert trainable_in_fp32(model, t4) == 2
    assert model[1].weight.dtype == torch.float32 and model[1].bias.dtype == torch.float32
    assert model[0].weight.dtype == torch.bfloat16  # frozen weights keep their dtype
    ampere = Hardware("cuda", "A100", 40.0, True, "transformers", "bf16")
    assert trainable_in_fp32(model.to(torch.bfloat16), ampere) == 0


class FakeFastLanguageModel:
    """Records the arguments lowres passes to Unsloth."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, **kwargs):
        cls.calls.append(("from_pretrained", kwargs))
        return object(), SimpleNamespace(pad_token="<pad>", eos_token="</s>")

    @classmethod
    def get_peft_model(cls, model, **kwargs):
        cls.calls.append(("get_peft_model", kwargs))
        return model


@pytest.fixture
def fake_unsloth(monkeypatch):
    FakeFastLanguageModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FakeFastLanguageModel))
    return FakeFastLanguageModel.calls


@pytest.mark.parametrize("vllm", [True, False])
def test_unsloth_gets_the_recipes_model_seed_and_vllm_only_for_rlvr(fake_unsloth, monkeypatch, vllm):
    """C4: fast_inference (a vLLM engine) for GRPO only; W3: the exact model named; W4: the recipe's seed;
    S3: Unsloth's gradient checkpointing on a GPU."""
    from lowres.train import backend

    monkeypatch.setattr(hardware, "vllm_installed", lambda: vllm)
    hw = Hardware("cuda", "L4", 24.0, True, "unsloth", "bf16")
    lora = LoraSection(r=32)
    for for_rlvr in (False, True):
        backend.load_trainable("Qwen/Qwen2.5-3B", hw, lora, load_in_4bit=False, max_seq_length=4096, seed=1234,
                               gradient_checkpointing=backend.uses_gradient_checkpointing(hw),
                               colocated_vllm=for_rlvr and hardware.vllm_placement("auto", hw) == "unsloth")
    (_, warm_load), (_, warm_peft), (_, rl_load), (_, rl_peft) = fake_unsloth
    for load in (warm_load, rl_load):
        assert load["model_name"] == "Qwen/Qwen2.5-3B" and load["use_exact_model_name"] is True
        assert load["random_state"] == 1234 and load["dtype"] == torch.bfloat16
    assert "fast_inference" not in warm_load
    assert rl_load.get("fast_inference", False) is vllm
    if vllm:
        assert rl_load["max_lora_rank"] == 32
    for peft in (warm_peft, rl_peft):
        assert peft["random_state"] == 1234 and peft["use_gradient_checkpointing"] == "unsloth"


@pytest.mark.slow
def test_transformers_backend_lora_initialisation_follows_the_seed():
    """W4 on the transformers backend: PEFT draws LoRA A from torch's global generator."""
    from lowres.train.backend import load_trainable

    hw = detect()
    lora = LoraSection(r=4, target_modules=["q_proj"])

    def first_lora_a(seed):
        model, _ = load_trainable("embedded:smollm2-135m", hw, lora, load_in_4bit=False, max_seq_length=256,
                                  seed=seed, gradient_checkpointing=False)
        return next(p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n)

    torch.manual_seed(99)
    a = first_lora_a(7)
    b = first_lora_a(7)  # the global generator has moved on: only the seed can make these equal
    assert torch.equal(a, b)
    assert not torch.equal(a, first_lora_a(8))


def test_gradient_checkpointing_where_memory_needs_it(tmp_path, monkeypatch):
    """S3: TRL turns gradient checkpointing on by default; lowres decides and passes its answer: always
    on a GPU, on a CPU only when the activations would crowd the machine's memory."""
    from transformers import AutoConfig

    from lowres.recipe import recipe_from_dict
    from lowres.train import backend
    from lowres.train.rlvr import grpo_config

    cpu = detect()
    t4 = Hardware("cuda", "T4", 15.0, False, "unsloth", "fp16")
    assert backend.uses_gradient_checkpointing(t4) is True
    assert backend.uses_gradient_checkpointing(cpu) is False
    # The demo's GRPO micro-batch (8 × 896 tokens) on SmolLM2-135M needs ≈9.3 GB of activations.
    config = AutoConfig.from_pretrained(backend.resolve_model("embedded:smollm2-135m"))
    assert 9e9 < backend.activation_bytes(config, 8 * 896) < 10e9
    monkeypatch.setattr(backend, "machine_memory_bytes", lambda: 64 * 2**30)
    assert backend.uses_gradient_checkpointing(cpu, "embedded:smollm2-135m", 8 * 896) is False
    monkeypatch.setattr(backend, "machine_memory_bytes", lambda: 16 * 2**30)  # a 16 GB laptop
    assert backend.uses_gradient_checkpointing(cpu, "embedded:smollm2-135m", 8 * 896) is True
    recipe = recipe_from_dict({"name": "t", "model": {"name_or_path": "embedded:smollm2-135m"},
                               "output": {"dir": str(tmp_path)}}, "test")
    assert grpo_config(recipe, cpu, tmp_path, False).gradient_checkpointing is False


def test_dry_run_estimate_prices_embeddings_unquantised_and_vllm_share(monkeypatch):
    """W5: 4-bit leaves embeddings and lm_head in 16 bits (fp32 after PEFT's kbit preparation), and
    Unsloth's vLLM engine takes half the GPU."""
    from lowres import estimate
    from lowres.recipe import recipe_from_dict

    config = estimate.KNOWN_SHAPES["Qwen/Qwen2.5-0.5B"]  # a quarter of its weights are the embedding
    embeddings = estimate.embedding_parameters(config)
    assert estimate.weight_bytes(config, True, 2, "transformers") >= embeddings * 4
    assert estimate.weight_bytes(config, True, 2, "unsloth") >= embeddings * 2

    l4 = Hardware("cuda", "NVIDIA L4", 24.0, True, "unsloth", "bf16")
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: l4)
    monkeypatch.setattr(hardware, "vllm_installed", lambda: True)
    recipe = recipe_from_dict({"name": "t", "model": {"name_or_path": "Qwen/Qwen2.5-1.5B-Instruct"}}, "test")
    lines = estimate.describe(recipe)
    rlvr = next(line for line in lines if line.startswith("rlvr"))
    warmup = next(line for line in lines if line.startswith("warmup"))
    assert "reserves 50% of the GPU (12.0 GiB)" in rlvr and "vLLM" not in warmup


def test_importing_the_cli_imports_none_of_the_libraries_unsloth_patches():
    """S1: so that the training commands can import unsloth before them."""
    code = ("import sys, lowres.cli; "
            "print(sorted(m for m in ('transformers', 'peft', 'trl', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("command", ["warmup", "rlvr"])
@pytest.mark.parametrize("backend", ["auto", "transformers"])
def test_training_commands_import_unsloth_before_the_libraries(monkeypatch, tmp_path, command, backend):
    """S1: the CLI's start-up imports transformers (quiet_libraries); a training command asks for
    unsloth first, with the recipe's backend (transformers: never imported), then the libraries."""
    from lowres import ui
    from lowres.cli import cli
    from lowres.train import rlvr, warmup

    order = []
    monkeypatch.setattr(hardware, "import_unsloth_first", lambda backend, processes: order.append(("unsloth", backend)))
    monkeypatch.setattr(ui, "quiet_libraries", lambda: order.append("libraries"))
    monkeypatch.setattr(warmup, "run_warmup", lambda *a, **k: order.append("train"))
    monkeypatch.setattr(rlvr, "run_rlvr", lambda *a, **k: order.append("train"))
    monkeypatch.chdir(tmp_path)  # the run folder (and its lock) goes to runs/demo there
    result = CliRunner().invoke(cli, [command, "demo", "--set", f"model.backend={backend}"])
    assert result.exit_code == 0, result.output
    assert order == [("unsloth", backend), "libraries", "train"]


@pytest.mark.parametrize("command", ["run", "eval", "merge", "env"])
def test_other_commands_never_import_unsloth(monkeypatch, command):
    """`lowres run` conducts child processes: Unsloth's class patches must never enter it."""
    from lowres import ui
    from lowres.cli import cli

    order = []
    monkeypatch.setattr(hardware, "import_unsloth_first", lambda backend: order.append("unsloth"))
    monkeypatch.setattr(ui, "quiet_libraries", lambda: order.append("libraries"))
    CliRunner().invoke(cli, [command, "--help"])
    assert order == ["libraries"]


def test_import_unsloth_first_imports_it_on_a_cuda_machine(fake_gpu, monkeypatch, tmp_path):
    (tmp_path / "unsloth.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    fake_gpu("NVIDIA L4", 8, 9)
    monkeypatch.setattr(hardware, "unsloth_installed", lambda: True)
    assert hardware.import_unsloth_first("transformers") is False and "unsloth" not in sys.modules
    assert hardware.import_unsloth_first() is True
    try:
        assert sys.modules["unsloth"].IMPORTED
    finally:  # (monkeypatch.delitem would put the stand-in back at teardown, for every later test to see)
        del sys.modules["unsloth"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.import_unsloth_first() is False and "unsloth" not in sys.modules


def test_merge_loads_the_base_straight_onto_the_gpu(monkeypatch, tmp_path):
    """S4: the 16-bit base goes to the GPU at load time (device_map), not through CPU memory first."""
    from transformers import AutoModelForCausalLM

    from lowres.train import merge

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    seen = {}

    class Loaded(Exception):
        pass

    def from_pretrained(location, **kwargs):
        seen.update(kwargs)
        raise Loaded

    monkeypatch.setattr(merge, "detect", lambda dtype: Hardware("cuda", "L4", 24.0, True, "transformers", "bf16"))
    monkeypatch.setattr(merge, "resolve_model", lambda ref: ref)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(Loaded):
        merge.run_merge("Qwen/Qwen2.5-3B", tmp_path / "adapter", tmp_path / "merged")
    assert seen["device_map"] == {"": 0} and seen["dtype"] == torch.bfloat16


def test_a_memory_cap_makes_an_80_gb_card_behave_as_a_24_gb_one(fake_gpu, monkeypatch):
    """LOWRES_GPU_MEMORY_GIB caps the process through torch's per-process memory fraction, and every lowres
    decision that reads the card's memory (detect(), `lowres env`) sees the cap."""
    from lowres.cli import cli

    fractions = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: fractions.append(f))
    fake_gpu("NVIDIA H100 80GB HBM3", 9, 0, 80)
    monkeypatch.setenv("LOWRES_GPU_MEMORY_GIB", "22.5")
    hw = detect()
    assert hw.vram_gb == 22.5 and fractions == [22.5 / 80]
    assert "GPU memory capped at 22.5 GiB of 80.0 (LOWRES_GPU_MEMORY_GIB)" in hw.reasons
    result = CliRunner().invoke(cli, ["env"], terminal_width=200)
    assert result.exit_code == 0 and "NVIDIA H100 80GB HBM3, 22.5 GiB" in result.output
    for bad, said in [("lots", "'lots': give the GPU memory to cap at in GiB"), ("96", "96 GiB is more than this GPU")]:
        monkeypatch.setenv("LOWRES_GPU_MEMORY_GIB", bad)
        result = CliRunner().invoke(cli, ["env"])
        assert result.exit_code == 2 and said in result.output


def test_a_stage_past_the_cap_is_reported_as_not_fitting_with_the_settings_to_lower(monkeypatch):
    """What a stage under the cap says when an allocation fails there (the real failure: tests/gpu)."""
    from lowres.errors import OutOfMemory
    from lowres.train.common import oom_guard

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: int(7.9 * 2**30))
    monkeypatch.setenv("LOWRES_GPU_MEMORY_GIB", "8")
    with pytest.raises(OutOfMemory) as caught:
        with oom_guard("rlvr", {"rlvr.per_device_train_batch_size": 8, "rlvr.max_completion_length": 1024}, True):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(caught.value) == (
        "rlvr: out of GPU memory at 7.9 GiB, under the 8 GiB cap (LOWRES_GPU_MEMORY_GIB): it does not fit a card "
        "that size; lower rlvr.per_device_train_batch_size (8) or rlvr.max_completion_length (1024) (gradient "
        "checkpointing is on)")


def test_rollout_weight_copies_are_made_only_below_the_cap(monkeypatch):
    """decode's merged/bf16 weight copies on a GPU: made when they fit what is free below the cap, not the card."""
    from lowres import decode

    weights = [torch.nn.Parameter(torch.zeros(1024, 1024))]  # 4 MiB fp32, 2 MiB as bf16 copies
    monkeypatch.setattr(weights[0].__class__, "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: int(8 * 2**30 - 3 * 2**20))
    assert decode._room_for_copies(weights, torch.bfloat16)  # no cap: 70 GiB free
    monkeypatch.setenv("LOWRES_GPU_MEMORY_GIB", "8")
    assert not decode._room_for_copies(weights, torch.bfloat16)  # 3 MiB left below the cap, 2 × 2 MiB needed
    assert decode._room_for_copies(weights, torch.int8)  # 1 MiB of int8 copies: 2 × 1 MiB fits
