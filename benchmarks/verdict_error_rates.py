"""How often lowres's verdicts are wrong: simulated false-positive rates and power (stats-review-3's setup).

Each question's true accuracy is drawn from Beta(0.5, 1.5); a model's samples are Bernoulli draws of it. A GRPO
seed shifts its model's accuracy on every question by one draw of N(0, seed SD) (points, clipped to [0, 1]). An
effect adds `effect` points to one arm's questions, varying by question with SD 15 points as in the review.
Prints, per setting, the share of simulated runs whose verdict is "better" or "worse" (with no effect: the
false-positive rate, which should be ≤ 5%) or "better" (with an effect: the power).

    python benchmarks/verdict_error_rates.py            # ~1-2 min on a 2-core CPU
    python benchmarks/verdict_error_rates.py --runs 3000
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction

import numpy as np

from lowres.evidence import decide, difference


def model_scores(rng, truth: np.ndarray, n_samples: int, seed_sd: float) -> dict[str, Fraction]:
    p = np.clip(truth + rng.normal(0, seed_sd / 100) if seed_sd else truth, 0, 1)
    right = rng.binomial(n_samples, p)
    return {f"q{i}": Fraction(int(c), n_samples) for i, c in enumerate(right)}


def simulate(rng, questions: int, samples: int, seeds_a: int, seeds_b: int, seed_sd: float, effect: float) -> str:
    truth = rng.beta(0.5, 1.5, size=questions)
    gain = np.clip(truth + (effect + rng.normal(0, 15, size=questions) * (effect != 0)) / 100, 0, 1)
    a = [model_scores(rng, gain, samples, seed_sd) for _ in range(seeds_a)]
    # side B: a trained arm with seeds (a control), or a fixed start model (one seed, no seed shift)
    b = [model_scores(rng, truth, samples, seed_sd if seeds_b > 1 else 0) for _ in range(seeds_b)]
    found = difference([(1.0, a), (-1.0, b)])
    return decide([("t", "a vs b", "", found, {})])[0].verdict


SETTINGS = [  # (questions, samples, seeds of A, seeds of B, seed SD) — the review's cases, then the experiment's
    (16, 2, 1, 1, 0), (100, 4, 1, 1, 0),
    (16, 2, 2, 2, 0), (16, 2, 2, 2, 5), (16, 2, 2, 2, 10), (16, 2, 2, 2, 15),
    (100, 4, 2, 2, 10), (100, 4, 2, 2, 15), (100, 4, 4, 4, 10), (100, 4, 2, 1, 10),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated runs per setting and effect")
    parser.add_argument("--effects", default="0,10,20", help="true effects in points, comma-separated")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    effects = [float(e) for e in args.effects.split(",")]
    print(f"{args.runs} simulated runs per cell; effect 0: share of wrong verdicts (≤ 5% wanted); "
          "effect > 0: share called better (power)")
    print(f"{'questions':>9} {'samples':>7} {'seeds A':>7} {'seeds B':>7} {'seed SD':>7} | "
          + " ".join(f"{f'+{e:g} pts':>9}" for e in effects))
    started = time.time()
    for q, n, ka, kb, sd in SETTINGS:
        cells = []
        for effect in effects:
            verdicts = [simulate(rng, q, n, ka, kb, sd, effect) for _ in range(args.runs)]
            hits = sum(v != "no measurable difference" for v in verdicts) if effect == 0 else \
                sum(v == "better" for v in verdicts)
            cells.append(f"{100 * hits / args.runs:8.1f}%")
        print(f"{q:>9} {n:>7} {ka:>7} {kb:>7} {sd:>7g} | " + " ".join(cells), flush=True)
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
