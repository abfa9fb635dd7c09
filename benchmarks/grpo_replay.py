"""GRPO replays exactly on the embedded model: two `lowres rlvr` runs with the same seed, and one killed with
SIGKILL once a checkpoint is on disk and started again, log the same reward and loss at every step.

    python benchmarks/grpo_replay.py [--steps 4] [--checkpoint 2] [--seed 0] [--json FILE]

The CI test (tests/train/test_grpo_replay.py) shows this on a tiny random model in seconds; this script
shows it for the real stage command on SmolLM2-135M (the demo recipe's GRPO from the base model with the
coin-flip reward, which varies, cut to a few short steps, every step checkpointed): the same code path a
user's run takes, child process and all.
Each run's figures are read from its metrics.jsonl (for the resumed run, the last record of each step: the
killed process may have logged steps after the checkpoint that the resumed one logs again). Prints each
step's figures side by side and exits 1 if any differ; about 2 minutes on the 2-core dev machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIGURES = ("reward", "loss")


def stage_command(recipe: Path, out: Path, seed: int) -> list[str]:
    # The coin-flip reward (a seeded hash of step, prompt and completion): from the base model the task's reward
    # is the same for every completion, so nothing would train and any two runs would trivially agree.
    return [sys.executable, "-m", "lowres", "rlvr", str(recipe), "--random-reward", "--model", "embedded:smollm2-135m",
            "--seed", str(seed), "--out", str(out)]


def run(command: list[str], log: Path, kill_when: Path | None = None, timeout: float = 900) -> str:
    """Run a stage; with `kill_when`, SIGKILL its process group as soon as that file exists."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("a") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            if kill_when is not None and kill_when.exists():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed"
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit(f"the stage took over {timeout:.0f} s; see {log}")
    if proc.returncode != 0:
        raise SystemExit(f"the stage failed (exit {proc.returncode}); see {log}")
    return "finished"


def per_step(metrics: Path) -> dict[int, dict]:
    """Each step's figures; a step logged twice (before a kill and after the resume) counts as its last record."""
    steps: dict[int, dict] = {}
    for record in map(json.loads, metrics.read_text().splitlines()):
        if "loss" in record and "reward" in record and "step" in record:
            steps[record["step"]] = {key: record[key] for key in FIGURES}
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--checkpoint", type=int, default=2, help="the checkpoint the killed run is resumed from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every run's per-step figures here")
    args = parser.parse_args()
    if not 1 <= args.checkpoint < args.steps:
        parser.error("--checkpoint must be at least 1 and below --steps")

    from lowres.hardware import matmul_gflops
    from lowres.recipe import bundled_recipes, dump_recipe, load_recipe

    gflops_before = matmul_gflops()
    work = Path(tempfile.mkdtemp(prefix="lowres-replay-"))
    recipe = load_recipe(bundled_recipes()["demo"], [
        f"output.dir={work}", f"rlvr.max_steps={args.steps}", "rlvr.save_steps=1", "rlvr.num_generations=4",
        "rlvr.per_device_train_batch_size=8", "rlvr.max_completion_length=48", "rlvr.temperature=1.0",
        "rlvr.signal_check=off", "rlvr.zero_variance_groups=keep", "rlvr.stop_after_constant_reward_steps=0"])
    path = work / "replay.yaml"
    path.write_text(dump_recipe(recipe))
    log = work / "stages.log"
    started = time.time()
    runs = {}
    for name in ("first", "second"):
        run(stage_command(path, work / name, args.seed), log)
        runs[name] = per_step(work / name / "metrics.jsonl")
    resumed = work / "killed-and-resumed"
    marker = resumed / "checkpoints" / f"checkpoint-{args.checkpoint}" / "trainer_state.json"
    if run(stage_command(path, resumed, args.seed), log, kill_when=marker) != "killed":
        raise SystemExit(f"the run ended before checkpoint {args.checkpoint} was written; see {log}")
    run(stage_command(path, resumed, args.seed), log)
    if "resuming RLVR from" not in log.read_text():
        raise SystemExit(f"the second start did not resume from a checkpoint; see {log}")
    runs["killed and resumed"] = per_step(resumed / "metrics.jsonl")
    seconds = time.time() - started

    print(f"embedded:smollm2-135m, GRPO from the base with the coin-flip reward: {args.steps} steps of 2 prompts × 4 "
          f"completions of ≤ 48 tokens, seed {args.seed}; killed after checkpoint {args.checkpoint}, then resumed")
    print(f"{'step':>4} " + " ".join(f"{run_name + ' ' + key:>28}" for run_name in runs for key in FIGURES))
    same = True
    for step in range(1, args.steps + 1):
        values = [runs[name].get(step, {}).get(key) for name in runs for key in FIGURES]
        print(f"{step:>4} " + " ".join(f"{'—' if v is None else repr(v):>28}" for v in values))
        same &= all(runs[name].get(step) == runs["first"].get(step) is not None for name in runs)
    print(f"identical at every step: {'yes' if same else 'NO'}; {seconds:.0f} s; fp32 matmul "
          f"{gflops_before:.0f} → {matmul_gflops():.0f} GFLOP/s (2048², before → after)")
    if args.json:
        args.json.write_text(json.dumps({name: {str(k): v for k, v in steps.items()} for name, steps in runs.items()},
                                        indent=2))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
