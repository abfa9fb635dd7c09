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
from lowres.fingerprint import eval_fingerprint, hub_revision, stage_fingerprints
from lowres.launch import run_stage
from lowres.models import describe_model
from lowres.recipe import DEFAULT_RECIPE, TRAINING_STAGES, Recipe, dump_recipe
from lowres.report import comparison_lines, plot_comparison, plot_reward_curves, results_markdown, results_table
from lowres.train.resume import set_aside_checkpoints
from lowres.ui import console, counted

__all__ = ["DEFAULT_RECIPE", "plan", "run_recipe"]


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


def _eval_labels(recipe: Recipe) -> list[str]:
    labels = ["base"]
    if "merge" in recipe.stages:
        labels.append("warmup")
    if "rlvr" in recipe.stages:
        labels.append("rlvr")
    if "rlvr-no-warmup" in recipe.stages:
        labels.append("rlvr-no-warmup")
    return labels


# Which stage made each evaluated model.
EVAL_MADE_BY = {"base": "base", "warmup": "merge", "rlvr": "rlvr", "rlvr-no-warmup": "rlvr-no-warmup"}


def rerun_set(recipe: Recipe, force: tuple[str, ...] | list[str]) -> set[str]:
    """The stages `--force` reruns: those named and everything downstream of them. Evaluations are
    named `eval:<label>` (`--force eval` reruns every model's evaluation)."""
    for stage in force:
        if stage not in recipe.stages:
            raise UserError(f"--force {stage}: not one of this recipe's stages ({', '.join(recipe.stages)})")
    rerun = set(force)
    if "warmup" in rerun and "merge" in recipe.stages:
        rerun.add("merge")
    if ("merge" in rerun and recipe.rlvr.start_from == "warmup" and "rlvr" in recipe.stages):
        rerun.add("rlvr")
    for label in _eval_labels(recipe):
        if "eval" in rerun or EVAL_MADE_BY[label] in rerun:
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
    what = {
        "warmup": f"LoRA SFT on {recipe.data.warmup.source} traces "
                  f"({'4-bit' if recipe.warmup.load_in_4bit else '16-bit'} base); {warmup_batch_text(recipe)}",
        "merge": "merge the warmup adapter into the 16-bit base",
        "rlvr": f"GRPO on {target.n_examples} {target.task} examples from the {recipe.rlvr.start_from} model; "
                f"{rlvr_batch_text(recipe)}",
        "rlvr-no-warmup": "the same GRPO from the base model (the no-warmup baseline)",
        "eval": f"{', '.join(recipe.eval.tasks)} × {recipe.eval.n_samples} samples{limit_text}"
                + f"; models: {', '.join(_eval_labels(recipe))}",
    }
    for stage in recipe.stages:
        folder = recipe.run_dir / stage
        note = ""
        if stage in rerun:
            note = " [yellow](--force: runs again)[/yellow]"
        elif stage in fingerprints and _is_done(folder, fingerprints[stage]):
            note = " [green](done, will skip)[/green]"
        table.add_row(stage, what[stage] + note, str(folder))
    table.caption = f"model: {describe_model(recipe.model.name_or_path)}"
    if recipe.num_processes > 1:
        from lowres.hardware import MULTI_PROCESS_BACKEND

        table.caption += (f"\nwarmup and rlvr: {recipe.num_processes} processes, backend {MULTI_PROCESS_BACKEND}; "
                          "merge and eval: one process")
    return table


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
    folder = recipe.run_dir / name
    (folder / DONE).unlink(missing_ok=True)
    if name in ("warmup", "rlvr", "rlvr-no-warmup"):
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

    def stage(name: str, args: list[str]) -> None:
        folder = recipe.run_dir / name
        if _is_done(folder, fingerprints[name]):
            console.print(f"[green]{name}: done before with the same inputs — skipped[/green] ({folder})")
            return
        console.rule(name)
        require_free_space(recipe.run_dir, stage_disk_bytes(recipe, name), f"the {name} stage")
        t0 = time.time()
        run_stage(name, args, processes=recipe.num_processes if name in TRAINING_STAGES else 1)
        _mark_done(folder, fingerprints[name], time.time() - t0, hub_revision(recipe.model.name_or_path))

    if "warmup" in recipe.stages:
        stage("warmup", ["warmup", str(resolved), "--out", str(run_dir / "warmup")])
    if "merge" in recipe.stages:
        stage("merge", ["merge", "--base", recipe.model.name_or_path, "--adapter", str(run_dir / "warmup" / "adapter"),
                        "--out", str(merged), "--dtype", recipe.model.dtype,
                        "--tolerance", repr(recipe.merge.tolerance),
                        "--verify-prompts", str(recipe.merge.verify_prompts)])
    if "rlvr" in recipe.stages:
        stage("rlvr", ["rlvr", str(resolved), "--out", str(run_dir / "rlvr")])
    if "rlvr-no-warmup" in recipe.stages:
        stage("rlvr-no-warmup", ["rlvr", str(resolved), "--no-warmup", "--out", str(run_dir / "rlvr-no-warmup")])

    results: dict[str, list[EvalResult]] = {}
    if "eval" in recipe.stages:
        console.rule("eval")
        rlvr_start = str(merged) if recipe.rlvr.start_from == "warmup" else recipe.model.name_or_path
        models = {"base": (recipe.model.name_or_path, None), "warmup": (str(merged), None),
                  "rlvr": (rlvr_start, run_dir / "rlvr" / "adapter"),
                  "rlvr-no-warmup": (recipe.model.name_or_path, run_dir / "rlvr-no-warmup" / "adapter")}
        start_label = {"rlvr": "warmup" if recipe.rlvr.start_from == "warmup" else "base", "rlvr-no-warmup": "base"}
        for label in _eval_labels(recipe):
            model_ref, adapter = models[label]
            same_as = start_label.get(label)
            if same_as in results and adapter_is_unchanged(adapter):
                results[label] = reuse_results(recipe, label, same_as, results[same_as])
            else:
                results[label] = evaluate_stage_model(recipe, model_ref, adapter, label=label)
        write_report(recipe, results)
    console.print(f"done in {time.time() - started:.0f} s → {recipe.run_dir}")
    return results


