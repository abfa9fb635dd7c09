"""The run plan: what `lowres run` will do, decided once, before anything runs.

`make_plan(recipe, force)` reads the recipe, the run folder's done markers and the time figures
(lowres.timing), and returns a RunPlan: every stage run in order (an RLVR arm once per seed of `seeds`)
and every model's evaluation, each a Step with its fingerprint (lowres.fingerprint), its status — done
(skipped), new, stale (with the settings that changed since it ran) or forced (`--force`, or an earlier
step runs again) —, what it reads and writes, and its time estimate. `lowres run --dry-run` prints it,
`pipeline.execute` runs it, and neither computes a fingerprint the plan holds.

A done marker (`done.json` in a step's folder) records the fingerprint a step finished with and the
settings it ran with, so a stale step can say which of them changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from lowres.artifacts import read_json, write_json
from lowres.errors import UserError
from lowres.fingerprint import (
    arm_fingerprint,
    eval_fingerprint,
    eval_labels,
    fingerprint,
    hub_revision,
    made_by,
    rlvr_arms,
    stage_fingerprints,
)
from lowres.models import describe_model
from lowres.recipe import RLVR_ARMS, Recipe
from lowres.ui import counted, duration

DONE = "done.json"

# The settings each kind of step depends on (recipe keys, and everything under them), for saying which of
# them changed when a step is stale. The fingerprint decides staleness; this only names the cause.
_MODEL = ("model", "seed", "num_processes")
_WARMUP = (*_MODEL, "data.warmup", "warmup")
_GRPO = ("data.target", "rlvr", "eval.tasks", "eval.limit", "plugins", "tasks", "seeds")
SETTINGS_OF = {"warmup": _WARMUP, "merge": (*_WARMUP, "merge"), "rlvr": (*_WARMUP, "merge", *_GRPO),
               "rlvr-no-warmup": (*_MODEL, *_GRPO), "eval": None}  # eval: every setting
SETTINGS_OF["rlvr-random-reward"] = SETTINGS_OF["rlvr"]


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing `lowres run` does: a stage run, or one model's evaluation."""

    name: str                  # warmup, merge, rlvr, rlvr-seed1, ...; an evaluation: eval:<model label>
    kind: str                  # warmup | merge | rlvr | rlvr-no-warmup | rlvr-random-reward | eval
    what: str                  # in words, for the plan's table
    folder: Path               # what it writes
    reads: tuple[str, ...]     # the models, adapters and data it starts from
    fingerprint: str
    status: str                # new | done | stale | forced
    why: str                   # the status's reason, in words
    seconds: float | None      # the time estimate on this machine (None: no figure, or done)
    seed: int | None = None    # an RLVR arm's seed from the recipe's `seeds` (its evaluation samples with it)
    label: str | None = None   # an evaluation: the model it scores

    @property
    def runs(self) -> bool:
        return self.status != "done"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    recipe: Recipe
    steps: tuple[Step, ...]
    notes: tuple[str, ...]          # what the table's caption adds (rich markup)
    time_lines: tuple[str, ...]     # the time estimate, and what it rests on
    estimated: dict[str, float]     # kind -> seconds for one run of it, where there is a figure

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def table(self) -> Table:
        """The plan as `lowres run` prints it."""
        recipe = self.recipe
        table = Table(title=f"plan: {recipe.name} ({recipe.source})", title_justify="left")
        for column in ("step", "what", "time", "output"):
            table.add_column(column)
        for s in self.steps:
            table.add_row(s.name, s.what + _status_note(s), "—" if s.seconds is None else duration(s.seconds),
                          str(s.folder))
        table.caption = "\n".join(self.notes)
        return table

    def to_dict(self) -> dict:
        """The plan as data (`lowres run --dry-run --json`)."""
        return {"recipe": self.recipe.name, "source": str(self.recipe.source), "run_dir": str(self.run_dir),
                "steps": [{**dataclasses.asdict(s), "folder": str(s.folder), "reads": list(s.reads)}
                          for s in self.steps],
                "time": list(self.time_lines)}


def _status_note(step: Step) -> str:
    if step.status == "done":
        return " [green](done, will skip)[/green]"
    if step.status == "forced":
        return " [yellow](--force: runs again)[/yellow]" if step.why.startswith("--force") else \
            f" [yellow](runs again: {escape(step.why)})[/yellow]"
    if step.status == "stale":
        return f" [yellow](stale: {escape(step.why)}; runs again)[/yellow]"
    return ""


