"""Everything about a recipe that can be checked before any work: `lowres validate`, `run --dry-run`
and the start of `run`, `warmup`, `rlvr` and `bench` call `check_recipe`.

The recipe parser (lowres.recipe) checks the file's shape: keys, types, ranges, stage order. This
checks what the recipe points at: task names, the model, the data files (they exist and their rows
parse), and the output folder — each as one line naming the key and what to fix, in seconds, so a
typo in `eval.tasks` fails now rather than after an hour of training.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path

from lowres.artifacts import output_folder
from lowres.errors import UserError
from lowres.models import EMBEDDED, EMBEDDED_PREFIX, check_model_folder
from lowres.recipe import Recipe, RecipeError

# owner/name as the Hub spells repository ids (a bare name is an old-style id, e.g. gpt2).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def _blame(recipe: Recipe, where: str, problem: str) -> RecipeError:
    return RecipeError(f"{recipe.source}: {where}: {problem}", where, problem)


def check_model_ref(ref: str) -> str | None:
    """What is wrong with a model reference, or None: an embedded name we ship, an existing model
    folder, or something shaped like a Hub id."""
    if ref.startswith(EMBEDDED_PREFIX):
        name = ref[len(EMBEDDED_PREFIX):]
        if name in EMBEDDED:
            return None
        close = difflib.get_close_matches(name, list(EMBEDDED), n=1)
        hint = f"did you mean {EMBEDDED_PREFIX}{close[0]}?" if close else \
            "embedded models: " + ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED)
        return f"no embedded model {name!r}; {hint}"
    path = Path(ref).expanduser()
    if path.exists():
        try:
            check_model_folder(path, ref)
        except UserError as e:
            return str(e)
        return None
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or not _HUB_ID.match(ref):
        return f"no such folder {ref}, and not a Hugging Face Hub id (owner/name)"
    return None


def _check_task(recipe: Recipe, where: str, name: str) -> None:
    from lowres.tasks import get_task

    try:
        get_task(name)
    except UserError as e:
        raise _blame(recipe, where, str(e)) from None


def _check_spec_tasks(recipe: Recipe, stages: list[str]) -> None:
    """The local files of the recipe's `tasks:` that a stage uses: they exist and every row has the fields
    (a bad row is named by file and line); hf: sources are read when the stage runs."""
    used = set(recipe.eval.tasks) if "eval" in stages else set()
    if "rlvr" in stages or "rlvr-no-warmup" in stages:
        used.add(recipe.data.target.task)
    from lowres.tasks import get_task

    for name, spec in recipe.tasks.items():
        if name not in used:
            continue
        for key, split in (("train", "train"), ("test", "test")):
            source = getattr(spec, key)
            if source is None or source.startswith("hf:"):
                continue
            try:
                get_task(name).load(split)
            except UserError as e:
                raise _blame(recipe, f"tasks.{name}.{key}", str(e)) from None


def _check_backend_settings(recipe: Recipe, stages: list[str]) -> None:
    """Settings the training backend this machine gives the recipe cannot honour: refused now, in one line,
    rather than silently ignored (the unsloth backend) or failing at the first optimizer step (8-bit
    optimizers without CUDA)."""
    from lowres.hardware import detect
    from lowres.recipe import CUDA_ONLY_OPTIMIZERS

    training = [s for s in ("warmup", "rlvr") if s in stages or (s == "rlvr" and "rlvr-no-warmup" in stages)]
    if not training:
        return
    hw = detect(recipe.model.dtype, recipe.model.backend, recipe.num_processes)
    for stage in training:
        optim = getattr(recipe, stage).optim
        if optim in CUDA_ONLY_OPTIMIZERS and hw.device != "cuda":
            raise _blame(recipe, f"{stage}.optim", f"{optim} is bitsandbytes' 8-bit optimizer and needs a CUDA GPU; "
                         f"this machine trains on {hw.device} (use adamw_torch_fused)")
    if hw.backend == "unsloth" and "rlvr" in training:
        for key in ("rollout_dtype", "loss_dtype"):
            if getattr(recipe.rlvr, key) == "bf16":
                raise _blame(recipe, f"rlvr.{key}", "bf16 applies to lowres's own GRPO loop (transformers backend); "
                             "Unsloth's trainer ignores it: set auto, or model.backend: transformers")


def check_recipe(recipe: Recipe, also: tuple[str, ...] = ()) -> None:
    """Raise a one-line RecipeError for the first thing in `recipe` that cannot work. also: stages to check
    besides the recipe's own (a stage command run with --force on a recipe that does not list it)."""
    stages = [*recipe.stages, *(s for s in also if s not in recipe.stages)]
    if "rlvr-no-warmup" in stages and "rlvr" not in stages:  # the baseline runs the rlvr stage's settings
        stages.append("rlvr")
    problem = check_model_ref(recipe.model.name_or_path)
    if problem:
        raise _blame(recipe, "model.name_or_path", problem)
    if "rlvr" in stages:
        _check_task(recipe, "data.target.task", recipe.data.target.task)
    if "eval" in stages:
        for i, name in enumerate(recipe.eval.tasks):
            _check_task(recipe, f"eval.tasks[{i}]", name)
    _check_spec_tasks(recipe, stages)
    source = recipe.data.warmup.source
    if "warmup" in stages and source != "kk-solver":
        from lowres.tasks.data import read_trace_file

        if not Path(source).expanduser().is_file():
            raise _blame(recipe, "data.warmup.source", f"no such file {source} (or use kk-solver)")
        try:
            read_trace_file(Path(source).expanduser())
        except UserError as e:
            raise _blame(recipe, "data.warmup.source", str(e)) from None
    target = recipe.data.target
    if "rlvr" in stages and target.path is not None:
        from lowres.tasks import get_task

        if not Path(target.path).expanduser().is_file():
            raise _blame(recipe, "data.target.path", f"no such file {target.path}")
        kwargs = {"category": target.category} if target.category else {}
        try:
            get_task(target.task).load("train", path=target.path, **kwargs)
        except UserError as e:
            raise _blame(recipe, "data.target.path", str(e)) from None
    if "rlvr" in stages and recipe.rlvr.vllm in ("colocate", "server") and importlib.util.find_spec("vllm") is None:
        raise _blame(recipe, "rlvr.vllm", f"{recipe.rlvr.vllm} needs vLLM in this environment (pip install vllm, on a "
                     "CUDA machine), or set rlvr.vllm: auto")
    for tracker, modules, install in (("tensorboard", ("tensorboard", "tensorboardX"), "tensorboard"),
                                      ("wandb", ("wandb",), "wandb")):
        if tracker in recipe.output.report_to and not any(importlib.util.find_spec(m) for m in modules):
            raise _blame(recipe, "output.report_to", f"{tracker} is not installed: pip install {install} "
                                                      "(or remove it from report_to)")
    _check_backend_settings(recipe, stages)
    try:
        output_folder(recipe.run_dir, "run folder", create=False)
    except UserError as e:
        raise _blame(recipe, "output.dir", str(e)) from None
