"""The learning curve on held-out questions: during GRPO, every `rlvr.heldout_every` steps (and before the
first), the policy answers a fixed subset of the task's test split; its accuracy and share of well-formed
answers go to metrics.jsonl beside the train reward. The train reward alone cannot tell learning from
memorising a few dozen prompts, nor a better format from better answers.

The sampling draws from its own seeded generator, so the curve leaves the training run's random state, and
so its steps, unchanged."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from transformers import TrainerCallback

from lowres.artifacts import append_jsonl
from lowres.evaluate import GenerationSettings, generate_completions
from lowres.prompting import render_prompt
from lowres.recipe import Recipe
from lowres.tasks import Task
from lowres.ui import console


def heldout_settings(recipe: Recipe) -> GenerationSettings:
    """The evaluation's sampling settings, with the curve's own number of samples per question."""
    ev = recipe.eval
    return GenerationSettings(n_samples=recipe.rlvr.heldout_samples, temperature=ev.temperature, top_p=ev.top_p,
                              max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size,
                              chat_template=recipe.model.chat_template, seed=recipe.seed)


class HeldOutCurve(TrainerCallback):
    """Scores the policy on `rows` (the task's test split) before training and every `every` steps after."""

    def __init__(self, task: Task, rows: list[dict], tokenizer, settings: GenerationSettings, every: int,
                 metrics: Path, rollout_dtype=None):
        self.task, self.rows, self.tokenizer, self.settings = task, rows, tokenizer, settings
        self.every, self.metrics, self.rollout_dtype = every, Path(metrics), rollout_dtype
        self.prompts = [render_prompt(tokenizer, task.prompt(row), settings.chat_template) for row in rows]
        self.scored: set[int] = set()

    def score(self, model, step: int) -> dict:
        import torch

        started, was_training, padding_side = time.time(), model.training, self.tokenizer.padding_side
        model.eval()
        try:
            with torch.no_grad():
                outs = generate_completions(model, self.tokenizer, self.prompts, self.settings,
                                            description=f"held-out, step {step}", show_progress=False,
                                            rollout_dtype=self.rollout_dtype)
        finally:
            model.train(was_training)
            self.tokenizer.padding_side = padding_side
        scores = [self.task.score(text, row) for row, samples in zip(self.rows, outs, strict=True)
                  for text, _, _ in samples]
        record = {"stage": "rlvr", "step": step, "time": round(time.time(), 2),
                  "heldout_accuracy": statistics.fmean(s.correct for s in scores),
                  "heldout_formatted": statistics.fmean(s.formatted for s in scores),
                  "heldout_questions": len(self.rows), "heldout_samples": self.settings.n_samples,
                  "heldout_seconds": round(time.time() - started, 1)}
        append_jsonl(self.metrics, record)
        console.print(f"held-out at step {step}: {100 * record['heldout_accuracy']:.1f}% right, "
                      f"{100 * record['heldout_formatted']:.0f}% well-formed ({len(self.rows)} questions × "
                      f"{self.settings.n_samples}, {record['heldout_seconds']:.0f} s)")
        self.scored.add(step)
        return record

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step not in self.scored and model is not None:
            self.score(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.max_steps and state.global_step >= state.max_steps
        if (state.is_world_process_zero and model is not None and state.global_step not in self.scored
                and (state.global_step % self.every == 0 or last or control.should_training_stop)):
            self.score(model, state.global_step)
