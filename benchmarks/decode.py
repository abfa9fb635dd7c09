"""Sampling speed against this machine's roofline: lowres's decoding loop (lowres/decode.py), and
transformers' `generate` for reference.

    python benchmarks/decode.py                       # batches 8 and 32 (the demo's GRPO and eval batches)
    python benchmarks/decode.py --batches 8,32,100 --tokens 64 --json decode.json
    python benchmarks/decode.py --methods generate,lowres,lowres-bf16

Every method samples the same K&K prompts (T=0.7, top-p 0.95) for exactly --tokens new tokens (no early stop,
so the figures compare the per-step cost, not completion lengths); the prefill is timed apart.

The roofline, measured in the same process: this machine's memory read bandwidth (the sum of a buffer
several times the last-level cache, best of 5) and its matmul speed in the weights' dtype (2048², best of
5). A decoding step must read every weight once (the tied embedding counts once, as the LM head) and the
keys and values written so far, for every row; it must also do 2 × parameters × rows multiply-adds (plus
attention's). Its least possible time is the larger of bytes / bandwidth and FLOPs / matmul speed; the
step's `roofline_share` is that time over the measured one (1.0: at the roofline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lowres.decode import sample_batch  # noqa: E402
from lowres.hardware import matmul_gflops  # noqa: E402
from lowres.models import load_model_and_tokenizer  # noqa: E402
from lowres.prompting import render_prompt  # noqa: E402
from lowres.tasks import get_task  # noqa: E402


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes per second this machine reads from memory: the sum of a float32 buffer of `gib` GiB (far larger
    than any last-level cache), best of `repeats`."""
    buffer = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
    buffer.sum()
    best = min(_timed(buffer.sum) for _ in range(repeats))
    return buffer.numel() * 4 / best


