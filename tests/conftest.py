"""Test-wide setup: no network, and a model cache that survives between local runs."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Benchmark data shipped beside the checkout (../shared/data); CI has it too.
SHARED_DATA = Path(os.environ.get("LOWRES_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The embedded model is converted once per cache; keep the cache in the repo's (ignored) pytest
# folder so local reruns skip the ≈20 s conversion, while a fresh CI clone starts clean.
os.environ.setdefault("LOWRES_HOME", str(REPO / ".pytest_cache" / "lowres_home"))
# Tasks read the benchmark data from here instead of the hub (offline).
if SHARED_DATA.is_dir():
    os.environ.setdefault("LOWRES_DATA_DIR", str(SHARED_DATA))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are collected everywhere and skipped where there is no CUDA GPU."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded_model():
    """SmolLM2-135M-Instruct, loaded once for the whole session (fp32, CPU)."""
    from lowres.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("embedded:smollm2-135m")
    model.eval()
    return model, tokenizer


@pytest.fixture
def data_dir(monkeypatch, shared_data) -> Path:
    """The benchmark data as $LOWRES_DATA_DIR, for tests that load task data offline."""
    monkeypatch.setenv("LOWRES_DATA_DIR", str(shared_data))
    return shared_data


@pytest.fixture
def greedy_matches_generate():
    """A check: lowres.decode's greedy tokens equal transformers' `generate`, row by row, on a left-
    padded batch of prompts of different lengths (cut at the first EOS, as lowres stops there)."""
    import torch

    from lowres.decode import sample_batch

    def check(model, tokenizer, prompts: list[str], max_new_tokens: int, reference=None) -> None:
        """reference: the model `generate` runs on (default: `model`)."""
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        ours = sample_batch(model, enc["input_ids"], enc["attention_mask"], max_new_tokens,
                            {tokenizer.eos_token_id}, temperature=0)
        with torch.no_grad():
            theirs = (reference or model).generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        width = enc["input_ids"].shape[1]
        for row, ids in zip(theirs, ours, strict=True):
            reference = row[width:].tolist()
            if tokenizer.eos_token_id in reference:
                reference = reference[:reference.index(tokenizer.eos_token_id) + 1]
            assert ids == reference

    return check
