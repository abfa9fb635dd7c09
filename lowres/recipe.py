"""Recipes: one YAML file describes a whole run.

A recipe has sections (model, data, warmup, merge, rlvr, eval, output) that parse into the typed
dataclasses below. Field names follow TRL / PEFT (learning_rate, num_generations, lora r/alpha…) so
what users know about those libraries carries over.

Validation is strict and talks like a person: every problem names the file, the key path and what is
expected, and raises `RecipeError` (a `UserError`: one line, exit code 2). Overrides from the command
line (`--set rlvr.learning_rate=1e-6`) are applied to the raw YAML before validation, so they are
checked by the same rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lowres.errors import RecipeError, UserError
from lowres.fields import REQUIRED
from lowres.fields import setting as _f
from lowres.tasks.generic import TaskSpecSection, register_spec_tasks

STAGES = ("warmup", "merge", "rlvr", "rlvr-no-warmup", "rlvr-random-reward", "eval")
# The stages that train: timed by steps in `lowres bench`, run as num_processes processes by `lowres run`.
TRAINING_STAGES = ("warmup", "rlvr", "rlvr-no-warmup", "rlvr-random-reward")
# The GRPO arms: rlvr; rlvr-no-warmup, the same GRPO from the base model (the paper's no-warmup baseline);
# rlvr-random-reward, the same GRPO from rlvr's start model rewarded by a coin flip (the spurious-reward control).
RLVR_ARMS = ("rlvr", "rlvr-no-warmup", "rlvr-random-reward")
# Optimizers a recipe may name (transformers' names). The 8-bit ones are bitsandbytes' and need CUDA.
CUDA_ONLY_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
# The largest seed numpy accepts (np.random.seed: 0..2**32-1); transformers' set_seed seeds numpy with the run's seed.
MAX_SEED = 2**32 - 1
# The longest file or folder name (NAME_MAX) of the common file systems (ext4, XFS, Btrfs, APFS, NTFS): the
# run's name is its folder's name.
MAX_NAME_BYTES = 255
Optimizer = Literal["adamw_torch_fused", "adamw_torch", "adamw_8bit", "paged_adamw_8bit"]


def _fail(source: str, where: str, detail: str, related: tuple[str, ...] = ()) -> RecipeError:
    """The error for key `where`; `related`: other keys the problem involves (a `--set` of any of
    them is blamed)."""
    return RecipeError.at(source, where, detail, related)


def _section(cls):
    return field(default_factory=cls, metadata={"help": cls.__doc__.strip().splitlines()[0]})


@dataclass
class ModelSection:
    """The model to start from."""

    name_or_path: str = _f(REQUIRED, help="hub id, local folder, or embedded:smollm2-135m")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto", help="auto: bf16 where the GPU has it, else fp16; fp32 on CPU")
    backend: Literal["auto", "unsloth", "transformers"] = _f(
        "auto", help="training backend; auto: unsloth on a CUDA GPU where installed, else transformers+PEFT")
    max_seq_length: int = _f(2048, min=64, help="longest prompt+completion in tokens")
    chat_template: Literal["model", "r1"] = _f(
        "model", help="model: the model's chat template; r1: plain R1 text template")


@dataclass
class LoraSection:
    """LoRA adapter settings (PEFT LoraConfig names)."""

    r: int = _f(16, min=1, max=1024)
    lora_alpha: int = _f(32, min=1)
    lora_dropout: float = _f(0.0, min=0.0, max=0.9)
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class WarmupDataSection:
    """Where the warmup traces come from."""

    source: str = _f("kk-solver", help="kk-solver (offline, solver-written traces), or a .jsonl/.parquet file "
                     "of prompt+completion rows")
    n_puzzles: int = _f(1000, min=1, help="puzzles to generate for kk-solver")
    people: list[int] = _f([3, 4, 5, 6, 7], help="puzzle sizes (2-8 people)")
    seed: int = _f(0)
    trace_style: Literal["full", "brief"] = _f(
        "full", help="kk-solver traces. full: restate the rules and every claim, sometimes rule out the other "
        "assignments; brief: go straight to the search and the final check (about 22% fewer tokens at 2 people)")


@dataclass
class TaskDataSection:
    """The target task and its ≤100 RLVR examples."""

    task: str = _f("kk", help="a registered task: kk, math, gsm8k, humaneval_plus, mmlu_pro")
    n_examples: int = _f(100, min=1, max=100_000, help="training examples for RLVR (the paper: ≤100)")
    seed: int = _f(42)
    path: str | None = _f(None, help="local data file instead of the hub")
    category: str | None = _f(None, help="mmlu_pro category filter, e.g. physics")
    select: Literal["random", "informative"] = _f(
        "random", help="random: a seeded sample; informative: sample select_pool candidates with the start model "
        "(the signal check) and keep the prompts it sometimes but not always solves, filled up to n_examples "
        "(recorded in the stage's selection.json)")
    select_pool: int = _f(0, min=0, help="informative: candidate prompts to sample; 0: 2 × n_examples "
                          "(fewer if the data has fewer)")


@dataclass
class DataSection:
    """Data for both stages."""

    warmup: WarmupDataSection = _section(WarmupDataSection)
    target: TaskDataSection = _section(TaskDataSection)


@dataclass
class WarmupSection:
    """Stage 1: (Q)LoRA supervised fine-tuning on long chain-of-thought traces."""

    load_in_4bit: bool | Literal["auto"] = _f(
        "auto", help="QLoRA: base weights in 4-bit NF4. auto: 4-bit on a CUDA GPU with bitsandbytes installed, "
        "16-bit elsewhere (`lowres env` and the plan show which)")
    learning_rate: float = _f(1e-4, min=0.0, min_exclusive=True)
    num_train_epochs: float = _f(3.0, min=0.0, min_exclusive=True)
    max_steps: int = _f(-1, min=-1, help="-1: run num_train_epochs")
    per_device_train_batch_size: int = _f(1, min=1)
    gradient_accumulation_steps: int = _f(8, min=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _f("cosine")
    warmup_ratio: float = _f(0.05, min=0.0, max=0.5, help="share of the steps over which the learning rate "
                             "rises from 0")
    weight_decay: float = _f(0.0, min=0.0)
    optim: Optimizer = _f("adamw_torch_fused", help="optimizer, on both backends (Unsloth's own default, "
                          "adamw_8bit, is never applied silently); the 8-bit ones need a CUDA GPU")
    packing: bool = _f(False)
    loss_dtype: Literal["auto", "model", "bf16"] = _f(
        "auto", help="dtype the forward and backward compute in (autocast) when the model is fp32; the LoRA "
        "weights, their gradients and the optimizer stay fp32. auto: bf16 on a CPU that multiplies bf16 "
        "natively (a LoRA forward and backward of 4 x 510 tokens 1.8x faster on the 2-core dev machine), else model")
    eval_fraction: float = _f(0.05, min=0.0, max=0.5, help="held-out share of traces for eval loss")
    logging_steps: int = _f(1, min=1)
    save_steps: int = _f(50, min=1)
    lora: LoraSection = _section(LoraSection)


@dataclass
class MergeSection:
    """Merge the warmup adapter into the 16-bit base."""

    verify_prompts: int = _f(3, min=0, help="prompts on which merged and base+adapter logits are compared")
    tolerance: float = _f(1e-2, min=0.0, help="largest allowed relative logit difference in fp32 (16-bit merges "
                          "also get their dtype's rounding floor)")


@dataclass
class RLVRSection:
    """Stage 2: LoRA GRPO with the task's verifiable reward (TRL GRPOConfig names)."""

    start_from: Literal["warmup", "base"] = _f(
        "warmup", help="warmup: the merged warmed-up model; base: the paper's no-warmup baseline")
    load_in_4bit: bool = _f(False)
    # The paper trained all weights at 1e-6. A LoRA update moves far fewer parameters, so it needs a
    # learning rate about 10x higher to change the policy as much per step ("LoRA Without Regret").
    learning_rate: float = _f(1e-5, min=0.0, min_exclusive=True, help="LoRA needs about 10x full fine-tuning's "
                              "rate (the paper's 1e-6); the signal check flags less than 1e-5")
    max_steps: int = _f(-1, min=-1, help="-1: run num_train_epochs")
    num_train_epochs: float = _f(1.0, min=0.0, min_exclusive=True)
    per_device_train_batch_size: int = _f(8, min=1)
    gradient_accumulation_steps: int = _f(1, min=1)
    num_generations: int = _f(8, min=2, help="completions per prompt (a GRPO group)")
    max_prompt_length: int = _f(512, min=16)
    max_completion_length: int = _f(1024, min=8)
    temperature: float = _f(0.7, min=0.0, min_exclusive=True)
    top_p: float = _f(0.95, min=0.0, max=1.0, min_exclusive=True)
    beta: float = _f(0.0, min=0.0, help="KL coefficient; 0 as in the paper")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = _f("dapo")
    scale_rewards: Literal["group", "batch", "none"] = _f("group")
    epsilon: float = _f(0.2, min=0.0, min_exclusive=True)
    epsilon_high: float | None = _f(None, min=0.0, help="DAPO clip-higher (the paper: 0.28); None: same as epsilon")
    mask_truncated_completions: bool = _f(
        False, help="leave completions cut at max_completion_length out of the loss (DAPO); when every "
        "completion of a step is cut, the step then updates nothing")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = _f("linear")
    warmup_ratio: float = _f(0.0, min=0.0, max=0.5, help="share of the steps over which the learning rate "
                             "rises from 0")
    weight_decay: float = _f(0.0, min=0.0)
    optim: Optimizer = _f("adamw_torch_fused", help="optimizer, on both backends (Unsloth's own default, "
                          "adamw_8bit, is never applied silently); the 8-bit ones need a CUDA GPU")
    num_iterations: int = _f(1, min=1)
    format_reward_weight: float = _f(0.0, min=0.0, help="weight of an extra format reward")
    zero_variance_groups: Literal["keep", "skip"] = _f(
        "keep", help="skip: drop groups whose rewards are all equal (they carry no signal)")
    rollout_dtype: Literal["auto", "model", "bf16", "int8"] = _f(
        "auto", help="dtype the completions are sampled in (transformers backend): model: the training dtype; "
        "bf16: a bf16 copy of the weights; auto: bf16 when training in fp32 on a CPU that multiplies bf16 "
        "natively (about twice as fast), else model; int8 (CPU): int8 weight-only copies of the linear layers, "
        "refreshed each step, with the loss corrected by truncated importance sampling "
        "(rollout_importance_cap); the held-out curve and evaluation keep auto's weights")
    rollout_importance_cap: float = _f(
        2.0, min=1.0, help="with rollout_dtype int8, the cap C of each token's importance weight "
        "min(π_train / π_sampler, C) (truncated importance sampling)")
    loss_dtype: Literal["auto", "model", "bf16"] = _f(
        "auto", help="dtype the loss's forward and backward compute in (autocast) when the model is fp32; the "
        "LoRA weights, their gradients and the optimizer stay fp32. auto: bf16 on a CPU that multiplies "
        "bf16 natively, else model")
    vllm: Literal["auto", "none", "colocate", "server"] = _f(
        "auto", help="where GRPO samples its completions. auto: a vLLM engine inside the training process where "
        "Unsloth and vLLM are installed, else lowres's own sampling loop; none: never vLLM; colocate: a vLLM "
        "engine inside each training process; server: a separate `trl vllm-serve` at vllm_server_host:port")
    vllm_importance_sampling_correction: bool = _f(
        True, help="with vLLM rollouts, reweight each token by how much likelier the trained model makes it "
        "than the sampler did (TRL's truncated importance sampling)")
    vllm_server_host: str = _f("127.0.0.1", help="with vllm: server, where `trl vllm-serve` listens")
    vllm_server_port: int = _f(8000, min=1, max=65535)
    signal_check: Literal["warn", "refuse", "off"] = _f(
        "warn", help="before GRPO, sample num_generations completions per training prompt with the start model "
        "and report truncation, groups without a reward difference, pass rates and the sampling time of a step "
        "(lowres check runs it alone). warn: print problems and train; refuse: stop (exit 2) on a problem")
    signal_check_prompts: int | None = _f(
        None, min=1, help="training prompts the signal check samples (a seeded subset); None: all of them")
    truncation_warn_fraction: float = _f(0.5, min=0.0, max=1.0, help="share of completions cut at "
                                         "max_completion_length above which training warns and the check objects")
    stop_after_constant_reward_steps: int = _f(0, min=0, help="0: never stop early")
    heldout_every: int = _f(0, min=0, help="every this many GRPO steps (and before the first), score the policy on "
                            "heldout_questions of the target task's test split, with eval's sampling; logged to "
                            "metrics.jsonl and plotted beside the train reward. 0: off")
    heldout_questions: int = _f(16, min=1, help="questions of the held-out learning curve (a fixed seeded subset)")
    heldout_samples: int = _f(2, min=1, help="samples per question of the held-out learning curve")
    logging_steps: int = _f(1, min=1)
    save_steps: int = _f(25, min=1)
    lora: LoraSection = _section(LoraSection)


