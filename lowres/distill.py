"""Teacher distillation: sample k reasoning traces per puzzle from a teacher model.

The paper sampled QwQ-32B 4 times per Logic-RL puzzle (T=0.6, top_p=0.95, top_k=40, up to 8,192
tokens) and kept every trace. Teachers here: a local transformers model (lowres.decode, batched), a vLLM
engine, or any OpenAI-compatible endpoint (llama.cpp, vLLM or Ollama servers).

Keep-policies: `all` (the paper), `correct` (rejection sampling: only traces the verifier grades
right) or `formatted` (well-formed, right or wrong). Traces are written to JSONL as each puzzle
finishes, and the ids of finished puzzles to `<out>.done`, so an interrupted run resumes where it
stopped without duplicates.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.progress import TextColumn

from lowres.artifacts import read_jsonl, write_jsonl
from lowres.errors import UserError
from lowres.tasks.base import Task
from lowres.ui import console, progress

KEEP_POLICIES = ("all", "correct", "formatted")


@dataclass(frozen=True)
class SamplingSettings:
    """The paper's teacher settings by default."""

    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int = 8192


@dataclass(frozen=True)
class TeacherSample:
    text: str
    n_tokens: int


class Teacher(Protocol):
    """Anything that returns k samples for each of a batch of chat prompts."""

    name: str

    def sample(self, prompts: list[list[dict[str, str]]], settings: SamplingSettings) -> list[list[TeacherSample]]:
        ...


class HFTeacher:
    """A local transformers model; prompts go through its chat template, batched."""

    def __init__(self, model_ref: str, batch_size: int = 8, dtype: str = "auto"):
        from lowres.hardware import detect
        from lowres.models import load_model_and_tokenizer

        hw = detect(dtype)
        self.name = model_ref
        self.model, self.tokenizer = load_model_and_tokenizer(model_ref, hw.torch_dtype, hw.device)
        self.model.eval()
        self.batch_size = batch_size

    def sample(self, prompts, settings):
        from lowres.evaluate import GenerationSettings, generate_completions
        from lowres.prompting import render_prompt

        texts = [render_prompt(self.tokenizer, p, "model") for p in prompts]
        gen = GenerationSettings(n_samples=settings.k, temperature=settings.temperature, top_p=settings.top_p,
                                 max_new_tokens=settings.max_tokens, batch_size=self.batch_size)
        out = generate_completions(self.model, self.tokenizer, texts, gen, description="teacher",
                                   top_k=settings.top_k, show_progress=False)
        return [[TeacherSample(text, n) for text, n, _ in row] for row in out]


class VLLMTeacher:
    """A vLLM engine (pip install 'lowres[vllm]'): the fastest local teacher."""

    def __init__(self, model_ref: str, **engine_kwargs: Any):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("the vLLM teacher needs vllm: pip install 'lowres[vllm]'") from None
        from lowres.models import resolve_model

        self.name = model_ref
        self.llm = LLM(model=resolve_model(model_ref), **engine_kwargs)

    def sample(self, prompts, settings):
        from vllm import SamplingParams

        params = SamplingParams(n=settings.k, temperature=settings.temperature, top_p=settings.top_p,
                                top_k=settings.top_k, max_tokens=settings.max_tokens)
        results = self.llm.chat(prompts, params, use_tqdm=False)
        return [[TeacherSample(o.text, len(o.token_ids)) for o in r.outputs] for r in results]


