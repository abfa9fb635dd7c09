"""Knights & Knaves throughput: puzzles generated (each uniqueness-checked) and traces written per second.

    python benchmarks/kk_generate.py [--count 2000]
"""

from __future__ import annotations

import argparse
import time

from lowres.tasks.kk.generator import generate_puzzles
from lowres.tasks.kk.render import render_quiz
from lowres.tasks.kk.solver import solve
from lowres.tasks.kk.traces import write_trace


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="puzzles per size")
    args = parser.parse_args()

    print(f"{'people':>6} {'depth':>5} {'puzzles/s':>10} {'solves/s':>10} {'quizzes/s':>10} {'traces/s':>10}"
          f" {'trace chars':>11}")
    for depth in (1, 2):
        for n in (3, 5, 8):
            start = time.perf_counter()
            puzzles = generate_puzzles(args.count, n, seed=n, depth=depth)
            generated = time.perf_counter() - start

            start = time.perf_counter()
            for p in puzzles:
                solve(p.statements, n)
            solved = time.perf_counter() - start

            start = time.perf_counter()
            for i, p in enumerate(puzzles):
                render_quiz(p, i)
            rendered = time.perf_counter() - start

            start = time.perf_counter()
            chars = sum(len(write_trace(p, i)) for i, p in enumerate(puzzles))
            traced = time.perf_counter() - start

            print(f"{n:>6} {depth:>5} {rate(len(puzzles), generated)} {rate(len(puzzles), solved)}"
                  f" {rate(len(puzzles), rendered)} {rate(len(puzzles), traced)} {chars // len(puzzles):>11}")


if __name__ == "__main__":
    main()
