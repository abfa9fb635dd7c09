"""A lean sampling loop for transformers models: evaluation, the local distillation teacher, and GRPO's
completions on the transformers backend.

Why not `model.generate`: on a CPU, generate spends more time per step outside the model than in it
(logits processors, a full-vocabulary sort for top-p, multinomial over 49k tokens), and a batch runs
until its longest member ends. This loop samples top-k / top-p from a short candidate list (exactly:
it falls back to the full vocabulary when the candidates do not hold top_p of the mass) and drops
finished rows from the batch and its KV cache, so a batch costs what its tokens cost. On a CPU it also
writes the KV cache into a buffer sized for the whole generation (the default cache concatenates,
copying itself at every step) and lets attention read grouped key/value heads directly instead of
repeating them per step. On the 2-core dev machine a decoding step of 32 rows took about a fifth of
the time of `generate`'s (`python benchmarks/decode.py`).

Two more savings matter for GRPO, whose batches hold each prompt `num_generations` times and whose
model carries a LoRA adapter:
- identical prompts are prefilled once and their KV cache rows copied (the prefill of a 230-token K&K
  prompt costs as much as ~30 decoding steps);
- `rollout_weights` folds the adapter into copies of the base weights for the duration of sampling, so
  a step runs 7 matrix products per layer instead of 21 (base, A and B); the original weight tensors
  are put back untouched afterwards. It can also make the copies bf16: a decoding step is bound by the
  bytes of weights and KV cache it reads (on the 2-core dev machine, about 5 GB/s at 32 rows), so
  bf16 rollouts of an fp32 model decode about twice as fast where the CPU multiplies bf16 natively.
  With `torch.int8` it samples from int8 weight-only copies of the linear layers (one scale per output
  row; half the bytes of bf16 again), and `sample_batch(..., with_logprobs=True)` returns each sampled
  token's log-probability under the sampler, for GRPO's importance-sampling correction (rlvr.py).
"""
from __future__ import annotations

import contextlib
import inspect

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CANDIDATES = 1024  # tokens considered for top-p before falling back to a full sort


def sample_next_token(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `logits` (batch, vocab): greedy when temperature is 0, else temperature,
    then top-k, then top-p (nucleus) sampling, in that order, as transformers applies them."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    vocab = logits.shape[-1]
    if top_k <= 0 and top_p >= 1.0:
        return _sample_from(logits.softmax(-1), generator)
    k = min(top_k if top_k > 0 else CANDIDATES, vocab)
    candidate_logits, candidate_ids = logits.topk(k, dim=-1)  # sorted, most likely first
    if top_k > 0:
        probs = candidate_logits.softmax(-1)  # top-k renormalises before top-p
    else:
        probs = logits.softmax(-1).gather(-1, candidate_ids)
        if bool((probs.sum(-1) < top_p).any()):  # nucleus wider than the candidates: use every token
            candidate_logits, candidate_ids = logits.sort(dim=-1, descending=True)
            probs = candidate_logits.softmax(-1)
    if top_p < 1.0:
        mass_before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)  # the most likely token always stays
    return candidate_ids.gather(-1, _sample_from(probs, generator).unsqueeze(-1)).squeeze(-1)


