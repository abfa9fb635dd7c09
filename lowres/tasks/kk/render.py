"""Puzzle wording, both ways: statements and quizzes to text (Logic-RL's wording), and text back.

The speech templates are shared by the writer and the reader, so every quiz this module writes can
be read back, and every quiz in the Logic-RL data (which uses the same 18 templates) parses to its
`statements` column. Nested statements are bracketed: "(A or B) and C".
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lowres.errors import UserError
from lowres.tasks.kk.generator import Puzzle, puzzle_id
from lowres.tasks.kk.logic import (
    AND,
    ATOM_OPS,
    BINARY_OPS,
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
    is_consistent,
    normalize,
)
from lowres.tasks.kk.solver import solve

QUIZ_INTRO = ("A very special island is inhabited only by knights and knaves. "
              "Knights always tell the truth, and knaves always lie.")
QUIZ_QUESTION = "So who is a knight and who is a knave?"

# How a quiz attributes a statement to its speaker: Logic-RL's 18 forms. {s} inside quotes is the
# statement as a sentence ("Zoey is a knight"); bare {s} is reported speech ("said that ...").
SPEECH_TEMPLATES: tuple[str, ...] = (
    '{name} was heard saying, "{s}".',
    '{name} commented, "{s}".',
    'In a statement by {name}: "{s}".',
    "In {name}'s words: \"{s}\".",
    'According to {name}, "{s}".',
    '{name} asserted: "{s}".',
    '"{s}," {name} declared.',
    'As {name} put it, "{s}".',
    '{name} noted, "{s}".',
    '"{s}," {name} claimed.',
    '{name} stated, "{s}".',
    '{name} remarked, "{s}".',
    '"{s}," {name} mentioned.',
    '"{s}" - {name}.',
    '{name} said, "{s}."',
    "{name} said that {s}.",
    "{name} told you that {s}.",
    "{name} expressed that {s}.",
)

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")
_ROLE_WORDS = {KNIGHT: KNIGHT, KNIGHT + "s": KNIGHT, KNAVE: KNAVE, KNAVE + "s": KNAVE}
_NOT_THE_CASE = "it is not the case that"


# --- writing ----------------------------------------------------------------------------------------

def _is_compound(expr: Expr) -> bool:
    """Whether the rendering needs brackets when it is an argument of a connective."""
    return expr[0] in BINARY_OPS or (expr[0] == NOT and expr[1][0] not in ATOM_OPS)


def _counting_text(k: int, role: str, n: int | None) -> str:
    if k == 0:
        return f"none of us is a {role}"
    if n is not None and k == n:
        return f"all of us are {role}s"
    if k == 1:
        return f"exactly one of us is a {role}"
    word = _NUMBER_WORDS[k] if k < len(_NUMBER_WORDS) else str(k)
    return f"exactly {word} of us are {role}s"


def render_statement(expr: Expr, names: Sequence[str], capitalize: bool = True) -> str:
    """The statement in words, e.g. 'If Zoey is a knight then Ethan is a knave' (no final period)."""
    text = _render(expr, names)
    if capitalize:
        first = len(text) - len(text.lstrip("("))  # "(it is ..." -> "(It is ..."
        text = text[:first] + text[first:first + 1].upper() + text[first + 1:]
    return text


def _render(expr: Expr, names: Sequence[str]) -> str:
    op = expr[0]
    if op == TRUTH:
        return f"{names[expr[1]]} is a knight"
    if op == LIE:
        return f"{names[expr[1]]} is a knave"
    if op == EXACTLY:
        return _counting_text(expr[1], expr[2], len(names))
    if op == NOT:
        inner = expr[1]
        if inner[0] == TRUTH:
            return f"{names[inner[1]]} is not a knight"
        if inner[0] == LIE:
            return f"{names[inner[1]]} is not a knave"
        return f"{_NOT_THE_CASE} {_argument(inner, names)}"
    a, b = _argument(expr[1], names), _argument(expr[2], names)
    if op == AND:
        return f"{a} and {b}"
    if op == OR:
        return f"{a} or {b}"
    if op == IMPLIES:
        return f"if {a} then {b}"
    if op == IFF:
        return f"{a} if and only if {b}"
    raise ValueError(f"unknown operator {op!r} in {expr!r}")


def _argument(expr: Expr, names: Sequence[str]) -> str:
    text = _render(expr, names)
    return f"({text})" if _is_compound(expr) else text


def join_names(names: Sequence[str]) -> str:
    """'A and B' for two, 'A, B, and C' (Oxford comma, as Logic-RL) for more."""
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + ", and " + names[-1]


def render_utterance(template: str, name: str, expr: Expr, names: Sequence[str]) -> str:
    """One sentence of a quiz: `template` (one of SPEECH_TEMPLATES) filled with speaker and statement."""
    quoted = '"{s}' in template
    return template.format(name=name, s=render_statement(expr, names, capitalize=quoted))


def render_quiz(puzzle: Puzzle, rng: random.Random | int | str | None = None) -> str:
    """The puzzle in Logic-RL's wording, with a seeded choice of speech template per person.

    rng: a random.Random, or a seed; None seeds from the puzzle id (same puzzle, same text).
    """
    rng = rng if isinstance(rng, random.Random) else random.Random(puzzle.id if rng is None else rng)
    names = puzzle.names
    sentences = [render_utterance(rng.choice(SPEECH_TEMPLATES), names[i], s, names)
                 for i, s in enumerate(puzzle.statements)]
    return (f"{QUIZ_INTRO} You meet {len(names)} inhabitants: {join_names(names)}. "
            + " ".join(sentences) + f" {QUIZ_QUESTION}")


def solution_text(names: Sequence[str], solution: Sequence[bool]) -> str:
    """Logic-RL's `solution_text_format`: '(1) Michael is a knight\\n(2) Zoey is a knave'."""
    return "\n".join(f"({i + 1}) {name} is a {KNIGHT if knight else KNAVE}"
                     for i, (name, knight) in enumerate(zip(names, solution, strict=True)))


