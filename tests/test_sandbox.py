"""The sandbox: honest programs pass, hostile ones fail without harming the caller or the machine."""

import os
import tempfile
import threading
import time

import pytest

from lowres.sandbox import CallTimeout, FunctionWorker, WorkerError, run_many, run_python, time_limit

FAST = {"timeout_s": 2.0}


def test_honest_program_passes_and_output_is_captured():
    result = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)\nassert 1 + 1 == 2", **FAST)
    assert result.passed and result.returncode == 0 and result.error is None
    assert result.stdout == "out\n" and result.stderr == "err\n" and not result.timed_out


def test_failures_report_why():
    result = run_python("assert 1 == 2, 'nope'", **FAST)
    assert not result.passed and result.error == "AssertionError: nope"
    result = run_python("def f(:\n    pass", **FAST)
    assert not result.passed and "SyntaxError" in result.error


def test_non_string_code_fails():
    assert not run_python(None).passed
    assert not run_python(b"print(1)").passed


def test_program_can_use_its_own_directory():
    code = (
        "import os, shutil\n"
        "os.makedirs('a/b')\n"
        "open('a/b/f.txt', 'w').write('x')\n"
        "os.rename('a/b/f.txt', 'a/g.txt')\n"
        "os.remove('a/g.txt')\n"
        "shutil.rmtree('a')\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
    )
    assert run_python(code, **FAST).passed


def test_future_import_and_numpy_work():
    code = "from __future__ import annotations\nimport numpy as np\nassert np.arange(4).sum() == 6"
    assert run_python(code, timeout_s=10).passed


@pytest.fixture
def canary(tmp_path):
    """A file and a folder outside the sandbox that hostile programs go after."""
    path = tmp_path / "canary.txt"
    path.write_text("intact")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inner.txt").write_text("intact")
    return path


HOSTILE = {
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "infinite loop": "while True:\n    pass",
    "10 GB allocation": "x = bytearray(10 * 1024 ** 3)",
    "list allocation": "x = [0] * (2 * 10 ** 9)",
    "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "kill the group": "import os, signal\nos.killpg(0, signal.SIGKILL)",
    "stop the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)",
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\nassert False",
    "os._exit(0) before the tests": "import os\nos._exit(0)\nassert False",
    "exit via atexit": "import atexit, os\natexit.register(lambda: os._exit(0))\nassert False",
    "raise SystemExit in a test": "def check():\n    raise SystemExit(0)\ncheck()",
    "read stdin": "x = input()\nassert x",
    "output flood": "while True:\n    print('x' * 10000)",
    "stderr flood": "import sys\nwhile True:\n    sys.stderr.write('y' * 10000)",
    "ignore signals and spin": (
        "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGALRM):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass"
    ),
    "sleep forever": "import time\ntime.sleep(10 ** 6)",
    "close stdout and hang": "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(10 ** 6)",
    "recursion bomb": "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(n):\n    return f(n + 1)\nf(0)",
    "subprocess": "import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned > CANARY'])",
    "os.system": "import os\nos.system('echo pwned > CANARY')",
    "multiprocessing": "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    "ctypes fork": "import ctypes\nctypes.CDLL(None).fork()",
    "network": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "raw socket": "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    "write outside": "open('CANARY', 'w').write('pwned')",
    "append outside via pathlib": "import pathlib\npathlib.Path('CANARY').write_text('pwned')",
    "write via os.open": "import os\nfd = os.open('CANARY', os.O_WRONLY | os.O_TRUNC)\nos.write(fd, b'pwned')",
    "write via relative path": "import os\nopen(os.path.relpath('CANARY'), 'w').write('pwned')",
    "delete outside": "import os\nos.remove('CANARY')",
    "rmtree outside": "import shutil\nshutil.rmtree('FOLDER')",
    "rename outside": "import os\nos.rename('CANARY', 'stolen.txt')",
    "chmod outside": "import os\nos.chmod('CANARY', 0)",
    "symlink to outside": "import os\nos.symlink('CANARY', 'link')\nopen('link', 'w').write('pwned')",
    "hard link to outside": "import os\nos.link('CANARY', 'link')\nopen('link', 'w').write('pwned')",
    "chdir out": "import os\nos.chdir('FOLDER')\nopen('inner.txt', 'w').write('pwned')",
    "huge file": "with open('big', 'wb') as f:\n    f.write(b'0' * (64 * 1024 * 1024))",
    "raise rlimits": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    "leave the session": "import os\nos.setsid()",
    "find the token in __main__": (
        "import __main__, os\n"
        "for value in list(vars(__main__).values()):\n"
        "    for fd in range(3, 20):\n"
        "        try:\n            os.write(fd, str(value).encode())\n        except OSError:\n            pass\n"
        "os._exit(0)"
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_fails_and_harms_nothing(name, canary):
    code = HOSTILE[name].replace("CANARY", str(canary)).replace("FOLDER", str(canary.parent / "folder"))
    before = set(os.listdir(tempfile.gettempdir()))
    result = run_python(code, timeout_s=1.5, memory_mb=512, max_file_mb=8)
    assert not result.passed, result
    assert result.error
    assert len(result.stdout) <= 64_000 and len(result.stderr) <= 64_000
    assert canary.read_text() == "intact"
    assert oct(canary.stat().st_mode)[-3:] != "000"
    assert (canary.parent / "folder" / "inner.txt").read_text() == "intact"
    leftovers = {p for p in set(os.listdir(tempfile.gettempdir())) - before if p.startswith("lowres-sandbox-")}
    assert not leftovers  # its work directory was deleted


def test_timeouts_are_reported_as_such():
    result = run_python("while True:\n    pass", timeout_s=0.5)
    assert result.timed_out and result.error.startswith("timed out") and result.returncode < 0


def test_sys_exit_zero_is_not_a_pass():
    result = run_python("import sys\nsys.exit(0)", **FAST)
    assert result.returncode == 0 and not result.passed


def test_run_many_keeps_order_and_isolates_failures():
    jobs = ["assert True", "assert False", {"code": "while True: pass", "timeout_s": 0.5}, "print(3)"]
    results = run_many(jobs, workers=4, timeout_s=2.0)
    assert [r.passed for r in results] == [True, False, False, True]
    assert results[2].timed_out and results[3].stdout == "3\n"
    assert run_many([]) == []


def test_time_limit_interrupts_python_code():
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        with time_limit(0.2):
            while True:
                pass
    assert time.monotonic() - started < 5
    with time_limit(1.0):  # no alarm left behind
        pass
    time.sleep(0.05)


def test_time_limit_refuses_other_threads():
    errors = []

    def work():
        try:
            with time_limit(1):
                pass
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors


def test_function_worker_times_out_and_restarts():
    worker = FunctionWorker("time:sleep", memory_mb=0)
    try:
        with pytest.raises(CallTimeout):
            worker.call(30, timeout_s=0.5)
        assert worker.call(0, timeout_s=30) is None  # a fresh process answers
        assert worker.starts == 2
        with pytest.raises(WorkerError):
            worker.call("not a number", timeout_s=30)
        assert worker.starts == 2  # an exception in the function does not cost a restart
    finally:
        worker.close()
