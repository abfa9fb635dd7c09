"""`lowres run`: a recipe's stages in order, each writing to runs/<recipe>/<stage>/.

Each stage runs in its own child process — the same `lowres warmup/merge/rlvr/eval` a user can call
by hand — so GPU memory, vLLM engines and Unsloth's class patches end with the stage (lowres.launch).
A stage that finished with the same inputs and settings is skipped (its folder holds a `done.json`
with a fingerprint of what it was made from, lowres.fingerprint); a stage that was interrupted resumes
from its last checkpoint, and only from one made under the same fingerprint (lowres.train.resume);
`--force STAGE` runs a stage and everything downstream of it again. Evaluation scores every model the
run has — the base, the merged warmup model, the RLVR model and, with the rlvr-no-warmup stage, the
same GRPO run from the base — on the same questions; a GRPO adapter that never moved from its
initialisation is its start model, whose scores are reused rather than sampled again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import shutil
import time
from pathlib import Path

from lowres import artifacts
from lowres.artifacts import read_json, require_free_space, write_json
from lowres.estimate import stage_disk_bytes
from lowres.evaluate import EvalResult, load_results
from lowres.fingerprint import Arm, arm_of, eval_labels, rlvr_arms  # noqa: F401 - the run's models, also for bench
from lowres.launch import run_stage
from lowres.models import describe_model
from lowres.plan import DONE, RunPlan, Step, make_plan, mark_done, rerun_set  # noqa: F401 - rerun_set: the CLI's
from lowres.recipe import DEFAULT_RECIPE, RLVR_ARMS, TRAINING_STAGES, Recipe, dump_recipe
from lowres.report import plot_comparison, plot_pass_at_k, plot_reward_curves, results_markdown, results_table
from lowres.signal_check import summary_lines
from lowres.timing import Pace
from lowres.train.merge import adapter_is_unchanged
from lowres.train.resume import set_aside_checkpoints
from lowres.ui import console

__all__ = ["DEFAULT_RECIPE", "adapter_is_unchanged", "execute", "make_plan", "run_recipe"]


def _start_over(step: Step) -> None:
    """Make a forced step run again from scratch: its done marker (and an evaluation's results) gone, a
    training stage's checkpoints set aside."""
    if step.kind == "eval":
        if step.folder.exists():
            shutil.rmtree(step.folder)
        return
    (step.folder / DONE).unlink(missing_ok=True)
    if step.kind in TRAINING_STAGES:
        set_aside_checkpoints(step.folder, step.kind, "are set aside (--force)" if step.why.startswith("--force")
                              else f"are set aside: {step.why}")


def run_recipe(recipe: Recipe, force: tuple[str, ...] | list[str] = ()) -> dict[str, list[EvalResult]]:
    """Plan the recipe's run (lowres.plan) and execute it; returns eval results by model label."""
    return execute(make_plan(recipe, force))


def execute(plan: RunPlan) -> dict[str, list[EvalResult]]:
    """Run a plan's steps in order, each stage in its own child process (see lowres.launch), skipping those
    the plan found done; returns eval results by model label (base, warmup, rlvr, ...). Every fingerprint
    and estimate comes from the plan: nothing is recomputed here."""
    recipe = plan.recipe
    started = time.time()
    console.print(plan.table())
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    for step in plan.steps:
        if step.status == "forced":
            _start_over(step)
    # The children read the resolved recipe from here, so they run exactly what the plan showed.
    resolved = (recipe.run_dir / "recipe.yaml").resolve()
    artifacts.write_text(resolved, dump_recipe(recipe))
    run_dir = recipe.run_dir.resolve()
    for line in plan.time_lines:
        console.print(line)
    pace = Pace(dict(plan.estimated), [step.kind for step in plan.steps if step.runs])
    flags = {"rlvr": [], "rlvr-no-warmup": ["--no-warmup"], "rlvr-random-reward": ["--random-reward"]}

    def stage_args(step: Step) -> list[str]:
        if step.kind == "warmup":
            return ["warmup", str(resolved), "--out", str(run_dir / "warmup")]
        if step.kind == "merge":
            return ["merge", "--base", recipe.model.name_or_path, "--adapter", str(run_dir / "warmup" / "adapter"),
                    "--out", str(run_dir / "merge"), "--dtype", recipe.model.dtype, "--tolerance",
                    repr(recipe.merge.tolerance), "--verify-prompts", str(recipe.merge.verify_prompts)]
        seed = [] if step.seed is None else ["--seed", str(step.seed)]
        return ["rlvr", str(resolved), *flags[step.kind], *seed, "--out", str(run_dir / step.name)]

    for step in plan.steps:
        if step.kind == "eval":
            continue
        if not step.runs:
            console.print(f"[green]{step.name}: done before with the same inputs — skipped[/green] ({step.folder})")
            continue
        console.rule(step.name)
        require_free_space(recipe.run_dir, stage_disk_bytes(recipe, step.kind), f"the {step.name} stage")
        t0 = time.time()
        trains = step.kind in TRAINING_STAGES
        run_stage(step.name, stage_args(step), processes=recipe.num_processes if trains else 1,
                  folder=step.folder if trains else None)
        mark_done(step, recipe, time.time() - t0)
        if (line := pace.finished(step.kind, time.time() - t0)) is not None:
            console.print(line)

    results: dict[str, list[EvalResult]] = {}
    evaluations = [step for step in plan.steps if step.kind == "eval"]
    if evaluations:
        console.rule("eval")
        for step in evaluations:
            results[step.label] = _evaluate(plan, step, results)
        write_report(recipe, results)
    console.print(f"done in {time.time() - started:.0f} s → {recipe.run_dir}")
    return results


def _evaluate(plan: RunPlan, step: Step, results: dict[str, list[EvalResult]]) -> list[EvalResult]:
    """One evaluation step: skipped when done, the start model's scores when the model is its start model
    unchanged (an adapter that never moved), else sampled in a child process."""
    recipe, label = plan.recipe, step.label
    if not step.runs:
        console.print(f"[green]eval {label}: done before with the same inputs — skipped[/green]")
        return load_results(step.folder)
    run_dir = recipe.run_dir.resolve()
    arm = arm_of(label, recipe)
    start = "warmup" if recipe.rlvr.start_from == "warmup" else "base"
    same_as = "base" if arm is None or arm.stage == "rlvr-no-warmup" else start
    refs = {"base": recipe.model.name_or_path, "warmup": str(run_dir / "merge")}
    if arm is None:
        # The merged warmup model is the base when the warmup adapter never moved.
        if label == "warmup" and "base" in results and adapter_is_unchanged(run_dir / "warmup" / "adapter"):
            return reuse_results(recipe, step, "base", results["base"])
        return evaluate_stage_model(recipe, step, refs[label], None)
    adapter = run_dir / arm.name / "adapter"
    if same_as in results and adapter_is_unchanged(adapter):
        return reuse_results(recipe, step, same_as, results[same_as])
    return evaluate_stage_model(recipe, step, refs[same_as], adapter)


def eval_command(recipe: Recipe, model_ref: str, adapter: Path | None, label: str, out_dir: Path,
                 seed: int | None = None) -> list[str]:
    """The `lowres eval` arguments that evaluate one of the run's models with the recipe's settings (an arm of
    a recipe's `seeds` samples with its own seed)."""
    e = recipe.eval
    args = ["eval", model_ref, "--tasks", ",".join(e.tasks), "--n-samples", str(e.n_samples),
            "--temperature", repr(e.temperature), "--top-p", repr(e.top_p), "--max-new-tokens", str(e.max_new_tokens),
            "--batch-size", str(e.batch_size), "--chat-template", recipe.model.chat_template,
            "--seed", str(recipe.seed), *([] if seed is None else ["--sample-seed", str(seed)]),
            "--dtype", recipe.model.dtype, "--sample-dtype", e.sample_dtype,
            "--label", label, "--out", str(out_dir),
            "--no-table"]
    if isinstance(e.limit, dict):
        args += ["--limit", ",".join(f"{task}={n}" for task, n in e.limit.items())]
    elif e.limit:
        args += ["--limit", str(e.limit)]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    for plugin in recipe.plugins:  # the child has no recipe: it imports the user's tasks from these
        args += ["--plugin", plugin]
    if recipe.tasks:  # ... and registers the recipe's tasks: from the resolved recipe run_recipe writes
        args += ["--task-spec", str((recipe.run_dir / "recipe.yaml").resolve())]
    return args


def evaluate_stage_model(recipe: Recipe, step: Step, model_ref: str, adapter: Path | None) -> list[EvalResult]:
    """Evaluate one of the run's models on every eval task, in a child process (an evaluation step of the plan)."""
    t0 = time.time()
    run_stage(f"eval {step.label}", eval_command(recipe, model_ref, adapter, step.label, step.folder.resolve(),
                                                 step.seed))
    mark_done(step, recipe, time.time() - t0)
    return load_results(step.folder)


def unchanged_text(label: str, same_as: str) -> str:
    """Why `label`'s model is `same_as`'s model, in words (the console at eval time, and report.md)."""
    why = ("no warmup step moved it: check the warmup's learning-rate schedule and its metrics.jsonl"
           if label == "warmup" else "no GRPO step had a reward difference to learn from")
    return (f"{label}: its adapter is unchanged from initialisation ({why}), so the model is the {same_as} "
            f"model — its scores are {same_as}'s")


def reuse_results(recipe: Recipe, step: Step, same_as: str, results: list[EvalResult]) -> list[EvalResult]:
    """An evaluation step's scores when its model is `same_as`'s model unchanged: the same results, relabelled
    and written to its eval folder, instead of sampling the same model twice."""
    label = step.label
    console.print(f"[yellow]eval {unchanged_text(label, same_as)}[/yellow]")
    reused = [dataclasses.replace(r, model=label, seconds=0.0) for r in results]
    step.folder.mkdir(parents=True, exist_ok=True)
    for r in results:  # the per-question samples too: the report's intervals are computed from them
        source = recipe.run_dir / "eval" / same_as / r.task / "samples.jsonl"
        if source.is_file():
            (step.folder / r.task).mkdir(exist_ok=True)
            shutil.copyfile(source, step.folder / r.task / "samples.jsonl")
    write_json(step.folder / "results.json", [dataclasses.asdict(r) for r in reused])
    mark_done(step, recipe, 0.0, same_as=same_as)
    return reused


def write_report(recipe: Recipe, results: dict[str, list[EvalResult]]) -> Path:
    """The run's report: the table on screen, report.md and report.json (the comparisons, with their intervals
    and verdicts, as data), and PNG plots next to them."""
    from lowres.evidence import compare, comparisons_json, method_note, pass_at_k_curve, question_scores
    from lowres.train.check import load_check

    console.print(results_table(results))
    run_dir = recipe.run_dir
    lines = [f"# {recipe.name}\n", f"{recipe.description}\n", f"Model: {describe_model(recipe.model.name_or_path)}\n",
             "## Accuracy (%) [95% interval over questions] (share of well-formed answers)\n",
             results_markdown(results)]
    data: dict = {"recipe": recipe.name, "seeds": recipe.seeds or [recipe.seed], "models": {}, "signal_checks": {},
                  "comparisons": [], "notes": []}
    scores: dict[str, dict] = {}
    formatted: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    for label, per_task in results.items():
        data["models"][label] = {r.task: {"accuracy": r.accuracy_mean, "n_questions": r.n_questions,
                                          "n_samples": r.n_samples} for r in per_task}
        for r in per_task:
            samples = run_dir / "eval" / label / r.task / "samples.jsonl"
            if samples.is_file():
                scores.setdefault(label, {})[r.task] = question_scores(samples)
                with contextlib.suppress(KeyError):  # samples written before lowres recorded the format
                    formatted.setdefault(label, {})[r.task] = question_scores(samples, "formatted")
                curves.setdefault(label, {})[r.task] = pass_at_k_curve(samples)
                data["models"][label][r.task]["pass_at_k"] = curves[label][r.task]

    # A warmup that changed nothing is said here; an RLVR arm that changed nothing, in the comparisons' notes.
    unchanged = [unchanged_text(label, record["same_as"]) for label in results if arm_of(label, recipe) is None
                 and isinstance(record := read_json(run_dir / "eval" / label / DONE), dict) and record.get("same_as")]
    if unchanged:
        lines += ["## Models that did not change\n", "\n".join(f"- {line}" for line in unchanged) + "\n"]
    checks = {arm.name: check for arm in rlvr_arms(recipe) if (check := load_check(run_dir / arm.name))}
    shown: set[str] = set()
    check_lines = []
    for name, check in checks.items():
        data["signal_checks"][name] = check.to_dict()
        if check.start_model in shown:  # every seed of an arm shares its start model's check
            continue
        shown.add(check.start_model)
        check_lines += [line.replace(check.stage, name, 1) if i == 0 else line
                        for i, line in enumerate(summary_lines(check))]
    if check_lines:
        lines += ["## Before GRPO: the signal check\n", "```\n" + "\n".join(check_lines) + "\n```\n"]

    start = "warmup" if recipe.rlvr.start_from == "warmup" else "base"
    comparisons = compare(scores, start_of_rlvr=start, formatted=formatted)
    data["comparisons"] = comparisons_json(comparisons)
    data["notes"] = _learned_nothing_notes(recipe, checks)
    if comparisons or data["notes"]:
        lines.append("## Comparisons: differences in points, 95% intervals over questions"
                     + (" and seeds" if len(recipe.seeds) > 1 else "") + ", p-values, verdicts\n")
        if comparisons:
            lines.append(method_note(comparisons) + "\n")
            data["method"] = method_note(comparisons)
        lines += [f"- {c.line()}" for c in comparisons]
        lines += [f"- note: {note}" for note in data["notes"]]
        lines.append("")
        for c in comparisons:
            console.print(c.line().replace("**", ""), markup=False)
        for note in data["notes"]:
            console.print(f"[yellow]note: {note}[/yellow]")
    if importlib.util.find_spec("matplotlib") is None:
        # A declared dependency, but a hand-assembled environment (e.g. an offline GPU box) may lack it.
        console.print("[yellow]plots skipped: matplotlib is not installed[/yellow]")
    else:
        plot_comparison(results, run_dir / "comparison.png")
        lines.append("![comparison](comparison.png)\n")
        if plot_pass_at_k(curves, run_dir / "pass_at_k.png"):
            lines.append("## pass@k\n\n![pass@k against k](pass_at_k.png)\n")
        names = {"rlvr": "from the warmup" if start == "warmup" else "from the base",
                 "rlvr-no-warmup": "from the base (no warmup)", "rlvr-random-reward": "coin-flip reward (control)"}
        curves_by_arm = {names[arm.stage] + (f", seed {arm.seed}" if arm.seed is not None else ""):
                         run_dir / arm.name / "metrics.jsonl" for arm in rlvr_arms(recipe)
                         if (run_dir / arm.name / "metrics.jsonl").is_file()}
        if curves_by_arm and plot_reward_curves(curves_by_arm, run_dir / "rlvr_reward.png"):
            lines.append("## RLVR\n\n![reward over steps](rlvr_reward.png)\n")
    report = run_dir / "report.md"
    artifacts.write_text(report, "\n".join(lines))
    write_json(run_dir / "report.json", data)
    console.print(f"report: {report} (as data: {run_dir / 'report.json'})")
    return report


def _learned_nothing_notes(recipe: Recipe, checks: dict) -> list[str]:
    """An arm that never updated (every group scored alike) is its start model: say so in those words, so a
    comparison with it is not read as GRPO's effect."""
    notes = []
    for stage in RLVR_ARMS:
        arms = [arm for arm in rlvr_arms(recipe) if arm.stage == stage]
        unchanged = [arm for arm in arms if adapter_is_unchanged(recipe.run_dir / arm.name / "adapter")]
        if not arms or len(unchanged) != len(arms):
            continue
        start = "the base model" if stage == "rlvr-no-warmup" or recipe.rlvr.start_from == "base" else \
            "the warmed-up model"
        check = checks.get(arms[0].name)
        why = (f" (its signal check: {100 * check.no_signal_share:.0f}% of prompts without a reward difference, "
               f"pass@{check.num_generations} {100 * check.pass_at_g:.0f}%)" if check else "")
        notes.append(f"{stage} had no signal: every GRPO group's completions scored alike{why}, so no step changed "
                     f"its adapter and its model is {start} unchanged. A comparison with {stage} compares with "
                     f"{start}, not with what GRPO learned from it")
    return notes