@dataclass
class EvalSection:
    """Evaluation after each stage."""

    tasks: list[str] = _f(["kk"])
    n_samples: int = _f(4, min=1, help="samples per question (mean accuracy ± std across them)")
    temperature: float = _f(0.7, min=0.0)
    top_p: float = _f(0.95, min=0.0, max=1.0, min_exclusive=True)
    max_new_tokens: int = _f(1024, min=1)
    limit: int | dict[str, int] | None = _f(
        None, min=1, help="questions per task: a number for every task, or a mapping task: number "
        "(tasks not named get the whole test split); None: the whole test split")
    batch_size: int = _f(8, min=1)
    sample_dtype: Literal["auto", "model", "bf16"] = _f(
        "auto", help="dtype the answers are sampled in (lowres's sampling loop): model: the model's; bf16: a bf16 "
        "copy of the weights; auto: bf16 for an fp32 model on a CPU that multiplies bf16 natively, else model")

    def limit_for(self, task: str) -> int | None:
        """Questions of `task` to score (None: all of its test split)."""
        return self.limit.get(task) if isinstance(self.limit, dict) else self.limit


@dataclass
class OutputSection:
    """Where runs go and what they log to."""

    dir: str = _f("runs")
    report_to: list[Literal["tensorboard", "wandb"]] = _f([])


