"""MATH: competition problems; the answer is the last \\boxed{} of the completion.

Splits: "train" = the 7,500 MATH train problems (DigitalLearningGmbH/MATH-lighteval, the warmup
paper's RL source); "test" = MATH-500 (HuggingFaceH4/MATH-500), a subset of the MATH *test* split,
so it shares no problem with train.

Equivalence is math-verify's (LaTeX -> sympy, then numeric / symbolic / set / interval checks),
with a plain-sympy fallback for answers written as code ("2*pi", "x**2"). Each check runs under a
time limit: `\\boxed{9^{9^{9^{9}}}}` or a huge factorial must not stall a training step.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from lowres.errors import UserError
from lowres.sandbox import CallTimeout, FunctionWorker, WorkerError, time_limit
from lowres.tasks.answers import answer_tag, last_boxed
from lowres.tasks.base import DEFAULT_REWARDS, RewardValues, Score, r1_messages
from lowres.tasks.data import HubSource, load_rows, local_candidates
from lowres.tasks.sampling import sample_examples

DEFAULT_TIMEOUT_S = 3.0
# An answer longer than this is not a final answer; it is not worth a sympy parse.
MAX_ANSWER_CHARS = 400

_SPLITS = {
    "train": (
        local_candidates("math", "train"),
        HubSource("DigitalLearningGmbH/MATH-lighteval", "train"),
        ("problem", "solution"),
    ),
    "test": (
        local_candidates("math500", "test"),
        HubSource("HuggingFaceH4/MATH-500", "test"),
        ("problem", "answer"),
    ),
}
# What the fields the task reads may hold (checked where present): a bare number is a fine answer.
_TYPES = {"problem": str, "answer": (str, int, float, type(None)), "solution": (str, type(None))}

QUESTION_SUFFIX = (
    "\n\nReason step by step. Put your final answer within \\boxed{} inside the <answer> </answer> tags."
)


class MathTask:
    """MATH with math-verify grading; see the module docstring."""

    name = "math"
    description = "MATH competition problems (train 7.5k; test = MATH-500), answer in \\boxed{}"
    train_split = "train"
    stratify_by = None

    def __init__(self, rewards: RewardValues = DEFAULT_REWARDS, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.rewards = rewards
        self.timeout_s = timeout_s

    def load(self, split: str, limit: int | None = None, seed: int = 0,
             path: str | None = None) -> list[dict[str, Any]]:
        """Rows with `id`, `problem`, `answer` (gold, a LaTeX string) and the source columns.

        Rows without a gold answer are dropped: train has 7,498 gradable rows of 7,500 (two
        number-theory solutions end in an empty \\boxed{})."""
        if split not in _SPLITS:
            raise UserError(f"math has splits {', '.join(_SPLITS)}; got {split!r}")
        local, hub, columns = _SPLITS[split]
        if path is not None:
            columns = ("problem",)  # a user file needs a problem and either an answer or a solution
        raw = load_rows(path=path, local=local, hub=hub, columns=columns, what=f"math {split}", types=_TYPES)
        # Rows without a gold answer cannot be graded; MATH train has two (an empty \boxed{}).
        rows = [row for row in (_normalize_row(row, split, i) for i, row in enumerate(raw)) if row]
        if not rows:
            raise UserError(f"{path or 'math ' + split}: no row has an `answer` or a \\boxed{{}} in its `solution`")
        if limit is not None and limit < len(rows):
            rows = sample_examples(rows, limit, seed)
        return rows

    def prompt(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return r1_messages(row["problem"] + QUESTION_SUFFIX)

    def score(self, completion: str, row: dict[str, Any]) -> Score:
        """Right if the last \\boxed{} equals the gold answer (an <answer> without a box still
        counts for `correct`, but is unformatted and earns no reward)."""
        boxed = last_boxed(completion)
        extracted = boxed if boxed is not None else answer_tag(completion)
        correct = extracted is not None and math_equal(str(row["answer"]), extracted, self.timeout_s)
        formatted = boxed is not None
        return Score(formatted, correct, self.rewards.reward(formatted, correct), extracted)


def _normalize_row(row: dict[str, Any], split: str, index: int) -> dict[str, Any] | None:
    answer = row.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # a user file may hold the bare number
    if not isinstance(answer, str) or not answer.strip():
        answer = last_boxed(row.get("solution") or "")
    if answer is None or not answer.strip():
        return None
    row_id = row.get("unique_id") or row.get("id") or f"math/{split}/{index}"
    return {**row, "id": str(row_id), "answer": answer}


# ----------------------------------------------------------------------------------------------
# Equivalence
# ----------------------------------------------------------------------------------------------
def math_equal(gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether the answer `pred` equals `gold` (both LaTeX, without \\boxed), within `timeout_s`.

    A check that runs out of time counts as not equal. On the main thread the limit is a SIGALRM
    timer; on other threads (signals only reach the main thread) the check runs in a per-thread
    worker process that is killed if it overruns.
    """
    if not isinstance(gold, str) or not isinstance(pred, str) or not pred.strip():
        return False
    if normalize_answer(gold) == normalize_answer(pred):
        return True
    if len(pred) > MAX_ANSWER_CHARS:
        return False
    if threading.current_thread() is threading.main_thread():
        return symbolic_equal(gold, pred, timeout_s)
    try:
        # The worker applies the same limit on its own main thread; the margin covers the IPC,
        # and the hard deadline catches a computation stuck in C code.
        return bool(_thread_worker().call(gold, pred, timeout_s, timeout_s=timeout_s + 2.0))
    except (CallTimeout, WorkerError):
        return False


