"""Merge a LoRA adapter into the 16-bit base model.

Never into 4-bit weights: re-quantizing the merged weights to NF4 adds rounding noise about as large
as the LoRA update itself. So the base is loaded in the working dtype (bf16 on GPUs, fp32 on CPU),
the adapter applied and merged, and the result saved as a normal transformers folder. Before saving
we check that the merged model's logits match base+adapter on a few prompts and report the largest
difference.
"""

from __future__ import annotations

import json
from pathlib import Path

from lowres.artifacts import building_folder, disk_guard, output_folder, write_json
from lowres.errors import OutOfMemory, UserError
from lowres.hardware import detect
from lowres.models import resolve_model
from lowres.ui import console

VERIFY_PROMPTS = (
    "Knights always tell the truth and knaves always lie. Alice says: Bob is a knave.",
    "What is 17 + 25? Think step by step.",
    "def fibonacci(n):",
    "The capital of France is",
)

# The logit check compares base+adapter (the LoRA update computed in fp32 on top of the base) with the
# merged weights, which are rounded to the working dtype. In fp32 the two agree to ~1e-6 of the logits'
# scale; bf16 keeps 8 bits of mantissa, and on SmolLM2-135M good bf16 merges of two random adapters
# differed by 3.5% and 8.2% (fp32: 3e-6). So a 16-bit merge is judged against its dtype's rounding floor as well
# as merge.tolerance: the check still catches a merge that is off by more than rounding can explain.
ROUNDING_FLOOR = {"fp32": 0.0, "fp16": 0.05, "bf16": 0.25}


def _check_adapter(adapter_dir: Path) -> dict:
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise UserError(f"{adapter_dir}: no LoRA adapter here (adapter_config.json is missing); "
                        "run the warmup stage first")
    return json.loads(config.read_text())


def adapter_is_unchanged(adapter: Path | None) -> bool:
    """Whether a LoRA adapter is still its initialisation: every B matrix zero, so it adds nothing to the
    model. GRPO leaves it so when no step had a reward difference to learn from (every group's
    completions scored alike), a warmup whose every step had learning rate 0 likewise: the model is then
    exactly the one it started from."""
    if adapter is None or not (adapter / "adapter_model.safetensors").is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as weights:
        b_names = [name for name in weights.keys() if "lora_B" in name]
        return bool(b_names) and all(not weights.get_tensor(name).any() for name in b_names)


def _device_map(hw) -> dict:
    return {"": 0 if hw.device == "cuda" else hw.device}


def run_merge(base_ref: str, adapter_dir: str | Path, out_dir: str | Path, *, dtype: str = "auto",
              verify_prompts: int = 3, tolerance: float = 1e-2) -> Path:
    """base + adapter → merged folder. Returns out_dir. Writes merge.json with the logit check."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    _check_adapter(adapter_dir)
    location = resolve_model(base_ref)
    if Path(location).exists() and Path(location).resolve() == out_dir.resolve():
        raise UserError(f"refusing to overwrite the base model at {out_dir}; choose another output folder")
    output_folder(out_dir.parent, "folder for the merged model")
    hw = detect(dtype)
    try:
        merged, tokenizer, report = _merge_and_check(location, base_ref, adapter_dir, hw, verify_prompts, tolerance)
    except Exception as e:
        from lowres.train.common import is_out_of_memory

        if not is_out_of_memory(e):
            raise
        raise OutOfMemory(f"merge: out of GPU memory holding the 16-bit model ({hw.dtype}); free the GPU, or merge "
                          "on the CPU (slower): CUDA_VISIBLE_DEVICES= lowres merge …") from None
    # Built under <out>.partial and renamed into place: a crash mid-save leaves no half-written model.
    with disk_guard(out_dir, "merge"), building_folder(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "merge.json", report)
    console.print(f"merged {adapter_dir} into {base_ref} ({hw.dtype}); max logit difference vs "
                  f"base+adapter {report['max_logit_diff']:.2e} on {report['prompts']} prompts → {out_dir}")
    if report["adapter_unchanged"]:
        console.print(f"[yellow]merge: the adapter {adapter_dir} is unchanged from its initialisation (every LoRA B "
                      f"matrix is zero): no training step moved it, so the merged model is {base_ref} itself[/yellow]")
    return out_dir


def _merge_and_check(location: str, base_ref: str, adapter_dir: Path, hw, verify_prompts: int, tolerance: float):
    """Load base + adapter, merge, and compare logits; returns (merged model, tokenizer, report)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with console.status("merging the adapter into the 16-bit base"):
        # Straight onto the device (a GPU's 16-bit copy never passes through CPU memory).
        base = AutoModelForCausalLM.from_pretrained(location, dtype=hw.torch_dtype, device_map=_device_map(hw))
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir if (adapter_dir / "tokenizer_config.json").is_file()
                                                  else location)
        try:
            model = PeftModel.from_pretrained(base, adapter_dir)
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise UserError(f"adapter {adapter_dir} does not fit base model {base_ref}: {first}") from None
        model.eval()
        prompts = list(VERIFY_PROMPTS[:verify_prompts])
        with torch.no_grad():
            before = [model(**tokenizer(p, return_tensors="pt").to(hw.device)).logits.float() for p in prompts]
            merged = model.merge_and_unload()
            after = [merged(**tokenizer(p, return_tensors="pt").to(hw.device)).logits.float() for p in prompts]
    max_diff = max(((a - b).abs().max().item() for a, b in zip(before, after, strict=True)), default=0.0)
    scale = max((b.abs().max().item() for b in before), default=1.0)
    relative = max_diff / max(scale, 1.0)  # relative to the logits' magnitude
    allowed = max(tolerance, ROUNDING_FLOOR[hw.dtype])
    unchanged = adapter_is_unchanged(adapter_dir)
    if relative > allowed:
        raise UserError(f"merged model disagrees with base+adapter: max logit difference {max_diff:.3g} "
                        f"({relative:.3g} relative) > {allowed} (merge.tolerance {tolerance}, {hw.dtype} rounding "
                        f"floor {ROUNDING_FLOOR[hw.dtype]}); the merge is not trustworthy")
    report = {"base_model": base_ref, "adapter": str(adapter_dir), "dtype": hw.dtype, "prompts": len(prompts),
              "max_logit_diff": max_diff, "relative_diff": relative, "tolerance": tolerance,
              "allowed": allowed, "adapter_unchanged": unchanged}
    return merged, tokenizer, report

