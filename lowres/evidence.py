"""Is a run's effect real? Paired comparisons between models: an exact test, an interval and a verdict.

Every model answered the same questions n_samples times; a question's score is the share of its samples that
were right. A comparison is a signed sum of models (rlvr − warmup; (rlvr-no-warmup − base) − (control − warmup)).
For each question q, d_q is that signed sum of the models' scores (an arm run with several GRPO seeds counts
with its seeds' mean). The difference is the mean of d_q over the questions every model answered.

The test. The question is the unit the claim generalises over, so the test is over questions: an exact paired
sign-flip test. If the two sides do not differ, each d_q is as likely to be positive as negative; the p-value
is the share of the 2^m sign patterns of the m questions that differ whose |sum| reaches the observed one. The
d_q are multiples of 1/(samples × seeds), so they are counted exactly as integers by dynamic programming: no
resampling, so no random seed can move a verdict (a bootstrap's could, near the boundary).

Seeds. A GRPO seed moves all of its model's questions together; a test over questions sees that shift as an
effect and, with two seeds per arm, says "better" 7-11% of the time when GRPO does nothing (seed SD 10-15
points; ../shared/reviews/stats-review-3.md). So a comparison with an arm of several seeds also gets a Welch t
test whose variance adds each such arm's between-seed variance of its mean score to the questions', with the
fewest degrees of freedom of its parts (k seeds give k − 1: 2 seeds give 1, so their interval is wide). Its
p-value and the sign-flip's are combined by taking the larger: each test holds its error rate under its own
null, so the larger holds both. With one seed per arm a verdict is about these trained models, not about a rerun's luck.

The interval is the 95% t interval with that variance (over questions only, without seeds).

The verdict is "better" or "worse" only when (1) at least MIN_DIFFERING_QUESTIONS questions differ, (2) the
p-value, adjusted by Holm over every comparison of the report (one family: the tasks × comparisons), is below
ALPHA, and (3) the interval lies on that side of 0. Otherwise "no measurable difference", and `why` says
which condition failed.

A gain "net of the control" subtracts what the same GRPO gained from the same start with a coin-flip reward
(rlvr-random-reward): on Qwen2.5, random rewards alone raised MATH-500 by 21 points (Shao et al. 2025).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

ALPHA = 0.05
# Below this many questions with a difference no verdict is given: the exact test could reach p < 0.05 from 6
# (2/2^6 = 0.031), but a claim that rests on a handful of questions does not survive the next handful.
MIN_DIFFERING_QUESTIONS = 10
# The sign-flip's dynamic programme costs questions × (sum of |d_q| as integers); past this it is sampled
# (a fixed seed and 200,000 sign patterns: a p-value within ±0.001 of the exact one).
EXACT_WORK_LIMIT = 50_000_000
MONTE_CARLO_DRAWS = 200_000

Scores = dict[str, float | Fraction]  # question id -> share of its samples that were right


@dataclass
class Comparison:
    task: str
    title: str                 # e.g. "rlvr vs warmup"
    meaning: str               # what the difference measures
    difference: float          # points (percent)
    low: float                 # 95% interval, points
    high: float
    p_value: float             # the exact sign-flip test's (and, with seeds, the seed-aware test's: the larger)
    p_adjusted: float          # Holm over the report's comparisons
    differing: int             # questions whose d_q is not 0
    verdict: str               # better | worse | no measurable difference
    questions: int
    seeds: dict[str, int]      # side label -> seeds pooled
    why: str = ""              # what decided the verdict
    tests: dict[str, float] = field(default_factory=dict)  # each test's own p-value
    outcome: str = "accuracy"  # accuracy, or well-formed answers (the share the task's format check passes)

    def line(self) -> str:
        seeds = ", ".join(f"{side} × {n} seeds" for side, n in self.seeds.items() if n > 1)
        what = "" if self.outcome == "accuracy" else f", {self.outcome} answers"
        return (f"**{self.title}**{what} ({self.meaning}), {self.task}: {self.difference:+.1f} points, 95% interval "
                f"[{self.low:+.1f}, {self.high:+.1f}], p {format_p(self.p_value)} (Holm-adjusted "
                f"{format_p(self.p_adjusted).removeprefix('= ')}), "
                f"{self.differing} of {self.questions} questions differ"
                f"{f' ({seeds})' if seeds else ''}: **{self.verdict}**{f' — {self.why}' if self.why else ''}")


def format_p(p: float) -> str:
    """"= 0.031", "= 0.0004", "< 0.0001"."""
    return "< 0.0001" if p < 1e-4 else f"= {p:.4f}" if p < 0.001 else f"= {p:.3f}"


# ---------------------------------------------------------------- the data


def right_by_question(samples: Path, outcome: str = "correct") -> dict[str, list[bool]]:
    """A task's samples.jsonl → question id → whether each of its samples was right (or, with outcome
    "formatted", well-formed)."""
    right: dict[str, list[bool]] = {}
    for line in Path(samples).read_text().splitlines():
        if line.strip():
            s = json.loads(line)
            right.setdefault(str(s["question_id"]), []).append(bool(s[outcome]))
    return right


def question_scores(samples: Path, outcome: str = "correct") -> dict[str, Fraction]:
    """A task's samples.jsonl → question id → share of its samples that were right (or well-formed), exact."""
    return {q: Fraction(sum(v), len(v)) for q, v in right_by_question(samples, outcome).items()}


