"""`lowres run` killed with SIGKILL (conductor and stage child together, as a power cut would) in the
middle of warmup, of GRPO and of evaluation, then run again: it finishes with the same number of steps,
redoes no saved step and says where it resumed. Then the README's `cp` + `--set` sequence: a changed
rlvr setting retrains rlvr from scratch (the old checkpoints set aside, with the reason) and the
adapter differs.

One cut-down demo (SmolLM2-135M, a few steps of each stage) serves the whole sequence, so the model
is loaded as few times as possible."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

WARMUP_STEPS, RLVR_STEPS = 4, 3
# The target task. Its reward has a small length penalty, so the completions of a group (sampled at
# temperature 1) always differ in reward: GRPO always has a gradient, and a changed learning rate
# really changes the adapter. It comes in as a plugin, as a user's own task would, so every stage's
# child process must import it too.
SUMS = """import re
from lowres.tasks import Score, register_task


class Sums:
    name = "sums"
    description = "single-digit addition"

    def load(self, split, limit=None, seed=0, path=None, **_):
        rows = [{"id": f"{a}+{b}", "a": a, "b": b, "answer": str(a + b)} for a in range(1, 10) for b in range(1, 10)]
        rows = rows[::2] if split == "test" else rows[1::2]
        return rows[:limit] if limit else rows

    def prompt(self, row):
        return [{"role": "user", "content": f"What is {row['a']} + {row['b']}? Reply with just the number."}]

    def score(self, completion, row):
        numbers = re.findall(r"-?[0-9]+", completion)
        correct = bool(numbers) and numbers[0] == row["answer"]
        return Score(formatted=bool(numbers), correct=correct, reward=float(correct) - 0.01 * len(completion),
                     extracted=numbers[0] if numbers else None)


register_task(Sums())
"""
RECIPE = f"""name: cut
stages: [warmup, merge, rlvr, eval]
plugins: [sums.py]
model: {{name_or_path: embedded:smollm2-135m, max_seq_length: 1024}}
data:
  warmup: {{source: kk-solver, n_puzzles: 8, people: [2]}}
  target: {{task: sums, n_examples: 8}}
warmup: {{load_in_4bit: false, learning_rate: 1.0e-3, max_steps: {WARMUP_STEPS}, per_device_train_batch_size: 1,
         gradient_accumulation_steps: 1, save_steps: 1, lora: {{r: 4, lora_alpha: 8}}}}
merge: {{verify_prompts: 1}}
rlvr: {{learning_rate: 1.0e-4, max_steps: {RLVR_STEPS}, per_device_train_batch_size: 4, num_generations: 4,
       temperature: 1.0, max_prompt_length: 128, max_completion_length: 8, save_steps: 1,
       signal_check: "off", lora: {{r: 4, lora_alpha: 8}}}}
