"""Loading each task's data: $LOWRES_DATA_DIR, an explicit path, the Hub (faked), and bad input."""

import gzip
import json
import sys
import types

import pytest

from lowres.errors import UserError
from lowres.tasks import get_task
from lowres.tasks.data import read_rows

# task, split, file under the data folder, rows in the fixtures, rows in the full set, columns every row must have
CASES = [
    # Full set: 7,500 minus two rows whose solution ends in an empty \boxed{} (no gold answer); the fixtures
    # keep one of them (9 rows, 8 read).
    ("math", "train", "math/train.jsonl.gz", 8, 7498, {"id", "problem", "answer", "solution"}),
    ("math", "test", "math500/test.jsonl", 8, 500, {"id", "problem", "answer", "solution"}),
    ("gsm8k", "train", "gsm8k/train.jsonl.gz", 8, 7473, {"id", "question", "answer", "solution"}),
    ("gsm8k", "test", "gsm8k/test.jsonl", 8, 1319, {"id", "question", "answer", "solution"}),
    ("mmlu_pro", "test", "mmlu_pro/test_2026-02.jsonl.gz", 28, 12030,
     {"id", "question", "options", "answer", "answer_index", "category"}),
    ("humaneval_plus", "test", "humaneval_plus/HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz", 8, 164,
     {"id", "prompt", "entry_point", "test", "answer"}),
]


