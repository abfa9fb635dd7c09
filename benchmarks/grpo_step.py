"""GRPO step time: lowres's GRPO trainer against plain TRL `GRPOTrainer` + PEFT, side by side.

    python benchmarks/grpo_step.py [--steps 3] [--prompts 8] [--generations 4] [--tokens 256] [--micro-batch 8]
                                   [--rollout-dtype auto|model|bf16] [--loss-dtype auto|model|bf16]
                                   [--trl-bf16 | --trl-defaults] [--reward task|varied]
                                   [--model embedded:smollm2-135m | --model-config qwen2.5-1.5b] [--device cuda]

Both trainers get the same model (two copies with the same LoRA initialisation), the same K&K prompts
(kk_easy), the same reward (the task's grader) and one and the same GRPOConfig, built by lowres from
the demo recipe with the shapes above. On a CPU without Triton both use lowres's stand-in for TRL's
log-prob kernel (plain TRL cannot train there without one). One untimed step each, then the steps
alternate A B B A …, so a machine whose speed drifts treats both alike. Each step's time is split into
generation (sampling plus grading, `_generate_and_score_completions`) and training (the rest: forward,
backward, optimizer step). The table prints medians; `--json FILE` keeps every step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class StepClock:
    """A TrainerCallback (built lazily: transformers is imported after the backend is prepared) that
    records each optimizer step's wall time and the generation time inside it."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.steps: list[dict] = []
        clock = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock._started, clock._generation, clock._tokens, clock._idle = time.perf_counter(), 0.0, 0, []

            def on_step_end(self, args, state, control, **kwargs):
                clock.steps.append({"seconds": time.perf_counter() - clock._started,
                                    "generation_seconds": clock._generation,
                                    "completion_tokens": clock._tokens,
                                    "zero_advantage_rows": statistics.fmean(clock._idle) if clock._idle else 0.0})

        generate = trainer._generate_and_score_completions

        def timed_generate(inputs):  # timing only: the trainer's own method does the work
            started = time.perf_counter()
            out = generate(inputs)
            clock._generation += time.perf_counter() - started
            clock._tokens += int(out["completion_mask"].sum())
            clock._idle.append(float((out["advantages"] == 0).float().mean()))
            return out

        trainer._generate_and_score_completions = timed_generate
        trainer.add_callback(_Callback())


def varied_reward(completions, **kwargs) -> list[float]:
    """A stand-in reward in [0, 1) that differs between completions (a hash of the text): with it every
    group has variance, as on a task the model half solves, whatever the model (a random one too)."""
    import hashlib

    texts = [c if isinstance(c, str) else json.dumps(c) for c in completions]
    return [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 2**32 for t in texts]


