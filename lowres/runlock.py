"""One writer per run folder: an exclusive lock held while `lowres run` (or a stage started by hand) works.

Two runs of the same recipe at once would write the same checkpoints, done markers and results, each
overwriting the other's. The lock is an `fcntl.flock` on `<run folder>/.lock`, held for the whole run;
the file says who holds it (pid, host, start time, command), so a second run can say so in one line.
The kernel drops a flock when its process ends, however it ends (kill -9 included): the lock of a run
that was killed is free, and the next run takes it over without anyone deleting a file.

`lowres run` holds the lock of its run folder and starts each stage as a child process that writes
into that same folder; the child finds the folder named in LOWRES_RUN_LOCK (set by its conductor) and
does not take the lock again. Of the processes of one multi-process launch only the main one takes it
(the others write nothing there).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from lowres.artifacts import output_folder
from lowres.distributed import is_main_process
from lowres.errors import UserError

LOCK_FILE = ".lock"
# The run folder whose lock a conductor (`lowres run`) holds, for the stage processes it starts.
HELD_ENV = "LOWRES_RUN_LOCK"


class RunFolderBusy(UserError):
    """Another process holds the run folder's lock."""


def _holder_text(lock_path: Path) -> str:
    """Who holds a lock, from what its holder wrote in the file (it may not have written it yet)."""
    try:
        holder = json.loads(lock_path.read_text(encoding="utf-8"))
        return (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
                + (f" ({holder['command']})" if holder.get("command") else ""))
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextlib.contextmanager
def run_folder_lock(run_dir: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold the lock of `run_dir` (created if missing) for the body of the `with`; a RunFolderBusy error
    naming the holder if another process has it. Inside a conductor that holds this folder's lock
    already, or in a launch's non-main process, a no-op. Yields the run folder."""
    run_dir = Path(run_dir).expanduser().resolve()
    if os.environ.get(HELD_ENV) == str(run_dir) or not is_main_process():
        yield run_dir
        return
    output_folder(run_dir, "run folder")
    lock_path = run_dir / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(f"{run_dir} is in use by another lowres run: {_holder_text(lock_path)}; wait for it "
                                "to finish, or give this run another name or output.dir") from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                  "command": command or " ".join(["lowres", *sys.argv[1:]])}
        # The file is rewritten in place (never replaced): the lock belongs to this inode.
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        previous = os.environ.get(HELD_ENV)
        os.environ[HELD_ENV] = str(run_dir)
        try:
            yield run_dir
        finally:
            if previous is None:
                os.environ.pop(HELD_ENV, None)
            else:
                os.environ[HELD_ENV] = previous
    finally:
        os.close(fd)  # releases the flock


def stage_run_folder(stage_folder: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Path:
    """The run folder whose lock a stage started by hand takes: the one it writes into.

    A stage folder inside a run (runs/<name>/warmup, runs/<name>/eval/<label>) belongs to that run, so a
    hand-started stage and `lowres run` of the same recipe exclude each other; a folder anywhere else is
    its own run folder. `run_dir`: the recipe's run folder, when the stage has a recipe."""
    folder = Path(stage_folder).expanduser().resolve()
    candidates = [folder.parent, folder.parent.parent] if folder.parent.name == "eval" else [folder.parent]
    for candidate in candidates:
        if (run_dir is not None and candidate == Path(run_dir).expanduser().resolve()) or \
                (candidate / "recipe.yaml").is_file():
            return candidate
    return folder
