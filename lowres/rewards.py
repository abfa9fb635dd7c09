"""Reward functions in the shape TRL's GRPOTrainer calls them.

TRL 1.15 calls `fn(prompts=..., completions=..., completion_ids=..., **columns)` where `columns`
holds every dataset column (one value per completion) plus `trainer_state`, `log_extra`,
`log_metric`, and returns one float per completion. It logs each function under its `__name__`
and sums them with `GRPOConfig.reward_weights`. A dataset may carry each row whole, as JSON, in a
`row_json` column (nested fields survive `datasets` that way); it is decoded back into the row.

A reward function here never raises: a training step must not die on one odd completion. An
internal error scores as a format failure and is counted in `.errors` (and, when TRL passes
`log_metric`, logged as `reward_errors/<name>`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from lowres.tasks.answers import has_r1_format

# DEFAULT_REWARDS, RewardValues: the reward values a grader pays live beside Score; still importable from here,
# their former home.
from lowres.tasks.base import DEFAULT_REWARDS, RewardValues, Score, Task  # noqa: F401

log = logging.getLogger(__name__)

# The column that carries a whole dataset row as JSON.
ROW_JSON = "row_json"
# Keyword arguments TRL adds that are not dataset columns.
_TRL_EXTRAS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})
_MAX_LOGGED_ERRORS = 5


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or TRL's conversational form `[{"role", "content"}]`.

    Assistant turns are joined; content given as parts (`[{"type": "text", "text": ...}]`) is
    flattened. Anything else raises TypeError (the reward function counts it as an error).
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)) and all(isinstance(m, dict) for m in completion):
        turns = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return "".join(_content_text(m.get("content")) for m in turns)
    raise TypeError(f"a completion must be a string or a list of chat messages, not {type(completion).__name__}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(part.get("text") or "" if isinstance(part, dict) else str(part) for part in content)
    raise TypeError(f"message content must be text, not {type(content).__name__}")


class _SafeReward:
    """Shared plumbing: normalise TRL's arguments, score each completion, never raise."""

    __name__ = "reward"
    failure_value = 0.0

    def __init__(self) -> None:
        self.errors = 0  # completions whose grading raised, since creation
        self.calls = 0

    def __call__(self, prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float]:
        self.calls += 1
        items = _as_list(completions, prompts)
        batch_errors = 0
        try:
            rewards = self._rewards(items, _rows_from_columns(kwargs, len(items)))
        except Exception as exc:  # a bug or garbage for the whole batch: every completion failed
            rewards = [exc] * len(items)
        out = []
        for value in rewards:
            if isinstance(value, BaseException):
                self._record_error(value)
                batch_errors += 1
                value = None
            if value is None:
                out.append(float(self.failure_value))
            else:
                out.append(value)
        self._log_errors(kwargs.get("log_metric"), batch_errors, len(items))
        return out

    def _rewards(self, items: list[Any], rows: list[dict[str, Any]]) -> list[Any]:
        """One reward (a finite float), or the exception that grading raised, per item."""
        raise NotImplementedError

    def _record_error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors <= _MAX_LOGGED_ERRORS:
            log.warning("reward %s failed on a completion (%d so far): %s: %s",
                        self.__name__, self.errors, type(exc).__name__, exc)

    def _log_errors(self, log_metric: Any, batch_errors: int, n: int) -> None:
        if callable(log_metric) and n:
            try:
                log_metric(f"reward_errors/{self.__name__}", batch_errors / n)
            except Exception:
                pass


def _as_list(completions: Any, prompts: Any) -> list[Any]:
    """TRL passes a list; tolerate a single completion or None (one failure per prompt)."""
    if isinstance(completions, (list, tuple)):
        return list(completions)
    if completions is None:
        return [None] * (len(prompts) if isinstance(prompts, (list, tuple)) else 0)
    return [completions]


