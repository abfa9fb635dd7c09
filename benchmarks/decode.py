"""Sampling speed: lowres's decoding loop (lowres/decode.py) against transformers' `generate`.

    python benchmarks/decode.py [--model embedded:smollm2-135m] [--batch 32] [--tokens 128]

Both sample the same K&K prompts (T=0.7, top-p 0.95) for exactly --tokens new tokens (no early stop,
so the figures compare the per-step cost, not completion lengths); the prefill is timed apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lowres.bench import matmul_gflops  # noqa: E402
from lowres.decode import sample_batch  # noqa: E402
from lowres.models import load_model_and_tokenizer  # noqa: E402
from lowres.prompting import render_prompt  # noqa: E402
from lowres.tasks import get_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model)
    model.eval()
    task = get_task("kk_easy")
    rows = task.load("test", limit=args.batch)
    prompts = [render_prompt(tokenizer, task.prompt(row), "model") for row in rows]
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    never = {-1}  # no stop token: every row runs the full length

    def lowres_loop(n: int) -> None:
        sample_batch(model, enc["input_ids"], enc["attention_mask"], n, never, 0.7, 0.95)

    def lowres_loop_bf16(n: int) -> None:  # what GRPO's rollouts use by default on a CPU with native bf16
        sample_batch(model, enc["input_ids"], enc["attention_mask"], n, never, 0.7, 0.95, rollout_dtype=torch.bfloat16)

    def hf_generate(n: int) -> None:
        with torch.no_grad():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=0.7, top_p=0.95,
                           top_k=0, pad_token_id=tokenizer.pad_token_id)

    gflops = matmul_gflops()
    print(f"{args.model}, batch {args.batch}, prompt {enc['input_ids'].shape[1]} tokens, {args.tokens} new tokens, "
          f"{torch.get_num_threads()} threads, {model.device}, {model.dtype}")
    for name, run in (("transformers generate", hf_generate), ("lowres sample_batch", lowres_loop),
                      ("lowres, bf16 weights", lowres_loop_bf16)):
        start = time.perf_counter()
        run(1)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        run(args.tokens + 1)
        per_step = (time.perf_counter() - start - prefill) / args.tokens
        print(f"{name:>22}: prefill {prefill:5.2f} s, {per_step * 1000:6.1f} ms/step, "
              f"{args.batch / per_step:6.0f} tokens/s while decoding")
    print(f"fp32 matmul {gflops:.0f} → {matmul_gflops():.0f} GFLOP/s (2048², before → after)")


if __name__ == "__main__":
    main()
