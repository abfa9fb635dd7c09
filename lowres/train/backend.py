"""The two training backends behind one small interface.

`load_trainable` loads a model and tokenizer (4-bit or not) and attaches a LoRA adapter:
- unsloth (CUDA + unsloth installed): FastLanguageModel, its fused kernels and its gradient
  checkpointing. Unsloth must be imported before trl/transformers/peft (it patches them), which
  `prepare_backend` does; the TRL trainers used afterwards are then Unsloth's patched ones.
- transformers (everything else): AutoModelForCausalLM (+ BitsAndBytesConfig for 4-bit), PEFT LoRA.

Only the unsloth branch needs a GPU; it is kept thin so the rest is what the CPU tests exercise.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from lowres.errors import UserError
from lowres.hardware import Hardware, keep_unsloth_cache_in_lowres_home, training_device
from lowres.models import resolve_model
from lowres.recipe import LoraSection


def prepare_backend(hw: Hardware) -> None:
    """Import unsloth first when it is the backend; elsewhere make sure TRL has a log-prob kernel that
    runs on this device."""
    if hw.backend != "unsloth":
        from lowres.train.compat import ensure_logprob_kernel

        ensure_logprob_kernel(on_cuda=hw.device == "cuda")
        return
    if "unsloth" in sys.modules:  # imported first already (it imports trl and peft itself)
        return
    late = [m for m in ("trl", "peft") if m in sys.modules]
    if late:
        # Unsloth still works, but without its patches to these: say so rather than be silently slow.
        from lowres.ui import console

        console.print(f"[yellow]unsloth imported after {', '.join(late)}; "
                      "some of its speed-ups may be missing[/yellow]")
    keep_unsloth_cache_in_lowres_home()
    import unsloth  # noqa: F401


def lora_config(lora: LoraSection, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
                      target_modules=list(lora.target_modules), task_type=task_type, bias="none")


def _require_bitsandbytes() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("4-bit loading needs bitsandbytes: pip install bitsandbytes "
                        "(or set load_in_4bit: false in the recipe)")


# Activations a decoder layer keeps for the backward pass without checkpointing, in fp32 floats per
# token: about 8 × hidden_size + 4 × intermediate_size. Checked against GRPO on SmolLM2-135M
# (8 × 896 tokens, 30 layers): this gives 9.3 GB; the stage's peak resident memory was 15.2 GiB.
def activation_bytes(config, tokens_per_micro_batch: int) -> float:
    config = getattr(config, "text_config", None) or config
    per_token = config.num_hidden_layers * (8 * config.hidden_size + 4 * config.intermediate_size) * 4
    return float(tokens_per_micro_batch * per_token)


CPU_ACTIVATION_SHARE = 0.4  # of the machine's memory, above which a CPU run checkpoints too


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activations_need_checkpointing(config, tokens_per_micro_batch: int) -> bool:
    """Whether a CPU micro-batch of this many tokens would keep more activations than memory allows."""
    return activation_bytes(config, tokens_per_micro_batch) > CPU_ACTIVATION_SHARE * machine_memory_bytes()


def set_checkpointing(model, on: bool) -> None:
    """Turn recomputation of the decoder layers' activations on or off for the next forward (the
    backward of a forward already run is unaffected)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    if on and layers and not hasattr(layers[0], "_gradient_checkpointing_func"):
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for layer in layers:
        layer.gradient_checkpointing = on


