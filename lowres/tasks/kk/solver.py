"""All consistent knight/knave assignments of a puzzle, by evaluating every assignment at once.

Each statement is turned into its truth table over the 2^n assignments, held as one Python int whose
bit `a` is set when the statement is true under assignment `a` (person i is a knight iff bit i of `a`
is set). 'and'/'or'/'not' are then single big-int operations, so a whole 8-person puzzle costs a few
dozen int operations instead of 256 x 8 tree walks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from lowres.tasks.kk.logic import AND, EXACTLY, IFF, IMPLIES, KNIGHT, LIE, NOT, OR, TRUTH, Expr

MAX_PEOPLE = 16  # 2^16-bit tables are still cheap; puzzles use 2..8


@cache
def _tables(n: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(all-ones mask, per-person 'is a knight' tables, per-k 'exactly k knights' tables) for n people."""
    if not 1 <= n <= MAX_PEOPLE:
        raise ValueError(f"puzzles have 1..{MAX_PEOPLE} people, got {n}")
    size = 1 << n
    full = (1 << size) - 1
    knight = [0] * n
    exactly = [0] * (n + 1)
    for a in range(size):
        bit = 1 << a
        for i in range(n):
            if a >> i & 1:
                knight[i] |= bit
        exactly[a.bit_count()] |= bit
    return full, tuple(knight), tuple(exactly)


def truth_table(expr: Expr, n: int) -> int:
    """Bit a of the result is set iff `expr` is true under assignment a (bit i of a = person i)."""
    full, knight, exactly = _tables(n)
    return _table(expr, n, full, knight, exactly)


def _table(expr: Expr, n: int, full: int, knight: tuple[int, ...], exactly: tuple[int, ...]) -> int:
    op = expr[0]
    if op == TRUTH:
        return knight[expr[1]]
    if op == LIE:
        return full ^ knight[expr[1]]
    if op == NOT:
        return full ^ _table(expr[1], n, full, knight, exactly)
    if op == EXACTLY:
        k = expr[1]
        if not 0 <= k <= n:
            return 0
        return exactly[k] if expr[2] == KNIGHT else exactly[n - k]
    a = _table(expr[1], n, full, knight, exactly)
    b = _table(expr[2], n, full, knight, exactly)
    if op == AND:
        return a & b
    if op == OR:
        return a | b
    if op == IMPLIES:
        return (full ^ a) | b
    if op == IFF:
        return full ^ (a ^ b)
    raise ValueError(f"unknown operator {op!r} in {expr!r}")


def consistent_mask(statements: Sequence[Expr], n: int) -> int:
    """Bit a is set iff assignment a makes every knight's statement true and every knave's false."""
    full, knight, exactly = _tables(n)
    if len(statements) != n:
        raise ValueError(f"{n} people need {n} statements, got {len(statements)}")
    mask = full
    for i, statement in enumerate(statements):
        # speaker i is a knight <=> statement i is true
        mask &= full ^ (knight[i] ^ _table(statement, n, full, knight, exactly))
        if not mask:
            break
    return mask


def _assignment(a: int, n: int) -> tuple[bool, ...]:
    return tuple(bool(a >> i & 1) for i in range(n))


def solve(statements: Sequence[Expr], n: int) -> list[tuple[bool, ...]]:
    """Every consistent assignment (True = knight), in increasing order of its bit encoding."""
    mask = consistent_mask(statements, n)
    solutions = []
    while mask:
        low = mask & -mask
        solutions.append(_assignment(low.bit_length() - 1, n))
        mask ^= low
    return solutions


def count_solutions(statements: Sequence[Expr], n: int) -> int:
    """How many assignments are consistent."""
    return consistent_mask(statements, n).bit_count()


def unique_solution(statements: Sequence[Expr], n: int) -> tuple[bool, ...] | None:
    """The solution if there is exactly one, else None."""
    mask = consistent_mask(statements, n)
    if mask and not mask & (mask - 1):
        return _assignment(mask.bit_length() - 1, n)
    return None
