"""The sampling loop behind evaluation and GRPO generation on the transformers backend."""

import torch

from lowres.decode import CANDIDATES, sample_batch, sample_next_token


def draw(logits, n=20000, **kw):
    gen = torch.Generator().manual_seed(0)
    batch = logits.expand(n, -1)
    return torch.bincount(sample_next_token(batch, generator=gen, **kw), minlength=logits.shape[-1]).float() / n


def test_greedy_and_degenerate_settings_pick_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5], [3.0, 0.0, 0.0, 0.0]])
    expected = torch.tensor([1, 0])
    assert torch.equal(sample_next_token(logits, temperature=0), expected)
    assert torch.equal(sample_next_token(logits, temperature=1.0, top_k=1), expected)
    assert torch.equal(sample_next_token(logits, temperature=1.0, top_p=1e-6), expected)


def test_sampling_follows_the_softmax():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    freq = draw(probs.log(), temperature=1.0)
    assert torch.allclose(freq, probs[0], atol=0.015)


def test_top_p_drops_the_tail_and_renormalises():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    # Mass before the third token is 0.8 >= 0.75, so only the first two stay, renormalised to 5/8 and 3/8.
    freq = draw(probs.log(), temperature=1.0, top_p=0.75)
    assert freq[2] == 0
    assert abs(freq[0] - 0.625) < 0.015


def test_top_k_renormalises_before_top_p():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    # top_k 2 leaves 4/7 and 3/7; top_p 0.5 then keeps only the first.
    freq = draw(probs.log(), temperature=1.0, top_k=2, top_p=0.5, n=2000)
    assert freq[0] == 1.0


def test_a_nucleus_wider_than_the_candidate_list_uses_the_whole_vocabulary():
    vocab = 4 * CANDIDATES
    freq = draw(torch.zeros(1, vocab), temperature=1.0, top_p=0.95)
    # A flat distribution: top-p 0.95 keeps ~95% of the vocabulary, far more than the candidates.
    assert int((freq > 0).sum()) > 2 * CANDIDATES


def test_greedy_batch_matches_transformers_generate(embedded_model, greedy_matches_generate):
    model, tokenizer = embedded_model
    # Different lengths, so the batch is padded.
    greedy_matches_generate(model, tokenizer, ["The capital of France is", "1, 2, 3, 4,", "Write one word:"], 12)


def test_finished_rows_stop_at_their_stop_token_while_others_go_on(embedded_model):
    model, tokenizer = embedded_model
    tokenizer.padding_side = "left"
    enc = tokenizer(["Count: 1, 2, 3,", "Say hi:"], return_tensors="pt", padding=True)
    free = sample_batch(model, enc["input_ids"], enc["attention_mask"], 6, {tokenizer.eos_token_id}, temperature=0)
    # Make the second row's first greedy token a stop token: that row ends at once, the first is unchanged.
    stopped = sample_batch(model, enc["input_ids"], enc["attention_mask"], 6, {tokenizer.eos_token_id, free[1][0]},
                           temperature=0)
    new_stop = free[1][0]
    expected_first = free[0][:free[0].index(new_stop) + 1] if new_stop in free[0] else free[0]
    assert stopped[1] == [new_stop]
    assert stopped[0] == expected_first and len(free[0]) == 6


def test_preallocated_cache_layer_grows_and_selects_rows_like_concatenation():
    from lowres.decode import PreallocatedLayer

    layer = PreallocatedLayer(reserve=1)
    steps = [torch.randn(3, 2, n, 4) for n in (5, 1, 1, 1)]  # prefill, then three steps: past the reserve
    for k in steps:
        keys, values = layer.update(k, -k)
    expected = torch.cat(steps, dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, -expected)
    assert layer.get_seq_length() == 8
    layer.batch_select_indices(torch.tensor([0, 2]))
    assert torch.equal(layer.keys, expected[[0, 2]])


def test_repeated_prompts_are_prefilled_once_and_decode_as_generate(embedded_model, greedy_matches_generate):
    model, tokenizer = embedded_model
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        # GRPO's batches: each prompt num_generations times in a row (here two prompts, three times each).
        greedy_matches_generate(model, tokenizer, ["Say hi:"] * 3 + ["1, 2, 3, 4,"] * 3, 8)
    finally:
        hook.remove()
    ours = calls[0]  # sample_batch runs first, then generate
    assert ours[0] == 2, "the prefill should hold each distinct prompt once"