class OpenAITeacher:
    """Any OpenAI-compatible chat endpoint: `--api-base http://localhost:8000/v1 --model NAME`."""

    def __init__(self, api_base: str, model: str, api_key: str | None = None, timeout_s: float = 600):
        self.name = f"{model} @ {api_base}"
        self.url = api_base.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise UserError(f"teacher endpoint {self.url} answered {e.code}: {e.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise UserError(f"cannot reach the teacher endpoint {self.url}: {e}") from None

    def sample(self, prompts, settings):
        out = []
        for messages in prompts:
            samples = []
            # One request per sample: not every server honours `n`.
            for _ in range(settings.k):
                reply = self._post({"model": self.model, "messages": messages, "temperature": settings.temperature,
                                    "top_p": settings.top_p, "top_k": settings.top_k,
                                    "max_tokens": settings.max_tokens})
                try:
                    text = reply["choices"][0]["message"]["content"] or ""
                except (KeyError, IndexError, TypeError):
                    raise UserError(f"teacher endpoint {self.url} sent no choices: {str(reply)[:200]}") from None
                n_tokens = (reply.get("usage") or {}).get("completion_tokens") or len(text.split())
                samples.append(TeacherSample(text, int(n_tokens)))
            out.append(samples)
        return out


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _keep(policy: str, formatted: bool, correct: bool) -> bool:
    return policy == "all" or (policy == "correct" and correct) or (policy == "formatted" and formatted)


@dataclass
class DistillStats:
    puzzles: int = 0
    skipped_done: int = 0
    sampled: int = 0
    kept: int = 0
    correct: int = 0
    dropped_too_long: int = 0
    duplicates: int = 0

    @property
    def acceptance(self) -> float:
        return self.kept / self.sampled if self.sampled else 0.0


def _done_ids(out: Path) -> set[str]:
    """Puzzles finished in an earlier run; rows of unfinished ones (and a line torn by a crash
    mid-write) are removed, atomically."""
    done_file = out.with_name(out.name + ".done")
    done = set(done_file.read_text().split()) if done_file.is_file() else set()
    if out.is_file():
        kept = [row for row in read_jsonl(out) if row.get("puzzle_id") in done]
        write_jsonl(out, kept)
    return done


def distill(rows: list[dict], task: Task, teacher: Teacher, out: str | Path, *,
            settings: SamplingSettings = SamplingSettings(), keep: str = "all",  # noqa: B008 (frozen)
            max_trace_tokens: int | None = None, batch_size: int = 8) -> DistillStats:
    """Sample `settings.k` traces per row from `teacher`, grade them with `task`, write the kept ones.

    Output rows: prompt (the user question), completion, puzzle_id, correct, formatted, n_tokens, teacher.
    """
    if keep not in KEEP_POLICIES:
        raise UserError(f"keep policy {keep!r}: use one of {', '.join(KEEP_POLICIES)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_ids(out)
    todo = [r for r in rows if str(r["id"]) not in done]
    stats = DistillStats(puzzles=len(rows), skipped_done=len(rows) - len(todo))
    if stats.skipped_done:
        console.print(f"resuming: {stats.skipped_done} of {len(rows)} puzzles were done before")
    done_file = out.with_name(out.name + ".done")
    with progress(TextColumn("kept {task.fields[rate]}")) as bar, contextlib.ExitStack() as files:
        sink = done_sink = None  # opened at the first finished puzzle: a teacher that fails at once leaves no files
        job = bar.add_task(f"distilling from {teacher.name}", total=len(todo), rate="-")
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            messages = [task.prompt(r) for r in batch]
            for row, msgs, samples in zip(batch, messages, teacher.sample(messages, settings), strict=True):
                seen: set[str] = set()
                lines = []
                for sample in samples:
                    stats.sampled += 1
                    score = task.score(sample.text, row)
                    if max_trace_tokens is not None and sample.n_tokens > max_trace_tokens:
                        stats.dropped_too_long += 1
                        continue
                    key = _normalise(sample.text)
                    if key in seen:
                        stats.duplicates += 1
                        continue
                    seen.add(key)
                    if not _keep(keep, score.formatted, score.correct):
                        continue
                    stats.kept += 1
                    stats.correct += score.correct
                    user = next(m["content"] for m in msgs if m["role"] == "user")
                    lines.append(json.dumps({
                        "prompt": user, "completion": sample.text, "puzzle_id": str(row["id"]),
                        "correct": score.correct, "formatted": score.formatted, "n_tokens": sample.n_tokens,
                        "teacher": teacher.name}) + "\n")
                if sink is None:
                    sink = files.enter_context(out.open("a", encoding="utf-8"))
                    done_sink = files.enter_context(done_file.open("a"))
                sink.write("".join(lines))
                sink.flush()
                done_sink.write(f"{row['id']}\n")
                done_sink.flush()
            bar.update(job, advance=len(batch), rate=f"{100 * stats.acceptance:.0f}%")
    return stats


def stats_line(stats: DistillStats) -> str:
    return (f"kept {stats.kept} of {stats.sampled} traces ({100 * stats.acceptance:.0f}%), {stats.correct} correct; "
            f"dropped {stats.dropped_too_long} over the token limit and {stats.duplicates} duplicates")


def load_puzzle_rows(path: Path) -> list[dict]:
    """Puzzle rows from `lowres kk generate` / `import-logic-rl` output (JSONL or parquet)."""
    from lowres.tasks.kk.render import load_logic_rl
    from lowres.tasks.kk.task import puzzle_row

    return [puzzle_row(p) for p in load_logic_rl(path, split=None)]

