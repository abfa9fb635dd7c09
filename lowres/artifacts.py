"""Writing the files whose presence means "done", so that a crash never leaves a half-written one.

A process can die at any instant (kill -9, power loss, a full disk). The rule here: a file or folder
that a later run trusts appears under its final name only when it is complete. Files are written to
a temporary name beside the target, flushed to disk (fsync) and renamed over it (a rename is atomic
on POSIX file systems); folders (an adapter, a merged model, one task's eval results) are built under
`<name>.partial` and renamed into place. Append-only logs (metrics.jsonl, distilled traces) cannot be
renamed on every line, so their readers skip a torn last line instead (`read_jsonl`).

Also here: the one-line messages for output places that cannot be written (a folder where a file
should be, a parent that is a file, a read-only place, a full disk).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lowres.errors import UserError


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """This process's umask. Linux shows it in /proc/self/status; elsewhere the only way to read it is to
    set it and put it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions a file created with open() gets under the user's umask (0o644 under 022)."""
    return 0o666 & ~_umask()


def new_folder_mode() -> int:
    """The permissions a folder created with mkdir() gets under the user's umask (0o755 under 022)."""
    return 0o777 & ~_umask()


def follow_umask(folder: Path) -> None:
    """Give `folder` and everything in it the permissions the user's umask gives new files and folders.
    Some writers make their files owner-only whatever the umask: safetensors (0.8) writes every weights
    file 0600, and mkstemp/mkdtemp do too."""
    file_mode, folder_mode = new_file_mode(), new_folder_mode()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod(folder_mode if executable else file_mode)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # mkstemp makes the file owner-only (0600), which the rename would keep: give it the mode any
            # file the user creates gets.
            os.fchmod(f.fileno(), new_file_mode())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (a crash can tear only this last line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of an append-only JSONL log; a torn line (a crash mid-write) is skipped."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def read_json(path: str | os.PathLike) -> Any | None:
    """A JSON file's content, or None when it is missing or unreadable (treated as not there)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def partial_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".partial")


@contextlib.contextmanager
def building_folder(folder: str | os.PathLike):
    """Build a folder under `<folder>.partial`, then swap it in for `folder` in one rename.

        with building_folder(out / "adapter") as tmp:
            model.save_pretrained(tmp)

    Leftovers of an earlier crash (`.partial`) are cleared first. Until the rename, a reader sees the
    old folder (or none), never a half-written one."""
    folder = Path(folder)
    tmp = partial_path(folder)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    yield tmp
    follow_umask(tmp)
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync_folder(folder.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def set_aside(path: Path, into: Path) -> Path:
    """Move `path` to `into` (replacing an earlier set-aside copy there); returns `into`."""
    into.parent.mkdir(parents=True, exist_ok=True)
    if into.exists():
        shutil.rmtree(into) if into.is_dir() else into.unlink()
    os.replace(path, into)
    return into


# ---------------------------------------------------------------- where outputs go

def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def _probe_writable(folder: Path, shown: Path) -> None:
    """Create and remove a file in `folder`: the only honest test (root ignores permission bits; a
    read-only mount says so only on write)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lowres-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{shown}: cannot write there ({os.strerror(e.errno) if e.errno else e})") from None


def output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at `path`; creates missing parent folders.
    Raises a one-line UserError for a folder at `path`, a parent that is a file, or a read-only place."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name for the {what}")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot create the folder ({os.strerror(e.errno)})") from None
    _probe_writable(path.parent, path.parent)
    return path


def output_folder(path: str | os.PathLike, what: str = "output folder", create: bool = True) -> Path:
    """Check that `path` is (or can become) a writable folder, and create it. With create=False
    (for checks such as `lowres validate`, which must leave no trace) `path`, or its nearest existing
    parent, must be a writable folder."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: is a file; the {what} must be a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a folder")
    if not create:
        _probe_writable(existing, existing)
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the folder ({os.strerror(e.errno)})") from None
    _probe_writable(path, path)
    return path


def require_free_space(folder: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Fail before a stage starts when `folder`'s disk cannot hold what the stage will write."""
    folder = _nearest_existing(Path(folder).expanduser())
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise UserError(f"{folder}: {free / 2**30:.1f} GiB free, but {what} needs about "
                        f"{need_bytes / 2**30:.1f} GiB; free some space or set output.dir to a larger disk")


# Errors that mean the disk (or quota) is full, as the OS and as torch's/safetensors' writers word it.
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_WORDS = ("no space left on device", "file write failed", "disk quota exceeded")


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    return any(words in str(error).lower() for words in _DISK_FULL_WORDS)


@contextlib.contextmanager
def disk_guard(folder: str | os.PathLike, stage: str):
    """Turn a full disk or an unwritable folder met while `stage` writes into `folder` into one line.
    (What was written before — the last complete checkpoint — stays usable: nothing here deletes.)"""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if is_disk_full(e):
            raise UserError(f"{stage}: the disk is full while writing to {folder}; free some space and run "
                            "the same command again (the last complete checkpoint is kept)") from None
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise UserError(f"{stage}: cannot write {e.filename or folder} ({os.strerror(e.errno)})") from None
        raise