@dataclass
class Recipe:
    """A whole run."""

    name: str = _f(REQUIRED, help="run name; outputs go to <output.dir>/<name>/")
    description: str = _f("", help="one line shown by `lowres recipes list`")
    stages: list[Literal["warmup", "merge", "rlvr", "rlvr-no-warmup", "rlvr-random-reward", "eval"]] = _f(
        ["warmup", "merge", "rlvr", "eval"], help="opt-in controls: rlvr-no-warmup runs the rlvr stage from the base "
        "model (the paper's no-warmup baseline); rlvr-random-reward runs it from rlvr's start model rewarded by a "
        "seeded coin flip (the spurious-reward control); the report compares them")
    seed: int = _f(0, help="seeds training, sampling and evaluation (0 to 2**32-1)")
    seeds: list[int] = _f([], help="GRPO seeds (each 0 to 2**32-1): each RLVR arm (and its evaluation) runs once per "
                          "seed, and the report's intervals cover the seeds too; [] (the default): once, with seed")
    num_processes: int = _f(1, min=1, help="processes for the warmup and RLVR stages (DDP through accelerate "
                            "launch, one per GPU); the global batch is per_device_train_batch_size × "
                            "gradient_accumulation_steps × num_processes. `--num-processes N` sets it")
    plugins: list[str] = _f([], help="Python files or module names that register your own tasks "
                            "(imported before anything else; paths are relative to the working folder)")
    tasks: dict[str, TaskSpecSection] = _f({}, help="tasks defined here, without Python: name -> data, fields "
                                           "and grader (see TaskSpecSection); usable in data.target.task and "
                                           "eval.tasks")
    model: ModelSection = _section(ModelSection)
    data: DataSection = _section(DataSection)
    warmup: WarmupSection = _section(WarmupSection)
    merge: MergeSection = _section(MergeSection)
    rlvr: RLVRSection = _section(RLVRSection)
    eval: EvalSection = _section(EvalSection)
    output: OutputSection = _section(OutputSection)
    source: str = field(default="<dict>", repr=False, compare=False, metadata={"internal": True})

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, as YAML-ready data (written next to every stage's output)."""
        data = dataclasses.asdict(self)
        data.pop("source")
        return data


# ---------------------------------------------------------------- parsing and validation

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list (each {_type_name(typing.get_args(tp)[0])})"
    if origin is dict:
        return f"a mapping (each value {_type_name(typing.get_args(tp)[1])})"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return _build(tp, value, where, source)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where, source)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads an unquoted off/on/no/yes as a boolean: give back the word the user wrote
            words = ("off", "no", "false") if value is False else ("on", "yes", "true")
            value = next((w for w in words if w in choices), value)
        if value in choices and not isinstance(value, bool):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp)
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(item, item_tp, f"{where}[{i}]", source))
            except _Mismatch:
                raise _fail(source, f"{where}[{i}]", f"expected {_type_name(item_tp)}, got {item!r}") from None
        return out
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        _, value_tp = typing.get_args(tp)
        out = {}
        for key, item in value.items():
            try:
                out[str(key)] = _coerce(item, value_tp, f"{where}.{key}", source)
            except _Mismatch:
                raise _fail(source, f"{where}.{key}", f"expected {_type_name(value_tp)}, got {item!r}") from None
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-6" (no dot) as a string; accept numeric strings for floats.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported recipe annotation {tp!r}")


