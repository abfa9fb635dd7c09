"""Where a task's rows come from: a file the user names, a local data folder, or the Hugging Face Hub.

Order of precedence in `load_rows`:
1. `path=`: a local .jsonl, .jsonl.gz, .json or .parquet file (a recipe's `data.target.path`).
2. `$LOWRES_DATA_DIR`: a folder laid out like the offline bundle (`math500/test.jsonl`,
   `gsm8k/train.jsonl.gz`, ...); the task lists the file names it accepts, the first found wins.
3. The Hub, with `datasets.load_dataset` (imported only then: it is slow to import).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


class DataNotLocal(UserError):
    """Inside `local_only()`: rows that only the network could give (a Hub dataset not in the datasets cache)."""


_local_only = False


@contextmanager
def local_only() -> Iterator[None]:
    """Within it, rows come only from this machine: files, $LOWRES_DATA_DIR, and Hub datasets already in the
    datasets cache (read in offline mode); any other Hub dataset raises DataNotLocal at once, so a caller that
    only counts rows (the plan of `lowres run --dry-run`) never waits on the network."""
    global _local_only
    before, _local_only = _local_only, True
    try:
        yield
    finally:
        _local_only = before


@contextmanager
def _hub_offline() -> Iterator[None]:
    """datasets and huggingface_hub in offline mode (they read HF_HUB_OFFLINE at import, so their flags are set)."""
    import datasets.config
    from huggingface_hub import constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE = saved


def datasets_cache() -> Path:
    """Where `datasets` keeps the datasets it has prepared (its HF_DATASETS_CACHE, as it reads it at import)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "datasets"


def hub_dataset_cached(name: str, config: str | None) -> bool:
    """Whether `datasets.load_dataset(name, config)` can be answered offline: a dataset it prepared before
    (<HF_DATASETS_CACHE>/<namespace>___<name in snake case>/<config>/<version>/<hash>/, the folders its
    offline fallback looks in). A Hub snapshot alone is not enough: offline, datasets does not read it."""
    parts = name.split("/")
    last = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", parts[-1])).lower()
    root = datasets_cache() / "___".join([*parts[:-1], last])
    return any(p.is_dir() for p in root.glob(f"{config or '*'}/*/*"))


def load_hub_dataset(name: str, config: str | None, split: str, what: str) -> list[dict[str, Any]]:
    """The rows of `datasets.load_dataset(name, config, split=split)` (`name` may be a local folder). Inside
    `local_only()`: only from a local folder or the datasets cache, else DataNotLocal naming `what`."""
    import datasets

    if not _local_only:
        return [dict(row) for row in datasets.load_dataset(name, config, split=split)]
    if not Path(name).expanduser().is_dir() and not hub_dataset_cached(name, config):
        raise DataNotLocal(f"{what} ({name}) is not on this machine yet (not under ${DATA_DIR_ENV}, not in the "
                           f"datasets cache {datasets_cache()})")
    try:
        with _hub_offline():
            return [dict(row) for row in datasets.load_dataset(name, config, split=split)]
    except Exception as exc:  # e.g. another config or split cached: it would be downloaded
        raise DataNotLocal(f"{what} ({name}, split {split}) is not on this machine yet (the datasets cache "
                           f"{datasets_cache()} cannot give it offline: {type(exc).__name__})") from None


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
    return read_rows_with_lines(path)[0]


