"""Grader throughput: checks/s for math, gsm8k and mmlu_pro, sandbox runs/s for HumanEval+.

    python benchmarks/graders.py [--n 2000] [--workers N]

Completions are synthetic but realistic: an R1-format answer, half right and half wrong. Reads the
offline data from $LOWRES_DATA_DIR (default: <repo>/../shared/data).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LOWRES_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lowres.tasks import get_task  # noqa: E402


def completion(answer_text: str) -> str:
    return f"<think> Let me work through this step by step. </think> <answer> \\boxed{{{answer_text}}} </answer>"


def bench_scores(name: str, split: str, n: int, wrong) -> None:
    """Time `task.score` on n completions (alternately right and wrong) on the main thread."""
    task = get_task(name)
    rows = task.load(split)
    pairs = []
    for i in range(n):
        row = rows[i % len(rows)]
        text = completion(row["answer"] if i % 2 == 0 else wrong(row, rows, i))
        pairs.append((text, row))
    start = time.perf_counter()
    correct = sum(task.score(text, row).correct for text, row in pairs)
    elapsed = time.perf_counter() - start
    print(f"{name:15s} {n / elapsed:10.0f} checks/s   ({n} checks in {elapsed:.2f}s, {correct} correct)")


def bench_sandbox(workers: int | None) -> None:
    """Run every HumanEval+ canonical solution through the task's parallel grader."""
    task = get_task("humaneval_plus")
    if workers:
        task.workers = workers
    rows = task.load("test")
    texts = [f"<answer>\n```python\n{row['answer']}\n```\n</answer>" for row in rows]
    start = time.perf_counter()
    scores = task.score_many(texts, rows)
    elapsed = time.perf_counter() - start
    passed = sum(s.correct for s in scores)
    used = workers or len(os.sched_getaffinity(0))
    print(f"{'humaneval_plus':15s} {len(rows) / elapsed:10.2f} runs/s     ({len(rows)} canonical solutions in "
          f"{elapsed:.1f}s on {used} workers, {passed} passed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="checks per text task")
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers (default: all cores)")
    args = parser.parse_args()
    bench_scores("math", "test", args.n, lambda row, rows, i: rows[(i + 7) % len(rows)]["answer"])
    bench_scores("gsm8k", "test", args.n, lambda row, rows, i: str(int(row["answer"]) + 1))
    bench_scores("mmlu_pro", "test", args.n, lambda row, rows, i: "ABCDEFGHIJ"[(row["answer_index"] + 1) % 10])
    bench_sandbox(args.workers)


if __name__ == "__main__":
    main()
