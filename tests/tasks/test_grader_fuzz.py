"""Fuzz: every task's `score` returns a Score, never raises and never hangs, on adversarial text.

Each task's grader gets N_STRINGS seeded completions: random unicode from odd planes, control
characters, huge numbers, LaTeX nested a thousand levels and more, unbalanced \\boxed{ and
<answer>/<think> tags, long whitespace runs (regex backtracking probes), 1 MB completions, answer
tags wrapping junk, and well-formed answers in the task's own format with mutations, so the deep
grading paths (math-verify and sympy, the K&K clause parser, ...) are reached, not only "no answer".

The math grader's deep path (math-verify, then sympy, ~10 ms a check) gets a smaller share of
the strings than the other graders' (still ~1,800 checks), and the answers that make a naive grader
compute for minutes (towers, factorials, 1e999999999) go in once each, as they may use the whole
time limit. The math and HumanEval+ tests take ~20 s each and are marked slow.

HumanEval+ runs every program in a subprocess (~30 ms each even when it fails to compile), too
slow for 10,000 calls: all of them go through `score` with the sandbox call replaced by a stub
(extraction, program building and the verdict are real), and a sample of a hundred-odd, plus
programs that loop forever, print forever, allocate, fork, exit or raise, go through the real
sandbox.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections import Counter

import pytest

import lowres.tasks.humaneval_plus as humaneval_plus
import lowres.tasks.math as math_task
from lowres.sandbox import SandboxResult
from lowres.tasks import Score, get_task
from lowres.tasks.humaneval_plus import HumanEvalPlusTask
from lowres.tasks.math import MathTask

N_STRINGS = 10_000
N_MEGABYTE = 3  # 1 MB completions per task (each grader reads them in full)
MEGABYTE = 1 << 20
MAX_CHARS = 200_000  # the other strings (a few repeat a part a thousand times) are cut to this
# The hang guard: seconds a call may take beyond the grader's own time limit. Generous on purpose
# (a loaded 2-core CI runner); this catches hangs and minutes-long calls, it is not a benchmark.
HANG_MARGIN_S = 5.0
MATH_TIMEOUT_S = 1.0      # MathTask's default is 3 s; 1 s keeps the few inputs that use it all cheap
SANDBOX_TIMEOUT_S = 2.0   # the real-sandbox HumanEval+ runs; the grader's default is 30 s
N_REAL_SANDBOX = 120      # fuzz strings run for real in the sandbox, besides the hostile programs
TASKS = ["kk", "kk_easy", "math", "gsm8k", "humaneval_plus", "mmlu_pro"]

# ----------------------------------------------------------------------------------------------
# Rows (hand-built, so the fuzz needs no data files; K&K generates its puzzles offline)
# ----------------------------------------------------------------------------------------------
MATH_GOLDS = [
    "6", "-3", "0.5", r"\frac{\sqrt{3}}{2}", r"(-\infty, 3]", r"\{1, 2\}", r"2\pi", "x^2+1",
    r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\text{(C)}", r"90^\circ", "1000", r"\sqrt{2}",
    r"\frac{1}{3}", "(3, 4)", r"10\%",
]
GSM8K_GOLDS = ["18", "623", "-7", "2.5", "1000000", "0", "12345678901234567890123456789012"]
HE_ROW = {
    "id": "fuzz/add",
    "code_prompt": 'def add(a: int, b: int) -> int:\n    """Return a + b."""\n',
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}


def rows_for(name: str) -> list[dict]:
    if name in ("kk", "kk_easy"):
        return get_task(name).load("test", limit=8)
    if name == "math":
        return [{"id": f"math/{i}", "answer": gold} for i, gold in enumerate(MATH_GOLDS)]
    if name == "gsm8k":
        return [{"id": f"gsm8k/{i}", "answer": gold} for i, gold in enumerate(GSM8K_GOLDS)]
    if name == "mmlu_pro":
        return [{"id": str(i), "answer": "ABCDEFGHIJ"[i], "answer_index": i,
                 "options": [str(k) for k in range(10)], "category": "math"} for i in range(10)]
    if name == "humaneval_plus":
        return [HE_ROW]
    raise AssertionError(name)


def kk_names(row: dict) -> list[str]:
    names = row["names"]
    if isinstance(names, str):  # Logic-RL rows keep the list as text
        import ast

        names = ast.literal_eval(names)
    return list(names)


# ----------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------
# Control characters, invisible and direction-changing code points, odd whitespace.
ODD_CHARS = [chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]] + [
    "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a", "\u202e", "\u2028", "\u2029",
    "\u2060", "\ufeff", "\ufffd", "\ufffe", "\uffff", "\u00a0", "\u3000", "\u180e", "\U000e0001",
    "\U0010ffff", "\U000f0000", "\u0301", "\u20dd",  # combining marks
]
TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<ANSWER>", "</Answer>", "<answer >",
        "< answer>", "<answer/>", "</answer", "<think", "<<answer>>", "<answer><answer>"]
LATEX_PIECES = [r"\frac{", r"\sqrt{", "{", "}", "^{", "_{", r"\left(", r"\right)", r"\{", r"\}",
                r"\boxed{", r"\fbox{", r"\text{", r"\begin{pmatrix}", r"\end{pmatrix}", r"\\", "&",
                r"\infty", r"\pi", r"\cdot", r"\times", "!", "$", r"\$", r"\%", "%", r"\!", r"\,",
                r"\dfrac", r"\binom{", r"\ln", r"\sin", r"\log_{", r"\int", r"\sum_{", "x", "y", "="]
WORDS = ["the", "answer", "is", "knight", "knave", "knights", "and", "not", "a", "so", "####",
         "```python\n", "```", "~~~", "def", "return", "print", "import", "\n", "\t", " ", ";", ",",
         ".", ":", "(", ")", "[", "]", "Therefore", "A", "B", "J", "K", "Z", "$", "1,234", "-0"]


def rand_unicode(rng: random.Random, n: int) -> str:
    """n code points from every plane (no surrogates): ASCII, BMP, astral, private use, unassigned."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            cp = rng.randrange(0x20, 0x7F)
        elif r < 0.5:
            cp = rng.randrange(0x80, 0xD800)
        elif r < 0.6:
            cp = rng.randrange(0xE000, 0x10000)
        elif r < 0.9:
            cp = rng.randrange(0x10000, 0x110000)
        else:
            out.append(rng.choice(ODD_CHARS))
            continue
        out.append(chr(cp))
    return "".join(out)