@pytest.fixture
def no_data_dir(monkeypatch):
    monkeypatch.delenv("LOWRES_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(("name", "split", "file", "in_fixtures", "in_full", "columns"), CASES)
def test_load_from_data_dir(benchmark_data, name, split, file, in_fixtures, in_full, columns):
    task = get_task(name)
    rows = task.load(split)
    count = benchmark_data.pick(in_fixtures, in_full)
    assert len(rows) == count
    assert all(columns <= set(row) for row in rows)
    assert len({row["id"] for row in rows}) == count  # ids are unique
    assert all(isinstance(row["id"], str) and row["answer"] not in (None, "") for row in rows)
    messages = task.prompt(rows[0])
    assert [m["role"] for m in messages] == ["system", "user"]


@pytest.mark.parametrize(("name", "split", "file", "in_fixtures", "in_full", "columns"), CASES)
def test_load_from_explicit_path(data_dir, no_data_dir, name, split, file, in_fixtures, in_full, columns):
    rows = get_task(name).load(split, path=str(data_dir / file), limit=5, seed=1)
    assert len(rows) == 5 and all(columns <= set(row) for row in rows)


def test_gold_answers(data_dir):
    assert get_task("gsm8k").load("test")[0]["answer"] == "18"
    assert get_task("math").load("train")[0]["answer"] == "0"
    math500 = get_task("math").load("test")
    assert math500[0]["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    mmlu = get_task("mmlu_pro").load("test")[0]
    assert mmlu["answer"] == "ABCDEFGHIJ"[mmlu["answer_index"]]


def test_mmlu_pro_category_filter(benchmark_data):
    task = get_task("mmlu_pro")
    physics = task.load("test", category="physics")
    assert len(physics) == benchmark_data.pick(2, 1299) and {r["category"] for r in physics} == {"physics"}
    both = task.load("test", category=["physics", "History"])
    assert {r["category"] for r in both} == {"physics", "history"}
    with pytest.raises(UserError, match="unknown mmlu_pro category"):
        task.load("test", category="astrology")


def test_math_rows_without_gold_are_dropped(tmp_path, no_data_dir):
    path = tmp_path / "m.jsonl"
    rows = [{"problem": "p1", "solution": "so \\boxed{3}"}, {"problem": "p2", "solution": "\\boxed{}"},
            {"problem": "p3", "answer": "7"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert [r["answer"] for r in get_task("math").load("train", path=str(path))] == ["3", "7"]
    path.write_text(json.dumps({"problem": "p", "solution": "no box"}))
    with pytest.raises(UserError, match="boxed"):
        get_task("math").load("train", path=str(path))


def test_parquet_and_json_files(tmp_path, no_data_dir):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [{"question": "1+1?", "answer": "2\n#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "g.parquet")
    (tmp_path / "g.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "g.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    for name in ("g.parquet", "g.json", "g.jsonl.gz"):
        loaded = get_task("gsm8k").load("train", path=str(tmp_path / name))
        assert [r["answer"] for r in loaded] == ["2", "4"]


def test_missing_file_is_a_user_error(tmp_path, no_data_dir):
    with pytest.raises(UserError, match="does not exist"):
        get_task("gsm8k").load("train", path=str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported format"):
        read_rows(tmp_path / "x.csv")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="bad.jsonl:1: not valid JSON"):
        read_rows(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="no rows"):
        read_rows(tmp_path / "empty.jsonl")


@pytest.mark.parametrize(
    ("name", "split", "expected"),
    [
        ("gsm8k", "train", "question, answer"),
        ("mmlu_pro", "test", "question_id, question, options, answer, category"),
        ("humaneval_plus", "test", "task_id, prompt, canonical_solution, entry_point, test"),
        ("math", "test", "problem"),
    ],
)
def test_missing_columns_name_the_file_and_the_columns(tmp_path, no_data_dir, name, split, expected):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(UserError) as info:
        get_task(name).load(split, path=str(path))
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_train_split_of_single_split_tasks_is_test(data_dir):
    for name in ("mmlu_pro", "humaneval_plus"):
        task = get_task(name)
        assert task.train_split == "test"
        assert [r["id"] for r in task.load("train", limit=5)] == [r["id"] for r in task.load("test", limit=5)]


def test_unknown_split(no_data_dir):
    for name in ("math", "gsm8k", "mmlu_pro", "humaneval_plus"):
        with pytest.raises(UserError, match="split"):
            get_task(name).load("dev")


def test_hub_is_used_without_local_data(monkeypatch, no_data_dir):
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return [{"question": "1+1?", "answer": "#### 2"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    rows = get_task("gsm8k").load("test")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert rows[0]["answer"] == "2" and rows[0]["id"] == "gsm8k/test/0"


def test_hub_failure_is_a_user_error(monkeypatch, no_data_dir, tmp_path):
    def load_dataset(name, config=None, split=None):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(UserError, match="LOWRES_DATA_DIR"):
        get_task("mmlu_pro").load("validation")
    # A data dir without the file falls back to the Hub, and the error says where it looked.
    monkeypatch.setenv("LOWRES_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match=str(tmp_path)):
        get_task("math").load("test")


def test_local_only_reads_the_hub_only_from_the_datasets_cache_and_offline(monkeypatch, no_data_dir, tmp_path):
    # What the plan of `lowres run --dry-run` counts rows with: never a wait on the network (issue 34).
    import datasets
    from huggingface_hub import constants

    from lowres.tasks.data import DataNotLocal, local_only

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    modes = []

    def load_dataset(name, config=None, split=None):
        modes.append((datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE))
        return [{"question": "1+1?", "answer": "#### 2"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with local_only(), pytest.raises(DataNotLocal, match=r"gsm8k test \(openai/gsm8k\) is not on this machine yet"):
        get_task("gsm8k").load("test")
    assert modes == []  # not cached: not even asked
    (tmp_path / "openai___gsm8k" / "main" / "0.0.0" / "abc").mkdir(parents=True)  # prepared by an earlier load
    with local_only():
        assert get_task("gsm8k").load("test")[0]["answer"] == "2"
    assert modes == [(True, True)]  # read from the cache in offline mode ...
    assert (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE) == (False, False)  # ... only meanwhile


# ---------------------------------------------------------------------------------------- broken files
def _error(call) -> str:
    """The UserError message of `call()`, checked to be one line."""
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def _gsm8k(path):
    return lambda: get_task("gsm8k").load("train", path=str(path))


def test_bad_jsonl_line_names_its_line(tmp_path, no_data_dir):
    path = tmp_path / "g.jsonl"
    good = json.dumps({"question": "1+1?", "answer": "#### 2"})
    path.write_text(f"{good}\n\n{good}\n{{\"question\": \"x\", answer: 1}}\n{good}\n")  # line 4 is bad
    assert _error(_gsm8k(path)) == (f"{path}:4: not valid JSON (Expecting property name enclosed in double "
                                    "quotes, column 19)")
    with gzip.open(tmp_path / "g.jsonl.gz", "wt") as f:
        f.write(f"{good}\n{good}\n[1, 2]\n")
    gz = tmp_path / "g.jsonl.gz"
    assert _error(_gsm8k(gz)) == f"{gz}:3: expected a JSON object {{...}}, got list"


def test_empty_and_blank_files_name_the_file(tmp_path, no_data_dir):
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n")):
        (tmp_path / name).write_text(text)
        assert _error(_gsm8k(tmp_path / name)) == (f"{tmp_path / name}: empty file, no rows (expected one JSON "
                                                   "object per line)")
    (tmp_path / "empty.json").write_text("[]")
    assert _error(_gsm8k(tmp_path / "empty.json")) == f"{tmp_path / 'empty.json'}: no rows (an empty list)"


def test_corrupt_gzip_and_parquet_are_one_line(tmp_path, no_data_dir):
    pytest.importorskip("pyarrow")
    good = json.dumps({"question": "1+1?", "answer": "#### 2"})
    whole = gzip.compress(("\n".join([good] * 5000)).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    message = _error(_gsm8k(tmp_path / "cut.jsonl.gz"))
    assert message.startswith(f"{tmp_path / 'cut.jsonl.gz'}: corrupt or truncated gzip file after line ")
    (tmp_path / "plain.jsonl.gz").write_text(good)  # not gzipped at all
    assert _error(_gsm8k(tmp_path / "plain.jsonl.gz")).startswith(
        f"{tmp_path / 'plain.jsonl.gz'}: corrupt or truncated gzip file (Not a gzipped file")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    message = _error(_gsm8k(tmp_path / "bad.parquet"))
    assert message.startswith(f"{tmp_path / 'bad.parquet'}: not a readable parquet file (")
    assert message.count(str(tmp_path)) == 1


def test_missing_field_names_the_first_bad_row_and_its_line(tmp_path, no_data_dir):
    path = tmp_path / "g.jsonl"
    rows = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "solution": "4"}]
    path.write_text("\n" + "\n".join(json.dumps(r) for r in rows) + "\n")  # a blank first line: row 2 is line 3
    assert _error(_gsm8k(path)) == (f"{path}:3: missing field 'answer'; expected fields question, answer "
                                    "(found: question, solution)")
    (tmp_path / "g.json").write_text(json.dumps(rows))
    assert _error(_gsm8k(tmp_path / "g.json")).startswith(f"{tmp_path / 'g.json'}: row 2: missing field 'answer';")


_GOOD = {
    "gsm8k": {"question": "1+1?", "answer": "#### 2"},
    "math": {"problem": "1+1?", "answer": "2"},
    "mmlu_pro": {"question_id": 1, "question": "q", "options": ["a", "b"], "answer": "A", "category": "math"},
    "humaneval_plus": {"task_id": "t", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
                       "entry_point": "f", "test": "def check(f): pass"},
}


@pytest.mark.parametrize(("task", "field", "value", "expected"), [
    ("gsm8k", "answer", ["#### 2"], "a string or a number, got list"),
    ("gsm8k", "question", None, "a string, got null"),
    ("math", "problem", {"text": "x"}, "a string, got object"),
    ("math", "answer", True, "a string or a number or null, got true/false"),
    ("mmlu_pro", "options", "ABCD", "a list, got string"),
    ("humaneval_plus", "canonical_solution", 1, "a string, got integer"),
])
def test_mistyped_field_names_row_and_field(tmp_path, no_data_dir, task, field, value, expected):
    split = "train" if task in ("gsm8k", "math") else "test"
    good, bad = _GOOD[task], {**_GOOD[task], field: value}
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    message = _error(lambda: get_task(task).load(split, path=str(jsonl)))
    assert message == f"{jsonl}:2: field '{field}': expected {expected}"
    if value is None or isinstance(value, (dict, bool)):  # a parquet column has one type
        return
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([bad]), parquet)
    message = _error(lambda: get_task(task).load(split, path=str(parquet)))
    assert message == f"{parquet}: row 1: field '{field}': expected {expected}"


def test_hub_rows_are_checked_too(monkeypatch, no_data_dir):
    def load_dataset(name, config=None, split=None):
        return [{"question": "1+1?", "answer": "#### 2"}, {"question": 7, "answer": "#### 2"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert _error(lambda: get_task("gsm8k").load("test")) == (
        "Hub dataset openai/gsm8k: row 2: field 'question': expected a string, got integer")


def test_numbers_are_fine_answers(tmp_path, no_data_dir):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "1+1?", "answer": 2}) + "\n")
    assert get_task("gsm8k").load("train", path=str(path))[0]["answer"] == "2"
    path.write_text(json.dumps({"problem": "1+1?", "answer": 2}) + "\n")
    assert get_task("math").load("train", path=str(path))[0]["answer"] == "2"


def test_mmlu_pro_answer_that_is_no_letter(tmp_path, no_data_dir):
    path = tmp_path / "rows.jsonl"
    row = {"question_id": 7, "question": "q", "options": ["a", "b"], "answer": "?", "category": "math"}
    path.write_text(json.dumps(row) + "\n")
    assert _error(lambda: get_task("mmlu_pro").load("test", path=str(path))) == (
        "mmlu_pro question 7: answer '?' is not a letter A-J (and the row has no answer_index)")
    path.write_text(json.dumps({**row, "answer_index": 1}) + "\n")
    assert get_task("mmlu_pro").load("test", path=str(path))[0]["answer"] == "B"
