"""Tasks defined in a recipe alone (`tasks:`): loading JSONL, JSON, CSV, parquet and hf: datasets with field
mapping, the five graders, validation messages, the sampler's train/test disjointness, and the wiring into
recipes, `lowres eval --task-spec`, `lowres run`'s eval children and the fingerprints (fast: no model)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import lowres.tasks as tasks_registry
from lowres.cli import cli
from lowres.errors import UserError
from lowres.fingerprint import eval_fingerprint, stage_fingerprints
from lowres.pipeline import eval_command
from lowres.recipe import RecipeError, dump_recipe, load_recipe, load_task_specs, recipe_from_dict
from lowres.tasks import get_task
from lowres.tasks.base import R1_SYSTEM
from lowres.tasks.generic import GenericTask, normalize_exact
from lowres.tasks.sampling import disjoint_train_subset

REPO = Path(__file__).resolve().parents[2]
MODEL = {"name_or_path": "embedded:smollm2-135m"}


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Tasks registered here stay out of the other tests."""
    monkeypatch.setattr(tasks_registry, "_REGISTERED", dict(tasks_registry._REGISTERED))


# ------------------------------------------------------------------ made-up datasets, one per grader
def _rows(grader: str) -> list[dict]:
    base = {
        "math": {"answer": "\\frac{1}{2}"},
        "number": {"answer": 3.5},
        "exact": {"answer": "Paris"},
        "choice": {"options": ["Rome", "Paris", "Oslo"], "answer": "Paris"},
        "code": {"checks": "assert add(1, 2) == 3\nassert add(-1, 1) == 0"},
    }[grader]
    return [{"id": f"{grader}-{i}", "q": f"question {i} for {grader}", **base} for i in range(6)]


FIELDS = {
    "math": {"answer": "answer"},
    "number": {"answer": "answer", "tolerance": 1e-6},
    "exact": {"answer": "answer"},
    "choice": {"answer": "answer", "choices": "options"},
    "code": {"tests": "checks"},
}

# (right, wrong, unparseable) completions for each grader's rows.
COMPLETIONS = {
    "math": ("<think>half</think> <answer> \\boxed{\\frac{2}{4}} </answer>",
             "<think>x</think> <answer> \\boxed{3} </answer>", "I do not know"),
    "number": ("<think>x</think> <answer> \\boxed{3.5000001} </answer>",
               "<think>x</think> <answer> \\boxed{3.6} </answer>", "no idea at all"),
    "exact": ("<think>x</think> <answer>  paris. </answer>", "<think>x</think> <answer>Rome</answer>", "Paris"),
    "choice": ("<think>x</think> <answer> \\boxed{B} </answer>", "<think>x</think> <answer> \\boxed{A} </answer>",
               "hmm, hard to say"),
    "code": ("<answer>\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>",
             "<answer>\n```python\ndef add(a, b):\n    return a - b\n```\n</answer>", "no code here"),
}


