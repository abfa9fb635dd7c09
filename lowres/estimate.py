"""Rough model size and memory figures for `lowres run --dry-run`, without loading any weights.

The parameter count comes from the model's config.json (a local folder, the embedded model's cache,
or the Hugging Face cache — never the network). Memory is weights plus the LoRA adapter's training
state, plus — where lowres trains without gradient checkpointing (a CPU) — the activations of the longest
micro-batch the settings allow; the Python runtime and the generation cache come on top.
"""

from __future__ import annotations

import json
from pathlib import Path

from lowres.models import EMBEDDED, EMBEDDED_PREFIX, lowres_home
from lowres.recipe import LoraSection, Recipe


def _qwen25(hidden, layers, heads, kv, inter, vocab=151936, tied=True):
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab, "tie_word_embeddings": tied}


# Shapes of the models the bundled recipes use, so a dry run can size them before any download.
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-0.5B": _qwen25(896, 24, 14, 2, 4864),
    "Qwen/Qwen2.5-1.5B": _qwen25(1536, 28, 12, 2, 8960),
    "Qwen/Qwen2.5-3B": _qwen25(2048, 36, 16, 2, 11008),
    "Qwen/Qwen2.5-7B": _qwen25(3584, 28, 28, 4, 18944, vocab=152064, tied=False),
}


def local_config(ref: str) -> dict | None:
    """config.json of a model reference, if it is on this machine (or a known shape)."""
    known = KNOWN_SHAPES.get(ref.removesuffix("-Instruct"))
    if known is not None:
        return known
    if ref.startswith(EMBEDDED_PREFIX):
        path = lowres_home() / "models" / ref[len(EMBEDDED_PREFIX):] / "config.json"
    elif Path(ref).expanduser().is_dir():
        path = Path(ref).expanduser() / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json")
        except Exception:  # an odd id: treat as not cached
            cached = None
        path = Path(cached) if isinstance(cached, str) else None
    if path is None or not path.is_file():
        return None
    config = json.loads(path.read_text())
    return config.get("text_config", config)


def count_parameters(config: dict) -> int:
    """Parameters of a decoder-only transformer (Llama/Qwen/Mistral-style config)."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads)
    inter = config["intermediate_size"]
    attention = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    mlp = 3 * h * inter
    return layers * (attention + mlp + 2 * h) + embedding_parameters(config) + h


def lora_parameters(config: dict, lora: LoraSection) -> int:
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads)
    inter = config["intermediate_size"]
    shapes = {"q_proj": (h, heads * head_dim), "k_proj": (h, kv * head_dim), "v_proj": (h, kv * head_dim),
              "o_proj": (heads * head_dim, h), "gate_proj": (h, inter), "up_proj": (h, inter),
              "down_proj": (inter, h)}
    return layers * sum(lora.r * (a + b) for name, (a, b) in shapes.items() if name in lora.target_modules)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def embedding_parameters(config: dict) -> int:
    """Input embeddings plus lm_head (one matrix when tied)."""
    return config["vocab_size"] * config["hidden_size"] * (1 if config.get("tie_word_embeddings", False) else 2)


# What one parameter costs in bytes when the base is loaded in 4-bit: NF4 with its double-quantised
# scales is ≈4.4 bits. Embeddings and lm_head are not quantised: they stay 16-bit under Unsloth, and
# PEFT's prepare_model_for_kbit_training (the transformers backend) casts them to fp32.
NF4_BYTES = 0.55
# Unsloth's colocated vLLM engine (fast_inference, GRPO only) reserves this share of the GPU's memory.
VLLM_GPU_SHARE = 0.5


def weight_bytes(config: dict, four_bit: bool, dense_bytes: int, backend: str) -> float:
    """Bytes of the base model's weights as the given backend holds them for training."""
    params = count_parameters(config)
    if not four_bit:
        return params * dense_bytes
    embeddings = embedding_parameters(config)
    unquantised_bytes = 4 if backend == "transformers" else dense_bytes
    return (params - embeddings) * NF4_BYTES + embeddings * unquantised_bytes


