"""`lowres bench`: will this recipe fit, how long will it take, and how much faster is Unsloth here?
Measured with a few real optimizer steps of each stage, not estimated from formulas.

For each backend, each of the recipe's stages runs as a child process (the same `lowres warmup /
merge / rlvr / eval` commands `lowres run` starts) with its step count cut to `steps + 1`: the first
step (kernel compilation, allocator warm-up) is not timed, the median of the others is. The recipe's
whole wall time is then extrapolated per stage: the cut stage's wall time (start-up, loading, the
first step, saving) plus the remaining steps at the median step time; evaluation is timed on a few
questions of the base model and scaled to the recipe's questions and models. Out of GPU memory is
caught: the stage "does not fit", with the settings that lower memory.

`model_config` replaces the recipe's model with a randomly initialised one of a real shape (speed
and memory depend on the shape, not on the weights), so a 3B run can be sized without a download.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowres.errors import OutOfMemory, UserError
from lowres.estimate import KNOWN_SHAPES
from lowres.hardware import matmul_gflops  # noqa: F401 - lowres.bench.matmul_gflops, the yardstick
from lowres.launch import INTERRUPTED, StageFailed, run_stage
from lowres.recipe import STAGES, TRAINING_STAGES, Recipe, dump_recipe, recipe_from_dict
from lowres.ui import console, counted, duration

# Shapes for --model-config: the Qwen2.5 configs (as in their config.json), and a tiny one for tests.
MODEL_CONFIGS = {
    "qwen2.5-0.5b": KNOWN_SHAPES["Qwen/Qwen2.5-0.5B"],
    "qwen2.5-1.5b": KNOWN_SHAPES["Qwen/Qwen2.5-1.5B"],
    "qwen2.5-3b": KNOWN_SHAPES["Qwen/Qwen2.5-3B"],
    "qwen2.5-7b": KNOWN_SHAPES["Qwen/Qwen2.5-7B"],
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 256, "vocab_size": 49152, "tie_word_embeddings": True},
}
UNTIMED_STEPS = 1
NOT_FIT_HINTS = {
    "warmup": "halve warmup.per_device_train_batch_size and double warmup.gradient_accumulation_steps (same "
              "batch), lower model.max_seq_length, or set warmup.load_in_4bit: true",
    "rlvr": "halve rlvr.per_device_train_batch_size and double rlvr.gradient_accumulation_steps (same batch), "
            "lower rlvr.max_completion_length or rlvr.num_generations, or set rlvr.load_in_4bit: true",
    "rlvr-no-warmup": "the same as for rlvr (it runs rlvr's settings from the base model)",
    "rlvr-random-reward": "the same as for rlvr (it runs rlvr's settings with a coin-flip reward)",
    "merge": "merge on a larger GPU, or on the CPU (it needs the 16-bit model in memory once)",
    "eval": "lower eval.batch_size or eval.max_new_tokens",
}


@dataclass
class StageFigures:
    backend: str
    stage: str
    status: str = "ok"                          # ok | does not fit | crashed
    wall_seconds: float | None = None           # the cut stage, start to end of its process
    steps_timed: int = 0
    step_seconds: float | None = None           # median over the timed steps
    train_tokens_per_second: float | None = None
    generation_tokens_per_second: float | None = None  # GRPO rollouts
    peak_memory: dict = field(default_factory=dict)
    # GRPO: the largest share of a step's groups whose rewards were all equal, and the smallest share of a
    # step's rows in the forward and backward (logged by the transformers backend, which leaves out rows
    # whose advantage is 0; Unsloth's loss takes every row). 0 and 1: both backends train the same rows.
    zero_variance_share: float | None = None
    rows_trained_share: float | None = None
    steps_in_recipe: int | None = None
    extrapolated_seconds: float | None = None   # this stage of the real recipe
    note: str = ""


def random_model(config_name: str) -> Path:
    """A randomly initialised Qwen2-architecture model of a shipped shape, with the embedded model's
    tokenizer; made once and cached under $LOWRES_HOME/bench-models."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from lowres.models import lowres_home, resolve_model

    if config_name not in MODEL_CONFIGS:
        raise UserError(f"--model-config {config_name}: choose one of {', '.join(MODEL_CONFIGS)}")
    folder = lowres_home() / "bench-models" / config_name
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The real vocabulary size (the embedding and lm_head cost it), the tokenizer's token ids.
    config = Qwen2Config(**MODEL_CONFIGS[config_name], max_position_embeddings=32768,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    # Built in bf16 on the CPU: the stages load it themselves, and a model built on the GPU would keep the
    # conductor's share of GPU memory reserved while they run (and a 7B in fp32 would not fit at all).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with console.status(f"building a random {config_name} model"), torch.device("cpu"):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)
    return folder


def cut_recipe(recipe: Recipe, backend: str, steps: int, workdir: Path) -> Recipe:
    """The recipe with each training stage cut to `steps` timed steps, logging every step, saving no
    checkpoints, on the given backend, writing under `workdir`."""
    raw = recipe.to_dict()
    overrides = [f"name=bench-{backend}", f"output.dir={workdir}", f"model.backend={backend}"]
    for stage in ("warmup", "rlvr"):
        overrides += [f"{stage}.max_steps={steps + UNTIMED_STEPS}", f"{stage}.save_steps=1000000",
                      f"{stage}.logging_steps=1"]
    overrides.append("rlvr.stop_after_constant_reward_steps=0")
    return recipe_from_dict(raw, recipe.source, overrides)


def _records(metrics: Path) -> list[dict]:
    # Per-step records; the closing one (train_loss, train_runtime…) is not a step.
    return [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r and "train_loss" not in r]


def step_figures(metrics: Path, rows_per_step: int | None = None) -> dict:
    """Median step time and tokens/s over the logged steps after the untimed first one."""
    records = _records(metrics)
    pairs = list(zip(records, records[1:], strict=False))
    if not pairs:
        return {}
    seconds = [b["time"] - a["time"] for a, b in pairs]
    figures = {"steps_timed": len(seconds), "step_seconds": round(statistics.median(seconds), 3)}
    key = "num_input_tokens_seen" if "num_input_tokens_seen" in records[-1] else "num_tokens"
    rates = [(b[key] - a[key]) / s for (a, b), s in zip(pairs, seconds, strict=True) if s > 0 and key in a]
    if rates:
        figures["train_tokens_per_second"] = round(statistics.median(rates), 1)
    generation = [r["completions/mean_length"] * rows_per_step / r["timing/generation_seconds"]
                  for r in records[1:] if rows_per_step and r.get("timing/generation_seconds")]
    if generation:
        figures["generation_tokens_per_second"] = round(statistics.median(generation), 1)
    for key, name, pick in (("frac_reward_zero_std", "zero_variance_share", max),
                            ("rows_in_backward_share", "rows_trained_share", min)):
        values = [r[key] for r in records if key in r]
        if values:
            figures[name] = round(pick(values), 3)
    return figures


def warmup_steps(recipe: Recipe, train_examples: int) -> int:
    """Optimizer steps of the real warmup (transformers' count for num_train_epochs)."""
    cfg = recipe.warmup
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(math.ceil(train_examples / cfg.per_device_train_batch_size)
                          / cfg.gradient_accumulation_steps)
    return math.ceil(cfg.num_train_epochs * per_epoch)


def rlvr_steps(recipe: Recipe, prompts: int) -> int:
    """Optimizer steps of the real GRPO run: each prompt is sampled num_generations times, and a step
    takes per_device_train_batch_size × gradient_accumulation_steps completions."""
    cfg = recipe.rlvr
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(prompts * cfg.num_generations / (cfg.per_device_train_batch_size
                                                          * cfg.gradient_accumulation_steps))
    return math.ceil(cfg.num_train_epochs * per_epoch)


def _timed(stage: str, args: list[str]) -> float:
    started = time.monotonic()
    run_stage(stage, args)
    return time.monotonic() - started


def _training_stage(cut: Recipe, real: Recipe, backend: str, stage: str, resolved: Path, model_ref: str,
                    out: Path) -> StageFigures:
    row = StageFigures(backend, stage)
    args = [stage, str(resolved), "--out", str(out)] + (["--model", model_ref] if stage == "rlvr" else [])
    if stage == "rlvr-no-warmup":  # the same GRPO from the base model: the baseline's own child command
        args = ["rlvr", str(resolved), "--no-warmup", "--out", str(out)]
    if stage == "rlvr-random-reward":  # the coin-flip control, from the same (base) model as the timed rlvr
        args = ["rlvr", str(resolved), "--random-reward", "--model", model_ref, "--out", str(out)]
    if stage != "warmup":
        # Every row trains on both backends (Unsloth's loss takes them all; transformers skips rows whose
        # advantage is 0, which a random model's constant task reward makes of every row), and the task's
        # signal check stays out of the stage's time and peak memory.
        args.append("--timing-reward")
    row.wall_seconds = round(_timed(f"bench {stage} ({backend})", args), 1)
    summary = json.loads((out / "summary.json").read_text())
    rows_per_step = cut.rlvr.per_device_train_batch_size * cut.rlvr.gradient_accumulation_steps
    for key, value in step_figures(out / "metrics.jsonl", None if stage == "warmup" else rows_per_step).items():
        setattr(row, key, value)
    row.peak_memory = summary.get("peak_memory") or {}
    if stage == "warmup":
        row.steps_in_recipe = warmup_steps(real, summary["train_examples"])
    else:
        row.steps_in_recipe = rlvr_steps(real, summary["train_examples"])
    if row.step_seconds is not None:
        remaining = max(row.steps_in_recipe - summary["steps"], 0)
        row.extrapolated_seconds = round(row.wall_seconds + remaining * row.step_seconds, 1)
        if stage != "warmup" and len(real.seeds) > 1:  # each RLVR arm runs once per seed
            row.extrapolated_seconds = round(row.extrapolated_seconds * len(real.seeds), 1)
            row.note = f"× {len(real.seeds)} seeds"
    return row


def _eval_stage(cut: Recipe, real: Recipe, backend: str, model_ref: str, out: Path) -> StageFigures:
    """Time the base model's evaluation on enough questions to fill one batch, and scale it to the
    recipe's questions and to each model the run evaluates."""
    from lowres.pipeline import eval_command, eval_labels
    from lowres.tasks import get_task

    row = StageFigures(backend, "eval")
    e = real.eval
    questions = {name: len(get_task(name).load("test", limit=e.limit_for(name), seed=real.seed)) for name in e.tasks}
    sample = max(1, min(min(questions.values()), math.ceil(e.batch_size / e.n_samples)))
    args = eval_command(cut, model_ref, None, "base", out)
    if "--limit" in args:
        args[args.index("--limit") + 1] = str(sample)
    else:
        args += ["--limit", str(sample)]
    row.wall_seconds = round(_timed(f"bench eval ({backend})", args), 1)
    results = json.loads((out / "results.json").read_text())
    generating = sum(r["seconds"] for r in results)
    per_model = row.wall_seconds - generating + sum(
        r["seconds"] / r["n_questions"] * questions[r["task"]] for r in results)
    models = len(eval_labels(real))
    row.steps_in_recipe = models
    row.extrapolated_seconds = round(per_model * models, 1)
    row.note = f"timed on {sample} question(s) of the base model; {sum(questions.values())} per model"
    if "rlvr-no-warmup" in real.stages:  # an upper bound: an unchanged baseline adapter reuses the base's scores
        row.note += "; counts the no-warmup model, whose scores are the base's when its GRPO never updated"
    return row


def bench_backend(recipe: Recipe, backend: str, steps: int, stages: list[str], workdir: Path,
                  on_row=lambda row: None) -> list[StageFigures]:
    """Measure each of `stages` for one backend; a stage that runs out of GPU memory is reported as
    not fitting, one whose process fails otherwise as crashed, and what depends on it is skipped.
    `on_row` sees each row as it is measured."""
    cut = cut_recipe(recipe, backend, steps, workdir)
    cut.run_dir.mkdir(parents=True, exist_ok=True)
    resolved = (cut.run_dir / "recipe.yaml").resolve()
    resolved.write_text(dump_recipe(cut))
    run_dir = cut.run_dir.resolve()
    base = recipe.model.name_or_path
    rows: list[StageFigures] = []
    for stage in stages:
        if stage == "merge" and not (run_dir / "warmup" / "adapter").is_dir():
            continue
        try:
            if stage in TRAINING_STAGES:
                row = _training_stage(cut, recipe, backend, stage, resolved, base, run_dir / stage)
            elif stage == "merge":
                row = StageFigures(backend, "merge", steps_in_recipe=1)
                row.wall_seconds = row.extrapolated_seconds = round(_timed(f"bench merge ({backend})", [
                    "merge", "--base", base, "--adapter", str(run_dir / "warmup" / "adapter"),
                    "--out", str(run_dir / "merge"), "--dtype", recipe.model.dtype]), 1)
                shutil.rmtree(run_dir / "merge", ignore_errors=True)  # a whole model: do not keep it
            else:
                row = _eval_stage(cut, recipe, backend, base, run_dir / "eval")
        except StageFailed as failed:
            if failed.exit_code == INTERRUPTED:  # Ctrl-C (or a time limit) stops the whole bench
                raise
            if failed.exit_code == OutOfMemory.exit_code:
                row = StageFigures(backend, stage, status="does not fit",
                                   note=f"out of GPU memory; {NOT_FIT_HINTS[stage]}{_static_need(cut, stage)}")
            else:  # recorded, so that the other stages and the other backend are still measured
                row = StageFigures(backend, stage, status="crashed", note=str(failed))
        rows.append(row)
        on_row(row)
    return rows


def _static_need(recipe: Recipe, stage: str) -> str:
    """The dry run's weights + LoRA-state figure for the stage (what no batch setting lowers)."""
    from lowres.estimate import describe

    line = next((line for line in describe(recipe) if line.startswith(f"{stage} on")), None)
    return "" if line is None else f" (weights and LoRA state alone: {line.split(': ', 1)[1].split(' for ')[0]})"


def backends_for(choice: str) -> list[str]:
    """The backends to measure; a one-line error when one cannot run on this machine."""
    from lowres.hardware import detect

    if choice == "auto":
        return [detect().backend]
    chosen = ["unsloth", "transformers"] if choice == "both" else [choice]
    for backend in chosen:
        detect(requested_backend=backend)  # raises a UserError naming what is missing
    return chosen


def bench(recipe: Recipe, *, steps: int = 3, stages: list[str] | None = None, backend: str = "auto",
          model_config: str | None = None, workdir: Path | None = None, on_report=lambda report: None) -> dict:
    """Run the measurements; returns the report (what `--json` writes). `on_report` sees the report so far
    after each stage, so a run cut short keeps what it measured."""
    from lowres import __version__
    from lowres.hardware import detect, package_versions
    from lowres.timing import stage_keys

    if steps < 1:
        raise UserError("--steps must be at least 1")
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise UserError(f"--stages: no stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    stages = [s for s in recipe.stages if stages is None or s in stages]
    if not stages:
        raise UserError(f"--stages: none of them is in the recipe's stages ({', '.join(recipe.stages)})")
    backends = backends_for(backend)
    if model_config:
        recipe = recipe_from_dict(recipe.to_dict(), recipe.source,
                                  [f"model.name_or_path={random_model(model_config)}"])
    hw = detect(recipe.model.dtype)
    report = {
        "lowres": __version__, "recipe": recipe.name, "source": recipe.source, "model": recipe.model.name_or_path,
        "model_config": model_config, "fingerprints": stage_keys(recipe), "steps_timed": steps,
        "hardware": {"device": hw.device, "gpu": hw.gpu_name, "vram_gib": hw.vram_gb, "dtype": hw.dtype,
                     "matmul_fp32_gflops": round(matmul_gflops(), 1)},
        "versions": package_versions(), "stages": [], "extrapolated_recipe_seconds": {},
    }
    rows: list[StageFigures] = []

    def measured(row: StageFigures) -> None:
        rows.append(row)
        report["stages"] = [dataclasses.asdict(r) for r in rows]
        on_report(report)

    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="lowres-bench-"))
    try:
        first = bench_backend(recipe, backends[0], steps, stages, workdir / backends[0], measured)
        # Merge and evaluation do not use the training backend: measured once, shown for each.
        shared = [r for r in first if r.stage in ("merge", "eval")]
        for other in backends[1:]:
            bench_backend(recipe, other, steps, [s for s in stages if s in TRAINING_STAGES], workdir / other,
                          measured)
            for row in shared:
                measured(dataclasses.replace(row, backend=other))
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    for b in backends:
        mine = [r for r in rows if r.backend == b]
        fits = all(r.status == "ok" for r in mine) and all(r.extrapolated_seconds is not None for r in mine)
        report["extrapolated_recipe_seconds"][b] = round(sum(r.extrapolated_seconds for r in mine), 1) if fits else None
    on_report(report)
    return report


