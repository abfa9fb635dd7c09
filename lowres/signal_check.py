"""Can GRPO learn here? A look at the start model's completions before any GPU hour is spent.

GRPO learns only from groups whose completions score differently (a group's advantage is its rewards minus
their mean), so three things make a small-data run learn nothing, quietly: completions cut at
`max_completion_length` (their answers, and so their rewards, are lost), groups whose completions all score
the same (all right or, far more often, all wrong), and a learning rate too low for LoRA to move the policy.
The check samples `num_generations` completions for each training prompt (all of them, or a seeded subset
of `rlvr.signal_check_prompts`) with the stage's start model and GRPO's own sampling settings, grades them
with the task, and reports:

- the share of completions that hit the length cap, and the completion-length percentiles;
- the share of prompts whose group is all right, all wrong, or has no reward difference at all;
- each prompt's pass rate and pass@G (a prompt counts if any of its G completions is right);
- the sampling time of one GRPO step, measured: the check samples in batches of one step's rows;
- each problem with its fix and the number to use.

`rlvr.signal_check: warn` prints the problems and trains; `refuse` stops with one line (exit 2) before any
training; `off` skips the check. The result is written to the stage folder (signal_check.json) and shown in
the run's report. The same samples serve `data.target.select: informative`, which keeps the prompts the
start model sometimes, but not always, solves (lowres.train.rlvr).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass, field

# LoRA moves far fewer weights than full fine-tuning and needs a learning rate about 10× higher for the same
# change per step ("LoRA Without Regret", Schulman et al. 2025); the paper's full-fine-tuning GRPO used 1e-6.
PAPER_FULL_FT_LEARNING_RATE = 1e-6
LORA_LEARNING_RATE_FACTOR = 10
# Above this share of prompts without a reward difference, most of a GRPO step's batch teaches nothing.
NO_SIGNAL_WARN_SHARE = 0.5


@dataclass
class PromptGroup:
    """The G completions of one prompt, graded."""

    id: str
    correct: list[bool]
    rewards: list[float]
    lengths: list[int]
    truncated: list[bool]

    @property
    def pass_rate(self) -> float:
        return sum(self.correct) / len(self.correct)

    @property
    def has_signal(self) -> bool:
        """Whether GRPO gets a non-zero advantage from this group: its rewards are not all equal."""
        return max(self.rewards) - min(self.rewards) > 1e-9


@dataclass
class Problem:
    kind: str      # truncation | no_signal | too_easy | learning_rate
    message: str   # what was measured
    fix: str       # what to change, with the number to use


@dataclass
class SignalCheck:
    stage: str
    start_model: str
    n_prompts: int
    num_generations: int
    max_completion_length: int
    temperature: float
    truncated_share: float
    length_percentiles: dict[str, int]          # p50, p90, max (tokens)
    all_right_share: float
    all_wrong_share: float
    # Groups whose rewards are all equal. The two shares above count right answers, this one rewards: with a format
    # term in the reward an all-wrong (or all-right) group can still differ, so it need not include them.
    no_signal_share: float
    pass_at_g: float                            # prompts with at least one right completion
    mean_pass_rate: float
    pass_rates: dict[str, float]                # prompt id -> share of its G completions that are right
    rows_per_step: int
    sampling_seconds_per_step: float | None     # measured: one batch of a GRPO step's rows
    tokens_per_second: float | None
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SignalCheck:
        return cls(**{**data, "problems": [Problem(**p) for p in data.get("problems", [])]})


def percentile(values: list[int], q: float) -> int:
    """The nearest-rank percentile (a value that occurs), q in [0, 100]."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def expected_signal_share(right_counts: list[int], measured_with: int, generations: int) -> float:
    """The share of groups expected to hold a right and a wrong completion with `generations` samples per
    prompt, from each prompt's `right_counts` of `measured_with` samples.

    A prompt's own few samples say little (0 of 4 right fits a pass rate of 0 as well as 0.3), so the prompts
    are pooled: a Beta distribution of pass rates is fitted to all the counts (beta-binomial, method of
    moments), and each prompt's expected 1 − p^G − (1 − p)^G is taken under its posterior. It follows the
    measurements: when every answer was right (or every one wrong) nothing suggests a prompt that is otherwise,
    and the estimate is 0; when one prompt of many was ever solved, the others are expected to stay unsolved."""
    n, counts = measured_with, right_counts
    if not counts or n < 2:
        return 0.0
    rates = [k / n for k in counts]
    mean = statistics.fmean(rates)
    if mean in (0.0, 1.0):
        return 0.0
    # Var(k/n) = m(1-m)/n · (1 + (n-1)ρ) for the beta-binomial, with ρ = 1/(α+β+1) the spread of the pass rates.
    spread = (statistics.pvariance(rates) * n / (mean * (1 - mean)) - 1) / (n - 1)
    rho = min(max(spread, 1e-6), 1 - 1e-6)
    total = 1 / rho - 1
    a, b = mean * total, (1 - mean) * total

    def moment(x: float, y: float) -> float:  # E[p^G] for p ~ Beta(x, y)
        return math.prod((x + i) / (x + y + i) for i in range(generations))

    return statistics.fmean(1 - moment(a + k, b + n - k) - moment(b + n - k, a + k) for k in counts)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a share k/n: the p whose Binomial(n, p) puts k in neither tail
    beyond (1 − level)/2. Found by bisection on the binomial distribution function (no scipy needed)."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1 - level) / 2

    def at_most(j: int, p: float) -> float:  # P(X ≤ j) under Binomial(n, p), summed in logs (n may be thousands)
        if p >= 1:
            return 1.0 if j >= n else 0.0
        return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                                     + i * math.log(p) + (n - i) * math.log1p(-p)) for i in range(j + 1)))

    def solve(j: int, target: float) -> float:  # the p where P(X ≤ j) falls to target (it falls as p grows)
        lo, hi = 0.0, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if at_most(j, mid) > target else (lo, mid)
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(k - 1, 1 - tail)  # P(X ≥ k) = tail
    upper = 1.0 if k == n else solve(k, tail)           # P(X ≤ k) = tail
    return lower, upper