# ---------------------------------------------------------------- done markers

def done_record(folder: Path) -> dict | None:
    record = read_json(Path(folder) / DONE)
    return record if isinstance(record, dict) else None


def is_done(folder: Path, fingerprint: str) -> bool:
    record = done_record(folder)
    return record is not None and record.get("fingerprint") == fingerprint


def mark_done(step: Step, recipe: Recipe, seconds: float, **extra: Any) -> None:
    """The step's done marker: its fingerprint, how long it took, the model revision and its settings."""
    write_json(step.folder / DONE, {"fingerprint": step.fingerprint, "seconds": round(seconds, 1),
                                    "model_revision": hub_revision(recipe.model.name_or_path),
                                    "settings": stage_settings(recipe, step.kind), **extra})


def flat_settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe's settings as {"rlvr.learning_rate": 2e-4, ...}."""
    flat: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            flat[key] = value

    walk(recipe.to_dict(), "")
    return flat


def stage_settings(recipe: Recipe, kind: str) -> dict[str, Any]:
    """The settings a kind of step depends on (SETTINGS_OF)."""
    keys = SETTINGS_OF.get(kind)
    return {k: v for k, v in flat_settings(recipe).items()
            if keys is None or any(k == p or k.startswith(p + ".") for p in keys)}


def changed_settings(recipe: Recipe, kind: str, record: dict) -> str:
    """Why a step done under another fingerprint is stale: the settings that changed, in words."""
    before = record.get("settings")
    if isinstance(before, dict):
        now = stage_settings(recipe, kind)
        changed = [k for k in sorted(set(now) | set(before)) if now.get(k) != before.get(k)]
        if changed:
            shown = ", ".join(f"{k} {before.get(k)!r} → {now.get(k)!r}" for k in changed[:3])
            return f"changed since it ran: {shown}" + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return "its inputs changed since it ran (a setting, a data or plugin file, the model's files, or lowres's version)"


# ---------------------------------------------------------------- the plan

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


def _starts_from_merge(recipe: Recipe, stage: str) -> bool:
    return stage in ("rlvr", "rlvr-random-reward") and recipe.rlvr.start_from == "warmup"


def _revision_moved(recipe: Recipe) -> str | None:
    """The first stage done with a hub model whose cached revision has moved since (a newer download)."""
    now = hub_revision(recipe.model.name_or_path)
    if now is None:
        return None
    return next((s for s in ("warmup", "merge", "rlvr") if s in recipe.stages
                 and (done_record(recipe.run_dir / s) or {}).get("model_revision") not in (None, now)), None)


