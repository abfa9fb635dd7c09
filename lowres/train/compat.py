"""Shims for gaps in the pinned stack on CPU machines.

1. A pure-PyTorch stand-in for TRL's Triton log-prob kernel, wherever that kernel cannot run.

TRL 1.15's SFT and GRPO trainers compute per-token log-probabilities through a fused LM head whose
kernel is written in Triton, which runs on a GPU only. Two cases fail at the first training step: a
CPU build of torch has no Triton (`trl.trainer.utils._ChunkedLogProbFunction` is None), and PyPI's
default Linux torch — a CUDA build that brings Triton — on a machine without a GPU, where TRL keeps its
kernel and Triton raises "0 active drivers". This module
provides the same computation in PyTorch — what TRL's kernel computes, tile by tile, on a GPU — with a
hand-written backward (autograd through the plain ops spent most of the time in elementwise passes
over the [tokens, vocab] logits). It is installed whenever training is not on a CUDA GPU.

2. Resuming a multi-process CPU run: transformers loads the optimizer state onto `args.device`, which
Accelerate makes `cpu:0` on several CPU processes, a location torch's loader does not know ("don't know
how to restore data location … (tagged with cpu:0)"). `ensure_cpu_index_restore` teaches it that
`cpu:N` is the CPU.
"""

from __future__ import annotations

import torch

_OPTIONAL = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
_TOKENS_PER_CHUNK = 1024  # bounds the [tokens, vocab] temporaries of one step of the forward


class TorchChunkedLogProb:
    """Drop-in for TRL's `ChunkedLogProbFunction.apply(...)`: same arguments, same five outputs."""

    @staticmethod
    def apply(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              temperature: float, chunk_size: int, final_logit_softcapping: float | None = None,
              logit_scale: float = 1.0, outputs: tuple[str, ...] = _OPTIONAL):
        return _LogProbs.apply(hidden, weight, bias, targets, logit_scale, final_logit_softcapping, temperature,
                               tuple(outputs))


class _LogProbs(torch.autograd.Function):
    """Log-probabilities of the targets (and the optional outputs) under softmax(z / temperature), where
    z = logit_scale · (hidden @ weightᵀ + bias), soft-capped to cap · tanh(z / cap) when a cap is given
    (Gemma), with a hand-written backward. Autograd through the plain ops would keep the fp32 logits
    and their log-softmax for every token and run an elementwise pass per op each way (measured: most of the
    function's time on a CPU went to such passes); here the forward keeps only the probabilities, and
    the backward is one pass over them before the matmuls (with a cap, also the cap's derivative):
        d log p_t / dz = onehot(t) − p,    d H / dz = −p ⊙ (log p + H)   (H = −Σ p log p)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, logit_scale, cap, temperature, outputs):
        ctx.set_materialize_grads(False)  # an output nobody differentiates gets None, not a zero tensor
        # Under autocast the LM head's matmul runs in the autocast dtype, as TRL's kernel does it.
        ctx.compute_dtype = (torch.get_autocast_dtype(hidden.device.type)
                             if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype)
        # The matmul's inputs cast once here (as autocast would at every chunk); the backward reuses them.
        dtype = ctx.compute_dtype
        weight_c, bias_c = weight.to(dtype), (None if bias is None else bias.to(dtype))
        pieces: dict[str, list[torch.Tensor]] = {name: [] for name in ("log_probs", *_OPTIONAL)}
        probs = hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=torch.float32)
        # d z / d (hidden @ weightᵀ + bias): a constant, or with a cap (1 − tanh²) times it, kept per logit
        scale = logit_scale / (1.0 if cap is not None else temperature)
        cap_slope = None if cap is None else torch.empty_like(probs)
        for start in range(0, hidden.shape[0], _TOKENS_PER_CHUNK):
            t = targets[start:start + _TOKENS_PER_CHUNK]
            z = torch.nn.functional.linear(hidden[start:start + _TOKENS_PER_CHUNK].to(dtype), weight_c, bias_c).float()
            if scale != 1.0:
                z.mul_(scale)
            if cap is not None:
                z = torch.tanh(z.div_(cap))
                slope = torch.mul(z, z, out=cap_slope[start:start + len(t)])
                slope.neg_().add_(1).mul_(logit_scale / temperature)
                z.mul_(cap / temperature)
            if "mean_logits" in outputs:
                pieces["mean_logits"].append(z.mean(-1))
            if "is_top1" in outputs:
                pieces["is_top1"].append(z.argmax(-1) == t)
            log_p = torch.log_softmax(z, dim=-1)
            pieces["log_probs"].append(log_p.gather(-1, t.unsqueeze(-1)).squeeze(-1))
            if "log_sum_sq_probs" in outputs:
                pieces["log_sum_sq_probs"].append(torch.logsumexp(2 * log_p, dim=-1))
            p = torch.exp(log_p, out=probs[start:start + len(t)])
            if "entropy" in outputs:
                pieces["entropy"].append(-(p * log_p).sum(-1))
        joined = {k: (torch.cat(v) if v else None) for k, v in pieces.items()}
        if joined["log_probs"] is None:  # no token to score
            joined["log_probs"] = hidden.new_zeros(0, dtype=torch.float32)
        ctx.scale = scale
        ctx.save_for_backward(hidden, weight, weight_c, bias, targets, probs, joined["entropy"], cap_slope)
        ctx.mark_non_differentiable(*(joined[k] for k in ("log_sum_sq_probs", "mean_logits", "is_top1")
                                      if joined[k] is not None))
        return (joined["log_probs"], joined["entropy"], joined["log_sum_sq_probs"], joined["mean_logits"],
                joined["is_top1"])

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, weight_c, bias, targets, probs, entropy, cap_slope = ctx.saved_tensors
        if grad_log_probs is not None:
            grad_log_probs = grad_log_probs.to(probs.dtype).unsqueeze(-1)
            grad_z = probs * -grad_log_probs
            grad_z.scatter_add_(-1, targets.unsqueeze(-1), grad_log_probs)
        else:
            grad_z = torch.zeros_like(probs)
        if grad_entropy is not None and entropy is not None:
            log_p = probs.clamp_min(torch.finfo(probs.dtype).tiny).log_()  # where p underflowed, p·log p is 0 anyway
            grad_z.sub_(probs * (log_p + entropy.unsqueeze(-1)) * grad_entropy.unsqueeze(-1))
        if cap_slope is not None:
            grad_z.mul_(cap_slope)
        elif ctx.scale != 1.0:
            grad_z.mul_(ctx.scale)
        dtype = ctx.compute_dtype
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (grad_z.to(dtype) @ weight_c).to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_z.t().to(dtype) @ hidden.to(dtype)).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_z.sum(0).to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def ensure_logprob_kernel(on_cuda: bool) -> bool:
    """Install the stand-in unless TRL's Triton kernel can run: it imported and training is on a CUDA GPU
    (`on_cuda`). True if installed."""
    import trl.trainer.utils as trl_utils

    kernel = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if kernel is TorchChunkedLogProb or (kernel is not None and on_cuda):
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