def _lora_model(model):
    """The embedded model with a fresh LoRA adapter whose B matrices are non-zero (a trained adapter)."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)  # A's initialisation too: the test must not depend on what ran before it
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return peft_model.eval()


def test_sampling_with_the_adapter_merged_matches_generate_and_restores_the_weights(embedded_model,
                                                                                  greedy_matches_generate):
    import copy

    from lowres.decode import rollout_weights

    model, tokenizer = embedded_model
    peft_model = _lora_model(model)
    before = {name: p.detach().clone() for name, p in peft_model.named_parameters()}
    # generate on PEFT's own merge (W + ΔW, the same sums): the unmerged path rounds differently, and a
    # near-tie between two tokens could then flip the greedy choice (the logits are compared below).
    merged_copy = copy.deepcopy(peft_model).merge_and_unload()
    greedy_matches_generate(peft_model, tokenizer, ["The capital of France is", "Write one word:"], 10,
                            reference=merged_copy)
    after = dict(peft_model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)

    # While merged, the adapter path is off and the base weights carry it: same logits as unmerged.
    enc = tokenizer(["Knights always tell the truth"], return_tensors="pt")
    with torch.no_grad():
        unmerged = peft_model(**enc).logits
        with rollout_weights(peft_model):
            merged = peft_model(**enc).logits
            lora_layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
            assert not torch.equal(lora_layer.base_layer.weight, before[
                "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])
    assert torch.allclose(merged, unmerged, atol=1e-4)
    assert not torch.allclose(unmerged, model(**enc).logits, atol=1e-3), "the adapter should change the logits"


def test_bf16_rollouts_of_an_fp32_model_decode_as_generate_on_its_bf16_copy(embedded_model):
    import copy

    from lowres.decode import rollout_weights

    model, tokenizer = embedded_model
    peft_model = _lora_model(model)
    bf16_copy = copy.deepcopy(peft_model).merge_and_unload().to(torch.bfloat16)
    tokenizer.padding_side = "left"
    enc = tokenizer(["The capital of France is", "1, 2, 3, 4,"], return_tensors="pt", padding=True)
    ours = sample_batch(peft_model, enc["input_ids"], enc["attention_mask"], 10, {tokenizer.eos_token_id},
                        temperature=0, rollout_dtype=torch.bfloat16)
    with torch.no_grad():
        theirs = bf16_copy.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    width = enc["input_ids"].shape[1]
    for row, ids in zip(theirs, ours, strict=True):
        reference = row[width:].tolist()
        if tokenizer.eos_token_id in reference:
            reference = reference[:reference.index(tokenizer.eos_token_id) + 1]
        assert ids == reference
    assert all(p.dtype == torch.float32 for p in peft_model.parameters()), "the model itself stays fp32"
    with rollout_weights(peft_model, torch.bfloat16):
        embed = peft_model.get_base_model().model.embed_tokens.weight
        assert embed.dtype == torch.bfloat16 and embed is peft_model.get_base_model().lm_head.weight


def test_one_token_bf16_attention_reads_the_whole_cache_buffer_and_masks_its_unwritten_tail():
    """The decode step's attention reads PreallocatedLayer's zero-filled buffer whole (a sliced view
    would be copied by the matmul); the positions not yet written must not change the result, also
    after the buffer has grown and after finished rows were dropped."""
    import torch.nn.functional as F

    from lowres.decode import GROW, PreallocatedLayer, _sdpa_grouped, _whole_buffer

    torch.manual_seed(0)
    layer = PreallocatedLayer()
    keys, values = layer.update(torch.randn(3, 2, 5, 8).bfloat16(), torch.randn(3, 2, 5, 8).bfloat16())
    for _ in range(GROW + 3):  # past the first buffer: it grows once
        keys, values = layer.update(torch.randn(3, 2, 1, 8).bfloat16(), torch.randn(3, 2, 1, 8).bfloat16())
    layer.batch_select_indices(torch.tensor([0, 2]))  # a finished row dropped
    keys, values = layer.update(torch.randn(2, 2, 1, 8).bfloat16(), torch.randn(2, 2, 1, 8).bfloat16())
    assert keys.shape[-2] == 5 + GROW + 4 and _whole_buffer(keys).shape[-2] > keys.shape[-2]
    query = torch.randn(2, 6, 1, 8).bfloat16()  # 6 query heads over 2 key/value heads
    mask = torch.ones(2, 1, 1, keys.shape[-2], dtype=torch.bool)
    mask[0, ..., :3] = False  # left padding of the first row
    out, _ = _sdpa_grouped(None, query, keys, values, mask)
    reference = F.scaled_dot_product_attention(query.float(), keys.float(), values.float(), attn_mask=mask,
                                               enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(out.float(), reference, atol=2e-2, rtol=2e-2)


def test_int8_rows_round_each_weight_to_half_a_step_of_its_row():
    from lowres.decode import int8_rows

    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.0, -0.01]])
    q, scale = int8_rows(weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.allclose(scale, torch.tensor([1.0, 0.0, 3.0]) / 127, atol=1e-12)
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [0, 0, 0] and q[2].tolist() == [127, 42, 0]
    assert ((q.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-7).all()


def test_int8_rollouts_multiply_by_int8_rows_of_the_merged_weights_and_restore_everything(embedded_model):
    from lowres.decode import int8_rows, rollout_weights

    model, tokenizer = embedded_model
    peft_model = _lora_model(model)
    before = {name: p.detach().clone() for name, p in peft_model.named_parameters()}
    q_proj = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    merged = q_proj.base_layer.weight + q_proj.get_delta_weight("default")
    x = torch.randn(3, merged.shape[1])
    enc = tokenizer(["Knights always tell the truth"], return_tensors="pt")
    with torch.no_grad():
        exact = peft_model(**enc).logits[0, -1].float()
        with rollout_weights(peft_model, torch.int8):
            q, scale = int8_rows(merged)
            dtype = q_proj.base_layer.forward(x).dtype  # bf16 where the CPU multiplies it natively
            expected = x.to(dtype).float() @ (q.float() * scale[:, None]).T
            actual = q_proj.base_layer.forward(x.to(dtype)).float()  # bf16 output: ~3 significant digits
            assert (actual - expected).abs().max() <= 0.01 * expected.abs().max()
            rounded = peft_model(**enc).logits[0, -1].float()
        after = peft_model(**enc).logits[0, -1].float()
    # int8 rows move the logits a little (the same next word), and nothing is left behind on exit.
    assert 0 < (rounded - exact).abs().max() < 0.1 * exact.abs().max() and rounded.argmax() == exact.argmax()
    assert torch.equal(after, exact)
    assert all(torch.equal(before[name], p) for name, p in peft_model.named_parameters())
    assert not any("forward" in vars(m) for m in peft_model.modules())


def test_sampled_log_probabilities_are_the_models_own_at_the_temperature(embedded_model):
    """with_logprobs: each token's log-probability under the sampler is what a forward over prompt and
    completion gives that token at the same temperature (the quantity TRL compares the trained model's with)."""
    model, tokenizer = embedded_model
    tokenizer.padding_side = "left"
    enc = tokenizer(["The capital of France is", "1, 2,"], return_tensors="pt", padding=True)
    tokens, logprobs = sample_batch(model, enc["input_ids"], enc["attention_mask"], 6, {tokenizer.eos_token_id},
                                    temperature=0.7, generator=torch.Generator().manual_seed(0), with_logprobs=True)
    assert [len(t) for t in tokens] == [len(lp) for lp in logprobs]
    for row, (ids, lps) in enumerate(zip(tokens, logprobs, strict=True)):
        prompt = enc["input_ids"][row][enc["attention_mask"][row].bool()]
        full = torch.cat([prompt, torch.tensor(ids)]).unsqueeze(0)
        with torch.no_grad():
            logits = model(full).logits[0, len(prompt) - 1:-1].float() / 0.7
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(ids).unsqueeze(1)).squeeze(1)
        assert torch.allclose(torch.tensor(lps), expected, atol=2e-3), (lps, expected.tolist())
