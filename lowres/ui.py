"""The terminal view every command shares: one rich console, one progress-bar style."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def progress(*extra_columns, transient: bool = False, eta_field: bool = False) -> Progress:
    """A progress bar: spinner, description, bar, n/total, elapsed, ETA, plus `extra_columns`.

    eta_field: show the task's `eta` field (the caller's own estimate, e.g. from steps done and elapsed time)
    instead of rich's, which averages over the last 30 s only and so shows nothing while steps take longer."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *((TextColumn("ETA {task.fields[eta]}"),) if eta_field else (TextColumn("ETA"), TimeRemainingColumn())),
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
