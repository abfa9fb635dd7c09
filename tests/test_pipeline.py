"""`lowres run`: dry runs of every bundled recipe, and the demo end to end at tiny sizes, then cached."""

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.recipe import bundled_recipes, load_recipe

TINY = [
    "data.warmup.n_puzzles=8", "warmup.max_steps=2", "warmup.per_device_train_batch_size=2",
    "rlvr.max_steps=1", "rlvr.num_generations=4", "rlvr.per_device_train_batch_size=4",
    "rlvr.max_completion_length=24", "rlvr.save_steps=1",
    "eval.limit=2", "eval.n_samples=1", "eval.max_new_tokens=24", "rlvr.signal_check_prompts=2",
]


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_dry_run_every_bundled_recipe(name, monkeypatch):
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # as online: offline, an uncached Hub model is refused
        monkeypatch.delenv(variable, raising=False)
    # One evaluation question per task: the fixtures hold a few rows per data set, and the GPU recipes take their
    # training examples from the rows the evaluation leaves (HumanEval+, MMLU-Pro).
    command = ["run", name, "--dry-run", "--set", "eval.limit=1"]
    if load_recipe(bundled_recipes()[name]).rlvr.load_in_4bit:  # the Colab recipe: its 4-bit GRPO needs CUDA
        refused = CliRunner().invoke(cli, command)
        assert refused.exit_code == 2 and refused.output.strip().splitlines()[-1].endswith(
            "rlvr.load_in_4bit: bitsandbytes' 4-bit layers cannot train after sampling on a CPU; set "
            "rlvr.load_in_4bit: false here (4-bit saves GPU memory)"), refused.output
        command += ["--set", "rlvr.load_in_4bit=false"]  # the rest of its plan, as on this CPU
    result = CliRunner().invoke(cli, command)
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
    assert list(results) == ["base", "warmup", "rlvr", "rlvr-no-warmup"]
    for label in results:
        saved = json.loads((run / "eval" / label / "results.json").read_text())
        assert saved[0]["task"] == "kk_easy" and saved[0]["n_questions"] == 2
    assert (run / "merge" / "merge.json").is_file() and (run / "rlvr" / "adapter" / "adapter_config.json").is_file()
    report = (run / "report.md").read_text()
    assert "| kk_easy |" in report and (run / "comparison.png").stat().st_size > 1000
    assert "**rlvr vs rlvr-no-warmup**" in report and "**warmup vs base**" in report
    assert (run / "rlvr_reward.png").is_file() and "![reward over steps](rlvr_reward.png)" in report
    # From the base, 24 tokens never make a well-formed answer: every group scored alike, GRPO never
    # moved the adapter, so the baseline's model is the base model and its scores are reused, not resampled.
    assert json.loads((run / "eval" / "rlvr-no-warmup" / "done.json").read_text())["same_as"] == "base"
    assert results["rlvr-no-warmup"][0].accuracy_mean == results["base"][0].accuracy_mean
    reused = run / "eval" / "rlvr-no-warmup" / "kk_easy" / "samples.jsonl"  # copied: the intervals need them
    assert reused.read_text() == (run / "eval" / "base" / "kk_easy" / "samples.jsonl").read_text()
    assert "rlvr-no-warmup had no signal" in report and "the base model unchanged" in report
    assert json.loads((run / "rlvr-no-warmup" / "signal_check.json").read_text())["no_signal_share"] == 1.0
    assert "## Before GRPO: the signal check" in report

    def done_markers():
        """Stage-level done markers: warmup, merge, the two GRPO runs, and the eval of the four models."""
        return {p: p.stat().st_mtime for p in [*run.glob("*/done.json"), *run.glob("eval/*/done.json")]}

    stamps = done_markers()
    assert len(stamps) == 8
    again = run_recipe(load_recipe(bundled_recipes()["demo"], overrides))
    assert done_markers() == stamps  # nothing was redone
    assert again["rlvr"][0].accuracy_mean == results["rlvr"][0].accuracy_mean

    # A changed setting reruns its stage and what follows, from scratch: tests/test_kill_and_resume.py.


def test_force_reruns_a_stage_and_what_depends_on_it():
    from lowres.pipeline import rerun_set

    demo = load_recipe(bundled_recipes()["demo"])
    assert rerun_set(demo, ["warmup"]) == {"warmup", "merge", "rlvr", "eval:warmup", "eval:rlvr"}
    assert rerun_set(demo, ["rlvr"]) == {"rlvr", "eval:rlvr"}
    assert rerun_set(demo, ["eval"]) == {"eval", "eval:base", "eval:warmup", "eval:rlvr", "eval:rlvr-no-warmup"}
    assert rerun_set(demo, ["rlvr-no-warmup"]) == {"rlvr-no-warmup", "eval:rlvr-no-warmup"}
    baseline = load_recipe(bundled_recipes()["qwen2.5-3b-math-no-warmup"])
    assert rerun_set(baseline, ["rlvr"]) == {"rlvr", "eval:rlvr"}


