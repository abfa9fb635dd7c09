"""`lowres run`: a recipe's stages in order, each writing to runs/<recipe>/<stage>/.

Each stage runs in its own child process — the same `lowres warmup/merge/rlvr/eval` a user can call
by hand — so GPU memory, vLLM engines and Unsloth's class patches end with the stage (lowres.launch).
A stage that finished with the same inputs and settings is skipped (its folder holds a `done.json`
with a fingerprint of what it was made from); a stage that was interrupted resumes from its last
checkpoint. Evaluation scores every model the run has — the base, the merged warmup model and the
RLVR model — on the same questions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import time
from pathlib import Path

from rich.table import Table

from lowres.evaluate import EvalResult, load_results
from lowres.launch import run_stage
from lowres.models import describe_model
from lowres.recipe import DEFAULT_RECIPE, Recipe, dump_recipe
from lowres.report import plot_comparison, plot_training_curve, results_markdown, results_table
from lowres.ui import console

__all__ = ["DEFAULT_RECIPE", "plan", "run_recipe"]


def _fingerprint(*parts) -> str:
    text = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_fingerprints(recipe: Recipe) -> dict[str, str]:
    """What each stage's output depends on; a change anywhere upstream changes it."""
    base = _fingerprint(recipe.model, recipe.seed)
    warmup = _fingerprint(base, recipe.data.warmup, recipe.warmup)
    merge = _fingerprint(warmup, recipe.merge)
    rlvr_start = merge if recipe.rlvr.start_from == "warmup" else base
    rlvr = _fingerprint(rlvr_start, recipe.data.target, recipe.rlvr)
    return {"base": base, "warmup": warmup, "merge": merge, "rlvr": rlvr}


