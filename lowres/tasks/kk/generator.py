"""Seeded random Knights & Knaves puzzles with exactly one solution.

Each person gets one random statement; a draw whose statements admit zero or several consistent
assignments is thrown away and redrawn (the solver makes that check cheap), as mem-kk-logic does.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from lowres.tasks.kk.logic import (
    AND,
    EXACTLY,
    IFF,
    IMPLIES,
    KNAVE,
    KNIGHT,
    LIE,
    NOT,
    OR,
    TRUTH,
    Expr,
)
from lowres.tasks.kk.names import COMMON_NAMES
from lowres.tasks.kk.solver import unique_solution

MIN_PEOPLE, MAX_PEOPLE = 2, 8
MAX_DEPTH = 4

# How often each top-level kind is drawn. "person" (X is a knight/knave) is the bare claim.
KIND_WEIGHTS: dict[str, float] = {
    "person": 1.5, NOT: 1.0, AND: 1.0, OR: 1.0, IMPLIES: 1.0, IFF: 1.0, EXACTLY: 0.6,
}
_KINDS = tuple(KIND_WEIGHTS)
_KIND_CUM = tuple(accumulate(KIND_WEIGHTS.values()))
_COMPOUND_KINDS = (NOT, AND, OR, IMPLIES, IFF)  # what a nested argument that is not a leaf can be
_COMPOUND_CUM = tuple(accumulate(KIND_WEIGHTS[k] for k in _COMPOUND_KINDS))
# Below the top level most leaves are claims about one person; counting claims stay rarer there.
LEAF_COUNTING_P = 0.1
# At depth > 1, the chance that a connective's argument is itself compound (else a leaf).
NESTED_P = 0.5


@dataclass(frozen=True)
class Puzzle:
    """One puzzle: person i is called names[i], says statements[i], and is a knight iff solution[i].

    `quiz` keeps the original wording when the puzzle was read from a data set (None when generated;
    render.render_quiz writes one).
    """

    names: list[str]
    statements: list[Expr]
    solution: tuple[bool, ...]
    id: str
    quiz: str | None = None

    @property
    def n(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly row; `statements` is the Logic-RL style Python-literal string."""
        return {
            "id": self.id,
            "names": list(self.names),
            "statements": repr(tuple(self.statements)),
            "solution": list(self.solution),
            "quiz": self.quiz,
        }


def puzzle_id(names: Sequence[str], statements: Sequence[Expr]) -> str:
    """A stable id from the content: 'kk-<n>p-<10 hex digits>'."""
    digest = hashlib.sha1(repr((tuple(names), tuple(statements))).encode()).hexdigest()
    return f"kk-{len(names)}p-{digest[:10]}"


