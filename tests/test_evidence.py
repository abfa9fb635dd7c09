"""Comparisons with exact tests, intervals and verdicts (lowres.evidence), on cases worked out by hand — among
them the counter-examples of the statistics review (../shared/reviews/stats-review-3.md) — and the report of a
run with seeds and the coin-flip control (lowres.pipeline), its stages faked."""

import json
from fractions import Fraction
from pathlib import Path

import pytest

from lowres import evidence
from lowres.evidence import (
    MIN_DIFFERING_QUESTIONS,
    compare,
    decide,
    difference,
    holm,
    pass_at_k,
    pass_at_k_curve,
    sign_flip_p,
    t_quantile,
    t_two_sided_p,
)


def scores(*values):
    return {f"q{i}": v for i, v in enumerate(values)}


def judged(terms):
    """One comparison, alone in its report (Holm changes nothing)."""
    found = difference(terms)
    return found, decide([("kk", "a vs b", "", found, {})])[0]


def test_identical_models_differ_by_nothing():
    a = scores(1, 0, 0.5, 1)
    found, c = judged([(1, [a]), (-1, [a])])
    assert (found.value, found.low, found.high, found.p_value, found.differing) == (0.0, 0.0, 0.0, 1.0, 0)
    assert c.verdict == "no measurable difference"


def test_the_sign_flip_p_value_on_hand_counted_cases():
    """d = (2, 1, 1): of the 8 sign patterns only +++ and −−− reach |sum| ≥ 4: p = 2/8. d = (3, 1, 1, 1): only
    the two patterns of one sign reach 6 (3+1+1−1 = 4): p = 2/16. Six equal differences: p = 2/64."""
    assert sign_flip_p([Fraction(2), Fraction(1), Fraction(1)]) == pytest.approx(0.25)
    assert sign_flip_p([Fraction(3), Fraction(1), Fraction(1), Fraction(1)]) == pytest.approx(0.125)
    assert sign_flip_p([Fraction(1, 2)] * 6) == pytest.approx(2 / 64)
    assert sign_flip_p([Fraction(1, 2), Fraction(-1, 2)]) == 1.0  # 0 is always reached
    assert sign_flip_p([Fraction(1, 4), Fraction(0), Fraction(-1, 2), Fraction(3, 4)]) == pytest.approx(6 / 8)


def test_a_sampled_sign_flip_agrees_with_the_exact_one_when_the_exact_one_is_too_big(monkeypatch):
    d = [Fraction(k % 5 - 1, 4) for k in range(40)]
    exact = sign_flip_p(d)
    monkeypatch.setattr(evidence, "EXACT_WORK_LIMIT", 10)
    assert sign_flip_p(d) == pytest.approx(exact, abs=0.005)


def test_students_t_against_its_table():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(99) == pytest.approx(1.984, abs=1e-3)
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=1e-4)


def test_holm_on_a_hand_worked_family():
    """Sorted 0.01, 0.03, 0.04, 0.5 × 4, 3, 2, 1 = 0.04, 0.09, 0.08 → 0.09 (monotone), 0.5."""
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_review_one_shared_question_is_no_verdict_and_no_zero_width_interval():
    """The review: one shared question, A 2/2 and B 0/2 was "+100 [100, 100] better"."""
    found, c = judged([(1, [{"a": 1.0}]), (-1, [{"a": 0.0}])])
    assert (found.value, found.low, found.high) == (100.0, -100.0, 100.0)
    assert c.verdict == "no measurable difference" and "1 question differs" in c.why


def test_review_four_questions_against_a_model_that_scores_zero_is_no_verdict():
    """The review: A 2/2 on 4 of 16 questions, B at 0 was "+25 [+6.25, +43.75] better"; the sign-flip p is 1/8."""
    found, c = judged([(1, [scores(*[1] * 4 + [0] * 12)]), (-1, [scores(*[0] * 16)])])
    assert found.value == pytest.approx(25.0) and found.p_value == pytest.approx(0.125)
    assert c.verdict == "no measurable difference" and found.differing == 4


