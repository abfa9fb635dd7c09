"""The reward: format rule, answer reading, reward values, and no crash on hostile text."""

import time

import pytest

from lowres.tasks.base import Score
from lowres.tasks.kk.generator import generate_puzzles
from lowres.tasks.kk.render import load_logic_rl, puzzle_from_logic_rl
from lowres.tasks.kk.verify import KKRewards, extract_answer, parse_answer, score_completion

NAMES = ["Michael", "Zoey", "Ethan"]
SOLUTION = {"names": NAMES, "solution": [True, False, True]}
GOLD = "(1) Michael is a knight\n(2) Zoey is a knave\n(3) Ethan is a knight"


def wrap(answer, think="Let me think."):
    return f"<think>{think}</think>\n<answer>\n{answer}\n</answer>"


def test_logic_rl_solution_text_is_correct_and_a_flip_is_wrong(benchmark_data):
    pytest.importorskip("pyarrow")
    rows = load_logic_rl(benchmark_data.path / "knights_knaves" / "logic_rl", split=None, as_rows=True)
    assert len(rows) == benchmark_data.pick(40, 5000)
    for row in rows:
        puzzle = puzzle_from_logic_rl(row)
        good = score_completion(wrap(row["solution_text_format"]), puzzle)
        assert good == Score(True, True, 2.0, row["solution_text_format"])
        assert score_completion(wrap(row["solution_text_format"]), row["solution_text_format"]).correct
        lines = row["solution_text_format"].split("\n")
        flip = 1 if "knight" in lines[1] else 0
        lines[1] = lines[1].replace("knight", "knave") if flip else lines[1].replace("knave", "knight")
        bad = score_completion(wrap("\n".join(lines)), puzzle)
        assert (bad.formatted, bad.correct, bad.reward) == (True, False, -0.5)


VARIANTS = [
    # (completion, reward)
    (wrap(GOLD), 2.0),
    (wrap(GOLD.lower()), 2.0),
    (wrap(GOLD.upper()), 2.0),
    (wrap("1. Michael is a knight\n2. Zoey is a knave\n3. Ethan is a knight"), 2.0),
    (wrap("Michael is a knight, Zoey is a knave, and Ethan is a knight."), 2.0),
    (wrap("(1) Michael is a knight.\n(2) Zoey is a knave.\n(3) Ethan is a knight."), 2.0),
    (wrap("  Michael   is a knight ;\n\n Zoey is a  knave;  Ethan is a knight!  "), 2.0),
    (wrap("Michael and Ethan are knights, and Zoey is a knave."), 2.0),
    (wrap("Michael: knight\nZoey: knave\nEthan: knight"), 2.0),
    (wrap("- **Michael** is a knight\n- **Zoey** is a knave\n- **Ethan** is a knight"), 2.0),
    (wrap("The identities are:\n" + GOLD), 2.0),
    (wrap("Zoey is not a knight\nMichael is a knight\nEthan is a knight"), 2.0),
    ("</think><answer>" + GOLD + "</answer>", 2.0),  # <think> prefilled by the chat template
    (wrap(GOLD) + "<|im_end|>", 2.0),  # trailing end-of-turn token
    (wrap("(1) Michael is a knight\n(2) Zoey is a knight\n(3) Ethan is a knight"), -0.5),
    (wrap("(1) Michael is a knave\n(2) Zoey is a knight\n(3) Ethan is a knave"), -0.5),
    (wrap("(1) Michael is a knight\n(2) Zoey is a knave"), -1.0),  # missing person
    (wrap(GOLD + "\n(4) Bob is a knight"), -1.0),  # unknown name
    (wrap("(1) Michael is a knight\n(2) Zoey is a spy\n(3) Ethan is a knight"), -1.0),  # unknown role
    (wrap(GOLD + "\n(4) Zoey is a knight"), -1.0),  # contradicts itself
    (wrap("Zoey, Michael"), -1.0),  # names without roles
    (wrap(""), -1.0),
    ("<think>x\n<answer>" + GOLD + "</answer>", -2.0),  # missing </think>
    (wrap(GOLD) + "\n<answer>" + GOLD + "</answer>", -2.0),  # two <answer> blocks
    ("<answer>" + GOLD + "</answer><think>x</think>", -2.0),  # answer before think
    ("<think>x</think>" + GOLD, -2.0),  # no answer tags
    ("<think>a</think><think>b</think>" + "<answer>" + GOLD + "</answer>", -2.0),
    ("</think><think>x<answer>" + GOLD + "</answer>", -2.0),  # <think> after </think>
    ("<think>x</think><answer>" + GOLD + "</ANSWER>", -2.0),  # tags are case-sensitive
]


