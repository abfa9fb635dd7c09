"""Where a task's rows come from: a file the user names, a local data folder, or the Hugging Face Hub.

Order of precedence in `load_rows`:
1. `path=`: a local .jsonl, .jsonl.gz, .json or .parquet file.
2. `$LOWRES_DATA_DIR`: a folder laid out like the offline bundle (`math500/test.jsonl`,
   `gsm8k/train.jsonl.gz`, ...); the task lists the file names it accepts, the first found wins.
3. The Hub, with `datasets.load_dataset` (imported only then: it is slow to import).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowres.errors import UserError

DATA_DIR_ENV = "LOWRES_DATA_DIR"
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


@dataclass(frozen=True)
class HubSource:
    """A dataset on the Hugging Face Hub: `load_dataset(name, config, split=split)`."""

    name: str
    split: str
    config: str | None = None


def data_dir() -> Path | None:
    """The local data folder from $LOWRES_DATA_DIR, or None when unset."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def find_local(candidates: Iterable[str]) -> Path | None:
    """The first of `candidates` (paths relative to $LOWRES_DATA_DIR) that exists, or None."""
    root = data_dir()
    if root is None:
        return None
    for relative in candidates:
        path = root / relative
        if path.is_file():
            return path
    return None


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a .jsonl, .jsonl.gz, .json (a list of objects) or .parquet file, as dicts."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq  # lazy: only parquet needs it

            rows = pq.read_table(path).to_pylist()
        elif name.endswith(".jsonl.gz") or name.endswith(".jsonl"):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        elif name.endswith(".json"):
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise UserError(f"data file {path}: unsupported format; use one of {', '.join(SUFFIXES)}")
    except UserError:
        raise
    except Exception as exc:  # corrupt gzip, bad JSON line, broken parquet
        raise UserError(f"data file {path} could not be read: {type(exc).__name__}: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"data file {path}: expected one JSON object per row")
    if not rows:
        raise UserError(f"data file {path} has no rows")
    return rows


def require_columns(rows: Sequence[dict[str, Any]], columns: Iterable[str], source: str) -> None:
    """UserError naming `source` and the expected columns if any row lacks any of `columns`."""
    columns = list(columns)
    missing = [c for c in columns if not rows or any(c not in row for row in rows)]
    if missing:
        found = ", ".join(sorted(rows[0])) if rows else "none"
        raise UserError(
            f"{source}: missing column(s) {', '.join(missing)}; expected columns {', '.join(columns)} "
            f"(found: {found})"
        )


def load_rows(
    *,
    path: str | os.PathLike | None,
    local: Sequence[str],
    hub: HubSource | None,
    columns: Sequence[str],
    what: str,
) -> list[dict[str, Any]]:
    """Rows for one task split, from `path`, else $LOWRES_DATA_DIR/<one of local>, else the Hub.

    `columns` are the columns the task needs; `what` names the data in error messages
    (e.g. "gsm8k train").
    """
    if path is not None:
        rows = read_rows(path)
        require_columns(rows, columns, f"data file {path}")
        return rows
    found = find_local(local)
    if found is not None:
        rows = read_rows(found)
        require_columns(rows, columns, f"data file {found}")
        return rows
    if hub is None:
        raise UserError(f"no data for {what}: pass path= or put {local[0]} under ${DATA_DIR_ENV}")
    rows = _load_hub(hub, what)
    require_columns(rows, columns, f"Hub dataset {hub.name}")
    return rows


def _load_hub(hub: HubSource, what: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as exc:
        raise UserError(f"loading {what} from the Hub needs the `datasets` package: pip install datasets") from exc
    try:
        dataset = datasets.load_dataset(hub.name, hub.config, split=hub.split)
    except Exception as exc:  # offline, gated, renamed: the user can fix it with a local copy
        looked = f" (looked under ${DATA_DIR_ENV}={data_dir()})" if data_dir() else ""
        raise UserError(
            f"could not load {what} from the Hugging Face Hub ({hub.name}, split {hub.split}): "
            f"{type(exc).__name__}: {str(exc)[:200]}; set {DATA_DIR_ENV} to a local copy{looked} or pass path="
        ) from exc
    return [dict(row) for row in dataset]


def local_candidates(folder: str, stem: str) -> list[str]:
    """`folder/stem` with each supported suffix, for tasks whose files follow the plain naming."""
    return [f"{folder}/{stem}{suffix}" for suffix in SUFFIXES]