eval: {{tasks: [sums], n_samples: 1, limit: 2, max_new_tokens: 6, batch_size: 4}}
"""

def descendants(pid: int) -> list[int]:
    """All processes below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_until(workdir: Path, log: Path, condition, *extra: str, timeout: float = 400) -> int | None:
    """Start `lowres run`; when `condition()` holds, SIGKILL the whole tree and return None. If the run
    ends first, return its exit code."""
    with log.open("a") as out:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}  # wide: paths in the log stay whole
        proc = subprocess.Popen([sys.executable, "-m", "lowres", "run", "cut.yaml", *extra], cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            if condition is not None and condition():
                for pid in [*descendants(proc.pid), proc.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()
                return None
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"lowres run took over {timeout} s:\n{log.read_text()[-3000:]}")
        return proc.returncode


def steps_logged(metrics: Path, key: str) -> list[int]:
    return [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if key in r]


def test_killed_runs_resume_where_they_were(tmp_path):
    (tmp_path / "cut.yaml").write_text(RECIPE)
    (tmp_path / "sums.py").write_text(SUMS)
    run_dir = tmp_path / "runs" / "cut"
    log = tmp_path / "log.txt"

    # 1. Killed in warmup, once its second checkpoint is on disk.
    killed = run_until(tmp_path, log, lambda: (run_dir / "warmup/checkpoints/checkpoint-2/trainer_state.json").exists())
    assert killed is None, log.read_text()[-3000:]
    assert not (run_dir / "warmup" / "done.json").exists()

    # 2. Again: warmup resumes; killed in the middle of saving the merged model.
    start = len(log.read_text())
    killed = run_until(tmp_path, log, lambda: (run_dir / "merge.partial").exists())
    assert killed is None, log.read_text()[-3000:]
    second = log.read_text()[start:]
    resumed = re.search(r"resuming warmup from \S*checkpoint-(\d+)", second)
    assert resumed and int(resumed.group(1)) >= 2, second[-3000:]
    warmup = json.loads((run_dir / "warmup" / "summary.json").read_text())
    assert warmup["steps"] == WARMUP_STEPS
    # Every step logged once: the saved ones were not redone, the unsaved one was.
    assert steps_logged(run_dir / "warmup" / "metrics.jsonl", "loss") == list(range(1, WARMUP_STEPS + 1))
    assert not (run_dir / "merge" / "config.json").exists()  # no half-written model under the real name

    # 2b. Again: the merge is redone whole; killed in GRPO once its first checkpoint is on disk.
    start = len(log.read_text())
    killed = run_until(tmp_path, log, lambda: (run_dir / "rlvr/checkpoints/checkpoint-1/trainer_state.json").exists())
    assert killed is None, log.read_text()[-3000:]
    assert "warmup: done before with the same inputs — skipped" in log.read_text()[start:]
    assert (run_dir / "merge" / "merge.json").is_file() and (run_dir / "merge" / "done.json").is_file()
    assert not (run_dir / "merge.partial").exists()

    # 3. Again: GRPO resumes; killed in evaluation once the base model's results are written.
    start = len(log.read_text())
    killed = run_until(tmp_path, log, lambda: (run_dir / "eval/base/done.json").exists())
    assert killed is None, log.read_text()[-3000:]
    third = log.read_text()[start:]
    assert "warmup: done before with the same inputs — skipped" in third
    assert re.search(r"resuming RLVR from \S*checkpoint-\d+", third), third[-3000:]
    assert json.loads((run_dir / "rlvr" / "summary.json").read_text())["steps"] == RLVR_STEPS
    assert steps_logged(run_dir / "rlvr" / "metrics.jsonl", "reward") == list(range(1, RLVR_STEPS + 1))

    # 4. Again: only what was left of the evaluation runs.
    start = len(log.read_text())
    assert run_until(tmp_path, log, None) == 0, log.read_text()[-3000:]
    fourth = log.read_text()[start:]
    assert "eval base: done before with the same inputs — skipped" in fourth
    assert "rlvr: done before with the same inputs — skipped" in fourth
    assert (run_dir / "report.md").is_file()
    first_adapter = (run_dir / "rlvr" / "adapter" / "adapter_model.safetensors").read_bytes()

    # 5. The README's tour: copy a recipe, change one rlvr setting with --set, run again.
    start = len(log.read_text())
    assert run_until(tmp_path, log, None, "--set", "rlvr.learning_rate=3e-4") == 0, log.read_text()[-3000:]
    fifth = " ".join(log.read_text()[start:].split())
    assert "warmup: done before with the same inputs — skipped" in fifth
    assert "merge: done before with the same inputs — skipped" in fifth
    assert re.search(r"rlvr: \d+ checkpoints? were made with other settings or inputs .* set aside", fifth), fifth
    assert "resuming RLVR" not in fifth
    assert json.loads((run_dir / "rlvr" / "summary.json").read_text())["steps"] == RLVR_STEPS
    assert (run_dir / "rlvr" / "adapter" / "adapter_model.safetensors").read_bytes() != first_adapter
    assert "eval rlvr: done before" not in fifth and "eval base: done before with the same inputs" in fifth
