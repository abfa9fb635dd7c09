"""A count printed with its noun agrees with it: "1 step", not "1 steps"."""

import ast
import types
from pathlib import Path

from lowres.ui import counted

PACKAGE = Path(__file__).resolve().parents[1] / "lowres"


def test_counted():
    assert [counted(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
    assert counted(1, "kk_easy example") == "1 kk_easy example"


def test_no_message_prints_a_bare_count_of_steps():
    """f"{n} steps" reads "1 steps" when n is 1: every step count goes through counted()."""
    found, files = [], sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30  # (the package itself, not an empty folder)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.JoinedStr):
                continue
            for value, after in zip(node.values, node.values[1:], strict=False):
                if (isinstance(value, ast.FormattedValue) and isinstance(after, ast.Constant)
                        and str(after.value).startswith((" steps", " step ", " step,", " models"))):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []


def test_the_constant_reward_stop_counts_one_step():
    from lowres.train.rlvr import SmallDataGuards

    guards = SmallDataGuards(truncation_warn_fraction=1.0, max_completion_length=16, constant_steps=1)
    control = types.SimpleNamespace(should_training_stop=False)
    guards.on_log(None, types.SimpleNamespace(global_step=1), control, logs={"reward": -2.0})
    assert control.should_training_stop
    assert guards.stopped_reason.startswith("mean reward stayed at -2.000 for 1 step: every group scores the same")


def test_the_constant_reward_window_spans_a_resume():
    """A run resumed after 2 of 3 constant-reward steps stops at the third, as the uninterrupted run would."""
    from lowres.train.rlvr import SmallDataGuards

    guards = SmallDataGuards(truncation_warn_fraction=1.0, max_completion_length=16, constant_steps=3)
    resumed = types.SimpleNamespace(global_step=2, log_history=[{"reward": 0.5, "step": 1}, {"loss": 0.1},
                                                                 {"reward": 0.5, "step": 2}])
    control = types.SimpleNamespace(should_training_stop=False)
    guards.on_train_begin(None, resumed, control)
    guards.on_log(None, types.SimpleNamespace(global_step=3), control, logs={"reward": 0.5})
    assert control.should_training_stop and guards.rewards == [0.5, 0.5, 0.5]