def read_rows_with_lines(path: str | os.PathLike, *,
                         other_suffixes_as_jsonl: bool = False) -> tuple[list[dict[str, Any]], list[int] | None]:
    """(rows, lines): the rows of a data file and, for JSON Lines, the line each row is on (None for
    .json and .parquet, whose rows `require_columns` then names "row N", counting from 1). A .json file
    holds a list of objects, or one object per line (read as JSON Lines).

    Bad input is a one-line UserError naming the file and, where there is one, the line: a line that is
    not JSON or not an object, an empty file, a damaged gzip or parquet file.
    other_suffixes_as_jsonl: read a file with another suffix as JSON Lines instead of refusing it.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"data file {path} is a folder; give a {', '.join(SUFFIXES)} file")
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _read_parquet(path), None
    if name.endswith(".json"):
        return _read_json(path)
    if name.endswith((".jsonl", ".jsonl.gz")) or other_suffixes_as_jsonl:
        return _read_jsonl(path, gz=name.endswith(".gz"))
    raise UserError(f"data file {path}: unsupported format; use one of {', '.join(SUFFIXES)}")


def _first_line(exc: BaseException, path: Path | None = None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None:  # pyarrow repeats the path: once is enough
        text = text.replace(f" '{path}'", "").replace(str(path), "the file")
    return text[:200]


def _read_jsonl(path: Path, gz: bool) -> tuple[list[dict[str, Any]], list[int]]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    line_no = 0
    opener = gzip.open if gz else open
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is not an error.
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):  # noqa: B007 (line_no is read after the loop)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))  # so an error's column is on this line
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{line_no}: not valid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}:{line_no}: expected a JSON object {{...}}, got {_kind(row)}")
                rows.append(row)
                lines.append(line_no)
    except UnicodeDecodeError:
        raise UserError(f"{path}:{line_no + 1}: not UTF-8 text") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        where = f" after line {line_no}" if line_no else ""
        raise UserError(f"{path}: corrupt or truncated gzip file{where} ({_first_line(e)})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({_first_line(e)})") from None
    if not rows:
        raise UserError(f"{path}: empty file, no rows (expected one JSON object per line)")
    return rows, lines


def _read_json(path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and e.lineno > 1:  # one object per line: JSON Lines named .json
            return _read_jsonl(path, gz=False)
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects [{{...}}, ...], got {_kind(data)}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise UserError(f"{path}: row {index + 1}: expected a JSON object {{...}}, got {_kind(row)}")
    if not data:
        raise UserError(f"{path}: no rows (an empty list)")
    return data, None


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq  # lazy: only parquet needs it
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable parquet file ({_first_line(e, path)})") from None
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


# ----------------------------------------------------------------------------------------------
# Checking rows: required fields and their types
# ----------------------------------------------------------------------------------------------
TypeSpec = type | tuple[type, ...]
"""What a field may hold: a type or a tuple of types (`type(None)` allows null). bool does not
count as int or float unless listed: `true` is no answer to a math question."""

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
               bool: "true or false", type(None): "null"}


def _kind(value: Any) -> str:
    """A value's JSON-ish type, for "got ..." in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    for tp, name in ((str, "string"), (int, "integer"), (float, "number"), (list, "list"), (dict, "object")):
        if isinstance(value, tp):
            return name
    return type(value).__name__


def _describe(spec: TypeSpec) -> str:
    types = list(spec) if isinstance(spec, tuple) else [spec]
    if int in types and float in types:
        types.remove(int)  # "a number" says both
    names = [_TYPE_NAMES.get(tp, f"a {tp.__name__}") for tp in types]
    return " or ".join(names)


def _matches(value: Any, spec: TypeSpec) -> bool:
    types = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def require_columns(rows: Sequence[dict[str, Any]], columns: Iterable[str], source: str,
                    types: Mapping[str, TypeSpec] | None = None, lines: Sequence[int] | None = None) -> None:
    """UserError naming `source`, the first bad row and the field if a row lacks one of `columns`, or
    holds a value of the wrong type in a field of `types` (checked where present, so `types` may also
    name optional fields).

    lines: the line of each row in a JSON Lines file (from `read_rows_with_lines`): the row is then
    named `<source>:<line>`; without them `<source>: row N` (counting from 1).
    """
    columns = list(columns)
    types = dict(types or {})
    if not rows:
        raise UserError(f"{source}: no rows")

    def where(index: int) -> str:
        if lines is not None and index < len(lines):
            return f"{source}:{lines[index]}"
        return f"{source}: row {index + 1}"

    for index, row in enumerate(rows):
        for column in columns:
            if column not in row:
                found = ", ".join(sorted(map(str, row))) or "none"
                raise UserError(f"{where(index)}: missing field '{column}'; expected fields {', '.join(columns)} "
                                f"(found: {found})")
        for column, spec in types.items():
            if column in row and not _matches(row[column], spec):
                raise UserError(f"{where(index)}: field '{column}': expected {_describe(spec)}, "
                                f"got {_kind(row[column])}")