def eval_command(recipe: Recipe, model_ref: str, adapter: Path | None, label: str, out_dir: Path) -> list[str]:
    """The `lowres eval` arguments that evaluate one of the run's models with the recipe's settings."""
    e = recipe.eval
    args = ["eval", model_ref, "--tasks", ",".join(e.tasks), "--n-samples", str(e.n_samples),
            "--temperature", repr(e.temperature), "--top-p", repr(e.top_p), "--max-new-tokens", str(e.max_new_tokens),
            "--batch-size", str(e.batch_size), "--chat-template", recipe.model.chat_template,
            "--seed", str(recipe.seed), "--dtype", recipe.model.dtype, "--sample-dtype", e.sample_dtype,
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


def evaluate_stage_model(recipe: Recipe, model_ref: str, adapter: Path | None, label: str) -> list[EvalResult]:
    """Evaluate one of the run's models on every eval task, in a child process; skipped when done with
    the same inputs."""
    out_root = recipe.run_dir / "eval" / label
    fingerprint = eval_fingerprint(recipe, EVAL_MADE_BY[label])
    if _is_done(out_root, fingerprint) and (out_root / "results.json").is_file():
        console.print(f"[green]eval {label}: done before with the same inputs — skipped[/green]")
        return load_results(out_root)
    t0 = time.time()
    run_stage(f"eval {label}", eval_command(recipe, model_ref, adapter, label, out_root.resolve()))
    _mark_done(out_root, fingerprint, time.time() - t0, hub_revision(recipe.model.name_or_path))
    return load_results(out_root)


def adapter_is_unchanged(adapter: Path | None) -> bool:
    """Whether a LoRA adapter is still its initialisation: every B matrix zero, so it adds nothing to the
    model. GRPO leaves it so when no step had a reward difference to learn from (every group's
    completions scored alike): the model is then exactly the one it started from."""
    if adapter is None or not (adapter / "adapter_model.safetensors").is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as weights:
        b_names = [name for name in weights.keys() if "lora_B" in name]
        return bool(b_names) and all(not weights.get_tensor(name).any() for name in b_names)


def reuse_results(recipe: Recipe, label: str, same_as: str, results: list[EvalResult]) -> list[EvalResult]:
    """`label`'s scores when its model is `same_as`'s model unchanged: the same results, relabelled and
    written to its eval folder, instead of sampling the same model twice."""
    console.print(f"eval {label}: its adapter is unchanged from initialisation (no GRPO step had a reward "
                  f"difference to learn from), so the model is the {same_as} model — its scores are {same_as}'s")
    out_root = recipe.run_dir / "eval" / label
    fingerprint = eval_fingerprint(recipe, EVAL_MADE_BY[label])
    if _is_done(out_root, fingerprint) and (out_root / "results.json").is_file():
        return load_results(out_root)
    reused = [dataclasses.replace(r, model=label, seconds=0.0) for r in results]
    out_root.mkdir(parents=True, exist_ok=True)
    write_json(out_root / "results.json", [dataclasses.asdict(r) for r in reused])
    write_json(out_root / DONE, {"fingerprint": fingerprint, "seconds": 0.0, "same_as": same_as})
    return reused


def write_report(recipe: Recipe, results: dict[str, list[EvalResult]]) -> Path:
    """The run's report: the table on screen, report.md, and PNG plots next to it."""
    console.print(results_table(results))
    run_dir = recipe.run_dir
    lines = [f"# {recipe.name}\n", f"{recipe.description}\n", f"Model: {describe_model(recipe.model.name_or_path)}\n",
             "## Accuracy (%), mean ± std over samples (share of well-formed answers)\n", results_markdown(results)]
    compared = comparison_lines(results)
    if compared:
        for line in compared:
            console.print(line.replace("**", ""))
        lines += ["## Comparisons\n", "\n".join(compared) + "\n"]
    if importlib.util.find_spec("matplotlib") is None:
        # A declared dependency, but a hand-assembled environment (e.g. an offline GPU box) may lack it.
        console.print("[yellow]plots skipped: matplotlib is not installed[/yellow]")
    else:
        plot_comparison(results, run_dir / "comparison.png")
        lines.append("![comparison](comparison.png)\n")
        arms = {"from the warmup" if recipe.rlvr.start_from == "warmup" else "from the base": run_dir / "rlvr",
                "from the base (no warmup)": run_dir / "rlvr-no-warmup"}
        curves = {label: folder / "metrics.jsonl" for label, folder in arms.items()
                  if (folder / "metrics.jsonl").is_file()}
        if curves and plot_reward_curves(curves, run_dir / "rlvr_reward.png"):
            lines.append("## RLVR\n\n![reward over steps](rlvr_reward.png)\n")
    report = run_dir / "report.md"
    artifacts.write_text(report, "\n".join(lines))
    console.print(f"report: {report}")
    return report