def _check_range(value: Any, meta: dict, where: str, source: str) -> None:
    if isinstance(value, dict):  # a mapping's values share the field's range
        for key, item in value.items():
            _check_range(item, meta, f"{where}.{key}", source)
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        bound = f"> {lo}" if meta.get("min_exclusive") else f">= {lo}"
        raise _fail(source, where, f"must be {bound}, got {value}")
    if hi is not None and value > hi:
        raise _fail(source, where, f"must be <= {hi}, got {value}")


# Names people write for a recipe key, from habit or other trainers' configs -> the key (in the sections that
# have it). Asked before the spelling match, which reads `lr` as `lora` and `bs` as nothing.
KEY_ALIASES = {
    "lr": "learning_rate", "learningrate": "learning_rate", "learning_rate_init": "learning_rate",
    "bs": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
    "batch": "per_device_train_batch_size", "train_batch_size": "per_device_train_batch_size",
    "per_device_batch_size": "per_device_train_batch_size", "micro_batch_size": "per_device_train_batch_size",
    "epochs": "num_train_epochs", "num_epochs": "num_train_epochs", "n_epochs": "num_train_epochs",
    "epoch": "num_train_epochs",
    "steps": "max_steps", "num_steps": "max_steps", "train_steps": "max_steps", "total_steps": "max_steps",
    "grad_accum": "gradient_accumulation_steps", "gradient_accumulation": "gradient_accumulation_steps",
    "accumulation_steps": "gradient_accumulation_steps", "grad_accumulation_steps": "gradient_accumulation_steps",
    "ga": "gradient_accumulation_steps",
    "scheduler": "lr_scheduler_type", "lr_scheduler": "lr_scheduler_type", "schedule": "lr_scheduler_type",
    "warmup": "warmup_ratio", "warmup_steps": "warmup_ratio",
    "wd": "weight_decay",
    "optimizer": "optim",
    "rank": "r", "lora_r": "r", "lora_rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout",
    "target": "target_modules", "targets": "target_modules", "modules": "target_modules",
    "model": "name_or_path", "model_name": "name_or_path", "model_id": "name_or_path", "path": "name_or_path",
    "model_name_or_path": "name_or_path", "name": "name_or_path",
    "torch_dtype": "dtype", "precision": "dtype",
    "max_length": "max_seq_length", "seq_len": "max_seq_length", "max_len": "max_seq_length",
    "context_length": "max_seq_length",
    "generations": "num_generations", "group_size": "num_generations", "num_completions": "num_generations",
    "kl": "beta", "kl_coef": "beta", "kl_coeff": "beta",
    "clip_range": "epsilon", "cliprange": "epsilon", "clip_eps": "epsilon",
    "prompt_length": "max_prompt_length", "completion_length": "max_completion_length",
    "max_new_tokens": "max_completion_length", "max_tokens": "max_new_tokens",
    "samples": "n_samples", "num_samples": "n_samples",
    "output_dir": "dir", "out": "dir", "out_dir": "dir",
    "qlora": "load_in_4bit", "4bit": "load_in_4bit", "load_4bit": "load_in_4bit",
    "examples": "n_examples", "num_examples": "n_examples",
    "puzzles": "n_puzzles", "num_puzzles": "n_puzzles",
}