def test_force_shows_in_the_plan(tmp_path):
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--force", "merge", "--set",
                                      f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    plan = " ".join(re.sub("[│┃]", " ", result.output.split("name: demo")[0]).split())  # cells unwrapped
    assert plan.count("(--force: runs again)") == 1 and "into the 16-bit base (--force: runs again)" in plan
    # rlvr starts from the merged model, and the evaluations of both
    assert plan.count("(runs again: an earlier step runs again with --force merge)") == 3
    assert ("4 completions (8 per device × 1 accumulation step); signal check first (warn) (runs again: an earlier "
            "step runs again with --force merge)") in plan


@pytest.mark.parametrize("seeds, said", [
    ("[]", "GRPO seed 7 (seeds: [], so each RLVR arm runs once, with seed)"),
    ("[1, 2]", "GRPO seeds 1, 2: each RLVR arm runs once per seed"),
])
def test_the_plan_says_what_seeds_means(tmp_path, seeds, said):
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--set", "seed=7", "--set", f"seeds={seeds}",
                                      "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert said in " ".join(result.output.split("name: demo")[0].split())  # the caption, unwrapped


def test_the_plan_says_a_select_pool_larger_than_the_data_is_capped(tmp_path):
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--set", "data.target.select=informative",
                                      "--set", "data.target.select_pool=100000000", "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    plan = " ".join(re.sub("[│┃]", " ", result.output.split("name: demo")[0]).split())
    shown = re.search(r"informative selection from (\d+) candidates", plan)
    assert shown and int(shown[1]) < 100000000
    assert (f"rlvr: data.target.select_pool is 100000000, but the training rows hold {shown[1]} (after leaving out "
            f"the evaluation's questions): the informative selection samples those {shown[1]}") in plan


def test_a_dry_run_counts_the_training_rows_later_when_the_data_is_not_on_this_machine(tmp_path, monkeypatch):
    # Issue 34: online without a local copy of the data, the plan loaded the task's data from the Hub to count the
    # rows (and again for the informative selection): 30 s of retries when offline, then an error.
    import datasets
    import huggingface_hub

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "LOWRES_DATA_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as a process started online reads it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))  # nothing prepared in it
    monkeypatch.setenv("COLUMNS", "1000")  # the plan's cells unwrapped
    calls = []

    def the_hub(*args, **kwargs):  # what would reach the network: recorded, and fails at once
        calls.append(args)
        raise ConnectionError("no network in the tests")

    monkeypatch.setattr(datasets, "load_dataset", the_hub)
    for select in ("random", "informative"):
        started = time.monotonic()
        result = CliRunner().invoke(cli, ["run", "qwen2.5-0.5b-math", "--dry-run", "--set", f"output.dir={tmp_path}",
                                          "--set", f"data.target.select={select}"])
        assert result.exit_code == 0, result.output
        assert calls == [] and time.monotonic() - started < 20
        plan = " ".join(re.sub("[│┃]", " ", result.output.split("name: qwen2.5-0.5b-math")[0]).split())
        assert "GRPO on 100 math examples (as configured: counted when the stage runs) from the warmup model" in plan
        assert ("rlvr: math test (HuggingFaceH4/MATH-500) is not on this machine yet (not under $LOWRES_DATA_DIR, "
                f"not in the datasets cache {tmp_path / 'datasets'}), so the training rows are counted when the stage "
                "runs (which downloads them); the plan shows data.target.n_examples (100)") in plan
    assert "informative selection from 200 candidates" in plan  # the configured pool: 2 × n_examples
    # Data on this machine is still counted: the demo's puzzles are made here.
    result = CliRunner().invoke(cli, ["run", "--dry-run", "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    plan = " ".join(re.sub("[│┃]", " ", result.output.split("name: demo")[0]).split())
    assert "GRPO on 64 kk_easy examples from the warmup model" in plan and "counted when" not in plan
    assert calls == []


def test_fingerprints_follow_file_contents_not_paths(tmp_path, monkeypatch):
    from lowres.fingerprint import stage_fingerprints

    monkeypatch.setenv("LOWRES_HOME", str(tmp_path / "home"))
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"prompt": "q", "completion": "a"}\n')
    recipe = load_recipe(bundled_recipes()["demo"], [f"data.warmup.source={traces}"])
    before = stage_fingerprints(recipe)
    traces.write_text('{"prompt": "q", "completion": "a better trace"}\n')  # regenerated, same path
    after = stage_fingerprints(recipe)
    assert after["warmup"] != before["warmup"] and after["rlvr"] != before["rlvr"]
    assert after["base"] == before["base"]
    # Only contents count: the same bytes written again (a new mtime) give the same fingerprint.
    traces.write_text('{"prompt": "q", "completion": "a better trace"}\n')
    assert stage_fingerprints(recipe) == after


def test_fingerprints_follow_the_model_folder_and_the_lowres_version(tmp_path, monkeypatch):
    import os

    import lowres.fingerprint as fp

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 16)
    recipe = load_recipe(bundled_recipes()["demo"], [f"model.name_or_path={model}"])
    before = fp.stage_fingerprints(recipe)
    (model / "model.safetensors").write_bytes(b"1" * 32)  # new weights
    os.utime(model / "model.safetensors", ns=(1, 1))
    changed = fp.stage_fingerprints(recipe)
    assert changed["base"] != before["base"] and changed["warmup"] != before["warmup"]
    monkeypatch.setattr(fp, "__version__", "99.0")
    assert fp.stage_fingerprints(recipe)["warmup"] != changed["warmup"]


