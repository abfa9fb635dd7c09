"""A process per stage (lowres.launch): exit codes become one-line errors, tracebacks stay visible,
Ctrl-C reaches the child once and stops it, and `lowres run` shows a child's bad input as one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from lowres import launch
from lowres.cli import cli
from lowres.launch import INTERRUPTED, StageFailed, run_stage


@pytest.fixture
def child_runs(monkeypatch):
    """Make run_stage start `python -c CODE` instead of `python -m lowres …`."""

    def use(code: str):
        monkeypatch.setattr(launch, "stage_command", lambda args: [sys.executable, "-c", code])

    return use


def test_a_child_that_exits_0_is_a_finished_stage(child_runs):
    child_runs("import os; assert os.environ['LOWRES_STAGE_CHILD'] == '1'")
    run_stage("warmup", [])


def test_bad_input_in_a_child_is_its_one_line_and_exit_2(child_runs, capfd):
    child_runs("import sys; print('error: data.jsonl:3: not valid JSON', file=sys.stderr); sys.exit(2)")
    with pytest.raises(StageFailed) as caught:
        run_stage("warmup", [])
    assert caught.value.exit_code == 2 and caught.value.message is None  # nothing more to print
    assert capfd.readouterr().err.strip() == "error: data.jsonl:3: not valid JSON"


def test_a_bug_in_a_child_keeps_its_traceback_and_exits_1(child_runs, capfd):
    child_runs("raise RuntimeError('boom')")
    with pytest.raises(StageFailed) as caught:
        run_stage("rlvr", [])
    assert caught.value.exit_code == 1
    assert "the rlvr stage crashed (exit code 1)" in caught.value.message
    err = capfd.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_ctrl_c_reaches_the_child_once_and_stops_it(child_runs, tmp_path):
    """The terminal's SIGINT goes to the conductor only (the child has its own process group); the
    conductor passes one SIGINT on and waits for the child to save and stop."""
    log = tmp_path / "signals"
    child_runs(f"""
import signal, sys, time
from pathlib import Path
log = Path({str(log)!r})
def on_int(*_):
    log.write_text(log.read_text() + "INT\\n" if log.exists() else "INT\\n")
    time.sleep(0.5)  # "saving a checkpoint": a second SIGINT here would interrupt it
    sys.exit(130)
signal.signal(signal.SIGINT, on_int)
Path({str(tmp_path / "started")!r}).touch()
time.sleep(60)
""")

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    started = time.time()
    try:
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        with pytest.raises(StageFailed) as caught:
            run_stage("warmup", [], grace_seconds=20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert caught.value.exit_code == INTERRUPTED
    assert (tmp_path / "started").exists()
    assert log.read_text() == "INT\n"
    assert time.time() - started < 15


def test_cli_says_what_an_interrupted_stage_left(monkeypatch, tmp_path):
    """The demo's warmup saves only at its last step: stopped before it, the rerun starts it over, and the line
    says so (the checkpoint a stage did save is named: tests/test_crash_safety.py)."""
    from lowres import pipeline

    def interrupted(name, args, processes=1, folder=None):  # as run_stage ends on a Ctrl-C, with the folder given
        raise StageFailed(name, INTERRUPTED, None, folder=folder)

    monkeypatch.setattr(pipeline, "run_stage", interrupted)
    monkeypatch.chdir(tmp_path)  # the run folder (and its lock) goes to runs/demo there
    result = CliRunner().invoke(cli, ["run", "demo"])
    assert result.exit_code == INTERRUPTED
    assert result.output.strip().splitlines()[-1] == ("error: interrupted during warmup before it saved a checkpoint: "
                                                      "the same command starts warmup over (save_steps sets how often "
                                                      "it saves)")
    assert "last checkpoint" not in result.output


@pytest.mark.slow
def test_lowres_run_shows_a_childs_bad_input_as_one_line(tmp_path):
    """End to end through real child processes: only the warmup child, once it has the tokenizer, can
    tell that every trace is longer than max_seq_length; the conductor's checks pass."""
    traces = tmp_path / "long.jsonl"
    traces.write_text(json.dumps({"prompt": "Who is a knight?", "completion": "think " * 200}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""name: broken
model: {{name_or_path: embedded:smollm2-135m, max_seq_length: 64}}
stages: [warmup, merge]
data: {{warmup: {{source: {traces}}}}}
output: {{dir: {tmp_path / 'runs'}}}
""")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lowres", "run", str(recipe)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == ["error: all 1 warmup examples are longer than model.max_seq_length "
                                                "(64); raise it or use shorter traces"]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "runs" / "broken" / "warmup" / "done.json").exists()


# ---------------------------------------------------------------- Ctrl-C inside a caller (pytest, a notebook)

def test_ctrl_c_in_a_stage_run_in_process_reaches_the_caller(monkeypatch, tmp_path):
    """Called in-process (CliRunner, cli.main) the CLI does not turn a Ctrl-C into an exit code: the caller
    (here pytest, which must stop the suite) gets the KeyboardInterrupt."""
    from lowres.train import warmup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(warmup, "run_warmup", interrupted)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        CliRunner().invoke(cli, ["warmup", "demo"])


def test_ctrl_c_while_lowres_run_waits_for_a_stage_reaches_the_caller(child_runs, tmp_path):
    """A real child stage and a real SIGINT to this process: the child is stopped, then the interrupt goes on."""
    import threading

    from lowres.runlock import HELD_ENV, run_folder_lock

    started = tmp_path / "started"
    child_runs(f"""
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
Path({str(started)!r}).touch()
time.sleep(60)
""")

    sent = threading.Event()

    def interrupt_once_the_child_runs():
        for _ in range(600):
            if started.exists():
                # To the main thread, as a terminal's Ctrl-C lands there: a process-wide kill may be taken by
                # another thread while the main one sits in waitpid.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                sent.set()
                return
            time.sleep(0.1)

    threading.Thread(target=interrupt_once_the_child_runs, daemon=True).start()
    try:
        result = CliRunner().invoke(cli, ["run", "demo", "--set", f"output.dir={tmp_path}"])
    except KeyboardInterrupt:
        pass
    else:  # say what happened instead, so that a failure here can be read
        pytest.fail(f"no KeyboardInterrupt reached the caller (SIGINT sent: {sent.is_set()}); exit code "
                    f"{result.exit_code}, {result.exception!r}; output ends:\n{result.output[-1500:]}")
    assert started.exists()
    assert HELD_ENV not in os.environ
    with run_folder_lock(tmp_path / "demo"):  # the run's lock was let go
        pass


def test_the_lowres_program_still_ends_a_ctrl_c_in_one_line(monkeypatch, tmp_path, capsys):
    import lowres.cli
    from lowres.train import warmup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lowres.cli, "_RUNNING_AS_PROGRAM", False)  # main() sets it; restored after the test
    monkeypatch.setattr(warmup, "run_warmup", interrupted)
    monkeypatch.setattr(sys, "argv", ["lowres", "warmup", "demo"])
    monkeypatch.delenv("LOWRES_STAGE_CHILD", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as ended:
        lowres.cli.main()
    assert ended.value.code == INTERRUPTED
    assert capsys.readouterr().err.strip() == ("error: interrupted during warmup before it saved a checkpoint: the "
                                               "same command starts warmup over (save_steps sets how often it saves)")