def meant_key(key: str, known: list[str]) -> str | None:
    """The key of `known` that an unknown `key` most likely means: the same written with dashes or capitals,
    a common alias (lr, bs, epochs, …), else the closest spelling; None when nothing is close."""
    plain = key.strip().lower().replace("-", "_")
    if plain in known:
        return plain
    alias = KEY_ALIASES.get(plain)
    if alias in known:
        return alias
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _build(cls: type, raw: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            close = meant_key(str(key), list(fields))
            hint = f"; did you mean {close!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise _fail(source, where, f"unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            if dataclasses.is_dataclass(hints[name]):  # an absent section still has required keys
                kwargs[name] = _build(hints[name], {}, where, source)
                continue
            if f.metadata.get("required"):
                expected = f.metadata.get("help") or _type_name(hints[name])
                raise _fail(source, where, f"missing required key ({expected})")
            continue
        try:
            value = _coerce(raw[name], hints[name], where, source)
        except _Mismatch:
            raise _fail(source, where, f"expected {_type_name(hints[name])}, got {raw[name]!r}") from None
        _check_range(value, f.metadata, where, source)
        kwargs[name] = value
    return cls(**kwargs)


def _check_consistency(recipe: Recipe) -> None:
    src = recipe.source
    order = [s for s in STAGES if s in recipe.stages]
    if list(recipe.stages) != order or len(set(recipe.stages)) != len(recipe.stages):
        raise RecipeError(f"{src}: stages: list each stage once, in the order {', '.join(STAGES)}; "
                          f"got {recipe.stages}")
    if not recipe.stages:
        raise RecipeError(f"{src}: stages: name at least one of {', '.join(STAGES)}")
    if "merge" in recipe.stages and "warmup" not in recipe.stages:
        raise RecipeError(f"{src}: stages: merge needs the warmup stage before it")
    if "rlvr" in recipe.stages and recipe.rlvr.start_from == "warmup" and "merge" not in recipe.stages:
        raise RecipeError(f"{src}: rlvr.start_from: 'warmup' needs the warmup and merge stages; "
                          "add them to stages or set rlvr.start_from: base")
    if "rlvr-no-warmup" in recipe.stages and ("rlvr" not in recipe.stages or recipe.rlvr.start_from != "warmup"):
        raise RecipeError(f"{src}: stages: rlvr-no-warmup is the baseline for an rlvr stage that starts from the "
                          "warmup (rlvr.start_from: warmup); add rlvr, or drop rlvr-no-warmup")
    if "rlvr-random-reward" in recipe.stages and "rlvr" not in recipe.stages:
        raise RecipeError(f"{src}: stages: rlvr-random-reward is the control for an rlvr stage; add rlvr, or drop "
                          "rlvr-random-reward")
    if len(set(recipe.seeds)) != len(recipe.seeds):
        raise _fail(src, "seeds", f"list each seed once, got {recipe.seeds}")
    # numpy (through transformers' set_seed) takes seeds in 0..2**32-1 only: refuse others now, not mid-run.
    for where, value in [("seed", recipe.seed), *((f"seeds[{i}]", s) for i, s in enumerate(recipe.seeds))]:
        if not 0 <= value <= MAX_SEED:
            raise _fail(src, where, f"a seed must be in 0..{MAX_SEED} (numpy and torch refuse others), got {value}")
    if "rlvr" in recipe.stages:
        check_rlvr_settings(recipe)
    for stage in ("warmup", "rlvr"):
        check_schedule(recipe, stage)
    if recipe.num_processes > 1 and recipe.model.backend == "unsloth":
        raise _fail(src, "model.backend", f"unsloth runs as one process; with num_processes {recipe.num_processes} "
                    "use backend auto or transformers", ("num_processes",))
    if recipe.data.warmup.trace_style != "full" and recipe.data.warmup.source != "kk-solver":
        raise _fail(src, "data.warmup.trace_style", "applies to kk-solver traces only; the traces in "
                    f"{recipe.data.warmup.source} are used as they are (drop trace_style)")
    bad = [p for p in recipe.data.warmup.people if not 2 <= p <= 8]
    if bad:
        raise _fail(src, "data.warmup.people", f"puzzle sizes must be 2-8, got {bad}")
    if not recipe.name.strip(" .") or "/" in recipe.name or "\\" in recipe.name:
        raise _fail(src, "name", f"give the run a folder name (no slashes), got {recipe.name!r}")
    if len(recipe.name.encode("utf-8")) > MAX_NAME_BYTES:
        raise _fail(src, "name", f"the run's folder name is {len(recipe.name.encode('utf-8'))} bytes; file systems "
                    f"allow at most {MAX_NAME_BYTES}: give a shorter name")
    if isinstance(recipe.eval.limit, dict):
        for task in recipe.eval.limit:
            if task not in recipe.eval.tasks:
                raise _fail(src, f"eval.limit.{task}",
                            f"{task!r} is not one of eval.tasks ({', '.join(recipe.eval.tasks)})")


def check_rlvr_settings(recipe: Recipe) -> None:
    """Settings GRPO needs to agree with each other (checked when the rlvr stage will run)."""
    src, cfg = recipe.source, recipe.rlvr
    # Every process samples per_device rows per micro-batch, and a group's num_generations completions
    # of one prompt are spread over the global batch: it must hold whole groups.
    per_device, steps, processes = (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps,
                                    recipe.num_processes)
    total = per_device * steps * processes
    if total % cfg.num_generations:
        batch = (f"per_device_train_batch_size × gradient_accumulation_steps × num_processes ({per_device} × {steps} "
                 f"× {processes} = {total})" if processes > 1 else
                 f"per_device_train_batch_size × gradient_accumulation_steps ({per_device} × {steps} = {total})")
        raise _fail(src, "rlvr.per_device_train_batch_size",
                    f"the global batch {batch} must be a multiple of rlvr.num_generations ({cfg.num_generations}); "
                    "change one of these numbers",
                    ("rlvr.gradient_accumulation_steps", "rlvr.num_generations", "num_processes"))
    if recipe.rlvr.max_prompt_length + recipe.rlvr.max_completion_length > recipe.model.max_seq_length:
        raise _fail(src, "rlvr.max_completion_length",
                    f"max_prompt_length + max_completion_length ({recipe.rlvr.max_prompt_length} + "
                    f"{recipe.rlvr.max_completion_length}) exceeds model.max_seq_length "
                    f"({recipe.model.max_seq_length})", ("rlvr.max_prompt_length", "model.max_seq_length"))



def warmup_steps(steps: int, warmup_ratio: float) -> int:
    """The steps over which the learning rate rises from 0, as transformers counts them
    (TrainingArguments.get_warmup_steps; lowres passes warmup_ratio as warmup_steps, read as a share below 1)."""
    return int(warmup_ratio) if warmup_ratio >= 1 else math.ceil(steps * warmup_ratio)


def lr_factor(scheduler: str, step: int, steps: int, warmup: int) -> float:
    """The share of the learning rate that optimizer step `step` (from 0) of `steps` trains with, under
    transformers' schedule `scheduler` with `warmup` warmup steps (transformers.optimization's lambdas; the
    scheduler steps after each optimizer step, so step 0 uses the factor at 0). Checked against transformers'
    own schedulers in tests/test_recipe.py."""
    if scheduler == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if scheduler == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    if scheduler == "linear":
        return max(0.0, (steps - step) / max(1, steps - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))  # cosine, num_cycles 0.5


def first_step_that_trains(scheduler: str, steps: int, warmup_ratio: float) -> int | None:
    """The first optimizer step with a learning rate above 0, or None when no step has one (the weights
    would never move)."""
    warmup = warmup_steps(steps, warmup_ratio)
    return next((s for s in range(steps) if lr_factor(scheduler, s, steps, warmup) > 0), None)


def check_schedule(recipe: Recipe, stage: str) -> None:
    """Refuse a `stage` section (warmup or rlvr) whose schedule would never move the weights: max_steps 0, or
    a max_steps whose every step has learning rate 0 (one step, and a warmup that starts at 0)."""
    src, cfg = recipe.source, getattr(recipe, stage)
    if cfg.max_steps == 0:
        raise _fail(src, f"{stage}.max_steps", "0 trains no step; set -1 (run num_train_epochs) or at least 1")
    if cfg.max_steps < 1 or first_step_that_trains(cfg.lr_scheduler_type, cfg.max_steps, cfg.warmup_ratio) is not None:
        return
    warmup = warmup_steps(cfg.max_steps, cfg.warmup_ratio)
    enough = next(n for n in range(cfg.max_steps + 1, cfg.max_steps + 1000)
                  if first_step_that_trains(cfg.lr_scheduler_type, n, cfg.warmup_ratio) is not None)
    steps = f"{cfg.max_steps} step{'s' if cfg.max_steps != 1 else ''}"
    raise _fail(src, f"{stage}.max_steps",
                f"{steps} with warmup_ratio {cfg.warmup_ratio} (lr_scheduler_type {cfg.lr_scheduler_type}) "
                f"train{'s' if cfg.max_steps == 1 else ''} at "
                f"learning rate 0: the warmup takes ceil({cfg.warmup_ratio} × {cfg.max_steps}) = {warmup} step"
                f"{'s' if warmup != 1 else ''} and starts from 0, so the weights never move; set {stage}.warmup_ratio:"
                f" 0, {stage}.lr_scheduler_type: constant, or {stage}.max_steps: {enough} or more",
                (f"{stage}.warmup_ratio", f"{stage}.lr_scheduler_type"))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`rlvr.learning_rate=1e-6` -> (["rlvr", "learning_rate"], 1e-6). Values are YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text}: expected KEY.PATH=VALUE, e.g. rlvr.learning_rate=1e-6")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return [part for part in key.strip().split(".")], parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set each `a.b.c=value` in the raw recipe mapping (before validation)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {text}: {'.'.join(path[:i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def recipe_from_dict(raw: Any, source: str = "<dict>", overrides: list[str] = ()) -> Recipe:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides))
    try:
        recipe = _build(Recipe, raw, "", source)
        recipe.source = source
        _load_recipe_plugins(recipe)
        register_spec_tasks(recipe.tasks, source)
        _check_consistency(recipe)
    except RecipeError as e:
        blamed = next(filter(None, (_blamed_override(w, overrides) for w in (e.where, *e.related))), None)
        if blamed is None:
            raise
        raise RecipeError(f"--set {blamed}: {e.detail}", e.where, e.detail) from None
    return recipe


