"""Long chains of thought written from a search a careful person would do by hand.

The search: first see whether any statement settles its speaker's role on its own; then take the
undecided people in turn, suppose one is a knight (or a knave), and follow what the statements force
(a speaker's role fixes whether their statement is true, and a statement's truth can fix the role of
someone it mentions). A contradiction sends the search back to try the other role; a full assignment
with no broken statement ends it. Some traces then make sure no other assignment works, and every
trace re-checks each statement against the final assignment before answering.

Forcing uses three-valued logic over the roles known so far (logic.evaluate_partial): it only draws
conclusions that are certain, so every sentence the trace writes is true.

Each step type has several phrasings, chosen with the seed, so the traces are not one template.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from itertools import product
from typing import Any

from lowres.tasks.kk.generator import Puzzle
from lowres.tasks.kk.logic import ATOM_OPS, BINARY_OPS, EXACTLY, KNIGHT, NOT, Expr, evaluate, evaluate_partial
from lowres.tasks.kk.render import render_quiz, render_solution, render_statement
from lowres.tasks.kk.solver import solve

Partial = list  # list[bool | None]: a role per person, None while undecided

# Chance the search tries "knight" first when it supposes something (else "knave").
KNIGHT_FIRST_P = 0.65
# Chance a trace goes on, after finding the answer, to rule out every other assignment.
UNIQUENESS_CHECK_P = 0.5
# A statement still open under three-valued logic is tried exhaustively over at most this many people.
MAX_CASES = 3


def _role(knight: bool) -> str:
    return "knight" if knight else "knave"


def _tv(value: bool) -> str:
    return "true" if value else "false"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _mentioned(expr: Expr) -> set[int]:
    """People named in the statement (counting claims name nobody)."""
    if expr[0] in ATOM_OPS:
        return {expr[1]}
    if expr[0] == EXACTLY:
        return set()
    return set().union(*(_mentioned(child) for child in expr[1:]))


def _has_counting(expr: Expr) -> bool:
    if expr[0] == EXACTLY:
        return True
    return expr[0] not in ATOM_OPS and any(_has_counting(child) for child in expr[1:])


class _Narrator:
    """Runs the search on one puzzle and writes down each step in words."""

    def __init__(self, puzzle: Puzzle, rng: random.Random, brief: bool = False):
        self.rng = rng
        self.brief = brief
        self.names = list(puzzle.names)
        self.statements = list(puzzle.statements)
        self.n = len(self.names)
        self.text = [render_statement(s, self.names) for s in self.statements]
        self.mentions = [_mentioned(s) for s in self.statements]
        self.counting = [_has_counting(s) for s in self.statements]
        # constraint i involves its speaker and everyone its statement can depend on
        self.involves = [[i] + sorted((set(range(self.n)) if self.counting[i] else self.mentions[i]) - {i})
                         for i in range(self.n)]
        # statements to re-examine when person j's role becomes known: j's own first
        self.watchers = [[j] + [k for k in range(self.n) if k != j and j in self.involves[k]]
                         for j in range(self.n)]
        self.lines: list[str] = []
        self.assumptions: list[tuple[int, bool]] = []
        self.last_forced: tuple[int, int] | None = None  # (statement, line count) of the last forcing step
        self.dead_end_said = False  # a failed search just blamed the supposition above it

    # --- wording helpers -----------------------------------------------------------------------------

    def say(self, *options: str, **fields: Any) -> None:
        self.lines.append(self.rng.choice(options).format(**fields))

    def pick(self, *options: str) -> str:
        return self.rng.choice(options)

    def quote(self, i: int) -> str:
        return f'"{self.text[i]}"'

    def facts(self, i: int, partial: Partial, skip: int | None = None, absolute: bool = False) -> str:
        """What is known that bears on statement i: 'Zoey is a knave and Ethan is a knight', or with
        absolute=True 'Zoey a knave and Ethan a knight' (to follow "with")."""
        verb = " " if absolute else " is "
        known = [f"{self.names[k]}{verb}a {_role(partial[k])}" for k in sorted(self.mentions[i])
                 if k != skip and partial[k] is not None]
        if self.counting[i]:
            knights = sum(1 for v in partial if v is True)
            knaves = sum(1 for v in partial if v is False)
            tally = [f"{knights} {'knight' if knights == 1 else 'knights'}",
                     f"{knaves} {'knave' if knaves == 1 else 'knaves'}"]
            if self.n - knights - knaves:
                tally.append(f"{self.n - knights - knaves} undecided")
            known.append(("the count so far at " if absolute else "the count so far is ") + ", ".join(tally))
        return _join(known)

    def context(self) -> str:
        """' (still assuming A is a knight and B is a knave)' for the current suppositions, or ''."""
        if not self.assumptions:
            return ""
        if self.rng.random() < 0.5:
            parts = [f"{self.names[j]} a {_role(v)}" for j, v in self.assumptions]
            return f" (with {_join(parts)} assumed)"
        parts = [f"{self.names[j]} is a {_role(v)}" for j, v in self.assumptions]
        return self.pick(" (still assuming {})", " (given that {})").format(_join(parts))

    # --- search --------------------------------------------------------------------------------------

    def undecided_in(self, i: int, partial: Partial) -> list[int]:
        """The undecided people statement i depends on."""
        return [k for k in self.involves[i]
                if partial[k] is None and (self.counting[i] or k in self.mentions[i])]

    def truth(self, i: int, partial: Partial) -> bool | None:
        """Statement i's truth when the known roles settle it, else None.

        Three-valued evaluation first; when that is undecided and at most MAX_CASES people are open, try
        their roles exhaustively, so self-defeating claims ("Chloe is a knight if and only if Chloe is a
        knave") are seen through the way a person would.
        """
        value = evaluate_partial(self.statements[i], partial)
        if value is not None:
            return value
        open_ = self.undecided_in(i, partial)
        if len(open_) > MAX_CASES:
            return None
        values = set()
        full = list(partial)
        for roles in product((True, False), repeat=len(open_)):
            for k, role in zip(open_, roles, strict=True):
                full[k] = role
            values.add(evaluate(self.statements[i], full))
            if len(values) > 1:
                return None
        return values.pop()

    def whatever(self, i: int, partial: Partial) -> str:
        """' whatever role Chloe has' when the statement's value holds for every role of the people still
        open in it but three-valued reading alone would not show it; else ''."""
        if evaluate_partial(self.statements[i], partial) is not None:
            return ""
        open_ = [self.names[k] for k in self.undecided_in(i, partial)]
        if not open_:
            return ""
        if len(open_) == 1:
            return f" whatever role {open_[0]} has"
        return f" whatever roles {_join(open_)} have"

    def constraint(self, i: int, partial: Partial) -> bool | None:
        """Whether speaker i's role agrees with the truth of their statement (None: not settled)."""
        speaker = partial[i]
        if speaker is None:
            return None
        value = self.truth(i, partial)
        return None if value is None else value == speaker

    def constraint_if(self, i: int, partial: Partial, j: int, value: bool) -> bool | None:
        saved = partial[j]
        partial[j] = value
        result = self.constraint(i, partial)
        partial[j] = saved
        return result

    def propagate(self, partial: Partial, queue: deque[int]) -> bool:
        """Follow every role the statements force; False (after saying why) on a contradiction."""
        queued = set(queue)
        while queue:
            i = queue.popleft()
            queued.discard(i)
            settled = self.constraint(i, partial)
            if settled is False:
                self.contradiction(i, partial)
                return False
            if settled is True:
                continue
            for j in self.involves[i]:
                if partial[j] is not None:
                    continue
                can_be_knight = self.constraint_if(i, partial, j, True) is not False
                can_be_knave = self.constraint_if(i, partial, j, False) is not False
                if not can_be_knight and not can_be_knave:
                    self.no_role_fits(i, j, partial)
                    return False
                if can_be_knight != can_be_knave:
                    self.forced(i, j, can_be_knight, partial)
                    partial[j] = can_be_knight
                    for k in self.watchers[j]:
                        if k not in queued:
                            queue.append(k)
                            queued.add(k)
                    if i not in queued:  # statement i may force more now
                        queue.append(i)
                        queued.add(i)
                    break
        return True

    def search(self, partial: Partial, path: list[tuple[int, bool, Partial]]) -> Partial | None:
        """Depth-first over the undecided people in order; records on `path` each successful choice."""
        j = next((k for k in range(self.n) if partial[k] is None), None)
        if j is None:
            return partial
        first = self.rng.random() < KNIGHT_FIRST_P
        for attempt, value in enumerate((first, not first)):
            trial = list(partial)
            trial[j] = value
            if attempt == 0:
                self.suppose(j, value)
            else:
                self.only_option(j, value)
            self.assumptions.append((j, value))
            self.dead_end_said = False
            ok = self.propagate(trial, deque(self.watchers[j]))
            result = self.search(trial, path) if ok else None
            self.assumptions.pop()
            if result is not None:
                if attempt == 0:
                    path.insert(0, (j, not value, partial))
                return result
            self.ruled_out(j, value, second=attempt == 1, already_said=self.dead_end_said)
        return None

    # --- narration of steps --------------------------------------------------------------------------

    def suppose(self, j: int, value: bool) -> None:
        if self.assumptions:
            self.say("{x} is still undecided{ctx}.", "Nothing is settled about {x} yet{ctx}.",
                     "Next up is {x}{ctx}.", x=self.names[j], ctx=self.context())
        lead = self.pick("", "", "So ", "Now ") if self.assumptions else self.pick("", "", "So ")
        body = self.pick("suppose {x} is a {r}.", "let's assume {x} is a {r}.", "what if {x} is a {r}?",
                         "let me try {x} as a {r}.", "assume {x} is a {r}.", "consider {x} being a {r}.")
        sentence = body.format(x=self.names[j], r=_role(value))
        self.lines.append(lead + sentence if lead else sentence[0].upper() + sentence[1:])

    def only_option(self, j: int, value: bool) -> None:
        self.say("So {x} must be a {r}{ctx}.", "Then {x} has to be a {r}{ctx}.",
                 "The only option left is that {x} is a {r}{ctx}.",
                 "So {x} is a {r}{ctx}. Let me follow that.",
                 x=self.names[j], r=_role(value), ctx=self.context())

    def ruled_out(self, j: int, value: bool, second: bool, already_said: bool) -> None:
        """Say that supposing person j has role `value` failed. already_said: the step below this one
        has just said so (its dead end blamed this supposition)."""
        x, r = self.names[j], _role(value)
        self.dead_end_said = False
        if not second:
            if not already_said:
                self.say("So {x} cannot be a {r}.", "That rules out {x} being a {r}.",
                         "So the assumption that {x} is a {r} was wrong.", "So {x} is not a {r}.",
                         x=x, r=r)
            return
        if not self.assumptions:  # cannot happen for a puzzle with a solution
            self.say("So {x} can't be a {r} either.", x=x, r=r)
            return
        prev, prev_value = self.assumptions[-1]
        p, pr = self.names[prev], _role(prev_value)
        if already_said:
            self.say("Neither role works for {x}, so {p} cannot be a {pr}.",
                     "So {x} fits neither role, which means {p} is not a {pr}.", x=x, p=p, pr=pr)
        else:
            self.say("So {x} can't be a {r} either. Neither role works for {x}, which means the assumption "
                     "that {p} is a {pr} must be wrong.",
                     "Hmm, {x} can't be a {r} either. With no role left for {x}, {p} cannot be a {pr}.",
                     "Wait, that fails too: {x} is neither a knight nor a knave here. So {p} being a {pr} "
                     "is impossible.",
                     x=x, r=r, p=p, pr=pr)
        self.dead_end_said = True

    def forced(self, i: int, j: int, value: bool, partial: Partial) -> None:
        speaker, target = self.names[i], self.names[j]
        if j != i:
            truth = partial[i]
            facts = self.facts(i, partial, skip=j)
            if self.last_forced == (i, len(self.lines)):  # the same statement again: no need to restate
                self.say("The same statement also needs {x} to be a {r}{since}.",
                         "{s}'s statement also forces {x} to be a {r}{since}.",
                         "And for it to be {tv}, {x} must be a {r}{since}.",
                         s=speaker, x=target, r=_role(value), tv=_tv(truth),
                         since=f", since {facts}" if facts else "")
                self.last_forced = (i, len(self.lines))
                return
            self.say("{s} is a {r}, so {s}'s statement {q} must be {tv}.",
                     "As a {r}, {s} {verb}, so {q} is {tv}.",
                     "{s} being a {r} means {q} is {tv}.",
                     "Since {s} is a {r}, what {s} said, {q}, has to be {tv}.",
                     s=speaker, r=_role(truth), q=self.quote(i), tv=_tv(truth),
                     verb="tells the truth" if truth else "lies")
            other = list(partial)
            other[j] = not value
            whatever = self.whatever(i, other)
            if whatever:
                self.say("If {x} were a {o}, {q} would be {ntv}{w}. So {x} must be a {r}.",
                         "With {x} a {o}, the statement would be {ntv}{w}; so {x} is a {r}.",
                         x=target, o=_role(not value), q=self.quote(i), ntv=_tv(not truth), w=whatever,
                         r=_role(value))
            elif facts:
                self.say("With {af}, that forces {x} to be a {r}.", "Given that {f}, {x} must be a {r}.",
                         "Since {f}, the only way for that is {x} being a {r}.",
                         "We know {f}, so {x} has to be a {r}.",
                         f=facts, af=self.facts(i, partial, skip=j, absolute=True), x=target, r=_role(value))
            else:
                self.say("That forces {x} to be a {r}.", "So {x} must be a {r}.", "Hence {x} is a {r}.",
                         x=target, r=_role(value))
            if not whatever and self.rng.random() < 0.35:
                self.say("(If {x} were a {o}, the statement would be {ntv}.)",
                         "Otherwise, with {x} a {o}, it would be {ntv}.",
                         x=target, o=_role(not value), ntv=_tv(not truth))
            self.last_forced = (i, len(self.lines))
            return
        # the statement's truth settles the speaker's own role
        verb = "tells the truth" if value else "lies"
        if i not in self.mentions[i] and not self.counting[i]:
            whatever = self.whatever(i, partial)
            if whatever:
                self.say("Look at {s}: {q}. That statement is {tv}{w}. So {s} {verb} and is a {r}.",
                         "{s} said {q}, which is {tv}{w}. So {s} must be a {r}.",
                         s=speaker, q=self.quote(i), tv=_tv(value), w=whatever, r=_role(value), verb=verb)
                return
            self.say("{f}, so {s}'s statement {q} is {tv}. That means {s} is a {r}.",
                     "Look at {s}: {q}. Since {f}, that statement is {tv}, so {s} {verb} and is a {r}.",
                     "{s} said {q}, which is {tv} because {f}. So {s} must be a {r}.",
                     f=self.facts(i, partial, skip=j), s=speaker, q=self.quote(i), tv=_tv(value),
                     r=_role(value), verb=verb)
            self.lines[-1] = self.lines[-1][0].upper() + self.lines[-1][1:]
            return
        facts = self.facts(i, partial, skip=j, absolute=True)
        other = list(partial)
        other[i] = not value
        self.say("Look at {s}'s statement {q}{given}. If {s} were a {o}, it would be {tv}{w}, and a {o} "
                 "never says anything {tv}. So {s} must be a {r}.",
                 "Consider what {s} said: {q}{given}. As a {o}, {s} would be making a {tv} statement{w}, "
                 "which a {o} cannot do. So {s} is a {r}.",
                 s=speaker, q=self.quote(i), o=_role(not value), tv=_tv(value), r=_role(value),
                 given=f", with {facts}" if facts else "", w=self.whatever(i, other))

    def contradiction(self, i: int, partial: Partial) -> None:
        speaker, truth = self.names[i], partial[i]
        facts = self.facts(i, partial)
        lead = self.pick("But ", "Wait, ", "Hmm, but ", "Now there's a problem: ", "But then ")
        body = self.pick(
            "{s} is a {r}, so {q} should be {tv}; yet {with_f}it is {ntv}. That's a contradiction.",
            "{s} is a {r} and must have said something {tv}, but {q} is {ntv}{since_f}. Contradiction.",
            "{q} comes out {ntv}{since_f}, and {s}, a {r}, cannot say something {ntv}. Contradiction.")
        whatever = self.whatever(i, partial)
        with_f = f"with {self.facts(i, partial, absolute=True)}, " if facts and not whatever else ""
        since_f = whatever or (f" since {facts}" if facts else "")
        ntv = _tv(not truth) + whatever if "{with_f}it is {ntv}" in body else _tv(not truth)
        self.lines.append(lead + body.format(s=speaker, r=_role(truth), q=self.quote(i), tv=_tv(truth),
                                             ntv=ntv, with_f=with_f, since_f=since_f))

    def no_role_fits(self, i: int, j: int, partial: Partial) -> None:
        speaker = self.names[i]
        if j == i:
            facts = self.facts(i, partial, skip=j, absolute=True)
            self.say("But look at {s}'s statement {q}{given}: as a knight {s} would be saying something "
                     "false, and as a knave something true. Neither is possible.",
                     "Wait, {s} said {q}{given}. A knight {s} would make that false and a knave {s} would "
                     "make it true, so {s} fits neither role. Contradiction.",
                     s=speaker, q=self.quote(i), given=f", with {facts}" if facts else "")
            return
        truth = partial[i]
        self.say("But {s} is a {r}, so {q} must be {tv}, and it comes out {ntv} whether {x} is a knight or "
                 "a knave. Contradiction.",
                 "Hmm, {s} is a {r}, so {q} has to be {tv}, but no role for {x} makes it {tv}. "
                 "That can't be.",
                 s=speaker, r=_role(truth), q=self.quote(i), tv=_tv(truth), ntv=_tv(not truth),
                 x=self.names[j])

    # --- the whole trace -----------------------------------------------------------------------------

    def introduction(self) -> None:
        if self.brief:  # the prompt already states the rules and the claims
            self.say("Let me work through this carefully.", "Let me solve this step by step.", "Let's see.")
            return
        self.say("Let me work through this carefully.",
                 "Okay, let's figure out who is a knight and who is a knave.",
                 "Let me solve this step by step.", "Alright, let me think about each person's statement.",
                 "Let's see.")
        self.say("A knight's statement is always true and a knave's is always false, so each person is a "
                 "knight exactly when what they said is true.",
                 "Knights only say true things and knaves only say false things: a person is a knight if "
                 "and only if their statement is true.",
                 "The key rule: whatever a knight says is true, whatever a knave says is false.")
        self.say("Here is what each person claims:", "The statements:", "Let me list the claims:",
                 "Writing down the statements:")
        form = self.pick("- {x}: {q}", "- {x} says {q}", "{k}. {x}: {q}")
        for i in range(self.n):
            self.lines.append(form.format(x=self.names[i], q=self.quote(i), k=i + 1))

    def first_look(self, partial: Partial) -> bool:
        """Deductions that need no supposition; False if the puzzle is contradictory outright."""
        before = len(self.lines)
        self.say("First, does any statement settle a role on its own?",
                 "Before guessing, let me see if anything is forced outright.",
                 "Let me first check whether any statement decides something by itself.")
        ok = self.propagate(partial, deque(range(self.n)))
        if len(self.lines) == before + 1:
            self.say("No, nothing is forced yet, so I'll have to suppose something.",
                     "Nothing is forced without an assumption. I'll go person by person.",
                     "Not directly. Let me take the people one at a time.")
        return ok

    def explain(self, expr: Expr, assignment: Sequence[bool]) -> str:
        """Why `expr` has its truth value under the full assignment, one level down."""
        op = expr[0]
        if op in ATOM_OPS:
            k = expr[1]
            return f"{self.names[k]} is a {_role(assignment[k])}"
        if op == NOT and expr[1][0] in ATOM_OPS:
            k = expr[1][1]
            return f"{self.names[k]} is a {_role(assignment[k])}"
        if op == EXACTLY:
            role = expr[2]
            count = sum(1 for a in assignment if a == (role == KNIGHT))
            noun = role if count == 1 else role + "s"
            return f"there {'is' if count == 1 else 'are'} {count} {noun} in total"
        if op == NOT:
            inner = expr[1]
            return f'"{render_statement(inner, self.names, False)}" is {_tv(evaluate(inner, assignment))}'
        assert op in BINARY_OPS
        parts = [f'"{render_statement(child, self.names, False)}" is {_tv(evaluate(child, assignment))}'
                 for child in expr[1:]]
        return _join(parts)

    def verification(self, assignment: Sequence[bool]) -> None:
        self.say("Let me double-check every statement with this assignment.",
                 "Now let me verify each claim one by one.",
                 "Before answering, let me re-check each statement.",
                 "Let me double-check by going through each person again.")
        form = self.pick(
            "- {x} ({r}) said {q}: {why}, so the statement is {tv}. {ok}",
            "- {x} is a {r}. {x} said {q}; {why}, so it is {tv}. {ok}",
            "- {x}, a {r}: {q}. Since {why}, this is {tv}. {ok}")
        for i in range(self.n):
            truth = evaluate(self.statements[i], assignment)
            assert truth == assignment[i]
            ok = self.pick("That fits.", "Consistent.", "Good.", "That matches.",
                           f"Right for a {_role(assignment[i])}.")
            self.lines.append(form.format(x=self.names[i], r=_role(assignment[i]), q=self.quote(i),
                                          why=self.explain(self.statements[i], assignment), tv=_tv(truth),
                                          ok=ok))

    def uniqueness_check(self, path: list[tuple[int, bool, Partial]]) -> None:
        if not path:
            return
        self.say("Let me also make sure no other assignment works.",
                 "Hmm, is this the only possibility? Let me check the options I skipped.",
                 "Wait, I should confirm the other branches fail too.")
        for step, (j, value, partial) in enumerate(path):
            # the earlier choices keep the values the answer gives them; their alternatives come first
            self.assumptions = [(k, not v) for k, v, _ in path[:step]]
            self.say("What if {x} were a {r} instead{ctx}?", "Going back: could {x} be a {r}{ctx}?",
                     "Now the other option: {x} as a {r}{ctx}.",
                     x=self.names[j], r=_role(value), ctx=self.context())
            trial = list(partial)
            trial[j] = value
            self.assumptions.append((j, value))
            ok = self.propagate(trial, deque(self.watchers[j]))
            if ok and self.search(trial, []) is not None:
                raise ValueError("the puzzle has more than one solution")
            self.assumptions = []
            self.say("So {x} cannot be a {r}; that branch is closed.", "That fails as well.",
                     "No, that leads nowhere.", x=self.names[j], r=_role(value))
        self.say("So the assignment I found is the only one.",
                 "Every other branch fails, so the solution is unique.")

    def run(self, solution: Sequence[bool]) -> str:
        self.introduction()
        partial: Partial = [None] * self.n
        if not self.first_look(partial):
            raise ValueError("the puzzle has no solution")
        path: list[tuple[int, bool, Partial]] = []
        found = self.search(partial, path)
        if found is None or tuple(found) != tuple(solution):
            raise ValueError("the puzzle's solution is not the only consistent assignment")
        self.say("Everyone now has a role and no statement is broken: {a}.",
                 "That gives a complete assignment with no contradiction: {a}.",
                 "So far so good: {a}, and nothing conflicts.",
                 a=_join([f"{self.names[k]} is a {_role(v)}" for k, v in enumerate(found)]))
        if path and not self.brief and self.rng.random() < UNIQUENESS_CHECK_P:
            self.uniqueness_check(path)
        self.verification(found)
        self.say("All statements check out.", "Everything is consistent.", "So the answer is settled.",
                 "Every statement agrees with its speaker's role.")
        return "\n".join(self.lines)


def write_trace(puzzle: Puzzle, seed: int | str = 0, brief: bool = False) -> str:
    """A worked solution: '<think>\\n...\\n</think>\\n<answer>\\n(1) X is a knight\\n...\\n</answer>'.

    The seed picks the wording and the order of suppositions; the reasoning is always sound and the
    answer always the puzzle's solution. brief: skip restating the rules and the claims (the question
    has them) and the check that no other assignment works; the search and the final re-check stay.
    ValueError if the puzzle does not have exactly one solution.
    """
    if solve(puzzle.statements, puzzle.n) != [tuple(puzzle.solution)]:
        raise ValueError(f"puzzle {puzzle.id}: its solution is not the only consistent assignment")
    rng = random.Random(f"{seed}:{puzzle.id}")
    reasoning = _Narrator(puzzle, rng, brief).run(puzzle.solution)
    return f"<think>\n{reasoning}\n</think>\n<answer>\n{render_solution(puzzle)}\n</answer>"


def trace_example(puzzle: Puzzle, seed: int | str = 0, brief: bool = False) -> dict[str, str]:
    """An SFT example: the quiz (the puzzle's own wording if it has one), the trace, and the answer."""
    question = puzzle.quiz or render_quiz(puzzle, random.Random(f"quiz:{seed}:{puzzle.id}"))
    return {
        "prompt_question": question,
        "completion": write_trace(puzzle, seed, brief),
        "puzzle_id": puzzle.id,
        "solution_text": render_solution(puzzle),
    }
