"""`lowres run`: dry runs of every bundled recipe, and the demo end to end at tiny sizes, then cached."""

import json

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.recipe import bundled_recipes, load_recipe

TINY = [
    "data.warmup.n_puzzles=8", "warmup.max_steps=2", "warmup.per_device_train_batch_size=2",
    "rlvr.max_steps=1", "rlvr.num_generations=4", "rlvr.per_device_train_batch_size=4",
    "rlvr.max_completion_length=24", "rlvr.save_steps=1",
    "eval.limit=2", "eval.n_samples=1", "eval.max_new_tokens=24",
]


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_dry_run_every_bundled_recipe(name):
    result = CliRunner().invoke(cli, ["run", name, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"plan: {name}" in result.output and f"name: {name}" in result.output


@pytest.mark.slow
def test_demo_runs_end_to_end_then_skips_finished_stages(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from lowres.pipeline import run_recipe

    # A process-wide class patch like Unsloth's, made in the conductor: each stage runs in a child
    # process, so none of them may see it.
    def patched_forward(*args, **kwargs):
        raise AssertionError("a stage ran on a class patched in the conductor's process")

    monkeypatch.setattr(LlamaForCausalLM, "forward", patched_forward)
    overrides = [*TINY, f"output.dir={tmp_path}"]
    recipe = load_recipe(bundled_recipes()["demo"], overrides)
    results = run_recipe(recipe)
    run = tmp_path / "demo"
    assert list(results) == ["base", "warmup", "rlvr"]
    for label in results:
        saved = json.loads((run / "eval" / label / "results.json").read_text())
        assert saved[0]["task"] == "kk_easy" and saved[0]["n_questions"] == 2
    assert (run / "merge" / "merge.json").is_file() and (run / "rlvr" / "adapter" / "adapter_config.json").is_file()
    report = (run / "report.md").read_text()
    assert "| kk_easy |" in report and (run / "comparison.png").stat().st_size > 1000
    assert (run / "rlvr_reward.png").is_file()

    stamps = {p: p.stat().st_mtime for p in run.rglob("done.json")}
    assert len(stamps) == 6  # warmup, merge, rlvr, and eval of base, warmup, rlvr
    again = run_recipe(load_recipe(bundled_recipes()["demo"], overrides))
    assert {p: p.stat().st_mtime for p in run.rglob("done.json")} == stamps  # nothing was redone
    assert again["rlvr"][0].accuracy_mean == results["rlvr"][0].accuracy_mean

    # A changed RLVR setting reruns RLVR and its eval, and nothing upstream.
    changed = run_recipe(load_recipe(bundled_recipes()["demo"], [*overrides, "rlvr.learning_rate=1e-5"]))
    after = {p: p.stat().st_mtime for p in run.rglob("done.json")}
    redone = {p.parent.name if p.parent.parent.name != "eval" else "eval/" + p.parent.name
              for p in after if after[p] != stamps[p]}
    assert redone == {"rlvr", "eval/rlvr"}
    assert "rlvr" in changed
