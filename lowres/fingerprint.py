"""What a stage's output depends on, as a short hash: the stage fingerprint.

`lowres run` skips a stage whose folder holds a done marker with the same fingerprint, and a training
stage resumes only from checkpoints made under the same fingerprint (lowres.train.resume). So a
fingerprint must change whenever the output would: the recipe's settings for the stage and every
stage before it, the *contents* of the files it reads (warmup traces, target data, plugin code —
hashed, the hash cached by size and modification time so a large file is read once), the model
(a local folder's weight files by size and modification time; a hub model's revision is recorded in
the done marker and compared there, see `hub_revision`), and the lowres version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lowres import __version__
from lowres.artifacts import read_json, write_json
from lowres.models import EMBEDDED_PREFIX, lowres_home
from lowres.recipe import RLVR_ARMS, Recipe

# Files in a model folder that decide what the model computes.
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".gguf", ".txt")


def fingerprint(*parts: Any) -> str:
    """A short stable hash of dataclasses, dicts, lists and strings."""
    text = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digest_cache() -> Path:
    return lowres_home() / "file-digests.json"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's contents, cached by (path, size, mtime) in $LOWRES_HOME."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = read_json(_digest_cache()) or {}
    if key in cache:
        return cache[key]
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    digest = sha.hexdigest()
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}  # drop stale entries
    cache[key] = digest
    try:
        _digest_cache().parent.mkdir(parents=True, exist_ok=True)
        write_json(_digest_cache(), cache)
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return digest


def file_identity(path: str | None) -> dict | None:
    """A data or code file as the fingerprint sees it: its contents' hash (None: no file given)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        return {"path": str(path), "missing": True}
    return {"path": str(path), "sha256": file_digest(p)}


def model_identity(ref: str) -> dict:
    """The model a recipe names. A local folder: its weight and config files by size and mtime
    (hashing gigabytes on every plan would be slow); embedded: the name (its conversion is fixed per
    lowres version); a hub id: the id (the revision is checked against the done marker)."""
    if ref.startswith(EMBEDDED_PREFIX):
        return {"embedded": ref}
    folder = Path(ref).expanduser()
    if folder.is_dir():
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                       if p.is_file() and p.name.endswith(_MODEL_FILE_SUFFIXES))
        return {"folder": str(folder.resolve()), "files": files}
    return {"hub": ref}


def hub_revision(ref: str) -> str | None:
    """The commit of a hub model in the local Hugging Face cache (what a load would use), if any."""
    if ref.startswith(EMBEDDED_PREFIX) or Path(ref).expanduser().exists() or ref.count("/") != 1:
        return None
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    refs = Path(HF_HUB_CACHE) / ("models--" + ref.replace("/", "--")) / "refs" / "main"
    try:
        return refs.read_text().strip() or None
    except OSError:
        return None


def _plugins_identity(recipe: Recipe) -> list:
    return [file_identity(p) if p.endswith(".py") else p for p in recipe.plugins]


def _tasks_identity(recipe: Recipe) -> list:
    """The recipe's tasks: each spec and the contents of its local train and test files."""
    return [(name, dataclasses.asdict(spec), *(None if src is None or src.startswith("hf:") else file_identity(src)
                           for src in (spec.train, spec.test)))
            for name, spec in sorted(recipe.tasks.items())]


