"""`lowres run` says how long it will take before its first stage, from measured figures only; each training
stage's progress line shows the time left."""

import json
from pathlib import Path

import pytest

from lowres import hardware
from lowres.hardware import Hardware
from lowres.recipe import bundled_recipes, load_recipe
from lowres.timing import DEMO_GFLOPS, DEMO_SECONDS, estimate, estimate_lines, stage_keys

HALF_AS_FAST = DEMO_GFLOPS / 2  # this machine's yardstick in the tests: every demo stage takes twice as long


def demo(tmp_path, *overrides):
    return load_recipe(bundled_recipes()["demo"], [f"output.dir={tmp_path}", *overrides])


def one_line(lines) -> str:
    return " | ".join(lines)


def test_the_demo_is_the_reference_scaled_by_this_machines_speed(tmp_path):
    recipe = demo(tmp_path)
    result, unused = estimate(recipe, list(recipe.stages), [], gflops=lambda: HALF_AS_FAST)
    assert result.seconds == {stage: pytest.approx(2 * DEMO_SECONDS[stage]) for stage in recipe.stages}
    assert result.missing == [] and unused is None
    # 2 × (117.7 + 12.0 + 123.4 + 53.5 + 109.2) s = 831.6 s
    assert estimate_lines(recipe, result, unused) == [
        "time estimate for the stages that will run on this machine: ≈ 13.9 min (warmup 3.9 min, merge 24 s, rlvr "
        "4.1 min, rlvr-no-warmup 1.8 min, eval 3.6 min); based on warmup, merge, rlvr, rlvr-no-warmup, eval: the "
        "demo's stages as measured on the project's 2-core machine at 180 GFLOP/s fp32 matmul, scaled to this "
        "machine's 90 GFLOP/s (measured just now)"]


def test_a_stage_with_other_settings_gets_no_figure_and_says_how_to_measure(tmp_path):
    recipe = demo(tmp_path, "rlvr.max_steps=6")
    result, unused = estimate(recipe, list(recipe.stages), [], gflops=lambda: HALF_AS_FAST)
    assert list(result.seconds) == ["warmup", "merge"]  # the rlvr stages and the eval of their models differ
    lines = estimate_lines(recipe, result, unused)
    assert lines[0].startswith("time estimate for the stages with a figure on this machine: ≈ 4.3 min "
                               "(warmup 3.9 min, merge 24 s)")
    assert lines[1] == (f"no time estimate for rlvr, rlvr-no-warmup, eval: `lowres bench {recipe.source} --json "
                        f"{tmp_path / 'demo' / 'bench.json'}` (with the same --set options) measures a few steps of "
                        "each stage, and `lowres run` then uses its figures")


def test_bench_figures_for_this_recipe_come_first(tmp_path):
    recipe = demo(tmp_path, "rlvr.max_steps=6")
    keys = stage_keys(recipe)
    row = {"backend": "transformers", "status": "ok"}
    report = {"hardware": {"device": "cpu", "gpu": None, "matmul_fp32_gflops": 150.0}, "fingerprints": keys,
              "stages": [{**row, "stage": "rlvr", "extrapolated_seconds": 100.0},
                         {**row, "stage": "eval", "extrapolated_seconds": 60.0},
                         {**row, "stage": "merge", "status": "crashed", "extrapolated_seconds": None}]}
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "bench.json").write_text(json.dumps(report))
    result, unused = estimate(recipe, list(recipe.stages), [], gflops=lambda: 75.0)
    assert result.seconds == {"warmup": pytest.approx(117.7 * 180.2 / 75), "merge": pytest.approx(12.0 * 180.2 / 75),
                              "rlvr": pytest.approx(200.0), "eval": pytest.approx(120.0)}
    assert result.basis == {"warmup": "demo", "merge": "demo", "rlvr": "bench", "eval": "bench"}
    assert result.missing == ["rlvr-no-warmup"]  # not measured by that bench
    text = one_line(estimate_lines(recipe, result, unused))
    assert (f"rlvr, eval: {tmp_path / 'demo' / 'bench.json'}'s figures (measured on 150.0 GFLOP/s fp32 matmul, "
            "scaled to this machine's 75 GFLOP/s)") in text

    report["hardware"]["device"] = "cuda"  # measured elsewhere: not used, and said so
    (tmp_path / "demo" / "bench.json").write_text(json.dumps(report))
    result, unused = estimate(recipe, list(recipe.stages), [], gflops=lambda: 75.0)
    assert set(result.seconds) == {"warmup", "merge"}
    assert f"{tmp_path / 'demo' / 'bench.json'} was measured on cuda, not cpu; `lowres bench" in one_line(
        estimate_lines(recipe, result, unused))


def test_on_a_gpu_the_cpu_reference_does_not_apply(tmp_path, monkeypatch):
    h200 = Hardware("cuda", "NVIDIA H200", 139.8, True, "transformers", "bf16")
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: h200)
    recipe = demo(tmp_path)
    measured = []
    result, unused = estimate(recipe, list(recipe.stages), [], gflops=lambda: measured.append(1) or 1.0)
    assert result.seconds == {} and result.missing == list(recipe.stages) and measured == []
    assert estimate_lines(recipe, result, unused)[0].startswith("no time estimate for warmup, merge, rlvr, ")


