"""Comparisons with bootstrap intervals and verdicts (lowres.evidence), on cases worked out by hand, and the
report of a run with seeds and the coin-flip control (lowres.pipeline), its stages faked."""

import json
from pathlib import Path

import pytest

from lowres.evidence import bootstrap_difference, compare, pass_at_k_curve, verdict


def scores(*values):
    return {f"q{i}": v for i, v in enumerate(values)}


def test_identical_models_differ_by_nothing():
    a = scores(1, 0, 0.5, 1)
    assert bootstrap_difference([(1, [a]), (-1, [a])]) == (0.0, 0.0, 0.0, 4)
    assert verdict(0.0, 0.0) == "no measurable difference"


def test_every_question_right_against_every_question_wrong_is_better_whatever_the_resample():
    value, low, high, q = bootstrap_difference([(1, [scores(*[1] * 10)]), (-1, [scores(*[0] * 10)])])
    assert (value, low, high, q) == (100.0, 100.0, 100.0, 10)
    assert verdict(low, high) == "better" and verdict(-high, -low) == "worse"


def test_one_question_of_two_is_no_measurable_difference():
    """A right on q0 and wrong on q1, B wrong on both: +50 points. A resample of the two questions holds q0
    twice (1/4: +100), once (1/2: +50) or never (1/4: 0), so the 95% interval is [0, +100]."""
    value, low, high, q = bootstrap_difference([(1, [scores(1, 0)]), (-1, [scores(0, 0)])])
    assert (value, low, high, q) == (50.0, 0.0, 100.0, 2)
    assert verdict(low, high) == "no measurable difference"


def test_seeds_widen_the_interval():
    """Two seeds of A, one always right and one always wrong, against B always wrong, on 20 questions: +50
    points. The questions alone would not move it (each seed is constant), but a resample of the seeds holds the
    good one twice (1/4: +100), once (1/2: +50) or never (1/4: 0): the interval is [0, +100]."""
    good, bad = scores(*[1] * 20), scores(*[0] * 20)
    value, low, high, q = bootstrap_difference([(1, [good, bad]), (-1, [bad])])
    assert (value, low, high, q) == (50.0, 0.0, 100.0, 20)
    assert bootstrap_difference([(1, [good, good]), (-1, [bad])])[1:3] == (100.0, 100.0)


def test_only_the_questions_every_model_answered_count():
    assert bootstrap_difference([(1, [scores(1, 1, 1)]), (-1, [{"q0": 0.0, "q9": 1.0}])])[3] == 1
    with pytest.raises(ValueError):
        bootstrap_difference([(1, [{"a": 1.0}]), (-1, [{"b": 1.0}])])


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


def test_rlvr_from_the_base_is_compared_with_the_base():
    found = {c.title for c in compare({"base": {"kk": scores(0, 0)}, "rlvr": {"kk": scores(1, 0)},
                                        "rlvr-random-reward": {"kk": scores(0, 1)}}, start_of_rlvr="base")}
    assert found == {"rlvr vs base", "rlvr-random-reward vs base", "rlvr net of the control"}


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

    def stage(name, args, processes=1):
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
        samples = [{"question_id": f"q{i}", "sample_index": j, "correct": ok and (j == 0 or i % 2 == 0)}
                   for i, ok in enumerate(right) for j in range(2)]
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
    found = {c["title"]: c for c in report["comparisons"]}
    assert set(found) == {"rlvr vs base", "rlvr-random-reward vs base", "rlvr net of the control"}
    for c in found.values():
        assert c["low"] <= c["difference"] <= c["high"]
        assert c["verdict"] in ("better", "worse", "no measurable difference") and c["questions"] == n
    assert found["rlvr vs base"]["seeds"] == {"rlvr": 2, "base": 1}
    assert found["rlvr net of the control"]["seeds"] == {"rlvr": 2, "rlvr-random-reward": 2}
    assert set(report["models"]["rlvr-seed0"]["kk_easy"]["pass_at_k"]) == {"1", "2"}
    assert report["seeds"] == [0, 1]
    text = (run / "report.md").read_text()
    assert "95% bootstrap intervals over questions and seeds" in text and "**rlvr net of the control**" in text
    assert "![pass@k against k](pass_at_k.png)" in text and (run / "pass_at_k.png").stat().st_size > 1000