def _load_recipe_plugins(recipe: Recipe) -> None:
    """Import the user's own tasks (plugins: [my_tasks.py]) before anything names them; every process that
    loads the recipe (the conductor and each stage's child) imports them."""
    from lowres.tasks.plugins import load_plugins

    try:
        load_plugins(recipe.plugins)
    except UserError as e:
        detail = str(e).removeprefix("plugins: ")
        raise RecipeError(f"{recipe.source}: plugins: {detail}", "plugins", detail) from None


def load_task_specs(path: str | Path) -> dict[str, TaskSpecSection]:
    """Register the tasks of a YAML file's top-level `tasks:` mapping (a recipe file is one), for
    `lowres eval --task-spec`; returns them. Bad input is a one-line RecipeError naming the file."""
    path = Path(path)
    raw = read_yaml(path, "task-spec file", "no such task-spec file")
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
        raise RecipeError(f"{path}: expected a top-level `tasks:` mapping of task name -> spec")
    source = str(path)
    try:
        specs = _coerce(raw["tasks"], dict[str, TaskSpecSection], "tasks", source)
    except _Mismatch:
        raise RecipeError(f"{source}: tasks: expected {_type_name(dict[str, TaskSpecSection])}") from None
    register_spec_tasks(specs, source)
    return specs


