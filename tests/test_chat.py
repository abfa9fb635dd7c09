"""`lowres chat`: which model a run folder means, how a conversation is rendered, and a piped prompt answered
by the embedded model."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from lowres.chat import render_conversation, resolve_chat_model
from lowres.cli import cli


def run_folder(tmp_path: Path, *made: str) -> Path:
    from lowres.recipe import bundled_recipes

    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(bundled_recipes()["demo"].read_text())
    for path in made:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text("{}")
    return folder


def test_a_run_folder_means_its_final_model(tmp_path):
    folder = run_folder(tmp_path)
    assert resolve_chat_model(str(folder)).model_ref == "embedded:smollm2-135m"
    (folder / "merge").mkdir()
    (folder / "merge" / "config.json").write_text("{}")
    chosen = resolve_chat_model(str(folder))
    assert (chosen.model_ref, chosen.adapter) == (str(folder / "merge"), None)
    (folder / "rlvr" / "adapter").mkdir(parents=True)
    (folder / "rlvr" / "adapter" / "adapter_config.json").write_text("{}")
    chosen = resolve_chat_model(str(folder))
    assert (chosen.model_ref, chosen.adapter) == (str(folder / "merge"), folder / "rlvr" / "adapter")


def test_a_conversation_renders_every_turn_after_the_system_prompt():
    turns = [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5"},
             {"role": "user", "content": "and 4 + 4?"}]
    text = render_conversation(None, turns, "r1", "SYSTEM")
    assert text == "SYSTEM\nUser: 2 + 3?\nAssistant: <think>5\nUser: and 4 + 4?\nAssistant: <think>"
    assert render_conversation(None, turns[:1], "r1", None) == "User: 2 + 3?\nAssistant: <think>"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["chat", "embedded:smollm2-135m", "--adapter", str(tmp_path)], input="hi\n")
    assert result.exit_code == 2 and "adapter_config.json is missing" in result.output
    result = CliRunner().invoke(cli, ["chat", str(tmp_path / "no-such-model")], input="hi\n")
    assert result.exit_code == 2 and "Traceback" not in result.output
    folder = run_folder(tmp_path)
    result = CliRunner().invoke(cli, ["chat", str(folder), "--adapter", str(folder)], input="hi\n")
    assert result.exit_code == 2 and "leave out --adapter" in result.output


@pytest.mark.slow
def test_a_piped_prompt_gets_one_streamed_answer_from_the_embedded_model():
    result = CliRunner().invoke(cli, ["chat", "embedded:smollm2-135m", "--max-new-tokens", "12",
                                      "--temperature", "0"], input="What is 2 + 3?\n")
    assert result.exit_code == 0, result.output
    assert result.output.strip()  # the model's words, streamed to standard output
    empty = CliRunner().invoke(cli, ["chat", "embedded:smollm2-135m"], input="")
    assert empty.exit_code == 2 and "nothing on standard input" in empty.output
