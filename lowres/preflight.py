"""Everything about a recipe that can be checked before any work: `lowres validate`, `run --dry-run`
and the start of `run`, `warmup`, `rlvr` and `bench` call `check_recipe`; `warmup` and `rlvr` first call
`require_stage` (the recipe lists the stage they run, or --force).

The recipe parser (lowres.recipe) checks the file's shape: keys, types, ranges, stage order. This
checks what the recipe points at: task names, the model, the data files (they exist and their rows
parse), and the output folder — each as one line naming the key and what to fix, in seconds, so a
typo in `eval.tasks` fails now rather than after an hour of training.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from pathlib import Path

from lowres.artifacts import output_folder
from lowres.errors import UserError
from lowres.models import EMBEDDED, EMBEDDED_PREFIX, check_model_folder
from lowres.recipe import Recipe, RecipeError
from lowres.tasks.data import datasets_cache, hub_dataset_cached

# owner/name as the Hub spells repository ids (a bare name is an old-style id, e.g. gpt2).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def _blame(recipe: Recipe, where: str, problem: str) -> RecipeError:
    return RecipeError(f"{recipe.source}: {where}: {problem}", where, problem)


_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's and datasets' true values


def offline_variable(datasets: bool = False) -> str | None:
    """The environment variable that makes the Hugging Face libraries offline (None: online), read now, as a
    stage's process reads it when it starts: HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE (huggingface_hub's
    rule); for datasets, HF_DATASETS_OFFLINE decides when it is set."""
    if datasets and os.environ.get("HF_DATASETS_OFFLINE") is not None:
        return "HF_DATASETS_OFFLINE" if os.environ["HF_DATASETS_OFFLINE"].strip().upper() in _TRUE else None
    name = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    return name if os.environ.get(name, "").strip().upper() in _TRUE else None


def hub_model_cache_problem(ref: str) -> str | None:
    """Why the Hub model `ref` cannot be loaded from the Hugging Face cache alone (None: it can): no cached
    snapshot, or one without a readable config and whole weights."""
    from huggingface_hub import constants, snapshot_download

    try:
        folder = snapshot_download(ref, local_files_only=True)
    except Exception:  # LocalEntryNotFoundError, or an id the cache cannot hold
        return f"{ref} is not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    try:
        check_model_folder(Path(folder), ref)
    except UserError as e:
        return f"{ref} is only partly in the Hugging Face cache ({e})"
    return None


def check_model_ref(ref: str) -> str | None:
    """What is wrong with a model reference, or None: an embedded name we ship, an existing model
    folder, or something shaped like a Hub id — one that is in the Hugging Face cache when the Hub is
    offline."""
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
    offline = offline_variable()
    if offline:
        problem = hub_model_cache_problem(ref)
        if problem:
            return (f"{problem} and {offline} is set, so it cannot be downloaded; download it where there is "
                    f"network (hf download {ref}) or set model.name_or_path to a local model folder (config.json "
                    "and the weights)")
    return None


def check_hub_dataset(source: str, config: str | None, key: str) -> str | None:
    """What is wrong with a task spec's hf: source (recipe key `key`), or None: a local folder (hf:/path)
    that exists, or a Hub dataset — prepared in the datasets cache when the Hub is offline."""
    name = source[len("hf:"):].strip()
    local = Path(name).expanduser()
    if local.is_dir():
        return None
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not _HUB_ID.match(name):
        return (f"{source}: no such folder {local}, and not a Hugging Face dataset id (owner/name); set {key} to a "
                "local .jsonl, .csv or .parquet file, or to hf:<a folder of data files>")
    offline = offline_variable(datasets=True)
    if offline and not hub_dataset_cached(name, config):
        return (f"{source} is not in the datasets cache ({datasets_cache()}) and {offline} is set, so it cannot be "
                f"downloaded; set {key} to a local .jsonl, .csv or .parquet file, or to hf:/path/to/a/folder of "
                "data files")
    return None


def _check_task(recipe: Recipe, where: str, name: str) -> None:
    from lowres.tasks import get_task

    try:
        get_task(name)
    except UserError as e:
        raise _blame(recipe, where, str(e)) from None


def _check_spec_tasks(recipe: Recipe, stages: list[str]) -> None:
    """The sources of the recipe's `tasks:` that a stage uses: local files exist and every row has the fields
    (a bad row is named by file and line); an hf: folder exists, and an hf: dataset can be had (offline: it is
    in the datasets cache). hf: rows are read when the stage runs."""
    used = set(recipe.eval.tasks) if "eval" in stages else set()
    if "rlvr" in stages or "rlvr-no-warmup" in stages:
        used.add(recipe.data.target.task)
    from lowres.tasks import get_task

    for name, spec in recipe.tasks.items():
        if name not in used:
            continue
        for key, split in (("train", "train"), ("test", "test")):
            source = getattr(spec, key)
            if source is not None and source.startswith("hf:"):
                problem = check_hub_dataset(source, spec.hf_config, f"tasks.{name}.{key}")
                if problem:
                    raise _blame(recipe, f"tasks.{name}.{key}", problem)
                continue
            if source is None:
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
    if "rlvr" in training and recipe.rlvr.load_in_4bit and hw.device == "cpu":
        # bitsandbytes repacks a CPU 4-bit layer for inference the first time GRPO samples from it, and the
        # repacked layer then fails the training step (a traceback in matmul_4bit).
        raise _blame(recipe, "rlvr.load_in_4bit", "bitsandbytes' 4-bit layers cannot train after sampling on a CPU; "
                     "set rlvr.load_in_4bit: false here (4-bit saves GPU memory)")
    int8_elsewhere = hw.device != "cpu" or hw.backend != "transformers"
    if "rlvr" in training and recipe.rlvr.rollout_dtype == "int8" and int8_elsewhere:
        raise _blame(recipe, "rlvr.rollout_dtype", f"int8 rollouts run lowres's own sampling loop on a CPU; this "
                     f"machine trains on {hw.device} with the {hw.backend} backend: set auto (vLLM or bf16 on a "
                     "GPU)")
    if hw.backend == "unsloth" and "rlvr" in training:
        for key in ("rollout_dtype", "loss_dtype"):
            if getattr(recipe.rlvr, key) == "bf16":
                raise _blame(recipe, f"rlvr.{key}", "bf16 applies to lowres's own GRPO loop (transformers backend); "
                             "Unsloth's trainer ignores it: set auto, or model.backend: transformers")


def require_stage(recipe: Recipe, stage: str) -> None:
    """A one-line UserError when `recipe` does not list `stage`: its settings may be the defaults, sized for a
    GPU, rather than any the user chose. rlvr --no-warmup and --random-reward (the rlvr-no-warmup and
    rlvr-random-reward arms) run the rlvr section, so a recipe listing rlvr gives them their settings."""
    listed = stage in recipe.stages or (stage in ("rlvr-no-warmup", "rlvr-random-reward") and "rlvr" in recipe.stages)
    if listed:
        return
    where = f"{recipe.source}: stages: {stage} is not one of this recipe's stages ({', '.join(recipe.stages)})"
    if stage == "warmup":
        w, data = recipe.warmup, recipe.data.warmup
        settings = (f"data.warmup.source {data.source}"
                    + (f", data.warmup.n_puzzles {data.n_puzzles}" if data.source == "kk-solver" else "")
                    + f", warmup.num_train_epochs {w.num_train_epochs:g}, warmup.max_steps {w.max_steps}, "
                      f"warmup.load_in_4bit {w.load_in_4bit}")
        sections = "warmup: and data.warmup:"
    else:
        r, target = recipe.rlvr, recipe.data.target
        settings = (f"data.target.task {target.task}, data.target.n_examples {target.n_examples}, rlvr.max_steps "
                    f"{r.max_steps}, rlvr.num_train_epochs {r.num_train_epochs:g}, rlvr.num_generations "
                    f"{r.num_generations}, rlvr.max_completion_length {r.max_completion_length}")
        sections = "rlvr: and data.target:"
        if stage in ("rlvr-no-warmup", "rlvr-random-reward"):
            flag = "--no-warmup" if stage == "rlvr-no-warmup" else "--random-reward"
            where += f" and neither is rlvr, whose settings {flag} runs"
            stage = "rlvr"
    raise UserError(f"{where}; it would train with {settings} (the defaults, sized for a GPU, where the recipe sets "
                    f"nothing); add {stage} to stages with the {sections} settings you want, or pass --force to train "
                    "with these")


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