def test_a_verdict_needs_the_stated_number_of_differing_questions():
    """Every differing question improves by the same half point: with one too few questions no verdict is
    given whatever the p-value; with enough, better (p = 2/2^10)."""
    few = MIN_DIFFERING_QUESTIONS - 1
    _, c = judged([(1, [scores(*[0.5] * few)]), (-1, [scores(*[0] * few)])])
    assert c.verdict == "no measurable difference" and f"{few} questions differ" in c.why
    n = MIN_DIFFERING_QUESTIONS
    found, c = judged([(1, [scores(*[0.5] * n)]), (-1, [scores(*[0] * n)])])
    assert c.verdict == "better" and found.p_value == pytest.approx(2 / 2 ** n)
    _, c = judged([(1, [scores(*[0] * n)]), (-1, [scores(*[0.5] * n)])])
    assert c.verdict == "worse"


def test_a_verdict_is_the_same_whatever_the_random_state():
    """No resampling: the review found 191 of 200 bootstrap seeds said "better" where seed 0 did not."""
    import numpy as np

    a, b = scores(*[1, 1, 0.5, 0, 1, 0.5, 0.5, 1] * 2), scores(*[0, 0.5, 0, 0, 0.5, 0, 0, 0.5] * 2)
    first = judged([(1, [a]), (-1, [b])])[1]
    np.random.seed(123)
    assert judged([(1, [a]), (-1, [b])])[1] == first


def test_seeds_that_disagree_leave_no_verdict():
    """The review's case: two seeds of A, one always right and one always wrong, against B always wrong, on 20
    questions: +50 points on every question, which a test over questions alone calls certain (p = 2/2^20).
    The seeds' means are 1 and 0: their variance 0.5, over 2 seeds 0.25, on 1 degree of freedom: t = 0.5 / 0.5
    = 1, p = 0.5; the interval is clipped to what is possible."""
    good, bad = scores(*[1] * 20), scores(*[0] * 20)
    found, c = judged([(1, [good, bad]), (-1, [bad])])
    assert found.value == pytest.approx(50.0)
    assert found.tests["sign_flip"] == pytest.approx(2 / 2 ** 20)
    assert found.tests["seed_aware_t"] == pytest.approx(0.5)
    assert found.p_value == pytest.approx(0.5) and (found.low, found.high) == (-100.0, 100.0)
    assert c.verdict == "no measurable difference"
    found, c = judged([(1, [good, good]), (-1, [bad])])  # seeds that agree: nothing to add
    assert c.verdict == "better"


def test_only_the_questions_every_model_answered_count():
    assert difference([(1, [scores(1, 1, 1)]), (-1, [{"q0": 0.0, "q9": 1.0}])]).questions == 1
    with pytest.raises(ValueError):
        difference([(1, [{"a": 1.0}]), (-1, [{"b": 1.0}])])


def test_holm_decides_the_verdicts_of_a_family():
    """Two comparisons each at p = 2/2^6·… : alone one is better, in a family of 40 Holm lifts it over 0.05."""
    n = 12
    strong = difference([(1, [scores(*[0.5] * n)]), (-1, [scores(*[0] * n)])])  # p = 2/4096
    assert decide([("kk", "a", "", strong, {})])[0].verdict == "better"
    family = decide([("kk", f"c{i}", "", strong, {}) for i in range(120)])
    assert family[0].p_adjusted == pytest.approx(min(1, 120 * 2 / 4096))
    assert {c.verdict for c in family} == {"no measurable difference"}


def test_a_run_is_compared_net_of_its_coin_flip_control():
    """rlvr gains 30 points over the warmup, but the coin-flip control from the same start gains 20: net +10.
    The no-warmup arm gains 10 over the base: net of the control's 20, −10."""
    n = 10
    base, warmup = scores(*[0] * n), scores(*[1] * 2 + [0] * 8)
    rlvr = scores(*[1] * 5 + [0] * 5)
    control = scores(*[1] * 4 + [0] * 6)
    no_warmup = scores(*[1] * 1 + [0] * 9)
    found = {c.title: c for c in compare({"base": {"kk": base}, "warmup": {"kk": warmup}, "rlvr": {"kk": rlvr},
                                          "rlvr-random-reward": {"kk": control},
                                          "rlvr-no-warmup": {"kk": no_warmup}})}
    assert found["rlvr vs warmup"].difference == pytest.approx(30)
    assert found["rlvr-random-reward vs warmup"].difference == pytest.approx(20)
    assert found["rlvr net of the control"].difference == pytest.approx(10)
    assert found["rlvr-no-warmup net of the control"].difference == pytest.approx(10 - 20)
    assert found["warmup vs base"].verdict in ("better", "no measurable difference")
    assert all(c.low <= c.difference <= c.high for c in found.values())
    # one family: Holm over the run's seven comparisons
    assert len(found) == 7
    ranked = sorted(found.values(), key=lambda c: c.p_value)
    assert ranked[0].p_adjusted == pytest.approx(min(1, 7 * ranked[0].p_value))


