"""The terminal view off a terminal: a pipe or a file gets plain progress lines and status lines (issue 34)."""

import io
import subprocess
import sys

import pytest
from rich.progress import Progress

import lowres.ui as ui
from lowres.ui import PlainProgress, console, progress


@pytest.fixture
def piped(monkeypatch):
    """The shared console writing to a pipe: what it prints, as text."""
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # either would make rich treat a pipe as a terminal
        monkeypatch.delenv(variable, raising=False)
    out = io.StringIO()
    monkeypatch.setattr(console, "_file", out)
    return out


def test_progress_off_a_terminal_prints_a_line_at_each_tenth_and_every_30_s(piped, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(ui.time, "monotonic", lambda: clock[0])
    with progress() as bar:
        assert isinstance(bar, PlainProgress)
        task = bar.add_task("eval kk", total=100)
        hidden = bar.add_task("held-out", total=3, visible=False)  # a bar the caller hides prints nothing
        for _ in range(25):
            bar.advance(task)
        bar.advance(hidden, 3)
        clock[0] += 31  # half-way to the next tenth, but 31 s since the last line
        bar.advance(task)
        bar.advance(task)  # moved again, but within 30 s and the same tenth: no line
        bar.update(task, completed=95)  # past several tenths at once: one line
        bar.advance(task)
    lines = piped.getvalue().splitlines()
    counts = [line.split()[2] for line in lines]
    assert counts == ["0/100", "10/100", "20/100", "26/100", "95/100", "96/100"]  # the last as it stops
    assert all(line.startswith("eval kk ") and " ETA " in line for line in lines)
    assert "━" not in piped.getvalue() and "held-out" not in piped.getvalue()


def test_the_training_view_off_a_terminal_prints_its_steps_and_metrics(piped):
    from transformers import TrainerControl, TrainerState

    from lowres.train.callbacks import LiveView

    view = LiveView("warmup", ("loss",))
    state = TrainerState()
    state.max_steps, state.global_step, state.num_input_tokens_seen = 4, 0, 0
    view.on_train_begin(None, state, TrainerControl())
    for step in range(1, 5):
        state.global_step = step
        view.on_log(None, state, TrainerControl(), logs={"loss": 1.0 / step})
        view.on_step_end(None, state, TrainerControl())
    view.on_train_end(None, state, TrainerControl())
    lines = piped.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    assert "loss 0.25" in lines[-1]


def test_a_status_off_a_terminal_is_one_plain_line(piped):
    with console.status("merging the adapter into the 16-bit base"):
        pass
    assert piped.getvalue() == "merging the adapter into the 16-bit base\n"


@pytest.mark.parametrize("term, live", [("xterm-256color", True), ("dumb", False)])
def test_a_terminal_keeps_the_live_bar_unless_it_is_dumb(monkeypatch, term, live):
    monkeypatch.setattr(console, "_force_terminal", True)
    monkeypatch.setenv("TERM", term)
    bar = progress()
    assert (type(bar) is Progress) == live and isinstance(bar, PlainProgress) != live


@pytest.mark.slow
def test_a_piped_stage_prints_its_progress_and_summary_lines(tmp_path):
    # The stage as a user pipes it (`lowres eval … | cat`), or as `lowres run` starts it with a piped output.
    proc = subprocess.run([sys.executable, "-m", "lowres", "eval", "embedded:smollm2-135m", "--tasks", "kk_easy",
                           "--limit", "2", "--n-samples", "1", "--batch-size", "1", "--max-new-tokens", "4",
                           "--out", str(tmp_path / "ev")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[2] for line in lines if line.startswith("eval kk_easy ")] == ["0/2", "1/2", "2/2"]
    assert any(line.startswith("embedded:smollm2-135m on kk_easy: ") for line in lines)
    assert lines[-1] == f"results → {tmp_path / 'ev'}"