def checkpointing_active(model) -> bool:
    """Whether the next forward recomputes decoder layers' activations (per layer, as set_checkpointing
    leaves them; the model-level `is_gradient_checkpointing` stays True once it was ever enabled)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return any(m.gradient_checkpointing for m in model.modules() if isinstance(m, GradientCheckpointingLayer))


def uses_gradient_checkpointing(hw: Hardware, model_ref: str | None = None,
                                tokens_per_micro_batch: int | None = None) -> bool:
    """Recompute activations in the backward pass where memory needs it: always on a GPU, where memory
    is what limits the batch; on a CPU only when the micro-batch's activations would take more than
    CPU_ACTIVATION_SHARE of the machine's memory (there recomputation costs about a quarter of a
    warmup step). Model loading and the trainer config both take this one answer (TRL's default is on)."""
    if hw.device == "cuda":
        return True
    if model_ref is None or tokens_per_micro_batch is None:
        return False
    from transformers import AutoConfig

    try:
        return activations_need_checkpointing(AutoConfig.from_pretrained(resolve_model(model_ref)),
                                              tokens_per_micro_batch)
    except (OSError, ValueError, AttributeError):
        return False


def load_trainable(model_ref: str, hw: Hardware, lora: LoraSection, *, load_in_4bit: bool,
                   max_seq_length: int, seed: int, gradient_checkpointing: bool, colocated_vllm: bool = False):
    """(model with a fresh LoRA adapter, tokenizer). The adapter's initialisation is seeded with `seed`.

    gradient_checkpointing: uses_gradient_checkpointing's answer, which the trainer config gets too.
    colocated_vllm: the model will sample GRPO rollouts in a vLLM engine in this process (Unsloth's
    fast_inference; see hardware.vllm_placement); only the unsloth backend starts one here."""
    location = resolve_model(model_ref)
    if load_in_4bit:
        _require_bitsandbytes()
    if hw.backend == "unsloth":
        return _load_unsloth(location, hw, lora, load_in_4bit, max_seq_length, gradient_checkpointing, seed,
                             fast_inference=colocated_vllm)
    return _load_transformers(location, hw, lora, load_in_4bit, gradient_checkpointing, seed)


def _load_transformers(location: str, hw: Hardware, lora: LoraSection, load_in_4bit: bool,
                       gradient_checkpointing: bool, seed: int):
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict = {"dtype": hw.torch_dtype}
    if load_in_4bit:
        compute = hw.torch_dtype if hw.torch_dtype != torch.float32 or hw.device == "cpu" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        # Each process of a multi-GPU launch loads its own copy onto its own GPU.
        kwargs["device_map"] = {"": training_device(hw)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as e:
        raise UserError(f"cannot load model {location!r}: {str(e).strip().splitlines()[0]}") from None
    if not load_in_4bit:
        model.to(training_device(hw))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(seed)  # PEFT draws LoRA's A matrices from torch's global generator
    try:
        model = get_peft_model(model, lora_config(lora))
    except ValueError as e:
        raise UserError(f"LoRA target_modules {lora.target_modules} do not fit this model: {e}") from None
    return model, tokenizer


def _load_unsloth(location: str, hw: Hardware, lora: LoraSection, load_in_4bit: bool, max_seq_length: int,
                  gradient_checkpointing: bool, seed: int, fast_inference: bool):
    prepare_backend(hw)
    from unsloth import FastLanguageModel

    # For GRPO with vLLM installed, rollouts run in a colocated vLLM engine that hot-swaps the LoRA
    # weights (Unsloth's fast_inference), instead of TRL's merge-into-4-bit sync, which is lossy. Never
    # for SFT: the engine would hold half the GPU for nothing.
    extra = {"fast_inference": True, "max_lora_rank": lora.r} if fast_inference else {}
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=location, max_seq_length=max_seq_length, load_in_4bit=load_in_4bit,
        dtype=hw.torch_dtype,
        # Without it Unsloth swaps a hub id for its own pre-quantized repository (e.g. Qwen/Qwen2.5-3B
        # → unsloth/Qwen2.5-3B-unsloth-bnb-4bit): the recipe's model must be the model trained.
        use_exact_model_name=True, random_state=seed, **extra)
    model = FastLanguageModel.get_peft_model(
        model, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
        target_modules=list(lora.target_modules), bias="none", random_state=seed,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def trainable_in_fp32(model, hw: Hardware) -> int:
    """Cast the trainable (LoRA) parameters to fp32 unless training in bf16; returns how many changed.

    Call after building a TRL trainer: for a 4-bit model TRL casts them to bf16, which the fp16 grad
    scaler cannot unscale (a T4 fails at its first optimizer step) and which a CPU computes slowly
    and less precisely than the fp32 the backend chose."""
    import torch

    if hw.dtype == "bf16":
        return 0
    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            changed += 1
    return changed
