"""Warmup trace files (`data.warmup.source`): JSONL or parquet in, one-line errors for broken files."""

import gzip
import json

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.errors import UserError
from lowres.tasks.data import read_trace_file

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


def _error(path) -> str:
    """read_trace_file's UserError message, checked to be one line."""
    with pytest.raises(UserError) as info:
        read_trace_file(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def _write_jsonl(path, rows, blank_first=False):
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    path.write_text(("\n" if blank_first else "") + text)
    return path


def test_kk_traces_output_reads_back_as_jsonl_and_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    for name in ("t.jsonl", "t.parquet"):
        result = CliRunner().invoke(cli, ["kk", "traces", "-n", "3", "--people", "2", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    from_jsonl, from_parquet = read_trace_file(tmp_path / "t.jsonl"), read_trace_file(tmp_path / "t.parquet")
    assert len(from_jsonl) == 3 and from_jsonl == from_parquet
    assert all(isinstance(r["prompt"], str) and "<answer>" in r["completion"] for r in from_parquet)


def test_chat_prompts_in_jsonl_gz_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"prompt": CHAT, "completion": "<think>4</think> <answer>4</answer>"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    assert read_trace_file(tmp_path / "c.parquet") == rows
    assert read_trace_file(tmp_path / "c.jsonl.gz") == rows
    # Any other suffix is read as JSON Lines, as before; so is a .json file with one object per line.
    assert read_trace_file(_write_jsonl(tmp_path / "c.txt", rows)) == rows
    assert read_trace_file(_write_jsonl(tmp_path / "c.json", rows * 2)) == rows * 2
    bad = _write_jsonl(tmp_path / "c.json", [*rows, '{"prompt": 1,}'])
    assert _error(bad) == f"{bad}:2: not valid JSON (Expecting property name enclosed in double quotes, column 14)"
    (tmp_path / "list.json").write_text(json.dumps(rows * 3))
    assert read_trace_file(tmp_path / "list.json") == rows * 3


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert _error(missing) == (f"{missing}: no such warmup data file (expected .jsonl or .parquet with prompt "
                               "and completion fields, as `lowres kk traces` writes)")
    assert _error(tmp_path).startswith(f"{tmp_path}: a folder, not a warmup data file (expected .jsonl")


def test_bad_json_line_names_the_line(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q", "completion": "a"}, '{"prompt": "q", "completion": '],
                        blank_first=True)
    assert _error(path) == f"{path}:3: not valid JSON (Expecting value, column 31)"
    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q", "completion": "a"}, '"just a string"'])
    assert _error(path) == f"{path}:2: expected a JSON object {{...}}, got string"


def test_empty_file(tmp_path):
    (tmp_path / "t.jsonl").write_text("\n\n")
    assert _error(tmp_path / "t.jsonl") == (f"{tmp_path / 't.jsonl'}: empty file, no rows (expected one JSON "
                                            "object per line)")


def test_missing_field_names_line_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q", "answer": "a"}])
    assert _error(path) == (f"{path}:2: missing field 'completion'; expected fields prompt, completion "
                            "(found: answer, prompt)")


@pytest.mark.parametrize(("row", "expected"), [
    ({"prompt": "q", "completion": 4}, "field 'completion': expected a string, got integer"),
    ({"prompt": "q", "completion": None}, "field 'completion': expected a string, got null"),
    ({"prompt": {"role": "user"}, "completion": "a"}, "field 'prompt': expected a string or a list, got object"),
    ({"prompt": [], "completion": "a"}, "field 'prompt': an empty list of messages"),
    ({"prompt": [CHAT[0], {"role": "user", "text": "hi"}], "completion": "a"},
     "field 'prompt': message 2 needs 'role' and 'content' strings "
     "(a chat message {\"role\": \"user\", \"content\": \"...\"})"),
    ({"prompt": ["hi"], "completion": "a"}, "field 'prompt': message 1 needs 'role' and 'content' strings"),
])
def test_mistyped_field_names_line_and_field(tmp_path, row, expected):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": CHAT, "completion": "a"}, row])
    assert _error(path).startswith(f"{path}:2: {expected}")


def test_parquet_rows_are_named_by_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": None}]),
                   path)
    assert _error(path) == f"{path}: row 2: field 'completion': expected a string, got null"
    pq.write_table(pa.Table.from_pylist([{"prompt": "q", "answer": "a"}]), path)
    assert _error(path) == (f"{path}: row 1: missing field 'completion'; expected fields prompt, completion "
                            "(found: answer, prompt)")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    assert _error(broken).startswith(f"{broken}: not a readable parquet file (")
