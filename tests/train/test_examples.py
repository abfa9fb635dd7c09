"""The RLVR examples: the plan shows how many GRPO really trains on, and why when fewer than asked."""

import io
import json
import re

import pytest
from click.testing import CliRunner

from lowres.cli import cli
from lowres.errors import UserError
from lowres.recipe import bundled_recipes, load_recipe


def toy_recipe(tmp_path, train: int, test: list[int], n_examples: int, extra=()):
    """A recipe-defined task: `train` rows q0..q{train-1}; the test rows repeat the questions numbered in `test`."""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": str(i)}) + "\n"
                                                  for i in range(train)))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": str(i)}) + "\n" for i in test))
    spec = f"{{toy: {{train: {tmp_path}/train.jsonl, test: {tmp_path}/test.jsonl, question: q, answer: a, " \
           "grader: exact}}"
    return ["--set", "stages=[rlvr, eval]", "--set", "rlvr.start_from=base", "--set", f"tasks={spec}",
            "--set", "data.target.task=toy", "--set", "eval.tasks=[toy]", "--set", "eval.limit=null",
            "--set", f"data.target.n_examples={n_examples}", "--set", f"output.dir={tmp_path}/runs", *extra]


def plan_text(args) -> str:
    """The plan `lowres run --dry-run` prints for `args`, on one wide line per row (no cell wrapped)."""
    from rich.console import Console

    from lowres.plan import make_plan
    from lowres.recipe import recipe_from_dict

    overrides = [args[i + 1] for i in range(0, len(args), 2)]
    recipe = recipe_from_dict(load_recipe(bundled_recipes()["demo"]).to_dict(), "demo", overrides)
    wide = Console(width=400, record=True, file=io.StringIO())
    wide.print(make_plan(recipe, gflops=lambda: 180.0).table())
    return " ".join(re.sub("[│┃]", " ", wide.export_text()).split())


def test_the_plan_shows_the_examples_left_after_the_eval_questions(tmp_path):
    args = toy_recipe(tmp_path, 30, [1, 2, 3, 4], 50)
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    plan = plan_text(args)
    assert "GRPO on 26 toy examples from the base model" in plan
    assert ("rlvr: data.target.n_examples is 50, but toy's train split has 30 rows, 4 of them evaluation questions: "
            "GRPO trains on the 26 left") in plan
    assert "the method is about" not in plan


def test_one_example_left_is_one_example(tmp_path):
    plan = plan_text(toy_recipe(tmp_path, 5, [1, 2, 3, 4], 3))
    assert "GRPO on 1 toy example from the base model" in plan


def test_more_than_a_hundred_examples_are_flagged(tmp_path):
    plan = plan_text(toy_recipe(tmp_path, 150, [0], 120))
    assert "GRPO on 120 toy examples" in plan and "rlvr: the method is about ≤100 examples; 120 given" in plan


def test_when_every_training_row_is_an_eval_question_the_error_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["run", "demo", "--dry-run", *toy_recipe(tmp_path, 5, list(range(5)), 3)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1] == ("error: data.target: all 5 rows of toy's train split are also evaluation questions "
                         "(eval.limit is not set, so the whole test split is scored), so none is left to train on; "
                         "set eval.limit below 5 to keep some out of the evaluation, or point data.target.path at a "
                         "file of other training rows")
    assert not (tmp_path / "runs").exists()


def test_the_examples_are_the_ones_chosen_before(full_data):
    """Counting the examples changes none of them: the same rows as the sampler picks on its own."""
    from lowres.tasks import get_task
    from lowres.tasks.sampling import disjoint_train_subset
    from lowres.train.examples import rlvr_examples

    recipe = load_recipe(bundled_recipes()["qwen2.5-3b-humaneval"])
    task = get_task("humaneval_plus")
    eval_rows = task.load("test", limit=recipe.eval.limit_for("humaneval_plus"), seed=recipe.seed)
    before = disjoint_train_subset(task, 50, seed=recipe.data.target.seed, eval_rows=eval_rows)
    chosen = rlvr_examples(recipe)
    assert [r["id"] for r in chosen.rows] == [r["id"] for r in before]
    assert (chosen.total, chosen.in_eval, chosen.notes()) == (164, 114, [])


def test_the_rlvr_stage_trains_on_the_examples_left(tmp_path, capsys):
    from lowres.recipe import recipe_from_dict
    from lowres.train.examples import training_rows

    args = toy_recipe(tmp_path, 30, [1, 2, 3, 4], 50)
    overrides = [args[i + 1] for i in range(0, len(args), 2)]
    recipe = recipe_from_dict(load_recipe(bundled_recipes()["demo"]).to_dict(), "demo", overrides)
    rows = training_rows(recipe)
    assert len(rows) == 26 and not {r["question"] for r in rows} & {"q1", "q2", "q3", "q4"}
    assert "GRPO trains on the 26 left" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(UserError, match="all 30 rows of toy's train split are also evaluation questions"):
        training_rows(recipe_from_dict(recipe.to_dict(), "demo", [f"tasks.toy.test={tmp_path}/train.jsonl"]))
