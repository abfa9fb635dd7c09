"""What a recipe points at is checked before any work: by `validate`, `run --dry-run` and `run`."""

import pytest
from click.testing import CliRunner

from lowres.cli import cli


@pytest.mark.parametrize("override, expected", [
    ("data.target.task=gsm9k", "data.target.task: unknown task 'gsm9k'; did you mean 'gsm8k'?"),
    ("eval.tasks=[kk_easy, nosuchtask]", "eval.tasks[1]: unknown task 'nosuchtask'"),
    ("model.name_or_path=embedded:smollm3", "model.name_or_path: no embedded model 'smollm3'; "
                                            "did you mean embedded:smollm2-135m?"),
    ("model.name_or_path=./my-model", "model.name_or_path: no such folder ./my-model, and not a Hugging Face Hub id"),
    ("data.warmup.source=missing.jsonl", "data.warmup.source: no such file missing.jsonl"),
    ("data.target.path=missing.jsonl", "data.target.path: no such file missing.jsonl"),
])
@pytest.mark.parametrize("command", [["validate", "demo"], ["run", "demo", "--dry-run"], ["run", "demo"]])
def test_what_the_recipe_points_at_is_checked_first(tmp_path, monkeypatch, override, expected, command):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [*command, "--set", override])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.output
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_a_broken_data_file_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "traces.jsonl").write_text('{"prompt": "q", "completion": "a"}\n{"prompt": \n')
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "data.warmup.source=traces.jsonl"])
    assert result.exit_code == 2
    assert "data.warmup.source: traces.jsonl:2: not valid JSON" in result.output


def test_a_model_folder_without_weights_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--set", "model.name_or_path=m"])
    assert result.exit_code == 2 and "model.name_or_path: m: no model weights" in result.output


def test_a_hub_id_passes_without_the_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "model.name_or_path=Qwen/Qwen2.5-0.5B"])
    assert result.exit_code == 0, result.output


def test_an_unknown_force_stage_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--set", "stages=[warmup, merge]",
                                      "--force", "rlvr"])
    assert result.exit_code == 2
    assert "--force rlvr: not one of this recipe's stages (warmup, merge)" in result.output


def test_brackets_in_an_error_print_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "eval.tasks=[gsm9k]"])
    assert result.exit_code == 2 and "plugins: [my_tasks.py]" in result.output  # not eaten as markup


def test_checking_a_recipe_imports_no_training_library(tmp_path):
    """The training commands check the recipe before Unsloth is imported, and Unsloth must come before
    transformers, peft, trl and datasets (lowres.hardware.import_unsloth_first): the checks may not
    import them."""
    import subprocess
    import sys

    traces = tmp_path / "t.jsonl"
    traces.write_text('{"prompt": "q", "completion": "a"}\n')
    code = f"""
import sys
from lowres.cli import cli
from lowres.preflight import check_recipe
from lowres.recipe import bundled_recipes, load_recipe
for path in bundled_recipes().values():
    check_recipe(load_recipe(path, ["data.warmup.source={traces}"]))
print([m for m in ("transformers", "peft", "trl", "datasets", "bitsandbytes", "unsloth") if m in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_tracker_that_is_not_installed_is_named_before_training(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.chdir(tmp_path)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb"
                        else real_find_spec(name, *a))
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "output.report_to=[wandb]"])
    assert result.exit_code == 2
    assert "output.report_to: wandb is not installed: pip install wandb (or remove it from report_to)" in result.output