def make_plan(recipe: Recipe, force: tuple[str, ...] | list[str] = (), gflops=None) -> RunPlan:
    """What `lowres run` will do (see the module's docstring); loads no model and downloads nothing.
    gflops: the yardstick the time estimate measures (lowres.timing.estimate)."""
    from lowres.timing import estimate, estimate_lines

    run_dir = recipe.run_dir
    named = ", ".join(force)
    forced = {name: f"--force {named}" if name in force or (name.startswith("eval:") and "eval" in force)
              else f"an earlier step runs again with --force {named}" for name in rerun_set(recipe, force)}
    moved = _revision_moved(recipe)
    if moved:
        why = f"{recipe.model.name_or_path} has a newer download than the one {moved} used"
        forced.update({name: why for name in rerun_set(recipe, [moved]) if name not in forced})
    fingerprints = stage_fingerprints(recipe)
    what, notes = _descriptions(recipe)
    start = {"rlvr": "warmup" if recipe.rlvr.start_from == "warmup" else "base", "rlvr-no-warmup": "base"}
    start["rlvr-random-reward"] = start["rlvr"]
    models = {"base": recipe.model.name_or_path, "warmup": str(run_dir / "merge")}

    drafts: list[dict] = []

    def add(name: str, kind: str, folder: Path, fingerprint: str, reads: tuple[str, ...], done_also: bool = True,
            **fields: Any) -> None:
        record = done_record(folder)
        if name in forced or kind in forced and kind != "eval":
            status, why = "forced", forced.get(name) or forced[kind]
        elif record is not None and record.get("fingerprint") == fingerprint and done_also:
            status, why = "done", "done before with the same inputs"
        elif record is not None and record.get("fingerprint") not in (None, fingerprint):
            status, why = "stale", changed_settings(recipe, kind, record)
        else:
            status, why = "new", "not run yet"
        drafts.append(dict(name=name, kind=kind, folder=folder, fingerprint=fingerprint, reads=reads, status=status,
                           why=why, **fields))

    if "warmup" in recipe.stages:
        source = recipe.data.warmup.source
        add("warmup", "warmup", run_dir / "warmup", fingerprints["warmup"],
            (recipe.model.name_or_path, "the K&K solver's traces" if source == "kk-solver" else source),
            what=what["warmup"])
    if "merge" in recipe.stages:
        add("merge", "merge", run_dir / "merge", fingerprints["merge"],
            (recipe.model.name_or_path, str(run_dir / "warmup" / "adapter")), what=what["merge"])
    for arm in rlvr_arms(recipe):
        add(arm.name, arm.stage, run_dir / arm.name, arm_fingerprint(recipe, arm.stage, arm.seed),
            (models[start[arm.stage]], recipe.data.target.path or f"task {recipe.data.target.task}"),
            what=what[arm.stage] + (f"; seed {arm.seed}" if arm.seed is not None else ""), seed=arm.seed)
    if "eval" in recipe.stages:
        arms = {arm.name: arm for arm in rlvr_arms(recipe)}
        for label in eval_labels(recipe):
            arm = arms.get(label)
            seed = None if arm is None else arm.seed
            reads = ((models[label],) if arm is None
                     else (models[start[arm.stage]], str(run_dir / arm.name / "adapter")))
            folder = run_dir / "eval" / label
            add(f"eval:{label}", "eval", folder, eval_fingerprint(recipe, made_by(label), seed), reads,
                done_also=(folder / "results.json").is_file(), what=f"{what['eval']}: the {label} model", seed=seed,
                label=label)

    # The time estimate: the kinds that will run, one entry per run (an RLVR arm per seed, eval per model).
    # (eval's figure is for all its models: counted once, and shared by those that run)
    to_run = [d["kind"] for d in drafts if d["status"] != "done"]
    done = list(dict.fromkeys(d["kind"] for d in drafts if d["status"] == "done" and d["kind"] not in to_run))
    # What each stage's time depends on, for matching measured figures: its fingerprint (eval: all models').
    keys = {**fingerprints, "eval": fingerprint(*(d["fingerprint"] for d in drafts if d["kind"] == "eval"))}
    stage_runs = [kind for i, kind in enumerate(to_run) if kind != "eval" or "eval" not in to_run[:i]]
    result, unused = estimate(recipe, stage_runs, done, gflops=gflops, keys=keys)
    estimated = {kind: seconds / to_run.count(kind) for kind, seconds in result.seconds.items()}
    steps = tuple(Step(**d, seconds=estimated.get(d["kind"]) if d["status"] != "done" else None) for d in drafts)
    return RunPlan(recipe, steps, tuple(notes), tuple(estimate_lines(recipe, result, unused)), estimated)


def _descriptions(recipe: Recipe) -> tuple[dict[str, str], list[str]]:
    """What each kind of step does, in words, and the notes under the plan's table."""
    from lowres.hardware import resolve_load_in_4bit

    target = recipe.data.target
    limit = recipe.eval.limit
    limit_text = (f", {limit} questions" if isinstance(limit, int)
                  else ", questions " + ", ".join(f"{t}: {n}" for t, n in limit.items()) if limit else "")
    four_bit, four_bit_why = resolve_load_in_4bit(recipe.warmup.load_in_4bit)
    notes: list[str] = []
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
        "eval": f"{', '.join(recipe.eval.tasks)} × {recipe.eval.n_samples} samples{limit_text}",
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
    if rlvr_arms(recipe):  # which seed GRPO gets, so an empty `seeds:` says what it means
        notes.append(f"GRPO seeds {', '.join(map(str, recipe.seeds))}: each RLVR arm runs once per seed" if recipe.seeds
                     else f"GRPO seed {recipe.seed} (seeds: [], so each RLVR arm runs once, with seed)")
    notes.insert(0, f"model: {describe_model(recipe.model.name_or_path)}")
    if recipe.num_processes > 1:
        from lowres.hardware import MULTI_PROCESS_BACKEND

        notes.append(f"warmup and rlvr: {recipe.num_processes} processes, backend {MULTI_PROCESS_BACKEND}; "
                     "merge and eval: one process")
    return what, notes


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
