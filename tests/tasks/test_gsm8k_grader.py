"""The GSM8K grader: final-number extraction and exact numeric comparison."""

import pytest

from lowres.tasks.answers import parse_number
from lowres.tasks.gsm8k import GSM8KTask, extract_answer, gold_answer

TASK = GSM8KTask()


def test_gold_answer():
    assert gold_answer("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == "18"
    assert gold_answer("...\n#### 1,080") == "1080"
    assert gold_answer("...\n#### -3") == "-3"
    assert gold_answer("no marker 5") is None


# (gold, completion, formatted, correct)
TABLE = [
    ("18", "<think> 16-3-4=9, 9*2=18 </think> <answer> \\boxed{18} </answer>", True, True),
    ("1234", "<answer>\\boxed{1,234}</answer>", True, True),
    ("5", "<answer>\\boxed{\\$5}</answer>", True, True),
    ("5", "<answer>$5</answer>", True, True),
    ("-7", "<answer>\\boxed{-7}</answer>", True, True),
    ("2.5", "<answer>\\boxed{2.50}</answer>", True, True),
    ("18", "<answer>\\boxed{18.0}</answer>", True, True),
    ("18", "<answer>\\boxed{18 \\text{ dollars}}</answer>", True, True),
    ("18", "<answer>She makes 18 dollars a day.</answer>", True, True),
    ("18", "<answer>\\boxed{17}</answer>", True, False),
    ("18", "<answer>\\boxed{-18}</answer>", True, False),
    ("18", "\\boxed{18} is what I first thought but <answer>19</answer>", True, True),  # box first
    ("18", "so the answer is 18", False, True),  # right but unformatted: last number
    ("18", "18 eggs... no wait, 20", False, False),
    ("18", "<answer>eighteen</answer>", False, False),
    ("18", "", False, False),
    ("1000000", "<answer>\\boxed{1,000,000}</answer>", True, True),
    ("1000000", "<answer>\\boxed{1,000,001}</answer>", True, False),
]


@pytest.mark.parametrize(("gold", "completion", "formatted", "correct"), TABLE)
def test_gsm8k_score_table(gold, completion, formatted, correct):
    score = TASK.score(completion, {"answer": gold})
    assert (score.formatted, score.correct) == (formatted, correct)
    assert score.reward == (1.0 if formatted and correct else 0.0)


def test_extract_answer_priority():
    assert extract_answer("<answer>3</answer> \\boxed{4}") == ("4", True)
    assert extract_answer("<answer>3 apples</answer> then 9") == ("3", True)
    assert extract_answer("nothing at all") == (None, False)
    assert extract_answer(None) == (None, False)


def test_long_numbers_do_not_crash_the_grader():
    """Found by fuzzing: a number of 29+ digits raised decimal.InvalidOperation (the default
    28-digit context rounded it, then quantize failed), crashing the reward on any such completion."""
    long = "1" * 35
    score = TASK.score(f"<answer>\\boxed{{{long}}}</answer>", {"answer": long})
    assert (score.formatted, score.correct, score.extracted) == (True, True, long)
    assert parse_number("9" * 99) == "9" * 99  # exact, not rounded to 28 digits
    assert parse_number("-" + "1" * 40 + ".50") == "-" + "1" * 40 + ".5"
    assert parse_number("0." + "1" * 60) == "0." + "1" * 60
    assert parse_number("1e999999999") == "1E+999999999"  # no overflow; too big to write out
    assert parse_number("-0.00") == "0"
    assert TASK.score("so " + "1" * 29, {"answer": "5"}).extracted == "1" * 29
