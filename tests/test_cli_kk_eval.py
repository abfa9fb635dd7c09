"""CLI commands for K&K data, evaluation and comparison, through Click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.tasks import get_task


@pytest.fixture
def runner():
    return CliRunner()


def test_kk_generate_traces_show_and_import(runner, tmp_path, data_dir):
    puzzles = tmp_path / "p.jsonl"
    result = runner.invoke(cli, ["kk", "generate", "-n", "7", "--people", "2-4", "--seed", "3", "--out", str(puzzles)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in puzzles.read_text().splitlines()]
    assert len(rows) == 7 and {len(r["names"]) for r in rows} <= {2, 3, 4}

    traces = tmp_path / "t.parquet"
    result = runner.invoke(cli, ["kk", "traces", "-n", "5", "--people", "3", "--out", str(traces)])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(traces).to_pylist()
    task = get_task("kk")
    for row in table:
        gold = {"names": _names(row["answer"]), "solution": _roles(row["answer"])}
        assert task.score(row["completion"], gold).correct

    shown = runner.invoke(cli, ["kk", "show", "--from", str(puzzles), "--index", "2"])
    assert shown.exit_code == 0 and "solver-written trace" in shown.output and rows[2]["names"][0] in shown.output

    imported = tmp_path / "lr.jsonl"
    result = runner.invoke(cli, ["kk", "import-logic-rl", str(data_dir / "knights_knaves" / "logic_rl"),
                                 "--split", "test", "--out", str(imported)])
    assert result.exit_code == 0, result.output
    assert len(imported.read_text().splitlines()) == 5 * 4  # the fixtures: 4 test puzzles of each size, 3-7


def _names(answer):
    return [line.split(") ", 1)[1].split(" is a ")[0] for line in answer.splitlines()]


def _roles(answer):
    return [line.endswith("knight") for line in answer.splitlines()]


@pytest.mark.parametrize(("people", "message"), [
    ("7-3", "error: --people '7-3': the range is reversed; write the smaller size first: --people 3-7"),
    ("2-9", "error: --people '2-9': puzzles have 2 to 8 people"),
])
def test_a_bad_people_range_says_what_to_write(runner, tmp_path, people, message):
    for command in (["kk", "generate"], ["kk", "traces"]):
        result = runner.invoke(cli, [*command, "--people", people, "--out", str(tmp_path / "x.jsonl")])
        assert result.exit_code == 2 and result.output.strip() == message
        assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("args", [
    ["kk", "generate", "--people", "9", "--out", "x.jsonl"],
    ["kk", "generate", "--people", "three", "--out", "x.jsonl"],
    ["kk", "generate", "-n", "2", "--out", "x.csv"],
    ["kk", "import-logic-rl", "/no/such/place", "--out", "x.jsonl"],
    ["kk", "show", "--from", "/no/such/file.jsonl"],
    ["distill", "--out", "x.jsonl"],
    ["distill", "--api-base", "http://127.0.0.1:9/v1", "--out", "x.jsonl"],
    ["eval", "embedded:smollm2-135m", "--tasks", "kk,nope"],
    ["eval", "./no/such/model"],
    ["compare", "/no/such/run"],
])
def test_bad_input_is_one_line_and_exit_2(runner, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") <= 1 or "Usage:" in result.output


@pytest.mark.slow
def test_eval_and_compare_the_embedded_model(runner, tmp_path):
    out = tmp_path / "smol"
    result = runner.invoke(cli, ["eval", "embedded:smollm2-135m", "--tasks", "kk,gsm8k", "--limit", "5",
                                 "--n-samples", "2", "--max-new-tokens", "48", "--batch-size", "10",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [r["task"] for r in results] == ["kk", "gsm8k"]
    for r in results:
        assert r["n_questions"] == 5 and r["n_samples"] == 2
        assert 0 <= r["accuracy_mean"] <= 1 and set(r["pass_at_k"]) == {"pass@1", "pass@2"}
    samples = [json.loads(line) for line in (out / "gsm8k" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 10 and {"prompt", "completion", "extracted", "correct"} <= set(samples[0])

    png = tmp_path / "cmp.png"
    compared = runner.invoke(cli, ["compare", str(out), str(out), "--plot", str(png)])
    assert compared.exit_code == 0, compared.output
    assert png.stat().st_size > 1000 and "gsm8k" in compared.output
