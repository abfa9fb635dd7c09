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

from rich.table import Table

from lowres import artifacts
from lowres.artifacts import read_json, require_free_space, write_json
from lowres.errors import UserError
from lowres.estimate import stage_disk_bytes
from lowres.evaluate import EvalResult, load_results
from lowres.fingerprint import (  # noqa: F401 - the run's models, used here and by bench
    Arm,
    arm_fingerprint,
    arm_of,
    eval_fingerprint,
    eval_fingerprints,
    eval_labels,
    hub_revision,
    made_by,
    rlvr_arms,
    stage_fingerprints,
)
from lowres.launch import run_stage
from lowres.models import describe_model
from lowres.recipe import DEFAULT_RECIPE, RLVR_ARMS, TRAINING_STAGES, Recipe, dump_recipe
from lowres.report import plot_comparison, plot_pass_at_k, plot_reward_curves, results_markdown, results_table
from lowres.signal_check import summary_lines
from lowres.train.merge import adapter_is_unchanged
from lowres.train.resume import set_aside_checkpoints
from lowres.ui import console, counted

__all__ = ["DEFAULT_RECIPE", "adapter_is_unchanged", "plan", "run_recipe"]


DONE = "done.json"


def _done_record(folder: Path) -> dict | None:
    record = read_json(folder / DONE)
    return record if isinstance(record, dict) else None


def _is_done(folder: Path, fingerprint: str) -> bool:
    record = _done_record(folder)
    return record is not None and record.get("fingerprint") == fingerprint


def _mark_done(folder: Path, fingerprint: str, seconds: float, model_revision: str | None) -> None:
    write_json(folder / DONE, {"fingerprint": fingerprint, "seconds": round(seconds, 1),
                               "model_revision": model_revision})


def _starts_from_merge(recipe: Recipe, stage: str) -> bool:
    return stage in ("rlvr", "rlvr-random-reward") and recipe.rlvr.start_from == "warmup"


def rerun_set(recipe: Recipe, force: tuple[str, ...] | list[str]) -> set[str]:
    """The stages `--force` reruns: those named and everything downstream of them. Evaluations are
    named `eval:<label>` (`--force eval` reruns every model's evaluation)."""
    for stage in force:
        if stage not in recipe.stages:
            raise UserError(f"--force {stage}: not one of this recipe's stages ({', '.join(recipe.stages)})")
    rerun = set(force)
    if "warmup" in rerun and "merge" in recipe.stages:
        rerun.add("merge")
    if "merge" in rerun:
        rerun |= {stage for stage in RLVR_ARMS if stage in recipe.stages and _starts_from_merge(recipe, stage)}
    for label in eval_labels(recipe):
        if "eval" in rerun or made_by(label) in rerun:
            rerun.add(f"eval:{label}")
    return rerun


def _revision_changed(recipe: Recipe, stages: list[str]) -> list[str]:
    """Stages done with a hub model whose cached revision has moved since (a newer download)."""
    now = hub_revision(recipe.model.name_or_path)
    if now is None:
        return []
    return [s for s in stages if (_done_record(recipe.run_dir / s) or {}).get("model_revision") not in (None, now)]