def matmul_speed(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a size² matmul in `dtype`, best of `repeats`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    return 2 * size**3 / min(_timed(lambda: a @ b) for _ in range(repeats))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_needs(model, dtype: torch.dtype, rows: int, prompt: int, tokens: int) -> dict:
    """What one decoding step must read and compute, averaged over the `tokens` steps after a `prompt`-token
    prefill: the weights once, and each row's keys and values so far."""
    config = model.config
    size = torch.tensor([], dtype=dtype).element_size()
    kv_size = 2 if dtype == torch.int8 else size  # int8 rollouts: int8 linear weights, a bf16 cache
    parameters = sum(p.numel() for p in model.parameters())  # a tied embedding is one tensor: counted once
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    context = prompt + (tokens + 1) / 2  # positions attended to, on average over the steps
    kv_per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * kv_size
    attention_flops = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * context
    return {"weight_bytes": parameters * size, "kv_bytes": kv_per_position * context * rows,
            "flops": rows * (2 * parameters + attention_flops)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--batches", default="8,32", help="rows per batch, comma-separated")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--methods", default="lowres-bf16,lowres",
                        help="comma-separated: lowres-bf16 (GRPO's and evaluation's default on a CPU with native "
                             "bf16), lowres (the model's fp32 weights), lowres-int8 (rlvr.rollout_dtype: int8), "
                             "generate (transformers)")
    parser.add_argument("--json", type=Path, help="also write every row's figures here")
    args = parser.parse_args()
    if args.tokens < 32:
        parser.error("--tokens below 32 leaves the per-step time in the noise of the prefill; use 32 or more")

    model, tokenizer = load_model_and_tokenizer(args.model)
    model.eval()
    task = get_task("kk_easy")
    batches = [int(b) for b in args.batches.split(",")]
    rows = task.load("test", limit=max(batches))
    prompts = [render_prompt(tokenizer, task.prompt(row), "model") for row in rows]
    tokenizer.padding_side = "left"
    never = {-1}  # no stop token: every row runs the full length

    def method(name: str, enc):
        dtype = {"lowres-bf16": torch.bfloat16, "lowres-int8": torch.int8}.get(name)
        if name == "generate":
            def run(n):
                with torch.no_grad():
                    model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=0.7,
                                   top_p=0.95, top_k=0, pad_token_id=tokenizer.pad_token_id)
            return run, model.dtype
        return (lambda n: sample_batch(model, enc["input_ids"], enc["attention_mask"], n, never, 0.7, 0.95,
                                       rollout_dtype=dtype)), dtype or model.dtype

    gflops_before = matmul_gflops()
    bandwidth = read_bandwidth()
    speed = {dtype: matmul_speed(dtype) for dtype in (torch.float32, torch.bfloat16)}
    print(f"{args.model}, {args.tokens} new tokens, {torch.get_num_threads()} threads; memory read "
          f"{bandwidth / 1e9:.1f} GB/s; matmul {speed[torch.float32] / 1e9:.0f} GFLOP/s fp32, "
          f"{speed[torch.bfloat16] / 1e9:.0f} GFLOP/s bf16")
    print(f"{'method':>12} {'rows':>4} {'ms/step':>8} {'tok/s':>6} {'weights MB':>10} {'KV MB':>6} {'GB/s':>5} "
          f"{'of bw':>6} {'mem ms':>6} {'compute ms':>10} {'roofline':>8}")
    results = []
    for rows_n in batches:
        enc = tokenizer(prompts[:rows_n], return_tensors="pt", padding=True, add_special_tokens=False)
        for name in args.methods.split(","):
            run, dtype = method(name.strip(), enc)
            # The prefill (and, for bf16, the weights' copy) is what a 1-token run costs: the best of two, taken
            # off a whole run, leaves the decoding steps.
            prefill = min(_timed(lambda run=run: run(1)) for _ in range(2))
            per_step = (_timed(lambda run=run: run(args.tokens + 1)) - prefill) / args.tokens
            needs = step_needs(model, dtype, rows_n, enc["input_ids"].shape[1], args.tokens)
            moved = needs["weight_bytes"] + needs["kv_bytes"]
            # int8 weights are multiplied in bf16 (dequantized per block): bf16's matmul speed bounds them
            compute_speed = speed[torch.bfloat16] if dtype == torch.int8 else speed.get(dtype, speed[torch.float32])
            memory_bound, compute_bound = moved / bandwidth, needs["flops"] / compute_speed
            row = {"method": name, "rows": rows_n, "dtype": str(dtype).removeprefix("torch."),
                   "prompt_tokens": enc["input_ids"].shape[1], "ms_per_step": 1000 * per_step,
                   "prefill_s": prefill, "tokens_per_s": rows_n / per_step, **needs,
                   "achieved_gb_s": moved / per_step / 1e9, "bandwidth_share": moved / per_step / bandwidth,
                   "memory_bound_ms": 1000 * memory_bound, "compute_bound_ms": 1000 * compute_bound,
                   "bound": "memory" if memory_bound >= compute_bound else "compute",
                   "roofline_share": max(memory_bound, compute_bound) / per_step}
            results.append(row)
            print(f"{name:>12} {rows_n:>4} {row['ms_per_step']:8.1f} {row['tokens_per_s']:6.0f} "
                  f"{needs['weight_bytes'] / 1e6:10.0f} {needs['kv_bytes'] / 1e6:6.0f} {row['achieved_gb_s']:5.1f} "
                  f"{100 * row['bandwidth_share']:5.0f}% {row['memory_bound_ms']:6.1f} {row['compute_bound_ms']:10.1f} "
                  f"{100 * row['roofline_share']:7.0f}%", flush=True)
    gflops_after = matmul_gflops()
    print(f"fp32 matmul {gflops_before:.0f} → {gflops_after:.0f} GFLOP/s (2048², before → after)")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "tokens": args.tokens, "threads": torch.get_num_threads(),
            "read_bandwidth_gb_s": bandwidth / 1e9, "matmul_gflops": {"fp32": speed[torch.float32] / 1e9,
                                                                      "bf16": speed[torch.bfloat16] / 1e9},
            "fp32_gflops_before_after": [gflops_before, gflops_after], "rows": results}, indent=2))
        print(f"figures → {args.json}")


if __name__ == "__main__":
    main()