def write_data(rows: list[dict], folder: Path, fmt: str) -> str:
    """Write `rows` as `fmt` under `folder`; returns what a spec's train: names."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path = folder / "data.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif fmt == "csv":
        path = folder / "data.csv"
        names = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, names)
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "hf":  # a local dataset folder: what load_dataset("org/name") reads from the hub
        hub = folder / "hub_dataset"
        hub.mkdir()
        half = len(rows) // 2
        for split, part in (("train", rows[:half]), ("test", rows[half:])):
            (hub / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        return f"hf:{hub}"
    else:
        raise AssertionError(fmt)
    return str(path)


def spec_for(grader: str, train: str, **extra) -> dict:
    spec = {"train": train, "question": "q", "grader": grader, **FIELDS[grader], **extra}
    if train.startswith("hf:"):
        spec["test"] = train
    return spec


def recipe_with(tasks: dict, **sections) -> dict:
    return {"name": "byod", "model": MODEL, "tasks": tasks, **sections}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "hf"])
@pytest.mark.parametrize("grader", ["math", "number", "exact", "choice", "code"])
def test_each_grader_on_each_format(grader, fmt, tmp_path):
    train = write_data(_rows(grader), tmp_path, fmt)
    recipe_from_dict(recipe_with({"mytask": spec_for(grader, train)}))
    task = get_task("mytask")
    assert isinstance(task, GenericTask)
    train_rows, test_rows = task.load("train"), task.load("test")
    assert len(train_rows) == 3 and len(test_rows) == 3
    assert not {r["id"] for r in train_rows} & {r["id"] for r in test_rows}
    row = test_rows[0]
    assert row["question"].startswith("question ")
    messages = task.prompt(row)
    assert messages[0] == {"role": "system", "content": R1_SYSTEM}
    assert messages[1]["content"].startswith(row["question"])
    if grader == "choice":
        assert row["answer"] == "B" and "A. Rome\nB. Paris\nC. Oslo" in messages[1]["content"]
    right, wrong, unparseable = COMPLETIONS[grader]
    good = task.score(right, row)
    assert good.correct and good.formatted and good.reward == 1.0
    bad = task.score(wrong, row)
    assert not bad.correct and bad.formatted and bad.reward == 0.0
    none = task.score(unparseable, row)
    assert not none.correct and not none.formatted and none.reward == 0.0
    assert not task.score(None, row).correct  # type: ignore[arg-type]  # never raises
    if grader == "code":
        batch = task.score_many([right, wrong], [row, row])
        assert [s.correct for s in batch] == [True, False]


def test_choice_answer_forms_and_exact_normalisation(tmp_path):
    rows = [{"q": "a", "opts": ["x", "y", "z"], "gold": gold} for gold in ("c", 1, "2", "Y")]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe_from_dict(recipe_with({"ch": {"train": str(path), "test": str(path), "question": "q", "answer": "gold",
                                         "choices": "opts", "grader": "choice"}}))
    assert [r["answer"] for r in get_task("ch").load("test")] == ["C", "B", "C", "B"]
    assert normalize_exact("  The   Answer! ") == normalize_exact("the answer")
    assert normalize_exact("Paris") != normalize_exact("Parisian")


def test_number_tolerance(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("q,a\nhow much,\"1,000\"\nhow little,0.001\n")
    recipe_from_dict(recipe_with({"num": {"train": str(path), "test": str(path), "question": "q", "answer": "a",
                                          "grader": "number", "tolerance": 0.01}}))
    big, small = get_task("num").load("test")
    assert big["answer"] == "1000"
    assert get_task("num").score("<answer>\\boxed{1009}</answer>", big).correct  # 9 <= 0.01 * 1000
    assert not get_task("num").score("<answer>\\boxed{1011}</answer>", big).correct
    assert get_task("num").score("<answer>\\boxed{0.009}</answer>", small).correct  # 0.008 <= 0.01 * 1


# ------------------------------------------------------------------ validation: one line naming file and row
def _task_with(tmp_path, train: str, **extra):
    recipe_from_dict(recipe_with({"t": {"train": train, "question": "q", "answer": "a", "grader": "exact",
                                        **extra}}))
    return get_task("t")


@pytest.mark.parametrize("grader", ["exact", "math"])
def test_a_worked_solution_as_the_answer_is_refused_before_training(tmp_path, grader):
    """GSM8K's `answer` column is the whole solution ending in `#### 72`: graded whole, every completion would be
    wrong. The row is named, with the fix; grader number reads the same rows (their last number)."""
    import json

    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"q": "How many?", "a": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n48+24 = 72\n#### 72"})
                    + "\n" + json.dumps({"q": "Long?", "a": "x" * 201}) + "\n")
    with pytest.raises(UserError) as err:
        _task_with(tmp_path, str(path), grader=grader).load("train")
    assert str(err.value) == (
        f"{path}:1: field 'a' looks like a worked solution, not a final answer (it holds '####': 'Natalia sold 48/2 = "
        f"<<48/2=24>>24 clips.\\n48+24 = 72\\n#### 72'); grader {grader} compares the whole field, so every "
        "completion would be graded wrong: use grader: number (it takes the field's last number, e.g. the one after "
        "####), or an answer field that holds only the final answer")
    path.write_text(json.dumps({"q": "Two lines?", "a": "Paris\nFrance"}) + "\n")
    with pytest.raises(UserError, match=r":1: field 'a' looks like a worked solution, not a final answer \(2 lines"):
        _task_with(tmp_path, str(path), grader=grader).load("train")
    path.write_text(json.dumps({"q": "Long?", "a": "x" * 201}) + "\n")
    with pytest.raises(UserError, match=r"\(201 characters"):
        _task_with(tmp_path, str(path), grader=grader).load("train")
    path.write_text(json.dumps({"q": "How many?", "a": "Natalia sold 24 clips.\n#### 72"}) + "\n")
    (row,) = _task_with(tmp_path, str(path), grader="number", test=str(path)).load("train")
    assert row["answer"] == "72"


def test_validate_names_the_worked_solution_row(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from lowres.cli import cli

    data = tmp_path / "gsm8k.jsonl"
    data.write_text('{"q": "How many?", "a": "48/2 = 24\\n#### 72"}\n' * 4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\nmodel: {{name_or_path: embedded:smollm2-135m}}\nstages: [rlvr]\n"
                      f"rlvr: {{start_from: base}}\ndata: {{target: {{task: mine}}}}\n"
                      f"tasks: {{mine: {{train: {data}, question: q, answer: a, grader: exact}}}}\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert f"tasks.mine.train: {data}:1: field 'a' looks like a worked solution" in line and "grader: number" in line


def test_missing_field_in_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"q": "1", "a": "x"}\n\n{"q": "2"}\n')
    with pytest.raises(UserError) as err:
        _task_with(tmp_path, str(path)).load("train")
    message = str(err.value)
    assert f"{path}:3: missing field 'a'" in message and "\n" not in message


def test_missing_field_in_csv_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('q,a\none,x\n"two\nlines",y\nthree\n')
    with pytest.raises(UserError, match=re.escape(f"{path}:5: missing field 'a'")):
        _task_with(tmp_path, str(path)).load("train")
    path.write_text("q,a\none,x,extra\n")
    with pytest.raises(UserError, match=re.escape(f"{path}:2: 3 values but the header names 2 fields")):
        _task_with(tmp_path, str(path)).load("train")


def test_bad_value_in_parquet_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "one", "a": "x"}, {"q": None, "a": "y"}]), path)
    with pytest.raises(UserError, match=re.escape(f"{path}: row 2: field 'q': expected a string, got null")):
        _task_with(tmp_path, str(path)).load("train")


def test_missing_field_in_hf_dataset_names_the_row(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"q": "1", "a": "x"}\n{"q": "2", "b": "y"}\n')
    # datasets gives every row every column (null where a row lacks it): the row and the field are named
    with pytest.raises(UserError, match=re.escape(f"hf:{folder} (train): row 2: field 'a': expected a string or a "
                                                  "number, got null")):
        _task_with(tmp_path, f"hf:{folder}").load("train")
    with pytest.raises(UserError, match="could not load hf:"):
        _task_with(tmp_path, f"hf:{folder}", train_split="nosuch").load("train")


def test_number_and_choice_answers_are_checked_per_row(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"q": "1", "a": "4"}\n{"q": "2", "a": "many"}\n')
    recipe_from_dict(recipe_with({"n": {"train": str(path), "question": "q", "answer": "a", "grader": "number"}}))
    with pytest.raises(UserError, match=re.escape(f"{path}:2: field 'a': grader number needs a number")):
        get_task("n").load("train")
    path.write_text('{"q": "1", "a": "E", "o": ["x", "y"]}\n')
    recipe_from_dict(recipe_with({"c": {"train": str(path), "test": str(path), "question": "q", "answer": "a",
                                        "choices": "o", "grader": "choice"}}))
    with pytest.raises(UserError, match=re.escape(f"{path}:1: field 'a': 'E' is not a letter A-B")):
        get_task("c").load("test")


@pytest.mark.parametrize("spec,where,detail", [
    ({"grader": "fuzzy"}, "tasks.t.grader", "expected one of 'math', 'number', 'exact', 'choice', 'code'"),
    ({"questoin": "q"}, "tasks.t.questoin", "did you mean 'question'?"),
    ({"answer": None}, "tasks.t.answer", "grader exact needs the name of the field"),
    ({"train": "data.txt"}, "tasks.t.train", "expected a .jsonl"),
    ({"train": "hf:"}, "tasks.t.train", "hf: needs a dataset name"),
    ({"test_fraction": 1.5}, "tasks.t.test_fraction", "must be <= 1.0"),
    ({"grader": "choice"}, "tasks.t.choices", "grader choice needs"),
    ({"grader": "code", "answer": None}, "tasks.t.tests", "grader code needs"),
])
def test_bad_specs_are_recipe_errors(spec, where, detail):
    raw = {"train": "x.jsonl", "question": "q", "answer": "a", "grader": "exact", **spec}
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(recipe_with({"t": raw}), "r.yaml")
    assert str(err.value).startswith(f"r.yaml: {where}: ") and detail in str(err.value)


def test_a_builtin_name_is_refused():
    spec = {"train": "x.jsonl", "question": "q", "answer": "a", "grader": "exact"}
    with pytest.raises(RecipeError, match="tasks.gsm8k: 'gsm8k' is a built-in task"):
        recipe_from_dict(recipe_with({"gsm8k": spec}), "r.yaml")
    with pytest.raises(RecipeError, match=r"tasks: expected a mapping"):
        recipe_from_dict(recipe_with(["gsm8k"]), "r.yaml")


# ------------------------------------------------------------------ sampling, registration, round trips
def test_sampler_draws_from_train_disjoint_from_derived_test(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"q": f"q{i}", "a": str(i)}) + "\n" for i in range(40)))
    task = _task_with(tmp_path, str(path), test_fraction=0.25)
    test_rows = task.load("test")
    assert len(test_rows) == 10 and len(task.load("train")) == 30
    assert task.load("test", seed=5) == test_rows  # the partition does not depend on the seed
    for seed in (0, 1, 2):
        picked = disjoint_train_subset(task, 12, seed=seed, eval_rows=test_rows)
        assert len(picked) == 12
        assert not {r["id"] for r in picked} & {r["id"] for r in test_rows}
        assert not {r["question"] for r in picked} & {r["question"] for r in test_rows}
    assert len(task.load("test", limit=4, seed=3)) == 4
    with pytest.raises(UserError, match="only 30 are available"):
        disjoint_train_subset(task, 31, eval_rows=test_rows)


def test_separate_test_file_without_ids_does_not_shadow_train_rows(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps({"q": f"train {i}", "a": "x"}) + "\n" for i in range(5)))
    test.write_text("".join(json.dumps({"q": f"test {i}", "a": "x"}) + "\n" for i in range(5)))
    task = _task_with(tmp_path, str(train), test=str(test))
    assert len(disjoint_train_subset(task, 5, eval_rows=task.load("test"))) == 5


def test_recipe_tasks_register_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    raw = recipe_with({"capitals": {"train": "examples/capitals.jsonl", "question": "question", "answer": "answer",
                                    "grader": "exact"}},
                      data={"target": {"task": "capitals", "n_examples": 5}}, eval={"tasks": ["capitals"]})
    recipe = recipe_from_dict(raw)
    assert get_task("capitals").spec.grader == "exact"
    assert "capitals" in tasks_registry.list_tasks()
    resolved = tmp_path / "recipe.yaml"
    resolved.write_text(dump_recipe(recipe))
    assert load_recipe(resolved).tasks == recipe.tasks  # what the stage children read
    monkeypatch.setattr(tasks_registry, "_REGISTERED", {})
    specs = load_task_specs(resolved)  # what the eval children read
    assert list(specs) == ["capitals"] and len(get_task("capitals").load("train")) == 10
    (tmp_path / "bad.yaml").write_text("tasks: [1]\n")
    with pytest.raises(RecipeError, match="bad.yaml: expected a top-level `tasks:` mapping"):
        load_task_specs(tmp_path / "bad.yaml")


def test_eval_children_get_the_task_spec(tmp_path):
    spec = {"train": "x.jsonl", "question": "q", "answer": "a", "grader": "exact"}
    recipe = recipe_from_dict(recipe_with({"t": spec}, output={"dir": str(tmp_path)}))
    args = eval_command(recipe, "m", None, "base", tmp_path / "out")
    assert args[args.index("--task-spec") + 1] == str((tmp_path / "byod" / "recipe.yaml").resolve())
    plain = recipe_from_dict({"name": "plain", "model": MODEL})
    assert "--task-spec" not in eval_command(plain, "m", None, "base", tmp_path / "out")


def test_fingerprints_follow_the_data_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "1", "a": "x"}\n{"q": "2", "a": "y"}\n')
    raw = recipe_with({"t": {"train": str(path), "question": "q", "answer": "a", "grader": "exact"}})
    before = stage_fingerprints(recipe_from_dict(raw))["rlvr"], eval_fingerprint(recipe_from_dict(raw), "base")
    path.write_text('{"q": "1", "a": "x"}\n{"q": "2", "a": "z"}\n')
    after = stage_fingerprints(recipe_from_dict(raw))["rlvr"], eval_fingerprint(recipe_from_dict(raw), "base")
    assert before[0] != after[0] and before[1] != after[1]
    raw["tasks"]["t"]["grader"] = "math"
    assert stage_fingerprints(recipe_from_dict(raw))["rlvr"] != after[0]


# ------------------------------------------------------------------ the CLI and the manual's example
def test_eval_help_lists_task_spec():
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0 and "--task-spec" in result.output


def test_eval_task_spec_registers_tasks(tmp_path, monkeypatch):
    import lowres.evaluate

    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "1", "a": "x"}\n{"q": "2", "a": "y"}\n')
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"tasks": {"mine": {"train": str(data), "question": "q", "answer": "a",
                                                            "grader": "exact"}}}))
    seen = {}

    def fake_evaluate(model_ref, names, settings, **kwargs):
        seen["rows"] = {name: get_task(name).load("test") for name in names}
        return []

    monkeypatch.setattr(lowres.evaluate, "evaluate_model", fake_evaluate)
    result = CliRunner().invoke(cli, ["eval", "m", "--tasks", "mine", "--task-spec", str(spec_file), "--no-table",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(seen["rows"]["mine"]) == 1
    spec_file.write_text("tasks:\n  mine: {train: d.jsonl, question: q, grader: exact}\n")
    result = CliRunner().invoke(cli, ["eval", "m", "--tasks", "mine", "--task-spec", str(spec_file)])
    assert result.exit_code == 2 and "tasks.mine.answer" in result.output and "Traceback" not in result.output


def _readme_recipe() -> str:
    """The capitals recipe as the manual shows it (docs/tasks.md)."""
    text = (REPO / "docs" / "tasks.md").read_text(encoding="utf-8")
    start = text.index("## Bring your own data (YAML only)")
    block = re.search(r"```yaml\n(.*?)```", text[start:], re.DOTALL)
    assert block and "tasks:" in block.group(1)
    return block.group(1)


def test_readme_example_validates_and_uses_the_committed_file(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    rows = [json.loads(line) for line in (REPO / "examples" / "capitals.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all({"question", "answer"} <= set(r) for r in rows)
    recipe_file = tmp_path / "capitals.yaml"
    recipe_file.write_text(_readme_recipe())
    result = CliRunner().invoke(cli, ["validate", str(recipe_file)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    recipe = load_recipe(recipe_file)
    task = get_task(recipe.data.target.task)
    picked = disjoint_train_subset(task, recipe.data.target.n_examples, eval_rows=task.load("test"))
    assert len(picked) == recipe.data.target.n_examples


def test_validate_names_the_bad_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text('{"question": "a", "answer": "b"}\n{"question": "c"}\n')
    raw = yaml.safe_load(_readme_recipe())
    raw["tasks"]["capitals"]["train"] = "d.jsonl"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["validate", "r.yaml"])
    assert result.exit_code == 2
    assert "tasks.capitals.train" in result.output and "d.jsonl:2: missing field 'answer'" in result.output


@pytest.mark.slow
def test_readme_example_runs_end_to_end(tmp_path, monkeypatch):
    """`lowres run` on the manual's recipe (docs/tasks.md) at tiny sizes: GRPO on the YAML-only task, and each model's
    evaluation in a child `lowres eval` that gets the task from --task-spec."""
    from lowres.pipeline import run_recipe

    monkeypatch.chdir(REPO)
    recipe_file = tmp_path / "capitals.yaml"
    recipe_file.write_text(_readme_recipe())
    overrides = [f"output.dir={tmp_path / 'runs'}", "data.target.n_examples=4", "rlvr.max_steps=1",
                 "rlvr.max_completion_length=16", "rlvr.signal_check=off", "eval.limit=2", "eval.max_new_tokens=16"]
    results = run_recipe(load_recipe(recipe_file, overrides))
    assert list(results) == ["base", "rlvr"]
    for label in results:
        saved = json.loads((tmp_path / "runs" / "capitals" / "eval" / label / "results.json").read_text())
        assert saved[0]["task"] == "capitals" and saved[0]["n_questions"] == 2
    adapter = tmp_path / "runs" / "capitals" / "rlvr" / "adapter"
    assert (adapter / "adapter_config.json").is_file()

    # `lowres export` turns the run into one plain folder that transformers loads on its own, and that
    # answers as the trained model (the base with the RLVR adapter) does, greedy, token for token.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lowres.models import resolve_model
    from lowres.prompting import render_prompt

    out = tmp_path / "exported"
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "runs" / "capitals"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(out)
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(resolve_model("embedded:smollm2-135m"))
    trained = PeftModel.from_pretrained(base, adapter).eval()
    task = get_task("capitals")
    for row in task.load("test", limit=2):
        prompt = render_prompt(tokenizer, task.prompt(row), "model")
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            answers = [m.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.eos_token_id)
                       for m in (exported, trained)]
        assert torch.equal(*answers)
