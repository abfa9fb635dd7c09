"""The MATH grader: \\boxed extraction, math-verify equivalence, time limits."""

import threading
import time

import pytest

from lowres.tasks.answers import last_boxed
from lowres.tasks.base import RewardValues
from lowres.tasks.math import MathTask, math_equal, normalize_answer


def r1(answer: str) -> str:
    return f"<think> working </think> <answer> The answer is \\boxed{{{answer}}}. </answer>"


TASK = MathTask(timeout_s=2.0)

# (gold, completion, formatted, correct)
TABLE = [
    ("0.5", r1(r"\frac{1}{2}"), True, True),
    (r"\frac{1}{2}", r1(r"\dfrac12"), True, True),
    (r"\frac{1}{2}", r1("0.5"), True, True),
    (r"\frac{\sqrt{3}}{2}", r1(r"\frac{1}{2}\sqrt{3}"), True, True),
    ("[1,2)", r1("[1, 2)"), True, True),
    ("[1,2)", r1("(1, 2)"), True, False),  # open vs half-open interval
    (r"(-\infty, 3]", r1(r"(-\infty,3]"), True, True),
    (r"\{1, 2\}", r1(r"\{2, 1\}"), True, True),
    ("(1,2)", r1("(2,1)"), True, False),  # an ordered pair is not a set
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r1(r"\begin{pmatrix}1\\2\end{pmatrix}"), True, True),
    ("3", r1("x = 3"), True, True),
    (r"2\pi", r1("2*pi"), True, True),  # answers written as code: the sympy fallback
    ("x^2", r1("x**2"), True, True),
    (r"90^\circ", r1("90"), True, True),
    (r"\text{(C)}", r1("C"), True, True),
    ("1000", r1("1,000"), True, True),
    ("12", r1("13"), True, False),
    (r"\left( 3, \frac{\pi}{2} \right)", r1(r"(3, \frac{\pi}{2})"), True, True),
    ("5", r"\boxed{3} hmm, no: \boxed{5}", True, True),  # two boxes: the last counts
    ("3", r"\boxed{3} hmm, no: \boxed{5}", True, False),
    ("5", r"\fbox{5}", True, True),
    ("5", "<think> 2+3 </think> <answer> 5 </answer>", False, True),  # right, but no box
    ("5", "I think it is 5", False, False),
    ("5", r"\boxed{5", False, False),  # unclosed box
    ("5", "", False, False),
    ("5", r1(r"9^{9^{9^{9}}}"), True, False),  # must not hang
    ("5", r1("100000!"), True, False),
    ("5", r1(r"(10^{8})!"), True, False),
    ("5", r1("2**10**10"), True, False),  # refused before sympy computes it
    ("5", r1("{" * 300 + "5" + "}" * 300), True, False),  # too long to be an answer
    ("5", r1("1e999999999"), True, False),  # sympy made 10**999999999 in C while parsing: hung
    ("5", r1("2E-99999"), True, False),
]


@pytest.mark.parametrize(("gold", "completion", "formatted", "correct"), TABLE)
def test_math_score_table(gold, completion, formatted, correct):
    score = TASK.score(completion, {"answer": gold})
    assert (score.formatted, score.correct) == (formatted, correct)
    assert score.reward == (1.0 if formatted and correct else 0.0)


def test_reward_values_are_configurable():
    task = MathTask(rewards=RewardValues(correct=2.0, wrong=-0.5, unformatted=-1.0))
    assert task.score(r1("4"), {"answer": "4"}).reward == 2.0
    assert task.score(r1("3"), {"answer": "4"}).reward == -0.5
    assert task.score("4", {"answer": "4"}).reward == -1.0


def test_extracted_is_the_box_content():
    assert TASK.score(r1(r"\frac{1}{2}"), {"answer": "0.5"}).extracted == r"\frac{1}{2}"
    assert TASK.score("nothing", {"answer": "1"}).extracted is None


def test_normalize_answer():
    assert normalize_answer(r"\left( 1, 2 \right).") == "(1,2)"
    assert normalize_answer(r"\dfrac{1}{2}") == r"\frac{1}{2}"
    assert normalize_answer(r"50\%") == "50"


def test_math_equal_rejects_non_strings():
    assert not math_equal("1", None)
    assert not math_equal(None, "1")
    assert not math_equal("1", "   ")


def test_math_equal_off_the_main_thread():
    """Signals only work on the main thread: elsewhere the check runs in a killable worker."""
    cases = [("0.5", r"\frac{1}{2}", True), ("2", "3", False), ("5", r"9^{9^{9^{9}}}", False), ("x^2", "x**2", True)]
    results = {}

    def work():
        for gold, pred, _ in cases:
            results[(gold, pred)] = math_equal(gold, pred, timeout_s=1.0)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert results == {(gold, pred): want for gold, pred, want in cases}


def test_a_completion_repeating_an_unclosed_box_is_graded_quickly():
    """Found by fuzzing: each of N unclosed \\boxed{ was scanned to the end of the text (minutes
    for 1 MB); the earlier boxes that stay unclosed are now known without rescanning."""
    for completion in (r"\boxed{" * 150_000, r"\boxed $" * 150_000, r"\fbox{" * 70_000 + r"\boxed{" * 70_000,
                       r"\boxed{5}" + r"\boxed{" * 150_000):
        start = time.monotonic()
        score = TASK.score(completion, {"answer": "5"})
        assert time.monotonic() - start < 5.0
        assert score.formatted == completion.startswith(r"\boxed{5}")
    # The shortcut keeps the answers: the last box that closes, braces balanced.
    assert last_boxed(r"\boxed{1} \boxed{2 \boxed{3} \boxed{") == "3"
    assert last_boxed(r"\boxed{1} \boxed{2 \boxed{") == "1"
    assert last_boxed(r"\boxed{a{b} \boxed{") is None
    assert last_boxed(r"\boxed{a{b}} \boxed{") == "a{b}"
