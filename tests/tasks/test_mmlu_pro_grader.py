"""The MMLU-Pro grader: letter extraction and the random-guess convention."""

import time

import pytest

from lowres.tasks.mmlu_pro import MMLUProTask, extract_letter, random_guess_correct

ROW = {"id": "70", "answer": "C", "answer_index": 2, "options": [str(i) for i in range(10)], "category": "math"}
TASK = MMLUProTask()

# (completion, letter, formatted)
TABLE = [
    ("<think> ... </think> <answer> \\boxed{C} </answer>", "C", True),
    ("<answer>\\boxed{\\text{C}}</answer>", "C", True),
    ("<answer>\\boxed{(C)}</answer>", "C", True),
    ("<answer>\\boxed{C. 2}</answer>", "C", True),
    ("\\boxed{A} no wait \\boxed{C}", "C", True),  # the last box
    ("<answer>C</answer>", "C", True),
    ("<answer> (C) </answer>", "C", True),
    ("<answer>C) because</answer>", "C", True),
    ("<answer>The answer is (C).</answer>", "C", True),
    ("<answer>B", "B", True),  # cut off before </answer>
    ("I am unsure, maybe B or C", "C", False),  # the last standalone letter
    ("<answer>\\boxed{Both}</answer> so B", "B", False),
    ("no letters here", None, False),
    ("", None, False),
    ("<answer>\\boxed{K}</answer>", None, False),
]


@pytest.mark.parametrize(("completion", "letter", "formatted"), TABLE)
def test_extract_letter(completion, letter, formatted):
    assert extract_letter(completion) == (letter, formatted)


def test_score_right_wrong_unformatted():
    assert TASK.score("<answer>\\boxed{C}</answer>", ROW).reward == 1.0
    wrong = TASK.score("<answer>\\boxed{D}</answer>", ROW)
    assert (wrong.formatted, wrong.correct, wrong.reward) == (True, False, 0.0)
    lenient = TASK.score("I guess C", ROW)
    assert (lenient.formatted, lenient.correct, lenient.reward) == (False, True, 0.0)
    unparseable = TASK.score("no idea", ROW)
    assert (unparseable.correct, unparseable.extracted) == (False, None)


def test_random_guess_convention():
    rows = [{**ROW, "id": str(i)} for i in range(2000)]
    hits = [random_guess_correct(row, seed=0) for row in rows]
    assert hits == [random_guess_correct(row, seed=0) for row in rows]  # deterministic
    assert hits != [random_guess_correct(row, seed=1) for row in rows]
    assert 0.06 < sum(hits) / len(hits) < 0.14  # about 1 in 10 options
    guessing = MMLUProTask(random_guess=True)
    scores = [guessing.score("no idea", row) for row in rows]
    assert [s.correct for s in scores] == hits
    assert all(s.reward == 0.0 for s in scores)  # a guess never earns reward
    assert TASK.random_guess_correct(rows[0]) == hits[0]


def test_prompt_lists_options_and_asks_for_a_letter():
    messages = TASK.prompt({**ROW, "question": "What is 1+1?"})
    text = messages[-1]["content"]
    assert "A. 0" in text and "J. 9" in text and "\\boxed{X}" in text and "What is 1+1?" in text


@pytest.mark.parametrize("template", ["\\boxed{{{ws}{end}}}", "<answer>answer is{ws}{end}</answer>",
                                      "<answer>\\text{{{ws}{end}</answer>",
                                      "<answer>The answer is:{ws}({ws}{end}</answer>"])
def test_long_whitespace_is_read_in_linear_time(template):
    """Found by fuzzing: `\\s*\\(?\\s*` backtracked over every split of a whitespace run (cubic: 2 s
    for 1,000 spaces, hours for more). The letter is still read past whitespace."""
    start = time.monotonic()
    assert extract_letter(template.format(ws=" " * 3_000, end="x")) == (None, False)  # was ~1 min
    assert time.monotonic() - start < 2.0
    assert extract_letter(template.format(ws=" \n\t ", end="C")) == ("C", True)
