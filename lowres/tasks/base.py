"""What every task shares: the Score a grader returns, the reward values it pays, and the prompt templates.

A task bundles data loading, prompting and grading for one domain (as nanochat's `tasks/` do),
so the RLVR reward and the evaluation harness are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# The R1-style template the paper (and Logic-RL / DeepSeek-R1-Zero) uses: reasoning inside
# <think>, the final answer inside <answer>. `{question}` is the task's own question text.
R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)


@dataclass(frozen=True)
class Score:
    """A grader's verdict on one completion.

    formatted: the completion follows the task's required output format.
    correct:   the extracted answer is right.
    reward:    the scalar RLVR reward (task-specific values; the paper's by default).
    extracted: the answer the grader read out of the completion (None if it found none).
    """

    formatted: bool
    correct: bool
    reward: float
    extracted: str | None = None


@dataclass(frozen=True)
class RewardValues:
    """The reward a task's grader pays. The default is the paper's convention for the target tasks.

    correct:     formatted and right.
    wrong:       formatted but wrong.
    unformatted: the required answer format is missing (no \\boxed{}, no code block, ...), or the
                 grader failed on the completion.
    """

    correct: float = 1.0
    wrong: float = 0.0
    unformatted: float = 0.0

    def reward(self, formatted: bool, correct: bool) -> float:
        """The reward for a verdict; a right answer in the wrong format earns `unformatted`."""
        if not formatted:
            return self.unformatted
        return self.correct if correct else self.wrong


# The paper's values for the target tasks: 1 for a right answer, 0 otherwise.
DEFAULT_REWARDS = RewardValues()


@runtime_checkable
class Task(Protocol):
    """The interface the training stages and `lowres eval` use."""

    name: str
    description: str

    def load(self, split: str, limit: int | None = None, seed: int = 0,
             path: str | None = None) -> list[dict[str, Any]]: ...

    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]: ...

    def score(self, completion: str, row: dict[str, Any]) -> Score: ...


def r1_messages(question: str) -> list[dict[str, str]]:
    """Chat messages for the R1 template: a system turn with the format, a user turn with the question."""
    return [{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": question}]
