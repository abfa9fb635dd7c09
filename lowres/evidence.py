"""Is a run's effect real? Comparisons between a run's models with bootstrap intervals and a verdict.

Each evaluated model answered the same questions n_samples times; a question's score is the share of its
samples that were right. A comparison's difference is the mean question score of one side minus the other's
(each side averaged over its seeds, for an RLVR arm run once per seed). Its 95% interval comes from the
bootstrap: the questions are resampled with replacement (the same draw for every model, since they answered
the same questions — the comparison is paired), and each side's seeds are resampled too, so the interval
covers both the questions that happened to be asked and the luck of a GRPO run (seeds alone move small-data
RL scores by 5-15 points, Hochlehnert et al. 2025). The verdict reads the interval: "better" when it lies
above 0, "worse" below 0, else "no measurable difference".

A gain "net of the control" subtracts what the same GRPO gained from the same start with a coin-flip reward
(rlvr-random-reward): on Qwen2.5, random rewards alone raised MATH-500 by 21 points (Shao et al. 2025).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0

Scores = dict[str, float]  # question id -> share of its samples that were right


@dataclass
class Comparison:
    task: str
    title: str                 # e.g. "rlvr vs warmup"
    meaning: str               # what the difference measures
    difference: float          # points (percent)
    low: float                 # 95% bootstrap interval, points
    high: float
    verdict: str               # better | worse | no measurable difference
    questions: int
    seeds: dict[str, int]      # side label -> seeds pooled

    def line(self) -> str:
        seeds = ", ".join(f"{side} × {n} seeds" for side, n in self.seeds.items() if n > 1)
        return (f"**{self.title}** ({self.meaning}), {self.task}: {self.difference:+.1f} points, 95% interval "
                f"[{self.low:+.1f}, {self.high:+.1f}] over {self.questions} questions{f' ({seeds})' if seeds else ''}: "
                f"**{self.verdict}**")


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no measurable difference"


def right_by_question(samples: Path) -> dict[str, list[bool]]:
    """A task's samples.jsonl → question id → whether each of its samples was right."""
    right: dict[str, list[bool]] = {}
    for line in Path(samples).read_text().splitlines():
        if line.strip():
            s = json.loads(line)
            right.setdefault(str(s["question_id"]), []).append(bool(s["correct"]))
    return right


def question_scores(samples: Path) -> Scores:
    """A task's samples.jsonl → question id → share of its samples that were right."""
    return {q: sum(v) / len(v) for q, v in right_by_question(samples).items()}


def bootstrap_difference(terms: list[tuple[float, list[Scores]]], replicates: int = BOOTSTRAP_REPLICATES,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float, int]:
    """A signed sum of model means, e.g. [(+1, [rlvr seeds…]), (-1, [warmup])] for rlvr − warmup, with each
    model's mean over questions and then over its seeds. Returns (value, 2.5th percentile, 97.5th percentile,
    questions), in points (×100), over the questions every model answered."""
    import numpy as np

    common = sorted(set.intersection(*(set(s) for _, seeds in terms for s in seeds)))
    if not common:
        raise ValueError("the models share no question")
    rng = np.random.default_rng(seed)
    q = len(common)
    total, draws = 0.0, np.zeros(replicates)
    question_draw = rng.integers(0, q, size=(replicates, q))
    for sign, seeds in terms:
        matrix = np.array([[s[k] for k in common] for s in seeds])  # seeds × questions
        total += sign * matrix.mean()
        picked = matrix[:, question_draw]                            # seeds × replicates × questions
        per_seed = picked.mean(axis=2)                               # seeds × replicates
        if len(seeds) > 1:
            seed_draw = rng.integers(0, len(seeds), size=(replicates, len(seeds)))
            per_seed = per_seed[seed_draw, np.arange(replicates)[:, None]].T
        draws += sign * per_seed.mean(axis=0)
    low, high = np.percentile(draws, [2.5, 97.5])
    return 100 * total, 100 * float(low), 100 * float(high), q


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


def compare(scores: dict[str, dict[str, Scores]], start_of_rlvr: str = "warmup") -> list[Comparison]:
    """Every comparison the run's models allow, per task. `scores`: label → task → question scores.
    `start_of_rlvr`: the model rlvr (and its control) started from: warmup, or base (rlvr.start_from: base)."""
    groups = arm_groups(list(scores))
    out = []
    for title, meaning, terms in COMPARISONS:
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
                value, low, high, q = bootstrap_difference(signed)
            except ValueError:
                continue
            out.append(Comparison(task, title, meaning, round(value, 2), round(low, 2),
                                  round(high, 2), verdict(low, high), q, {k: len(groups[k]) for k in combined}))
    return out


def pass_at_k_curve(samples: Path) -> dict[int, float]:
    """k → unbiased pass@k (Chen et al. 2021) over a task's questions, for k = 1 … n_samples."""
    from lowres.evaluate import pass_at_k

    right = right_by_question(samples)
    n = min(len(v) for v in right.values())
    return {k: sum(pass_at_k(len(v), sum(v), k) for v in right.values()) / len(right) for k in range(1, n + 1)}


def comparisons_json(comparisons: list[Comparison]) -> list[dict]:
    return [asdict(c) for c in comparisons]