def huge_number(rng: random.Random) -> str:
    kind = rng.randrange(10)
    digits = rng.choice([29, 30, 50, 99, 100, 101, 400, 1000, 5001, 20_000])
    if kind == 0:
        return "1" + "0" * (digits - 1)  # 10**(digits-1)
    if kind == 1:
        return "".join(rng.choice("0123456789") for _ in range(digits))
    if kind == 2:
        return "-" + "9" * digits + "." + "9" * rng.randrange(1, 60)
    if kind == 3:
        return f"{rng.randrange(10 ** min(digits, 400)):,}"
    if kind == 4:
        return rng.choice(["1e309", "-1e308", "9e+9999", "1e+", "1e", "1e-5", "2.5E3"])
    if kind == 5:
        return rng.choice(["NaN", "nan", "-nan", "sNaN", "Infinity", "-inf", "inf", "∞", "-0", "+0",
                           "0.", ".5", "-.0", "00000", "1..2", "1,2,3", "1,,000", "$-", "%", "$.%"])
    if kind == 6:
        return f"${rng.randrange(10 ** 40):,}." + "0" * rng.randrange(50) + "%"
    if kind == 7:
        return "0." + "0" * digits + "1"
    if kind == 8:  # (the towers and factorials are in EXPENSIVE_ANSWERS)
        return rng.choice(["10**50", "2**10", "9^{9}", "10^{10}", "(10)!", "1000!", r"\binom{10}{5}",
                           r"\frac{1}{0}", "0/0", "0^0", "1e400", "-1e-400"])
    return "".join(rng.choice("0123456789,.$-% ") for _ in range(rng.randrange(1, 200)))


