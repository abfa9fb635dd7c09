"""Shims for gaps in the pinned stack on CPU machines.

1. A pure-PyTorch stand-in for TRL's Triton log-prob kernel, for machines without Triton.

TRL 1.15's SFT and GRPO trainers compute per-token log-probabilities through a fused LM head whose
kernel is written in Triton. Triton ships with PyTorch's CUDA builds only, so on a CPU-only install
`trl.trainer.utils._ChunkedLogProbFunction` is None and the first training step fails. This module
provides the same computation with plain tensor ops (autograd does the backward), which is what
TRL's kernel computes, tile by tile, on a GPU. It is installed only where Triton is missing.

2. Resuming a multi-process CPU run: transformers loads the optimizer state onto `args.device`, which
Accelerate makes `cpu:0` on several CPU processes, a location torch's loader does not know ("don't know
how to restore data location … (tagged with cpu:0)"). `ensure_cpu_index_restore` teaches it that
`cpu:N` is the CPU.
"""

from __future__ import annotations

import torch

_OPTIONAL = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
_TOKENS_PER_CHUNK = 1024  # bounds the [tokens, vocab] logits materialised at once in the forward


class TorchChunkedLogProb:
    """Drop-in for TRL's `ChunkedLogProbFunction.apply(...)`: same arguments, same five outputs."""

    @staticmethod
    def apply(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              temperature: float, chunk_size: int, final_logit_softcapping: float | None = None,
              logit_scale: float = 1.0, outputs: tuple[str, ...] = _OPTIONAL):
        pieces: dict[str, list[torch.Tensor]] = {name: [] for name in ("log_probs", *_OPTIONAL)}
        for start in range(0, hidden.shape[0], _TOKENS_PER_CHUNK):
            h = hidden[start:start + _TOKENS_PER_CHUNK]
            t = targets[start:start + _TOKENS_PER_CHUNK]
            z = torch.nn.functional.linear(h, weight, bias).float() * logit_scale
            if final_logit_softcapping is not None:
                z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
            z = z / temperature
            log_p = torch.log_softmax(z, dim=-1)
            pieces["log_probs"].append(log_p.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            if "entropy" in outputs:
                pieces["entropy"].append(-(log_p.exp() * log_p).sum(-1))
            if "log_sum_sq_probs" in outputs:
                pieces["log_sum_sq_probs"].append(torch.logsumexp(2 * log_p, dim=-1).detach())
            if "mean_logits" in outputs:
                pieces["mean_logits"].append(z.mean(-1).detach())
            if "is_top1" in outputs:
                pieces["is_top1"].append(z.argmax(-1) == t)
        joined = {k: (torch.cat(v) if v else None) for k, v in pieces.items()}
        if joined["log_probs"] is None:  # no token to score
            empty = hidden.new_zeros(0, dtype=torch.float32)
            joined["log_probs"] = empty + 0 * hidden.sum()
        return (joined["log_probs"], joined["entropy"], joined["log_sum_sq_probs"], joined["mean_logits"],
                joined["is_top1"])


def ensure_logprob_kernel() -> bool:
    """Install the stand-in when TRL could not import its Triton kernel. True if installed."""
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", object()) is not None:
        return False
    trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
    return True


def ensure_cpu_index_restore() -> None:
    """Let torch.load(map_location="cpu:N") restore onto the CPU (see the module docstring, 2)."""
    import torch.serialization as serialization

    if getattr(serialization, "_lowres_cpu_index", False):
        return

    def tag(obj):
        return None  # saving is unchanged: torch's own tagger writes "cpu"

    def restore(obj, location: str):
        return obj if location.startswith("cpu:") else None

    serialization.register_package(11, tag, restore)  # after torch's own "cpu" (10)
    serialization._lowres_cpu_index = True