def plan(recipe: Recipe, force: tuple[str, ...] | list[str] = ()) -> Table:
    """What `run` would do, without loading anything."""
    table = Table(title=f"plan: {recipe.name} ({recipe.source})", title_justify="left")
    for column in ("stage", "what", "output"):
        table.add_column(column)
    target = recipe.data.target
    fingerprints = stage_fingerprints(recipe)
    rerun = rerun_set(recipe, force)
    limit = recipe.eval.limit
    limit_text = (f", {limit} questions" if isinstance(limit, int)
                  else ", questions " + ", ".join(f"{t}: {n}" for t, n in limit.items()) if limit else "")
    from lowres.hardware import resolve_load_in_4bit

    four_bit, four_bit_why = resolve_load_in_4bit(recipe.warmup.load_in_4bit)
    notes = []
    examples, counted_later, candidates = target.n_examples, None, None
    if "rlvr" in recipe.stages:  # the rows GRPO will train on, counted now (data only, no model)
        from lowres.tasks.data import DataNotLocal, local_only
        from lowres.train.examples import rlvr_examples

        try:
            # Only from data on this machine: a plan must not wait on the Hub (the stage downloads it).
            with local_only():
                chosen = rlvr_examples(recipe)
                if target.select == "informative":  # the data may hold fewer: the plan shows what is sampled
                    candidates = len(rlvr_examples(recipe, target.select_pool or 2 * target.n_examples).rows)
            examples = len(chosen.rows)
            notes = [f"[yellow]rlvr: {note}[/yellow]" for note in chosen.notes()]
        except DataNotLocal as e:
            from rich.markup import escape

            counted_later = str(e)
            notes = [f"[yellow]rlvr: {escape(counted_later)}, so the training rows are counted when the stage runs "
                     f"(which downloads them); the plan shows data.target.n_examples ({target.n_examples})[/yellow]"]
    what = {
        "warmup": f"{'QLoRA' if four_bit else 'LoRA'} SFT on {recipe.data.warmup.source} traces "
                  f"({'4-bit' if four_bit else '16-bit'} base"
                  f"{'' if four_bit_why == 'asked for' else '; load_in_4bit ' + four_bit_why}); "
                  f"{warmup_batch_text(recipe)}",
        "merge": "merge the warmup adapter into the 16-bit base",
        "rlvr": f"GRPO on {counted(examples, target.task + ' example')}"
                f"{' (as configured: counted when the stage runs)' if counted_later else ''} from the "
                f"{recipe.rlvr.start_from} model; "
                f"{rlvr_batch_text(recipe)}",
        "rlvr-no-warmup": "the same GRPO from the base model (the no-warmup baseline)",
        "rlvr-random-reward": "the same GRPO as rlvr, rewarded by a seeded coin flip (the spurious-reward control)",
        "eval": f"{', '.join(recipe.eval.tasks)} × {recipe.eval.n_samples} samples{limit_text}"
                + f"; models: {', '.join(eval_labels(recipe))}",
    }
    if "rlvr" in recipe.stages and recipe.rlvr.signal_check != "off":
        what["rlvr"] += f"; signal check first ({recipe.rlvr.signal_check})"
    if "rlvr" in recipe.stages and target.select == "informative":
        pool = target.select_pool or 2 * target.n_examples
        if candidates is None:  # the data is not here yet: the pool as configured
            candidates = pool
        what["rlvr"] += f"; informative selection from {candidates} candidates"
        if target.select_pool and candidates < target.select_pool:
            notes.append(f"[yellow]rlvr: data.target.select_pool is {target.select_pool}, but the training rows "
                         f"hold {candidates} (after leaving out the evaluation's questions): the informative "
                         f"selection samples those {candidates}[/yellow]")
    arms = rlvr_arms(recipe)
    for stage in recipe.stages:
        for name, folder_fp in _stage_rows(recipe, stage, fingerprints, arms):
            folder = recipe.run_dir / name
            note = ""
            if stage in rerun:
                note = " [yellow](--force: runs again)[/yellow]"
            elif folder_fp and _is_done(folder, folder_fp):
                note = " [green](done, will skip)[/green]"
            table.add_row(name, what[stage] + note, str(folder))
    if arms:  # which seed GRPO gets, so an empty `seeds:` says what it means
        notes.append(f"GRPO seeds {', '.join(map(str, recipe.seeds))}: each RLVR arm runs once per seed" if recipe.seeds
                     else f"GRPO seed {recipe.seed} (seeds: [], so each RLVR arm runs once, with seed)")
    table.caption = "\n".join([f"model: {describe_model(recipe.model.name_or_path)}", *notes])
    if recipe.num_processes > 1:
        from lowres.hardware import MULTI_PROCESS_BACKEND

        table.caption += (f"\nwarmup and rlvr: {recipe.num_processes} processes, backend {MULTI_PROCESS_BACKEND}; "
                          "merge and eval: one process")
    return table


def _stage_rows(recipe: Recipe, stage: str, fingerprints: dict[str, str], arms: list[Arm]) -> list[tuple[str, str]]:
    """(folder name, fingerprint) of each run of a stage: one, or one per seed for an RLVR arm."""
    if stage in RLVR_ARMS:
        return [(arm.name, arm_fingerprint(recipe, arm.stage, arm.seed)) for arm in arms if arm.stage == stage]
    return [(stage, fingerprints.get(stage))]


def _global_batch(per_device: int, steps: int, processes: int) -> tuple[int, str]:
    parts = [f"{per_device} per device", counted(steps, "accumulation step")]
    if processes > 1:
        parts.append(f"{processes} processes")
    return per_device * steps * processes, " × ".join(parts)


def warmup_batch_text(recipe: Recipe) -> str:
    """The warmup's global batch and what makes it, for the plan."""
    total, parts = _global_batch(recipe.warmup.per_device_train_batch_size, recipe.warmup.gradient_accumulation_steps,
                                 recipe.num_processes)
    return f"global batch {total} traces = {parts}"


