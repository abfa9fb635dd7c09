"""The one exception type that reaches the user as a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input the user can fix: a recipe, a dataset, a model path, a missing package.

    The message names what to fix. The CLI prints it on one line and exits 2; no traceback.
    """

    exit_code = 2


class OutOfMemory(UserError):
    """A stage ran out of GPU memory: one line naming the settings that lower it, exit code 3 (so a
    caller such as `lowres bench` can tell "does not fit" from other bad input)."""

    exit_code = 3
