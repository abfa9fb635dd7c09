"""Choosing the ≤100 training examples: deterministic, optionally stratified, disjoint from eval.

The RLVR stage trains on a handful of examples, so which ones matters and must be reproducible:
the same rows, seed and n always give the same subset, on any machine (Python's `random.Random`
with an integer seed is stable across platforms and versions).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from lowres.errors import UserError

# The field that holds a row's question, in the order tasks use them (for de-duplication).
_TEXT_FIELDS = ("problem", "question", "prompt", "quiz")


def sample_examples(
    rows: Sequence[dict[str, Any]],
    n: int,
    seed: int = 0,
    stratify_by: str | None = None,
    exclude_ids: Iterable[Any] = (),
    exclude_texts: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Pick `n` rows, deterministically for a given `seed`, in their original order.

    stratify_by:   a column (e.g. "category"); each value gets a share of `n` proportional to its
                   size (largest-remainder rounding), so small categories are not left out by chance.
    exclude_ids:   row ids never to pick (e.g. the eval set's).
    exclude_texts: question texts never to pick, compared after normalising whitespace and case
                   (catches the same problem under another id).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"the number of examples must be a positive integer, got {n!r}")
    pool = eligible(rows, exclude_ids, exclude_texts)
    if n > len(pool):
        raise UserError(f"asked for {_examples(n)} but only {_available(len(pool))} after exclusions")
    rng = random.Random(seed)
    if stratify_by is None:
        chosen = rng.sample(pool, n)
    else:
        chosen = _stratified(pool, n, stratify_by, rng)
    return [row for _, row in sorted(chosen, key=lambda pair: pair[0])]


def eligible(rows: Sequence[dict[str, Any]], exclude_ids: Iterable[Any] = (),
             exclude_texts: Iterable[str] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(index, row) of the rows `sample_examples` may pick: no excluded id, no excluded question text."""
    excluded_ids = {str(i) for i in exclude_ids}
    # A row without a question field has text "": that matches nothing (or a task whose rows carry
    # only numbers, like the README's Sums, would have every row excluded).
    excluded_texts = {normalize_text(t) for t in exclude_texts if isinstance(t, str) and t.strip()}
    return [
        (index, row) for index, row in enumerate(rows)
        if str(row.get("id")) not in excluded_ids
        and (not excluded_texts or normalize_text(row_text(row)) not in excluded_texts)
    ]


def _stratified(pool: list[tuple[int, dict]], n: int, column: str, rng: random.Random) -> list[tuple[int, dict]]:
    groups: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for pair in pool:
        if column not in pair[1]:
            raise UserError(f"cannot stratify by {column!r}: a row has no such column")
        groups[str(pair[1][column])].append(pair)
    quotas = proportional_quotas({key: len(members) for key, members in groups.items()}, n)
    chosen: list[tuple[int, dict]] = []
    for key in sorted(groups):  # sorted: the draw order must not depend on row order
        chosen.extend(rng.sample(groups[key], quotas[key]))
    return chosen


def proportional_quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split `n` over groups in proportion to `sizes` (Hamilton / largest-remainder method).

    Ties in the remainder go to the larger group, then to the alphabetically first key, so the
    result depends only on the inputs.
    """
    total = sum(sizes.values())
    if total < n:
        raise UserError(f"asked for {_examples(n)} but only {_available(total)}")
    exact = {key: n * size / total for key, size in sizes.items()}
    quotas = {key: int(value) for key, value in exact.items()}
    leftover = n - sum(quotas.values())
    order = sorted(sizes, key=lambda key: (-(exact[key] - quotas[key]), -sizes[key], key))
    for key in order[:leftover]:
        quotas[key] += 1
    return quotas


def normalize_text(text: str) -> str:
    """Lowercase with runs of whitespace collapsed: two copies of a problem compare equal."""
    return re.sub(r"\s+", " ", text or "").strip().lower()


def row_text(row: dict[str, Any]) -> str:
    """The question text of a row (its `problem`, `question`, `prompt` or `quiz` field)."""
    for field in _TEXT_FIELDS:
        value = row.get(field)
        if isinstance(value, str):
            return value
    return ""


def disjoint_train_subset(
    task: Any,
    n: int,
    seed: int = 0,
    eval_rows: Sequence[dict[str, Any]] = (),
    split: str | None = None,
    stratify_by: str | None = None,
    path: str | None = None,
    **load_kwargs: Any,
) -> list[dict[str, Any]]:
    """`n` training rows of `task` that share no id and no question text with `eval_rows`.

    The split defaults to the task's `train_split` ("train" for math and gsm8k; "test" for
    humaneval_plus and mmlu_pro, whose training examples come from the evaluation split minus the
    eval rows). Stratification defaults to the task's `stratify_by` (MMLU-Pro: "category").
    """
    split = split or getattr(task, "train_split", "train")
    stratify_by = stratify_by if stratify_by is not None else getattr(task, "stratify_by", None)
    rows = task.load(split, seed=seed, path=path, **load_kwargs)
    return sample_examples(
        rows,
        n,
        seed=seed,
        stratify_by=stratify_by,
        exclude_ids=[row.get("id") for row in eval_rows],
        exclude_texts=[row_text(row) for row in eval_rows],
    )


def _examples(n: int) -> str:
    return f"{n} example{'' if n == 1 else 's'}"


def _available(n: int) -> str:
    return f"{n} {'is' if n == 1 else 'are'} available"
