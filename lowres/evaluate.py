"""Evaluation: sample n completions per question, grade them with the task, summarise.

Metrics: accuracy is the mean over questions of each question's share of right samples, with its 95% t
interval over the questions (the questions asked are the main source of chance; the spread over the n sample
indices, which the paper reports, is kept in results.json as accuracy_std but is several times narrower).
Also the unbiased pass@k (Chen et al., 2021), the format-error rate and the mean completion length.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lowres.artifacts import building_folder, disk_guard, read_json, write_json
from lowres.evidence import accuracy_interval, pass_at_k
from lowres.prompting import ChatTemplate, render_prompt
from lowres.tasks import Task
from lowres.ui import console, progress

TASK_DONE = "done.json"  # in a task's results folder: the fingerprint its results were made from


@dataclass
class GenerationSettings:
    n_samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 1024
    batch_size: int = 8
    chat_template: ChatTemplate = "model"
    seed: int = 0  # which questions (with a limit), and the sampling unless sample_seed is given
    sample_seed: int | None = None  # the sampling alone: an RLVR arm of a recipe's seeds, on the run's questions
    # auto: sample from a bf16 copy of an fp32 model on a CPU that multiplies bf16 natively (hardware.rollout_dtype)
    sample_dtype: str = "auto"


@dataclass
class EvalResult:
    task: str
    model: str
    n_questions: int
    n_samples: int
    accuracy_mean: float
    accuracy_std: float
    pass_at_k: dict[str, float]
    format_error_rate: float
    mean_completion_tokens: float
    truncated_rate: float
    per_category: dict[str, float] = field(default_factory=dict)
    # MMLU-Pro's convention: an unparseable answer counts as a random guess among the options.
    accuracy_random_guess: float | None = None
    seconds: float = 0.0
    # 95% t interval of accuracy over the questions (results written before it existed have none)
    accuracy_low: float | None = None
    accuracy_high: float | None = None

    def accuracy_text(self) -> str:
        """Accuracy in points with its 95% interval over questions ("± std over samples" for older results)."""
        if self.accuracy_low is None or self.accuracy_high is None:
            return f"{100 * self.accuracy_mean:.1f} ± {100 * self.accuracy_std:.1f} (std over samples)"
        return f"{100 * self.accuracy_mean:.1f} [{100 * self.accuracy_low:.1f}, {100 * self.accuracy_high:.1f}]"

    def summary(self) -> str:
        guess = (f", {100 * self.accuracy_random_guess:.1f} with random guesses"
                 if self.accuracy_random_guess is not None else "")
        return (f"{self.model} on {self.task}: {self.accuracy_text()}{guess} "
                f"(n={self.n_questions}×{self.n_samples}, format errors {100 * self.format_error_rate:.0f}%, "
                f"mean length {self.mean_completion_tokens:.0f} tokens)")


@dataclass
class Sample:
    question_id: str
    sample_index: int
    prompt: str
    completion: str
    n_tokens: int
    truncated: bool
    extracted: str | None
    formatted: bool
    correct: bool
    reward: float
    category: str | None = None


def generate_completions(model, tokenizer, prompts: list[str], settings: GenerationSettings,
                         description: str = "generating", top_k: int | None = None,
                         show_progress: bool = True, rollout_dtype=None) -> list[list[tuple[str, int, bool]]]:
    """For each prompt, n completions as (text, n_tokens, hit_max_new_tokens). Batched, left-padded.
    rollout_dtype: sample from a copy of the weights in this torch dtype (None: the model's)."""
    import torch

    from lowres.decode import sample_batch

    generator = torch.Generator(device=model.device).manual_seed(sampling_seed(settings))
    tokenizer.padding_side = "left"
    jobs = [(i, j) for i in range(len(prompts)) for j in range(settings.n_samples)]
    out: list[list[Any]] = [[None] * settings.n_samples for _ in prompts]
    stop_ids = _stop_token_ids(model, tokenizer)
    with progress(transient=not show_progress) as bar:
        task_id = bar.add_task(description, total=len(jobs), visible=show_progress)
        for start in range(0, len(jobs), settings.batch_size):
            batch = jobs[start:start + settings.batch_size]
            enc = tokenizer([prompts[i] for i, _ in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            # top_k 0 disables the top-k cut (as vLLM's default) unless one is asked for.
            new = sample_batch(model, enc["input_ids"], enc["attention_mask"], settings.max_new_tokens, stop_ids,
                               settings.temperature, settings.top_p, top_k or 0, generator, rollout_dtype)
            for ids, (i, j) in zip(new, batch, strict=True):
                truncated = len(ids) == settings.max_new_tokens and ids[-1] not in stop_ids
                out[i][j] = (tokenizer.decode(ids, skip_special_tokens=True), len(ids), truncated)
            bar.advance(task_id, len(batch))
    return out


def sampling_seed(settings: GenerationSettings) -> int:
    return settings.seed if settings.sample_seed is None else settings.sample_seed


def _stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids: the tokenizer's EOS and pad, and those the model's generation config names."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    return {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id, *configured) if t is not None}


class HFGenerator:
    """Sampling from a transformers model with lowres.decode (CPU or GPU), optionally from a copy of its
    weights in `rollout_dtype`."""

    def __init__(self, model, tokenizer, rollout_dtype=None):
        self.model, self.tokenizer, self.rollout_dtype = model, tokenizer, rollout_dtype

    def __call__(self, prompts: list[str], settings: GenerationSettings, description: str):
        return generate_completions(self.model, self.tokenizer, prompts, settings, description=description,
                                    rollout_dtype=self.rollout_dtype)


def vllm_dtype(dtype: str) -> str:
    """vLLM's name for lowres's dtype (fp16 on a GPU without bf16, e.g. a T4: vLLM refuses bf16 there)."""
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, "auto")


class VLLMGenerator:
    """Sampling with vLLM (a CUDA GPU and `lowres[vllm]`): far faster for long reasoning traces.
    A LoRA adapter is applied per request instead of being merged."""

    def __init__(self, location: str, tokenizer, adapter: Path | None, dtype: str):
        from vllm import LLM

        self.tokenizer = tokenizer
        self.lora = None
        lora_kwargs = {}
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
            lora_kwargs = {"enable_lora": True, "max_lora_rank": max(8, rank)}
            self.lora = LoRARequest("adapter", 1, str(adapter))
        self.llm = LLM(model=location, dtype=vllm_dtype(dtype), **lora_kwargs)

    def __call__(self, prompts: list[str], settings: GenerationSettings, description: str):
        from vllm import SamplingParams

        params = SamplingParams(n=settings.n_samples, temperature=settings.temperature, top_p=settings.top_p,
                                max_tokens=settings.max_new_tokens, seed=sampling_seed(settings))
        outputs = self.llm.generate(prompts, params, lora_request=self.lora)
        return [[(o.text, len(o.token_ids), o.finish_reason == "length") for o in r.outputs] for r in outputs]


def evaluate_task(generator, task: Task, rows: list[dict], settings: GenerationSettings,
                  model_name: str = "model", out_dir: Path | None = None,
                  done_marker: dict | None = None) -> EvalResult:
    """Generate, grade, summarise; write results.json and samples.jsonl (and `done_marker` as
    done.json) into `out_dir` if given."""
    started = time.time()
    prompts = [render_prompt(generator.tokenizer, task.prompt(row), settings.chat_template) for row in rows]
    completions = generator(prompts, settings, f"eval {task.name}")
    samples: list[Sample] = []
    for row, prompt, outs in zip(rows, prompts, completions, strict=True):
        for j, (text, n_tokens, truncated) in enumerate(outs):
            score = task.score(text, row)
            samples.append(Sample(question_id(row, prompt), j, prompt, text, n_tokens, truncated,
                                  score.extracted, score.formatted, score.correct, score.reward,
                                  row.get("category")))
    result = summarise(task.name, model_name, samples, settings.n_samples, len(rows))
    guess = getattr(task, "random_guess_correct", None)
    if callable(guess):
        by_id = {question_id(row, prompt): row for row, prompt in zip(rows, prompts, strict=True)}
        result.accuracy_random_guess = statistics.fmean(
            s.correct or (s.extracted is None and guess(by_id[s.question_id], s.sample_index)) for s in samples)
    result.seconds = round(time.time() - started, 1)
    if out_dir is not None:
        # One task's folder appears whole or not at all: a rerun after a crash redoes only this task.
        with disk_guard(out_dir, "eval"), building_folder(out_dir) as tmp:
            (tmp / "samples.jsonl").write_text("".join(json.dumps(asdict(s)) + "\n" for s in samples))
            (tmp / "results.json").write_text(json.dumps(asdict(result), indent=2))
            if done_marker is not None:
                (tmp / TASK_DONE).write_text(json.dumps(done_marker))
    console.print(result.summary())
    return result


def question_id(row: dict, prompt: str) -> str:
    """A row's id; a row without one is known by its prompt, so that its samples are one question (and two rows
    with the same prompt are one question too) — never one question per sample."""
    if row.get("id") is not None:
        return str(row["id"])
    return "prompt-" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def summarise(task_name: str, model_name: str, samples: list[Sample], n_samples: int,
              n_questions: int) -> EvalResult:
    per_index = [statistics.fmean(s.correct for s in samples if s.sample_index == j)
                 for j in range(n_samples)]
    by_question: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_question[s.question_id].append(s)
    fewest = min((len(v) for v in by_question.values()), default=0)
    ks = [k for k in (1, 2, 4, 8, 16) if k <= min(n_samples, fewest)]
    passk = {f"pass@{k}": statistics.fmean(pass_at_k(len(v), sum(s.correct for s in v), k)
                                           for v in by_question.values()) for k in ks}
    low, high = accuracy_interval({q: sum(s.correct for s in v) / len(v) for q, v in by_question.items()})
    categories: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        if s.category:
            categories[s.category].append(s.correct)
    return EvalResult(
        task=task_name, model=model_name, n_questions=n_questions, n_samples=n_samples,
        accuracy_mean=statistics.fmean(per_index),
        accuracy_std=statistics.pstdev(per_index) if len(per_index) > 1 else 0.0,
        pass_at_k=passk,
        format_error_rate=statistics.fmean(not s.formatted for s in samples),
        mean_completion_tokens=statistics.fmean(s.n_tokens for s in samples),
        truncated_rate=statistics.fmean(s.truncated for s in samples),
        per_category={c: statistics.fmean(v) for c, v in sorted(categories.items())},
        accuracy_low=low, accuracy_high=high,
    )


def limit_for(limit: int | dict[str, int] | None, task: str) -> int | None:
    """Questions of `task` to score: `limit` is one number for every task or a mapping task -> number."""
    return limit.get(task) if isinstance(limit, dict) else limit


def _task_fingerprint(model_ref: str, adapter: Path | None, task: str, limit: int | None,
                      settings: GenerationSettings) -> str:
    """What one task's results depend on: the model (and adapter) files, the task and its question
    count, the sampling settings, the data folder and the lowres version."""
    import os

    from lowres.fingerprint import fingerprint, model_identity

    return fingerprint(model_identity(model_ref), None if adapter is None else model_identity(str(adapter)),
                       task, limit, settings, os.environ.get("LOWRES_DATA_DIR"))


def evaluate_model(model_ref: str, task_names: list[str], settings: GenerationSettings, *, adapter: Path | None = None,
                   limit: int | dict[str, int] | None = None, out_dir: Path | None = None, label: str | None = None,
                   dtype: str = "auto") -> list[EvalResult]:
    """Load a model (optionally base + LoRA adapter) once and evaluate it on each task's test split.

    Writes <out_dir>/<task>/{results.json,samples.jsonl,done.json} and <out_dir>/results.json (all
    tasks). A task whose folder holds results made from the same model, settings and data is reused,
    so a rerun after a crash redoes only the tasks that had not finished."""
    from lowres.errors import UserError
    from lowres.hardware import detect
    from lowres.tasks import get_task

    tasks = [get_task(name) for name in task_names]  # fail on a bad name before loading anything
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise UserError(f"{adapter}: no LoRA adapter here (adapter_config.json is missing)")
    label = label or model_ref
    results: dict[str, EvalResult] = {}
    markers: dict[str, dict] = {}
    for task in tasks:
        markers[task.name] = {"fingerprint": _task_fingerprint(model_ref, adapter, task.name,
                                                               limit_for(limit, task.name), settings)}
        folder = None if out_dir is None else Path(out_dir) / task.name
        if (folder is not None and read_json(folder / TASK_DONE) == markers[task.name]
                and (folder / "results.json").is_file()):
            results[task.name] = load_results(folder)[0]
            console.print(f"eval {task.name}: done before with the same model and settings — reused ({folder})")
    todo = [task for task in tasks if task.name not in results]
    if todo:
        hw = detect(dtype)
        with eval_oom_guard(settings):
            generator = _generator(model_ref, adapter, hw, settings.sample_dtype)
            for task in todo:
                rows = task.load("test", limit=limit_for(limit, task.name), seed=settings.seed)
                results[task.name] = evaluate_task(generator, task, rows, settings, label,
                                                   None if out_dir is None else Path(out_dir) / task.name,
                                                   markers[task.name])
    ordered = [results[task.name] for task in tasks]
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(out_dir) / "results.json", [asdict(r) for r in ordered])
    return ordered


def eval_oom_guard(settings: GenerationSettings):
    from lowres.train.common import oom_guard

    return oom_guard("eval", {"eval.batch_size": settings.batch_size, "eval.max_new_tokens": settings.max_new_tokens})


def _generator(model_ref: str, adapter: Path | None, hw, sample_dtype: str = "auto"):
    """vLLM on a CUDA machine that has it, lowres's sampling loop (lowres.decode) everywhere else."""
    from lowres.hardware import rollout_dtype, vllm_installed
    from lowres.models import load_model_and_tokenizer, resolve_model

    if hw.device == "cuda" and vllm_installed():
        from transformers import AutoTokenizer

        location = resolve_model(model_ref)
        return VLLMGenerator(location, AutoTokenizer.from_pretrained(location), adapter, hw.dtype)
    model, tokenizer = load_model_and_tokenizer(model_ref, hw.torch_dtype, hw.device)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return HFGenerator(model, tokenizer, rollout_dtype(sample_dtype, hw))


def load_results(path: Path) -> list[EvalResult]:
    """Results written by `evaluate_model` (a results.json, or the folder holding one)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    data = json.loads(file.read_text())
    return [EvalResult(**r) for r in (data if isinstance(data, list) else [data])]
