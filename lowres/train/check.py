"""The rows an RLVR stage trains on, and the signal check before it (see lowres.signal_check for the why).

`prepare_rows` is what an RLVR stage (and `lowres check`) calls first: it picks the candidate rows, samples
the start model on them once, keeps the informative ones when `data.target.select: informative`, and runs
the signal check on the training prompts. The start model's samples are cached in
`<run>/signal-checks/<fingerprint>.json`, so the arms that share a start model (rlvr and its coin-flip
control, and every seed of them) sample it once, and `lowres check` followed by `lowres run` samples once.

The sampling happens in this process with lowres's own loop, except in a stage that trains on Unsloth
(its patched classes break that loop, desk check W1): there a `lowres check` child samples instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from lowres import artifacts
from lowres.errors import UserError
from lowres.recipe import Recipe, dump_recipe
from lowres.signal_check import (
    PromptGroup,
    SignalCheck,
    advise,
    check_subset,
    refusal_line,
    select_informative,
    summarise,
    summary_lines,
)
from lowres.ui import console

CHECK_FILE = "signal_check.json"
SELECTION_FILE = "selection.json"


def start_model(recipe: Recipe, stage: str, model_ref: str | None = None) -> tuple[str, str | None]:
    """(the model an RLVR arm starts from, the stage that made it: merge, base, or None for one given by hand)."""
    if model_ref is not None:
        return model_ref, None
    if stage == "rlvr-no-warmup" or recipe.rlvr.start_from == "base":
        return recipe.model.name_or_path, "base"
    merged = recipe.run_dir / "merge"
    if not (merged / "config.json").is_file():
        raise UserError(f"{merged}: no merged warmup model here; run the warmup and merge stages first "
                        "(lowres run), pass --model, or set rlvr.start_from: base")
    return str(merged), "merge"


def rows_per_step(recipe: Recipe) -> int:
    """Completions one process samples per GRPO step (its share of the global batch)."""
    return recipe.rlvr.per_device_train_batch_size * recipe.rlvr.gradient_accumulation_steps


def sampling_settings(recipe: Recipe):
    """GRPO's own sampling, in batches of one step's rows, seeded by the recipe's seed (not an arm's: every
    seed of an arm shares the check)."""
    from lowres.evaluate import GenerationSettings

    cfg = recipe.rlvr
    return GenerationSettings(n_samples=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                              max_new_tokens=cfg.max_completion_length, batch_size=rows_per_step(recipe),
                              chat_template=recipe.model.chat_template, seed=recipe.seed,
                              sample_dtype=cfg.rollout_dtype)


def candidate_rows(recipe: Recipe) -> list[dict]:
    """The training rows (random) or the informative selection's candidates (select_pool of them)."""
    from lowres.train.examples import training_rows

    target = recipe.data.target
    if target.select == "informative":
        return training_rows(recipe, target.select_pool or 2 * target.n_examples)
    return training_rows(recipe)


def rows_to_sample(recipe: Recipe, rows: list[dict]) -> list[dict]:
    """What the start model is sampled on: every candidate (informative), or the check's seeded subset."""
    if recipe.data.target.select == "informative":
        return rows
    return check_subset(rows, recipe.rlvr.signal_check_prompts, recipe.data.target.seed)


def row_id(row: dict, index: int) -> str:
    return str(row.get("id", f"#{index}"))


def _samples_fingerprint(recipe: Recipe, start: str, made_by: str | None, ids: list[str]) -> str:
    from lowres.fingerprint import fingerprint, model_identity, stage_fingerprints

    cfg = recipe.rlvr
    model = stage_fingerprints(recipe)[made_by] if made_by else model_identity(start)
    return fingerprint(model, ids, asdict(sampling_settings(recipe)), cfg.max_prompt_length,
                       cfg.format_reward_weight, recipe.data.target.task, recipe.model.dtype)