def report_table(report: dict):
    from rich.table import Table

    hw = report["hardware"]
    where = hw["gpu"] or f"{hw['device']} ({hw['matmul_fp32_gflops']} GFLOP/s fp32 matmul)"
    table = Table(title=f"lowres bench: {report['recipe']} on {where}", title_justify="left")
    for column in ("backend", "stage", "step", "train tok/s", "gen tok/s", "peak memory", "steps", "estimate"):
        table.add_column(column, no_wrap=column in ("backend", "stage"))
    for r in report["stages"]:
        memory = r["peak_memory"]
        peak = memory.get("gpu_allocated_gib", memory.get("rss_gib"))
        kind = "GPU" if "gpu_allocated_gib" in memory else "RSS"
        if r["status"] != "ok":
            table.add_row(r["backend"], r["stage"], f"[red]{r['status']}[/red]", "", "", "", "", "")
            continue
        table.add_row(
            r["backend"], r["stage"], "-" if r["step_seconds"] is None else f"{r['step_seconds']:.2f} s",
            "-" if r["train_tokens_per_second"] is None else f"{r['train_tokens_per_second']:.0f}",
            "-" if r["generation_tokens_per_second"] is None else f"{r['generation_tokens_per_second']:.0f}",
            "-" if peak is None else f"{kind} {peak:.1f} GiB",
            "-" if r["steps_in_recipe"] is None else
            counted(r["steps_in_recipe"], "model") if r["stage"] == "eval" else str(r["steps_in_recipe"]),
            duration(r["extrapolated_seconds"]))
    return table