def test_rlvr_from_the_base_is_compared_with_the_base():
    found = {c.title for c in compare({"base": {"kk": scores(0, 0)}, "rlvr": {"kk": scores(1, 0)},
                                        "rlvr-random-reward": {"kk": scores(0, 1)}}, start_of_rlvr="base")}
    assert found == {"rlvr vs base", "rlvr-random-reward vs base", "rlvr net of the control"}


def test_pass_at_k_is_not_defined_beyond_the_samples():
    """The review: pass_at_k(1, 0, 2) returned 1.0 — pass@2 of 100% for a model that is always wrong."""
    with pytest.raises(ValueError):
        pass_at_k(1, 0, 2)
    assert pass_at_k(2, 0, 2) == 0.0 and pass_at_k(4, 1, 2) == pytest.approx(0.5)


def test_pass_at_k_curve(tmp_path):
    """q0: 1 right of 4 samples, q1: 4 of 4. pass@1 = (1/4 + 1)/2; pass@2 for q0 = 1 − C(3,2)/C(4,2) = 1/2."""
    samples = tmp_path / "samples.jsonl"
    rows = [{"question_id": "q0", "correct": j == 0} for j in range(4)] + \
        [{"question_id": "q1", "correct": True} for _ in range(4)]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curve = pass_at_k_curve(samples)
    assert curve == pytest.approx({1: 0.625, 2: 0.75, 3: 0.875, 4: 1.0})


# ---------------------------------------------------------------- a run with seeds [0, 1] and the control