def stage_fingerprints(recipe: Recipe) -> dict[str, str]:
    """Fingerprints of base, warmup, merge, rlvr and rlvr-no-warmup; a change anywhere upstream changes them."""
    base = fingerprint(__version__, model_identity(recipe.model.name_or_path), recipe.model, recipe.seed)
    warm_data = recipe.data.warmup
    # With several processes the global batch, and so the training, is another: a run resumes only with
    # the process count it started with. (One process adds nothing, so older fingerprints stay valid.)
    processes = (recipe.num_processes,) if recipe.num_processes != 1 else ()
    # warmup.load_in_4bit auto counts as what it resolves to here (a recipe that says true or false, or the
    # former default true on a GPU, keeps its fingerprint).
    from lowres.hardware import resolve_load_in_4bit

    warmup_cfg = dataclasses.replace(recipe.warmup, load_in_4bit=resolve_load_in_4bit(recipe.warmup.load_in_4bit)[0])
    warmup = fingerprint(base, warm_data, warmup_cfg,
                         None if warm_data.source == "kk-solver" else file_identity(warm_data.source), *processes)
    merge = fingerprint(warmup, recipe.merge)
    target = recipe.data.target
    # The training rows are chosen disjoint from the questions the eval scores, so those count too.
    eval_overlap = (target.task in recipe.eval.tasks, recipe.eval.limit_for(target.task))

    # Where a vLLM server listens does not change what it samples.
    rlvr = dataclasses.replace(recipe.rlvr, vllm_server_host="", vllm_server_port=1)

    def rlvr_from(start: str) -> str:
        return fingerprint(start, target, file_identity(target.path), os.environ.get("LOWRES_DATA_DIR"),
                           _plugins_identity(recipe), eval_overlap, rlvr, *_task_parts(recipe), *processes)

    rlvr_fp = rlvr_from(merge if recipe.rlvr.start_from == "warmup" else base)
    return {"base": base, "warmup": warmup, "merge": merge, "rlvr": rlvr_fp, "rlvr-no-warmup": rlvr_from(base),
            "rlvr-random-reward": fingerprint(rlvr_fp, "coin-flip reward")}


def arm_fingerprint(recipe: Recipe, stage: str, seed: int | None = None) -> str:
    """A GRPO arm's fingerprint: its stage's, and the seed it runs with when the recipe lists `seeds`."""
    stage_fp = stage_fingerprints(recipe)[stage]
    return stage_fp if seed is None else fingerprint(stage_fp, {"seed": seed})


def eval_fingerprint(recipe: Recipe, made_by: str, seed: int | None = None) -> str:
    """One model's evaluation: the fingerprint of the stage (arm) that made the model, and the eval settings."""
    made = (stage_fingerprints(recipe)[made_by] if made_by in ("base", "merge")
            else arm_fingerprint(recipe, made_by, seed))
    return fingerprint(made, recipe.eval, _plugins_identity(recipe), os.environ.get("LOWRES_DATA_DIR"),
                       *_task_parts(recipe))


def _task_parts(recipe: Recipe) -> tuple:
    """Extra fingerprint parts for a recipe's `tasks:`; none without them, so the fingerprints of recipes
    that define no tasks stay what they were (their finished stages are not run again)."""
    return (_tasks_identity(recipe),) if recipe.tasks else ()


# ---------------------------------------------------------------- the models a run makes and scores


@dataclasses.dataclass(frozen=True)
class Arm:
    """One GRPO run of the recipe: an RLVR stage, with one of the recipe's `seeds` (None: the recipe's seed)."""

    stage: str
    seed: int | None = None

    @property
    def name(self) -> str:
        """Its folder under the run, and its model's label in the report."""
        return self.stage if self.seed is None else f"{self.stage}-seed{self.seed}"


def rlvr_arms(recipe: Recipe) -> list[Arm]:
    return [Arm(stage, seed) for stage in RLVR_ARMS if stage in recipe.stages for seed in (recipe.seeds or [None])]


def arm_of(label: str, recipe: Recipe) -> Arm | None:
    return next((arm for arm in rlvr_arms(recipe) if arm.name == label), None)


def eval_labels(recipe: Recipe) -> list[str]:
    """The models the eval stage scores: base, the merged warmup, then each RLVR arm (per seed)."""
    labels = ["base"]
    if "merge" in recipe.stages:
        labels.append("warmup")
    return labels + [arm.name for arm in rlvr_arms(recipe)]


def made_by(label: str) -> str:
    """The stage that made an evaluated model (an arm's label is its stage, and -seed<N> with seeds)."""
    return {"base": "base", "warmup": "merge"}.get(label) or label.partition("-seed")[0]


def eval_fingerprints(recipe: Recipe) -> dict[str, str]:
    """Each evaluated model's fingerprint (its eval settings and data, the stage that made it, its seed)."""
    fingerprints = {}
    for label in eval_labels(recipe):
        arm = arm_of(label, recipe)
        fingerprints[label] = eval_fingerprint(recipe, made_by(label), None if arm is None else arm.seed)
    return fingerprints
