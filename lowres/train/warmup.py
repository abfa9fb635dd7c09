"""Stage 1, warmup: (Q)LoRA supervised fine-tuning on long chain-of-thought traces.

Data: prompt/completion pairs — solver-written K&K traces made on the fly (`source: kk-solver`) or a
JSONL file (from `lowres kk traces`, `lowres distill`, or your own). The loss is on the completion
only. Examples longer than model.max_seq_length are dropped and counted, never silently cut: a
truncated trace would teach the model to stop before its answer.

Output folder: adapter/ (LoRA weights + tokenizer), checkpoints/ (for resume), recipe.yaml,
metrics.jsonl and summary.json.
"""

from __future__ import annotations

import random
from pathlib import Path

from lowres.artifacts import disk_guard, output_folder
from lowres.errors import UserError
from lowres.fingerprint import stage_fingerprints
from lowres.hardware import Hardware, detect, loss_dtype, resolve_load_in_4bit
from lowres.prompting import render_prompt
from lowres.recipe import Recipe
from lowres.tasks.base import r1_messages
from lowres.tasks.data import read_trace_file
from lowres.train.backend import load_trainable, prepare_backend, trainable_in_fp32, uses_gradient_checkpointing
from lowres.train.callbacks import LiveView, MetricsLogger, ScheduleGuard, peak_memory
from lowres.train.common import (
    ddp_args,
    oom_guard,
    optimizer_args,
    precision_flags,
    save_stage_output,
    stage_callbacks,
    tracking_args,
)
from lowres.train.resume import finished_before, resume_point
from lowres.ui import console, counted


def load_warmup_examples(recipe: Recipe) -> list[dict]:
    source = recipe.data.warmup
    if source.source == "kk-solver":
        from lowres.tasks.kk.task import solver_trace_rows

        return solver_trace_rows(source.n_puzzles, source.people, source.seed, brief=source.trace_style == "brief")
    return read_trace_file(Path(source.source))


def to_text_pairs(examples: list[dict], tokenizer, recipe: Recipe) -> tuple[list[dict], int]:
    """Render prompts with the model's template; drop (and count) pairs over max_seq_length."""
    pairs, dropped = [], 0
    eos = tokenizer.eos_token or ""
    for ex in examples:
        messages = ex["prompt"] if isinstance(ex["prompt"], list) else r1_messages(str(ex["prompt"]))
        prompt = render_prompt(tokenizer, messages, recipe.model.chat_template)
        completion = str(ex["completion"])
        if prompt.endswith("<think>") and completion.lstrip().startswith("<think>"):
            completion = completion.lstrip()[len("<think>"):]  # the r1 template already opened it
        n_tokens = len(tokenizer(prompt + completion + eos, add_special_tokens=False)["input_ids"])
        if n_tokens > recipe.model.max_seq_length:
            dropped += 1
            continue
        pairs.append({"prompt": prompt, "completion": completion})
    return pairs, dropped


def sft_config(recipe: Recipe, hw: Hardware, out_dir: Path, gradient_checkpointing: bool, held_out: bool):
    """The SFTConfig of the warmup stage; every setting that shapes the training is passed explicitly, so that
    Unsloth's SFTConfig (whose defaults differ) trains the same thing as TRL's."""
    from trl import SFTConfig

    cfg = recipe.warmup
    return SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, **optimizer_args(cfg), loss_type="nll",
        max_length=recipe.model.max_seq_length, packing=cfg.packing, completion_only_loss=True,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=2,
        eval_strategy="steps" if held_out else "no", eval_steps=cfg.save_steps if held_out else None,
        **tracking_args(recipe, "warmup", out_dir), seed=recipe.seed, disable_tqdm=True,
        include_num_input_tokens_seen=True, use_cpu=hw.device == "cpu", dataset_num_proc=None,
        gradient_checkpointing=gradient_checkpointing, **precision_flags(hw, loss_dtype(cfg.loss_dtype, hw)),
        **ddp_args(recipe),
    )


def _final_eval_loss(trainer) -> float:
    """The held-out loss at the last step: logged already if the last step was an eval step."""
    for record in reversed(trainer.state.log_history):
        if "eval_loss" in record:
            if record.get("step") == trainer.state.global_step:
                return record["eval_loss"]
            break
    return trainer.evaluate()["eval_loss"]