def fake_stage(run: Path, correct_by_label: dict[str, list[bool]], commands: list[list[str]]):
    """What run_stage would leave behind: a moved GRPO adapter, or an evaluation's results and samples."""
    import torch
    from safetensors.torch import save_file

    def stage(name, args, processes=1, **_):
        commands.append(args)
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if args[0] == "rlvr":
            (out / "adapter").mkdir()
            save_file({"lora_B.weight": torch.ones(2, 2)}, out / "adapter" / "adapter_model.safetensors")
            (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5, "frac_reward_zero_std": 0.5})
                                               + "\n")
            return
        label = args[args.index("--label") + 1]
        right = correct_by_label[label]
        samples = [{"question_id": f"q{i}", "sample_index": j, "correct": ok and (j == 0 or i % 2 == 0),
                    "formatted": ok or j == 0} for i, ok in enumerate(right) for j in range(2)]
        (out / "kk_easy").mkdir()
        (out / "kk_easy" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
        accuracy = sum(s["correct"] for s in samples) / len(samples)
        result = {"task": "kk_easy", "model": label, "n_questions": len(right), "n_samples": 2,
                  "accuracy_mean": accuracy, "accuracy_std": 0.0, "pass_at_k": {}, "format_error_rate": 0.0,
                  "mean_completion_tokens": 10.0, "truncated_rate": 0.0}
        (out / "results.json").write_text(json.dumps([result]))

    return stage


def test_a_run_with_two_seeds_and_the_control_reports_intervals_verdicts_and_pass_at_k(tmp_path, monkeypatch):
    from lowres import pipeline
    from lowres.recipe import bundled_recipes, load_recipe

    n = 12
    correct = {"base": [False] * n, "warmup": [i < 4 for i in range(n)],
               "rlvr-seed0": [i < 9 for i in range(n)], "rlvr-seed1": [i < 7 for i in range(n)],
               "rlvr-random-reward-seed0": [i < 5 for i in range(n)],
               "rlvr-random-reward-seed1": [i < 4 for i in range(n)]}
    commands: list[list[str]] = []
    monkeypatch.setattr(pipeline, "run_stage", fake_stage(tmp_path, correct, commands))
    recipe = load_recipe(bundled_recipes()["demo"], [
        "stages=[rlvr, rlvr-random-reward, eval]", "rlvr.start_from=base", "seeds=[0, 1]", f"output.dir={tmp_path}"])
    # rlvr starts from the base here; a warmup model's scores are faked in as "warmup" is not in this recipe
    correct["base"] = correct["warmup"]
    pipeline.run_recipe(recipe)
    run = tmp_path / "demo"
    trained = [c for c in commands if c[0] == "rlvr"]
    assert [(("--random-reward" in c), c[c.index("--seed") + 1], Path(c[c.index("--out") + 1]).name) for c in trained] \
        == [(False, "0", "rlvr-seed0"), (False, "1", "rlvr-seed1"),
            (True, "0", "rlvr-random-reward-seed0"), (True, "1", "rlvr-random-reward-seed1")]
    evals = {c[c.index("--label") + 1]: c for c in commands if c[0] == "eval"}
    assert list(evals) == ["base", *(Path(c[c.index("--out") + 1]).name for c in trained)]
    # every model answers the same questions (--seed is the recipe's); an arm samples with its own seed
    assert {c[c.index("--seed") + 1] for c in evals.values()} == {str(recipe.seed)}
    assert evals["rlvr-seed1"][evals["rlvr-seed1"].index("--sample-seed") + 1] == "1"
    assert "--sample-seed" not in evals["base"]

    report = json.loads((run / "report.json").read_text())
    found = {c["title"]: c for c in report["comparisons"] if c["outcome"] == "accuracy"}
    assert set(found) == {"rlvr vs base", "rlvr-random-reward vs base", "rlvr net of the control"}
    assert {c["title"] for c in report["comparisons"] if c["outcome"] == "well-formed"} == \
        {"rlvr vs base", "rlvr net of the control"}
    for c in found.values():
        assert c["low"] <= c["difference"] <= c["high"]
        assert c["verdict"] in ("better", "worse", "no measurable difference") and c["questions"] == n
    assert found["rlvr vs base"]["seeds"] == {"rlvr": 2, "base": 1}
    assert found["rlvr net of the control"]["seeds"] == {"rlvr": 2, "rlvr-random-reward": 2}
    assert set(report["models"]["rlvr-seed0"]["kk_easy"]["pass_at_k"]) == {"1", "2"}
    assert report["seeds"] == [0, 1]
    text = (run / "report.md").read_text()
    assert "95% intervals over questions and seeds" in text and "**rlvr net of the control**" in text
    assert "Holm-adjusted over these 5 comparisons" in text and "p = " in text
    assert "**rlvr vs base**, well-formed answers" in text
    assert {"p_value", "p_adjusted", "differing", "why", "tests"} <= set(found["rlvr vs base"])
    assert "![pass@k against k](pass_at_k.png)" in text and (run / "pass_at_k.png").stat().st_size > 1000


# ---------------------------------------------------------------- rows without an id


class _NoIdTask:
    """A plugin-style task whose rows carry no "id": right when the completion says "right"."""

    name = "no_id"

    def prompt(self, row):
        return [{"role": "user", "content": row["question"]}]

    def score(self, completion, row):
        from lowres.tasks.base import Score

        return Score(extracted=completion, formatted=True, correct=completion == "right", reward=0.0)


class _AlwaysWrong:
    tokenizer = None

    def __call__(self, prompts, settings, description):
        return [[("wrong", 1, False)] * settings.n_samples for _ in prompts]


def test_rows_without_an_id_are_one_question_per_prompt(tmp_path):
    """The review: a plugin task whose rows have no id made every sample its own question, and pass@2 showed 100%
    for a model that is always wrong. Two rows share a prompt: they are one question."""
    from lowres.evaluate import GenerationSettings, evaluate_task

    rows = [{"question": "a?"}, {"question": "b?"}, {"question": "a?"}]
    result = evaluate_task(_AlwaysWrong(), _NoIdTask(), rows, GenerationSettings(n_samples=2, chat_template="r1"),
                           out_dir=tmp_path / "out")
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    ids = [s["question_id"] for s in samples]
    assert len(set(ids)) == 2 and ids[0] == ids[1] == ids[4] == ids[5] != ids[2]
    assert result.pass_at_k == {"pass@1": 0.0, "pass@2": 0.0}
    assert pass_at_k_curve(tmp_path / "out" / "samples.jsonl") == {1: 0.0, 2: 0.0}
    assert (result.accuracy_low, result.accuracy_high) == (0.0, 0.0)


# ---------------------------------------------------------------- lowres compare RUN_A RUN_B


def eval_folder(folder: Path, task: str, right: dict[str, list[bool]]):
    """What `lowres eval --out folder` leaves: results.json and the task's samples.jsonl."""
    (folder / task).mkdir(parents=True)
    samples = [{"question_id": q, "sample_index": j, "correct": ok} for q, oks in right.items()
               for j, ok in enumerate(oks)]
    (folder / task / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    accuracy = sum(s["correct"] for s in samples) / len(samples)
    (folder / "results.json").write_text(json.dumps([{
        "task": task, "model": folder.name, "n_questions": len(right), "n_samples": 2, "accuracy_mean": accuracy,
        "accuracy_std": 0.0, "pass_at_k": {}, "format_error_rate": 0.0, "mean_completion_tokens": 1.0,
        "truncated_rate": 0.0}]))


def test_compare_pairs_two_runs_final_models_on_their_questions(tmp_path):
    """Run A's rlvr is right twice on 12 of 20 questions where run B's rlvr is right on none: +60 points,
    12 questions differ, sign-flip p = 2/2^12: better. Their warmups are not what is compared."""
    from click.testing import CliRunner

    from lowres.cli import cli

    n = 20
    eval_folder(tmp_path / "a" / "eval" / "warmup", "kk", {f"q{i}": [False, False] for i in range(n)})
    eval_folder(tmp_path / "a" / "eval" / "rlvr", "kk", {f"q{i}": [i < 12] * 2 for i in range(n)})
    eval_folder(tmp_path / "b" / "eval" / "rlvr", "kk", {f"q{i}": [False, False] for i in range(n)})
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "a/rlvr vs b/rlvr" in text and "+60.0 points" in text and "12 of 20 questions differ" in text
    assert f"p = {2 / 2 ** 12:.4f}" in text and ": better" in text
    assert "[" in text and "Holm" in text  # the interval and how the p-values were adjusted


def test_compare_refuses_results_that_share_no_question_or_task(tmp_path):
    from click.testing import CliRunner

    from lowres.cli import cli

    eval_folder(tmp_path / "x", "kk", {"q0": [True, True]})
    eval_folder(tmp_path / "y", "kk", {"q9": [False, False]})
    eval_folder(tmp_path / "z", "gsm8k", {"q0": [True, True]})
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "x"), str(tmp_path / "y"),
                                      "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and "answered no question in common on kk" in result.output
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "x"), str(tmp_path / "z"),
                                      "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and "share no task" in result.output
    assert not (tmp_path / "c.png").exists()