def _exact(value: float | Fraction) -> Fraction:
    # Scores are shares c/n of a few samples: a float given for one (a test, an old caller) is read back exactly.
    return value if isinstance(value, Fraction) else Fraction(value).limit_denominator(10_000)


# ---------------------------------------------------------------- the tests


def sign_flip_p(differences: list[Fraction]) -> float:
    """Exact two-sided paired sign-flip p-value of the mean of `differences` against 0."""
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return 1.0
    scale = math.lcm(*(d.denominator for d in nonzero))
    weights = [abs(int(d * scale)) for d in nonzero]
    observed = abs(sum(int(d * scale) for d in nonzero))
    total = sum(weights)
    import numpy as np

    if len(weights) * total > EXACT_WORK_LIMIT:
        rng = np.random.default_rng(0)
        w = np.array(weights, dtype=np.float64)
        signs = rng.choice([-1.0, 1.0], size=(MONTE_CARLO_DRAWS, len(w)))
        hits = int((np.abs(signs @ w) >= observed - 0.5).sum())
        return (hits + 1) / (MONTE_CARLO_DRAWS + 1)
    # probability of each sum −total … +total, one question's sign at a time
    probs = np.zeros(2 * total + 1)
    probs[total] = 1.0
    for w in weights:
        shifted = np.zeros_like(probs)
        shifted[w:] += probs[:-w]
        shifted[:-w] += probs[w:]
        probs = 0.5 * shifted
    sums = np.arange(-total, total + 1)
    return float(min(1.0, probs[np.abs(sums) >= observed].sum()))


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the incomplete beta function (Lentz's method, as in Numerical Recipes).
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with `df` (real, ≥ 1 here) degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t))


def t_quantile(df: float, level: float = 0.95) -> float:
    """The t with P(|T| ≤ t) = level, by bisection on the distribution function."""
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > 1 - level:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided_p(mid, df) > 1 - level else (low, mid)
    return (low + high) / 2


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error rate stays ≤ α over all the p-values together."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------- one comparison


@dataclass
class Difference:
    """A signed sum of models over their common questions, tested; before Holm and the verdict."""
    value: float           # points
    low: float
    high: float
    p_value: float
    differing: int
    questions: int
    tests: dict[str, float]


def difference(terms: list[tuple[float, list[Scores]]]) -> Difference:
    """`terms`: (sign, [an arm's scores per seed]) for each model, e.g. [(+1, [rlvr seeds…]), (−1, [warmup])]."""
    common = sorted(set.intersection(*(set(s) for _, seeds in terms for s in seeds)))
    if not common:
        raise ValueError("the models share no question")
    d = [sum((Fraction(sign) * sum((_exact(s[q]) for s in seeds), Fraction(0)) / len(seeds)
              for sign, seeds in terms), Fraction(0)) for q in common]
    n = len(d)
    value = float(sum(d) / n)
    differing = sum(1 for x in d if x != 0)
    tests = {"sign_flip": sign_flip_p(d)}
    # Variance of the mean: the questions' (sample variance / n) plus, for an arm of k ≥ 2 seeds, the variance
    # of its seeds' mean scores / k.
    parts: list[tuple[float, float]] = []  # (variance, degrees of freedom)
    if n > 1:
        parts.append((statistics.variance([float(x) for x in d]) / n, n - 1))
    for sign, seeds in terms:
        if len(seeds) > 1:
            means = [float(sum(_exact(s[q]) for q in common) / n) for s in seeds]
            parts.append((sign * sign * statistics.variance(means) / len(seeds), len(seeds) - 1))
    variance = sum(v for v, _ in parts)
    # what the difference can be at all: each model's score lies in [0, 1]
    possible = (float(sum(sign for sign, _ in terms if sign < 0)), float(sum(sign for sign, _ in terms if sign > 0)))
    if n < 2:  # one question: nothing to estimate a spread from — the interval is everything possible
        low, high = possible
    elif variance == 0:  # every question differs by the same amount (and no seed varies)
        low = high = value
    else:
        # The fewest degrees of freedom of any part, not Satterthwaite's: with 2 seeds the seed part's variance
        # rests on 1 degree of freedom, and Satterthwaite's larger df gave 14% false "better"s in simulation
        # (benchmarks/verdict_error_rates.py); the minimum keeps the rate ≤ 5% there.
        df = min(k for v, k in parts if v > 0)
        half = t_quantile(df) * math.sqrt(variance)
        low, high = max(possible[0], value - half), min(possible[1], value + half)
        if any(len(seeds) > 1 for _, seeds in terms):
            tests["seed_aware_t"] = t_two_sided_p(value / math.sqrt(variance), df)
    return Difference(100 * value, 100 * low, 100 * high, max(tests.values()), differing, n, tests)