def symbolic_equal(gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """math-verify, then the sympy fallback, under one SIGALRM time limit (main thread only)."""
    try:
        with time_limit(timeout_s):
            return _math_verify_equal(gold, pred) or _sympy_equal(gold, pred)
    except CallTimeout:
        return False


_local = threading.local()


def _thread_worker() -> FunctionWorker:
    worker = getattr(_local, "worker", None)
    if worker is None:
        worker = _local.worker = FunctionWorker(f"{__name__}:symbolic_equal")
    return worker


def _math_verify_equal(gold: str, pred: str) -> bool:
    from math_verify import verify

    gold_parsed = _parse_boxed(gold)
    pred_parsed = _parse_boxed(pred)
    if not gold_parsed or not pred_parsed:
        return False
    # Timeouts off: math-verify's own are SIGALRM-based too and would cancel ours.
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


@functools.lru_cache(maxsize=4096)
def _parse_boxed(answer: str) -> tuple:
    """math-verify's parse of one answer, cached: each gold is checked against many completions."""
    from math_verify import parse

    _quiet_math_verify()
    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=None))


@functools.cache
def _quiet_math_verify() -> None:
    """math-verify warns once per process that its timeouts are off; ours replace them."""
    import math_verify.grader
    import math_verify.parser

    for module in (math_verify.grader, math_verify.parser):
        if hasattr(module, "TIMEOUT_WARNING_SHOWN"):
            module.TIMEOUT_WARNING_SHOWN = True


# The sympy fallback reads plain expressions ("2*pi", "x**2", "3 sqrt(3)"). parse_expr evaluates
# Python, so its input is restricted to arithmetic on numbers, single letters and these names.
_SAFE_NAMES = ("sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "oo")
_SAFE_CHARS = re.compile(r"^[0-9a-zA-Z+\-*/^().,\s]*$")
# A float literal with a 4+ digit exponent ("1e999999999"): sympy turns it into an exact integer
# (10**999999999) while parsing, even with evaluate=False, in C code SIGALRM cannot interrupt,
# so the check hung for minutes (found by fuzzing). Such answers are refused.
_HUGE_EXPONENT_LITERAL = re.compile(r"[0-9.][eE][+-]?[0-9]{4,}")


def _sympy_equal(gold: str, pred: str) -> bool:
    a, b = _to_sympy(gold), _to_sympy(pred)
    if a is None or b is None:
        return False
    import sympy

    try:
        if sympy.simplify(a - b) == 0:
            return True
        diff = complex(sympy.N(a - b, 30))
        scale = max(1.0, abs(complex(sympy.N(a, 30))))
        return abs(diff) <= 1e-9 * scale
    except (TypeError, ValueError, ArithmeticError, AttributeError, sympy.SympifyError):
        return False


def _to_sympy(text: str):
    plain = _latex_to_plain(text)
    if plain is None or not _SAFE_CHARS.match(plain) or _HUGE_EXPONENT_LITERAL.search(plain):
        return None
    names = set(re.findall(r"[A-Za-z]{2,}", plain))
    if not names <= set(_SAFE_NAMES):
        return None
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    namespace: dict[str, Any] = {name: getattr(sympy, name) for name in ("sqrt", "pi", "sin", "cos", "tan",
                                                                          "log", "exp", "oo")}
    namespace["ln"] = sympy.log
    for letter in set(re.findall(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])", plain)):
        namespace[letter] = sympy.Symbol(letter)
    global_dict: dict[str, Any] = {"__builtins__": {}}
    for name in ("Integer", "Float", "Rational", "Symbol", "Function", "Add", "Mul", "Pow", "Tuple"):
        global_dict[name] = getattr(sympy, name)
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    try:
        # evaluate=False first: 2^(10^10) must be refused before sympy computes it in C, where
        # no signal can interrupt it.
        tree = parse_expr(plain, local_dict=namespace, global_dict=global_dict,
                          transformations=transformations, evaluate=False)
        if _too_big(tree):
            return None
        return parse_expr(plain, local_dict=namespace, global_dict=global_dict,
                          transformations=transformations)
    except Exception:  # parse_expr raises a zoo of types on malformed input
        return None


def _too_big(expr) -> bool:
    """Powers with a large or nested exponent: evaluating them could take minutes and gigabytes."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow):
            exponent = node.exp
            if exponent.has(sympy.Pow) or (exponent.is_Number and abs(exponent) > 1000):
                return True
    return False


def _latex_to_plain(text: str) -> str | None:
    """A light LaTeX -> sympy-syntax rewrite for the fallback; None if it has LaTeX left over."""
    s = normalize_answer(text)
    for _ in range(5):  # nested \frac / \sqrt, innermost first
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("\\infty", "oo")
    s = s.replace("{", "(").replace("}", ")")
    return None if "\\" in s else s


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")


def normalize_answer(text: str) -> str:
    """A conservative canonical form for a quick exact match (no sympy): spacing, \\left/\\right,
    \\dfrac, degrees, percent, dollars, \\text{} wrappers and a trailing period do not matter."""
    s = text.strip()
    s = _TEXT_WRAPPERS.sub(r"\1", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""),
                     ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\displaystyle", ""),
                     ("^{\\circ}", ""), ("^\\circ", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("$", "")):
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s
