"""lowres's GRPO trainer leaves zero-advantage rows and unused padding out of the loss's forward and
backward; the loss and its gradient must be those of TRL's full micro-batch, for every loss type."""

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig

    from lowres.models import resolve_model
    from lowres.train.compat import ensure_logprob_kernel
    from lowres.train.rlvr import _trainer_class

    ensure_logprob_kernel(on_cuda=False)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m"))
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), per_device_train_batch_size=6,
                      num_generations=2, max_completion_length=8, beta=0.0, use_cpu=True, report_to=[],
                      gradient_checkpointing=False, temperature=0.8, bf16=False)  # fp32: exact comparisons
    built = _trainer_class(skip_zero_variance=False, lean_generation=True, checkpoint_as_needed=True)(
        model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
        train_dataset=Dataset.from_list([{"prompt": "hi"}] * 6), processing_class=tokenizer)
    built.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    return built


def micro_batch(advantages):
    """Six rows: left-padded prompts, completions of different lengths followed by padding."""
    generator = torch.Generator().manual_seed(1)
    prompt_lengths, completion_lengths = [5, 3, 5, 4, 2, 5], [2, 7, 3, 8, 1, 4]
    prompt_mask = torch.tensor([[0] * (5 - n) + [1] * n for n in prompt_lengths])
    completion_mask = torch.tensor([[1] * n + [0] * (8 - n) for n in completion_lengths])
    return {"prompt_ids": torch.randint(1, 1000, (6, 5), generator=generator) * prompt_mask,
            "prompt_mask": prompt_mask,
            "completion_ids": torch.randint(1, 1000, (6, 8), generator=generator) * completion_mask,
            "completion_mask": completion_mask,
            "advantages": torch.tensor(advantages, dtype=torch.float32),
            "num_items_in_batch": completion_mask.sum()}