def render_solution(puzzle: Puzzle) -> str:
    """The puzzle's answer in Logic-RL's `solution_text_format`."""
    return solution_text(puzzle.names, puzzle.solution)


# --- reading statements -----------------------------------------------------------------------------

_TOKEN = re.compile(r"[()]|[^\s()]+")


class _StatementParser:
    """Recursive descent over words for the grammar render_statement writes:

    expr   := 'if' binary 'then' binary | binary
    binary := unary [('and' | 'or' | 'if and only if') unary]
    unary  := '(' expr ')' | 'it is not the case that' unary | counting | NAME 'is' ['not'] 'a' ROLE
    """

    def __init__(self, text: str, names: Sequence[str]):
        self.text = text
        self.n = len(names)
        self.index = {name.lower(): i for i, name in enumerate(names)}
        words = _TOKEN.findall(text)
        self.words = [w if w in "()" else w.strip(".,!?;:").lower() for w in words]
        self.words = [w for w in self.words if w]
        self.pos = 0

    def fail(self, why: str) -> ValueError:
        return ValueError(f"cannot read statement {self.text!r}: {why}")

    def peek(self, k: int = 0) -> str | None:
        return self.words[self.pos + k] if self.pos + k < len(self.words) else None

    def accept(self, *words: str) -> bool:
        if tuple(self.words[self.pos:self.pos + len(words)]) == words:
            self.pos += len(words)
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            raise self.fail(f"expected {' '.join(words)!r} at word {self.pos + 1} ({self.peek()!r})")

    def parse(self) -> Expr:
        expr = self.expr()
        if self.pos != len(self.words):
            raise self.fail(f"unexpected {self.peek()!r} at word {self.pos + 1}")
        return expr

    def expr(self) -> Expr:
        if self.accept("if"):
            a = self.binary()
            self.expect("then")
            return (IMPLIES, a, self.binary())
        return self.binary()

    def binary(self) -> Expr:
        a = self.unary()
        if self.accept("if", "and", "only", "if"):
            return (IFF, a, self.unary())
        if self.accept("and"):
            return (AND, a, self.unary())
        if self.accept("or"):
            return (OR, a, self.unary())
        return a

    def unary(self) -> Expr:
        if self.accept("("):
            inner = self.expr()
            self.expect(")")
            return inner
        if self.accept(*_NOT_THE_CASE.split()):
            return (NOT, self.unary())
        word = self.peek()
        if word in ("exactly", "none", "all"):
            return self.counting()
        if word is None or word not in self.index:
            raise self.fail(f"expected a name at word {self.pos + 1}, got {word!r}")
        person = self.index[word]
        self.pos += 1
        self.expect("is")
        negated = self.accept("not")
        self.accept("a") or self.accept("an")
        role = self.role()
        atom = (TRUTH if role == KNIGHT else LIE, person)
        return (NOT, atom) if negated else atom

    def counting(self) -> Expr:
        if self.accept("none"):
            k = 0
        elif self.accept("all"):
            k = self.n
        else:
            self.expect("exactly")
            word = self.peek() or ""
            if word in _NUMBER_WORDS:
                k = _NUMBER_WORDS.index(word)
            elif word.isdigit():
                k = int(word)
            else:
                raise self.fail(f"expected a number after 'exactly', got {word!r}")
            self.pos += 1
        self.expect("of", "us")
        if not (self.accept("is") or self.accept("are")):
            raise self.fail(f"expected 'is' or 'are' at word {self.pos + 1}")
        self.accept("a") or self.accept("an")
        return (EXACTLY, k, self.role())

    def role(self) -> str:
        word = self.peek()
        if word not in _ROLE_WORDS:
            raise self.fail(f"expected 'knight' or 'knave' at word {self.pos + 1}, got {word!r}")
        self.pos += 1
        return _ROLE_WORDS[word]