def describe(recipe: Recipe) -> list[str]:
    """Lines for the dry run: parameter count and a per-stage weights + LoRA-state memory figure."""
    config = local_config(recipe.model.name_or_path)
    if config is None and recipe.model.name_or_path.startswith(EMBEDDED_PREFIX):
        name = recipe.model.name_or_path[len(EMBEDDED_PREFIX):]
        if name in EMBEDDED:
            return ["model size: 135M parameters (converted on first use)"]
    if config is None:
        return ["model size: unknown until the model is downloaded (its config.json is not on this machine)"]
    try:
        params = count_parameters(config)
    except KeyError as e:
        return [f"model size: unknown (config.json has no {e.args[0]})"]
    lines = [f"model size: {params / 1e9:.2f}B parameters"]
    from lowres.hardware import detect, resolve_load_in_4bit, vllm_placement

    hw = detect(recipe.model.dtype, recipe.model.backend, recipe.num_processes)
    dense_bytes = 4 if hw.dtype == "fp32" else 2
    vllm = vllm_placement(recipe.rlvr.vllm, hw) in ("unsloth", "colocate")
    warmup_4bit, warmup_why = resolve_load_in_4bit(recipe.warmup.load_in_4bit, hw.device)
    rlvr = recipe.rlvr
    stages = (("warmup", warmup_4bit, recipe.warmup.lora, recipe.warmup.per_device_train_batch_size,
               recipe.model.max_seq_length, "model.max_seq_length"),
              ("rlvr", rlvr.load_in_4bit, rlvr.lora, rlvr.per_device_train_batch_size,
               rlvr.max_prompt_length + rlvr.max_completion_length,
               "(rlvr.max_prompt_length + rlvr.max_completion_length)"))
    for stage, four_bit, lora, rows, length, length_text in stages:
        if stage not in recipe.stages:
            continue
        weights = weight_bytes(config, four_bit, dense_bytes, hw.backend)
        adapter = lora_parameters(config, lora) * 16  # fp32 weight, grad and two Adam moments
        precision = "4-bit, embeddings unquantised" if four_bit else hw.dtype
        if stage == "warmup" and warmup_why != "asked for":
            precision += f"; load_in_4bit {warmup_why}"
        line = (f"{stage} on this {hw.device} ({hw.backend}): ≈{_gib(weights + adapter)} for weights ({precision}) "
                "and LoRA state; " + activation_text(config, hw, rows, length, weights + adapter,
                                                    f"{stage}.per_device_train_batch_size × {length_text}",
                                                    ["the output logits", *(["the sampling cache"]
                                                                            if stage == "rlvr" else [])]))
        if stage == "rlvr" and vllm:
            share = f"{VLLM_GPU_SHARE:.0%} of the GPU"
            if hw.vram_gb:
                share += f" ({hw.vram_gb * VLLM_GPU_SHARE:.1f} GiB)"
            line += f"; the colocated vLLM engine reserves {share} for rollouts, so this must fit in the rest"
        lines.append(line)
    return lines


def activation_text(config: dict, hw, rows: int, length: int, static: float, what: str,
                    also: list[str] = ()) -> str:
    """The activations a training micro-batch of `rows` × `length` tokens keeps for its backward pass, in words
    and, where lowres trains without gradient checkpointing (a CPU micro-batch that fits), in GiB
    (lowres.train.backend.activation_bytes, for the longest micro-batch the settings allow), with the total
    over `static` bytes; `also`: what else is not counted."""
    from types import SimpleNamespace

    from lowres.train.backend import CPU_ACTIVATION_SHARE, activation_bytes, machine_memory_bytes

    tokens = rows * length
    if hw.device == "cuda":
        return ("plus activations, not counted: gradient checkpointing (always on on a GPU) keeps only a part of "
                "them; `lowres bench` measures the peak")
    activations = activation_bytes(SimpleNamespace(**config), tokens)
    if activations > CPU_ACTIVATION_SHARE * machine_memory_bytes():
        return (f"plus activations, not counted: a micro-batch of up to {tokens} tokens ({what}) would keep "
                f"≈{_gib(activations)}, over {CPU_ACTIVATION_SHARE:.0%} of this machine's memory, so gradient "
                "checkpointing recomputes them instead")
    return (f"plus ≈{_gib(activations)} of activations for a micro-batch of up to {tokens} tokens ({what}): "
            f"≈{_gib(static + activations)} in all, before {_and(['the Python runtime', *also])}")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# Checkpoints a training stage keeps at once: transformers' save_total_limit (2) plus the one being written.
_CHECKPOINTS_ON_DISK = 3
_MARGIN_BYTES = 64 * 2**20


def stage_disk_bytes(recipe: Recipe, stage: str) -> int:
    """Roughly what `stage` writes to the run folder (0 when the model's size is unknown): each
    checkpoint holds the fp32 LoRA weights and two Adam moments; the merge, the whole 16-bit model."""
    config = local_config(recipe.model.name_or_path)
    if config is None:
        return 0
    try:
        if stage in ("warmup", "rlvr", "rlvr-no-warmup", "rlvr-random-reward"):
            lora = recipe.warmup.lora if stage == "warmup" else recipe.rlvr.lora
            adapter = lora_parameters(config, lora) * 4
            return adapter * 3 * _CHECKPOINTS_ON_DISK + adapter + _MARGIN_BYTES
        if stage == "merge":
            from lowres.hardware import detect

            dense_bytes = 4 if detect(recipe.model.dtype).dtype == "fp32" else 2
            return count_parameters(config) * dense_bytes + _MARGIN_BYTES
    except KeyError:  # an unusual config.json: no estimate
        return 0
    return _MARGIN_BYTES
