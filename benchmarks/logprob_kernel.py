"""The CPU log-prob stand-in (lowres/train/compat.py) against plain autograd through the same ops.

    python benchmarks/logprob_kernel.py [--tokens 760] [--rounds 2] [--no-step]

Times forward + backward of the per-token log-probs (with the entropy and top-1 outputs SFT logs) for
--tokens scored positions of SmolLM2's LM head (49152 × 576) under bf16 autocast, then one demo
warmup step's model forward and backward (2 traces × 610 tokens, 229 of them prompt) with either
function inside TRL's fused LM head. A B B A order within one process; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lowres.bench import matmul_gflops  # noqa: E402
from lowres.train import compat  # noqa: E402


class PlainAutograd:
    """The same outputs through plain tensor ops, autograd doing the backward (lowres's previous version)."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0, outputs=()):
        pieces: dict[str, list[torch.Tensor]] = {"log_probs": [], "entropy": [], "is_top1": []}
        for start in range(0, hidden.shape[0], 1024):
            h, t = hidden[start:start + 1024], targets[start:start + 1024]
            z = torch.nn.functional.linear(h, weight, bias).float() * logit_scale / temperature
            log_p = torch.log_softmax(z, dim=-1)
            pieces["log_probs"].append(log_p.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            if "entropy" in outputs:
                pieces["entropy"].append(-(log_p.exp() * log_p).sum(-1))
            if "is_top1" in outputs:
                pieces["is_top1"].append(z.argmax(-1) == t)
        joined = {k: torch.cat(v) if v else None for k, v in pieces.items()}
        return joined["log_probs"], joined["entropy"], None, None, joined["is_top1"]


IMPLEMENTATIONS = {"autograd": PlainAutograd, "lowres": compat.TorchChunkedLogProb}
OUTPUTS = ("log_probs", "entropy", "is_top1")


def timed(run, rounds: int) -> dict[str, float]:
    """Median seconds per call of run(name) for each implementation, in A B B A order."""
    for name in IMPLEMENTATIONS:
        run(name)  # warm up
    seconds: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(rounds):
        for name in ("autograd", "lowres", "lowres", "autograd"):
            started = time.perf_counter()
            run(name)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(v) for name, v in seconds.items()}


def function_only(tokens: int, rounds: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(49152, 576, generator=generator) * 0.02
    hidden = torch.randn(tokens, 576, generator=generator).requires_grad_()
    targets = torch.randint(0, 49152, (tokens,), generator=generator)

    def run(name):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_probs, *_ = IMPLEMENTATIONS[name].apply(hidden, weight, None, targets, 1.0, 32768, None, 1.0, OUTPUTS)
        (-log_probs.sum()).backward()

    return timed(run, rounds)


def warmup_step(rounds: int) -> dict[str, float]:
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from lowres.hardware import detect
    from lowres.recipe import load_recipe
    from lowres.train.backend import load_trainable

    recipe = load_recipe(REPO / "lowres" / "recipes" / "demo.yaml")
    model, _ = load_trainable(recipe.model.name_or_path, detect("auto"), recipe.warmup.lora, load_in_4bit=False,
                              max_seq_length=recipe.model.max_seq_length, seed=0, gradient_checkpointing=False)
    add_fused_lm_head(model.get_base_model(), outputs=OUTPUTS)  # as TRL's SFTTrainer does
    model.train()
    ids = torch.randint(0, 49152, (2, 610), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :229] = -100

    def run(name):
        trl_utils._ChunkedLogProbFunction = IMPLEMENTATIONS[name]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
        loss.backward()

    return timed(run, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=760, help="scored positions (a demo warmup step has ~760)")
    parser.add_argument("--rounds", type=int, default=2, help="A B B A rounds")
    parser.add_argument("--no-step", action="store_true", help="skip the whole-model step (loads the model)")
    args = parser.parse_args()
    before = matmul_gflops()
    figures = {f"log-probs of {args.tokens} tokens, forward + backward": function_only(args.tokens, args.rounds)}
    if not args.no_step:
        figures["demo warmup step (2 × 610 tokens), forward + backward"] = warmup_step(args.rounds)
    after = matmul_gflops()
    for what, seconds in figures.items():
        print(f"{what}: plain autograd {1000 * seconds['autograd']:.0f} ms, lowres {1000 * seconds['lowres']:.0f} ms "
              f"({seconds['autograd'] / seconds['lowres']:.2f}×)")
    print(f"fp32 matmul {before:.0f} → {after:.0f} GFLOP/s (2048², before → after), {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
