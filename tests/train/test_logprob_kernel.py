"""lowres's CPU stand-in for TRL's fused LM-head kernel (lowres/train/compat.py) computes what plain
autograd through the LM head and a log-softmax computes: the same outputs and the same gradients,
for the log-probs and for the entropy (TRL's entropy bonus differentiates it)."""

import pytest
import torch

from lowres.train import compat

VOCAB, HIDDEN = 50, 8
ALL = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def reference(hidden, weight, bias, targets, temperature, logit_scale):
    z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale / temperature
    log_p = torch.log_softmax(z, dim=-1)
    return (log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1),
            torch.logsumexp(2 * log_p, dim=-1), z.mean(-1), z.argmax(-1) == targets)


def leaves(n_tokens, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_tokens, HIDDEN, generator=generator).requires_grad_()
    weight = torch.randn(VOCAB, HIDDEN, generator=generator).requires_grad_()
    bias = torch.randn(VOCAB, generator=generator).requires_grad_()
    targets = torch.randint(0, VOCAB, (n_tokens,), generator=generator)
    return hidden, weight, bias, targets


def outputs_and_grads(fn, n_tokens, entropy_weight):
    hidden, weight, bias, targets = leaves(n_tokens)
    out = fn(hidden, weight, bias, targets)
    loss = -out[0].sum() + entropy_weight * out[1].sum()
    loss.backward()
    return [o.detach() for o in out], (hidden.grad, weight.grad, bias.grad)


@pytest.mark.parametrize("entropy_weight", [0.0, 0.3])
def test_outputs_and_gradients_match_autograd_across_chunks(monkeypatch, entropy_weight):
    monkeypatch.setattr(compat, "_TOKENS_PER_CHUNK", 7)  # 20 tokens: three chunks, the last one short
    temperature, logit_scale = 0.7, 1.3
    got, got_grads = outputs_and_grads(
        lambda h, w, b, t: compat.TorchChunkedLogProb.apply(h, w, b, t, temperature, 32768, None, logit_scale, ALL),
        20, entropy_weight)
    want, want_grads = outputs_and_grads(lambda h, w, b, t: reference(h, w, b, t, temperature, logit_scale),
                                         20, entropy_weight)
    for name, g, w in zip(ALL, got, want, strict=True):
        if name == "is_top1":
            assert torch.equal(g, w)
        else:
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_only_the_asked_outputs_are_computed_and_metrics_carry_no_gradient():
    hidden, weight, bias, targets = leaves(5)
    log_probs, entropy, log_sum_sq, mean_logits, is_top1 = compat.TorchChunkedLogProb.apply(
        hidden, weight, None, targets, 1.0, 32768, None, 1.0, ("log_probs", "mean_logits"))
    assert entropy is None and log_sum_sq is None and is_top1 is None
    assert log_probs.requires_grad and not mean_logits.requires_grad
    log_probs.sum().backward()
    assert hidden.grad is not None and bias.grad is None


def test_under_bf16_autocast_the_matmul_runs_in_bf16_and_gradients_keep_their_dtypes():
    hidden, weight, _, targets = leaves(12)
    weight.requires_grad_(False)  # a frozen (tied) LM head, as under LoRA
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, *_ = compat.TorchChunkedLogProb.apply(hidden, weight, None, targets, 1.0, 32768, None, 1.0, ALL)
        want = reference(hidden.detach(), weight, None, targets, 1.0, 1.0)[0]
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.detach(), want, rtol=0, atol=1e-5)  # both from the same bf16 matmul
    (-log_probs.sum()).backward()
    assert hidden.grad.dtype == torch.float32 and hidden.grad.abs().sum() > 0


def test_no_token_to_score_gives_an_empty_result_and_a_zero_gradient():
    hidden, weight, bias, _ = leaves(3)
    log_probs, *_ = compat.TorchChunkedLogProb.apply(hidden[:0], weight, bias, torch.zeros(0, dtype=torch.long),
                                                     1.0, 32768, None, 1.0, ALL)
    assert log_probs.shape == (0,)
    log_probs.sum().backward()
    assert hidden.grad is not None and not hidden.grad.any()


@pytest.mark.parametrize("entropy_weight", [0.0, 0.3])
def test_a_soft_capped_models_outputs_and_gradients_match_autograd(entropy_weight):
    cap, temperature, logit_scale = 5.0, 0.7, 1.3

    def capped(hidden, weight, bias, targets):  # Gemma's order: scale, cap, then temperature
        z = torch.nn.functional.linear(hidden, weight, bias) * logit_scale
        log_p = torch.log_softmax(cap * torch.tanh(z / cap) / temperature, dim=-1)
        return log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1)

    got, got_grads = outputs_and_grads(
        lambda h, w, b, t: compat.TorchChunkedLogProb.apply(h, w, b, t, temperature, 32768, cap, logit_scale, ALL),
        6, entropy_weight)
    want, want_grads = outputs_and_grads(capped, 6, entropy_weight)
    for g, w in zip(got[:2], want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


class _TritonKernel:
    """What TRL keeps where Triton imports (PyPI's CUDA torch) but no GPU is there: its first use fails."""

    @staticmethod
    def apply(*args, **kwargs):
        raise RuntimeError("0 active drivers ([]). There should only be one.")


@pytest.mark.parametrize("kernel", [None, _TritonKernel], ids=["no triton", "triton without a GPU"])
def test_a_cpu_stage_trains_with_the_stand_in_whatever_torch_build(monkeypatch, kernel):
    """C2 (desk check 2): on a machine without CUDA the stand-in replaces TRL's kernel even where Triton
    imported; where a CUDA GPU trains, TRL's own kernel stays."""
    import trl.trainer.utils as trl_utils

    from lowres.hardware import Hardware
    from lowres.train.backend import prepare_backend

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", kernel)
    prepare_backend(Hardware("cpu", None, None, True, "transformers", "fp32"))
    assert trl_utils._ChunkedLogProbFunction is compat.TorchChunkedLogProb
    hidden, weight = torch.randn(5, 8), torch.randn(11, 8)
    log_probs, *_ = trl_utils._ChunkedLogProbFunction.apply(hidden, weight, None, torch.arange(5), 1.0, 32768)
    assert torch.allclose(log_probs, torch.log_softmax(hidden @ weight.T, -1)[torch.arange(5), torch.arange(5)],
                          atol=1e-5)


def test_a_cuda_stage_keeps_trls_kernel(monkeypatch):
    import trl.trainer.utils as trl_utils

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", _TritonKernel)
    assert compat.ensure_logprob_kernel(on_cuda=True) is False
    assert trl_utils._ChunkedLogProbFunction is _TritonKernel