def sample_groups(recipe: Recipe, model_ref: str, rows: list[dict]) -> dict:
    """Sample and grade the start model's completions for `rows` in this process (see `graded_samples`)."""
    import torch

    from lowres.evaluate import HFGenerator
    from lowres.hardware import detect, rollout_dtype
    from lowres.models import load_model_and_tokenizer

    hw = detect(recipe.model.dtype, "transformers")
    model, tokenizer = load_model_and_tokenizer(model_ref, hw.torch_dtype, hw.device)
    model.eval()
    try:
        return graded_samples(HFGenerator(model, tokenizer, rollout_dtype(recipe.rlvr.rollout_dtype, hw)), tokenizer,
                              recipe, rows)
    finally:
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def graded_samples(generator, tokenizer, recipe: Recipe, rows: list[dict]) -> dict:
    """`generator(prompts, settings, description)` → per prompt, G (text, tokens, hit the cap); each graded by the
    task's GRPO reward functions. Returns the graded groups, the sampling seconds (after one untimed one-token
    warm-up: the first call pays for allocations and thread start-up) and the number of step-sized batches.
    Prompts over rlvr.max_prompt_length are left out, as the stage leaves them out."""
    import dataclasses

    from lowres.prompting import render_prompt
    from lowres.rewards import ROW_JSON, reward_functions
    from lowres.tasks import get_task

    cfg = recipe.rlvr
    task = get_task(recipe.data.target.task)
    kept, prompts = [], []
    for i, row in enumerate(rows):
        prompt = render_prompt(tokenizer, task.prompt(row), recipe.model.chat_template)
        if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= cfg.max_prompt_length:
            kept.append((row_id(row, i), row))
            prompts.append(prompt)
    settings = sampling_settings(recipe)
    if prompts:
        generator(prompts[:1], dataclasses.replace(settings, n_samples=1, max_new_tokens=1), "warm-up")
    started = time.perf_counter()
    completions = generator(prompts, settings, "signal check") if prompts else []
    seconds = time.perf_counter() - started
    funcs = list(reward_functions(task, with_format=bool(cfg.format_reward_weight)))
    weights = [1.0, cfg.format_reward_weight]
    groups = []
    for (rid, row), prompt, outs in zip(kept, prompts, completions, strict=True):
        texts = [text for text, _, _ in outs]
        columns = {ROW_JSON: [json.dumps(row, default=list)] * len(texts)}
        per_func = [f(prompts=[prompt] * len(texts), completions=texts, **columns) for f in funcs]
        rewards = [sum(w * r[i] for w, r in zip(weights, per_func, strict=False)) for i in range(len(texts))]
        groups.append(PromptGroup(rid, [bool(v is not None and v.correct) for v in funcs[0].last_verdicts], rewards,
                                  [n for _, n, _ in outs], [t for _, _, t in outs]))
    if not groups:
        raise UserError(f"every RLVR prompt is longer than rlvr.max_prompt_length={cfg.max_prompt_length}")
    batches = -(-len(prompts) * settings.n_samples // settings.batch_size)
    return {"groups": [asdict(g) for g in groups], "seconds": round(seconds, 2), "batches": batches,
            "left_out_over_max_prompt_length": len(rows) - len(kept)}


def _sample_in_child(recipe: Recipe, model_ref: str, stage: str, cache: Path) -> None:
    """`lowres check` in a child process (which never imports Unsloth), filling `cache`."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(dump_recipe(recipe))
    try:
        done = subprocess.run([sys.executable, "-m", "lowres", "check", f.name, "--stage", stage, "--model", model_ref,
                               "--samples-only", str(cache)])
    finally:
        os.unlink(f.name)
    if done.returncode != 0 or not cache.is_file():
        raise UserError(f"{stage}: the signal check's sampling failed (exit code {done.returncode}); see above, or "
                        "set rlvr.signal_check: off")


def start_model_samples(recipe: Recipe, stage: str, model_ref: str, made_by: str | None, rows: list[dict],
                        cache_to: Path | None = None, in_child: bool = False) -> dict:
    """The graded samples of the start model on `rows`, from the run's cache or sampled now (`in_child`: by a
    `lowres check` child process, for a stage that trains on Unsloth)."""
    ids = [row_id(r, i) for i, r in enumerate(rows)]
    fp = _samples_fingerprint(recipe, model_ref, made_by, ids)
    cache = cache_to or recipe.run_dir / "signal-checks" / f"{fp}.json"
    cached = artifacts.read_json(cache)
    if isinstance(cached, dict) and cached.get("fingerprint") == fp:
        return cached
    if in_child and cache_to is None:
        _sample_in_child(recipe, model_ref, stage, cache)
        data = {**artifacts.read_json(cache), "fingerprint": fp}  # the child knew the model by its path only
        artifacts.write_json(cache, data)
        return data
    console.print(f"{stage}: sampling the start model on {len(rows)} prompts × {recipe.rlvr.num_generations} "
                  "(the signal check)")
    data = {"fingerprint": fp, "start_model": model_ref, **sample_groups(recipe, model_ref, rows)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(cache, data)
    return data


def prepare_rows(recipe: Recipe, stage: str, out_dir: Path, model_ref: str | None = None,
                 run_check: bool = True, write: bool = True,
                 unsloth: bool = False) -> tuple[list[dict], SignalCheck | None]:
    """The rows the stage trains on and the signal check of them (None when off). Writes selection.json
    (informative selection) and signal_check.json to `out_dir` and shows the check (unless `write` is False:
    the other processes of a launch); with `rlvr.signal_check: refuse`, a problem stops here with one line."""
    target, cfg = recipe.data.target, recipe.rlvr
    rows = candidate_rows(recipe)
    informative = target.select == "informative"
    checking = run_check and cfg.signal_check != "off"
    if not (informative or checking):
        return rows, None
    ref, made_by = start_model(recipe, stage, model_ref)
    data = start_model_samples(recipe, stage, ref, made_by, rows_to_sample(recipe, rows), in_child=unsloth)
    groups = [PromptGroup(**g) for g in data["groups"]]
    if informative:
        kept, why = select_informative(groups, target.n_examples, target.seed)
        by_id = {row_id(r, i): r for i, r in enumerate(rows)}
        rows = [by_id[i] for i in kept]
        kept_ids = set(kept)
        groups = [g for g in groups if g.id in kept_ids]
        informative_count = sum(r["why"] == "sometimes solved" for r in why)
        if write:
            artifacts.write_json(out_dir / SELECTION_FILE, {
                "select": "informative", "candidates": len(data["groups"]), "kept": len(kept),
                "sometimes_solved": informative_count, "start_model": ref, "rows": why})
            console.print(f"{stage}: data.target.select informative: {informative_count} of {len(data['groups'])} "
                          f"candidate prompts are sometimes solved; training on {len(kept)} "
                          f"({len(kept) - informative_count} filled in) → {out_dir / SELECTION_FILE}")
    if not checking:
        return rows, None
    check = summarise(groups, stage=stage, start_model=ref, max_completion_length=cfg.max_completion_length,
                      temperature=cfg.temperature, rows_per_step=rows_per_step(recipe),
                      sampling_seconds=data["seconds"], batches=data["batches"])
    check.problems = advise(check, truncation_warn_fraction=cfg.truncation_warn_fraction,
                            learning_rate=cfg.learning_rate, max_prompt_length=cfg.max_prompt_length,
                            max_seq_length=recipe.model.max_seq_length, select=target.select)
    if write:
        artifacts.write_json(out_dir / CHECK_FILE, check.to_dict())
        for i, line in enumerate(summary_lines(check)):
            console.print(line if i or not check.problems else f"[yellow]{line}[/yellow]", highlight=False)
    if check.problems and cfg.signal_check == "refuse":
        raise UserError(refusal_line(check, out_dir / CHECK_FILE))
    return rows, check


def load_check(stage_dir: Path) -> SignalCheck | None:
    data = artifacts.read_json(Path(stage_dir) / CHECK_FILE)
    return SignalCheck.from_dict(data) if isinstance(data, dict) else None
