"""The signal check (lowres.signal_check, lowres.train.check), the informative selection and the coin-flip
control's reward: their statistics on a stub model whose pass rates are known, worked out by hand."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lowres.recipe import bundled_recipes, load_recipe
from lowres.signal_check import (
    PromptGroup,
    advise,
    expected_signal_share,
    select_informative,
    summarise,
    summary_lines,
)
from lowres.tasks.base import Score, r1_messages

G = 4
CAP = 40


class StubTask:
    """Right when the completion says "right"; paid 1 then, else 0."""

    name = "stub_signal"
    description = "the signal check's stub task"

    def load(self, split, limit=None, seed=0, path=None, **kwargs):
        return [{"id": f"q{i}", "question": f"question {i}"} for i in range(8)][:limit]

    def prompt(self, row):
        return r1_messages(row["question"])

    def score(self, completion, row):
        right = "right" in completion
        return Score(formatted=True, correct=right, reward=1.0 if right else 0.0, extracted=completion)


class StubTokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def stub_model(right_per_prompt: list[int]):
    """A 'model' whose i-th prompt gets right_per_prompt[i] right completions of G (10 tokens each) and wrong ones
    that run to the cap (40 tokens, cut)."""
    def generate(prompts, settings, description):
        if settings.max_new_tokens == 1:  # the untimed warm-up
            return [[("w", 1, True)] for _ in prompts]
        assert settings.n_samples == G and settings.max_new_tokens == CAP
        return [[("right", 10, False)] * k + [("wrong", CAP, True)] * (G - k) for k in right_per_prompt]

    return generate


@pytest.fixture
def stub_recipe(monkeypatch):
    from lowres.tasks import register_task

    register_task(StubTask())
    return load_recipe(bundled_recipes()["demo"], [
        "stages=[rlvr]", "rlvr.start_from=base", "data.target.task=stub_signal", "data.target.n_examples=4",
        "eval.tasks=[kk_easy]", f"rlvr.num_generations={G}", f"rlvr.max_completion_length={CAP}",
        "rlvr.per_device_train_batch_size=8"])


def check_of(recipe, right_per_prompt):
    from lowres.train.check import graded_samples

    rows = StubTask().load("train", limit=len(right_per_prompt))
    data = graded_samples(stub_model(right_per_prompt), StubTokenizer(), recipe, rows)
    groups = [PromptGroup(**g) for g in data["groups"]]
    check = summarise(groups, stage="rlvr", start_model="stub", max_completion_length=CAP, temperature=0.7,
                      rows_per_step=8, sampling_seconds=data["seconds"], batches=data["batches"])
    check.problems = advise(check, truncation_warn_fraction=0.5, learning_rate=5e-5, max_prompt_length=384,
                            max_seq_length=1024)
    return check, groups, data


def test_the_checks_statistics_on_a_stub_model_with_known_pass_rates(stub_recipe):
    check, groups, data = check_of(stub_recipe, [0, 1, 2, 4])
    assert check.pass_rates == {"q0": 0.0, "q1": 0.25, "q2": 0.5, "q3": 1.0}
    assert check.mean_pass_rate == pytest.approx(0.4375)
    assert (check.all_right_share, check.all_wrong_share, check.no_signal_share) == (0.25, 0.25, 0.5)
    assert check.pass_at_g == 0.75
    # 7 right completions of 10 tokens, 9 wrong ones cut at 40: p50 is the 8th of 16 (40), p90 the 15th (40)
    assert check.truncated_share == pytest.approx(9 / 16)
    assert check.length_percentiles == {"p50": 40, "p90": 40, "max": 40}
    assert data["batches"] == 2  # 16 completions in batches of one GRPO step's 8 rows
    assert [p.kind for p in check.problems] == ["truncation"]  # half the groups have a signal: not a problem
    truncation = check.problems[0]
    assert truncation.message.startswith("56% (95% CI 30–80%) of completions hit rlvr.max_completion_length=40")
    assert truncation.fix.startswith("set rlvr.max_completion_length to 128")  # 2 × 40, rounded up to 64s


def group_of(i: int, right: int, g: int = G) -> PromptGroup:
    return PromptGroup(f"q{i}", [j < right for j in range(g)], [float(j < right) for j in range(g)], [10] * g,
                       [False] * g)


def check_and_advice(right_per_prompt: list[int], g: int = G, select: str = "random", learning_rate: float = 5e-5):
    check = summarise([group_of(i, k, g) for i, k in enumerate(right_per_prompt)], stage="rlvr", start_model="stub",
                      max_completion_length=CAP, temperature=0.7, rows_per_step=8)
    return check, advise(check, truncation_warn_fraction=0.5, learning_rate=learning_rate, max_prompt_length=384,
                         max_seq_length=1024, select=select)


def test_no_signal_names_more_generations_with_the_expected_share():
    """Pooled pass rates: [0, 0, 0, 1] of 4 scatter less than binomial noise alone would, so every prompt is taken
    to have the pooled rate 1/16, and a group of 8 holds a right and a wrong one with 1 − (15/16)⁸ − (1/16)⁸ = 40%
    (against 25% measured at 4)."""
    assert expected_signal_share([0, 0, 0, 1], 4, 8) == pytest.approx(1 - (15 / 16) ** 8 - (1 / 16) ** 8, abs=1e-4)
    check, problems = check_and_advice([0, 0, 0, 1], learning_rate=5e-6)
    assert [p.kind for p in problems] == ["no_signal", "learning_rate"]
    no_signal = problems[0]
    assert no_signal.message.startswith("75% (95% CI 19–99%) of prompts have no reward difference among their 4 "
                                        "completions (75% all wrong, 0% all right)")
    assert ("examples the start model sometimes solves (data.target.select: informative; pass@4 was 25% (95% CI "
            "1–81%))" in no_signal.fix)
    assert ("rlvr.num_generations 4 → 8: about 40% of groups would hold a right and a wrong completion, against 25% "
            "measured at 4") in no_signal.fix
    assert "rlvr.temperature 0.7 → 1" in no_signal.fix
    assert problems[1].fix == "set rlvr.learning_rate to at least 1e-05"


@pytest.mark.parametrize("right_per_prompt, g", [
    ([2, 2], 2),                     # every answer right: nothing says a prompt would fail with more tries
    ([0] * 8, 4),                    # none right
    ([1, 0, 0, 0, 0, 0, 0, 0], 4),   # 1 of 8 prompts ever solved: the other 7 are expected to stay unsolved
])
def test_more_generations_are_promised_only_where_the_measurements_show_it(right_per_prompt, g):
    check, problems = check_and_advice(right_per_prompt, g)
    assert problems and "num_generations" not in problems[0].fix
    assert expected_signal_share(right_per_prompt, g, 2 * g) < 1 - check.all_right_share - check.all_wrong_share + 0.1


def test_the_pooled_estimate_at_its_ends():
    assert expected_signal_share([2, 2], 2, 4) == 0.0 and expected_signal_share([0] * 8, 4, 8) == 0.0
    assert expected_signal_share([1] + [0] * 7, 4, 8) == pytest.approx(0.224, abs=1e-3)  # 12.5% measured at 4


def test_informative_selection_is_not_advised_when_it_is_on():
    _, problems = check_and_advice([0, 0, 0, 1], select="informative")
    assert "data.target.select: informative" not in problems[0].fix
    assert "data.target.select is informative already: more candidates, data.target.select_pool, or other data" in \
        problems[0].fix


def test_every_share_the_check_prints_has_its_exact_interval():
    """On 2 prompts a share can only be 0, 50 or 100%; the Clopper-Pearson interval says how little that pins
    down (1 of 2: 1.3–98.7%, 0 of 10: 0–30.8%, the textbook values)."""
    from lowres.signal_check import clopper_pearson

    assert clopper_pearson(1, 2) == pytest.approx((0.0126, 0.9874), abs=1e-4)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    check, _ = check_and_advice([1, 2], 2)
    lines = summary_lines(check)
    assert lines[1] == "  pass rate 75% (95% CI 19–99%) per completion, pass@2 100% (95% CI 16–100%)"
    assert lines[2] == ("  groups all right 50% (95% CI 1–99%), all wrong 0% (95% CI 0–84%), without a reward "
                        "difference 50% (95% CI 1–99%)")
    assert lines[3].endswith("; 0% (95% CI 0–60%) hit the cap")


def test_informative_selection_keeps_the_sometimes_solved_first_then_fills():
    def group(i, right):
        return PromptGroup(f"q{i}", [j < right for j in range(G)], [float(j < right) for j in range(G)], [5] * G,
                           [False] * G)

    groups = [group(i, right) for i, right in enumerate([0, 2, 4, 1, 0, 3])]
    kept, why = select_informative(groups, 4, seed=0)
    assert set(kept) >= {"q1", "q3", "q5"} and len(kept) == 4
    assert kept == sorted(kept, key=lambda q: int(q[1:]))  # in the pool's order
    reasons = {r["id"]: r["why"] for r in why}
    assert reasons["q1"] == reasons["q3"] == reasons["q5"] == "sometimes solved"
    filled = next(q for q in kept if q not in ("q1", "q3", "q5"))
    assert reasons[filled] in ("fill: never solved", "fill: always solved")
    assert select_informative(groups, 4, seed=0) == (kept, why)  # seeded


def test_informative_selection_writes_its_choice_and_is_part_of_the_fingerprint(stub_recipe, monkeypatch, tmp_path):
    from lowres.fingerprint import stage_fingerprints
    from lowres.recipe import recipe_from_dict
    from lowres.train import check as check_module

    recipe = recipe_from_dict(stub_recipe.to_dict(), "test", [
        "data.target.select=informative", "data.target.select_pool=8", f"output.dir={tmp_path}"])
    assert stage_fingerprints(recipe)["rlvr"] != stage_fingerprints(stub_recipe)["rlvr"]
    pattern = [0, 2, 4, 1, 0, 3, 0, 4]
    sampled = []

    def sample(recipe, model_ref, rows):
        sampled.append(len(rows))
        return check_module.graded_samples(stub_model([pattern[int(r["id"][1:])] for r in rows]), StubTokenizer(),
                                           recipe, rows)

    monkeypatch.setattr(check_module, "sample_groups", sample)
    monkeypatch.setattr(check_module, "candidate_rows", lambda recipe: StubTask().load("train"))
    out = tmp_path / "rlvr"
    out.mkdir()
    rows, check = check_module.prepare_rows(recipe, "rlvr", out)
    assert len(rows) == 4 and {"q1", "q3", "q5"} <= {r["id"] for r in rows}
    selection = json.loads((out / "selection.json").read_text())
    assert selection["candidates"] == 8 and selection["kept"] == 4 and selection["sometimes_solved"] == 3
    assert check.n_prompts == 4  # the check describes the rows trained on
    # The samples are cached: a second arm from the same start (or a rerun) samples nothing
    (tmp_path / "control").mkdir()
    again, _ = check_module.prepare_rows(recipe, "rlvr-random-reward", tmp_path / "control", run_check=False)
    assert again == rows
    assert sampled == [8]


@pytest.mark.slow
def test_a_kk_recipe_with_a_32_token_cap_is_refused_before_training(tmp_path):
    """The Done-when of the evidence issue: `rlvr.signal_check: refuse` stops before any GRPO step with one line
    naming the measured truncation share and the cap to use."""
    done = subprocess.run([sys.executable, "-m", "lowres", "run", "demo", "--set", "stages=[rlvr]",
                           "--set", "rlvr.start_from=base", "--set", "rlvr.max_completion_length=32",
                           "--set", "rlvr.signal_check=refuse", "--set", "rlvr.signal_check_prompts=2",
                           "--set", "rlvr.num_generations=2", "--set", "rlvr.per_device_train_batch_size=4",
                           "--set", f"output.dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, done.stderr[-2000:]
    assert "of completions hit rlvr.max_completion_length=32" in error[0]
    assert "set rlvr.max_completion_length to 64" in error[0] and "rlvr.signal_check: warn" in error[0]
    run = tmp_path / "demo" / "rlvr"
    check = json.loads((run / "signal_check.json").read_text())
    assert check["truncated_share"] > 0.5 and check["problems"][0]["kind"] == "truncation"
    assert not (run / "checkpoints").exists() and not (run / "adapter").exists()  # no training started


def test_lowres_check_needs_the_merged_model_or_says_what_to_do(tmp_path):
    from lowres.cli import cli

    result = CliRunner().invoke(cli, ["check", "demo", "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 2
    assert "no merged warmup model here; run the warmup and merge stages first" in result.output


def test_lowres_check_refuses_a_recipe_without_an_rlvr_stage(tmp_path):
    from lowres.cli import cli

    result = CliRunner().invoke(cli, ["check", "demo", "--set", "stages=[warmup, merge, eval]",
                                      "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.endswith("demo.yaml: stages: rlvr is not one of this recipe's stages (warmup, merge, eval), so "
                         "there is no GRPO run to check; add rlvr to stages with the rlvr: and data.target: settings "
                         "you want")
    assert not (tmp_path / "demo").exists()  # nothing sampled, nothing written


# ---------------------------------------------------------------- the control's reward


def test_the_coin_flip_reward_ignores_the_answer():
    from lowres.rewards import CoinFlipReward

    right = [f"<think>x</think><answer>{i}</answer>" for i in range(400)]
    wrong = [f"no answer at all {i}" for i in range(400)]
    reward = CoinFlipReward(seed=0)
    paid_right = reward(prompts=["p"] * 400, completions=right)
    paid_wrong = reward(prompts=["p"] * 400, completions=wrong)
    assert set(paid_right) | set(paid_wrong) == {0.0, 1.0}
    # about half either way, whatever the completion says (binomial sd over 400: 2.5%)
    assert 0.4 < sum(paid_right) / 400 < 0.6 and 0.4 < sum(paid_wrong) / 400 < 0.6
    assert reward(prompts=["p"] * 400, completions=right) == paid_right  # seeded: reproducible
    assert CoinFlipReward(seed=1)(prompts=["p"] * 400, completions=right) != paid_right
    assert reward(prompts=None, completions=[None, {"odd": 1}]) in ([0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0])


def test_the_coin_flip_is_fresh_every_step_and_for_every_place_in_the_batch():
    """A policy that repeats one completion must not be able to learn which completions pay: the same text
    gets its own flip at each step and at each place of a batch, and the same step replays the same flips."""
    from types import SimpleNamespace

    from lowres.rewards import CoinFlipReward

    reward, same = CoinFlipReward(seed=0), ["the same completion"] * 400
    at = [reward(prompts=["p"] * 400, completions=same, trainer_state=SimpleNamespace(global_step=s))
          for s in (1, 2, 1)]
    assert 0.4 < sum(at[0]) / 400 < 0.6  # one text, flipped afresh at each place
    assert at[0] != at[1] and at[0] == at[2]  # another step, other flips; the same step, the same ones
