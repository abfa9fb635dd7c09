"""The terminal view every command shares: one rich console, one progress-bar style."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

# Output that is not a terminal (a pipe, a file, a stage's log) gets a progress line at each tenth of the
# way and, between those, once this long has passed since the last one, instead of a live bar.
PLAIN_EVERY_SECONDS = 30.0


class _Console(Console):
    """rich's console, with spinners as plain lines where nothing can redraw them."""

    def live(self) -> bool:
        """Whether a live display can redraw here: a terminal that is not dumb, or Jupyter. Elsewhere rich draws
        a live bar only once, when it stops, and a spinner never."""
        return self.is_jupyter or (self.is_terminal and not self.is_dumb_terminal)

    def status(self, status, **kwargs):
        """A spinner with `status` on a terminal; elsewhere `status` as one plain line."""
        if self.live():
            return super().status(status, **kwargs)
        self.print(status, soft_wrap=True)
        return _PlainStatus(self)


class _PlainStatus:
    """What `console.status` gives where nothing redraws: a context that prints an update as a line."""

    def __init__(self, owner: Console):
        self.owner = owner

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, status=None, **kwargs) -> None:
        if status is not None:
            self.owner.print(status, soft_wrap=True)


console = _Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def time_left(done: int, remaining: int, elapsed: float) -> str:
    """H:MM:SS left for `remaining` items at the mean time of the `done` items so far (`elapsed` seconds
    since they began), or -:--:-- before the first is done."""
    if done <= 0:
        return "-:--:--"
    seconds = round(remaining * elapsed / done)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class MeanTimeRemainingColumn(ProgressColumn):
    """Time left at the mean time per item since the bar began. (rich's own column averages the last 30 s
    only, so it shows nothing while each item, a batch of samples, takes longer than that.)"""

    def render(self, task) -> Text:
        if task.total is None or task.elapsed is None:
            return Text("-:--:--", style="progress.remaining")
        return Text(time_left(int(task.completed), int(task.total - task.completed), task.elapsed),
                    style="progress.remaining")


def progress(*extra_columns, transient: bool = False, eta_field: bool = False) -> Progress:
    """A progress bar: spinner, description, bar, n/total, elapsed, ETA, plus `extra_columns`.

    eta_field: show the task's `eta` field (the caller's own estimate, e.g. from steps done in this run when it
    resumed from a checkpoint) instead of the mean time per item since the bar began.

    Where the output is not a terminal the same columns print as plain lines instead (PlainProgress)."""
    return (Progress if console.live() else PlainProgress)(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TextColumn("{task.fields[eta]}") if eta_field else MeanTimeRemainingColumn(),
        *extra_columns,
        console=console,
        transient=transient,
    )


class PlainProgress(Progress):
    """A progress bar for output that is not a terminal: its text columns as one plain line when a task is added,
    at each tenth of its total, between those when it has moved and PLAIN_EVERY_SECONDS have passed since the
    last line, and at the end. Tasks added with visible=False print nothing."""

    def __init__(self, *columns, **kwargs):
        super().__init__(*columns, **{**kwargs, "disable": True})  # no live display: it would draw only at the end
        self._said: dict[TaskID, tuple[float, float]] = {}  # per task: (completed, time) at its last line

    def add_task(self, *args, **kwargs) -> TaskID:
        task_id = super().add_task(*args, **kwargs)
        self._say(task_id, force=True)
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._say(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)

    def stop(self) -> None:
        for task_id, task in list(self._tasks.items()):
            if self._said.get(task_id, (None,))[0] != task.completed:
                self._say(task_id, force=True)
        super().stop()

    def line(self, task_id: TaskID) -> str:
        """The task's columns as text, without the spinner and the bar."""
        task = self._tasks[task_id]
        parts = [column.render(task) for column in self.columns
                 if not isinstance(column, (SpinnerColumn, BarColumn))]
        texts = [(part.plain if isinstance(part, Text) else str(part)).strip() for part in parts]
        return " ".join(text for text in texts if text)

    def _say(self, task_id: TaskID, force: bool = False) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if not task.visible:
                return
            now = time.monotonic()
            last = self._said.get(task_id)
            if not force:
                if last is None or last[0] == task.completed:
                    return
                tenth = task.total / 10 if task.total else None
                crossed = tenth is not None and int(task.completed // tenth) > int(last[0] // tenth)
                if not crossed and now - last[1] < PLAIN_EVERY_SECONDS:
                    return
            self._said[task_id] = (task.completed, now)
            self.console.print(self.line(task_id), markup=False, highlight=False, soft_wrap=True)


def counted(count: int, noun: str) -> str:
    """A count and its noun, singular for one: "1 step", "3 steps"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def error(message: str) -> None:
    """One line, to stderr: what went wrong and what to fix."""
    from rich.markup import escape

    # Escaped: a message quoting the user's input ("eval.tasks=[kk]") must print as written.
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and advisory chatter, so the rich view is the one
    the user reads. Warnings that matter still come through."""
    import logging

    # bitsandbytes tries to fetch an optional CPU kernel from the hub and warns when it cannot; it
    # falls back to its own kernel, so the warning only alarms.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def duration(seconds: float | None) -> str:
    """'2.5 min', or '45 s' under a minute and a half; '-' for none."""
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