def share_text(k: int, n: int) -> str:
    """A share and its exact 95% interval, e.g. "50% (95% CI 1–99%)": on a few prompts a share can only
    take a few values, and the interval says how little it pins down."""
    lower, upper = clopper_pearson(k, n)
    return f"{100 * k / n:.0f}% (95% CI {100 * lower:.0f}–{100 * upper:.0f}%)" if n else "0%"


def summarise(groups: list[PromptGroup], *, stage: str, start_model: str, max_completion_length: int,
              temperature: float, rows_per_step: int, sampling_seconds: float | None = None,
              batches: int | None = None) -> SignalCheck:
    """The check's statistics from graded groups (problems are added by `advise`)."""
    lengths = [n for g in groups for n in g.lengths]
    truncated = [t for g in groups for t in g.truncated]
    n = len(groups)
    per_step = (sampling_seconds / batches) if sampling_seconds is not None and batches else None
    return SignalCheck(
        stage=stage, start_model=start_model, n_prompts=n,
        num_generations=len(groups[0].correct) if groups else 0,
        max_completion_length=max_completion_length, temperature=temperature,
        truncated_share=statistics.fmean(truncated) if truncated else 0.0,
        length_percentiles={"p50": percentile(lengths, 50), "p90": percentile(lengths, 90), "max": max(lengths)}
        if lengths else {},
        all_right_share=sum(all(g.correct) for g in groups) / n if n else 0.0,
        all_wrong_share=sum(not any(g.correct) for g in groups) / n if n else 0.0,
        no_signal_share=sum(not g.has_signal for g in groups) / n if n else 0.0,
        pass_at_g=sum(any(g.correct) for g in groups) / n if n else 0.0,
        mean_pass_rate=statistics.fmean(g.pass_rate for g in groups) if groups else 0.0,
        pass_rates={g.id: g.pass_rate for g in groups},
        rows_per_step=rows_per_step,
        sampling_seconds_per_step=None if per_step is None else round(per_step, 2),
        tokens_per_second=round(sum(lengths) / sampling_seconds, 1) if sampling_seconds else None,
    )


def _round_up(value: float, step: int = 64) -> int:
    return int(math.ceil(value / step) * step)


def _prompts(check: SignalCheck, share: float) -> str:
    return share_text(round(share * check.n_prompts), check.n_prompts)


def _completions(check: SignalCheck, share: float) -> str:
    """A share of completions and its interval (which takes the completions as independent; those of one prompt
    are alike, so the true uncertainty is wider)."""
    n = check.n_prompts * check.num_generations
    return share_text(round(share * n), n)


