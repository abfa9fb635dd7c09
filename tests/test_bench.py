"""`lowres bench`: real steps per stage in child processes, figures, extrapolation, out of memory."""

import json

import pytest
import torch
from click.testing import CliRunner

from lowres import bench
from lowres.cli import cli
from lowres.errors import OutOfMemory
from lowres.launch import StageFailed
from lowres.recipe import bundled_recipes, load_recipe

TINY = [
    "data.warmup.n_puzzles=8", "warmup.per_device_train_batch_size=2", "rlvr.num_generations=4",
    "rlvr.per_device_train_batch_size=4", "rlvr.max_completion_length=16",
    "eval.limit=2", "eval.n_samples=1", "eval.max_new_tokens=16", "eval.batch_size=2", "rlvr.signal_check=off",
]


def sets(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def test_step_counts_of_the_real_recipe():
    demo = load_recipe(bundled_recipes()["demo"])
    assert bench.warmup_steps(demo, 46) == 23  # 48 traces, 2 held out, batch 2, one epoch
    assert bench.rlvr_steps(demo, 64) == 3  # max_steps wins
    epochs = load_recipe(bundled_recipes()["demo"], ["rlvr.max_steps=-1", "rlvr.num_train_epochs=2"])
    assert bench.rlvr_steps(epochs, 64) == 2 * 64 * 4 // 8


def test_unsloth_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    for backend in ("unsloth", "both"):
        result = CliRunner().invoke(cli, ["bench", "demo", "--backend", backend])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [
            "error: backend 'unsloth' needs a CUDA GPU; this machine has none (use backend auto)"]


def test_an_unknown_stage_is_one_line_and_exit_2():
    result = CliRunner().invoke(cli, ["bench", "demo", "--stages", "warmup,rvlr"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --stages: no stage 'rvlr'; choose from warmup, merge, rlvr, "
                                     "rlvr-no-warmup, rlvr-random-reward, eval")


def test_out_of_memory_is_exit_code_3_with_the_settings_to_lower():
    from lowres.train.common import oom_guard

    with pytest.raises(OutOfMemory, match=r"rlvr: out of GPU memory; lower rlvr.num_generations \(8\)") as caught:
        with oom_guard("rlvr", {"rlvr.num_generations": 8}):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert caught.value.exit_code == 3


def test_a_stage_that_runs_out_of_memory_does_not_fit(monkeypatch, tmp_path):
    """The child's out-of-memory exit code (3) becomes a 'does not fit' row naming what to lower."""
    commands = []

    def out_of_memory(stage, args, **kwargs):
        commands.append(args)
        raise StageFailed(stage, OutOfMemory.exit_code, None)

    monkeypatch.setattr(bench, "run_stage", out_of_memory)
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    recipe = load_recipe(bundled_recipes()["demo"])
    report = bench.bench(recipe, steps=1, workdir=tmp_path)
    rows = {r["stage"]: r for r in report["stages"]}
    assert set(rows) == {"warmup", "rlvr", "rlvr-no-warmup", "eval"}  # no adapter, so no merge to measure
    assert commands[2][0] == "rlvr" and "--no-warmup" in commands[2]  # the baseline's own command
    assert all(r["status"] == "does not fit" for r in rows.values())
    assert "rlvr.max_completion_length" in rows["rlvr"]["note"]
    assert report["extrapolated_recipe_seconds"] == {"transformers": None}
    lines = bench.summary_lines(report)
    assert any("warmup: does not fit" in line and "per_device_train_batch_size" in line for line in lines)


def test_a_model_config_stands_in_for_a_recipe_model_that_is_not_downloaded(monkeypatch, tmp_path):
    """`lowres bench qwen2.5-3b-math --model-config …` offline, where Qwen2.5-3B is not in the cache: the
    random model replaces it before the recipe is checked (the GPU check's rehearsal found it refused)."""
    seen = {}

    def measured(recipe, **kwargs):
        seen["model"] = recipe.model.name_or_path
        return {"stages": [], "extrapolated_recipe_seconds": {}, "recipe": recipe.name, "source": "",
                "hardware": {"gpu": None, "device": "cpu", "matmul_fp32_gflops": 1.0}}

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bench, "bench", measured)
    result = CliRunner().invoke(cli, ["bench", "qwen2.5-3b-math", "--model-config", "tiny"])
    assert result.exit_code == 0, result.output
    assert seen["model"].endswith("bench-models/tiny")


@pytest.mark.slow
def test_bench_fills_every_figure_and_writes_json(tmp_path):
    """On a random model of a shipped shape (`--model-config tiny`: the same code path as the demo's model,
    at a fraction of the time). The rlvr-no-warmup stage is measured the same way as rlvr, with its own
    command: left out for time."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "demo", "--model-config", "tiny", "--steps", "1", *sets(TINY),
                                      "--json", str(out), "--stages", "warmup,merge,rlvr,eval"], terminal_width=200)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["model_config"] == "tiny" and report["model"].endswith("bench-models/tiny")
    rows = {r["stage"]: r for r in report["stages"]}
    assert list(rows) == ["warmup", "merge", "rlvr", "eval"]
    assert all(r["status"] == "ok" and r["backend"] == "transformers" for r in rows.values())
    for stage in ("warmup", "rlvr"):
        row = rows[stage]
        assert row["steps_timed"] == 1 and row["step_seconds"] > 0 and row["train_tokens_per_second"] > 0
        assert row["peak_memory"]["rss_gib"] > 0.1
        assert row["extrapolated_seconds"] >= row["wall_seconds"] > 0
    assert rows["rlvr"]["generation_tokens_per_second"] > 0
    # A random model's task reward is constant: with it every advantage is 0 and the transformers backend would
    # train on one row where Unsloth's loss takes them all. The bench's stand-in reward varies in every group,
    # so every row of every step trained here, as on Unsloth.
    assert rows["rlvr"]["zero_variance_share"] == 0 and rows["rlvr"]["rows_trained_share"] == 1.0
    assert rows["warmup"]["steps_in_recipe"] == 4  # 8 traces (too few to hold any out), batch 2, one epoch
    assert rows["rlvr"]["steps_in_recipe"] == 3
    assert rows["eval"]["steps_in_recipe"] == 4  # base, warmup, rlvr and rlvr-no-warmup models
    total = report["extrapolated_recipe_seconds"]["transformers"]
    assert total == pytest.approx(sum(r["extrapolated_seconds"] for r in rows.values()), abs=0.5)
    assert report["hardware"]["matmul_fp32_gflops"] > 0 and report["versions"]["torch"]
    assert set(report["fingerprints"]) == {"base", "warmup", "merge", "rlvr", "rlvr-no-warmup",
                                          "rlvr-random-reward", "eval"}
    assert "whole recipe on transformers" in result.output
