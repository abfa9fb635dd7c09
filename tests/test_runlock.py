"""One writer per run folder: a second `lowres run` of the same recipe (or a stage started by hand into it)
is refused in one line naming the holder, while a lock left by a killed run is taken over."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import lowres.pipeline
from lowres.cli import cli
from lowres.runlock import HELD_ENV, LOCK_FILE, RunFolderBusy, run_folder_lock, stage_run_folder

HOLDER = textwrap.dedent("""
    import sys
    from lowres.runlock import run_folder_lock

    with run_folder_lock(sys.argv[1], command="lowres run holder"):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin (or kills this process)
""")


def child_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != HELD_ENV}


class Holder:
    """Another process that holds the lock of `run_dir` until it is released or killed."""

    def __init__(self, run_dir: Path):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=child_env())
        assert self.process.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=60)
        self.process.stdin.close()


@pytest.fixture
def holder(tmp_path):
    made = []

    def hold(run_dir: Path) -> Holder:
        made.append(Holder(run_dir))
        return made[-1]

    yield hold
    for h in made:
        if h.process.poll() is None:
            h.kill()


def test_a_second_holder_is_told_who_has_the_folder(tmp_path, holder):
    run_dir = tmp_path / "runs" / "demo"
    first = holder(run_dir)
    with pytest.raises(RunFolderBusy) as busy:
        with run_folder_lock(run_dir):
            pass
    message = str(busy.value)
    assert message.startswith(f"{run_dir.resolve()} is in use by another lowres run: pid {first.process.pid} on "
                              f"{socket.gethostname()}, started ")
    assert "(lowres run holder)" in message and "\n" not in message
    first.release()
    with run_folder_lock(run_dir):  # free again once the holder is done
        record = json.loads((run_dir / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, holder):
    run_dir = tmp_path / "demo"
    holder(run_dir).kill()  # kill -9: the lock file stays, naming a process that is gone
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] != os.getpid()
    with run_folder_lock(run_dir):
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_the_stages_a_conductor_starts_write_under_its_lock(tmp_path):
    """`lowres run` holds the lock; its stage children (which inherit the environment) go on."""
    run_dir = tmp_path / "demo"
    check = ("import sys\nfrom lowres.runlock import run_folder_lock\n"
             "with run_folder_lock(sys.argv[1]):\n    print('ran')\n")
    with run_folder_lock(run_dir):
        assert os.environ[HELD_ENV] == str(run_dir.resolve())
        child = subprocess.run([sys.executable, "-c", check, str(run_dir)], capture_output=True, text=True)
        assert child.returncode == 0 and child.stdout == "ran\n", child.stderr
        stranger = subprocess.run([sys.executable, "-c", check, str(run_dir)], capture_output=True, text=True,
                                  env=child_env())
        assert stranger.returncode != 0 and "is in use by another lowres run" in stranger.stderr
    assert HELD_ENV not in os.environ


def test_run_refuses_a_folder_in_use_and_runs_nothing(tmp_path, holder, monkeypatch):
    ran = []
    monkeypatch.setattr(lowres.pipeline, "run_recipe", lambda recipe, force: ran.append(recipe.name))
    first = holder(tmp_path / "demo")
    result = CliRunner().invoke(cli, ["run", "demo", "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 2 and ran == []
    assert result.output.startswith(f"error: {(tmp_path / 'demo').resolve()} is in use by another lowres run: "
                                    f"pid {first.process.pid} ")
    first.release()
    result = CliRunner().invoke(cli, ["run", "demo", "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0 and ran == ["demo"], result.output


def test_stages_started_by_hand_take_the_lock_of_their_run(tmp_path, holder, monkeypatch):
    import lowres.evaluate
    import lowres.train.warmup

    monkeypatch.setattr(lowres.train.warmup, "run_warmup", lambda *args: pytest.fail("warmup ran"))
    monkeypatch.setattr(lowres.evaluate, "evaluate_model", lambda *args, **kwargs: pytest.fail("eval ran"))
    run_dir = tmp_path / "demo"
    held = holder(run_dir)
    (run_dir / "recipe.yaml").write_text("name: demo\n")  # what `lowres run` leaves in its folder
    for args in (["warmup", "demo", "--set", f"output.dir={tmp_path}"],
                 ["eval", "embedded:smollm2-135m", "--tasks", "kk_easy", "--out", str(run_dir / "eval" / "base")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert f"is in use by another lowres run: pid {held.process.pid} " in result.output


def test_the_run_folder_of_a_stage_folder(tmp_path):
    run_dir = tmp_path / "runs" / "demo"
    assert stage_run_folder(run_dir / "warmup", run_dir) == run_dir.resolve()
    assert stage_run_folder(run_dir / "eval" / "base") == (run_dir / "eval" / "base").resolve()
    (run_dir / "eval").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text("name: demo\n")
    assert stage_run_folder(run_dir / "eval" / "base") == run_dir.resolve()
    assert stage_run_folder(run_dir / "merge") == run_dir.resolve()
    # Elsewhere a stage folder is its own run folder: two evaluations side by side do not exclude each other.
    assert stage_run_folder(tmp_path / "eval" / "smol") == (tmp_path / "eval" / "smol").resolve()


def test_two_real_runs_of_one_recipe(tmp_path, holder):
    """The second of two `lowres run` processes on one folder ends at once: one line, exit 2, nothing run."""
    first = holder(tmp_path / "demo")
    second = subprocess.run([sys.executable, "-m", "lowres", "run", "demo", "--set", f"output.dir={tmp_path}"],
                            capture_output=True, text=True, env=child_env(), timeout=300)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"in use by another lowres run: pid {first.process.pid} " in errors[0]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [LOCK_FILE]
    assert first.process.poll() is None  # the first is undisturbed
