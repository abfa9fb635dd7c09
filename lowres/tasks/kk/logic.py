"""Knights & Knaves statements in the Logic-RL tuple form, and their truth values.

People are numbered 0..n-1. An assignment is a tuple of bools, True = knight. A statement is a tuple:

    ('telling-truth', i)        person i is a knight
    ('lying', i)                person i is a knave
    ('not', e)                  e is false
    ('and', a, b), ('or', a, b)
    ('->', a, b)                if a then b
    ('<=>', a, b)               a if and only if b
    ('exactly', k, 'knave')     exactly k of the n people (speaker included) are knaves
    ('exactly', k, 'knight')    exactly k of the n people are knights

The first seven are exactly Logic-RL's (and mem-kk-logic's) forms, so its `statements` column maps 1:1;
'exactly' is our counting extension ("Exactly one of us is a knave"). A puzzle is consistent under an
assignment iff every person's statement evaluates to that person's role: knights say true things,
knaves false ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Expr = tuple  # recursive tuple, see the module docstring

TRUTH = "telling-truth"
LIE = "lying"
NOT = "not"
AND = "and"
OR = "or"
IMPLIES = "->"
IFF = "<=>"
EXACTLY = "exactly"
KNIGHT = "knight"
KNAVE = "knave"

BINARY_OPS = (AND, OR, IMPLIES, IFF)
ATOM_OPS = (TRUTH, LIE)
# Names for what a statement is "about", used by the generator and the tests.
STATEMENT_KINDS = ("person", NOT, AND, OR, IMPLIES, IFF, EXACTLY)


def evaluate(expr: Expr, assignment: Sequence[bool]) -> bool:
    """The truth value of `expr` when person i is a knight iff assignment[i]."""
    op = expr[0]
    if op == TRUTH:
        return bool(assignment[expr[1]])
    if op == LIE:
        return not assignment[expr[1]]
    if op == NOT:
        return not evaluate(expr[1], assignment)
    if op == AND:
        return evaluate(expr[1], assignment) and evaluate(expr[2], assignment)
    if op == OR:
        return evaluate(expr[1], assignment) or evaluate(expr[2], assignment)
    if op == IMPLIES:
        return (not evaluate(expr[1], assignment)) or evaluate(expr[2], assignment)
    if op == IFF:
        return evaluate(expr[1], assignment) == evaluate(expr[2], assignment)
    if op == EXACTLY:
        knights = sum(1 for a in assignment if a)
        count = knights if expr[2] == KNIGHT else len(assignment) - knights
        return count == expr[1]
    raise ValueError(f"unknown operator {op!r} in {expr!r}")


def evaluate_partial(expr: Expr, partial: Sequence[bool | None]) -> bool | None:
    """Three-valued (Kleene) truth of `expr` when some roles are unknown (None).

    Returns True/False when the known roles already settle it, None otherwise. Sound but not
    complete: 'A is a knight or A is a knave' with A unknown gives None, not True.
    """
    op = expr[0]
    if op == TRUTH:
        return partial[expr[1]]
    if op == LIE:
        v = partial[expr[1]]
        return None if v is None else not v
    if op == NOT:
        v = evaluate_partial(expr[1], partial)
        return None if v is None else not v
    if op == EXACTLY:
        knights = sum(1 for a in partial if a is True)
        knaves = sum(1 for a in partial if a is False)
        known = knights if expr[2] == KNIGHT else knaves
        unknown = len(partial) - knights - knaves
        k = expr[1]
        if known > k or known + unknown < k:
            return False
        return True if unknown == 0 else None
    a = evaluate_partial(expr[1], partial)
    b = evaluate_partial(expr[2], partial)
    if op == AND:
        if a is False or b is False:
            return False
        return True if a is True and b is True else None
    if op == OR:
        if a is True or b is True:
            return True
        return False if a is False and b is False else None
    if op == IMPLIES:
        if a is False or b is True:
            return True
        return False if a is True and b is False else None
    if op == IFF:
        return None if a is None or b is None else a == b
    raise ValueError(f"unknown operator {op!r} in {expr!r}")


def is_consistent(statements: Sequence[Expr], assignment: Sequence[bool]) -> bool:
    """Whether every person's statement is true exactly when that person is a knight."""
    return all(evaluate(s, assignment) == bool(assignment[i]) for i, s in enumerate(statements))


def people_in(expr: Expr, n: int) -> set[int]:
    """The people whose role can change the statement's truth (counting mentions everyone)."""
    op = expr[0]
    if op in ATOM_OPS:
        return {expr[1]}
    if op == EXACTLY:
        return set(range(n))
    if op == NOT:
        return people_in(expr[1], n)
    return people_in(expr[1], n) | people_in(expr[2], n)


def depth(expr: Expr) -> int:
    """Nesting depth: 0 for 'X is a knight' and counting claims, 1 for one connective, and so on."""
    op = expr[0]
    if op in ATOM_OPS or op == EXACTLY:
        return 0
    return 1 + max(depth(child) for child in expr[1:])


def kind(expr: Expr) -> str:
    """The statement's top-level kind: 'person' (X is a knight/knave) or the operator."""
    return "person" if expr[0] in ATOM_OPS else expr[0]


def normalize(expr: Any, n: int) -> Expr:
    """`expr` as nested tuples (JSON gives lists), checked against n people; ValueError if malformed."""
    if not isinstance(expr, (tuple, list)) or not expr:
        raise ValueError(f"a statement must be a non-empty tuple, got {expr!r}")
    op = expr[0]
    if op in ATOM_OPS:
        if len(expr) != 2 or not _is_index(expr[1], n):
            raise ValueError(f"bad person reference {expr!r} (people are 0..{n - 1})")
        return (op, int(expr[1]))
    if op == NOT:
        if len(expr) != 2:
            raise ValueError(f"'not' takes one argument: {expr!r}")
        return (NOT, normalize(expr[1], n))
    if op in BINARY_OPS:
        if len(expr) != 3:
            raise ValueError(f"{op!r} takes two arguments: {expr!r}")
        return (op, normalize(expr[1], n), normalize(expr[2], n))
    if op == EXACTLY:
        if len(expr) != 3 or not _is_index(expr[1], n + 1) or expr[2] not in (KNIGHT, KNAVE):
            raise ValueError(f"counting claims look like ('exactly', k, 'knave'|'knight'), got {expr!r}")
        return (EXACTLY, int(expr[1]), expr[2])
    raise ValueError(f"unknown operator {op!r} in {expr!r}")


def _is_index(value: Any, bound: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < bound
