"""Reward functions as TRL's GRPOTrainer calls them."""

import math

import pytest

from lowres.rewards import FormatReward, completion_text, format_reward, task_reward
from lowres.tasks.base import RewardValues, Score
from lowres.tasks.gsm8k import GSM8KTask


def trl_call(fn, completions, **columns):
    """The keyword arguments GRPOTrainer._calculate_rewards passes (TRL 1.15)."""
    metrics = {}
    out = fn(
        prompts=[[{"role": "user", "content": "q"}]] * len(completions),
        completions=completions,
        completion_ids=[[1, 2]] * len(completions),
        trainer_state=object(),
        log_extra=lambda *a, **k: None,
        log_metric=lambda name, value: metrics.__setitem__(name, value),
        **columns,
    )
    return out, metrics


def test_task_reward_scores_strings_and_chat_messages():
    reward = task_reward(GSM8KTask())
    assert reward.__name__ == "gsm8k_reward"
    right = "<think> 9*2 </think> <answer> \\boxed{18} </answer>"
    completions = [right, [{"role": "assistant", "content": right}], "<answer>\\boxed{17}</answer>", "18"]
    out, metrics = trl_call(reward, completions, answer=["18"] * 4, question=["q"] * 4)
    assert out == [1.0, 1.0, 0.0, 0.0]
    # "18" alone is right but unformatted (no reward); "\boxed{17}" is formatted but wrong.
    assert metrics == {"reward_errors/gsm8k_reward": 0.0, "gsm8k_reward/accuracy": 0.75,
                       "gsm8k_reward/format_rate": 0.75}
    assert reward.errors == 0


def test_task_reward_by_name_and_custom_name():
    assert task_reward("gsm8k", name="acc").__name__ == "acc"


def test_garbage_never_raises_and_is_counted():
    reward = task_reward(GSM8KTask(rewards=RewardValues(unformatted=-1.0)))
    garbage = [None, 5, [[1, 2]], {"role": "assistant", "content": 7}, [{"content": None}], b"bytes"]
    out, metrics = trl_call(reward, garbage, answer=["1"] * len(garbage))
    assert len(out) == len(garbage) and all(isinstance(x, float) for x in out)
    assert out[0] == -1.0 and reward.errors >= 4
    assert metrics["reward_errors/gsm8k_reward"] > 0
    # Missing columns (no `answer`) and a missing completions list: still one score each.
    out, _ = trl_call(reward, ["<answer>\\boxed{1}</answer>"])
    assert out == [-1.0]
    assert reward(prompts=["a", "b"], completions=None) == [-1.0, -1.0]
    assert reward(completions=42) == [-1.0]
    assert reward() == []


class BrokenTask:
    name = "broken"
    description = "raises or returns nonsense"

    def load(self, split, limit=None, seed=0, path=None):
        return []

    def prompt(self, row):
        return []

    def score(self, completion, row):
        if completion == "raise":
            raise ValueError("boom")
        if completion == "nan":
            return Score(True, True, math.nan)
        if completion == "none":
            return None
        return Score(True, True, 1.0)


def test_grader_errors_score_as_format_failures():
    reward = task_reward(BrokenTask())
    out, metrics = trl_call(reward, ["raise", "ok", "nan", "none"])
    assert out == [0.0, 1.0, 0.0, 0.0]
    assert reward.errors == 3 and metrics["reward_errors/broken_reward"] == 0.75


def test_score_many_is_used_for_batches():
    class Batched(BrokenTask):
        batches = 0

        def score_many(self, completions, rows):
            Batched.batches += 1
            return [Score(True, c == "good", 1.0 if c == "good" else 0.0) for c in completions]

    reward = task_reward(Batched())
    out, _ = trl_call(reward, ["good", "bad", None])
    assert out == [1.0, 0.0, 0.0] and Batched.batches == 1 and reward.errors == 1


@pytest.mark.parametrize(
    ("completion", "value"),
    [
        ("<think> a </think> <answer> b </answer>", 1.0),
        ([{"role": "assistant", "content": "a </think><answer>b</answer>"}], 1.0),
        ("<answer> b </answer>", 0.0),
        ("<think> a </think> <answer> b </answer> <answer> c </answer>", 0.0),
        (None, 0.0),
        (3.5, 0.0),
    ],
)
def test_format_reward(completion, value):
    reward = format_reward(GSM8KTask())
    out, _ = trl_call(reward, [completion])
    assert out == [value]
    assert reward.__name__ == "format_reward"
    assert reward.errors == (1 if value == 0.0 and not isinstance(completion, (str, list)) else 0)


def test_format_reward_values_are_configurable():
    assert format_reward(formatted=0.5, unformatted=-1.0)(completions=["x </think><answer>y</answer>", "nope"]) \
        == [0.5, -1.0]
    strict = FormatReward(name="fmt")
    assert strict.__name__ == "fmt"


def test_rows_packed_as_json_are_unpacked():
    """rlvr.build_dataset carries each row whole in a `row_json` column."""
    import json

    reward = task_reward(GSM8KTask())
    rows = [{"id": "a", "question": "q", "answer": "18"}, {"id": "b", "question": "q", "answer": "5"}]
    out, _ = trl_call(reward, ["<answer>\\boxed{18}</answer>"] * 2, row_json=[json.dumps(r) for r in rows])
    assert out == [1.0, 0.0] and reward.errors == 0
    out, _ = trl_call(reward, ["<answer>\\boxed{18}</answer>"], row_json=["{broken"])
    assert out == [0.0] and reward.errors == 1


def test_completion_text():
    assert completion_text("x") == "x"
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"
    assert completion_text([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]) == "a"
    with pytest.raises(TypeError):
        completion_text(None)


def test_works_in_a_grpo_trainer_signature():
    """TRL logs a reward by `__name__` and calls it with keywords only."""
    from trl.trainer.utils import get_callable_name

    assert get_callable_name(task_reward(GSM8KTask())) == "gsm8k_reward"
    assert get_callable_name(format_reward("gsm8k")) == "format_reward"


def test_the_bench_reward_differs_between_any_two_completions_of_a_batch():
    """lowres bench's stand-in: every group has variance, even when the model repeats itself."""
    from lowres.rewards import DistinctReward

    reward = DistinctReward()
    completions = ["same text"] * 8 + [[{"role": "assistant", "content": "x"}]] * 8
    values = reward(prompts=["p"] * 16, completions=completions)
    assert len(set(values)) == 16 and all(0 <= v < 1 for v in values)
    assert reward(prompts=["p"] * 16, completions=completions) == values  # the same batch, the same values