def _rows_from_columns(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Rebuild each completion's dataset row from TRL's column-wise keyword arguments."""
    usable = {
        key: value for key, value in columns.items()
        if key not in _TRL_EXTRAS and isinstance(value, (list, tuple)) and len(value) == n
    }
    rows = []
    for i in range(n):
        row = {key: value[i] for key, value in usable.items()}
        packed = row.pop(ROW_JSON, None)
        if isinstance(packed, str):
            try:
                decoded = json.loads(packed)
                row = {**decoded, **row} if isinstance(decoded, dict) else row
            except ValueError:
                pass  # the grader then misses its fields and the error is counted
        rows.append(row)
    return rows


def _finite(value: Any) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"non-finite reward {value}")
    return value


class TaskReward(_SafeReward):
    """The reward of a task's grader: `task.score(text, row).reward` for each completion.

    Tasks with a `score_many(texts, rows)` (code execution, say) grade the batch in parallel.
    """

    def __init__(self, task: Task, name: str | None = None) -> None:
        super().__init__()
        self._last_scores: list[Score] = []
        self.task = task
        self.__name__ = name or f"{task.name}_reward"
        rewards = getattr(task, "rewards", None)
        self.failure_value = getattr(rewards, "unformatted", 0.0)

    def _rewards(self, items: list[Any], rows: list[dict[str, Any]]) -> list[Any]:
        texts: list[Any] = []
        for item in items:
            try:
                texts.append(completion_text(item))
            except Exception as exc:
                texts.append(exc)
        good = [i for i, text in enumerate(texts) if isinstance(text, str)]
        results: list[Any] = list(texts)
        score_many = getattr(self.task, "score_many", None)
        if callable(score_many) and len(good) > 1:
            try:
                scores = score_many([texts[i] for i in good], [rows[i] for i in good])
                for i, score in zip(good, scores, strict=True):
                    results[i] = score
            except Exception as exc:
                for i in good:
                    results[i] = exc
        else:
            for i in good:
                try:
                    results[i] = self.task.score(texts[i], rows[i])
                except Exception as exc:
                    results[i] = exc
        self._last_scores = [r for r in results if isinstance(r, Score)]
        self.last_verdicts = [r if isinstance(r, Score) else None for r in results]  # aligned with the items
        return [_reward_of(r) for r in results]

    def __call__(self, prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float]:
        """The rewards; also logs the batch's accuracy and format rate next to TRL's metrics."""
        self._last_scores = []
        rewards = super().__call__(prompts, completions, **kwargs)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and self._last_scores:
            n = len(self._last_scores)
            try:
                log_metric(f"{self.__name__}/accuracy", sum(s.correct for s in self._last_scores) / n)
                log_metric(f"{self.__name__}/format_rate", sum(s.formatted for s in self._last_scores) / n)
            except Exception:  # logging must never cost a training step
                pass
        return rewards


def _reward_of(result: Any) -> Any:
    if isinstance(result, BaseException):
        return result
    try:
        if not isinstance(result, Score):
            raise TypeError(f"score() returned {type(result).__name__}, not Score")
        return _finite(result.reward)
    except Exception as exc:
        return exc


class FormatReward(_SafeReward):
    """Pays `formatted` for the R1 layout `<think> ... </think> <answer> ... </answer>`, else `unformatted`.

    Each tag appears once, the answer comes last, and the opening <think> may be in the prompt.
    """

    def __init__(self, formatted: float = 1.0, unformatted: float = 0.0, name: str = "format_reward") -> None:
        super().__init__()
        self.formatted, self.unformatted = formatted, unformatted
        self.failure_value = unformatted
        self.__name__ = name

    def _rewards(self, items: list[Any], rows: list[dict[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            try:
                out.append(self.formatted if has_r1_format(completion_text(item)) else self.unformatted)
            except Exception as exc:
                out.append(exc)
        return out


class CoinFlipReward(_SafeReward):
    """The spurious-reward control: 1 or 0 by a seeded coin flip that ignores the answer (Shao et al. 2025,
    "Spurious Rewards": on Qwen2.5 models GRPO with random rewards raised MATH-500 by 21 points, against 29 for
    the true reward). A completion's flip is a hash of the seed, the training step, its place in the batch, its
    prompt and its text: reproducible, a resumed run pays what the interrupted one would have (the step comes
    back with the checkpoint), and a fresh flip every step, so a policy that repeats a completion cannot learn
    which completions pay (with the text alone hashed, a tiny model that collapsed onto a few completions
    learned to collect 0.86 of the coin's payouts)."""

    def __init__(self, seed: int, name: str = "coin_flip_reward") -> None:
        super().__init__()
        self.seed = seed
        self.__name__ = name

    def __call__(self, prompts: Any = None, completions: Any = None, **kwargs: Any) -> list[float]:
        self._prompts = list(prompts) if isinstance(prompts, (list, tuple)) else []
        state = kwargs.get("trainer_state")  # TRL passes the trainer's state to every reward function
        self._step = getattr(state, "global_step", None)
        return super().__call__(prompts, completions, **kwargs)

    def _rewards(self, items: list[Any], rows: list[dict[str, Any]]) -> list[Any]:
        import hashlib

        prompts = self._prompts if len(self._prompts) == len(items) else [None] * len(items)
        return [float(hashlib.sha256(json.dumps([self.seed, self._step, i, prompt, item], default=str)
                                     .encode()).digest()[0] & 1)
                for i, (prompt, item) in enumerate(zip(prompts, items, strict=True))]


class DistinctReward(_SafeReward):
    """A timing stand-in, for `lowres bench` only: a value in [0, 1) that differs between any two completions
    of a batch (a hash of the place and the text), so every group has variance and every row trains on every
    backend, whatever the model (a random one's task reward is constant, and its zero advantages would let
    the transformers backend skip rows that Unsloth's loss still computes)."""

    def __init__(self, name: str = "distinct_reward") -> None:
        super().__init__()
        self.__name__ = name

    def _rewards(self, items: list[Any], rows: list[dict[str, Any]]) -> list[Any]:
        import hashlib

        return [int.from_bytes(hashlib.sha256(json.dumps([i, item], default=str).encode()).digest()[:4], "big")
                / 2**32 for i, item in enumerate(items)]


def task_reward(task: Task | str, name: str | None = None) -> TaskReward:
    """The GRPO reward function for `task` (a Task or a registered task name)."""
    if isinstance(task, str):
        from lowres.tasks import get_task

        task = get_task(task)
    return TaskReward(task, name)


def format_reward(task: Task | str | None = None, formatted: float = 1.0, unformatted: float = 0.0) -> FormatReward:
    """The R1-layout reward function (`__name__` "format_reward"), mirroring `task_reward(task)`.

    The layout is the same for every task, so `task` only documents the pairing; each task's own
    answer format (a \\boxed{}, a code block) is already part of its grader's reward.
    """
    return FormatReward(formatted=formatted, unformatted=unformatted)


def reward_functions(task: Task | str, with_format: bool = False) -> Sequence[_SafeReward]:
    """The reward functions for GRPO on `task`: its grader, plus the format reward if asked."""
    funcs: list[_SafeReward] = [task_reward(task)]
    if with_format:
        funcs.append(format_reward(task))
    return funcs