def load_rows(
    *,
    path: str | os.PathLike | None,
    local: Sequence[str],
    hub: HubSource | None,
    columns: Sequence[str],
    what: str,
    types: Mapping[str, TypeSpec] | None = None,
) -> list[dict[str, Any]]:
    """Rows for one task split, from `path`, else $LOWRES_DATA_DIR/<one of local>, else the Hub.

    `columns` are the columns the task needs and `types` what the fields it reads may hold (see
    `require_columns`); `what` names the data in error messages (e.g. "gsm8k train").
    """
    file = Path(path).expanduser() if path is not None else find_local(local)
    if file is not None:
        rows, lines = read_rows_with_lines(file)
        require_columns(rows, columns, str(file), types, lines)
        return rows
    if hub is None:
        raise UserError(f"no data for {what}: {local_hint(local)}")
    rows = _load_hub(hub, what, local)
    require_columns(rows, columns, f"Hub dataset {hub.name}", types)
    return rows


def local_hint(local: Sequence[str]) -> str:
    """Where a task's rows can come from instead of the Hub, naming the real setting for each."""
    where = f"${DATA_DIR_ENV}={data_dir()}" if data_dir() else f"a folder named by ${DATA_DIR_ENV}"
    return (f"put {local[0]} under {where}, or (for the training rows) set the recipe's data.target.path to a local "
            f"{', '.join(SUFFIXES)} file")


def _load_hub(hub: HubSource, what: str, local: Sequence[str]) -> list[dict[str, Any]]:
    try:
        import datasets  # noqa: F401 (whether it is installed, for a message naming the package)
    except ImportError as exc:
        raise UserError(f"loading {what} from the Hub needs the `datasets` package: pip install datasets") from exc
    try:
        return load_hub_dataset(hub.name, hub.config, hub.split, what)
    except DataNotLocal:
        raise
    except Exception as exc:  # offline, gated, renamed: the user can fix it with a local copy
        raise UserError(
            f"could not load {what} from the Hugging Face Hub ({hub.name}, split {hub.split}): "
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}; "
            f"{local_hint(local)}"
        ) from exc


def local_candidates(folder: str, stem: str) -> list[str]:
    """`folder/stem` with each supported suffix, for tasks whose files follow the plain naming."""
    return [f"{folder}/{stem}{suffix}" for suffix in SUFFIXES]


def read_trace_file(path: Path) -> list[dict]:
    """Rows with `prompt` (a question string, or chat messages {role, content}) and `completion` (a
    string), from a .jsonl, .jsonl.gz, .json or .parquet file (`lowres kk traces` writes .jsonl and
    .parquet). Any other suffix is read as JSON Lines. Bad input is a one-line UserError naming the file,
    the line (JSON Lines) or row, and the field."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a folder, not a warmup data file" if path.is_dir() else "no such warmup data file"
        raise UserError(f"{path}: {what} (expected .jsonl or .parquet with prompt and completion fields, "
                        "as `lowres kk traces` writes)")
    rows, lines = read_rows_with_lines(path, other_suffixes_as_jsonl=True)
    require_columns(rows, ("prompt", "completion"), str(path),
                    types={"prompt": (str, list), "completion": str}, lines=lines)
    for index, row in enumerate(rows):
        if isinstance(row["prompt"], str):
            continue
        where = f"{path}:{lines[index]}" if lines else f"{path}: row {index + 1}"
        if not row["prompt"]:
            raise UserError(f"{where}: field 'prompt': an empty list of messages")
        for number, message in enumerate(row["prompt"], 1):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):
                raise UserError(f"{where}: field 'prompt': message {number} needs 'role' and 'content' "
                                "strings (a chat message {\"role\": \"user\", \"content\": \"...\"})")
    return rows