def _is_done(folder: Path, fingerprint: str) -> bool:
    marker = folder / "done.json"
    try:
        return json.loads(marker.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _mark_done(folder: Path, fingerprint: str, seconds: float) -> None:
    (folder / "done.json").write_text(json.dumps({"fingerprint": fingerprint, "seconds": round(seconds, 1)}))


def plan(recipe: Recipe) -> Table:
    """What `run` would do, without loading anything."""
    table = Table(title=f"plan: {recipe.name} ({recipe.source})", title_justify="left")
    for column in ("stage", "what", "output"):
        table.add_column(column)
    target = recipe.data.target
    fingerprints = stage_fingerprints(recipe)
    what = {
        "warmup": f"LoRA SFT on {recipe.data.warmup.source} traces "
                  f"({'4-bit' if recipe.warmup.load_in_4bit else '16-bit'} base)",
        "merge": "merge the warmup adapter into the 16-bit base",
        "rlvr": f"GRPO on {target.n_examples} {target.task} examples from the {recipe.rlvr.start_from} model",
        "eval": f"{', '.join(recipe.eval.tasks)} × {recipe.eval.n_samples} samples"
                + (f", {recipe.eval.limit} questions" if recipe.eval.limit else "")
                + f"; models: {', '.join(_eval_labels(recipe))}",
    }
    for stage in recipe.stages:
        folder = recipe.run_dir / stage
        cached = stage in fingerprints and _is_done(folder, fingerprints[stage])
        table.add_row(stage, what[stage] + (" [green](done, will skip)[/green]" if cached else ""), str(folder))
    table.caption = f"model: {describe_model(recipe.model.name_or_path)}"
    return table


def _eval_labels(recipe: Recipe) -> list[str]:
    labels = ["base"]
    if "merge" in recipe.stages:
        labels.append("warmup")
    if "rlvr" in recipe.stages:
        labels.append("rlvr")
    return labels


def run_recipe(recipe: Recipe) -> dict[str, list[EvalResult]]:
    """Run the recipe's stages in order, each in its own child process (see lowres.launch); returns
    eval results by model label (base, warmup, rlvr). Fingerprints and done markers stay here."""
    started = time.time()
    console.print(plan(recipe))
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    # The children read the resolved recipe from here, so they run exactly what the plan showed.
    resolved = (recipe.run_dir / "recipe.yaml").resolve()
    resolved.write_text(dump_recipe(recipe))
    fingerprints = stage_fingerprints(recipe)
    run_dir = recipe.run_dir.resolve()
    merged = run_dir / "merge"

    def stage(name: str, args: list[str]) -> None:
        folder = recipe.run_dir / name
        if _is_done(folder, fingerprints[name]):
            console.print(f"[green]{name}: done before with the same inputs — skipped[/green] ({folder})")
            return
        console.rule(name)
        t0 = time.time()
        run_stage(name, args)
        _mark_done(folder, fingerprints[name], time.time() - t0)

    if "warmup" in recipe.stages:
        stage("warmup", ["warmup", str(resolved), "--out", str(run_dir / "warmup")])
    if "merge" in recipe.stages:
        stage("merge", ["merge", "--base", recipe.model.name_or_path, "--adapter", str(run_dir / "warmup" / "adapter"),
                        "--out", str(merged), "--dtype", recipe.model.dtype,
                        "--tolerance", repr(recipe.merge.tolerance),
                        "--verify-prompts", str(recipe.merge.verify_prompts)])
    if "rlvr" in recipe.stages:
        stage("rlvr", ["rlvr", str(resolved), "--out", str(run_dir / "rlvr")])

    results: dict[str, list[EvalResult]] = {}
    if "eval" in recipe.stages:
        console.rule("eval")
        rlvr_start = str(merged) if recipe.rlvr.start_from == "warmup" else recipe.model.name_or_path
        models = {"base": (recipe.model.name_or_path, None), "warmup": (str(merged), None),
                  "rlvr": (rlvr_start, run_dir / "rlvr" / "adapter")}
        for label in _eval_labels(recipe):
            results[label] = evaluate_stage_model(recipe, *models[label], label=label)
        write_report(recipe, results)
    console.print(f"done in {time.time() - started:.0f} s → {recipe.run_dir}")
    return results


def eval_command(recipe: Recipe, model_ref: str, adapter: Path | None, label: str, out_dir: Path) -> list[str]:
    """The `lowres eval` arguments that evaluate one of the run's models with the recipe's settings."""
    e = recipe.eval
    args = ["eval", model_ref, "--tasks", ",".join(e.tasks), "--n-samples", str(e.n_samples),
            "--temperature", repr(e.temperature), "--top-p", repr(e.top_p), "--max-new-tokens", str(e.max_new_tokens),
            "--batch-size", str(e.batch_size), "--chat-template", recipe.model.chat_template,
            "--seed", str(recipe.seed), "--dtype", recipe.model.dtype, "--label", label, "--out", str(out_dir),
            "--no-table"]
    if e.limit:
        args += ["--limit", str(e.limit)]
    if adapter is not None:
        args += ["--adapter", str(adapter)]
    return args


def evaluate_stage_model(recipe: Recipe, model_ref: str, adapter: Path | None, label: str) -> list[EvalResult]:
    """Evaluate one of the run's models on every eval task, in a child process; skipped when done with
    the same inputs."""
    out_root = recipe.run_dir / "eval" / label
    made_by = {"base": "base", "warmup": "merge", "rlvr": "rlvr"}[label]
    fingerprint = _fingerprint(stage_fingerprints(recipe)[made_by], recipe.eval)
    if _is_done(out_root, fingerprint) and (out_root / "results.json").is_file():
        console.print(f"[green]eval {label}: done before with the same inputs — skipped[/green]")
        return load_results(out_root)
    t0 = time.time()
    run_stage(f"eval {label}", eval_command(recipe, model_ref, adapter, label, out_root.resolve()))
    _mark_done(out_root, fingerprint, time.time() - t0)
    return load_results(out_root)


def write_report(recipe: Recipe, results: dict[str, list[EvalResult]]) -> Path:
    """The run's report: the table on screen, report.md, and PNG plots next to it."""
    console.print(results_table(results))
    run_dir = recipe.run_dir
    lines = [f"# {recipe.name}\n", f"{recipe.description}\n", f"Model: {describe_model(recipe.model.name_or_path)}\n",
             "## Accuracy (%), mean ± std over samples (share of well-formed answers)\n", results_markdown(results)]
    if importlib.util.find_spec("matplotlib") is None:
        # A declared dependency, but a hand-assembled environment (e.g. an offline GPU box) may lack it.
        console.print("[yellow]plots skipped: matplotlib is not installed[/yellow]")
    else:
        plot_comparison(results, run_dir / "comparison.png")
        lines.append("![comparison](comparison.png)\n")
        metrics = run_dir / "rlvr" / "metrics.jsonl"
        if metrics.is_file() and plot_training_curve(metrics, run_dir / "rlvr_reward.png",
                                                     ("reward", "frac_reward_zero_std")):
            lines.append("## RLVR\n\n![reward over steps](rlvr_reward.png)\n")
    report = run_dir / "report.md"
    report.write_text("\n".join(lines))
    console.print(f"report: {report}")
    return report
