"""Dataclass fields that describe a setting: its default, one line of help, and the range allowed.

The recipe parser (lowres.recipe) reads this metadata to check values and to show help; the recipe's
sections use it, and so does the task spec that lowres.tasks.generic defines (a section of the recipe
that belongs to the task layer). It lives here, below both, so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

REQUIRED = object()  # sentinel default: the key must be given in the recipe


def setting(default: Any = REQUIRED, *, help: str = "", min: float | None = None, max: float | None = None,
            min_exclusive: bool = False):
    """A recipe field: default, one-line help, and an allowed numeric range."""
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive}
    if default is REQUIRED:
        return field(default=None, metadata={**meta, "required": True})
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)