def parse_statement(text: str, names: Sequence[str]) -> Expr:
    """The tuple form of one statement in words (case-insensitive); ValueError if it does not read."""
    return normalize(_StatementParser(text, names).parse(), len(names))


# --- reading quizzes --------------------------------------------------------------------------------

def _compile_template(template: str) -> re.Pattern[str]:
    """A regex for one speech template; lenient about spacing and the final punctuation."""
    pattern = []
    for part in re.split(r'("\{s\}[.,]?"|\{name\}|\{s\})', template):
        if part == "{name}":
            pattern.append(r"(?P<name>[^\W\d_][\w-]*)")
        elif part.startswith('"{s}'):
            pattern.append(r'"(?P<s>[^"]*)"')  # trailing ., inside the quotes is stripped later
        elif part == "{s}":
            pattern.append(r'(?P<s>[^".]*)')
        elif part:
            pattern.append(r"\s+".join(re.escape(word) for word in part.split(" ")))
    regex = "".join(pattern)
    regex = regex[:-2] if regex.endswith(r"\.") else regex
    return re.compile(regex + r"\.?")


_UTTERANCES = [_compile_template(t) for t in SPEECH_TEMPLATES]
_HEADER = re.compile(r"You\s+meet\s+(\d+)\s+inhabitants?:\s*([^.]*)\.")
_NAME_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")
_QUESTION = re.compile(r"\s*So\s+who\s+is\s+a\s+knight\s+and\s+who\s+is\s+a\s+knave\?\s*$", re.IGNORECASE)
_TYPOGRAPHIC = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


def parse_quiz(text: str, names: Sequence[str] | None = None) -> tuple[list[str], list[Expr]]:
    """(names, statements) from a quiz in Logic-RL's wording; statements[i] is what names[i] said.

    `names` defaults to the list after "You meet N inhabitants:". ValueError if the text does not read.
    """
    text = text.translate(_TYPOGRAPHIC)
    header = _HEADER.search(text)
    if header is None:
        raise ValueError("no 'You meet N inhabitants: ...' sentence")
    listed = [w for w in _NAME_SPLIT.split(header.group(2).strip()) if w]
    if len(listed) != int(header.group(1)):
        raise ValueError(f"the quiz says {header.group(1)} inhabitants but lists {listed}")
    names = list(names) if names is not None else listed
    index = {name.lower(): i for i, name in enumerate(names)}
    question = _QUESTION.search(text, header.end())
    body_end = question.start() if question else len(text)

    said: dict[int, Expr] = {}
    pos = header.end()
    while True:
        while pos < body_end and text[pos].isspace():
            pos += 1
        if pos >= body_end:
            break
        match = next((m for m in (u.match(text, pos, body_end) for u in _UTTERANCES) if m), None)
        if match is None:
            raise ValueError(f"cannot read the sentence starting {text[pos:pos + 60]!r}")
        speaker = index.get(match.group("name").lower())
        if speaker is None:
            raise ValueError(f"{match.group('name')!r} speaks but is not one of {names}")
        if speaker in said:
            raise ValueError(f"{names[speaker]} makes two statements")
        said[speaker] = parse_statement(match.group("s").strip().rstrip(".,!"), names)
        pos = match.end()
    missing = [names[i] for i in range(len(names)) if i not in said]
    if missing:
        raise ValueError(f"no statement by {', '.join(missing)}")
    return names, [said[i] for i in range(len(names))]


# --- the Logic-RL data ------------------------------------------------------------------------------

