"""Statements, the fast solver, and uniqueness of generated puzzles, each checked by brute force."""

import itertools
import random

import pytest

from lowres.tasks.kk.generator import generate_puzzles, random_statement
from lowres.tasks.kk.logic import depth, evaluate, evaluate_partial, is_consistent, kind, normalize, people_in
from lowres.tasks.kk.solver import count_solutions, solve, truth_table, unique_solution


def brute_force(statements, n):
    """Every consistent assignment by plain enumeration with logic.evaluate (independent of solver)."""
    return [a for a in itertools.product([True, False], repeat=n) if is_consistent(statements, a)]


def test_evaluate_each_operator():
    a = (True, False, True)  # 0 knight, 1 knave, 2 knight
    assert evaluate(("telling-truth", 0), a) and not evaluate(("telling-truth", 1), a)
    assert evaluate(("lying", 1), a) and not evaluate(("lying", 2), a)
    assert evaluate(("not", ("lying", 0)), a)
    assert not evaluate(("and", ("telling-truth", 0), ("telling-truth", 1)), a)
    assert evaluate(("or", ("telling-truth", 1), ("telling-truth", 2)), a)
    assert not evaluate(("->", ("telling-truth", 0), ("telling-truth", 1)), a)
    assert evaluate(("->", ("telling-truth", 1), ("lying", 0)), a)  # false antecedent
    assert evaluate(("<=>", ("lying", 1), ("telling-truth", 2)), a)
    assert evaluate(("exactly", 1, "knave"), a) and evaluate(("exactly", 2, "knight"), a)
    assert not evaluate(("exactly", 0, "knave"), a)


def test_logic_rl_example_puzzle():
    # Logic-RL 3ppl train row 1: Michael, Mason, Jacob -> knight, knave, knight
    statements = [("not", ("telling-truth", 1)), ("and", ("telling-truth", 0), ("lying", 2)),
                  ("->", ("telling-truth", 0), ("telling-truth", 2))]
    assert solve(statements, 3) == [(True, False, True)]
    assert unique_solution(statements, 3) == (True, False, True)


def test_liar_paradox_has_no_solution_and_tautology_two():
    assert solve([("lying", 0)], 1) == []  # "I am a knave"
    assert count_solutions([("telling-truth", 0)], 1) == 2  # "I am a knight"
    assert unique_solution([("telling-truth", 0)], 1) is None


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_truth_table_matches_evaluate(n):
    rng = random.Random(n)
    for _ in range(50):
        expr = random_statement(rng, n, depth=3) if n >= 2 else ("exactly", rng.randrange(2), "knave")
        table = truth_table(expr, n)
        for a in range(1 << n):
            assignment = tuple(bool(a >> i & 1) for i in range(n))
            assert bool(table >> a & 1) == evaluate(expr, assignment)


@pytest.mark.parametrize("depth_", [0, 1, 2, 3])
def test_solver_agrees_with_brute_force_on_random_statements(depth_):
    rng = random.Random(depth_)
    for _ in range(300):
        n = rng.randint(2, 5)
        statements = [random_statement(rng, n, depth_) for _ in range(n)]
        assert sorted(solve(statements, n)) == sorted(brute_force(statements, n))


@pytest.mark.parametrize("n", range(2, 9))
def test_generated_puzzles_have_exactly_one_solution(n):
    for puzzle in generate_puzzles(1000, n, seed=100 + n):
        assert brute_force(puzzle.statements, n) == [puzzle.solution], puzzle


def test_evaluate_partial_is_sound():
    """Whenever three-valued evaluation commits to a value, every completion agrees with it."""
    rng = random.Random(7)
    for _ in range(400):
        n = rng.randint(2, 5)
        expr = random_statement(rng, n, depth=2)
        partial = [rng.choice([True, False, None]) for _ in range(n)]
        value = evaluate_partial(expr, partial)
        if value is None:
            continue
        open_ = [i for i, v in enumerate(partial) if v is None]
        for fill in itertools.product([True, False], repeat=len(open_)):
            full = list(partial)
            for i, v in zip(open_, fill, strict=True):
                full[i] = v
            assert evaluate(expr, full) == value


def test_normalize_depth_kind_people():
    expr = normalize(["and", ["telling-truth", 0], ["not", ["lying", 2]]], 3)
    assert expr == ("and", ("telling-truth", 0), ("not", ("lying", 2)))
    assert depth(expr) == 2 and kind(expr) == "and" and people_in(expr, 3) == {0, 2}
    assert kind(("lying", 1)) == "person" and depth(("exactly", 1, "knave")) == 0
    assert people_in(("exactly", 1, "knave"), 3) == {0, 1, 2}
    for bad in [("telling-truth", 3), ("maybe", 0), ("and", ("lying", 0)), ("exactly", 5, "knave"), (), "x",
                ("telling-truth", True)]:
        with pytest.raises(ValueError):
            normalize(bad, 3)