def rlvr_batch_text(recipe: Recipe) -> str:
    """GRPO's global batch per optimizer step: prompts × completions each, and what makes it."""
    cfg = recipe.rlvr
    total, parts = _global_batch(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, recipe.num_processes)
    prompts = total // cfg.num_generations
    return f"global batch {total} = {prompts} prompts × {cfg.num_generations} completions ({parts})"


def _start_over(recipe: Recipe, name: str, why: str) -> None:
    """Make a stage (or one model's eval, `eval:<label>`) run again from scratch."""
    if name.startswith("eval:"):
        folder = recipe.run_dir / "eval" / name.split(":", 1)[1]
        if folder.exists():
            shutil.rmtree(folder)
        return
    folders = ([recipe.run_dir / arm.name for arm in rlvr_arms(recipe) if arm.stage == name] if name in RLVR_ARMS
               else [recipe.run_dir / name])
    for folder in folders:
        (folder / DONE).unlink(missing_ok=True)
        if name in TRAINING_STAGES:
            set_aside_checkpoints(folder, name, why)


def run_recipe(recipe: Recipe, force: tuple[str, ...] | list[str] = ()) -> dict[str, list[EvalResult]]:
    """Run the recipe's stages in order, each in its own child process (see lowres.launch); returns
    eval results by model label (base, warmup, rlvr). Fingerprints and done markers stay here.

    force: stages to run again even when done (and everything downstream of them)."""
    started = time.time()
    console.print(plan(recipe, force))
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    rerun = rerun_set(recipe, force)
    moved = _revision_changed(recipe, [s for s in ("warmup", "merge", "rlvr") if s in recipe.stages])
    if moved:
        console.print(f"[yellow]{recipe.model.name_or_path} has a newer download than the one {moved[0]} used: "
                      "running it again[/yellow]")
        rerun |= rerun_set(recipe, moved[:1])
    for name in sorted(rerun):
        _start_over(recipe, name, "are set aside (--force)" if name in force else "are set aside: an earlier "
                    "stage runs again")
    # The children read the resolved recipe from here, so they run exactly what the plan showed.
    resolved = (recipe.run_dir / "recipe.yaml").resolve()
    artifacts.write_text(resolved, dump_recipe(recipe))
    fingerprints = stage_fingerprints(recipe)
    run_dir = recipe.run_dir.resolve()
    merged = run_dir / "merge"
    pace = say_how_long(recipe, fingerprints)

    def stage(name: str, fingerprint: str, args: list[str], kind: str | None = None) -> None:
        folder = recipe.run_dir / name
        if _is_done(folder, fingerprint):
            console.print(f"[green]{name}: done before with the same inputs — skipped[/green] ({folder})")
            return
        console.rule(name)
        kind = kind or name
        require_free_space(recipe.run_dir, stage_disk_bytes(recipe, kind), f"the {name} stage")
        t0 = time.time()
        trains = kind in TRAINING_STAGES
        run_stage(name, args, processes=recipe.num_processes if trains else 1, folder=folder if trains else None)
        _mark_done(folder, fingerprint, time.time() - t0, hub_revision(recipe.model.name_or_path))
        if (line := pace.finished(kind, time.time() - t0)) is not None:
            console.print(line)

    if "warmup" in recipe.stages:
        stage("warmup", fingerprints["warmup"], ["warmup", str(resolved), "--out", str(run_dir / "warmup")])
    if "merge" in recipe.stages:
        stage("merge", fingerprints["merge"], [
            "merge", "--base", recipe.model.name_or_path, "--adapter", str(run_dir / "warmup" / "adapter"),
            "--out", str(merged), "--dtype", recipe.model.dtype, "--tolerance", repr(recipe.merge.tolerance),
            "--verify-prompts", str(recipe.merge.verify_prompts)])
    flags = {"rlvr": [], "rlvr-no-warmup": ["--no-warmup"], "rlvr-random-reward": ["--random-reward"]}
    for arm in rlvr_arms(recipe):
        seed = [] if arm.seed is None else ["--seed", str(arm.seed)]
        stage(arm.name, arm_fingerprint(recipe, arm.stage, arm.seed),
              ["rlvr", str(resolved), *flags[arm.stage], *seed, "--out", str(run_dir / arm.name)], kind=arm.stage)

    results: dict[str, list[EvalResult]] = {}
    if "eval" in recipe.stages:
        console.rule("eval")
        start = {"rlvr": "warmup" if recipe.rlvr.start_from == "warmup" else "base", "rlvr-no-warmup": "base"}
        start["rlvr-random-reward"] = start["rlvr"]
        refs = {"base": recipe.model.name_or_path, "warmup": str(merged)}
        for label in eval_labels(recipe):
            arm = arm_of(label, recipe)
            if arm is None:
                # The merged warmup model is the base when the warmup adapter never moved.
                if label == "warmup" and "base" in results and adapter_is_unchanged(run_dir / "warmup" / "adapter"):
                    results[label] = reuse_results(recipe, label, "base", results["base"])
                else:
                    results[label] = evaluate_stage_model(recipe, refs[label], None, label=label)
                continue
            adapter, same_as = run_dir / arm.name / "adapter", start[arm.stage]
            if same_as in results and adapter_is_unchanged(adapter):
                results[label] = reuse_results(recipe, label, same_as, results[same_as], arm.seed)
            else:
                results[label] = evaluate_stage_model(recipe, refs[same_as], adapter, label=label, seed=arm.seed)
        write_report(recipe, results)
    console.print(f"done in {time.time() - started:.0f} s → {recipe.run_dir}")
    return results