def run_warmup(recipe: Recipe, out_dir: Path | None = None, callbacks: tuple = ()) -> Path:
    """Train the warmup adapter; returns the stage folder (adapter in <out_dir>/adapter).

    callbacks: extra transformers TrainerCallbacks (progress hooks, tests).
    """
    out_dir = output_folder(out_dir or recipe.run_dir / "warmup", "warmup folder")
    cfg = recipe.warmup
    fingerprint = stage_fingerprints(recipe)["warmup"]
    if finished_before(out_dir, fingerprint, out_dir / "adapter"):
        console.print(f"warmup: finished before with the same settings → {out_dir / 'adapter'} "
                      "(`lowres run --force warmup` trains it again)")
        return out_dir
    hw = detect(recipe.model.dtype, recipe.model.backend, recipe.num_processes)
    prepare_backend(hw)
    autocast = loss_dtype(cfg.loss_dtype, hw)
    examples = load_warmup_examples(recipe)
    checkpointing = uses_gradient_checkpointing(hw, recipe.model.name_or_path,
                                                cfg.per_device_train_batch_size * recipe.model.max_seq_length)
    four_bit, _ = resolve_load_in_4bit(cfg.load_in_4bit, hw.device)
    model, tokenizer = load_trainable(recipe.model.name_or_path, hw, cfg.lora, load_in_4bit=four_bit,
                                      max_seq_length=recipe.model.max_seq_length, seed=recipe.seed,
                                      gradient_checkpointing=checkpointing)
    pairs, dropped = to_text_pairs(examples, tokenizer, recipe)
    if not pairs:
        raise UserError(f"all {len(examples)} warmup examples are longer than model.max_seq_length "
                        f"({recipe.model.max_seq_length}); raise it or use shorter traces")
    if dropped:
        console.print(f"[yellow]dropped {dropped} of {len(examples)} warmup examples longer than "
                      f"max_seq_length={recipe.model.max_seq_length} (raise it to keep them)[/yellow]")

    from datasets import Dataset
    from trl import SFTTrainer

    random.Random(recipe.seed).shuffle(pairs)
    n_eval = int(len(pairs) * cfg.eval_fraction) if len(pairs) >= 20 else 0
    train, held_out = pairs[n_eval:], pairs[:n_eval]
    args = sft_config(recipe, hw, out_dir, checkpointing, held_out=bool(held_out))
    resume = resume_point(out_dir, "warmup", fingerprint, args)
    live = LiveView("warmup", ("loss", "eval_loss"))
    trainer = SFTTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(held_out) if held_out else None,
        callbacks=[ScheduleGuard("warmup"), MetricsLogger(out_dir / "metrics.jsonl", "warmup"), live, *callbacks],
    )
    stage_callbacks(trainer)
    trainable_in_fp32(trainer.model, hw)
    if resume:
        console.print(f"resuming warmup from {resume}")
    memory_settings = {"warmup.per_device_train_batch_size": cfg.per_device_train_batch_size,
                       "model.max_seq_length": recipe.model.max_seq_length, "warmup.load_in_4bit": four_bit}
    try:
        with oom_guard("warmup", memory_settings, checkpointing), disk_guard(out_dir, "warmup"):
            result = trainer.train(resume_from_checkpoint=resume)
            eval_loss = _final_eval_loss(trainer) if held_out else None
    finally:
        live.close()

    summary = {
        "examples": len(examples), "dropped_over_max_seq_length": dropped, "train_examples": len(train),
        "held_out_examples": len(held_out), "steps": result.global_step, "train_loss": result.training_loss,
        "eval_loss": eval_loss, "base_model": recipe.model.name_or_path, "load_in_4bit": four_bit,
        "backend": hw.backend, "dtype": hw.dtype,
        "loss_dtype": str(autocast or hw.dtype).removeprefix("torch."), "gradient_checkpointing": checkpointing,
        "peak_memory": peak_memory(), "processes": recipe.num_processes,
    }
    adapter_dir = save_stage_output(out_dir, "warmup", trainer, tokenizer, recipe, summary)
    console.print(f"warmup: {counted(result.global_step, 'step')}, train loss {result.training_loss:.4f}"
                  + (f", held-out loss {eval_loss:.4f}" if eval_loss is not None else "") + f" → {adapter_dir}")
    return out_dir
