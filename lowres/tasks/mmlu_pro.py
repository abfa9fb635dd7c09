"""MMLU-Pro: 10-option multiple choice across 14 subjects (TIGER-Lab/MMLU-Pro; test, validation).

There is no train split: `load("train")` gives the test rows, from which training examples are
drawn after removing the eval rows (`sampling.disjoint_train_subset`).

The answer is a letter A-J, read from the last \\boxed{X}, else from `<answer> X`, else the last
standalone capital A-J in the text (the MMLU-Pro reference extraction; unformatted). In training an
unparseable completion is simply wrong. For evaluation, MMLU-Pro's convention scores it as a random
guess among the options: `random_guess_correct(row, seed)` or `MMLUProTask(random_guess=True)`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Any

from lowres.errors import UserError
from lowres.tasks.answers import answer_tag, last_boxed
from lowres.tasks.base import DEFAULT_REWARDS, RewardValues, Score, r1_messages
from lowres.tasks.data import HubSource, load_rows, local_candidates
from lowres.tasks.sampling import sample_examples

LETTERS = "ABCDEFGHIJ"
SPLITS = ("test", "validation")
# The offline bundle ships the Feb 2026 revision of test (12,030 rows) under a dated name.
_LOCAL = {
    "test": ["mmlu_pro/test_2026-02.jsonl.gz", *local_candidates("mmlu_pro", "test")],
    "validation": local_candidates("mmlu_pro", "validation"),
}
_COLUMNS = ("question_id", "question", "options", "answer", "category")
# `answer` is the letter; `answer_index` (optional) is used when the letter is not one of A-J.
_TYPES = {"question_id": (str, int), "question": str, "options": list, "answer": str, "category": str,
          "answer_index": (int, type(None))}

# "B", "(B)", "\text{B}", "B. Paris", "B) Paris" -- a letter that is not the start of a word.
# The whitespace runs before the letter are possessive (`\s*+`): with plain `\s*\(?\s*` the regex
# tried every way to split N spaces between them, cubic in N -- 2 s for a 1,000-space answer,
# hours for a long one (found by fuzzing). What they match is the same, as no part between them
# can match whitespace.
_LEADING_LETTER = re.compile(
    r"^\s*+(?:\\(?:text|textbf|mathrm|mathbf)\s*+\{)?\s*+\(?\s*+([A-J])\s*\)?(?![A-Za-z])"
)
_ANSWER_IS = re.compile(r"answer\s++is\s*+:?\s*+\(?\s*+([A-J])\b", re.IGNORECASE)
_STANDALONE = re.compile(r"\b([A-J])\b")


def extract_letter(completion: str) -> tuple[str | None, bool]:
    """(letter, formatted): from \\boxed{X}, else <answer> X, else the last standalone A-J (unformatted)."""
    boxed = last_boxed(completion)
    if boxed is not None:
        match = _LEADING_LETTER.match(boxed)
        if match:
            return match.group(1), True
    tagged = answer_tag(completion)
    if tagged is not None:
        match = _LEADING_LETTER.match(tagged) or _ANSWER_IS.search(tagged)
        if match:
            return match.group(1), True
    if not isinstance(completion, str):
        return None, False
    letters = _STANDALONE.findall(completion)
    return (letters[-1], False) if letters else (None, False)


def random_guess_correct(row: dict[str, Any], seed: int = 0) -> bool:
    """MMLU-Pro's convention for an unparseable answer: a uniform guess among the row's options.

    Deterministic in (seed, row id), so a re-run of an evaluation gives the same accuracy.
    """
    rng = random.Random(f"{seed}:{row['id']}")
    return rng.randrange(len(row["options"])) == int(row["answer_index"])


class MMLUProTask:
    """MMLU-Pro with letter grading; see the module docstring."""

    name = "mmlu_pro"
    description = "MMLU-Pro 10-option multiple choice, 14 subjects (test 12,030 in the 2026-02 revision)"
    train_split = "test"  # there is no train split: training rows are test rows outside the eval set
    stratify_by = "category"

    def __init__(self, rewards: RewardValues = DEFAULT_REWARDS, random_guess: bool = False, guess_seed: int = 0):
        self.rewards = rewards
        self.random_guess = random_guess
        self.guess_seed = guess_seed

    def load(self, split: str, limit: int | None = None, seed: int = 0, path: str | None = None,
             category: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows with `id`, `question`, `options` ("N/A" padding dropped), `answer` (a letter),
        `answer_index` and `category`; `category=` keeps one subject or a list of them.
        `limit` samples stratified by category."""
        if split == "train":  # no train split: training draws from test, minus the eval rows
            split = self.train_split
        if split not in SPLITS:
            raise UserError(f"mmlu_pro has splits {', '.join(SPLITS)} (and 'train' = test); got {split!r}")
        raw = load_rows(path=path, local=_LOCAL[split], hub=HubSource("TIGER-Lab/MMLU-Pro", split),
                        columns=_COLUMNS, what=f"mmlu_pro {split}", types=_TYPES)
        rows = [_normalize_row(row) for row in raw]
        if category is not None:
            rows = _filter_category(rows, category)
        if limit is not None and limit < len(rows):
            rows = sample_examples(rows, limit, seed, stratify_by="category")
        return rows

    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]:
        options = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(row["options"]))
        question = (
            f"The following is a multiple choice question about {row['category']}. Think step by step "
            f"and then finish your answer with <answer> \\boxed{{X}} </answer> where X is the correct "
            f"letter choice.\n\n{row['question']}\n\nOptions:\n{options}"
        )
        return r1_messages(question)

    def score(self, completion: str, row: dict[str, Any]) -> Score:
        letter, formatted = extract_letter(completion)
        if letter is None and self.random_guess:
            correct = random_guess_correct(row, self.guess_seed)
        else:
            correct = letter is not None and letter == row["answer"]
        return Score(formatted, correct, self.rewards.reward(formatted, correct), letter)

    def random_guess_correct(self, row: dict[str, Any], seed: int = 0) -> bool:
        """See the module-level `random_guess_correct`."""
        return random_guess_correct(row, seed)


def _normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    options = list(row["options"])
    letter = str(row["answer"]).strip()
    # The letter is what MMLU-Pro's own evaluation compares against, so it wins over answer_index.
    if len(letter) == 1 and letter in LETTERS:
        answer_index = LETTERS.index(letter)
    elif row.get("answer_index") is not None:
        answer_index = row["answer_index"]
    else:
        raise UserError(f"mmlu_pro question {row['question_id']}: answer {letter!r} is not a letter A-J "
                        "(and the row has no answer_index)")
    if not 0 <= answer_index < len(options):
        raise UserError(f"mmlu_pro question {row['question_id']}: answer {letter!r} is not one of its options")
    # Some revisions pad options with "N/A"; drop them and move the answer index with them.
    kept = [i for i, option in enumerate(options) if option != "N/A" or i == answer_index]
    new_index = kept.index(answer_index)
    return {
        **row,
        "id": str(row["question_id"]),
        "options": [options[i] for i in kept],
        "answer_index": new_index,
        "answer": LETTERS[new_index],
    }


def _filter_category(rows: list[dict[str, Any]], category: str | Iterable[str]) -> list[dict[str, Any]]:
    wanted = {category} if isinstance(category, str) else set(category)
    wanted = {c.strip().lower() for c in wanted}
    known = {str(row["category"]).lower() for row in rows}
    unknown = sorted(wanted - known)
    if unknown:
        raise UserError(f"unknown mmlu_pro category {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [row for row in rows if str(row["category"]).lower() in wanted]
