"""Test-wide setup: no network, a model cache that survives between local runs, and the benchmark data
(a few rows of each data set, committed under tests/fixtures; the full sets where the user names them)."""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A handful of rows per data set, in the layout the task loaders read (tests/fixtures/README.md).
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"
# The full data sets, only where the user names a copy with $LOWRES_DATA_DIR (read before it is replaced
# below): the tests that need every row run against it, and are skipped without it.
_NAMED_DATA = os.environ.get("LOWRES_DATA_DIR", "").strip()
FULL_DATA = Path(_NAMED_DATA).expanduser().resolve() if _NAMED_DATA else None
if FULL_DATA == FIXTURE_DATA:
    FULL_DATA = None
NO_FULL_DATA = "runs on the full data sets only: set LOWRES_DATA_DIR to a copy of them (tests/fixtures/README.md)"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The embedded model is converted once per cache; keep the cache in the repo's (ignored) pytest
# folder so local reruns skip the ≈20 s conversion, while a fresh CI clone starts clean.
os.environ.setdefault("LOWRES_HOME", str(REPO / ".pytest_cache" / "lowres_home"))
# Every test reads the fixtures (never the Hub, never a folder outside the checkout) unless it asks for
# the full data.
os.environ["LOWRES_DATA_DIR"] = str(FIXTURE_DATA)


_speed_at_start: float | None = None


def _matmul_gflops() -> float:
    from lowres.bench import matmul_gflops

    return matmul_gflops()


def pytest_sessionstart(session):
    # The suite's time means little without the machine's speed (these machines differ 2-3x and drift):
    # measured at the start and at the end (about a second each), printed with the summary.
    global _speed_at_start
    if not session.config.getoption("collectonly"):
        _speed_at_start = _matmul_gflops()


def pytest_terminal_summary(terminalreporter):
    if _speed_at_start is not None:
        terminalreporter.write_line(f"this machine's fp32 matmul (2048², torch's threads): {_speed_at_start:.0f} "
                                    f"GFLOP/s at the start → {_matmul_gflops():.0f} GFLOP/s at the end")


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


@dataclass(frozen=True)
class BenchmarkData:
    """A benchmark data folder (set as $LOWRES_DATA_DIR) and whether it holds the full data sets."""

    path: Path
    full: bool

    def pick(self, in_fixtures, in_full):
        """The value that holds for this data: e.g. a row count of the fixtures or of the full set."""
        return in_full if self.full else in_fixtures


@pytest.fixture(scope="session")
def embedded_model():
    """SmolLM2-135M-Instruct, loaded once for the whole session (fp32, CPU)."""
    from lowres.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("embedded:smollm2-135m")
    model.eval()
    return model, tokenizer


@pytest.fixture
def data_dir(monkeypatch) -> Path:
    """The fixture data as $LOWRES_DATA_DIR, for tests that load task data offline."""
    monkeypatch.setenv("LOWRES_DATA_DIR", str(FIXTURE_DATA))
    return FIXTURE_DATA


@pytest.fixture
def full_data(monkeypatch) -> Path:
    """The full benchmark data the user named with $LOWRES_DATA_DIR, as $LOWRES_DATA_DIR; skipped without it."""
    if FULL_DATA is None:
        pytest.skip(NO_FULL_DATA)
    if not FULL_DATA.is_dir():
        pytest.fail(f"LOWRES_DATA_DIR={FULL_DATA} is not a folder")
    monkeypatch.setenv("LOWRES_DATA_DIR", str(FULL_DATA))
    return FULL_DATA


@pytest.fixture(params=["fixtures", "full"])
def benchmark_data(request) -> BenchmarkData:
    """Runs a test on the fixtures, and again on the full data sets where the user names them."""
    if request.param == "fixtures":
        return BenchmarkData(request.getfixturevalue("data_dir"), full=False)
    return BenchmarkData(request.getfixturevalue("full_data"), full=True)


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
