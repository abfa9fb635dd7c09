"""Every command that writes a file says in one line, before any work, when it cannot: a folder where
the file should be, a parent that is a file, a place that cannot be written."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import cli

# /sys refuses new files even to root (permission bits do not stop root, so a chmod'ed folder cannot
# stand in for an unwritable place in a test that may run as root).
UNWRITABLE = Path("/sys")


def commands(out: Path) -> dict[str, list[str]]:
    return {
        "kk generate": ["kk", "generate", "-n", "2", "--people", "2", "--out", str(out)],
        "kk traces": ["kk", "traces", "-n", "2", "--people", "2", "--out", str(out)],
        "recipes cp": ["recipes", "cp", "demo", str(out)],
        "bench --json": ["bench", "demo", "--json", str(out)],
        "compare --plot": ["compare", "runs/x", "--plot", str(out)],
        "distill --out": ["distill", "--teacher", "embedded:smollm2-135m", "--out", str(out)],
    }


@pytest.mark.parametrize("command", list(commands(Path("x"))))
@pytest.mark.parametrize("place", ["a folder", "under a file", "unwritable"])
def test_a_bad_output_place_is_one_line_and_exit_2(tmp_path, command, place):
    if place == "a folder":
        out = tmp_path / "out.jsonl"
        out.mkdir()
        expected = "is a folder"
    elif place == "under a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out.jsonl"
        expected = "is a file, not a folder"
    else:
        if not UNWRITABLE.is_dir():
            pytest.skip("no read-only /sys here")
        out = UNWRITABLE / "out.jsonl"
        expected = "cannot write there"
    if command == "recipes cp" and place == "a folder":
        pytest.skip("cp into a folder is allowed: the file keeps its name there")
    result = CliRunner().invoke(cli, commands(out)[command])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output


def test_eval_and_merge_output_folders_that_are_files(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = CliRunner().invoke(cli, ["eval", "embedded:smollm2-135m", "--out", str(afile)])
    assert result.exit_code == 2 and f"{afile}: is a file; the results folder must be a folder" in result.output
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--set", f"output.dir={afile}"])
    assert result.exit_code == 2 and "output.dir:" in result.output and "is a file" in result.output


def test_kk_traces_write_a_whole_file_or_none(tmp_path):
    out = tmp_path / "traces.jsonl"
    result = CliRunner().invoke(cli, ["kk", "traces", "-n", "3", "--people", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces.jsonl"]  # no temp file left behind


def test_a_copied_recipe_warns_that_it_keeps_the_run_name(tmp_path):
    result = CliRunner().invoke(cli, ["recipes", "cp", "demo", str(tmp_path / "my.yaml")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "the copy still says `name: demo`, so its runs go to runs/demo; change `name:` to keep them apart" in text
