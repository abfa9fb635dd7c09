"""Wording both ways, and the whole Logic-RL data set read back exactly."""

import ast
import json
from functools import cache
from pathlib import Path

import pytest

from lowres.errors import UserError
from lowres.tasks.kk.generator import Puzzle, generate_puzzles
from lowres.tasks.kk.render import (
    SPEECH_TEMPLATES,
    load_logic_rl,
    parse_quiz,
    parse_statement,
    puzzle_from_logic_rl,
    render_quiz,
    render_solution,
    render_statement,
)
from lowres.tasks.kk.solver import solve

# Rows per Logic-RL file (<N>ppl/{train,test}.parquet, N = 3..7): in the fixtures, and in the full set.
FIXTURE_ROWS, FULL_TRAIN_ROWS, FULL_TEST_ROWS = 4, 900, 100


@cache
def _read_logic_rl(folder: Path) -> list[dict]:
    return load_logic_rl(folder, split=None, as_rows=True)


def logic_rl_rows(data_path: Path) -> list[dict]:
    """Every row of the Logic-RL files in the benchmark data folder `data_path`, read once per folder."""
    pytest.importorskip("pyarrow")
    return _read_logic_rl(data_path / "knights_knaves" / "logic_rl")


def test_render_statement_wording():
    names = ["Michael", "Zoey", "Ethan"]
    cases = {
        ("<=>", ("telling-truth", 2), ("telling-truth", 0)):
            "Ethan is a knight if and only if Michael is a knight",
        ("or", ("telling-truth", 1), ("lying", 2)): "Zoey is a knight or Ethan is a knave",
        ("->", ("telling-truth", 0), ("telling-truth", 2)): "If Michael is a knight then Ethan is a knight",
        ("not", ("telling-truth", 1)): "Zoey is not a knight",
        ("not", ("lying", 1)): "Zoey is not a knave",
        ("exactly", 1, "knave"): "Exactly one of us is a knave",
        ("exactly", 2, "knight"): "Exactly two of us are knights",
        ("exactly", 0, "knave"): "None of us is a knave",
        ("exactly", 3, "knave"): "All of us are knaves",
        ("and", ("or", ("lying", 0), ("lying", 1)), ("lying", 2)):
            "(Michael is a knave or Zoey is a knave) and Ethan is a knave",
        ("not", ("and", ("lying", 0), ("lying", 1))):
            "It is not the case that (Michael is a knave and Zoey is a knave)",
    }
    for expr, text in cases.items():
        assert render_statement(expr, names) == text
        assert parse_statement(text, names) == expr
        assert parse_statement(text.lower() + ".", names) == expr


def test_render_quiz_and_solution():
    puzzle = Puzzle(["Michael", "Zoey", "Ethan"],
                    [("<=>", ("telling-truth", 2), ("telling-truth", 0)),
                     ("or", ("telling-truth", 1), ("telling-truth", 2)),
                     ("<=>", ("lying", 0), ("lying", 1))], (True, True, True), "x")
    quiz = render_quiz(puzzle, 0)
    assert quiz.startswith("A very special island is inhabited only by knights and knaves. Knights always "
                           "tell the truth, and knaves always lie. "
                           "You meet 3 inhabitants: Michael, Zoey, and Ethan. ")
    assert quiz.endswith(" So who is a knight and who is a knave?")
    assert '"Ethan is a knight if and only if Michael is a knight' in quiz
    assert render_quiz(puzzle, 0) == render_quiz(puzzle, 0)
    assert len({render_quiz(puzzle, seed) for seed in range(20)}) > 10
    assert render_solution(puzzle) == "(1) Michael is a knight\n(2) Zoey is a knight\n(3) Ethan is a knight"


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_generated_quizzes_parse_back(depth):
    for i, p in enumerate(generate_puzzles(300, range(2, 9), seed=20 + depth, depth=depth)):
        assert parse_quiz(render_quiz(p, i)) == (p.names, p.statements)


