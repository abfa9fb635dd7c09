"""The HumanEval+ grader: code extraction, and the real tests run in the sandbox."""

import pytest

from lowres.tasks.humaneval_plus import HumanEvalPlusTask, build_program, extract_code, fix_known_test_bugs


@pytest.fixture
def rows(data_dir):
    """The HumanEval+ tasks in the fixtures, by id (those the tests below name)."""
    return {row["id"]: row for row in HumanEvalPlusTask().load("test")}


def fenced(code: str) -> str:
    return f"<think> plan </think> <answer>\n```python\n{code}\n```\n</answer>"


@pytest.mark.parametrize(
    ("completion", "code", "formatted"),
    [
        ("```python\ndef f():\n    return 1\n```", "def f():\n    return 1\n", True),
        ("```py\nx = 1\n```", "x = 1\n", True),
        ("```python\nfirst\n```\ntext\n```python\nsecond\n```", "second\n", True),  # the last block
        ("```\nplain = 1\n```", "plain = 1\n", True),
        ("```python\ncut off by the token li", "cut off by the token li", True),
        ("<answer>def f(): return 1</answer>", "def f(): return 1", False),
        ("def f(): return 1", "def f(): return 1", False),
        (None, "", False),
    ],
)
def test_extract_code(completion, code, formatted):
    assert extract_code(completion) == (code, formatted)


def test_humaneval_32_test_is_fixed():
    row = {"test": "    for i, (inp, exp) in enumerate(zip(inputs, results)):\n"
                   "        assert _poly(*candidate(*inp), inp) <= 0.0001\n"}
    assert "abs(_poly(*inp, candidate(*inp))) <= 0.0001" in fix_known_test_bugs(row)["test"]
    untouched = {"test": "assert True"}
    assert fix_known_test_bugs(untouched) is untouched


def test_all_canonical_solutions_pass(benchmark_data):
    task = HumanEvalPlusTask()
    ordered = task.load("test")
    assert len(ordered) == benchmark_data.pick(8, 164)
    scores = task.score_many([fenced(row["answer"]) for row in ordered], ordered)
    failed = [row["id"] for row, score in zip(ordered, scores, strict=True) if not score.correct]
    assert failed == []
    assert all(score.formatted and score.reward == 1.0 for score in scores)


def test_body_only_completion_passes(rows):
    row = rows["HumanEval/0"]
    assert HumanEvalPlusTask().score(fenced(row["canonical_solution"]), row).correct


@pytest.mark.parametrize(
    ("task_id", "code"),
    [
        ("HumanEval/0", "def has_close_elements(numbers, threshold):\n    return None"),
        ("HumanEval/2", "def truncate_number(number):\n    return number"),
        # Off by one: HumanEval/23 strlen.
        ("HumanEval/23", "def strlen(string):\n    return len(string) + 1"),
        # Off by one: HumanEval/55 fib, shifted index.
        ("HumanEval/55", "def fib(n):\n    a, b = 0, 1\n    for _ in range(n + 1):\n"
                         "        a, b = b, a + b\n    return a"),
        # Right on the base tests, wrong on a plus input: HumanEval/32 returning a root only for x=0.
        ("HumanEval/32", "def find_zero(xs):\n    return 0.0"),
        ("HumanEval/4", "import sys\ndef mean_absolute_deviation(numbers):\n    sys.exit(0)"),
        ("HumanEval/7", "def filter_by_substring(strings, substring):\n    while True:\n        pass"),
        ("HumanEval/12", "this is not python"),
    ],
)
def test_wrong_solutions_fail(rows, task_id, code):
    task = HumanEvalPlusTask(timeout_s=3.0)
    score = task.score(fenced(code), rows[task_id])
    assert score.formatted and not score.correct and score.reward == 0.0


def test_build_program_runs_prompt_code_test_and_check(rows):
    row = rows["HumanEval/23"]
    program = build_program("def strlen(s):\n    return len(s)", row)
    assert program.startswith(row["prompt"]) and program.rstrip().endswith("check(strlen)")


def test_reward_in_a_grpo_dataset_where_prompt_is_chat_messages(rows):
    """GRPO datasets replace `prompt` with messages and TRL drops it from the reward's columns."""
    from lowres.rewards import task_reward

    task = HumanEvalPlusTask()
    picked = [rows["HumanEval/0"], rows["HumanEval/23"]]
    columns = {key: [row[key] for row in picked] for key in picked[0] if key != "prompt"}
    reward = task_reward(task)
    out = reward(
        prompts=[task.prompt(row) for row in picked],
        completions=[[{"role": "assistant", "content": fenced(row["answer"])}] for row in picked],
        **columns,
    )
    assert out == [1.0, 1.0] and reward.errors == 0