def _blamed_override(where: str | None, overrides) -> str | None:
    """The last `--set` that wrote the key path `where` (or a key inside it), if any."""
    if where is None:
        return None
    for text in reversed(list(overrides)):
        path = ".".join(parse_override(text)[0])
        if where == path or where.startswith((path + ".", path + "[")) or path.startswith(where + "."):
            return text
    return None


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, validate and return a recipe; every problem is a one-line RecipeError."""
    path = Path(path)
    raw = read_yaml(path, "recipe", "no such recipe file (bundled recipes: `lowres recipes list`)")
    return recipe_from_dict(raw, str(path), overrides)


def read_yaml(path: Path, kind: str, missing: str) -> Any:
    """The YAML document in a recipe (or task-spec) file. Every problem is a one-line RecipeError naming the
    file and, where there is one, the line: `missing` when there is no such file; bytes that are not UTF-8
    (line and column of the first); a YAML syntax error; a key given twice in one mapping."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"{path}: {missing}") from None
    except (IsADirectoryError, PermissionError) as e:
        raise RecipeError(f"{path}: cannot read the {kind}: {e.__class__.__name__}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # Counted in the bytes (the decoder's offset is one); the column in characters of the line's valid start.
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = data.count(b"\n", 0, e.start) + 1
        column = len(data[line_start:e.start].decode("utf-8")) + 1
        raise RecipeError(f"{path}:{line}:{column}: byte 0x{data[e.start]:02x} is not UTF-8 text; save the {kind} "
                          "as UTF-8") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, "", str(path))
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{path}{line}: YAML syntax error: {problem}") from None
    finally:
        loader.dispose()