def test_the_estimate_is_printed_before_the_first_stage_and_skips_what_is_done(tmp_path, monkeypatch, capsys):
    import lowres.hardware
    import lowres.pipeline as pipeline

    monkeypatch.setattr(lowres.hardware, "matmul_gflops", lambda: HALF_AS_FAST)
    seen_before_first_stage = []

    def run_stage(stage, args, processes=1, folder=None):
        if not seen_before_first_stage:
            seen_before_first_stage.append(capsys.readouterr().out)
        Path(args[args.index("--out") + 1]).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    recipe = demo(tmp_path, "stages=[warmup, merge]")
    pipeline.run_recipe(recipe)
    printed = " ".join(seen_before_first_stage[0].split())
    assert "time estimate for the stages that will run on this machine: ≈ 4.3 min (warmup 3.9 min, merge 24 s)" \
           in printed
    assert printed.index("time estimate") < printed.index("──── warmup")

    seen_before_first_stage.clear()
    pipeline.run_recipe(recipe, force=["merge"])  # the warmup is done: costs nothing
    printed = " ".join(seen_before_first_stage[0].split())
    assert "≈ 24 s (merge 24 s)" in printed and "done before with the same inputs, skipped: warmup" in printed


def test_time_left_is_the_mean_step_time_so_far_times_the_steps_to_go():
    from lowres.ui import time_left

    assert time_left(0, 23, 5.0) == "-:--:--"  # no step done yet: nothing to go on
    assert time_left(1, 22, 40.0) == "0:14:40"  # 22 steps × 40 s
    assert time_left(3, 0, 99.0) == "0:00:00"
    assert time_left(2, 300, 50.0) == "2:05:00"


def test_the_live_view_shows_the_time_left_after_each_step(monkeypatch):
    from transformers import TrainerControl, TrainerState

    import lowres.train.callbacks as callbacks

    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    view = callbacks.LiveView("warmup", ("loss",))
    state = TrainerState()
    state.max_steps, state.global_step, state.num_input_tokens_seen = 10, 4, 0  # resumed at step 4
    view.on_train_begin(None, state, TrainerControl())
    try:
        fields = view._bar.tasks[0].fields
        assert fields["eta"] == "-:--:--"
        clock[0] += 30.0
        state.global_step = 6  # 2 steps in 30 s since the resume: 4 to go take 60 s
        view.on_step_end(None, state, TrainerControl())
        assert view._bar.tasks[0].fields["eta"] == "0:01:00"
        columns = [getattr(c, "text_format", "") for c in view._bar.columns]
        assert "{task.fields[eta]}" in columns  # its own figure, not the mean since the bar began
    finally:
        view.close()


def test_the_other_bars_show_the_mean_time_per_item_since_they_began():
    """Eval, the signal check and distill: one item (a batch of samples) can take longer than the 30 s that
    rich's own time-left column averages over, and it then showed -:--:-- to the end."""
    from rich.progress import Progress

    from lowres.ui import MeanTimeRemainingColumn, progress

    bar = progress()
    assert any(isinstance(c, MeanTimeRemainingColumn) for c in bar.columns)
    clock = [0.0]
    bar = Progress(MeanTimeRemainingColumn(), get_time=lambda: clock[0], disable=True)
    task_id = bar.add_task("eval", total=32)
    column, task = bar.columns[0], bar.tasks[0]
    assert column.render(task).plain == "-:--:--"  # not started
    bar.start_task(task_id)
    clock[0] = 90.0
    bar.advance(task_id, 4)  # 4 samples in 90 s: 28 to go take 630 s
    assert column.render(task).plain == "0:10:30"


def test_the_estimate_is_corrected_at_the_pace_of_the_finished_stages():
    """The first estimate was 4.3× short on a loaded machine: after each stage the rest is re-estimated at the
    pace so far, and a pace far from the estimate says what the estimate assumed."""
    from lowres.timing import Pace

    pace = Pace({"warmup": 100.0, "merge": 10.0, "rlvr": 200.0}, ["warmup", "merge", "rlvr", "rlvr", "eval"])
    line = pace.finished("warmup", 400.0)  # 4× the figure: rlvr × 2 + merge = 410 s → 1640 s at this pace
    assert line.startswith("warmup took 6.7 min (estimated 1.7 min); the stages left ≈ 27.3 min at the pace so far")
    assert "4.0× the first estimate, which assumed this machine stays as fast and as free of other work" in line
    line = pace.finished("merge", 10.0)  # (400 + 10) / (100 + 10): still 3.7× for the two rlvr runs
    assert "the stages left ≈ 24.8 min" in line
    assert pace.finished("rlvr", 200.0).endswith("at the pace so far, 2.0× the first estimate, which assumed this "
                                                 "machine stays as fast and as free of other work as when it "
                                                 "measured its speed")
    assert pace.finished("eval", 50.0) is None  # no figure: nothing to say
    on_time = Pace({"warmup": 60.0, "rlvr": 60.0}, ["warmup", "rlvr"])
    assert on_time.finished("warmup", 66.0) == "warmup took 66 s (estimated 60 s); the stages left ≈ 66 s at " \
        "the pace so far"