def loss_and_grads(trainer, compute, inputs):
    trainer.model.zero_grad()
    loss = compute(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo", "bnpo"])
@pytest.mark.parametrize("advantages", [[0.7, -0.7, 0.0, 0.0, 1.2, -1.2],   # two groups teach, one does not
                                        [0.0] * 6])                           # nothing to learn this step
def test_skipping_zero_advantage_rows_leaves_loss_and_gradient_unchanged(trainer, loss_type, advantages):
    from trl import GRPOTrainer

    trainer.loss_type = loss_type
    inputs = micro_batch(advantages)
    seen = []
    hook = trainer.model.register_forward_pre_hook(lambda m, args, kw: seen.append(kw["input_ids"].shape),
                                                   with_kwargs=True)
    try:
        full_loss, full_grads = loss_and_grads(trainer, lambda m, x: GRPOTrainer._compute_loss(trainer, m, x), inputs)
        lean_loss, lean_grads = loss_and_grads(trainer, trainer._compute_loss, inputs)
    finally:
        hook.remove()
    assert seen[0] == (6, 13)
    # Only the rows that teach, cut to the columns they use: rows 0, 1, 4, 5 have prompts of at most
    # 5 tokens and completions of at most 7; with nothing to learn, row 0 alone (5 + 2 tokens) remains.
    assert seen[1] == ((4, 12) if any(advantages) else (1, 7))
    assert torch.allclose(lean_loss, full_loss, atol=1e-6)
    assert full_grads.keys() == lean_grads.keys()
    for name, grad in full_grads.items():
        assert torch.allclose(lean_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_rows_are_all_kept_where_a_zero_advantage_row_still_acts(trainer):
    from lowres.train.rlvr import rows_that_teach

    inputs = micro_batch([0.7, -0.7, 0.0, 0.0, 1.2, -1.2])
    assert rows_that_teach(trainer, inputs).tolist() == [True, True, False, False, True, True]
    trainer.beta = 0.04  # a KL term pulls every row towards the reference model
    try:
        assert rows_that_teach(trainer, inputs) is None
    finally:
        trainer.beta = 0.0
    assert rows_that_teach(trainer, micro_batch([0.5] * 6)) is None  # every row teaches: nothing to select


def test_gradient_checkpointing_is_switched_on_for_a_micro_batch_too_big_for_memory(trainer, monkeypatch):
    from transformers.modeling_layers import GradientCheckpointingLayer

    from lowres.train import rlvr

    trainer.loss_type = "dapo"
    inputs = micro_batch([0.7, -0.7, 0.3, 0.0, 1.2, -1.2])
    layers = [m for m in trainer.model.modules() if isinstance(m, GradientCheckpointingLayer)]
    before = list(trainer.checkpointed_micro_batches)
    _, plain = loss_and_grads(trainer, trainer._compute_loss, inputs)  # a tiny batch: no checkpointing
    assert not any(layer.gradient_checkpointing for layer in layers)
    monkeypatch.setattr(rlvr, "activations_need_checkpointing", lambda config, tokens: True)
    _, recomputed = loss_and_grads(trainer, trainer._compute_loss, inputs)
    assert all(layer.gradient_checkpointing for layer in layers)
    rlvr.set_checkpointing(trainer.model, False)
    assert [a - b for a, b in zip(trainer.checkpointed_micro_batches, before, strict=True)] == [1, 1]
    for name, grad in plain.items():
        assert torch.allclose(recomputed[name], grad, atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize(("device", "dtype", "backend", "native", "choice", "expected"), [
    ("cpu", "fp32", "transformers", True, "auto", torch.bfloat16),
    ("cpu", "fp32", "transformers", False, "auto", None),   # emulated bf16 would be slower
    ("cpu", "fp32", "transformers", True, "model", None),
    ("cpu", "fp32", "transformers", False, "bf16", torch.bfloat16),
    ("cuda", "bf16", "transformers", False, "auto", None),  # already bf16
    ("cuda", "fp16", "unsloth", False, "bf16", None),       # Unsloth samples with its own generate
])
def test_rollout_dtype_follows_the_recipe_and_the_hardware(monkeypatch, device, dtype, backend, native, choice,
                                                           expected):
    from lowres import hardware
    from lowres.hardware import Hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    hw = Hardware(device, None, None, dtype == "bf16", backend, dtype)
    assert hardware.rollout_dtype(choice, hw) is expected


def test_a_groups_shared_prompt_runs_once_with_the_same_log_probs_and_gradients(trainer):
    """Rows that share a prompt (a group) get its keys and values from one forward of the prompt; the
    completions' log-probs, entropies and the gradient through both must be TRL's single forward's."""
    from trl import GRPOTrainer

    from lowres.train.backend import set_checkpointing

    set_checkpointing(trainer.model, False)  # the shared prompt's cache needs activations kept
    inputs = micro_batch([1.0] * 6)
    for later, earlier in ((1, 0), (3, 2), (5, 2)):  # three groups: rows {0, 1}, {2, 3, 5} and {4}
        for key in ("prompt_ids", "prompt_mask"):
            inputs[key][later] = inputs[key][earlier]
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    prompt_runs = []
    hook = trainer.model.get_base_model().model.register_forward_hook(
        lambda module, args, kwargs, out: prompt_runs.append(kwargs["input_ids"].shape), with_kwargs=True)
    results = {}
    try:
        for name, compute in (("lowres", type(trainer)._get_per_token_logps_and_entropies),
                              ("trl", GRPOTrainer._get_per_token_logps_and_entropies)):
            prompt_runs.clear()
            trainer.model.zero_grad()
            logps, entropies, _ = compute(trainer, trainer.model, input_ids, attention_mask, 8, compute_entropy=True)
            (logps * inputs["completion_mask"]).sum().backward()
            results[name] = (logps.detach(), entropies.detach(), list(prompt_runs),
                             {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
    finally:
        hook.remove()
    lowres, trl = results["lowres"], results["trl"]
    # 3 distinct prompts (less their last token), then the 6 rows' completions
    assert lowres[2] == [torch.Size([3, 4]), torch.Size([6, 8])]
    assert trl[2] == [torch.Size([6, 13])]
    torch.testing.assert_close(lowres[0], trl[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lowres[1], trl[1], atol=1e-5, rtol=1e-5)
    assert lowres[3].keys() == trl[3].keys() and trl[3]
    for name in trl[3]:
        torch.testing.assert_close(lowres[3][name], trl[3][name], atol=1e-5, rtol=1e-4)


def test_distinct_prompts_take_trls_forward(trainer):
    from lowres.train.rlvr import shared_prompt_logps

    inputs = micro_batch([1.0] * 6)
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    assert shared_prompt_logps(trainer.model, input_ids, attention_mask, 8, False) is None


@pytest.mark.parametrize(("device", "dtype", "native", "choice", "expected"), [
    ("cpu", "fp32", True, "auto", torch.bfloat16),
    ("cpu", "fp32", False, "auto", None),   # emulated bf16 would be slower
    ("cpu", "fp32", True, "model", None),
    ("cuda", "fp32", False, "bf16", torch.bfloat16),
    ("cuda", "bf16", False, "bf16", None),  # already mixed precision through the trainer's flags
])
def test_loss_dtype_follows_the_recipe_and_the_hardware(monkeypatch, device, dtype, native, choice, expected):
    from lowres import hardware
    from lowres.hardware import Hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    hw = Hardware(device, None, None, dtype == "bf16", "transformers", dtype)
    assert hardware.loss_dtype(choice, hw) is expected


@pytest.mark.parametrize(("native", "choice", "flags"), [
    (True, "auto", {"bf16": True, "fp16": False}),    # the warmup trains in bf16 autocast on such a CPU
    (False, "auto", {"bf16": False, "fp16": False}),
    (True, "model", {"bf16": False, "fp16": False}),
])
def test_the_warmups_precision_flags_follow_its_loss_dtype_on_a_cpu(monkeypatch, native, choice, flags):
    from lowres import hardware
    from lowres.hardware import Hardware
    from lowres.train.common import precision_flags

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    hw = Hardware("cpu", None, None, False, "transformers", "fp32")
    assert precision_flags(hw, hardware.loss_dtype(choice, hw)) == flags


def test_importance_weights_are_the_truncated_ratio_of_trained_to_sampler_probabilities():
    """Hand-computed: rows with advantages 1 and -2; ratios π_train / π_sampler of 2, 0.5 and 3 on the
    completion tokens (the last token of row 2 is padding); cap 2."""
    import math

    from lowres.train.rlvr import importance_weighted

    log = math.log
    trainer = torch.tensor([[log(0.5), log(0.2)], [log(0.9), -5.0]])
    sampler = torch.tensor([[log(0.25), log(0.4)], [log(0.3), 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    weighted, stats = importance_weighted(torch.tensor([1.0, -2.0]), trainer, sampler, mask, cap=2.0)
    assert torch.allclose(weighted, torch.tensor([[2.0, 0.5], [-4.0, -2.0]]))  # padding: ratio 1
    # [ratio sum, max, tokens, tokens above the cap] over the completion tokens
    assert torch.allclose(stats, torch.tensor([5.5, 3.0, 3.0, 1.0]))