def build(args):
    import torch

    from lowres.bench import matmul_gflops, random_model
    from lowres.hardware import detect
    from lowres.recipe import load_recipe, resolve_recipe_path
    from lowres.train.backend import load_trainable, prepare_backend, uses_gradient_checkpointing

    hw = detect("auto", "transformers")
    if args.device == "cuda" and hw.device != "cuda":
        sys.exit("--device cuda: no CUDA GPU here")
    if args.device == "cpu" and hw.device != "cpu":
        sys.exit("--device cpu on a GPU machine: hide the GPU with CUDA_VISIBLE_DEVICES=")
    prepare_backend(hw)
    model_ref = str(random_model(args.model_config)) if args.model_config else args.model
    rows = args.prompts * args.generations
    if rows % args.micro_batch:
        sys.exit(f"--micro-batch {args.micro_batch} must divide prompts × generations ({rows})")
    recipe = load_recipe(resolve_recipe_path("demo"), [
        f"model.name_or_path={model_ref}", f"rlvr.per_device_train_batch_size={args.micro_batch}",
        f"rlvr.gradient_accumulation_steps={rows // args.micro_batch}",
        f"rlvr.num_generations={args.generations}", f"rlvr.max_completion_length={args.tokens}",
        f"rlvr.lora.r={args.lora_r}", f"rlvr.lora.lora_alpha={2 * args.lora_r}", "rlvr.max_steps=1",
        f"rlvr.rollout_dtype={args.rollout_dtype}", f"rlvr.loss_dtype={args.loss_dtype}",
        f"data.target.n_examples={args.prompts}",
        "rlvr.save_steps=100000",
    ])
    checkpointing = hw.device != "cpu" and uses_gradient_checkpointing(hw)  # as lowres rlvr decides
    models = [load_trainable(model_ref, hw, recipe.rlvr.lora, load_in_4bit=False, max_seq_length=4096,
                             seed=0, gradient_checkpointing=checkpointing) for _ in range(2)]
    return hw, recipe, models, checkpointing, matmul_gflops, torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per trainer (after one untimed)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256, help="max_completion_length")
    parser.add_argument("--micro-batch", type=int, default=8,
                        help="rows per forward/backward (per_device_train_batch_size); the rest is accumulation")
    parser.add_argument("--rollout-dtype", choices=("auto", "model", "bf16"), default="auto",
                        help="lowres's rlvr.rollout_dtype (plain TRL samples in the model's dtype)")
    parser.add_argument("--loss-dtype", choices=("auto", "model", "bf16"), default="auto",
                        help="lowres's rlvr.loss_dtype")
    parser.add_argument("--trl-bf16", action="store_true",
                        help="give plain TRL bf16=True (its mixed precision) on an fp32 model")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="give plain TRL GRPOConfig's own defaults: bf16=True and gradient_checkpointing=True")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--model-config", help="a random model of this shape instead (see lowres bench)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--reward", choices=("task", "varied"), default="task",
                        help="task: the kk_easy grader; varied: a reward that differs within every group (a hash "
                             "of the completion), so no row has zero advantage — the case where lowres skips none")
    parser.add_argument("--only", choices=("lowres", "trl"), help="time one trainer only (for profiling)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    hw, recipe, models, checkpointing, matmul_gflops, torch = build(args)
    from trl import GRPOTrainer

    from lowres.rewards import reward_functions
    from lowres.tasks import get_task
    from lowres.train.common import stage_callbacks
    from lowres.train.examples import training_rows
    from lowres.train.rlvr import (
        build_dataset,
        grpo_config,
        loss_dtype,
        lowres_grpo_trainer,
        rollout_dtype,
    )

    tokenizer = models[0][1]
    dataset = build_dataset(training_rows(recipe), tokenizer, recipe)
    rewards = list(reward_functions(get_task("kk_easy"))) if args.reward == "task" else [varied_reward]
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, tok) in zip(("lowres", "trl"), models, strict=True):
            if args.only and name != args.only:
                continue
            config = grpo_config(recipe, hw, Path(tmp) / name, checkpointing)
            # GRPOConfig derives generation_batch_size from steps_per_generation and refuses both: the copy
            # derives it again.
            if name == "trl" and args.trl_bf16:  # TRL's own mixed precision, as a user could set it
                config = dataclasses.replace(config, bf16=True, generation_batch_size=None)
            if name == "trl" and args.trl_defaults:  # GRPOConfig's own defaults where they differ from lowres's
                config = dataclasses.replace(config, bf16=True, gradient_checkpointing=True, generation_batch_size=None)
            cls = lowres_grpo_trainer(recipe, hw) if name == "lowres" else GRPOTrainer
            trainer = cls(model=model, reward_funcs=rewards, args=config, train_dataset=dataset,
                          processing_class=tok)
            stage_callbacks(trainer)
            trainers[name] = (trainer, StepClock(trainer))
        names = list(trainers)
        gflops = [matmul_gflops()]
        for name in names:  # untimed: allocator, first-call costs
            trainers[name][0].train()
            trainers[name][1].steps.clear()
        for i in range(args.steps):
            for name in (names if i % 2 == 0 else names[::-1]):
                trainers[name][0].train()
        gflops.append(matmul_gflops())

    rollout, loss_in = rollout_dtype(args.rollout_dtype, hw), loss_dtype(args.loss_dtype, hw)
    sampled_in = str(rollout).removeprefix("torch.") if rollout else hw.dtype
    trl_precision = ("bf16 autocast, gradient checkpointing on" if args.trl_defaults
                     else "bf16 autocast" if args.trl_bf16 else hw.dtype)
    loss_in = str(loss_in).removeprefix("torch.") if loss_in else hw.dtype
    print(f"{args.model_config or args.model} on {hw.device} ({hw.gpu_name or f'{torch.get_num_threads()} threads'}), "
          f"{hw.dtype} (lowres samples in {sampled_in}, loss in {loss_in}; plain TRL in "
          f"{trl_precision}); "
          f"{args.prompts} prompts × {args.generations} completions (micro-batches of {args.micro_batch}), "
          f"≤{args.tokens} new tokens, "
          f"LoRA r={args.lora_r}, {args.reward} reward, gradient checkpointing {'on' if checkpointing else 'off'}; "
          f"fp32 matmul {gflops[0]:.0f} → {gflops[1]:.0f} GFLOP/s (2048², before → after)")
    table = {}
    for name in names:
        steps = trainers[name][1].steps
        med = {k: statistics.median(s[k] for s in steps) for k in ("seconds", "generation_seconds")}
        tokens = sum(s["completion_tokens"] for s in steps)
        table[name] = {**med, "training_seconds": med["seconds"] - med["generation_seconds"],
                       "tokens_per_second": tokens / sum(s["generation_seconds"] for s in steps), "steps": steps}
        print(f"  {name:>6}: step {med['seconds']:6.1f} s = generation {med['generation_seconds']:6.1f} s "
              f"({table[name]['tokens_per_second']:5.0f} tok/s) + training {table[name]['training_seconds']:6.1f} s"
              f"   (median of {len(steps)} steps; rows with zero advantage: "
              f"{100 * statistics.fmean(s['zero_advantage_rows'] for s in steps):.0f}%)")
    if len(names) == 2:
        a, b = table["lowres"], table["trl"]
        print(f"  lowres is {b['seconds'] / a['seconds']:.2f}× plain TRL per step "
              f"(generation {b['generation_seconds'] / a['generation_seconds']:.2f}×, "
              f"training {b['training_seconds'] / a['training_seconds']:.2f}×)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "gflops": gflops,
                                         "device": hw.device, "gpu": hw.gpu_name, "trainers": table}, indent=1))


if __name__ == "__main__":
    main()