def test_compare_notes_accuracies_over_different_questions(tmp_path):
    from click.testing import CliRunner

    from lowres.cli import cli

    eval_folder(tmp_path / "x", "kk", {f"q{i}": [True, False] for i in range(4)})
    eval_folder(tmp_path / "y", "kk", {f"q{i}": [False, False] for i in range(2, 8)})
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "x"), str(tmp_path / "y"),
                                      "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "on kk the models did not answer the same questions (x 4, y 6; 2 in common)" in text
    assert "2 of 2 questions differ" in text and "no measurable difference" in text


def test_the_share_of_well_formed_answers_is_compared_too_in_the_same_family():
    """GRPO that teaches the format and not the answers: accuracy unchanged, well-formed 0/12 → 12/12 (p = 2/2^12).
    One Holm family: warmup vs base and rlvr vs warmup, each on accuracy and on well-formed answers."""
    n = 12
    right = scores(*[1] * 3 + [0] * 9)
    found = compare({"warmup": {"kk": right}, "rlvr": {"kk": right}, "base": {"kk": scores(*[0] * n)}},
                    formatted={"warmup": {"kk": scores(*[0] * n)}, "rlvr": {"kk": scores(*[1] * n)},
                               "base": {"kk": scores(*[0] * n)}})
    by = {(c.title, c.outcome): c for c in found}
    assert by[("rlvr vs warmup", "accuracy")].verdict == "no measurable difference"
    formatted = by[("rlvr vs warmup", "well-formed")]
    assert formatted.difference == 100.0 and formatted.verdict == "better"
    assert len(found) == 4 and formatted.p_adjusted == pytest.approx(4 * 2 / 2 ** n)