def deep_latex(rng: random.Random) -> str:
    depth = rng.choice([1000, 1500, 3000, 5000])
    kind = rng.randrange(8)
    if kind == 0:
        return r"\frac{" * depth + "1" + "}{2}" * depth
    if kind == 1:
        return r"\sqrt{" * depth + "2" + "}" * depth
    if kind == 2:
        return "{" * depth + "x" + "}" * depth
    if kind == 3:
        return "2^{" * depth + "2" + "}" * depth
    if kind == 4:
        return r"\left(" * depth + "1" + r"\right)" * depth
    if kind == 5:
        return r"\frac{" * depth  # never closed
    if kind == 6:
        return "(" * depth + "1" + ")" * (depth - rng.randrange(1, 10))
    return "".join(rng.choice(LATEX_PIECES) for _ in range(depth))


def unbalanced_boxed(rng: random.Random) -> str:
    n = rng.choice([1, 2, 10, 100, 1000, 5000])
    kind = rng.randrange(8)
    if kind == 0:
        return r"\boxed{" * n
    if kind == 1:
        return r"\boxed{5" + "}" * rng.randrange(0, 3) + r"\boxed{" * n + "7"
    if kind == 2:
        return r"\boxed{\}" * n
    if kind == 3:
        return (r"\boxed " + rng.choice(["", " ", "$", "  $", "\n"])) * n
    if kind == 4:
        return r"\fbox{" * n + r"\boxed{1}" + "{" * n
    if kind == 5:
        return r"\boxedx{1}" * n + r"\boxed"
    if kind == 6:
        return "}" * n + r"\boxed{" + "{" * n + "3" + "}" * (n - 1)
    return "".join(rng.choice([r"\boxed{", r"\fbox{", "{", "}", r"\{", r"\}", "\\", "a"]) for _ in range(n))


def tag_soup(rng: random.Random, inner: str = "") -> str:
    kind = rng.randrange(7)
    n = rng.choice([1, 2, 3, 50, 1000])
    if kind == 0:
        return "".join(rng.choice(TAGS) + rng.choice(["", " ", inner, "x"]) for _ in range(n))
    if kind == 1:
        return "<answer>" * n + inner + "</answer>" * rng.randrange(0, n + 2)
    if kind == 2:
        return "<think>" + "<think>" * rng.randrange(3) + inner + "</think>" * rng.randrange(3) + "<answer>" + inner
    if kind == 3:
        return f"<answer><think>{inner}</answer></think>"
    if kind == 4:
        return f"</answer>{inner}<answer>"
    if kind == 5:
        return f"<think>{inner}</think><answer>{inner}</answer>" * n
    return f"<answer>{'<answer>' * n}{inner}{'</answer>' * n}"


def whitespace_run(rng: random.Random) -> str:
    """Long whitespace between the parts a regex looks for: catastrophic-backtracking probes."""
    ws = rng.choice([" ", "\t", "\n", " \n", "\u3000", "\u00a0"]) * rng.choice([100, 1000, 5000, 20_000])
    end = rng.choice(["x", "", "?", "K", "C", "5", ":", "("])
    return rng.choice([
        f"\\boxed{{{ws}{end}}}", f"<answer>{ws}{end}</answer>", f"<answer>answer is{ws}{end}</answer>",
        f"<answer>\\text{{{ws}{end}</answer>", f"<answer>({ws}{end}</answer>", f"answer is:{ws}({ws}{end}",
        f"<answer>1.{ws}Zoey{ws}is{ws}a{ws}{end}</answer>", f"```python{ws}{end}", f"\\boxed{{5{ws}{end}",
        f"<think>{ws}</think>{ws}<answer>{ws}{end}{ws}</answer>{ws}", f"${ws}1,{ws}000{ws}{end}",
    ])