def _sample_from(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Inverse CDF: one uniform number per row, placed among the running sums. `multinomial` and the
    # exponential race draw one random number per vocabulary entry, ~35× slower at 32 × 49k on a CPU.
    # right=True: the first index whose running sum exceeds u, so a zero-probability entry is never drawn.
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _unwrapped(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(_unwrapped(model).forward).parameters


# A cache buffer grows by this many positions at a time (one copy of the cache per GROW steps).
GROW = 64


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer that writes new keys and values into a buffer with room for up to GROW more
    tokens, instead of concatenating (a copy of the whole cache) at every step. The buffer is
    zero-filled past the written positions, so one-token attention can read all of it as one
    contiguous tensor (see `_sdpa_grouped`)."""

    def __init__(self, reserve: int = GROW):
        super().__init__()
        self.grow, self.length = max(1, min(reserve, GROW)), 0

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            self._keys = key_states.new_zeros((*key_states.shape[:2], n + self.grow, key_states.shape[-1]))
            self._values = value_states.new_zeros((*value_states.shape[:2], n + self.grow, value_states.shape[-1]))
            self.is_initialized = True
        if self.length + n > self._keys.shape[-2]:  # full: move into a bigger zero-filled buffer
            size = self.length + n + self.grow
            keys = self._keys.new_zeros((*self._keys.shape[:2], size, self._keys.shape[-1]))
            values = self._values.new_zeros((*self._values.shape[:2], size, self._values.shape[-1]))
            keys[:, :, :self.length], values[:, :, :self.length] = self.keys, self.values
            self._keys, self._values = keys, values
        self._keys[:, :, self.length:self.length + n] = key_states
        self._values[:, :, self.length:self.length + n] = value_states
        self.length += n
        self._view()
        return self.keys, self.values

    def _view(self):
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._view()


def new_cache(model, reserve: int) -> DynamicCache:
    """A dynamic cache whose plain layers are preallocated (sliding-window layers are left as they are)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _sdpa_grouped(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, except for a one-token decoding step: it reads the grouped
    key/value heads as they are (no copy per query head), and in bf16/fp16 it uses two small matmuls,
    as SDPA's CPU kernel takes 3-5× longer there (measured at 32 rows × 400 keys)."""
    if query.shape[2] != 1 or key.shape[1] == query.shape[1] or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    mask = None if attention_mask is None else attention_mask[..., :key.shape[-2]]
    if query.dtype == torch.float32:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    batch, heads, _, dim = query.shape
    length = key.shape[-2]
    # The keys and values are the first `length` positions of PreallocatedLayer's buffers. Sliced, they
    # are not contiguous, and a CPU bf16 matmul copies such an input first (a copy of the whole cache,
    # per layer and step: 5x the matmul itself at 32 rows x 500 keys); the whole zero-filled buffer is
    # contiguous, and its unwritten positions are masked out below.
    key, value = _whole_buffer(key), _whole_buffer(value)
    if key.shape[-2] != value.shape[-2]:
        key, value = key[:, :, :length], value[:, :, :length]
    grouped = query.view(batch, key.shape[1], heads // key.shape[1], dim)  # query heads by key/value head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * (dim ** -0.5 if scaling is None else scaling)
    if mask is not None and mask.dtype == torch.bool:
        scores[..., :length].masked_fill_(~mask.view(batch, 1, 1, -1), float("-inf"))
    elif mask is not None:
        scores[..., :length] += mask.view(batch, 1, 1, -1)
    scores[..., length:] = float("-inf")
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # softmax in fp32, as SDPA's
    return out.view(batch, 1, heads, dim), None  # (batch, query tokens, heads, dim), as SDPA returns it


def _whole_buffer(view: torch.Tensor) -> torch.Tensor:
    """The contiguous buffer a cache view was sliced from (positions only), or the view itself."""
    base = view._base
    if (base is not None and base.is_contiguous() and base.dim() == 4 and base.shape[:2] == view.shape[:2]
            and base.shape[-1] == view.shape[-1] and base.data_ptr() == view.data_ptr()):
        return base
    return view


AttentionInterface.register("lowres_sdpa_grouped", _sdpa_grouped)
AttentionMaskInterface.register("lowres_sdpa_grouped", sdpa_mask)  # the same masks as "sdpa"


@contextlib.contextmanager
def _grouped_attention(model):
    """Use `_sdpa_grouped` while sampling on a CPU, where SDPA would otherwise repeat key/value heads."""
    base = _unwrapped(model)
    before = getattr(base.config, "_attn_implementation", None)
    if before != "sdpa" or base.device.type != "cpu":
        yield
        return
    base.set_attn_implementation("lowres_sdpa_grouped")
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weight-only quantization with one scale per output row: (int8 weight, fp32 scales),
    weight ≈ int8 · scale[:, None]. The round-off is at most half a step (max |row| / 254) per entry."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def _int8_linear(weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """A forward for an nn.Linear that multiplies by an int8 weight (rows scaled by `scale`)."""
    kernel = getattr(torch, "_weight_int8pack_mm", None)  # torch's CPU int8 weight-only matmul

    def forward(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        if kernel is not None and x.device.type == "cpu":
            out = kernel(flat, weight, scale.to(x.dtype))
        else:  # no kernel: the same product, dequantized per call (slow, exact to the same rounding)
            out = F.linear(flat, weight.to(x.dtype) * scale.to(x.dtype)[:, None])
        out = out.view(*x.shape[:-1], weight.shape[0])
        return out if bias is None else out + bias.to(out.dtype)

    return forward


@contextlib.contextmanager
def rollout_weights(model, dtype: torch.dtype | None = None, _linears_uncast: bool = False):
    """Sample from W + scale·B·A in place of W plus the adapter path, for every LoRA linear layer
    whose base weight is a plain float tensor (not 4-bit, where merging would round), and, with
    `dtype`, from copies of all floating-point weights in that dtype (bf16 rollouts of an fp32 model:
    half the bytes read per decoding step). dtype torch.int8: every nn.Linear multiplies by an int8
    copy of its (merged) weight (`int8_rows`) and the other weights are copied to bf16 where the CPU
    multiplies bf16 natively (else kept); the linear layers' own weights are not copied to bf16 first (the
    int8 copies are made from them). The copies are new tensors; the original ones are put back on exit,
    bit for bit."""
    if dtype == torch.int8:
        from lowres.hardware import cpu_has_native_bf16

        with (rollout_weights(model, torch.bfloat16 if cpu_has_native_bf16() else None, _linears_uncast=True),
              _int8_linears(model)):
            yield
        return
    base = _unwrapped(model)
    lora = [m for m in model.modules() if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")
            and not getattr(m, "merged", False) and len(getattr(m, "active_adapters", ())) == 1
            and type(m.base_layer.weight) is torch.nn.Parameter and m.base_layer.weight.is_floating_point()
            and m.active_adapters[0] in m.lora_A]
    if not hasattr(model, "disable_adapter"):
        lora = []
    cast = dtype is not None and any(p.is_floating_point() and p.dtype != dtype for p in base.parameters())
    if not lora and not cast:
        yield
        return
    merged = {id(m.base_layer.weight): m for m in lora}
    # Under int8 the linear layers' weights are replaced by int8 copies: a bf16 copy of one would be made and
    # never read (LoRA is still folded into those that have it, in their own dtype). A weight tied to an
    # embedding is copied for the embedding anyway.
    uncast = set()
    if _linears_uncast:
        uncast = ({id(m.weight) for m in base.modules() if type(m) is torch.nn.Linear}
                  - {id(m.weight) for m in base.modules() if isinstance(m, torch.nn.Embedding)})
    holders = [(module, name, param) for module in base.modules() for name, param in module._parameters.items()
               if param is not None and type(param) is torch.nn.Parameter and param.is_floating_point()
               and (id(param) in merged or (cast and id(param) not in uncast))]
    if not _room_for_copies([param for _, _, param in holders], dtype):
        yield
        return
    copies: dict[int, torch.nn.Parameter] = {}
    try:
        with torch.no_grad():
            for module, name, param in holders:
                if id(param) not in copies:  # tied weights (embedding and LM head) get one copy
                    value = param
                    if id(param) in merged:
                        layer = merged[id(param)]
                        value = param.float() + layer.get_delta_weight(layer.active_adapters[0]).float()
                    kept = id(param) in uncast or dtype is None
                    copies[id(param)] = torch.nn.Parameter(value.to(param.dtype if kept else dtype),
                                                           requires_grad=False)
                module._parameters[name] = copies[id(param)]
        with model.disable_adapter() if lora else contextlib.nullcontext():
            yield
    finally:
        for module, name, param in holders:
            module._parameters[name] = param


@contextlib.contextmanager
def _int8_linears(model):
    """Every plain nn.Linear of the model (inside `rollout_weights`, so LoRA is already folded into its
    weight and the adapters are off) multiplies by an int8 copy of its current weight until exit."""
    linears = [m for m in _unwrapped(model).modules() if type(m) is torch.nn.Linear]
    try:
        with torch.no_grad():
            for layer in linears:
                layer.forward = _int8_linear(*int8_rows(layer.weight), layer.bias)
        yield
    finally:
        for layer in linears:
            layer.__dict__.pop("forward", None)  # back to the class's forward


def _room_for_copies(params: list[torch.Tensor], dtype: torch.dtype | None) -> bool:
    """On a GPU, copy only when the copies fit in free memory with room to spare."""
    if not params or params[0].device.type != "cuda":
        return True
    from lowres.hardware import memory_cap_gib

    size = (1 if dtype == torch.int8 else torch.finfo(dtype).bits // 8) if dtype else None
    needed = sum(p.numel() * (size or p.element_size()) for p in params)
    free = torch.cuda.mem_get_info(params[0].device)[0]
    cap = memory_cap_gib()  # under a cap, what is left below it (the card itself has more)
    if cap is not None:
        free = min(free, cap * 2**30 - torch.cuda.memory_reserved(params[0].device))
    return free > 2 * needed


@torch.no_grad()
def sample_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 stop_ids: set[int], temperature: float, top_p: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, rollout_dtype: torch.dtype | None = None,
                 with_logprobs: bool = False):
    """New token ids for each row of a left-padded batch, each up to and including its first stop token.
    rollout_dtype: sample from a copy of the weights in this dtype (see `rollout_weights`).
    with_logprobs: return (token ids, log-probabilities), the second the log-probability of each sampled
    token under the sampler's softmax at `temperature` (before top-k / top-p, as TRL scores the trained
    model's tokens), for importance sampling."""
    with _grouped_attention(model), rollout_weights(model, rollout_dtype):
        tokens, logprobs = _sample_batch(model, input_ids, attention_mask, max_new_tokens, stop_ids, temperature,
                                         top_p, top_k, generator, with_logprobs)
    return (tokens, logprobs) if with_logprobs else tokens


def _sample_batch(model, input_ids, attention_mask, max_new_tokens, stop_ids, temperature, top_p, top_k, generator,
                  with_logprobs=False):
    batch = input_ids.shape[0]
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    cache = new_cache(model, max_new_tokens)
    # Prefill each distinct prompt once, then give every row its prompt's cache and logits.
    prompts, row_prompt = torch.unique(input_ids * attention_mask - (1 - attention_mask), dim=0, return_inverse=True)
    if len(prompts) < batch:
        first = torch.full((len(prompts),), batch, dtype=torch.long, device=input_ids.device)
        first = first.scatter_reduce(0, row_prompt, torch.arange(batch, device=input_ids.device), "amin")
        out = model(input_ids=input_ids[first], attention_mask=attention_mask[first],
                    position_ids=position_ids[first], past_key_values=cache, use_cache=True, **extra)
        cache.batch_select_indices(row_prompt)
        out.logits = out.logits[row_prompt]
    else:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=cache, use_cache=True, **extra)
    next_position = position_ids[:, -1] + 1
    rows = torch.arange(batch)  # which original rows are still generating
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, their tokens) per step, read back at the end
    logprobs: list[torch.Tensor] = []  # with_logprobs: the sampled tokens' log-probabilities, per step
    stop = torch.tensor(sorted(stop_ids), device=input_ids.device)
    for step in range(max_new_tokens):
        logits = out.logits[:, -1, :]
        token = sample_next_token(logits, temperature, top_p, top_k, generator)
        if with_logprobs:
            scaled = logits.float() / temperature if temperature > 0 else logits.float()
            logprobs.append(scaled.log_softmax(-1).gather(-1, token.unsqueeze(-1)).squeeze(-1))
        steps.append((rows, token))
        if step == max_new_tokens - 1:
            break
        running = ~torch.isin(token, stop)
        n_running = int(running.sum())  # the one host sync per step (on a GPU it waits for the step)
        if n_running == 0:
            break
        if n_running < len(rows):
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, next_position = rows[keep.cpu()], token[keep], next_position[keep]
            attention_mask = attention_mask[keep]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        out = model(input_ids=token.unsqueeze(1), attention_mask=attention_mask,
                    position_ids=next_position.unsqueeze(1), past_key_values=cache, use_cache=True, **extra)
        next_position = next_position + 1
    new_tokens: list[list[int]] = [[] for _ in range(batch)]
    all_rows = torch.cat([r for r, _ in steps]).tolist()
    all_tokens = torch.cat([t for _, t in steps]).tolist()
    for row, t in zip(all_rows, all_tokens, strict=True):
        new_tokens[row].append(t)
    if not with_logprobs:
        return new_tokens, None
    new_logprobs: list[list[float]] = [[] for _ in range(batch)]
    for row, lp in zip(all_rows, torch.cat(logprobs).tolist(), strict=True):
        new_logprobs[row].append(lp)
    return new_tokens, new_logprobs
