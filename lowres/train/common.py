"""Small pieces the training stages share: precision flags, resume, the out-of-memory message."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lowres.errors import OutOfMemory
from lowres.hardware import Hardware


def precision_flags(hw: Hardware) -> dict[str, bool]:
    """TrainingArguments mixed-precision flags for the chosen dtype (none on CPU: it trains in fp32/bf16
    weights directly)."""
    if hw.device != "cuda":
        return {"bf16": False, "fp16": False}
    return {"bf16": hw.dtype == "bf16", "fp16": hw.dtype == "fp16"}


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete `checkpoint-N` folder, to resume from; None when there is none."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


@contextlib.contextmanager
def oom_guard(stage: str, what_to_lower: str):
    """Turn CUDA out-of-memory into a one-line error that says which setting to lower."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError:
        raise OutOfMemory(f"{stage}: out of GPU memory; lower {what_to_lower}, or enable load_in_4bit") from None


def drop_default_printer(trainer) -> None:
    """Remove transformers' print-every-log callback: LiveView and metrics.jsonl replace it."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