def _as_rng(rng: random.Random | int | str | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


# One rng.random() per choice (not randrange/choices): sampling dominates generation time.
def _person_claim(rng: random.Random, n: int) -> Expr:
    k = int(rng.random() * 2 * n)
    return (TRUTH if k & 1 else LIE, k >> 1)


def _counting_claim(rng: random.Random, n: int) -> Expr:
    k = int(rng.random() * 2 * (n + 1))
    return (EXACTLY, k >> 1, KNAVE if k & 1 else KNIGHT)


def _draw_kind(rng: random.Random, compound: bool) -> str:
    kinds, cum = (_COMPOUND_KINDS, _COMPOUND_CUM) if compound else (_KINDS, _KIND_CUM)
    return kinds[bisect_right(cum, rng.random() * cum[-1])]


def _leaf(rng: random.Random, n: int) -> Expr:
    return _counting_claim(rng, n) if rng.random() < LEAF_COUNTING_P else _person_claim(rng, n)


def _argument(rng: random.Random, n: int, depth: int) -> Expr:
    """An argument of a connective that may nest `depth` more levels."""
    if depth <= 0 or rng.random() >= NESTED_P:
        return _leaf(rng, n)
    return random_statement(rng, n, depth, compound=True)


def random_statement(rng: random.Random, n: int, depth: int = 1, compound: bool = False) -> Expr:
    """One random statement about n people, nesting at most `depth` connectives.

    depth=1 gives Logic-RL's shapes: a claim about one person, its negation, two such claims joined
    by and/or/->/<=>, or a counting claim. `compound` forces a connective at the top.
    """
    if depth <= 0:
        return _leaf(rng, n)
    kind = _draw_kind(rng, compound)
    if kind == "person":
        return _person_claim(rng, n)
    if kind == EXACTLY:
        return _counting_claim(rng, n)
    if kind == NOT:
        inner = _person_claim(rng, n) if depth == 1 else _argument(rng, n, depth - 1)
        while inner[0] == NOT:  # "it is not the case that ... not ..." reads badly; redraw
            inner = _argument(rng, n, depth - 1)
        return (NOT, inner)
    draw = (lambda: _person_claim(rng, n)) if depth == 1 else (lambda: _argument(rng, n, depth - 1))
    left, right = draw(), draw()
    while right == left:  # "A if and only if A" says nothing about the puzzle; redraw
        right = draw()
    return (kind, left, right)


def _check_size(n_people: int, depth: int) -> None:
    if not MIN_PEOPLE <= n_people <= MAX_PEOPLE:
        raise ValueError(f"puzzles have {MIN_PEOPLE}..{MAX_PEOPLE} people, got {n_people}")
    if not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"depth must be 0..{MAX_DEPTH}, got {depth}")


def generate_puzzle(n_people: int, rng: random.Random | int | None = None, depth: int = 1,
                    max_tries: int = 100_000) -> Puzzle:
    """A random puzzle for `n_people` (2..8) with exactly one solution.

    `rng` is a random.Random (advanced in place) or a seed; the same seed gives the same puzzle.
    `depth` bounds nesting (1 = Logic-RL's shapes; 2+ nests connectives inside connectives).
    """
    _check_size(n_people, depth)
    rng = _as_rng(rng)
    names = rng.sample(COMMON_NAMES, n_people)
    for _ in range(max_tries):
        statements = [random_statement(rng, n_people, depth) for _ in range(n_people)]
        solution = unique_solution(statements, n_people)
        if solution is not None:
            return Puzzle(names, statements, solution, puzzle_id(names, statements))
    raise RuntimeError(f"no uniquely solvable {n_people}-person puzzle in {max_tries} draws")


# Consecutive repeats after which the distinct puzzles of the asked sizes count as used up (2-person
# puzzles run out after a few thousand).
SATURATION_MISSES = 500


def generate_puzzles(count: int, n_people: int | Iterable[int] = 3, seed: int | str = 0, depth: int = 1,
                     distinct: bool = True, allow_fewer: bool = False) -> list[Puzzle]:
    """`count` puzzles from one seeded stream; reproducible: the same arguments give the same list.

    n_people: a size, or sizes (a list or range) to draw from uniformly per puzzle.
    distinct: skip a puzzle whose statements repeat an earlier one's (names aside).
    allow_fewer: when the distinct puzzles run out, return those found instead of raising.
    """
    sizes = [n_people] if isinstance(n_people, int) else list(n_people)
    if not sizes:
        raise ValueError("n_people is empty")
    for size in sizes:
        _check_size(size, depth)
    rng = random.Random(seed)
    puzzles: list[Puzzle] = []
    seen: set[tuple[Expr, ...]] = set()
    misses = 0
    while len(puzzles) < count:
        if misses >= SATURATION_MISSES:
            if allow_fewer:
                break
            raise ValueError(f"could not draw {count} distinct puzzles of {sizes} people at depth {depth} "
                             f"(found {len(puzzles)})")
        puzzle = generate_puzzle(rng.choice(sizes), rng, depth)
        key = tuple(puzzle.statements)
        if distinct and key in seen:
            misses += 1
            continue
        misses = 0
        seen.add(key)
        puzzles.append(puzzle)
    return puzzles
