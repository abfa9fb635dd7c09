"""Pulling the final answer out of a model's completion: shared by every grader.

The helpers are pure string functions; they never raise on odd input and return None when they
find nothing, so graders can chain them (`last_boxed(t) or answer_tag(t)`).
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, Decimal, InvalidOperation, localcontext

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_THINK_CLOSE = "</think>"

# A number as people write it: optional sign and $, thousands separators, decimals, a trailing %.
_NUMBER = re.compile(
    r"(?<![\w.])-?\s?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])-?\s?\$?\s?\.\d+"
)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced; None if none.

    `\\boxed 5` (no braces, as in some MATH solutions) gives "5". An unclosed box gives None.
    """
    if not isinstance(text, str):
        return None
    # A completion that repeats "\boxed{" N times (a generation stuck in a loop) took minutes per
    # 1 MB (found by fuzzing): each of the N unclosed boxes was scanned to the end of the text, and
    # a command absent from the text was searched for back to its start N times. So each command's
    # last position is kept and only the one just used is searched for again, and a brace scan
    # stops at `stop`, the `{` of a later box found unclosed: a box still open there is unclosed too.
    stop = len(text)
    last = {cmd: text.rfind(cmd) for cmd in _BOX_COMMANDS}
    while True:
        cmd = max(last, key=last.__getitem__)
        start = last[cmd]
        if start < 0:
            return None
        content, unclosed_brace = _box_content(text, start, stop)
        if content is not None:
            return content
        if unclosed_brace is not None:
            stop = unclosed_brace
        # The last box was unclosed or empty-named: look at the one before it.
        last[cmd] = text.rfind(cmd, 0, start)


_BOX_SPACE_ARG = re.compile(r" +([^\s$]+)")


def _box_content(text: str, start: int, stop: int) -> tuple[str | None, int | None]:
    """(the argument of the box command at `start` or None, the index of its `{` if unclosed).

    The brace scan gives up at `stop`, the `{` of a later box known to be unclosed."""
    i = start + 1
    while i < len(text) and text[i].isalpha():
        i += 1
    if text[start:i] not in _BOX_COMMANDS:  # e.g. "\boxedx" is another command
        return None, None
    if text.startswith(" ", i):  # "\boxed 5": the argument runs to the next space or "$"
        match = _BOX_SPACE_ARG.match(text, i)  # match at i, not on text[i:]: no copy of the rest
        return (match.group(1) if match else None), None
    if not text.startswith("{", i):
        return None, None
    depth = 0
    for j in range(i, stop):
        if text[j] == "{" and text[j - 1] != "\\":
            depth += 1
        elif text[j] == "}" and text[j - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[i + 1:j], None
    return None, i


def answer_tag(text: str) -> str | None:
    """Content of the last `<answer>` block, stripped; None if there is none.

    A missing `</answer>` (a generation cut off at the token limit) still counts: the content then
    runs to the end of the text.
    """
    if not isinstance(text, str):
        return None
    opens = list(_ANSWER_OPEN.finditer(text))
    if not opens:
        return None
    body = text[opens[-1].end():]
    close = _ANSWER_CLOSE.search(body)
    return (body[:close.start()] if close else body).strip()


def has_r1_format(text: str) -> bool:
    """True if `text` is `[<think>] ... </think> <answer> ... </answer>` with each tag once.

    The opening <think> is optional because many chat templates put it in the prompt.
    """
    if not isinstance(text, str):
        return False
    if text.count(_THINK_CLOSE) != 1 or text.count("<think>") > 1:
        return False
    if len(_ANSWER_OPEN.findall(text)) != 1 or len(_ANSWER_CLOSE.findall(text)) != 1:
        return False
    pattern = r"^\s*(?:<think>)?.*?</think>\s*<answer>.*?</answer>\s*$"
    return re.match(pattern, text, re.DOTALL | re.IGNORECASE) is not None


def last_number(text: str) -> str | None:
    """The last number in `text`, normalised ("$1,234.50" -> "1234.5", "-3" -> "-3"); None if none."""
    if not isinstance(text, str):
        return None
    matches = _NUMBER.findall(text)
    for raw in reversed(matches):
        value = parse_number(raw)
        if value is not None:
            return value
    return None


def parse_number(raw: str) -> str | None:
    """Canonical string of a written number: drops $, commas, spaces, a trailing %; None if not one."""
    value = _to_decimal(raw)
    if value is None:
        return None
    # Exact arithmetic: the default context (28 digits) rounded a 29-digit number in normalize()
    # and then raised InvalidOperation in quantize(), so a long number in a completion crashed the
    # GSM8K grader (found by fuzzing). Inputs have at most 100 characters; 200 digits hold them,
    # and the widest exponent range keeps "1e999999999" from overflowing.
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 200, MAX_EMAX, MIN_EMIN
        normal = value.normalize()  # 18.00 -> 18, 0.50 -> 0.5
        if normal == normal.to_integral_value() and normal.adjusted() < ctx.prec:
            normal = normal.quantize(Decimal(1))  # 1E+3 -> 1000 (but 1E+999 stays as it is)
        return "0" if normal.is_zero() else str(normal)  # -0 -> 0


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Whether two written numbers are the same value (exact decimal comparison)."""
    x, y = _to_decimal(a), _to_decimal(b)
    return x is not None and y is not None and x == y


def _to_decimal(raw: str | None) -> Decimal | None:
    if not isinstance(raw, str) or len(raw) > 100:
        return None
    cleaned = raw.replace("\\!", "").replace("\\$", "").replace(",", "").replace("$", "").replace(" ", "")
    cleaned = cleaned.strip().rstrip("%").rstrip(".")
    try:
        value = Decimal(cleaned)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None
