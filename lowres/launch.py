"""Run one stage of `lowres run` in a child process: `python -m lowres <stage> …`.

Why a process per stage: a GPU stage leaves things behind that the next one must not inherit — CUDA
memory held by the caching allocator, a vLLM engine, and Unsloth's process-wide patches to the
transformers/peft model classes (a later evaluation would run on the patched forward). A child
process takes all of that with it when it exits. The child is the same CLI a user can call by hand
(`lowres warmup/merge/rlvr/eval`), so there is one code path per stage.

The child shares the terminal (its live view draws there directly). Its exit code says what
happened: 0 done; 2 bad input and 3 out of GPU memory (the child already printed the one-line
error); 130 interrupted; anything else a bug (the child already printed its traceback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from lowres.distributed import launcher_command
from lowres.errors import INTERRUPTED, OutOfMemory, UserError


class StageFailed(Exception):
    """A stage's child process did not finish; `exit_code` is what the CLI should exit with and
    `message` the one line to print (None: the child has printed it already). `interrupt`: the Ctrl-C
    (KeyboardInterrupt) this process received and passed on to the child, if that is what stopped it. `folder`:
    a training stage's folder, where known (so an interruption can say whether it left a checkpoint to resume)."""

    def __init__(self, stage: str, exit_code: int, message: str | None, interrupt: KeyboardInterrupt | None = None,
                 folder: Path | None = None):
        super().__init__(message or f"{stage} stopped with exit code {exit_code}")
        self.stage, self.exit_code, self.message, self.interrupt = stage, exit_code, message, interrupt
        self.folder = folder


def stage_command(args: list[str]) -> list[str]:
    """The child's command line: this Python, this lowres."""
    return [sys.executable, "-m", "lowres", *args]


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to end it when the conductor dies (e.g. kill -9), so no
    orphaned stage keeps a GPU busy. Elsewhere a no-op."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_stage(stage: str, args: list[str], grace_seconds: float = 60.0, processes: int = 1,
              folder: Path | None = None) -> None:
    """Run `lowres <args>` as a child and wait for it. Raises StageFailed unless it exits 0. `folder`: a
    training stage's folder, which an interruption's StageFailed carries.

    processes > 1: the child is `accelerate launch` of that many processes (lowres.distributed), which
    passes a Ctrl-C on to them and exits with the code of the first one to fail.

    Ctrl-C: the child runs in its own process group, so the terminal's SIGINT reaches only this
    process, which passes exactly one SIGINT on (a second one could land in the middle of the
    child's checkpoint write) and waits `grace_seconds` for it to stop before terminating it.
    """
    env = {**os.environ, "LOWRES_STAGE_CHILD": "1", "PYTHONUNBUFFERED": "1"}
    try:
        command = stage_command(args) if processes == 1 else launcher_command(processes, args)
        child = subprocess.Popen(command, env=env, process_group=0, preexec_fn=_die_with_parent)
    except OSError as e:
        raise UserError(f"cannot start the {stage} stage: {e}") from None
    try:
        code = child.wait()
    except KeyboardInterrupt as interrupt:
        _stop(child, grace_seconds)
        raise StageFailed(stage, INTERRUPTED, None, interrupt, folder) from None
    if code == 0:
        return
    if code in (UserError.exit_code, OutOfMemory.exit_code):
        raise StageFailed(stage, code, None)  # the child printed its one-line error
    if code in (INTERRUPTED, -signal.SIGINT):
        raise StageFailed(stage, INTERRUPTED, None, folder=folder)
    how = f"was killed by signal {-code}" if code < 0 else f"crashed (exit code {code})"
    raise StageFailed(stage, 1, f"the {stage} stage {how}; its output above says why")


def _stop(child: subprocess.Popen, grace_seconds: float) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    for sig, wait in ((None, grace_seconds), (signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
        if sig is not None:
            child.send_signal(sig)
        try:
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