def advise(check: SignalCheck, *, truncation_warn_fraction: float, learning_rate: float, max_prompt_length: int,
           max_seq_length: int, select: str = "random") -> list[Problem]:
    """Each problem the check shows, with its fix and the number to use. select: data.target.select (a fix
    already in place is not offered)."""
    problems = []
    cap, g = check.max_completion_length, check.num_generations
    if check.truncated_share > truncation_warn_fraction:
        # A cut completion's real length is unknown; the cut ones are at least the cap, so double it.
        p90 = check.length_percentiles.get("p90", cap)
        new_cap = _round_up(max(2 * cap, p90 + 1))
        seq = ("" if max_prompt_length + new_cap <= max_seq_length else
               f" and model.max_seq_length to {max_prompt_length + new_cap} (rlvr.max_prompt_length + the cap)")
        problems.append(Problem(
            "truncation",
            f"{_completions(check, check.truncated_share)} of completions hit rlvr.max_completion_length={cap} (their "
            f"answers and rewards are lost; 90th-percentile length {p90} tokens)",
            f"set rlvr.max_completion_length to {new_cap}{seq}, above the 90th-percentile length, and check again"))
    if check.no_signal_share > NO_SIGNAL_WARN_SHARE:
        too_easy = check.all_right_share > check.all_wrong_share
        wanted = "harder examples" if too_easy else "examples the start model sometimes solves"
        if select == "informative":  # already on: it kept all the sometimes-solved prompts the pool had
            fixes = [f"{wanted} (data.target.select is informative already: more candidates, data.target.select_pool, "
                     "or other data)"]
        else:
            fixes = [f"{wanted} (data.target.select: informative; pass@{g} was {_prompts(check, check.pass_at_g)})"]
        # Counted in right answers at both ends: the estimate is of groups holding a right and a wrong completion.
        right = [round(rate * g) for rate in check.pass_rates.values()]
        now = 1 - check.all_right_share - check.all_wrong_share
        more = expected_signal_share(right, g, 2 * g)
        if more >= now + 0.1:
            fixes.append(f"more generations (rlvr.num_generations {g} → {2 * g}: about {100 * more:.0f}% of groups "
                         f"would hold a right and a wrong completion, against {100 * now:.0f}% measured at {g}, "
                         "estimated from the pass rates of all prompts pooled)")
        fixes.append(f"a higher temperature (rlvr.temperature {check.temperature:g} → "
                     f"{min(round(check.temperature + 0.3, 2), 1.2):g})")
        problems.append(Problem(
            "too_easy" if too_easy else "no_signal",
            f"{_prompts(check, check.no_signal_share)} of prompts have no reward difference among their {g} "
            f"completions ({100 * check.all_wrong_share:.0f}% all wrong, {100 * check.all_right_share:.0f}% all "
            "right), and GRPO "
            f"learns nothing from {'any' if check.no_signal_share == 1 else 'those'}",
            "use " + "; or ".join(fixes)))
    needed = PAPER_FULL_FT_LEARNING_RATE * LORA_LEARNING_RATE_FACTOR
    if learning_rate < needed:
        problems.append(Problem(
            "learning_rate",
            f"rlvr.learning_rate {learning_rate:g} is below what LoRA needs to move the policy (about "
            f"{LORA_LEARNING_RATE_FACTOR}× full fine-tuning's {PAPER_FULL_FT_LEARNING_RATE:g})",
            f"set rlvr.learning_rate to at least {needed:g}"))
    return problems


def refusal_line(check: SignalCheck, where: str) -> str:
    """The one line `signal_check: refuse` stops with: the first problem, its fix, and how to go on anyway."""
    first = check.problems[0]
    more = len(check.problems) - 1
    return (f"{check.stage} signal check: {first.message}; {first.fix}"
            + (f" ({more} more problem{'s' if more != 1 else ''} in {where})" if more else "")
            + "; or set rlvr.signal_check: warn to train anyway")


def summary_lines(check: SignalCheck) -> list[str]:
    """What the check measured, in a few lines (printed before GRPO, and in the report)."""
    lp = check.length_percentiles
    lines = [
        f"{check.stage} signal check: {check.n_prompts} prompts × {check.num_generations} completions from "
        f"{check.start_model} (temperature {check.temperature:g}, cap {check.max_completion_length} tokens)",
        f"  pass rate {_completions(check, check.mean_pass_rate)} per completion, pass@{check.num_generations} "
        f"{_prompts(check, check.pass_at_g)}",
        f"  groups all right {_prompts(check, check.all_right_share)}, all wrong "
        f"{_prompts(check, check.all_wrong_share)}, without a reward difference "
        f"{_prompts(check, check.no_signal_share)}",
        f"  length p50 {lp.get('p50', 0)}, p90 {lp.get('p90', 0)}, max {lp.get('max', 0)} tokens; "
        f"{_completions(check, check.truncated_share)} hit the cap",
    ]
    if check.sampling_seconds_per_step is not None and check.tokens_per_second is not None:
        lines.append(f"  sampling one GRPO step ({check.rows_per_step} completions): "
                     f"{check.sampling_seconds_per_step:.1f} s measured ({check.tokens_per_second:.0f} tokens/s); "
                     "the step's forward and backward come on top")
    lines += [f"  problem: {p.message} → {p.fix}" for p in check.problems] or ["  no problem found"]
    return lines


def check_subset(rows: list[dict], prompts: int | None, seed: int) -> list[dict]:
    """The rows the check samples: all of them, or a seeded subset of `prompts` (in their order)."""
    if prompts is None or prompts >= len(rows):
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), prompts))
    return [rows[i] for i in picked]


def select_informative(groups: list[PromptGroup], n: int, seed: int) -> tuple[list[str], list[dict]]:
    """The ids of `n` prompts to train on, informative first: those the start model sometimes but not always
    solves (a reward difference in their group), then the rest in a seeded order to fill up to `n`. Returns
    (kept ids in the pool's order, one record per kept prompt saying why)."""
    informative = [g for g in groups if g.has_signal]
    rest = [g for g in groups if not g.has_signal]
    random.Random(seed).shuffle(rest)
    kept = (informative + rest)[:n]
    order = {g.id: i for i, g in enumerate(groups)}
    kept.sort(key=lambda g: order[g.id])
    why = []
    for g in kept:
        right = sum(g.correct)
        reason = ("sometimes solved" if g.has_signal else
                  "fill: never solved" if right == 0 else "fill: always solved" if right == len(g.correct)
                  else "fill: no reward difference")
        why.append({"id": g.id, "right": right, "of": len(g.correct), "why": reason})
    return [g.id for g in kept], why
