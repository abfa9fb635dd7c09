"""HumanEval+: 164 Python functions to complete, graded by EvalPlus's extended tests.

Data: evalplus/humanevalplus (split "test"; `load("train")` gives the same rows, from which
training examples are drawn after removing the eval rows), i.e. the EvalPlus "OriginFmt" file, whose `test`
defines a self-contained `check(candidate)` covering the base and the plus inputs. The program
run in the sandbox is `prompt + code + test + check(entry_point)`: the prompt brings the imports
and helper functions a complete function may rely on, and a complete function in `code` simply
redefines the prompt's stub.

HumanEval/32 (`find_zero`): the OriginFmt test calls `_poly(*candidate(*inp), inp)`, which raises
TypeError for every solution, the canonical one included. `fix_known_test_bugs` rewrites that
line to EvalPlus's own check for this task, `abs(_poly(*inp, out)) <= atol`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lowres.errors import UserError
from lowres.sandbox import SandboxResult, run_many, run_python
from lowres.tasks.answers import answer_tag
from lowres.tasks.base import DEFAULT_REWARDS, RewardValues, Score, r1_messages
from lowres.tasks.data import HubSource, load_rows, local_candidates
from lowres.tasks.sampling import sample_examples

# The slowest canonical solutions (HumanEval/15, /139) take ~8 s on one busy core; the warmup
# paper's harness also allowed 30 s.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MEMORY_MB = 2048

_LOCAL = ["humaneval_plus/HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz", *local_candidates("humaneval_plus", "test")]
_COLUMNS = ("task_id", "prompt", "canonical_solution", "entry_point", "test")
_TYPES = dict.fromkeys(_COLUMNS, str)  # all program text, pasted into the program the sandbox runs

# (broken line, fixed line) in the OriginFmt tests.
_TEST_FIXES = (
    ("assert _poly(*candidate(*inp), inp) <= 0.0001", "assert abs(_poly(*inp, candidate(*inp))) <= 0.0001"),
)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}

QUESTION_PREFIX = (
    "Complete the following Python function. Put the complete function, with the imports it needs, "
    "in a ```python code block inside the <answer> </answer> tags.\n\n"
)


def fix_known_test_bugs(row: dict[str, Any]) -> dict[str, Any]:
    """The row with known-broken test lines replaced (HumanEval/32); other rows are unchanged."""
    test = row["test"]
    for broken, fixed in _TEST_FIXES:
        test = test.replace(broken, fixed)
    return row if test == row["test"] else {**row, "test": test}


def extract_code(completion: str) -> tuple[str, bool]:
    """(code, formatted): the last ```python block (else the last ``` block); without one, the
    <answer> content or the whole text, unformatted. A block cut off by the token limit counts."""
    if not isinstance(completion, str):
        return "", False
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(completion)]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        return python[-1], True
    if blocks:
        return blocks[-1][1], True
    tagged = answer_tag(completion)
    return (tagged if tagged is not None else completion), False


def code_prompt(row: dict[str, Any]) -> str:
    """The function stub to complete. Rows keep it as `code_prompt` too, because a GRPO dataset
    replaces `prompt` with chat messages (and TRL does not pass `prompt` to reward functions)."""
    stub = row.get("code_prompt", row.get("prompt"))
    if not isinstance(stub, str):
        raise KeyError("a humaneval_plus row needs its function stub in `code_prompt` (or `prompt`)")
    return stub


def build_program(code: str, row: dict[str, Any]) -> str:
    """The program the sandbox runs: the stub, the model's code, the tests, and the check call."""
    return f"{code_prompt(row)}\n{code}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"


class HumanEvalPlusTask:
    """HumanEval+ graded by running the EvalPlus tests in the sandbox; see the module docstring."""

    name = "humaneval_plus"
    description = "HumanEval+ (EvalPlus v0.1.10): 164 Python functions, graded by executing tests"
    train_split = "test"  # the only split: training rows are test rows outside the eval set
    stratify_by = None

    def __init__(self, rewards: RewardValues = DEFAULT_REWARDS, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_mb: int = DEFAULT_MEMORY_MB, workers: int | None = None):
        self.rewards = rewards
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers

    def load(self, split: str, limit: int | None = None, seed: int = 0,
             path: str | None = None) -> list[dict[str, Any]]:
        """Rows with `id` (the task_id), `prompt` and `code_prompt` (the stub), `entry_point`, `test`,
        `canonical_solution` and `answer` (stub + canonical solution: a reference program)."""
        if split not in ("test", "train"):  # "train" = test: training draws from it, minus the eval rows
            raise UserError(f"humaneval_plus has only the split 'test' (and 'train' = test); got {split!r}")
        raw = load_rows(path=path, local=_LOCAL, hub=HubSource("evalplus/humanevalplus", "test"),
                        columns=_COLUMNS, what="humaneval_plus test", types=_TYPES)
        rows = [
            {**fixed, "id": str(fixed["task_id"]), "code_prompt": fixed["prompt"],
             "answer": fixed["prompt"] + fixed["canonical_solution"]}
            for fixed in map(fix_known_test_bugs, raw)
        ]
        if limit is not None and limit < len(rows):
            rows = sample_examples(rows, limit, seed)
        return rows

    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return r1_messages(f"{QUESTION_PREFIX}```python\n{code_prompt(row).rstrip()}\n```")

    def score(self, completion: str, row: dict[str, Any]) -> Score:
        code, formatted = extract_code(completion)
        result = run_python(build_program(code, row), timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        return self._verdict(code, formatted, result)

    def score_many(self, completions: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[Score]:
        """`score` for a batch, running the programs in parallel (`workers`, default: all cores)."""
        extracted = [extract_code(c) for c in completions]
        programs = [build_program(code, row) for (code, _), row in zip(extracted, rows, strict=True)]
        results = run_many(programs, workers=self.workers, timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        return [self._verdict(code, fmt, result) for (code, fmt), result in zip(extracted, results, strict=True)]

    def _verdict(self, code: str, formatted: bool, result: SandboxResult) -> Score:
        if result.error and result.error.startswith("sandbox error:"):
            # The sandbox, not the code, failed: raise so it is counted, not graded as wrong.
            raise RuntimeError(result.error)
        correct = result.passed
        return Score(formatted, correct, self.rewards.reward(formatted, correct), code)