def summary_lines(report: dict) -> list[str]:
    lines = []
    for r in report["stages"]:
        if r["status"] != "ok":
            lines.append(f"[red]{r['backend']} {r['stage']}: {r['status']}[/red] — {r['note']}")
    for backend, total in report["extrapolated_recipe_seconds"].items():
        if total is not None:
            lines.append(f"whole recipe on {backend}: ≈ {duration(total)} here")
    if {"unsloth", "transformers"} <= set(report["extrapolated_recipe_seconds"]):
        for stage in ("warmup", "rlvr"):
            pair = {r["backend"]: r for r in report["stages"] if r["stage"] == stage and r["status"] == "ok"}
            if len(pair) < 2 or not pair["unsloth"]["step_seconds"]:
                continue
            faster = pair["transformers"]["step_seconds"] / pair["unsloth"]["step_seconds"]
            mem_u = pair["unsloth"]["peak_memory"].get("gpu_allocated_gib")
            mem_t = pair["transformers"]["peak_memory"].get("gpu_allocated_gib")
            saving = f", {100 * (1 - mem_u / mem_t):.0f}% less peak memory" if mem_u and mem_t else ""
            lines.append(f"{stage}: unsloth {faster:.2f}× the speed of transformers+PEFT{saving}")
    return lines