def say_how_long(recipe: Recipe, fingerprints: dict[str, str]):
    """Before the first stage: how long the stages that will run take here, from measured figures (lowres.timing).
    Returns the Pace that re-estimates the rest as stages finish."""
    from lowres.timing import Pace, estimate, estimate_lines

    to_run, done = [], []
    for name in recipe.stages:
        if name == "eval":
            finished = all(_is_done(recipe.run_dir / "eval" / label, fingerprint)
                           for label, fingerprint in eval_fingerprints(recipe).items())
            (done if finished else to_run).append(name)
            continue
        for folder, fingerprint in _stage_rows(recipe, name, fingerprints, rlvr_arms(recipe)):
            (done if _is_done(recipe.run_dir / folder, fingerprint) else to_run).append(name)
    result, unused = estimate(recipe, to_run, done)
    for line in estimate_lines(recipe, result, unused):
        console.print(line)
    # the estimate is per stage, all of its runs together (an RLVR arm once per seed): the pace goes by run
    return Pace({name: seconds / to_run.count(name) for name, seconds in result.seconds.items()}, to_run)


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


def evaluate_stage_model(recipe: Recipe, model_ref: str, adapter: Path | None, label: str,
                         seed: int | None = None) -> list[EvalResult]:
    """Evaluate one of the run's models on every eval task, in a child process; skipped when done with
    the same inputs."""
    out_root = recipe.run_dir / "eval" / label
    fingerprint = eval_fingerprint(recipe, made_by(label), seed)
    if _is_done(out_root, fingerprint) and (out_root / "results.json").is_file():
        console.print(f"[green]eval {label}: done before with the same inputs — skipped[/green]")
        return load_results(out_root)
    t0 = time.time()
    run_stage(f"eval {label}", eval_command(recipe, model_ref, adapter, label, out_root.resolve(), seed))
    _mark_done(out_root, fingerprint, time.time() - t0, hub_revision(recipe.model.name_or_path))
    return load_results(out_root)


def unchanged_text(label: str, same_as: str) -> str:
    """Why `label`'s model is `same_as`'s model, in words (the console at eval time, and report.md)."""
    why = ("no warmup step moved it: check the warmup's learning-rate schedule and its metrics.jsonl"
           if label == "warmup" else "no GRPO step had a reward difference to learn from")
    return (f"{label}: its adapter is unchanged from initialisation ({why}), so the model is the {same_as} "
            f"model — its scores are {same_as}'s")


def reuse_results(recipe: Recipe, label: str, same_as: str, results: list[EvalResult],
                  seed: int | None = None) -> list[EvalResult]:
    """`label`'s scores when its model is `same_as`'s model unchanged: the same results, relabelled and
    written to its eval folder, instead of sampling the same model twice."""
    console.print(f"[yellow]eval {unchanged_text(label, same_as)}[/yellow]")
    out_root = recipe.run_dir / "eval" / label
    fingerprint = eval_fingerprint(recipe, made_by(label), seed)
    if _is_done(out_root, fingerprint) and (out_root / "results.json").is_file():
        return load_results(out_root)
    reused = [dataclasses.replace(r, model=label, seconds=0.0) for r in results]
    out_root.mkdir(parents=True, exist_ok=True)
    for r in results:  # the per-question samples too: the report's intervals are computed from them
        source = recipe.run_dir / "eval" / same_as / r.task / "samples.jsonl"
        if source.is_file():
            (out_root / r.task).mkdir(exist_ok=True)
            shutil.copyfile(source, out_root / r.task / "samples.jsonl")
    write_json(out_root / "results.json", [dataclasses.asdict(r) for r in reused])
    write_json(out_root / DONE, {"fingerprint": fingerprint, "seconds": 0.0, "same_as": same_as})
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
