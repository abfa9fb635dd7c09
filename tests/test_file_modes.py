"""What lowres writes gets the permissions the user's umask gives (0644 under umask 022), as files made
with open() do, even where it writes through a temporary file (mkstemp makes those owner-only)."""

import os
import stat
import types
from pathlib import Path

import pytest

from lowres import artifacts

UMASKS = [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]  # umask, file mode, folder mode


@pytest.fixture(params=UMASKS, ids=["umask022", "umask027"])
def umask(request):
    """Runs the test under each umask (restored afterwards); gives (file mode, folder mode)."""
    mask, file_mode, folder_mode = request.param
    old = os.umask(mask)
    try:
        yield file_mode, folder_mode
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    file_mode, folder_mode = umask
    results = artifacts.write_json(tmp_path / "results.json", {"accuracy": 0.5})
    card = artifacts.write_text(tmp_path / "README.md", "# card\n")
    rows = artifacts.write_jsonl(tmp_path / "traces.jsonl", [{"prompt": "p", "completion": "c"}])
    artifacts.write_json(tmp_path / "results.json", {"accuracy": 0.9})  # replacing a file: the same
    assert [mode(p) for p in (results, card, rows)] == [file_mode] * 3
    assert artifacts.new_file_mode() == file_mode and artifacts.new_folder_mode() == folder_mode


def test_a_folder_built_whole_follows_the_umask(tmp_path, umask):
    """An adapter, a merged model, an export or eval results: safetensors writes its files owner-only."""
    import torch
    from safetensors.torch import save_file

    file_mode, folder_mode = umask
    with artifacts.building_folder(tmp_path / "adapter") as tmp:
        artifacts.write_json(tmp / "summary.json", {"steps": 2})
        save_file({"lora_B": torch.zeros(2, 2)}, str(tmp / "adapter_model.safetensors"))
        (tmp / "tokenizer").mkdir()
        (tmp / "tokenizer" / "vocab.json").write_text("{}")
    adapter = tmp_path / "adapter"
    modes = {str(p.relative_to(adapter)): mode(p) for p in adapter.rglob("*")}
    assert mode(adapter) == folder_mode
    assert modes == {"summary.json": file_mode, "adapter_model.safetensors": file_mode, "tokenizer": folder_mode,
                     "tokenizer/vocab.json": file_mode}


def test_the_converted_embedded_model_follows_the_umask(tmp_path, umask, monkeypatch):
    """The conversion is built in a mkdtemp folder (owner-only) and renamed into the cache."""
    import transformers

    from lowres import models

    file_mode, folder_mode = umask

    class Saved:
        def save_pretrained(self, folder):  # owner-only, as safetensors writes weights
            os.close(os.open(Path(folder) / f"{type(self).__name__}.safetensors", os.O_CREAT | os.O_WRONLY, 0o600))

    class Model(Saved):
        hf_quantizer = types.SimpleNamespace(remove_quantization_config=lambda model: None)
        config = types.SimpleNamespace()
        generation_config = types.SimpleNamespace()

    class Tokenizer(Saved):
        eos_token_id = pad_token_id = 2

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Model())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer())
    dest = tmp_path / "models" / "smollm2-135m"
    models._convert_embedded(models.EMBEDDED["smollm2-135m"], dest)
    assert mode(dest) == folder_mode
    assert {p.name: mode(p) for p in dest.iterdir()} == {"Model.safetensors": file_mode,
                                                          "Tokenizer.safetensors": file_mode}


def test_trainer_checkpoints_follow_the_umask(tmp_path, umask):
    """A stage's checkpoints (runs/<name>/<stage>/checkpoints/checkpoint-N): safetensors writes the weights
    owner-only; the callback every lowres trainer gets (stage_callbacks) gives them the umask's modes."""
    import torch
    from transformers import Trainer, TrainingArguments

    from lowres.train.common import stage_callbacks

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))

        def forward(self, x, labels=None):
            return {"loss": ((self.weight * x).sum(-1) - labels).pow(2).mean()}

    rows = [{"x": torch.ones(2), "labels": torch.tensor(1.0)}] * 4
    out = tmp_path / "checkpoints"
    args = TrainingArguments(str(out), max_steps=2, save_steps=1, per_device_train_batch_size=2, report_to="none",
                             use_cpu=True, disable_tqdm=True, logging_steps=1)
    trainer = Trainer(model=Tiny(), args=args, train_dataset=rows)
    stage_callbacks(trainer)
    trainer.train()
    file_mode, folder_mode = umask
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-1", "checkpoint-2"]
    assert any(p.suffix == ".safetensors" for p in checkpoints[0].iterdir())  # the file safetensors makes 0600
    modes = {p: mode(p) for c in checkpoints for p in [c, *c.rglob("*")]}
    assert modes == {p: folder_mode if p.is_dir() else file_mode for p in modes}
