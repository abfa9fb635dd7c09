"""Running untrusted model-written code, and time-limiting trusted code on untrusted input.

`run_python` executes a program in a fresh `python -I` process: its own session (so a timeout kills
the whole process group), resource limits set before exec (CPU, memory, file size, process count,
no core dumps), a temporary working directory deleted afterwards, capped output, and a prelude in
the spirit of OpenAI human-eval's `reliability_guard` that disables fork/exec, signals to other
processes, network sockets, and writes or deletes outside the working directory. A program passes
only if it runs to its end: the runner reports completion on a private pipe with a per-run token,
so `sys.exit(0)` or `os._exit(0)` before the tests run counts as a failure.

This is a guard against accidents and reward hacking by a policy model, not a security boundary
against a determined attacker (in-process Python can always reach the runner's frames): for that,
run training inside a container or VM.

`time_limit` and `FunctionWorker` bound the time a *trusted* function (a sympy check, say) may
spend on an untrusted input: with SIGALRM on the main thread, or in a killable child process.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "CallTimeout", "FunctionWorker", "SandboxResult", "WorkerError", "run_many", "run_python", "time_limit",
]


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one sandboxed program.

    passed:     it ran to the end without an exception (and exit code 0).
    returncode: the process exit code (negative: killed by that signal); None if it never started.
    stdout, stderr: its output, each capped at `max_output_bytes`.
    timed_out:  it was killed for running past `timeout_s`.
    error:      why it failed, in one line (None when passed). "sandbox error: ..." means the
                sandbox itself could not run it (not the program's fault).
    duration_s: wall time.
    """

    passed: bool
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    error: str | None
    duration_s: float = 0.0


