"""The held-out learning curve (rlvr.heldout_every): what it logs, that it leaves the model's mode and the
training's random state as they were, and that the report plots it beside the train reward."""

import json

import pytest
import torch


class _Stub:
    """Right when the completion is empty or starts with a letter (a random model's answers are mixed)."""

    name = "stub_heldout"

    def prompt(self, row):
        return [{"role": "user", "content": row["question"]}]

    def score(self, completion, row):
        from lowres.tasks.base import Score

        right = completion[:1].isalpha()
        return Score(extracted=completion, formatted=bool(completion), correct=right, reward=float(right))


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lowres.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m"))
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config), tokenizer


def test_the_curve_logs_held_out_accuracy_and_leaves_training_as_it_was(tiny, tmp_path):
    from lowres.evaluate import GenerationSettings
    from lowres.train.heldout import HeldOutCurve

    model, tokenizer = tiny
    model.train()
    tokenizer.padding_side = "right"
    rows = [{"question": f"q{i}?"} for i in range(3)]
    settings = GenerationSettings(n_samples=2, max_new_tokens=4, batch_size=8, chat_template="r1", temperature=1.0)
    curve = HeldOutCurve(_Stub(), rows, tokenizer, settings, every=2, metrics=tmp_path / "metrics.jsonl")
    rng = torch.get_rng_state()
    first = curve.score(model, 0)
    assert torch.equal(torch.get_rng_state(), rng)  # its own generator: training's random state untouched
    assert model.training and tokenizer.padding_side == "right"
    assert curve.score(model, 0)["heldout_accuracy"] == first["heldout_accuracy"]  # a fixed subset, seeded
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 0 and logged[0]["heldout_questions"] == 3 and logged[0]["heldout_samples"] == 2
    assert 0 <= logged[0]["heldout_accuracy"] <= 1 and 0 <= logged[0]["heldout_formatted"] <= 1


def test_the_curve_scores_before_the_first_step_every_n_steps_and_at_the_last(tiny, tmp_path):
    from types import SimpleNamespace

    from lowres.train.heldout import HeldOutCurve

    steps = []
    curve = HeldOutCurve.__new__(HeldOutCurve)
    curve.every, curve.scored = 3, set()
    curve.score = lambda model, step: (steps.append(step), curve.scored.add(step))
    state = SimpleNamespace(is_world_process_zero=True, global_step=0, max_steps=7)
    control = SimpleNamespace(should_training_stop=False)
    curve.on_train_begin(None, state, control, model=object())
    for step in range(1, 8):
        state.global_step = step
        curve.on_step_end(None, state, control, model=object())
    assert steps == [0, 3, 6, 7]


def test_the_report_plots_the_held_out_curve_beside_the_reward(tmp_path):
    from lowres.report import plot_reward_curves

    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": s, "reward": 0.1 * s, "frac_reward_zero_std": 0.5} for s in range(1, 5)] + \
        [{"step": s, "heldout_accuracy": 0.2 + 0.05 * s, "heldout_formatted": 0.6} for s in (0, 2, 4)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    png = plot_reward_curves({"rlvr": metrics}, tmp_path / "curve.png")
    assert png is not None and png.stat().st_size > 1000
