"""The ≤100-example sampler: deterministic, stratified, disjoint from eval."""

import os
from collections import Counter

import pytest

from lowres.errors import UserError
from lowres.tasks.sampling import disjoint_train_subset, proportional_quotas, sample_examples

ROWS = [{"id": f"r{i}", "question": f"Question number {i}?", "category": "abc"[i % 3] if i < 90 else "d"}
        for i in range(100)]


def ids(rows):
    return [row["id"] for row in rows]


def test_deterministic_and_seed_dependent():
    first = sample_examples(ROWS, 10, seed=3)
    assert ids(first) == ids(sample_examples(ROWS, 10, seed=3))
    assert ids(first) != ids(sample_examples(ROWS, 10, seed=4))
    assert len(set(ids(first))) == 10
    # In the original order, whatever order the input had.
    assert ids(first) == sorted(ids(first), key=lambda x: int(x[1:]))


def test_exclusions():
    picked = sample_examples(ROWS, 50, seed=0, exclude_ids=[f"r{i}" for i in range(50)])
    assert all(int(row["id"][1:]) >= 50 for row in picked)
    picked = sample_examples(ROWS, 99, seed=0, exclude_texts=["  QUESTION number 7? "])
    assert "r7" not in ids(picked)


def test_rows_without_a_question_field_are_excluded_by_id_only():
    """A user's task whose rows carry only numbers (the README's Sums) still has training rows."""
    rows = [{"id": f"{a}+{b}", "a": a, "b": b} for a in range(1, 10) for b in range(1, 10)]
    picked = sample_examples(rows, 8, seed=0, exclude_ids=[r["id"] for r in rows[:40]], exclude_texts=[""] * 40)
    assert len(picked) == 8 and not {r["id"] for r in picked} & {r["id"] for r in rows[:40]}


def test_stratified_proportions():
    picked = sample_examples(ROWS, 20, seed=0, stratify_by="category")
    counts = Counter(row["category"] for row in picked)
    # 30/30/30/10 of 100 -> 6/6/6/2 of 20.
    assert counts == {"a": 6, "b": 6, "c": 6, "d": 2}


def test_proportional_quotas_largest_remainder():
    assert proportional_quotas({"x": 1, "y": 1, "z": 1}, 2) == {"x": 1, "y": 1, "z": 0}
    quotas = proportional_quotas({"big": 1351, "mid": 499, "small": 381}, 100)
    assert sum(quotas.values()) == 100 and quotas == {"big": 61, "mid": 22, "small": 17}


def test_bad_requests():
    with pytest.raises(UserError):
        sample_examples(ROWS, 0)
    with pytest.raises(UserError):
        sample_examples(ROWS, 101)
    with pytest.raises(UserError):
        sample_examples(ROWS, 5, stratify_by="missing")


def test_math_train_subset_is_disjoint_from_math500(benchmark_data):
    from lowres.tasks.math import MathTask

    task = MathTask()
    eval_rows = task.load("test")
    n = benchmark_data.pick(5, 100)
    train = disjoint_train_subset(task, n, seed=0, eval_rows=eval_rows)
    assert len(train) == n
    assert not set(ids(train)) & set(ids(eval_rows))
    assert not {r["problem"].strip() for r in train} & {r["problem"].strip() for r in eval_rows}
    assert ids(train) == ids(disjoint_train_subset(task, n, seed=0, eval_rows=eval_rows))


def test_same_split_subsets_exclude_the_eval_rows(data_dir):
    from lowres.tasks.gsm8k import GSM8KTask
    from lowres.tasks.mmlu_pro import MMLUProTask

    gsm8k = GSM8KTask()
    everything = gsm8k.load("test")
    eval_rows = gsm8k.load("test", limit=4, seed=1)
    train = disjoint_train_subset(gsm8k, 4, seed=0, eval_rows=eval_rows, split="test")
    # Half the split is eval, so the training subset is exactly the other half.
    assert set(ids(train)) == set(ids(everything)) - set(ids(eval_rows))

    mmlu = MMLUProTask()
    physics = mmlu.load("test", category="physics")
    eval_rows = physics[:1]
    train = disjoint_train_subset(mmlu, 1, seed=0, eval_rows=eval_rows, category="physics")
    assert ids(train) == ids(physics[1:])
    assert {row["category"] for row in train} == {"physics"}


def test_mmlu_pro_training_subset_is_stratified(benchmark_data):
    from lowres.tasks.mmlu_pro import MMLUProTask

    task = MMLUProTask()
    rows = task.load("test")
    n = benchmark_data.pick(14, 100)  # the fixtures: 2 questions in each of the 14 categories
    train = disjoint_train_subset(task, n, seed=0)
    counts = Counter(row["category"] for row in train)
    sizes = Counter(row["category"] for row in rows)
    assert sum(counts.values()) == n and set(counts) == set(sizes)
    for category, size in sizes.items():
        assert abs(counts[category] - n * size / len(rows)) < 1


def test_limit_in_load_samples_with_the_seed(data_dir):
    from lowres.tasks.gsm8k import GSM8KTask

    task = GSM8KTask()
    assert ids(task.load("test", limit=4, seed=5)) == ids(task.load("test", limit=4, seed=5))
    assert ids(task.load("test", limit=4, seed=5)) != ids(task.load("test", limit=4, seed=6))
    assert os.environ["LOWRES_DATA_DIR"] == str(data_dir)


def test_too_few_rows_are_counted_in_words_that_agree():
    with pytest.raises(UserError, match=r"^asked for 2 examples but only 1 is available after exclusions$"):
        sample_examples([{"id": 1, "question": "a"}], 2)
    with pytest.raises(UserError, match=r"^asked for 1 example but only 0 are available$"):
        proportional_quotas({"a": 0}, 1)