def test_an_adapter_is_unchanged_only_while_every_b_matrix_is_zero(tmp_path):
    import torch
    from safetensors.torch import save_file

    from lowres.pipeline import adapter_is_unchanged

    weights = {"base_model.model.layers.0.q_proj.lora_A.weight": torch.randn(4, 8),
               "base_model.model.layers.0.q_proj.lora_B.weight": torch.zeros(8, 4),
               "base_model.model.layers.0.v_proj.lora_B.weight": torch.zeros(8, 4)}
    save_file(weights, tmp_path / "adapter_model.safetensors")
    assert adapter_is_unchanged(tmp_path)
    weights["base_model.model.layers.0.v_proj.lora_B.weight"][3, 1] = 1e-9  # one GRPO step moved it
    save_file(weights, tmp_path / "adapter_model.safetensors")
    assert not adapter_is_unchanged(tmp_path)
    assert not adapter_is_unchanged(tmp_path / "missing") and not adapter_is_unchanged(None)


def test_the_runs_evaluations_sample_in_the_recipes_dtype():
    from lowres.pipeline import eval_command

    recipe = load_recipe(bundled_recipes()["demo"], ["eval.sample_dtype=model"])
    args = eval_command(recipe, "embedded:smollm2-135m", None, "base", recipe.run_dir / "eval" / "base")
    assert args[args.index("--sample-dtype") + 1] == "model"


def test_the_baseline_rlvr_command_refuses_a_start_model():
    result = CliRunner().invoke(cli, ["rlvr", "demo", "--no-warmup", "--model", "runs/demo/merge"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --no-warmup starts from the recipe's base model; drop --model"


def fake_stages(calls: list, moved: set[str] = frozenset()):
    """A stand-in for lowres.launch.run_stage: each stage writes what the conductor reads next (an adapter,
    results.json) and is recorded in `calls`. Adapters of the stages in `moved` have a nonzero B matrix."""
    import torch
    from safetensors.torch import save_file

    from lowres.evaluate import EvalResult

    def run_stage(stage, args, processes=1, folder=None):
        calls.append(stage)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if stage in ("warmup", "rlvr", "rlvr-no-warmup"):
            (out / "adapter").mkdir(parents=True, exist_ok=True)
            b = torch.ones(8, 4) if stage in moved else torch.zeros(8, 4)
            save_file({"layers.0.q_proj.lora_A.weight": torch.randn(4, 8), "layers.0.q_proj.lora_B.weight": b},
                      out / "adapter" / "adapter_model.safetensors")
        elif stage.startswith("eval"):
            label = args[args.index("--label") + 1]
            result = EvalResult("kk_easy", label, 2, 1, {"base": 0.0}.get(label, 0.5), 0.0, {}, 0.0, 10.0, 0.0)
            (out / "results.json").write_text(json.dumps([dataclasses.asdict(result)]))

    return run_stage


def test_a_warmup_that_changed_nothing_is_reported_as_the_base_model(tmp_path, monkeypatch):
    """A warmup adapter still at its initialisation (every LoRA B zero) makes a merged model equal to the base:
    the eval reuses the base's scores rather than showing a "warmup" row as if trained, and the report says so."""
    import lowres.pipeline as pipeline

    calls = []
    monkeypatch.setattr(pipeline, "run_stage", fake_stages(calls))
    recipe = load_recipe(bundled_recipes()["demo"], ["stages=[warmup, merge, eval]", f"output.dir={tmp_path}"])
    results = pipeline.run_recipe(recipe)
    assert calls == ["warmup", "merge", "eval base"]  # the warmed model was not sampled again
    assert results["warmup"][0].accuracy_mean == results["base"][0].accuracy_mean
    assert json.loads((tmp_path / "demo" / "eval" / "warmup" / "done.json").read_text())["same_as"] == "base"
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "## Models that did not change" in report
    assert "- warmup: its adapter is unchanged from initialisation (no warmup step moved it" in report

    calls.clear()
    monkeypatch.setattr(pipeline, "run_stage", fake_stages(calls, moved={"warmup"}))
    pipeline.run_recipe(recipe, force=["warmup"])
    assert calls == ["warmup", "merge", "eval warmup"]  # trained: its own evaluation
