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


def online(monkeypatch):
    """The Hub as a stage would find it with no offline variable set (the checks use no network either way)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


def test_a_hub_id_passes_without_the_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    online(monkeypatch)
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "model.name_or_path=Qwen/Qwen2.5-0.5B"])
    assert result.exit_code == 0, result.output


def fake_hub_cache(monkeypatch, root, repo: str, files: dict[str, bytes]) -> None:
    """A Hugging Face cache holding one snapshot of model `repo` with `files`, as huggingface_hub lays it out."""
    import huggingface_hub.constants

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))


def safetensors_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.zeros(2)})


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_an_offline_hub_model_must_be_in_the_cache(tmp_path, monkeypatch, variable):
    """Offline, a Hub id that is not cached would fail only when the stage loads it: refused now, in one line
    naming the model, the variable, and the local alternative with its key."""
    monkeypatch.chdir(tmp_path)
    online(monkeypatch)
    monkeypatch.setenv(variable, "1")
    fake_hub_cache(monkeypatch, tmp_path / "hub", "acme/other", {"config.json": b"{}"})
    for command in (["validate", "demo"], ["run", "demo", "--dry-run"]):
        result = CliRunner().invoke(cli, [*command, "--set", "model.name_or_path=acme/tiny"])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith(
            f"model.name_or_path: acme/tiny is not in the Hugging Face cache ({tmp_path / 'hub'}) and {variable} is "
            "set, so it cannot be downloaded; download it where there is network (hf download acme/tiny) or set "
            "model.name_or_path to a local model folder (config.json and the weights)"), result.output
    assert not (tmp_path / "runs").exists()


def test_an_offline_hub_model_in_the_cache_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_hub_cache(monkeypatch, tmp_path / "hub", "acme/tiny", {"config.json": b"{}"})
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "model.name_or_path=acme/tiny"])
    assert result.exit_code == 2 and "acme/tiny is only partly in the Hugging Face cache (acme/tiny: no model " \
                                      "weights" in result.output  # config.json alone (as the dry run's sizing reads)
    weights = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / ("0" * 40) / "model.safetensors"
    weights.write_bytes(safetensors_bytes())
    result = CliRunner().invoke(cli, ["validate", "demo", "--set", "model.name_or_path=acme/tiny"])
    assert result.exit_code == 0, result.output


SPEC = ["stages=[rlvr, eval]", "rlvr.start_from=base", "data.target.task=toy", "eval.tasks=[toy]",
        "tasks={toy: {train: TRAIN, question: q, answer: a, grader: exact}}"]


def spec_overrides(train: str) -> list[str]:
    return [part for item in SPEC for part in ("--set", item.replace("TRAIN", train))]


def test_a_missing_hf_folder_is_named_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    online(monkeypatch)
    result = CliRunner().invoke(cli, ["validate", "demo", *spec_overrides(f"hf:{tmp_path}/nothing")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"tasks.toy.train: hf:{tmp_path}/nothing: no such folder {tmp_path}/nothing, and " \
                                "not a Hugging Face dataset id (owner/name); set tasks.toy.train to a local" in lines[0]
    (tmp_path / "nothing").mkdir()  # a folder of data files: datasets reads it as a dataset
    (tmp_path / "nothing" / "train.jsonl").write_text('{"q": "x", "a": "y"}\n')
    assert CliRunner().invoke(cli, ["validate", "demo", *spec_overrides(f"hf:{tmp_path}/nothing")]).exit_code == 0


def test_an_offline_hub_dataset_must_be_in_the_datasets_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    online(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # datasets follows it when HF_DATASETS_OFFLINE is unset
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    result = CliRunner().invoke(cli, ["validate", "demo", *spec_overrides("hf:acme/ToyQA")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        f"tasks.toy.train: hf:acme/ToyQA is not in the datasets cache ({tmp_path / 'datasets'}) and HF_HUB_OFFLINE "
        "is set, so it cannot be downloaded; set tasks.toy.train to a local .jsonl, .csv or .parquet file, or to "
        "hf:/path/to/a/folder of data files"), result.output
    # Prepared by an earlier load_dataset: <cache>/<namespace>___<name in snake case>/<config>/<version>/<hash>/
    (tmp_path / "datasets" / "acme___toy_qa" / "default" / "0.0.0" / "abc").mkdir(parents=True)
    assert CliRunner().invoke(cli, ["validate", "demo", *spec_overrides("hf:acme/ToyQA")]).exit_code == 0
    online(monkeypatch)  # online, it would be downloaded: nothing to check
    assert CliRunner().invoke(cli, ["validate", "demo", *spec_overrides("hf:acme/Other")]).exit_code == 0
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # datasets' own variable decides for datasets
    result = CliRunner().invoke(cli, ["validate", "demo", *spec_overrides("hf:acme/Other")])
    assert result.exit_code == 2 and "and HF_DATASETS_OFFLINE is set" in result.output


def test_hints_for_task_data_name_real_settings(monkeypatch):
    """No hint says "pass path=" (a Python argument no user can reach): they name the recipe key and variable."""
    import datasets

    from lowres.errors import UserError
    from lowres.tasks.data import HubSource, load_rows

    monkeypatch.delenv("LOWRES_DATA_DIR", raising=False)
    with pytest.raises(UserError) as e:
        load_rows(path=None, local=["toy/train.jsonl"], hub=None, columns=["q"], what="toy train")
    assert str(e.value) == ("no data for toy train: put toy/train.jsonl under a folder named by $LOWRES_DATA_DIR, or "
                            "(for the training rows) set the recipe's data.target.path to a local .jsonl, .jsonl.gz, "
                            ".json, .parquet file")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'acme/toy' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as e:
        load_rows(path=None, local=["toy/train.jsonl"], hub=HubSource("acme/toy", "train"), columns=["q"],
                  what="toy train")
    assert "pass path=" not in str(e.value) and str(e.value).endswith(
        "ConnectionError: Couldn't reach 'acme/toy' on the Hub (OfflineModeIsEnabled); put toy/train.jsonl under a "
        "folder named by $LOWRES_DATA_DIR, or (for the training rows) set the recipe's data.target.path to a local "
        ".jsonl, .jsonl.gz, .json, .parquet file")


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
from lowres.recipe import RecipeError
for path in bundled_recipes().values():
    try:
        check_recipe(load_recipe(path, ["data.warmup.source={traces}"]))
    except RecipeError as e:  # offline (as the tests run), a Hub model not in the cache: the check still ran
        assert "cannot be downloaded" in str(e), e
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