# --------------------------------------------------------------------------------------------
# The child side: a runner that reads the token, installs the guard, then execs program.py.
# Everything it needs is kept in function locals, not module globals, so the program cannot
# simply `import __main__` to find the completion token.
# --------------------------------------------------------------------------------------------
_RUNNER = r'''
def _run():
    import os, sys
    token = sys.stdin.readline().strip().encode()
    status_fd, allow_network = int(sys.argv[1]), sys.argv[2] == "1"
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the program reads EOF from stdin
    os.close(devnull)
    with open("program.py", encoding="utf-8", errors="replace") as f:
        source = f.read()
    code = compile(source, "program.py", "exec")
    if "numpy" in source:
        import numpy  # noqa: F401  (numpy needs ctypes, which the guard then hides)
    write, exit_now, stdout, stderr = os.write, os._exit, sys.stdout, sys.stderr
    _guard(os.getcwd(), allow_network)
    del source
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    for stream in (sys.stdout, sys.stderr, stdout, stderr):
        try:
            stream.flush()
        except Exception:
            pass
    write(status_fd, token)
    exit_now(0)


def _guard(root, allow_network):
    import _io, builtins, faulthandler, io, os, posix, shutil, signal, sys
    root = os.path.realpath(root)

    def inside(path, dir_fd=None):
        try:
            if isinstance(path, int):
                path, dir_fd = "", path  # an open directory or file: check where it is
            base = root if dir_fd is None else os.readlink(f"/proc/self/fd/{dir_fd}")
            full = os.path.realpath(os.path.join(base, os.fsdecode(path)))
        except Exception:
            return False
        return full == root or full.startswith(root + os.sep)

    def deny(name):
        def blocked(*args, **kwargs):
            raise PermissionError(f"{name}() is disabled in the sandbox")
        return blocked

    def only_inside(name, fn, npaths=1):
        def checked(*args, **kwargs):
            fds = [kwargs.get("dir_fd", kwargs.get("src_dir_fd")), kwargs.get("dst_dir_fd")]
            if not all(inside(p, fd) for p, fd in zip(args[:npaths], fds)):
                raise PermissionError(f"{name}() outside the sandbox directory is disabled")
            return fn(*args, **kwargs)
        return checked

    def writes(mode):
        return any(c in str(mode) for c in "wax+")

    real_open = io.open
    def guarded_open(file, mode="r", *args, **kwargs):
        if writes(mode) and not isinstance(file, int) and not inside(file):
            raise PermissionError(f"writing {file!r} outside the sandbox directory is disabled")
        return real_open(file, mode, *args, **kwargs)

    real_os_open = os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path, kwargs.get("dir_fd")):
            raise PermissionError(f"writing {path!r} outside the sandbox directory is disabled")
        return real_os_open(path, flags, *args, **kwargs)

    class GuardedFileIO(_io.FileIO):
        def __init__(self, file, mode="r", *args, **kwargs):
            if writes(mode) and not isinstance(file, int) and not inside(file):
                raise PermissionError(f"writing {file!r} outside the sandbox directory is disabled")
            super().__init__(file, mode, *args, **kwargs)

    builtins.open = io.open = guarded_open
    io.FileIO = _io.FileIO = GuardedFileIO

    patches = {"open": guarded_os_open}
    for name in ("remove", "unlink", "rmdir", "removedirs", "mkdir", "makedirs", "utime", "truncate", "mkfifo"):
        patches[name] = only_inside(name, getattr(os, name))
    for name in ("rename", "replace", "renames"):
        patches[name] = only_inside(name, getattr(os, name), npaths=2)
    for name in (
        "kill", "killpg", "fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp",
        "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
        "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
        "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid", "setresuid", "setresgid",
        "setsid", "setpgid", "setpgrp", "chroot", "chdir", "fchdir", "chmod", "fchmod", "lchmod",
        "chown", "fchown", "lchown", "chflags", "lchflags", "link", "symlink", "mknod",
        "pidfd_open", "plock", "nice", "sched_setaffinity",
    ):
        if hasattr(os, name):
            patches[name] = deny(name)
    for name, fn in patches.items():
        setattr(os, name, fn)
        if hasattr(posix, name):
            setattr(posix, name, fn)

    shutil.rmtree = only_inside("shutil.rmtree", shutil.rmtree)
    shutil.move = only_inside("shutil.move", shutil.move, npaths=2)
    shutil.chown = deny("shutil.chown")
    for name in ("pidfd_send_signal",):
        if hasattr(signal, name):
            setattr(signal, name, deny("signal." + name))
    import _posixsubprocess
    _posixsubprocess.fork_exec = deny("subprocess")
    import subprocess
    subprocess.Popen = deny("subprocess.Popen")

    if not allow_network:
        import _socket, socket
        class NoSocket(_socket.socket):
            def __init__(self, *args, **kwargs):
                raise PermissionError("network access is disabled in the sandbox")
        socket.socket = socket.SocketType = _socket.socket = _socket.SocketType = NoSocket
        for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
            setattr(socket, name, deny("socket." + name))

    faulthandler.disable()
    builtins.help = None
    # Modules that reach around the guard (raw C calls, rlimits, process tools) cannot be imported.
    for name in ("ctypes", "_ctypes", "cffi", "resource", "multiprocessing", "_multiprocessing",
                 "pty", "psutil", "ipdb", "joblib", "tkinter"):
        sys.modules[name] = None


_run()
'''


