"""Knights & Knaves as a task in the registry: load, prompt, score.

Data: the Logic-RL puzzle set when a path is given (or found under $LOWRES_DATA_DIR/knights_knaves/
logic_rl), otherwise puzzles generated on the spot — offline, seeded, any number. Generated train and
test puzzles come from separate seeded streams, and a generated training puzzle whose statements
also occur in the test set is dropped (small puzzles repeat often), so training never sees a test
puzzle, even under other names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lowres.tasks.base import Score, r1_messages
from lowres.tasks.kk.generator import Puzzle, generate_puzzles
from lowres.tasks.kk.render import load_logic_rl, render_quiz, render_solution
from lowres.tasks.kk.traces import trace_example
from lowres.tasks.kk.verify import KKRewards, score_completion

ANSWER_INSTRUCTION = (
    "After thinking, when you finally reach a conclusion, clearly state the identity of each character "
    "within <answer> </answer> tags. i.e., <answer> (1) Zoey is a knight\n(2) ... </answer>."
)
GENERATED_SIZES = {"train": 2000, "test": 200}
LOGIC_RL_SIZES = {3, 4, 5, 6, 7}


def question_text(quiz: str) -> str:
    """The user turn for a puzzle: the quiz, then how to write the answer."""
    return f"{quiz}\n\n{ANSWER_INSTRUCTION}"


def puzzle_row(puzzle: Puzzle) -> dict[str, Any]:
    """A task row: the puzzle's fields plus its quiz text and gold answer."""
    row = puzzle.to_dict()
    row["quiz"] = puzzle.quiz or render_quiz(puzzle, rng=puzzle.id)
    row["answer"] = render_solution(puzzle)
    return row


def solver_trace_rows(n_puzzles: int, people, seed: int = 0, depth: int = 1, brief: bool = False
                      ) -> list[dict[str, Any]]:
    """The offline warmup set: generated puzzles, each with a solver-written long chain of thought
    (brief: without restating the rules and claims or ruling out the other assignments).

    Rows: prompt (the user question), completion (<think>…</think> <answer>…</answer>), puzzle_id,
    answer, n_people.
    """
    rows = []
    for i, puzzle in enumerate(generate_puzzles(n_puzzles, n_people=people, seed=seed, depth=depth)):
        example = trace_example(puzzle, seed=f"{seed}-{i}", brief=brief)
        rows.append({"prompt": question_text(example["prompt_question"]), "completion": example["completion"],
                     "puzzle_id": example["puzzle_id"], "answer": example["solution_text"], "n_people": puzzle.n})
    return rows


class KKTask:
    """Knights & Knaves puzzles; reward +2 correct, −0.5 wrong, −1 unparseable, −2 bad format."""

    def __init__(self, name: str = "kk", people: tuple[int, ...] = (3, 4, 5, 6, 7),
                 rewards: KKRewards = KKRewards()):  # noqa: B008 (frozen, immutable)
        self.name = name
        self.people = people
        self.rewards = rewards
        sizes = f"{min(people)}-{max(people)}" if len(people) > 1 else str(people[0])
        self.description = f"Knights & Knaves logic puzzles, {sizes} people"

    def _local_logic_rl(self, path: str | None) -> Path | None:
        if path:
            return Path(path)
        if not set(self.people) & LOGIC_RL_SIZES:
            return None  # Logic-RL has no puzzles of these sizes: generate them
        root = os.environ.get("LOWRES_DATA_DIR")
        candidate = Path(root) / "knights_knaves" / "logic_rl" if root else None
        return candidate if candidate is not None and candidate.is_dir() else None

    def load(self, split: str, limit: int | None = None, seed: int = 0, path: str | None = None,
             **_: Any) -> list[dict[str, Any]]:
        local = self._local_logic_rl(path)
        if local is not None:
            puzzles = [p for p in load_logic_rl(local, split) if p.n in self.people]
        else:
            puzzles = self._generated(split, limit or GENERATED_SIZES.get(split, 1000), seed)
        rows = [puzzle_row(p) for p in puzzles]
        return rows[:limit] if limit else rows

    def _generated(self, split: str, count: int, seed: int) -> list[Puzzle]:
        # The test set is fixed (seed-independent) so every run is compared on the same puzzles.
        test = generate_puzzles(GENERATED_SIZES["test"], n_people=self.people, seed=f"{self.name}-test")
        if split == "test":
            return test if count <= len(test) else generate_puzzles(count, self.people, f"{self.name}-test")
        test_statements = {tuple(p.statements) for p in test}
        pool = generate_puzzles(2 * count, n_people=self.people, seed=f"{self.name}-{split}-{seed}",
                                allow_fewer=True)
        return [p for p in pool if tuple(p.statements) not in test_statements][:count]

    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return r1_messages(question_text(row["quiz"]))

    def score(self, completion: str, row: dict[str, Any]) -> Score:
        return score_completion(completion, row, self.rewards)


def kk_easy() -> KKTask:
    """2-person puzzles: within reach of very small models (the embedded demo's target)."""
    return KKTask(name="kk_easy", people=(2,))
