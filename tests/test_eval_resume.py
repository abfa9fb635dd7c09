"""`lowres eval` after a crash redoes only the tasks that had not finished; `--limit` per task."""

import json

import pytest
from click.testing import CliRunner

import lowres.evaluate as evaluate
from lowres.cli import cli
from lowres.evaluate import GenerationSettings, evaluate_model


class FakeGenerator:
    """Answers every prompt with a fixed completion; counts the prompts it saw; can die on a task."""

    tokenizer = None

    def __init__(self, die_on: str | None = None):
        self.die_on, self.calls = die_on, []

    def __call__(self, prompts, settings, description):
        self.calls.append(description)
        if self.die_on and self.die_on in description:
            raise KeyboardInterrupt  # killed in the middle of this task
        return [[("<answer>(1) Alice is a knight</answer>", 9, False)] * settings.n_samples for _ in prompts]


@pytest.fixture
def fake(monkeypatch):
    made = []

    def install(die_on=None):
        generator = FakeGenerator(die_on)
        made.append(generator)
        monkeypatch.setattr(evaluate, "_generator", lambda *args, **kwargs: generator)
        return generator

    return install


def test_a_rerun_after_a_crash_scores_only_the_unfinished_tasks(tmp_path, fake, data_dir):
    settings = GenerationSettings(n_samples=1, chat_template="r1")
    out = tmp_path / "eval"
    fake(die_on="kk_easy")
    with pytest.raises(KeyboardInterrupt):
        evaluate_model("embedded:smollm2-135m", ["kk", "kk_easy"], settings, limit=2, out_dir=out)
    assert (out / "kk" / "results.json").is_file()
    assert not (out / "kk_easy").exists() and not (out / "results.json").exists()

    second = fake()
    results = evaluate_model("embedded:smollm2-135m", ["kk", "kk_easy"], settings, limit=2, out_dir=out)
    assert second.calls == ["eval kk_easy"]  # kk was reused, not regenerated
    assert [r.task for r in results] == ["kk", "kk_easy"]
    assert [r["task"] for r in json.loads((out / "results.json").read_text())] == ["kk", "kk_easy"]

    # Other settings: nothing is reused.
    third = fake()
    evaluate_model("embedded:smollm2-135m", ["kk", "kk_easy"], GenerationSettings(n_samples=2, chat_template="r1"),
                   limit=2, out_dir=out)
    assert third.calls == ["eval kk", "eval kk_easy"]


def test_limit_per_task(tmp_path, fake, data_dir):
    fake()
    results = evaluate_model("embedded:smollm2-135m", ["kk", "kk_easy"], GenerationSettings(n_samples=1,
                             chat_template="r1"), limit={"kk": 3}, out_dir=tmp_path / "e")
    assert [r.n_questions for r in results][0] == 3
    assert results[1].n_questions > 3  # not named: the whole test split


@pytest.mark.parametrize("text, message", [
    ("many", "--limit many: expected a number, or TASK=N pairs such as math=500,kk=100"),
    ("0", "--limit 0: question counts must be at least 1"),
    ("gsm8k=5", "--limit gsm8k=5: 'gsm8k' is not one of --tasks (kk)"),
])
def test_a_bad_limit_is_one_line(text, message, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "embedded:smollm2-135m", "--tasks", "kk", "--limit", text,
                                      "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}"
