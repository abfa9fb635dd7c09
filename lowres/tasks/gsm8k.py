"""GSM8K: grade-school word problems with a numeric answer (openai/gsm8k "main", train/test).

Gold: the number after `####` in the `answer` column. Completion: the number in the last
\\boxed{}, else in the <answer> block, else the last number anywhere (unformatted). Values are
compared exactly as decimals after dropping commas, `$` and `%` ("1,234" == "1234.00").
"""

from __future__ import annotations

from typing import Any

from lowres.errors import UserError
from lowres.tasks.answers import answer_tag, last_boxed, last_number, numbers_equal
from lowres.tasks.base import DEFAULT_REWARDS, RewardValues, Score, r1_messages
from lowres.tasks.data import HubSource, load_rows, local_candidates
from lowres.tasks.sampling import sample_examples

SPLITS = ("train", "test")
QUESTION_SUFFIX = (
    "\n\nSolve the problem step by step. Put the final numerical answer within \\boxed{} inside the "
    "<answer> </answer> tags."
)


def gold_answer(solution: str) -> str | None:
    """The final number of a GSM8K `answer` field (after `####`), normalised; None if absent."""
    if not isinstance(solution, str) or "####" not in solution:
        return None
    return last_number(solution.rsplit("####", 1)[1])


def extract_answer(completion: str) -> tuple[str | None, bool]:
    """(number, formatted): from the last \\boxed{}, else <answer>, else the last number (unformatted)."""
    for span in (last_boxed(completion), answer_tag(completion)):
        if span is not None:
            number = last_number(span)
            if number is not None:
                return number, True
    return last_number(completion), False


class GSM8KTask:
    """GSM8K with exact numeric grading; see the module docstring."""

    name = "gsm8k"
    description = "GSM8K grade-school math word problems (train 7,473 / test 1,319), numeric answer"
    train_split = "train"
    stratify_by = None

    def __init__(self, rewards: RewardValues = DEFAULT_REWARDS):
        self.rewards = rewards

    def load(self, split: str, limit: int | None = None, seed: int = 0,
             path: str | None = None) -> list[dict[str, Any]]:
        """Rows with `id`, `question`, `solution` (the worked answer) and `answer` (the final number)."""
        if split not in SPLITS:
            raise UserError(f"gsm8k has splits {', '.join(SPLITS)}; got {split!r}")
        raw = load_rows(
            path=path,
            local=local_candidates("gsm8k", split),
            hub=HubSource("openai/gsm8k", split, config="main"),
            columns=("question", "answer"),
            what=f"gsm8k {split}",
            # `answer`: the worked solution ending in "#### N", or (a user file) the bare number.
            types={"question": str, "answer": (str, int, float)},
        )
        rows = []
        for index, row in enumerate(raw):
            solution = row["answer"]
            gold = gold_answer(solution)
            if gold is None:  # a user file may already hold the bare number
                gold, solution = last_number(str(row["answer"])), row.get("solution", row["answer"])
            if gold is None:
                raise UserError(f"{path or 'gsm8k ' + split}: row {index + 1} has no final number in `answer`")
            row_id = row.get("id") or f"gsm8k/{split}/{index}"
            rows.append({**row, "id": str(row_id), "solution": solution, "answer": gold})
        if limit is not None and limit < len(rows):
            rows = sample_examples(rows, limit, seed)
        return rows

    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return r1_messages(row["question"] + QUESTION_SUFFIX)

    def score(self, completion: str, row: dict[str, Any]) -> Score:
        extracted, formatted = extract_answer(completion)
        correct = numbers_equal(extracted, str(row["answer"]))
        return Score(formatted, correct, self.rewards.reward(formatted, correct), extracted)