def _questions_differ(n: int) -> str:
    return "1 question differs" if n == 1 else f"{n} questions differ"


def verdict(found: Difference, p_adjusted: float) -> tuple[str, str]:
    """(verdict, why) for a tested difference and its Holm-adjusted p-value."""
    if found.differing < MIN_DIFFERING_QUESTIONS:
        return ("no measurable difference",
                f"{_questions_differ(found.differing)}, fewer than the {MIN_DIFFERING_QUESTIONS} a verdict needs")
    if p_adjusted >= ALPHA:
        return "no measurable difference", f"adjusted p ≥ {ALPHA}"
    if found.low > 0:
        return "better", ""
    if found.high < 0:
        return "worse", ""
    return "no measurable difference", "the interval includes 0"


def decide(pending: list[tuple]) -> list[Comparison]:
    """(task, title, meaning, difference, seeds[, outcome]) for every comparison of one report → Comparisons
    with Holm-adjusted p-values (the report is the family: every task and outcome) and verdicts."""
    adjusted = holm([entry[3].p_value for entry in pending])
    out = []
    for (task, title, meaning, found, seeds, *outcome), p_adj in zip(pending, adjusted, strict=True):
        said, why = verdict(found, p_adj)
        out.append(Comparison(task, title, meaning, round(found.value, 2), round(found.low, 2), round(found.high, 2),
                              found.p_value, p_adj, found.differing, said, found.questions, seeds, why,
                              found.tests, *(outcome or ["accuracy"])))
    return out


# ---------------------------------------------------------------- a run's comparisons


# What a run's comparisons mean: (title, meaning, terms: label → +1/-1). START stands for the model rlvr
# and its control start from: the warmup model, or the base with rlvr.start_from: base.
COMPARISONS = (
    ("warmup vs base", "warmup alone", {"warmup": 1, "base": -1}),
    ("rlvr vs START", "GRPO on top of its start", {"rlvr": 1, "START": -1}),
    ("rlvr vs rlvr-no-warmup", "the same GRPO from the warmed model vs from the base",
     {"rlvr": 1, "rlvr-no-warmup": -1}),
    ("rlvr-no-warmup vs base", "GRPO from the base model", {"rlvr-no-warmup": 1, "base": -1}),
    ("rlvr-random-reward vs START", "GRPO with a coin-flip reward, from rlvr's start",
     {"rlvr-random-reward": 1, "START": -1}),
    ("rlvr net of the control", "rlvr vs rlvr-random-reward: its gain minus the coin-flip control's, same start",
     {"rlvr": 1, "rlvr-random-reward": -1}),
    ("rlvr-no-warmup net of the control", "(rlvr-no-warmup − base) − (rlvr-random-reward − START)",
     {"rlvr-no-warmup": 1, "base": -1, "rlvr-random-reward": -1, "START": 1}),
)


