"""Small pieces the training stages share: precision flags and the out-of-memory message."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lowres.errors import OutOfMemory
from lowres.hardware import Hardware


def precision_flags(hw: Hardware, autocast=None) -> dict[str, bool]:
    """TrainingArguments mixed-precision flags for the chosen dtype (none on CPU: it trains in fp32/bf16
    weights directly), or bf16 autocast where `autocast` (hardware.loss_dtype) asks for it."""
    import torch

    if autocast is torch.bfloat16:
        return {"bf16": True, "fp16": False}
    if hw.device != "cuda":
        return {"bf16": False, "fp16": False}
    return {"bf16": hw.dtype == "bf16", "fp16": hw.dtype == "fp16"}


def optimizer_args(section) -> dict:
    """The optimizer and schedule a stage section (recipe.warmup, recipe.rlvr) asks for, passed to the trainer
    config explicitly: Unsloth's config classes change the defaults of these (adamw_8bit, weight decay 0.001,
    10% warmup), so a value left to the library would make the two backends train differently."""
    return {"optim": section.optim, "weight_decay": section.weight_decay,
            "lr_scheduler_type": section.lr_scheduler_type,
            "warmup_steps": section.warmup_ratio}  # transformers 5 reads a value below 1 as a share of the steps


def ddp_args(recipe) -> dict:
    """TrainingArguments for several processes (DDP): LoRA uses every trainable weight in every step, so
    DDP need not search the graph for unused ones (that search also breaks with gradient checkpointing);
    and the other processes keep the libraries as quiet as the main one (transformers would set them to
    its "warning" level)."""
    if recipe.num_processes == 1:
        return {}
    return {"ddp_find_unused_parameters": False, "log_level_replica": "error"}


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA out of memory, as torch raises it (or as some kernels word it in a RuntimeError)."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


@contextlib.contextmanager
def oom_guard(stage: str, settings: dict[str, object], gradient_checkpointing: bool | None = None):
    """Turn out-of-GPU-memory into one line naming the stage and the settings (with their values now)
    that lower memory, instead of a CUDA traceback. `settings`: recipe key -> current value; a key
    ending in load_in_4bit is advised only when it is off."""
    try:
        yield
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        lower = [f"{key} ({value})" for key, value in settings.items() if not key.endswith("load_in_4bit")]
        advice = "lower " + ", ".join(lower[:-1]) + (" or " if len(lower) > 1 else "") + lower[-1]
        four_bit = [key for key, value in settings.items() if key.endswith("load_in_4bit") and not value]
        if four_bit:
            advice += f", or set {four_bit[0]}: true"
        if gradient_checkpointing is not None:
            advice += f" (gradient checkpointing is {'on' if gradient_checkpointing else 'off'})"
        raise OutOfMemory(f"{stage}: out of GPU memory{_peak()}; {advice}") from None


def _peak() -> str:
    import torch

    from lowres.hardware import MEMORY_CAP, memory_cap_gib

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cap = memory_cap_gib()
        under = f", under the {cap:g} GiB cap ({MEMORY_CAP}): it does not fit a card that size" if cap else ""
        return f" at {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB{under}"
    return ""


def stage_callbacks(trainer) -> None:
    """The callbacks every training stage's trainer gets: transformers' print-every-log ones removed (LiveView
    and metrics.jsonl replace them), and checkpoints that follow the umask (CheckpointModes)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from lowres.train.callbacks import CheckpointModes

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(CheckpointModes())


def save_stage_output(out_dir: Path, stage: str, trainer, tokenizer, recipe, summary: dict) -> Path:
    """A training stage's outputs, each written whole or not at all: the adapter (with the tokenizer),
    recipe.yaml and summary.json; then the checkpoints are marked as belonging to a finished run.
    Returns the adapter folder. With several processes only the main one writes, and the others wait
    for it (so the stage ends when its output is there)."""
    from lowres import artifacts
    from lowres.recipe import dump_recipe
    from lowres.train.resume import mark_finished

    adapter_dir = out_dir / "adapter"
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return adapter_dir
    with artifacts.disk_guard(out_dir, stage):
        with artifacts.building_folder(adapter_dir) as tmp:
            trainer.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        artifacts.write_text(out_dir / "recipe.yaml", dump_recipe(recipe))
        artifacts.write_json(out_dir / "summary.json", summary)
        mark_finished(out_dir)
    trainer.accelerator.wait_for_everyone()
    return adapter_dir


def tracking_args(recipe, stage: str, out_dir: Path) -> dict:
    """TrainingArguments for `output.report_to`: TensorBoard event files in <stage>/tensorboard/ (not
    under checkpoints/, which a fresh start sets aside), and a Weights & Biases run named
    <recipe>-<stage> with the whole recipe as its config."""
    import os

    report_to = list(recipe.output.report_to)
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(out_dir) / "tensorboard")  # read by transformers
    from lowres.distributed import is_main_process

    if "wandb" in report_to and is_main_process():  # transformers logs from the main process only
        import wandb

        if wandb.run is None:  # transformers' WandbCallback logs into the run that is open
            wandb.init(project=os.environ.get("WANDB_PROJECT", "lowres"), name=f"{recipe.name}-{stage}",
                       config=recipe.to_dict())
    return {"report_to": report_to or "none", "run_name": f"{recipe.name}-{stage}"}
