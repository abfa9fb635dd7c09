"""The Knights & Knaves reward: check the <think>/<answer> format, read the answer, compare.

Format rule (what `formatted` means): the completion holds exactly one `</think>`, exactly one
`<answer>` and exactly one `</answer>`, in that order. The opening `<think>` is optional, because chat
templates (Logic-RL's, R1-style ones) often put it in the prompt; if present it must appear once and
before `</think>`. Text between `</think>` and `<answer>` and after `</answer>` is allowed (an end-of-turn
token may follow). Tags are matched exactly (lowercase).

Everything here is linear in the input length and `score_completion` never raises on any string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lowres.tasks.base import Score

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
# A real answer for 8 people is under 300 characters; longer ones are not read (unparseable).
MAX_ANSWER_CHARS = 100_000


@dataclass(frozen=True)
class KKRewards:
    """Reward per outcome; the defaults are Logic-RL's (and the paper's)."""

    correct: float = 2.0
    wrong: float = -0.5        # every person named with a role, but some role is wrong
    unparseable: float = -1.0  # formatted, but the answer misses people, or names unknown people/roles
    bad_format: float = -2.0   # the tags are missing, repeated or out of order


def extract_answer(completion: str) -> str | None:
    """The text inside <answer>...</answer> when the completion is well formatted, else None."""
    if (completion.count(THINK_CLOSE) != 1 or completion.count(ANSWER_OPEN) != 1
            or completion.count(ANSWER_CLOSE) != 1 or completion.count(THINK_OPEN) > 1):
        return None
    think_end = completion.find(THINK_CLOSE)
    answer_start = completion.find(ANSWER_OPEN)
    answer_end = completion.find(ANSWER_CLOSE)
    think_start = completion.find(THINK_OPEN)
    if think_start > think_end or not think_end < answer_start < answer_end:
        return None
    return completion[answer_start + len(ANSWER_OPEN):answer_end]


# Clauses end at a newline, ; or , the word "and", or a sentence end. One linear pass, no backtracking.
_CLAUSE_END = re.compile(r"[\n;,]|\band\b|[.!?](?=\s|$)", re.IGNORECASE)
_NUMBERING = re.compile(r"[(\[#]?\d{1,3}[)\].:-]?")
_EDGE_PUNCT = ".,;:!?\"'()[]{}<>-=~\u2013\u2014\u2192"
_ROLES = {"knight": True, "knights": True, "knave": False, "knaves": False}
_ARTICLES = ("a", "an", "the")
_LEAD_FILLERS = {"so", "thus", "therefore", "hence", "then", "also", "finally", "both", "all"}


def _clause_words(clause: str) -> list[str]:
    words = clause.replace("*", " ").replace("`", " ").replace("_", " ").split()
    if words and _NUMBERING.fullmatch(words[0]):
        words = words[1:]
    words = [w.strip(_EDGE_PUNCT).lower() for w in words]
    return [w for w in words if w]


def _read_claim(words: list[str], index: Mapping[str, str] | None) -> tuple[list[str], bool] | None:
    """(people, is_knight) if the words say "X [and Y] is/are [not] a knight/knave" or "X: knight"."""
    def is_name(w: str) -> bool:
        return w in index if index is not None else w.isalpha()

    while words and words[0] in _LEAD_FILLERS:
        words = words[1:]
    verb = next((k for k, w in enumerate(words) if w in ("is", "are")), None)
    if verb is None:
        subject, rest, negated = words[:1], words[1:], False
    else:
        subject, rest = words[:verb], words[verb + 1:]
        negated = rest[:1] == ["not"]
        rest = rest[1:] if negated else rest
    if rest[:1] and rest[0] in _ARTICLES:
        rest = rest[1:]
    if not subject or not all(is_name(w) for w in subject) or len(rest) != 1 or rest[0] not in _ROLES:
        return None
    return subject, _ROLES[rest[0]] != negated


def parse_answer(text: str, names: Sequence[str] | None = None) -> dict[str, bool] | None:
    """Name -> is a knight, read from an answer such as '(1) Zoey is a knight\\n(2) Ethan is a knave'.

    Lenient about case, numbering ('(1)', '1.', none), bullets, spacing, trailing punctuation, and
    separators (lines, commas, 'and'; 'Zoey and Ethan are knights' works). Returns None when a clause
    mentions a person or a role but cannot be read (an unknown name or role, a contradiction, a name
    with no role). Clauses that mention neither ("Here is the answer:") are skipped. The dict may
    lack people; the caller decides whether that is complete. names=None accepts any one-word name.
    """
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    index = {name.lower(): name for name in names} if names is not None else None
    found: dict[str, bool] = {}
    pending: list[str] = []  # names listed before their shared role: "Zoey, Ethan and Mia are knights"
    for clause in _CLAUSE_END.split(text):
        words = _clause_words(clause)
        if not words:
            continue
        claim = _read_claim(words, index)
        if claim is None:
            bare = [w for w in words if w not in _LEAD_FILLERS]
            if len(bare) == 1 and (bare[0] in index if index is not None else False):
                pending.append(bare[0])
                continue
            if any(w in _ROLES or (index is not None and w in index) for w in words):
                return None
            continue  # filler
        people, knight = claim
        for word in pending + people:
            name = index[word] if index is not None else word.capitalize()
            if found.get(name, knight) != knight:
                return None  # said to be both
            found[name] = knight
        pending = []
    if pending or not found:
        return None
    return found


def _expected(target: Any) -> dict[str, bool]:
    """Name -> is a knight from a Puzzle, a row with names and solution, a dict, or a solution text."""
    if hasattr(target, "names") and hasattr(target, "solution"):
        return dict(zip(target.names, (bool(x) for x in target.solution), strict=True))
    if isinstance(target, Mapping) and "names" in target and "solution" in target:
        return dict(zip(target["names"], (bool(x) for x in target["solution"]), strict=True))
    if isinstance(target, Mapping):
        return {str(k): bool(v) for k, v in target.items()}
    if isinstance(target, str):
        parsed = parse_answer(target)
        if parsed:
            return parsed
    raise TypeError(f"cannot read the expected solution from {type(target).__name__}")


def score_completion(completion: str, puzzle_or_solution: Any,
                     rewards: KKRewards = KKRewards()) -> Score:
    """Grade one completion against a Puzzle, a row with `names`/`solution`, a name->bool dict, or a
    solution text like Logic-RL's `solution_text_format`.

    bad format -> rewards.bad_format; an answer that misses people or names unknown people or roles
    -> rewards.unparseable; every person named but some role wrong -> rewards.wrong; else correct.
    Never raises on any completion (a TypeError only for an unreadable puzzle_or_solution).
    """
    expected = _expected(puzzle_or_solution)
    try:
        answer = extract_answer(completion) if isinstance(completion, str) else None
        if answer is None:
            return Score(formatted=False, correct=False, reward=rewards.bad_format, extracted=None)
        extracted = answer.strip()
        parsed = parse_answer(answer, list(expected))
        if parsed is None or parsed.keys() != expected.keys():
            return Score(formatted=True, correct=False, reward=rewards.unparseable, extracted=extracted)
        correct = parsed == expected
        return Score(formatted=True, correct=correct,
                     reward=rewards.correct if correct else rewards.wrong, extracted=extracted)
    except Exception:  # defensive: a grader must not crash a training run on odd text
        return Score(formatted=False, correct=False, reward=rewards.bad_format, extracted=None)
