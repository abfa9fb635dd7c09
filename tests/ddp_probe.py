"""A recipe plugin for the multi-process tests (tests/test_distributed.py). Every process of a launch
imports it with the recipe, and it records in $LOWRES_PROBE_DIR/rank<N>.jsonl what that process trained
on (the trainer's class and a hash of each micro-batch's rows) and which files it wrote through
lowres.artifacts. It registers no task."""

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import transformers

from lowres import artifacts

LOG = Path(os.environ["LOWRES_PROBE_DIR"]) / f"rank{os.environ.get('RANK', '0')}.jsonl"


def _record(kind: str, value) -> None:
    with LOG.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "value": value}) + "\n")


def _digest(item) -> str:
    return hashlib.sha256(repr(item).encode()).hexdigest()[:12]


def _rows(inputs) -> list[str]:
    """One digest per training row: GRPO's trainer gets the dataset rows (prompts), SFT's a tokenised batch."""
    if isinstance(inputs, list):
        return [_digest(row["prompt"]) for row in inputs]
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    return [_digest(row[m.bool()].tolist()) for row, m in zip(ids, mask, strict=True)]


_training_step = transformers.Trainer.training_step


def training_step(self, model, inputs, *args, **kwargs):
    _record(type(self).__name__, _rows(inputs))
    return _training_step(self, model, inputs, *args, **kwargs)


transformers.Trainer.training_step = training_step


def _writer(original):
    def write(path, *args, **kwargs):
        _record("wrote", str(Path(path).resolve()))
        return original(path, *args, **kwargs)

    return write


def _folder_builder(original):
    @contextlib.contextmanager
    def build(folder, *args, **kwargs):
        _record("wrote", str(Path(folder).resolve()))
        with original(folder, *args, **kwargs) as tmp:
            yield tmp

    return build


# Every name lowres writes through, in lowres.artifacts and wherever a module imported it already.
_patched = {name: (_folder_builder if name == "building_folder" else _writer)(getattr(artifacts, name))
            for name in ("write_text", "write_json", "write_jsonl", "append_jsonl", "building_folder")}
for module in [m for name, m in sys.modules.items() if name.startswith("lowres")]:
    for name, wrapped in _patched.items():
        if getattr(module, name, None) is getattr(artifacts, name):
            setattr(module, name, wrapped)
for name, wrapped in _patched.items():
    setattr(artifacts, name, wrapped)