def _child_env(workdir: str) -> dict[str, str]:
    """A minimal environment: no credentials or proxies leak into the program."""
    return {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # One thread each: numpy's BLAS would otherwise start a thread per core in every run.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _limit_child(cpu_s: int, memory_bytes: int, file_bytes: int, max_processes: int) -> None:
    """preexec_fn: resource limits for the child, set between fork and exec (only C calls here)."""
    for res, soft, hard in (
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),  # SIGXCPU at soft, SIGKILL at hard
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_FSIZE, file_bytes, file_bytes),
        # Root ignores RLIMIT_NPROC on Linux; the runner's guard also disables fork.
        (resource.RLIMIT_NPROC, max_processes, max_processes),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:  # an unprivileged process cannot raise its hard limit
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(res, (soft, hard))


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_output_bytes: int = 64_000,
    max_file_mb: int = 16,
    max_processes: int = 64,
    allow_network: bool = False,
) -> SandboxResult:
    """Run the Python program `code` in a sandboxed subprocess and report whether it ran to the end.

    The program runs in a fresh temporary directory (deleted afterwards) with stdin at EOF. It is
    killed, with its whole process group, after `timeout_s` seconds or once it has written more
    than `max_output_bytes` to stdout or stderr. It never raises: failures of the sandbox itself
    come back as a failed result whose `error` starts with "sandbox error:".
    """
    start = time.monotonic()
    if not isinstance(code, str):  # an empty program would "pass"
        return SandboxResult(False, None, "", "", False, f"code must be a string, not {type(code).__name__}")
    workdir = tempfile.mkdtemp(prefix="lowres-sandbox-")
    status_r, status_w = os.pipe()
    proc = None
    try:
        with open(os.path.join(workdir, "program.py"), "wb") as f:
            f.write(code.encode("utf-8", "replace"))  # lone surrogates from a tokenizer become "?"
        limits = partial(
            _limit_child,
            max(1, int(timeout_s + 0.999)) + 1,
            int(memory_mb) << 20,
            int(max_file_mb) << 20,
            int(max_processes),
        )
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _RUNNER, str(status_w), "1" if allow_network else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=_child_env(workdir),
            pass_fds=(status_w,),
            start_new_session=True,
            preexec_fn=limits,
        )
        os.close(status_w)
        status_w = -1
        token = secrets.token_hex(16)
        try:
            proc.stdin.write(token.encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # it died already; the collection below reports why
        out, err, timed_out, overflow = _collect(proc, start + timeout_s, max_output_bytes)
        _kill_group(proc)
        returncode = proc.wait()
        finished = _read_status(status_r) == token.encode()
        passed = finished and returncode == 0 and not timed_out and not overflow
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        error = None if passed else _why_failed(returncode, stderr, timed_out, overflow, timeout_s)
        return SandboxResult(passed, returncode, stdout, stderr, timed_out, error, time.monotonic() - start)
    except Exception as exc:  # the sandbox failed, not the program: report, never raise
        log.warning("sandbox could not run a program: %s", exc)
        if proc is not None:
            _kill_group(proc)
            proc.wait()
        error = f"sandbox error: {type(exc).__name__}: {exc}"
        return SandboxResult(False, None, "", "", False, error, time.monotonic() - start)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        _remove_tree(workdir)


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until the process exits, the deadline passes or the output exceeds `cap`.

    Returns (stdout, stderr, timed_out, overflow). The process is not reaped here, so its process
    group stays valid for `_kill_group`.
    """
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    open_pipes = set(buffers)
    timed_out = overflow = exited = False
    pidfd = _pidfd(proc.pid)
    with selectors.DefaultSelector() as sel:
        for fd in buffers:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        try:
            while open_pipes or not exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                # Without a pidfd the exit can only be polled; 20 ms keeps that cheap.
                wait = remaining if pidfd is not None else min(remaining, 0.02)
                for key, _ in sel.select(wait):
                    if key.fd == pidfd:
                        exited = True
                        sel.unregister(pidfd)
                        _kill_group(proc)  # leftovers holding the pipes open end with it
                        continue
                    chunk = _read_some(key.fd)
                    if chunk is None:
                        continue
                    if not chunk:
                        open_pipes.discard(key.fd)
                        sel.unregister(key.fd)
                        continue
                    buffers[key.fd] += chunk
                    if len(buffers[key.fd]) > cap:
                        overflow = True
                        del buffers[key.fd][cap:]
                if overflow:
                    break
                if pidfd is None and not exited and _has_exited(proc.pid):
                    exited = True
                    _kill_group(proc)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), timed_out, overflow


def _read_some(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when `pid` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (WNOWAIT keeps its process group id valid)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group. Only called before the child is reaped, so the id is ours."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 256).strip()
    except BlockingIOError:
        return b""


def _why_failed(returncode: int, stderr: str, timed_out: bool, overflow: bool, timeout_s: float) -> str:
    if timed_out:
        return f"timed out after {timeout_s:g}s"
    if overflow:
        return "output limit exceeded"
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if returncode != 0:
        return lines[-1][:300] if lines else f"exit code {returncode}"
    return "exited before the end of the program"


def _remove_tree(path: str) -> None:
    """Delete the work directory even if the program made parts of it unreadable."""
    def make_writable_and_retry(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def run_many(
    jobs: Iterable[str | Mapping[str, Any]],
    workers: int | None = None,
    **defaults: Any,
) -> list[SandboxResult]:
    """Run many programs in parallel; results come back in the order of `jobs`.

    Each job is a program (str) or a mapping of `run_python` keyword arguments with a "code" key;
    `defaults` are keyword arguments for every job. Threads suffice: the work is in subprocesses.
    """
    calls = [{**defaults, "code": job} if isinstance(job, str) else {**defaults, **job} for job in jobs]
    if not calls:
        return []
    workers = max(1, min(workers or _cpu_count(), len(calls)))
    if workers == 1:
        return [run_python(**call) for call in calls]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lowres-sandbox") as pool:
        return list(pool.map(lambda call: run_python(**call), calls))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Time limits for trusted code on untrusted input.
# --------------------------------------------------------------------------------------------
class CallTimeout(BaseException):  # noqa: N818  (BaseException: library code's `except Exception` can't eat it)
    """A time-limited call ran out of time."""


class WorkerError(RuntimeError):
    """A FunctionWorker call failed: the function raised, or the worker process died."""


@contextmanager
def time_limit(seconds: float):
    """Raise CallTimeout inside the block once `seconds` have passed (SIGALRM: main thread only).

    Catch CallTimeout around the `with`, not inside it: the alarm may fire just as the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("time_limit() needs the main thread; use FunctionWorker elsewhere")

    def on_alarm(signum, frame):
        raise CallTimeout(f"over the {seconds:g}s limit")

    started = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, _ = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer_delay > 0:  # someone else's alarm was pending: put back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer_delay - (time.monotonic() - started), 1e-3))


_WORKER_MAIN = r'''
import importlib, json, os, resource, sys
sys.path[:0] = json.loads(sys.argv[2])
memory = int(sys.argv[3])
if memory > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
replies = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)  # stray prints from the function must not corrupt the reply stream
module, name = sys.argv[1].split(":")
func = getattr(importlib.import_module(module), name)
replies.write('{"ready": true}\n')
replies.flush()
for line in sys.stdin:
    try:
        reply = {"ok": True, "value": func(*json.loads(line))}
    except Exception as exc:
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    replies.write(json.dumps(reply) + "\n")
    replies.flush()
'''


class FunctionWorker:
    """A child process that calls one trusted function, "module:function", on JSON arguments.

    `call(*args, timeout_s=...)` returns its JSON result. If the call overruns, the child is killed
    (a C-level loop cannot be interrupted any other way) and the next call starts a fresh one, so
    one pathological input costs a restart, never a hung or bloated caller. One call at a time per
    worker (a lock serialises callers); give each thread its own worker for parallelism.
    """

    def __init__(self, target: str, memory_mb: int = 4096, startup_timeout_s: float = 60.0):
        self.target = target
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.starts = 0  # more than one means a call overran or crashed it
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def call(self, *args: Any, timeout_s: float) -> Any:
        """Run the function on `args`; CallTimeout past `timeout_s`, WorkerError if it raised or died."""
        request = (json.dumps(args) + "\n").encode()
        with self._lock:
            proc = self._ensure_started()
            try:
                proc.stdin.write(request)
                proc.stdin.flush()
            except OSError as exc:
                self._stop()
                raise WorkerError(f"worker for {self.target} died: {exc}") from exc
            reply = self._read_line(proc, timeout_s)
            if reply is None:
                self._stop()
                raise CallTimeout(f"{self.target} took over {timeout_s:g}s")
        if not reply.get("ok"):
            raise WorkerError(reply.get("error", "unknown error"))
        return reply.get("value")

    def close(self) -> None:
        """Stop the child process (a later call starts a new one)."""
        with self._lock:
            self._stop()

    def __del__(self):
        try:
            self._stop()
        except Exception:
            pass

    def _ensure_started(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        self.starts += 1
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_MAIN, self.target, json.dumps(_importable_path()),
             str(int(self.memory_mb) << 20)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal goes to the trainer, not to its helpers
        )
        self._buffer = b""
        ready = self._read_line(self._proc, self.startup_timeout_s)
        if not ready or not ready.get("ready"):
            self._stop()
            raise WorkerError(f"worker for {self.target} failed to start")
        return self._proc

    def _read_line(self, proc: subprocess.Popen, timeout_s: float) -> dict | None:
        """The next reply line as a dict; None on timeout. A dead worker gives an error reply."""
        deadline = time.monotonic() + timeout_s
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(remaining):
                    continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._stop()
                return {"ok": False, "error": f"worker for {self.target} exited"}
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"ok": False, "error": "unreadable reply from worker"}

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _importable_path() -> Sequence[str]:
    """The caller's sys.path, so the worker imports the same `lowres` (an installed or a source tree)."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
