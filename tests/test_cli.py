"""The CLI through Click's CliRunner: env, recipes, validate, run --dry-run, error handling."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from lowres.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_help_everywhere(runner):
    for args in ([], ["env"], ["recipes"], ["recipes", "list"], ["recipes", "cp"], ["validate"], ["run"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.output


def test_env_shows_backend_dtype_and_reasons(runner):
    result = runner.invoke(cli, ["env"])
    assert result.exit_code == 0, result.output
    assert "backend" in result.output and "transformers" in result.output
    assert "dtype" in result.output and "fp32" in result.output
    assert "no CUDA GPU" in result.output
    assert "trl" in result.output


def test_recipes_list_and_show(runner):
    result = runner.invoke(cli, ["recipes", "list"])
    assert result.exit_code == 0, result.output
    assert "demo" in result.output and "embedded:smollm2-135m" in result.output
    shown = runner.invoke(cli, ["recipes", "show", "demo"])
    assert shown.exit_code == 0 and "name: demo" in shown.output
    resolved = runner.invoke(cli, ["recipes", "show", "demo", "--resolved"])
    assert "loss_type: dapo" in resolved.output  # a default the demo does not set


def test_recipes_cp_copies_and_refuses_to_overwrite(runner, tmp_path):
    result = runner.invoke(cli, ["recipes", "cp", "demo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    copied = tmp_path / "demo.yaml"
    assert copied.read_text().startswith("# The offline demo")
    again = runner.invoke(cli, ["recipes", "cp", "demo", str(copied)])
    assert again.exit_code == 2 and "pass --force" in again.output
    assert runner.invoke(cli, ["recipes", "cp", "demo", str(copied), "--force"]).exit_code == 0


def test_validate_good_and_bad(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  name_or_path: m\nrlvr:\n  lerning_rate: 1\n")
    ok = runner.invoke(cli, ["validate", "demo"])
    assert ok.exit_code == 0 and "ok" in ok.output
    result = runner.invoke(cli, ["validate", "demo", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: rlvr.lerning_rate: unknown key; did you mean 'learning_rate'?" in result.output
    assert "Traceback" not in result.output
    overridden = runner.invoke(cli, ["validate", "demo", "--set", "rlvr.temperature=-1"])
    assert overridden.exit_code == 2 and "--set rlvr.temperature=-1: must be > 0.0" in overridden.output


@pytest.mark.parametrize("command", [["validate", "demo"], ["run", "demo"]])
@pytest.mark.parametrize("setting", ["name=" + "a" * 300, "output.dir=" + "d" * 300 + "/runs"])
def test_a_name_too_long_for_the_file_system_is_one_line_exit_2(runner, tmp_path, monkeypatch, command, setting):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, [*command, "--set", setting])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "shorter name" in line or "too long for the file system; shorten it" in line


def test_unknown_recipe_is_exit_2(runner):
    result = runner.invoke(cli, ["run", "no-such-recipe", "--dry-run"])
    assert result.exit_code == 2
    assert "no such recipe file or bundled recipe" in result.output


def test_run_dry_run_prints_plan_without_loading(runner):
    result = runner.invoke(cli, ["run", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "plan: demo" in result.output and "name: demo" in result.output


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "lowres", "validate", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "YAML syntax error" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("width", [200, 100, 80, 60, 40])
def test_recipes_list_never_wraps_a_name(runner, monkeypatch, width):
    """Each bundled recipe's name is whole on one line, the first cell of its row, at any terminal
    width: it is what you copy into `lowres run NAME`."""
    import re

    from lowres.recipe import bundled_recipes
    from lowres.ui import console

    monkeypatch.setattr(console, "_width", width)  # both set: a dumb terminal would otherwise say 80
    monkeypatch.setattr(console, "_height", 25)
    result = runner.invoke(cli, ["recipes", "list"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    first_cells = {m.group(1) for line in lines if (m := re.match(r"^[│┃|]?\s*(\S+)\s*(?:[│┃|]|$)", line))}
    for name in bundled_recipes():
        assert name in first_cells, f"{name} is not whole on one line at width {width}:\n{result.output}"


@pytest.mark.parametrize("command, stages, expected", [
    (["warmup", "demo"], "[rlvr, eval]", "stages: warmup is not one of this recipe's stages (rlvr, eval); it would "
                                        "train with data.warmup.source kk-solver, data.warmup.n_puzzles 48"),
    (["rlvr", "demo"], "[warmup, merge, eval]", "stages: rlvr is not one of this recipe's stages (warmup, merge, "
                                                "eval); it would train with data.target.task kk_easy"),
    (["rlvr", "demo", "--no-warmup"], "[warmup, merge, eval]",
     "stages: rlvr-no-warmup is not one of this recipe's stages (warmup, merge, eval) and neither is rlvr"),
])
def test_a_stage_the_recipe_does_not_list_asks_for_its_settings_or_force(tmp_path, monkeypatch, command, stages,
                                                                          expected):
    """`lowres warmup` on a recipe without a warmup stage would train with whatever its warmup: section holds —
    the GPU-sized defaults where it holds nothing. It says so (one line, exit 2), and runs only with --force."""
    import lowres.train.rlvr
    import lowres.train.warmup

    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(lowres.train.warmup, "run_warmup", lambda recipe, out: ran.append("warmup"))
    monkeypatch.setattr(lowres.train.rlvr, "run_rlvr", lambda recipe, model, out, stage, **_: ran.append(stage))
    runner = CliRunner()
    result = runner.invoke(cli, [*command, "--set", f"stages={stages}", "--set", "rlvr.start_from=base"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].endswith("or pass --force to train with these")
    assert ran == [] and not (tmp_path / "runs").exists()
    result = runner.invoke(cli, [*command, "--set", f"stages={stages}", "--set", "rlvr.start_from=base", "--force"])
    assert result.exit_code == 0, result.output
    assert ran == ["rlvr-no-warmup" if "--no-warmup" in command else command[0]]


def test_a_forced_stage_has_its_inputs_checked_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["warmup", "demo", "--force", "--set", "stages=[rlvr, eval]", "--set",
                                      "rlvr.start_from=base", "--set", "data.warmup.source=missing.jsonl"])
    assert result.exit_code == 2 and "data.warmup.source: no such file missing.jsonl" in result.output


def test_the_baseline_of_a_recipe_with_an_rlvr_stage_needs_no_force(tmp_path, monkeypatch):
    """rlvr --no-warmup runs the rlvr section's settings: a recipe that lists rlvr gives them."""
    import lowres.train.rlvr

    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(lowres.train.rlvr, "run_rlvr", lambda recipe, model, out, stage, **_: ran.append(stage))
    result = CliRunner().invoke(cli, ["rlvr", "demo", "--no-warmup", "--set", "stages=[warmup, merge, rlvr, eval]"])
    assert result.exit_code == 0, result.output
    assert ran == ["rlvr-no-warmup"]
