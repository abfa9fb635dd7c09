"""What every training stage shows and records: a rich live progress line, and metrics.jsonl."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.progress import TextColumn
from transformers import TrainerCallback

from lowres.artifacts import append_jsonl, follow_umask
from lowres.errors import UserError
from lowres.ui import progress, time_left


def memory_text() -> str:
    """GPU memory in use (peak) on CUDA, the process's resident memory elsewhere."""
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            rss_pages = int(f.read().split()[1])
        return f"RSS {rss_pages * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB"
    except (OSError, ValueError):
        return ""


def peak_memory() -> dict[str, float]:
    """This process's peak memory so far, in GiB: GPU allocated and reserved on CUDA, resident set
    size elsewhere (for summary.json, so a run records what it needed)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"gpu_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}
    import resource

    return {"rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}  # KiB on Linux


class MetricsLogger(TrainerCallback):
    """Appends every log event (loss, reward, lr, …) as one JSON line to metrics.jsonl."""

    def __init__(self, path: Path, stage: str):
        self.path = Path(path)
        self.stage = stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        record = {"stage": self.stage, "step": state.global_step, "time": round(time.time(), 2), **logs}
        append_jsonl(self.path, record)


class CheckpointModes(TrainerCallback):
    """Give each checkpoint the modes of the user's umask, as every other output has: safetensors writes its
    weights owner-only (0600), which would keep a checkpoint from the group a run folder is shared with."""

    def on_save(self, args, state, control, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and checkpoint.is_dir():
            follow_umask(checkpoint)


class ScheduleGuard(TrainerCallback):
    """Stop before the first step when the trainer's own learning-rate schedule gives every one of its steps a
    learning rate of 0, so training would leave the adapter as it started. The recipe check refuses such a
    max_steps up front (lowres.recipe.check_schedule); this catches the step count that num_train_epochs
    makes from the data, known only here."""

    def __init__(self, section: str):
        self.section = section  # the recipe section: warmup or rlvr

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        factors = getattr(lr_scheduler, "lr_lambdas", None)
        steps = state.max_steps
        if not factors or steps < 1 or any(factors[0](s) > 0 for s in range(steps)):
            return
        warmup = args.get_warmup_steps(steps)
        s, schedule = self.section, getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
        raise UserError(f"{s}: each of its {steps} optimizer step{'s' if steps != 1 else ''} (num_train_epochs "
                        f"{args.num_train_epochs:g} over the data) has learning rate 0 — the {schedule} schedule "
                        f"warms up from 0 over {warmup} step{'s' if warmup != 1 else ''} — so the weights "
                        f"would never move; set {s}.warmup_ratio: 0, or more steps ({s}.num_train_epochs, more data, "
                        f"or a smaller {s}.gradient_accumulation_steps)")


class LiveView(TrainerCallback):
    """One progress bar for a stage: step/total, ETA, and the latest metrics, tokens/s and memory."""

    def __init__(self, description: str, keys: tuple[str, ...]):
        self.description = description
        self.keys = keys
        self._bar = None
        self._task = None
        self._tokens_at_start = None
        self._time_at_start = None
        self._step_at_start = 0
        self._latest: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one view per stage, however many processes train
            return
        self._bar = progress(TextColumn("{task.fields[metrics]}"), eta_field=True)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=state.max_steps, completed=state.global_step,
                                        metrics="", eta="-:--:--")
        self._time_at_start = time.time()
        self._tokens_at_start = state.num_input_tokens_seen
        self._step_at_start = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step,
                             eta=time_left(state.global_step - self._step_at_start, state.max_steps - state.global_step,
                                           time.time() - self._time_at_start))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._bar is None or not logs:
            return
        self._latest.update({k: v for k, v in logs.items() if k in self.keys and isinstance(v, (int, float))})
        parts = [f"{k.split('/')[-1]} {self._latest[k]:.4g}" for k in self.keys if k in self._latest]
        seen = state.num_input_tokens_seen - (self._tokens_at_start or 0)
        elapsed = time.time() - self._time_at_start
        if seen and elapsed > 0:
            parts.append(f"{seen / elapsed:.0f} tok/s")
        parts.append(memory_text())
        self._bar.update(self._task, metrics="  ".join(p for p in parts if p))

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._bar.update(self._task, completed=state.global_step)
        self.close()

    def close(self) -> None:
        """Stop the live display (also after a crash, so the terminal is left clean)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