def _refuse_duplicate_keys(node: yaml.Node, where: str, source: str, seen: set[int] | None = None) -> None:
    """A key written twice in one mapping: YAML keeps the last value and drops the first without a word, so
    an edit lower in the file would silently undo one above it (or the reverse)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already checked (it may even contain itself)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{where}[{index}]", source, seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[tuple[str, str], int] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` merges keys that the mapping may override: that is what it is for
        path = f"{where}.{key_node.value}" if where else str(key_node.value)
        line = key_node.start_mark.line + 1
        earlier = first_line.get((key_node.tag, key_node.value))
        if earlier is not None:
            raise RecipeError(f"{source}:{line}: {path}: duplicate key (first on line {earlier}); YAML would keep "
                              "only the last value: remove one", path, f"duplicate key (first on line {earlier})")
        first_line[(key_node.tag, key_node.value)] = line
        _refuse_duplicate_keys(value_node, path, source, seen)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- bundled recipes

def bundled_dir() -> Path:
    return Path(__file__).parent / "recipes"


def bundled_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(bundled_dir().glob("*.yaml"))}


DEFAULT_RECIPE = "demo"


def resolve_recipe_path(name_or_path: str) -> Path:
    """A path to a file, or the name of a bundled recipe."""
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    bundled = bundled_recipes()
    if name_or_path in bundled:
        return bundled[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(bundled), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; bundled: {', '.join(bundled)}"
    raise RecipeError(f"{name_or_path}: no such recipe file or bundled recipe{hint}")