@pytest.mark.parametrize(("completion", "reward"), VARIANTS)
def test_variants(completion, reward):
    score = score_completion(completion, SOLUTION)
    assert score.reward == reward
    assert score.correct == (reward == 2.0)
    assert score.formatted == (reward != -2.0)
    assert (score.extracted is None) == (reward == -2.0)


def test_targets_in_every_form_and_custom_rewards():
    completion = wrap(GOLD)
    for target in [SOLUTION, {"Michael": True, "Zoey": False, "Ethan": True}, GOLD]:
        assert score_completion(completion, target).correct
    puzzle = generate_puzzles(1, 4, seed=0)[0]
    assert not score_completion(completion, puzzle).correct
    rewards = KKRewards(correct=1.0, wrong=0.0, unparseable=-0.25, bad_format=-1.0)
    assert score_completion(completion, SOLUTION, rewards).reward == 1.0
    assert score_completion("nothing", SOLUTION, rewards).reward == -1.0
    with pytest.raises(TypeError):
        score_completion(completion, 42)


def test_parse_answer():
    assert parse_answer(GOLD, NAMES) == {"Michael": True, "Zoey": False, "Ethan": True}
    assert parse_answer("michael is a knight", NAMES) == {"Michael": True}
    assert parse_answer("Nobody knows", NAMES) is None
    assert parse_answer("Michael is a knight and a knave", NAMES) is None
    assert extract_answer("x</think> <answer> A </answer>") == " A "
    assert extract_answer("<answer>A</answer>") is None


HOSTILE = [
    "",
    "a" * 5_000_000,
    "<answer>" * 1_000_000,
    "</answer>" * 300_000 + "</think>",
    "<think><think></think></think><answer><answer></answer></answer>",
    "<think>" + "<answer>" * 10 + "</think>" + "</answer>" * 10,
    "</think><answer>" + "Michael is a knight and " * 200_000 + "</answer>",
    "</think><answer>" + " " * 90_000 + "is a" + "</answer>",
    "</think><answer>" + "is " * 33_000 + "</answer>",
    "</think><answer>" + "a," * 49_000 + "</answer>",
    "</think><answer>" + "(1)" * 30_000 + "</answer>",
    "</think><answer>\u202eEthan is a knight\u202c 😀\x00 Zoey\u200b is a knave</answer>",
    "</think><answer>Мichael is a knight\nZoey is a knave\nEthan is a knight</answer>",  # Cyrillic М
    "\x00" * 1000 + "</think><answer>\x00</answer>",
    "<think></think><answer></answer>",
    "</think></answer><answer>",
    "<answer></answer></think>",
    "\ud800 lone surrogate </think><answer>Zoey</answer>",
    "</think><answer>" + "Michael " * 12_000 + "</answer>",
    "</think><answer>" + ("knight " * 10 + "\n") * 5_000 + "</answer>",
]


@pytest.mark.parametrize("completion", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_completions_never_raise_and_stay_fast(completion):
    start = time.perf_counter()
    score = score_completion(completion, SOLUTION)
    assert time.perf_counter() - start < 1.0
    assert isinstance(score, Score) and not score.correct
    assert score.reward in (-2.0, -1.0)


def test_non_string_completions_are_bad_format():
    for completion in [None, b"</think><answer>x</answer>", 3, ["</think>"]]:
        assert score_completion(completion, SOLUTION).reward == -2.0
