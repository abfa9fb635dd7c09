"""The exception types that reach the user as a one-line message and exit code 2 (or 3), and the exit
code of an interrupted run.

The lowest layer: every other module may import it, and it imports none of them.
"""

from __future__ import annotations

# The exit code of a run stopped by Ctrl-C (the shell's convention for "stopped by SIGINT").
INTERRUPTED = 130


class UserError(Exception):
    """Bad input the user can fix: a recipe, a dataset, a model path, a missing package.

    The message names what to fix. The CLI prints it on one line and exits 2; no traceback.
    """

    exit_code = 2


class OutOfMemory(UserError):
    """A stage ran out of GPU memory: one line naming the settings that lower it, exit code 3 (so a
    caller such as `lowres bench` can tell "does not fit" from other bad input)."""

    exit_code = 3


class RecipeError(UserError):
    """A recipe that cannot be used; the message says where and what to fix.

    `where` is the key path at fault (e.g. rlvr.learning_rate) and `detail` the problem, so an error
    in a value that came from `--set` can blame the `--set` instead of the file."""

    def __init__(self, message: str, where: str | None = None, detail: str | None = None,
                 related: tuple[str, ...] = ()):
        super().__init__(message)
        self.where, self.detail, self.related = where, detail, related

    @classmethod
    def at(cls, source: str, where: str, detail: str, related: tuple[str, ...] = ()) -> RecipeError:
        """The error for key `where` of the recipe file `source`; `related`: other keys the problem
        involves (a `--set` of any of them is blamed)."""
        return cls(f"{source}: {where}: {detail}", where, detail, related)