def test_every_speech_template_parses():
    names = ["Ava", "Leo"]
    statements = [("->", ("telling-truth", 1), ("lying", 0)), ("exactly", 1, "knave")]
    for template in SPEECH_TEMPLATES:
        from lowres.tasks.kk.render import render_utterance

        body = " ".join(render_utterance(template, names[i], s, names) for i, s in enumerate(statements))
        quiz = f"You meet 2 inhabitants: Ava and Leo. {body} So who is a knight and who is a knave?"
        assert parse_quiz(quiz) == (names, statements), quiz


def test_logic_rl_every_row_parses_uniquely_with_the_dataset_solution(benchmark_data):
    rows = logic_rl_rows(benchmark_data.path)
    count = benchmark_data.pick(10 * FIXTURE_ROWS, 5 * (FULL_TRAIN_ROWS + FULL_TEST_ROWS))
    assert len(rows) == count
    puzzles = [puzzle_from_logic_rl(row) for row in rows]
    assert sorted({p.n for p in puzzles}) == [3, 4, 5, 6, 7]
    for row, puzzle in zip(rows, puzzles, strict=True):
        assert solve(puzzle.statements, puzzle.n) == [tuple(row["solution"])]
        assert puzzle.solution == tuple(row["solution"])
        assert render_solution(puzzle) == row["solution_text_format"]
        assert puzzle.quiz == row["quiz"]
    assert len({p.id for p in puzzles}) == count


def test_logic_rl_quiz_text_parser_agrees_with_statements_column(benchmark_data):
    for row in logic_rl_rows(benchmark_data.path):
        names, statements = parse_quiz(row["quiz"])
        assert names == list(row["names"])
        assert tuple(statements) == ast.literal_eval(row["statements"]), row["quiz"]


def test_logic_rl_row_without_statements_reads_the_quiz(data_dir):
    row = dict(logic_rl_rows(data_dir)[13])
    expected = puzzle_from_logic_rl(row)
    for key in ("statements", "reward_model", "names", "solution"):
        row.pop(key)
    assert puzzle_from_logic_rl(row).statements == expected.statements
    assert puzzle_from_logic_rl(row).solution == expected.solution


def test_load_logic_rl_splits_and_files(benchmark_data):
    pytest.importorskip("pyarrow")
    logic_rl = benchmark_data.path / "knights_knaves" / "logic_rl"
    per_train, per_test = benchmark_data.pick((FIXTURE_ROWS, FIXTURE_ROWS), (FULL_TRAIN_ROWS, FULL_TEST_ROWS))
    train = load_logic_rl(logic_rl)
    test = load_logic_rl(logic_rl, split="test")
    assert (len(train), len(test)) == (5 * per_train, 5 * per_test)
    assert [p.n for p in test[::per_test]] == [3, 4, 5, 6, 7]
    one = load_logic_rl(logic_rl / "5ppl" / "test.parquet")
    assert len(one) == per_test and one[0].id.startswith("logic_rl-5ppl-test-")


def test_jsonl_files_load(tmp_path):
    puzzles = generate_puzzles(5, 4, seed=1)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in puzzles))
    assert load_logic_rl(path) == puzzles
    assert load_logic_rl(tmp_path) == puzzles


@pytest.mark.parametrize("row", [
    {"quiz": "nonsense"},
    {"names": ["A", "B"], "statements": "(('telling-truth', 0),"},
    {"names": ["A", "B"], "statements": "(('telling-truth', 5), ('lying', 0))"},
    {"names": ["A", "B"], "statements": "__import__('os')"},
    {"names": ["A"], "statements": "(('lying', 0),)"},  # no solution
    {"names": ["A", "B"], "statements": "(('telling-truth', 1), ('telling-truth', 0))"},  # two solutions
    {"names": ["A", "B"], "statements": "(('lying', 1), ('lying', 0))", "solution": [True, True]},
    {"quiz": "You meet 2 inhabitants: Ava and Leo. Ava said, \"Bob is a knight.\" So who is a knight?"},
    {"quiz": "You meet 2 inhabitants: Ava and Leo. Ava hummed. So who is a knight and who is a knave?"},
])
def test_unreadable_rows_raise_one_line_user_error(row):
    with pytest.raises(UserError) as err:
        puzzle_from_logic_rl(row)
    assert "\n" not in str(err.value)


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        load_logic_rl(tmp_path / "nowhere")
    with pytest.raises(UserError):
        load_logic_rl(tmp_path)  # a folder with no split files
