"""Which checkpoint a training stage resumes from — only one that the same run made.

A stage's `checkpoints/` folder carries a mark (`lowres-checkpoints.json`) with the stage
fingerprint (lowres.fingerprint) it was made under and whether training finished. At the start of a
stage:
- checkpoints made under another fingerprint (changed settings, data, model or lowres version), by a
  run that finished, or without a mark are set aside to `<stage>/set-aside/` with one line saying
  why, and the stage starts fresh — resuming them would reproduce the old run under the new settings;
- otherwise the newest *complete* checkpoint is used: one that a crash left half-written (a missing
  or torn file) is set aside with a warning and the one before it is taken;
- metrics.jsonl is cut back to the resumed step, so redone steps are not logged twice.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from lowres.artifacts import read_json, read_jsonl, set_aside, write_json, write_jsonl
from lowres.ui import console

MARK = "lowres-checkpoints.json"
SET_ASIDE = "set-aside"


def _step(folder: Path) -> int:
    return int(folder.name.split("-")[-1])


def _checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=_step)


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header and the tensor bytes it indexes:
    a torn write leaves it shorter than the header says."""
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError):
        return f"{path.name} is unreadable"
    if path.stat().st_size < 8 + n + end:
        return f"{path.name} is cut short"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (a crash mid-save), or None when it is complete."""
    state = read_json(folder / "trainer_state.json")
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json is missing or unreadable"
    weights = [p for p in folder.glob("*.safetensors")]
    if not weights and not list(folder.glob("*.bin")):
        return "no weights"
    for path in weights:
        problem = _safetensors_problem(path)
        if problem:
            return problem
    # torch.save writes zip archives whose index sits at the end: a torn file has none.
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        path = folder / name
        if name != "rng_state.pth" and not path.is_file():
            return f"{name} is missing"
        if path.is_file():
            try:
                with zipfile.ZipFile(path):
                    pass
            except (zipfile.BadZipFile, OSError):
                return f"{name} is cut short"
    return None


def interrupted_message(stage: str, stage_dir: Path | None) -> str:
    """What a Ctrl-C during `stage` leaves for the next run of the same command, as its folder shows it: a
    complete checkpoint to resume from, or none, so the stage starts over (the demo's stages save only at their
    last step). stage_dir None: a stage that keeps no checkpoints (merge, eval)."""
    if stage_dir is None:
        return f"interrupted during {stage}: run the same command again; the stages that finished are skipped"
    folder = Path(stage_dir) / "checkpoints"
    finished = (read_json(folder / MARK) or {}).get("finished")  # a finished run's: the next start sets them aside
    complete = [] if finished else [c for c in _checkpoints(folder) if checkpoint_problem(c) is None]
    if complete:
        return (f"interrupted during {stage}; its last checkpoint ({complete[-1].name}) is kept: run the same "
                "command again to resume from it")
    return (f"interrupted during {stage} before it saved a checkpoint: the same command starts {stage} over "
            "(save_steps sets how often it saves)")


def set_aside_checkpoints(stage_dir: Path, stage: str, why: str) -> None:
    """Move a stage's checkpoints (and the metrics and TensorBoard events they logged) out of the way,
    saying why."""
    stage_dir = Path(stage_dir)
    folder = stage_dir / "checkpoints"
    n = len(_checkpoints(folder))
    into = stage_dir / SET_ASIDE
    if folder.exists():
        set_aside(folder, into / "checkpoints")
    if (stage_dir / "metrics.jsonl").is_file():
        set_aside(stage_dir / "metrics.jsonl", into / "metrics.jsonl")
    if (stage_dir / "tensorboard").is_dir():  # so the new run's curves are not drawn over the old ones
        set_aside(stage_dir / "tensorboard", into / "tensorboard")
    if n:
        console.print(f"[yellow]{stage}: {n} checkpoint{'s' if n != 1 else ''} {why}: set aside to {into}; "
                      "starting fresh[/yellow]")


def prepare_resume(stage_dir: Path, stage: str, fingerprint: str) -> str | None:
    """The checkpoint to resume `stage` from (None: start fresh), after setting aside what must not
    be resumed. Leaves `checkpoints/` marked with `fingerprint`."""
    stage_dir = Path(stage_dir)
    folder = stage_dir / "checkpoints"
    mark = read_json(folder / MARK)
    if folder.exists() and (mark is not None or _checkpoints(folder)):
        why = None
        if not isinstance(mark, dict):
            why = "carry no record of the settings they were made with"
        elif mark.get("fingerprint") != fingerprint:
            why = (f"were made with other settings or inputs (fingerprint {mark.get('fingerprint')}, "
                   f"now {fingerprint})")
        elif mark.get("finished"):
            why = "belong to a run that finished"
        if why:
            set_aside_checkpoints(stage_dir, stage, why)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MARK, {"fingerprint": fingerprint, "finished": False})

    resume = None
    for checkpoint in reversed(_checkpoints(folder)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            resume = checkpoint
            break
        into = stage_dir / SET_ASIDE / f"{checkpoint.name}-incomplete"
        set_aside(checkpoint, into)
        console.print(f"[yellow]{stage}: {checkpoint.name} is incomplete ({problem}; a crash while saving?): "
                      f"set aside to {into}[/yellow]")
    _trim_metrics(stage_dir / "metrics.jsonl", _step(resume) if resume else 0)
    return str(resume) if resume else None


def resume_point(stage_dir: Path, stage: str, fingerprint: str, args) -> str | None:
    """prepare_resume for each process of a launch (`args`: the stage's TrainingArguments): the main
    process sets aside and marks, then the others, which must not move files under it, take the
    checkpoint it left. With one process this is prepare_resume."""
    if args.world_size > 1 and args.device.type == "cpu":
        from lowres.train.compat import ensure_cpu_index_restore

        ensure_cpu_index_restore()  # transformers will load the optimizer state onto `cpu:N`
    with args.main_process_first(local=False, desc=f"{stage} checkpoints"):
        if args.process_index == 0:
            return prepare_resume(stage_dir, stage, fingerprint)
        found = _checkpoints(Path(stage_dir) / "checkpoints")
        return str(found[-1]) if found else None


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the log lines of steps up to `step` (the resumed one); later steps will be redone."""
    if not path.is_file():
        return
    # Rewritten whole (a small file): this also drops a line torn by the crash.
    write_jsonl(path, [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step])


def mark_finished(stage_dir: Path) -> None:
    """After the stage's output is written: its checkpoints are no longer an interrupted run's."""
    folder = Path(stage_dir) / "checkpoints"
    mark = read_json(folder / MARK) or {}
    write_json(folder / MARK, {**mark, "finished": True})


def finished_before(stage_dir: Path, fingerprint: str, output: Path) -> bool:
    """Whether this stage already finished under the same fingerprint and its output is in place (a
    crash between the stage's end and `lowres run`'s done marker must not cost a retrain)."""
    mark = read_json(Path(stage_dir) / "checkpoints" / MARK)
    return (isinstance(mark, dict) and mark.get("finished") is True and mark.get("fingerprint") == fingerprint
            and Path(output).is_dir())