def arm_groups(labels: list[str]) -> dict[str, list[str]]:
    """Model labels by the arm they belong to: rlvr-seed0, rlvr-seed1 → rlvr; base → base."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.partition("-seed")[0], []).append(label)
    return groups


# The comparisons also made on the share of well-formed answers: what a reward that pays for the format
# teaches first, and what the accuracy alone would not show (a model can learn the format and not the answers).
FORMAT_COMPARISONS = ("warmup vs base", "rlvr vs START", "rlvr net of the control")


def compare(scores: dict[str, dict[str, Scores]], start_of_rlvr: str = "warmup",
            formatted: dict[str, dict[str, Scores]] | None = None) -> list[Comparison]:
    """Every comparison the run's models allow, per task. `scores`: label → task → question scores.
    `start_of_rlvr`: the model rlvr (and its control) started from: warmup, or base (rlvr.start_from: base).
    `formatted`: the same for the share of well-formed answers, compared in FORMAT_COMPARISONS; one Holm
    family over all of them."""
    pending = _pending(scores, start_of_rlvr, COMPARISONS, "accuracy")
    if formatted:
        chosen = tuple(c for c in COMPARISONS if c[0] in FORMAT_COMPARISONS)
        pending += _pending(formatted, start_of_rlvr, chosen, "well-formed")
    return decide(pending)


def _pending(scores: dict[str, dict[str, Scores]], start_of_rlvr: str, comparisons, outcome: str) -> list[tuple]:
    groups = arm_groups(list(scores))
    pending = []
    for title, meaning, terms in comparisons:
        title, meaning = title.replace("START", start_of_rlvr), meaning.replace("START", start_of_rlvr)
        combined: dict[str, int] = {}
        for key, sign in terms.items():
            key = start_of_rlvr if key == "START" else key
            combined[key] = combined.get(key, 0) + sign
        combined = {k: v for k, v in combined.items() if v}  # base − base cancels when rlvr starts from the base
        if len(combined) < 2 or not all(k in groups for k in combined):
            continue
        tasks = set.intersection(*(set(scores[label]) for k in combined for label in groups[k]))
        for task in sorted(tasks):
            signed = [(float(sign), [scores[label][task] for label in groups[k]]) for k, sign in combined.items()]
            try:
                found = difference(signed)
            except ValueError:
                continue
            pending.append((task, title, meaning, found, {k: len(groups[k]) for k in combined}, outcome))
    return pending


def compare_models(pairs: list[tuple[list[str], list[str]]], files: dict[str, dict[str, Path]]) -> list[Comparison]:
    """`lowres compare`: each pair (A's labels, B's labels: an arm's seeds pooled) on every task both answered,
    paired on the questions both answered; Holm over all of them. `files`: label → task → samples.jsonl.
    A pair with no question in common on any task is refused: scores over different questions are no
    comparison."""
    from lowres.errors import UserError

    pending = []
    for a, b in pairs:
        tasks = set.intersection(*(set(files.get(label, {})) for label in a + b))
        found_any = False
        for task in sorted(tasks):
            terms = [(1.0, [question_scores(files[label][task]) for label in a]),
                     (-1.0, [question_scores(files[label][task]) for label in b])]
            try:
                found = difference(terms)
            except ValueError:
                continue
            found_any = True
            name = {side[0].rpartition("-seed")[0] if len(side) > 1 else side[0]: len(side) for side in (a, b)}
            pending.append((task, " vs ".join(name), "paired on the questions both answered", found, name))
        if not found_any:
            raise UserError(f"{', '.join(a)} and {', '.join(b)} answered no question in common"
                            + (f" on {', '.join(sorted(tasks))}" if tasks else " (no task in common)")
                            + ": evaluate them with the same eval.seed and limit")
    return decide(pending)


def accuracy_interval(scores: Scores) -> tuple[float, float]:
    """95% t interval of one model's accuracy (the mean question score), as shares."""
    values = [float(_exact(v)) for v in scores.values()]
    mean = statistics.fmean(values)
    if len(values) < 2:
        return 0.0, 1.0
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return max(0.0, mean - half), min(1.0, mean + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one question with n samples of which c are correct (k ≤ n: with fewer samples than k
    there is nothing to estimate it from)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 ≤ k ≤ n samples and 0 ≤ c ≤ n correct (n={n}, c={c})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def pass_at_k_curve(samples: Path) -> dict[int, float]:
    """k → unbiased pass@k (Chen et al. 2021) over a task's questions, for k = 1 … the fewest samples any
    question has (pass@k is not defined for a question with fewer than k samples)."""
    right = right_by_question(samples)
    n = min(len(v) for v in right.values())
    return {k: sum(pass_at_k(len(v), sum(v), k) for v in right.values()) / len(right) for k in range(1, n + 1)}


def comparisons_json(comparisons: list[Comparison]) -> list[dict]:
    return [asdict(c) for c in comparisons]


def method_note(comparisons: list[Comparison]) -> str:
    """One sentence for a report: how its p-values, intervals and verdicts were made."""
    return (f"Exact paired sign-flip tests over questions (with seeds: also a seed-aware Welch t test, the larger "
            f"p counts); p-values Holm-adjusted over these {len(comparisons)} comparisons; 95% t intervals; a "
            f"verdict needs adjusted p < {ALPHA}, the interval on one side of 0 and ≥ {MIN_DIFFERING_QUESTIONS} "
            f"questions that differ.")
