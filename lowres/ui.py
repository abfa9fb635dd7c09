"""The terminal view every command shares: one rich console, one progress-bar style."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

console = Console(highlight=False)
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
    resumed from a checkpoint) instead of the mean time per item since the bar began."""
    return Progress(
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
        disable=not sys.stdout.isatty() and console.is_dumb_terminal,
    )


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