def _row_id(row: Mapping[str, Any], n: int) -> str | None:
    if row.get("id"):
        return str(row["id"])
    if row.get("index") is None:
        return None
    extra = row.get("extra_info")
    split = extra.get("split") if isinstance(extra, Mapping) else row.get("split")
    return f"logic_rl-{n}ppl-{split}-{row['index']}" if split else f"logic_rl-{n}ppl-{row['index']}"


def _row_statements(row: Mapping[str, Any]) -> Any:
    statements = row.get("statements")
    if statements is None:
        truth = row.get("reward_model")
        truth = truth.get("ground_truth") if isinstance(truth, Mapping) else None
        statements = truth.get("statements") if isinstance(truth, Mapping) else None
    return statements


def puzzle_from_logic_rl(row: Mapping[str, Any]) -> Puzzle:
    """A Puzzle from a Logic-RL / mem-kk-logic row (or a Puzzle.to_dict() row).

    Uses `statements` (a Python-literal string, parsed with ast.literal_eval) when present, else
    reads the `quiz` text. The row's `solution` must be the puzzle's only consistent assignment
    (it is computed when absent). UserError, one line, if the row does not read.
    """
    where = f"row {row.get('index', row.get('id', '?'))}" if isinstance(row, Mapping) else "row"
    try:
        quiz = row.get("quiz")
        names = row.get("names")
        if names is None or len(names) == 0:
            if not quiz:
                raise ValueError("it has neither names nor a quiz")
            names = parse_quiz(quiz)[0]
        names = [str(name) for name in names]
        n = len(names)
        raw = _row_statements(row)
        if raw is not None and len(raw) > 0:
            raw = ast.literal_eval(raw) if isinstance(raw, str) else raw
            statements = [normalize(s, n) for s in raw]
        elif quiz:
            statements = parse_quiz(quiz, names)[1]
        else:
            raise ValueError("it has neither statements nor a quiz")
        if len(statements) != n:
            raise ValueError(f"{n} names but {len(statements)} statements")
        solutions = solve(statements, n)
        if len(solutions) != 1:
            raise ValueError(f"the puzzle has {len(solutions)} solutions, not exactly one")
        given = row.get("solution")
        solution = tuple(bool(x) for x in given) if given is not None else solutions[0]
        if len(solution) != n or not is_consistent(statements, solution):
            raise ValueError(f"its solution {list(solution)} is not the puzzle's ({list(solutions[0])})")
    except (ValueError, SyntaxError, TypeError, AttributeError, KeyError, IndexError,
            MemoryError, RecursionError) as e:
        raise UserError(f"unreadable Knights & Knaves {where}: {e}") from None
    return Puzzle(names, statements, solution, _row_id(row, n) or puzzle_id(names, statements),
                  quiz=str(quiz) if quiz else None)


def _data_files(path: Path, split: str | None) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"no Knights & Knaves data at {path}")
    splits = ["train", "test"] if split in (None, "all") else [split]

    def size_key(p: Path) -> tuple[int, str]:
        digits = "".join(c for c in p.parent.name if c.isdigit())
        return (int(digits) if digits else 0, str(p))

    files = []
    for name in splits:
        found = sorted(path.glob(f"*/{name}.parquet"), key=size_key) or sorted(path.glob(f"{name}.*"))
        files += [p for p in found if p.suffix in (".parquet", ".jsonl", ".json")]
    if not files:
        raise UserError(f"no {'/'.join(splits)} files under {path} (expected e.g. 3ppl/{splits[0]}.parquet)")
    return files


def _read_rows(file: Path) -> list[dict[str, Any]]:
    if file.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError("reading parquet files needs pyarrow: pip install pyarrow") from None
        try:
            return pq.read_table(file).to_pylist()
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise UserError(f"cannot read {file}: {e}") from None
    try:
        with open(file, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {file}: {e}") from None


def load_logic_rl(path: str | Path, split: str | None = "train",
                  as_rows: bool = False) -> list[Puzzle] | list[dict[str, Any]]:
    """Logic-RL K&K data as Puzzles (or the raw rows with as_rows=True).

    path: a .parquet/.jsonl file, or a folder laid out as <N>ppl/<split>.parquet (sizes in order).
    split: 'train', 'test', or None/'all' for both; ignored when path is a file.
    """
    rows = [row for file in _data_files(Path(path), split) for row in _read_rows(file)]
    return rows if as_rows else [puzzle_from_logic_rl(row) for row in rows]
