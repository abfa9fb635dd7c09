"""The run plan (lowres/plan.py): `lowres run --dry-run` prints it, the conductor executes that same object and
computes no fingerprint of its own, and each step says why it runs (new, stale with the setting that changed,
forced) or is skipped."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.recipe import bundled_recipes, load_recipe

GFLOPS = 180.0  # the time estimate's yardstick, fixed so that two plans of the same run are equal


@pytest.fixture
def conductor(monkeypatch):
    """The pipeline with its child processes replaced by a recorder: each stage 'runs' by making its output
    folder; an evaluation writes an empty results.json. Returns the calls, in order."""
    import lowres.hardware
    import lowres.pipeline as pipeline

    monkeypatch.setattr(lowres.hardware, "matmul_gflops", lambda: GFLOPS)
    calls = []

    def run_stage(name, args, processes=1, folder=None):
        calls.append((name, args))
        out = args[args.index("--out") + 1]
        Path(out).mkdir(parents=True, exist_ok=True)
        if name.startswith("eval"):
            (Path(out) / "results.json").write_text("[]")

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "load_results", lambda folder: [])
    monkeypatch.setattr(pipeline, "adapter_is_unchanged", lambda adapter: False)
    monkeypatch.setattr(pipeline, "write_report", lambda recipe, results: None)
    return calls


def demo(tmp_path, *overrides):
    return load_recipe(bundled_recipes()["demo"], [f"output.dir={tmp_path}", *overrides])


def no_fingerprints(monkeypatch):
    """From here on, computing any fingerprint fails the test."""
    from lowres import fingerprint, plan, timing

    def refuse(*args, **kwargs):
        raise AssertionError("a fingerprint was computed outside the plan")

    for module, name in [(fingerprint, "fingerprint"), (fingerprint, "stage_fingerprints"), (plan, "fingerprint"),
                         (plan, "stage_fingerprints"), (plan, "arm_fingerprint"), (plan, "eval_fingerprint"),
                         (timing, "stage_keys")]:
        monkeypatch.setattr(module, name, refuse)


def test_the_conductor_executes_the_plan_the_dry_run_prints(tmp_path, conductor, monkeypatch):
    from lowres.pipeline import execute
    from lowres.plan import make_plan

    recipe = demo(tmp_path)
    plan = make_plan(recipe)
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", "--json", str(out),
                                      "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == plan.to_dict()  # what the dry run printed is this object
    assert [s.name for s in plan.steps] == ["warmup", "merge", "rlvr", "rlvr-no-warmup", "eval:base", "eval:warmup",
                                            "eval:rlvr", "eval:rlvr-no-warmup"]
    assert {s.status for s in plan.steps} == {"new"} and all(s.seconds > 0 for s in plan.steps)
    assert plan.step("rlvr").reads[0] == str(tmp_path / "demo" / "merge")

    no_fingerprints(monkeypatch)
    execute(plan)
    assert [name for name, _ in conductor] == ["warmup", "merge", "rlvr", "rlvr-no-warmup", "eval base",
                                               "eval warmup", "eval rlvr", "eval rlvr-no-warmup"]
    assert conductor[3][1][:3] == ["rlvr", str((tmp_path / "demo" / "recipe.yaml").resolve()), "--no-warmup"]
    for step in plan.steps:  # each done marker holds the fingerprint the plan gave its step
        assert json.loads((step.folder / "done.json").read_text())["fingerprint"] == step.fingerprint


def test_a_finished_run_plans_nothing_and_a_changed_setting_says_what_changed(tmp_path, conductor):
    from lowres.pipeline import execute
    from lowres.plan import make_plan

    execute(make_plan(demo(tmp_path)))
    again = make_plan(demo(tmp_path))
    assert {s.status for s in again.steps} == {"done"} and all(s.seconds is None for s in again.steps)
    conductor.clear()
    execute(again)
    assert conductor == []

    changed = make_plan(demo(tmp_path, "rlvr.learning_rate=1e-4"))
    status = {s.name: (s.status, s.why) for s in changed.steps}
    assert status["warmup"][0] == status["merge"][0] == status["eval:base"][0] == "done"
    assert status["rlvr"] == ("stale", "changed since it ran: rlvr.learning_rate 5e-05 → 0.0001")
    assert status["rlvr-no-warmup"][0] == status["eval:rlvr"][0] == "stale"
    assert "(stale: changed since it ran: rlvr.learning_rate 5e-05 → 0.0001; runs again)" in table_text(changed)


def table_text(plan) -> str:
    """The plan's table as printed, on one wide line per row."""
    import io

    from rich.console import Console

    wide = Console(width=400, record=True, file=io.StringIO())
    wide.print(plan.table())
    return " ".join(wide.export_text().split())


def test_force_marks_the_named_step_and_everything_after_it(tmp_path, conductor):
    from lowres.pipeline import execute
    from lowres.plan import make_plan

    execute(make_plan(demo(tmp_path)))
    forced = {s.name: (s.status, s.why) for s in make_plan(demo(tmp_path), ["merge"]).steps}
    assert forced["warmup"][0] == forced["rlvr-no-warmup"][0] == forced["eval:base"][0] == "done"
    assert forced["merge"] == ("forced", "--force merge")
    assert forced["rlvr"] == forced["eval:warmup"] == ("forced", "an earlier step runs again with --force merge")
    conductor.clear()
    execute(make_plan(demo(tmp_path), ["merge"]))
    assert [name for name, _ in conductor] == ["merge", "rlvr", "eval warmup", "eval rlvr"]