def junk_fragment(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        return rng.choice(WORDS)
    if r < 0.5:
        return rng.choice(TAGS)
    if r < 0.7:
        return rng.choice(LATEX_PIECES)
    if r < 0.85:
        return rand_unicode(rng, rng.randrange(1, 20))
    return str(rng.randrange(-10**6, 10**6))


# ----- answers in each task's own format, with mutations, to reach the deep grading paths ------
def random_latex_expr(rng: random.Random, depth: int = 0) -> str:
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(["1", "2", "3", "7", "10", "x", "y", r"\pi", r"\infty", "0.5", "-1", "e",
                           "i", "a", r"\theta", "100", "3.14159", r"\sqrt{2}"])
    a, b = random_latex_expr(rng, depth + 1), random_latex_expr(rng, depth + 1)
    return rng.choice([
        f"{a}+{b}", f"{a}-{b}", f"{a}{b}", f"{a}\\cdot {b}", f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{a[:1]}{b[:1]}",
        f"\\sqrt{{{a}}}", f"\\sqrt[3]{{{a}}}", f"{a}^{{{b}}}", f"({a}, {b})", f"[{a}, {b})", f"\\{{{a}, {b}\\}}",
        f"\\left( {a} \\right)", f"{a}!", f"\\binom{{{a}}}{{{b}}}", f"\\text{{{a}}}", f"{a} \\cup {b}",
        f"\\sin({a})", f"\\log_{{{a}}} {b}", f"x = {a}", f"{a} \\le x < {b}", f"{a}^\\circ", f"{a}\\%",
        f"\\begin{{pmatrix}} {a} \\\\ {b} \\end{{pmatrix}}", f"{a} \\text{{ or }} {b}", f"{a}*{b}",
        f"{a}**{b}", f"sqrt({a})", f"|{a}|", f"\\overline{{{a}}}", f"{a} \\pmod{{{b}}}",
    ])


def math_answer(rng: random.Random, row: dict) -> str:
    gold = row["answer"]
    r = rng.random()
    if r < 0.15:
        ans = gold
    elif r < 0.25:
        ans = rng.choice([gold.replace("\\frac", "\\dfrac"), f" {gold} ", f"\\left({gold}\\right)",
                          gold + ".", f"\\text{{{gold}}}", gold.replace(" ", ""), f"{gold}+0", f"-{gold}",
                          f"\\frac{{{gold}}}{{1}}", f"{gold}{{", gold[:-1]])
    elif r < 0.75:
        ans = random_latex_expr(rng)
    elif r < 0.9:
        ans = huge_number(rng)[:300]  # not too long to be parsed
    else:
        ans = "".join(rng.choice(LATEX_PIECES) for _ in range(rng.randrange(1, 40)))
    return wrap_answer(rng, f"\\boxed{{{ans}}}" if rng.random() < 0.85 else ans)


def gsm8k_answer(rng: random.Random, row: dict) -> str:
    gold = row["answer"]
    r = rng.random()
    if r < 0.2:
        ans = gold
    elif r < 0.4:
        ans = rng.choice([f"${gold}", f"{gold}.00", f"{gold}%", f"\\${gold}", f"{gold} dollars",
                          f"-{gold}", f"{gold}0", f"{gold[:-1]}", f"{gold},000", f"$ {gold}"])
    elif r < 0.8:
        ans = huge_number(rng)
    else:
        ans = f"{rng.uniform(-1e6, 1e6):.{rng.randrange(0, 12)}f}"
    form = rng.randrange(4)
    if form == 0:
        return wrap_answer(rng, f"\\boxed{{{ans}}}")
    if form == 1:
        return wrap_answer(rng, ans)
    if form == 2:
        return f"so the total is {ans} and then {rand_unicode(rng, 5)}"
    return f"#### {ans}"


def mmlu_answer(rng: random.Random, row: dict) -> str:
    letter = rng.choice("ABCDEFGHIJKLZabcj" + row["answer"] * 3)
    ans = rng.choice([letter, f"({letter})", f"\\text{{{letter}}}", f"{letter}. Paris", f"{letter}) x",
                      f"The answer is ({letter}).", f"answer is: {letter}", f"{letter}{letter}",
                      f"\\textbf{{ ( {letter} ) }}", f"Both {letter}", f" {letter} ",
                      f"{letter}{rand_unicode(rng, 3)}"])
    return wrap_answer(rng, f"\\boxed{{{ans}}}" if rng.random() < 0.6 else ans)


def kk_answer(rng: random.Random, row: dict) -> str:
    names = kk_names(row)
    people = names + rng.choice([[], [], ["Zoey"], ["the"], ["and"], [names[0].upper()]])
    rng.shuffle(people)
    clauses = []
    if rng.random() < 0.5:  # everyone, once: the answers that parse, right or wrong
        people = names
    else:  # some people, maybe an unknown one or a repeat
        people = people[: rng.randrange(1, len(people) + 1)]
    for i, name in enumerate(people):
        role = rng.choice(["knight", "knave"] * 4 + ["knights", "knaves", "Knight", "spy", ""])
        form = rng.choice([0, 0, 0, 1, 2, 3, 4, 5, 6])
        if form == 0:
            clauses.append(f"({i + 1}) {name} is a {role}")
        elif form == 1:
            clauses.append(f"{name}: {role}")
        elif form == 2:
            clauses.append(f"{i + 1}. **{name}** is not a {role}.")
        elif form == 3:
            clauses.append(f"{name} and {rng.choice(names)} are {role}")
        elif form == 4:
            clauses.append(f"so {name} is the {role}!")
        elif form == 5:
            clauses.append(f"{name} is a {role} and {name} is a {rng.choice(['knight', 'knave'])}")
        else:
            clauses.append(name)
    sep = rng.choice(["\n", ", ", "; ", " and ", ". ", "\n\n", " "])
    return wrap_answer(rng, sep.join(clauses), strict=rng.random() < 0.7)


HE_SNIPPETS = [
    "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n", "    return a + b\n",
    "return a + b", "def add(a, b):\n  return a +\n", "import math\nprint(math.pi)\n", "",
    "def add(*args):\n    return sum(args)\n", "lambda: 0", "x = [i for i in range(10)]\n",
    "def add(a, b):\n\treturn a+b\n", "class A:\n    pass\n", "def add(a, b):\n    raise ValueError\n",
    "\x00", "def add(a, b):\n    return a + b  # \udcff".encode("utf-8", "replace").decode(),
]


def humaneval_answer(rng: random.Random, row: dict) -> str:
    code = rng.choice(HE_SNIPPETS)
    if rng.random() < 0.3:
        code += rand_unicode(rng, rng.randrange(1, 30))
    fence = rng.choice(["```python\n", "```py\n", "```\n", "```Python3 \n", "``` python\n", "~~~python\n", ""])
    close = rng.choice(["```", "", "```\n```python\nsecond()\n```", "``"])
    return wrap_answer(rng, f"{fence}{code}{close}")


def wrap_answer(rng: random.Random, answer: str, strict: bool = False) -> str:
    """The answer in the R1 format, or (sometimes) with the tags dropped, doubled or reordered."""
    think = rng.choice(["", "let me think", rand_unicode(rng, rng.randrange(0, 40)), "2+2=4\n" * 5])
    if strict or rng.random() < 0.7:
        end = rng.choice(["", "<|im_end|>"])
        return rng.choice(["", "<think>"]) + f"{think}</think> <answer> {answer} </answer>{end}"
    return rng.choice([
        answer, f"<answer>{answer}", f"{answer}</answer>", f"<answer>{answer}</answer><answer>{answer}</answer>",
        f"<answer>{answer}</answer></think>", f"<think>{think}<answer>{answer}</answer></think>",
        f"{think} The answer is {answer}.", f"<think>{think}</think><answer>{answer}</answer>" * 2,
    ])


TASK_ANSWERS = {"kk": kk_answer, "kk_easy": kk_answer, "math": math_answer, "gsm8k": gsm8k_answer,
                "mmlu_pro": mmlu_answer, "humaneval_plus": humaneval_answer}


def megabyte_completions(rng: random.Random, answer: str) -> list[str]:
    """N_MEGABYTE 1 MB completions: junk, a box opened over and over, then one of a few floods."""
    flood = rng.choice([
        "<think>" + "<answer>x</think>" * (MEGABYTE // 17) + answer,
        "<think> ok </think> <answer> " + "9" * MEGABYTE + " </answer>",
        "<think> ok </think> <answer> " + "(1) Zoey is a knight, " * (MEGABYTE // 22) + " </answer>",
        "```python\n" + "x = 1\n" * (MEGABYTE // 6) + answer,
        "<answer>answer is" + " " * MEGABYTE + "x</answer>",
    ])
    texts = [(rand_unicode(rng, 4096) * (MEGABYTE // 4096 + 1))[:MEGABYTE] + answer,
             r"\boxed{" * (MEGABYTE // 7 + 1) + answer, flood]
    return texts[:N_MEGABYTE]


# Answers that make a naive grader compute for minutes (towers, factorials, 10^-999999999): each
# goes in once per task, boxed and R1-formatted. The math grader spends up to its time limit on
# some of them, so they are not left to chance in the random mix.
EXPENSIVE_ANSWERS = [
    "9^{9^{9^{9}}}", "10^{10^{10}}", "(10^{8})!", "100000!", r"\binom{10^{9}}{5 \cdot 10^{8}}",
    "3^{1000000000}", "2^{2^{2^{2^{2}}}}", "10^{10000}", "2**10**10", "10**5000", "1e10000", "1e999999999",
    "1E-999999999", r"\frac{1}{0}", "0/0", "0^0", r"\sqrt{-1}^{10^{9}}", r"\Gamma(10^{9})",
    # Nested deep, yet short enough (< 400 characters) for math-verify: its parse time grows
    # ~1.5x per level, so these run into the time limit.
    "{" * 20 + "1" + "}" * 20, "(" * 30 + "1" + ")" * 30, r"\sqrt{" * 50 + "2" + "}" * 50,
    "2^{" * 60 + "2" + "}" * 60, r"\left(" * 25 + "1" + r"\right)" * 25, r"\frac{1}{" * 39 + "2" + "}" * 39,
]

# How the strings are made: (kind, weight). Answers in the task's own format reach the deepest
# grading; math's deep path (math-verify and sympy, ~10 ms a call) gets a smaller share so the
# file stays fast, and still hundreds of calls (counted in the math test).
MIX = {"answer": 0.40, "unicode": 0.10, "odd": 0.03, "number": 0.07, "deep": 0.03, "unbalanced": 0.05,
       "tags": 0.08, "whitespace": 0.02, "tagged_junk": 0.06, "mix": 0.16}
MIX_FOR = {"math": {**MIX, "answer": 0.04, "number": 0.01, "tags": 0.02, "tagged_junk": 0.01, "mix": 0.03,
                    "unicode": 0.25, "odd": 0.10, "deep": 0.10, "unbalanced": 0.20}}


def fuzz_cases(name: str, n: int = N_STRINGS, seed: int = 0) -> list[tuple[str, dict]]:
    """n (completion, row) pairs for the task `name`, deterministic in (name, seed)."""
    rng = random.Random(f"grader-fuzz:{name}:{seed}")
    rows = rows_for(name)
    task_answer = TASK_ANSWERS[name]
    cases = [(text, rows[0]) for text in megabyte_completions(rng, task_answer(rng, rows[0]))]
    cases += [(wrap_answer(rng, f"\\boxed{{{answer}}}", strict=True), rows[0]) for answer in EXPENSIVE_ANSWERS]
    kinds, weights = zip(*MIX_FOR.get(name, MIX).items(), strict=True)
    while len(cases) < n:
        row = rng.choice(rows)
        kind = rng.choices(kinds, weights)[0]
        if kind == "answer":
            text = task_answer(rng, row)
        elif kind == "unicode":
            text = rand_unicode(rng, rng.randrange(0, 300))
        elif kind == "odd":
            text = "".join(rng.choice(ODD_CHARS) for _ in range(rng.randrange(1, 100)))
        elif kind == "number":
            number = huge_number(rng)
            text = wrap_answer(rng, rng.choice([f"\\boxed{{{number}}}", number, f"#### {number}"]))
        elif kind == "deep":
            text = wrap_answer(rng, rng.choice([deep_latex(rng), f"\\boxed{{{deep_latex(rng)}}}"]))
        elif kind == "unbalanced":
            text = unbalanced_boxed(rng)
        elif kind == "tags":
            text = tag_soup(rng, inner=rng.choice(["", task_answer(rng, row), junk_fragment(rng)]))
        elif kind == "whitespace":
            text = whitespace_run(rng)
        elif kind == "tagged_junk":
            text = f"<answer>{rand_unicode(rng, rng.randrange(0, 100))}</answer>"
        else:  # a mix: fragments of everything, now and then around a real answer
            parts = [junk_fragment(rng) for _ in range(rng.randrange(1, 12))]
            if rng.random() < 0.5:
                parts.insert(rng.randrange(len(parts) + 1), task_answer(rng, row))
            text = "".join(parts)
        cases.append((text[:MAX_CHARS], row))
    return cases


# Programs the sandbox must contain: each fails (or passes) within its time limit, and the grader
# returns a Score. They stand in for a policy model that writes hostile or broken code.
HOSTILE_PROGRAMS = [
    "while True:\n    pass\n",
    "def add(a, b):\n    while True:\n        pass\n",
    "while True:\n    print('x' * 1000)\n",
    "import sys\nwhile True:\n    sys.stderr.write('e' * 4096)\n",
    "x = bytearray(10**12)\n",
    "x = []\nwhile True:\n    x.append(' ' * 10**7)\n",
    "import os\nwhile True:\n    os.fork()\n",
    "import subprocess\nsubprocess.run(['sleep', '1000'])\n",
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "raise RuntimeError('boom')\n",
    "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)\n",
    "import time\ntime.sleep(10**6)\n",
    "import threading, time\nfor _ in range(10**6):\n    threading.Thread(target=time.sleep, args=(100,)).start()\n",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "open('/tmp/lowres-fuzz-escape', 'w').write('x')\n",
    "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(0)\nwhile True: pass\n",
    "def add(a, b):\n    return a + b\n",  # a correct one, to see a pass through the same path
]


def hostile_completions() -> list[str]:
    return [f"<think> x </think> <answer>\n```python\n{code}```\n</answer>" for code in HOSTILE_PROGRAMS]


# ----------------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------------
def check_score(score, text: str) -> None:
    assert type(score) is Score, f"{type(score).__name__} for {text[:200]!r}"
    assert type(score.formatted) is bool and type(score.correct) is bool, text[:200]
    assert isinstance(score.reward, (int, float)) and not isinstance(score.reward, bool), text[:200]
    assert math.isfinite(score.reward), text[:200]
    assert score.extracted is None or isinstance(score.extracted, str), text[:200]


def run_fuzz(task, cases, bound_s: float) -> tuple[float, str, list[Score]]:
    """Score every case, each within `bound_s` seconds; return (the slowest call's seconds, the
    start of its text, the Scores)."""
    slowest, slowest_text, scores = 0.0, "", []
    for text, row in cases:
        start = time.monotonic()
        try:
            score = task.score(text, row)
        except Exception as exc:  # report the input, not only the traceback
            raise AssertionError(f"{task.name}.score raised {type(exc).__name__}: {exc} on {text[:300]!r}") from exc
        elapsed = time.monotonic() - start
        check_score(score, text)
        scores.append(score)
        if elapsed > slowest:
            slowest, slowest_text = elapsed, text[:200]
        assert elapsed < bound_s, f"{task.name}.score took {elapsed:.1f}s on {text[:300]!r}"
    return slowest, slowest_text, scores


def count_verdicts(scores: list[Score]) -> Counter:
    return Counter(formatted=sum(s.formatted for s in scores), correct=sum(s.correct for s in scores))


def test_fuzz_generator_is_seeded_and_adversarial():
    cases = fuzz_cases("gsm8k")
    assert len(cases) >= 10_000
    assert [t for t, _ in cases[:200]] == [t for t, _ in fuzz_cases("gsm8k")[:200]]
    lengths = [len(t) for t, _ in cases]
    assert sum(n >= MEGABYTE for n in lengths) == N_MEGABYTE
    assert any(any(ord(c) > 0xFFFF for c in t) for t, _ in cases[N_MEGABYTE:])  # astral planes
    assert not any(0xD800 <= ord(c) <= 0xDFFF for t, _ in cases for c in t[:5000])  # no surrogates
    assert any(r"\frac{" * 1000 in t for t, _ in cases)
    assert any("<answer>" * 50 in t for t, _ in cases)


@pytest.mark.parametrize("name", [t for t in TASKS if t not in ("math", "humaneval_plus")])
def test_grader_never_raises_or_hangs(name):
    task = get_task(name)
    cases = fuzz_cases(name)
    slowest, text, scores = run_fuzz(task, cases, HANG_MARGIN_S)
    verdicts = count_verdicts(scores)
    print(f"{name}: {len(cases)} strings, {dict(verdicts)}, slowest call {slowest:.3f}s on {text[:80]!r}")
    # The answers in the task's format reach the grading proper, right and wrong.
    assert verdicts["correct"] >= 50 and verdicts["formatted"] - verdicts["correct"] >= 50


@pytest.mark.slow  # ~25 s: 1,800 math-verify/sympy checks, a few running to the time limit
def test_math_grader_never_raises_or_hangs(monkeypatch):
    task = MathTask(timeout_s=MATH_TIMEOUT_S)
    cases = fuzz_cases("math")
    symbolic = Counter()
    real_symbolic_equal = math_task.symbolic_equal

    def counting(gold, pred, timeout_s=MATH_TIMEOUT_S):
        symbolic["calls"] += 1
        return real_symbolic_equal(gold, pred, timeout_s)

    monkeypatch.setattr(math_task, "symbolic_equal", counting)
    import sympy  # noqa: F401  (first: its import adds a warnings filter that would win over ours)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sympy's, on odd parses
        slowest, text, scores = run_fuzz(task, cases, MATH_TIMEOUT_S + HANG_MARGIN_S)
    verdicts = count_verdicts(scores)
    print(f"math: {len(cases)} strings, {symbolic['calls']} reached math-verify/sympy, {dict(verdicts)}, "
          f"slowest call {slowest:.3f}s on {text[:80]!r}")
    assert symbolic["calls"] >= 1000  # the deep path is really exercised, not only "no box found"
    assert verdicts["correct"] >= 50


@pytest.mark.slow  # ~20 s: 138 real sandbox runs, the endless ones killed at the time limit
def test_humaneval_plus_grader_never_raises_or_hangs(monkeypatch):
    task = HumanEvalPlusTask(timeout_s=SANDBOX_TIMEOUT_S)
    cases = fuzz_cases("humaneval_plus")
    # The real sandbox: the hostile programs, each contained and failed (the last one is correct)...
    hostile = [(text, HE_ROW) for text in hostile_completions()]
    slowest_real, _, scores = run_fuzz(task, hostile, SANDBOX_TIMEOUT_S + HANG_MARGIN_S)
    assert [s.correct for s in scores] == [False] * (len(hostile) - 1) + [True]
    # ...and a seeded sample of the fuzz strings.
    rng = random.Random("grader-fuzz:humaneval_plus:sandbox")
    sample = rng.sample(cases, N_REAL_SANDBOX)
    slowest_sample, _, _ = run_fuzz(task, sample, SANDBOX_TIMEOUT_S + HANG_MARGIN_S)
    print(f"humaneval_plus: {len(hostile) + len(sample)} run in the sandbox, slowest "
          f"{max(slowest_real, slowest_sample):.2f}s")

    # All the strings: the grader's own code with the sandbox call stubbed out.
    programs = Counter()

    def fake_run_python(code, **kwargs):
        assert isinstance(code, str) and code.rstrip().endswith(f"check({HE_ROW['entry_point']})")
        programs["built"] += 1
        passed = programs["built"] % 7 == 0
        return SandboxResult(passed, 0 if passed else 1, "", "", False, None if passed else "stubbed")

    monkeypatch.setattr(humaneval_plus, "run_python", fake_run_python)
    slowest, text, _ = run_fuzz(task, cases, HANG_MARGIN_S)
    assert programs["built"] == len(cases)
    print(f"humaneval_plus: {len(cases)} strings, slowest call (sandbox stubbed) {slowest:.3f}s on {text[:80]!r}")
