"""Solver-written chains of thought: always graded correct, varied, longer for bigger puzzles."""

import re
import statistics

import pytest

from lowres.tasks.kk.generator import Puzzle, generate_puzzles
from lowres.tasks.kk.render import render_solution, render_statement
from lowres.tasks.kk.traces import trace_example, write_trace
from lowres.tasks.kk.verify import score_completion

TRACE_FORMAT = re.compile(r"<think>\n(.+)\n</think>\n<answer>\n(.+)\n</answer>", re.DOTALL)


@pytest.fixture(scope="module")
def puzzles():
    # 500 puzzles of 2..8 people, mostly Logic-RL shapes, some nested deeper
    return generate_puzzles(400, range(2, 9), seed=31) + generate_puzzles(100, range(2, 9), seed=32, depth=3)


def test_every_trace_grades_correct(puzzles):
    for i, puzzle in enumerate(puzzles):
        trace = write_trace(puzzle, seed=i)
        score = score_completion(trace, puzzle)
        assert score.correct and score.reward == 2.0, trace
        match = TRACE_FORMAT.fullmatch(trace)
        assert match and match.group(2) == render_solution(puzzle)
        assert "</think>" not in match.group(1) and "<answer>" not in match.group(1)


def test_traces_reason_step_by_step(puzzles):
    traces = [write_trace(p, seed=0) for p in puzzles]
    joined = "\n".join(traces)
    for marker in ["uppose", "ontradiction", "must be a", "double-check", "Wait,", "Hmm", "So "]:
        assert marker in joined, marker
    for puzzle, trace in zip(puzzles, traces, strict=True):
        # each statement is listed at the start and re-checked at the end, inside the reasoning
        reasoning = TRACE_FORMAT.fullmatch(trace).group(1)
        for statement in puzzle.statements:
            assert reasoning.count(f'"{render_statement(statement, puzzle.names)}"') >= 2


def test_seeds_change_the_wording(puzzles):
    for puzzle in puzzles[:50]:
        variants = {write_trace(puzzle, seed=s) for s in range(4)}
        assert len(variants) >= 3
    assert write_trace(puzzles[0], seed=7) == write_trace(puzzles[0], seed=7)


def test_longer_for_more_people(puzzles):
    lengths = {n: [] for n in range(2, 9)}
    for i, puzzle in enumerate(puzzles):
        lengths[puzzle.n].append(len(write_trace(puzzle, seed=i)))
    means = [statistics.mean(lengths[n]) for n in range(2, 9)]
    assert means == sorted(means), means
    assert means[-1] > 2 * means[0]


def test_brief_traces_skip_the_restatement_but_keep_the_search_and_the_check(puzzles):
    for i, puzzle in enumerate(puzzles[:200]):
        brief = write_trace(puzzle, seed=i, brief=True)
        score = score_completion(brief, puzzle)
        assert score.correct and score.reward == 2.0, brief
        reasoning = TRACE_FORMAT.fullmatch(brief).group(1)
        assert re.search("knight|knave", reasoning.splitlines()[-2])  # the final re-check, statement by statement
        for statement in puzzle.statements:  # quoted in the search or the check, not listed up front
            assert reasoning.count(f'"{render_statement(statement, puzzle.names)}"') >= 1
        assert "only one" not in brief and "other branches" not in brief
        assert not any(line.startswith(("- ", "1. ")) for line in brief.splitlines()[:4])  # no list of claims
    two = [p for p in puzzles if p.n == 2]
    ratio = statistics.mean(len(write_trace(p, seed=0, brief=True)) / len(write_trace(p, seed=0)) for p in two)
    assert ratio < 0.85, ratio


def test_trace_example():
    puzzle = generate_puzzles(1, 4, seed=3)[0]
    example = trace_example(puzzle, seed=1)
    assert set(example) == {"prompt_question", "completion", "puzzle_id", "solution_text"}
    assert example["puzzle_id"] == puzzle.id
    assert example["solution_text"] == render_solution(puzzle)
    assert example["prompt_question"].endswith("So who is a knight and who is a knave?")
    assert score_completion(example["completion"], puzzle).correct
    with_quiz = Puzzle(puzzle.names, puzzle.statements, puzzle.solution, puzzle.id, quiz="Original text?")
    assert trace_example(with_quiz)["prompt_question"] == "Original text?"


def test_puzzles_without_a_unique_solution_are_refused():
    two = Puzzle(["Ava", "Leo"], [("telling-truth", 0), ("telling-truth", 1)], (True, True), "two")
    with pytest.raises(ValueError):
        write_trace(two)
    wrong = Puzzle(["Ava", "Leo"], [("lying", 1), ("lying", 0)], (True, True), "wrong")
    with pytest.raises(ValueError):
        write_trace(wrong)
