"""Does each bundled GPU recipe fit the card the README names for it? Measured on a bigger GPU, under a memory
cap the size of that card, at the recipe's real shapes (a randomly initialised model: memory and speed depend
on the shape, not on the weights).

    python benchmarks/recipe_fit.py --pass memory --json OUT/fit_memory.json    # every shape under its card's cap
    python benchmarks/recipe_fit.py --pass timing --json OUT/fit_timing.json    # the 3B and 0.5B, both backends
    python benchmarks/recipe_fit.py --pass memory --tiny                         # the rehearsal: tiny shapes, a CPU

Each measurement is `lowres bench RECIPE --model-config SHAPE --gpu-memory CAP --steps 1` (lowres.bench: each
stage a child process, its step count cut, out of memory reported as "does not fit" with the settings to
lower), with what makes it measure the recipe's worst case rather than an easy one:
- warmup trains on synthetic traces as long as model.max_seq_length allows (the solver's traces are 550-1,530
  tokens; a distilled file can reach the limit);
- GRPO samples from a random model, which almost never ends a completion: every completion runs to
  rlvr.max_completion_length; the bench's stand-in reward varies within every group, so every row trains on
  both backends, and the task's signal check stays out of the stage (it runs before training, in the stage's
  process: its peak is the 16-bit start model and its KV cache, below GRPO's);
- the data come from the repository's fixtures (LOWRES_DATA_DIR=tests/fixtures/data). Every fixture row of
  HumanEval+ and MMLU-Pro is also an evaluation question, so those recipes train on MATH rows instead: their
  shapes (batch, lengths, LoRA, 4-bit) are those of qwen2.5-3b-math, which the script checks, and which is
  measured once for all of them.

The memory pass runs the shapes side by side (one process each, each under its own cap; their sum fits an
80 GB card): memory is valid, the times are not (they share the GPU). The timing pass runs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Fit:
    recipe: str                 # the one measured
    card: str                   # as the README names it
    cap_gib: float              # the card's memory less ~1 GiB for the CUDA context and a display
    shape: str                  # lowres bench --model-config
    shares: list[str] = field(default_factory=list)  # recipes with the same memory-relevant settings
    sets: list[str] = field(default_factory=list)    # overrides that make the card's case


FITS = [
    Fit("qwen2.5-3b-math", "24 GB", 22.5, "qwen2.5-3b",
        shares=["qwen2.5-3b-humaneval", "qwen2.5-3b-mmlu-physics", "qwen2.5-3b-mmlu-history"]),
    Fit("qwen2.5-1.5b-math", "16 GB", 14.5, "qwen2.5-1.5b"),
    Fit("qwen2.5-0.5b-math", "8 GB", 6.5, "qwen2.5-0.5b"),  # the README's "8-12 GB": the smaller card
    # A T4 has no bf16: fp16 forced, as lowres picks there (an H100 would pick bf16). It has no flash attention
    # either; its memory-efficient attention needs about the same memory as flash (both O(length)).
    Fit("colab-t4-qwen2.5-1.5b-math", "T4 (15 GB)", 14.0, "qwen2.5-1.5b", sets=["model.dtype=fp16"]),
]
# The no-warmup baselines run the same GRPO (settings and shape) from the base model: rlvr's row covers them.
NO_WARMUP = ["qwen2.5-3b-math-no-warmup", "qwen2.5-3b-humaneval-no-warmup", "qwen2.5-3b-mmlu-physics-no-warmup",
             "qwen2.5-3b-mmlu-history-no-warmup"]
TIMED = ["qwen2.5-3b-math", "qwen2.5-0.5b-math"]
# The rehearsal's shapes: every phase of the real pass, minutes on a CPU.
TINY_SETS = ["model.max_seq_length=640", "warmup.per_device_train_batch_size=2",
             "warmup.gradient_accumulation_steps=1", "rlvr.max_prompt_length=512", "rlvr.max_completion_length=16",
             "rlvr.num_generations=4", "rlvr.per_device_train_batch_size=4", "rlvr.gradient_accumulation_steps=1",
             "eval.max_new_tokens=16", "eval.batch_size=4"]


def memory_settings(recipe) -> dict:
    """What sets a recipe's peak memory (and step time), whatever its task's text."""
    w, r, e = recipe.warmup, recipe.rlvr, recipe.eval
    return {"model": recipe.model.name_or_path, "dtype": recipe.model.dtype,
            "max_seq_length": recipe.model.max_seq_length,
            "warmup": (w.load_in_4bit, w.per_device_train_batch_size, w.lora.r, w.lora.target_modules),
            "rlvr": (r.load_in_4bit, r.per_device_train_batch_size, r.num_generations, r.max_prompt_length,
                     r.max_completion_length, r.lora.r, r.lora.target_modules, r.vllm),
            "eval": (e.batch_size, e.max_new_tokens)}


def check_shares() -> None:
    """Refuse to stand one recipe's measurement in for another whose memory-relevant settings differ."""
    from lowres.recipe import load_recipe, resolve_recipe_path

    for fit in FITS:
        mine = memory_settings(load_recipe(resolve_recipe_path(fit.recipe)))
        for other in fit.shares:
            theirs = memory_settings(load_recipe(resolve_recipe_path(other)))
            if theirs != mine:
                diff = sorted(k for k in mine if mine[k] != theirs[k])
                sys.exit(f"recipe_fit: {other} differs from {fit.recipe} in {', '.join(diff)}: measure it on its own")
    for name in NO_WARMUP:
        base = name.removesuffix("-no-warmup")
        theirs, mine = (memory_settings(load_recipe(resolve_recipe_path(name))),
                         memory_settings(load_recipe(resolve_recipe_path(base))))
        if theirs["rlvr"] != mine["rlvr"] or theirs["model"] != mine["model"]:
            sys.exit(f"recipe_fit: {name}'s GRPO differs from {base}'s: measure it on its own")


def long_traces(path: Path, recipe, rows: int) -> Path:
    """Warmup traces as long as model.max_seq_length allows once rendered as warmup renders them (chat
    template, EOS), with the tokenizer the random models use."""
    from transformers import AutoTokenizer

    from lowres.models import resolve_model
    from lowres.train.warmup import to_text_pairs

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m"))
    prompt = "Who is a knight and who is a knave? A says B is a knave."
    limit = recipe.model.max_seq_length
    ids = tokenizer(" ".join(f"step {i}: A is a knight, so B lies." for i in range(limit)),
                    add_special_tokens=False)["input_ids"][:limit]

    def fits(n: int) -> bool:
        return bool(to_text_pairs([{"prompt": prompt, "completion": tokenizer.decode(ids[:n])}], tokenizer, recipe)[0])

    low, high = 0, len(ids)  # the longest completion that warmup keeps
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    completion = tokenizer.decode(ids[:low])
    with path.open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return path


def bench_command(fit: Fit, backend: str, stages: str, workdir: Path, tiny: bool, on_gpu: bool) -> list[str]:
    from lowres.recipe import load_recipe, resolve_recipe_path

    # The rehearsal keeps the CPU's dtype (fp16 does not train on a CPU) and a 16-bit GRPO base (bitsandbytes'
    # CPU 4-bit layers cannot train after sampling).
    sets = list(TINY_SETS) + ["rlvr.load_in_4bit=false"] if tiny else list(fit.sets)
    recipe = load_recipe(resolve_recipe_path(fit.recipe), sets)
    batch = recipe.warmup.per_device_train_batch_size * recipe.warmup.gradient_accumulation_steps
    traces = long_traces(workdir / f"traces-{fit.recipe}.jsonl", recipe, rows=2 * batch + 2)
    sets.append(f"data.warmup.source={traces}")
    if recipe.data.target.task != "math":
        sets.append("data.target.task=math")
    command = [sys.executable, "-m", "lowres", "bench", fit.recipe, "--model-config", "tiny" if tiny else fit.shape,
               "--backend", backend, "--steps", "1", "--stages", stages,
               "--json", str(workdir / f"{fit.recipe}-{backend}.json")]
    if on_gpu:
        command += ["--gpu-memory", f"{fit.cap_gib:g}"]
    for s in sets:
        command += ["--set", s]
    return command


def rows_of(fit: Fit, backend: str, report: dict | None, note: str) -> list[dict]:
    if report is None:
        return [{"recipe": fit.recipe, "covers": fit.shares, "card": fit.card, "cap_gib": fit.cap_gib,
                 "backend": backend, "stage": "-", "status": "not measured", "note": note}]
    out = []
    for r in report["stages"]:
        memory = r["peak_memory"]
        reserved = memory.get("gpu_reserved_gib")
        out.append({"recipe": fit.recipe, "covers": fit.shares, "card": fit.card, "cap_gib": fit.cap_gib,
                    "backend": backend, "stage": r["stage"], "status": r["status"],
                    "peak_allocated_gib": memory.get("gpu_allocated_gib"), "peak_reserved_gib": reserved,
                    "rss_gib": memory.get("rss_gib"), "step_seconds": r["step_seconds"],
                    "rows_trained_share": r.get("rows_trained_share"),
                    # None without a GPU figure (the rehearsal): nothing was capped there.
                    "fits": (r["status"] == "ok" and reserved <= fit.cap_gib if reserved is not None
                             else False if r["status"] == "does not fit" else None),
                    "note": r["note"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pass", dest="which", choices=("memory", "timing"), required=True)
    parser.add_argument("--backend", choices=("unsloth", "transformers", "both"),
                        help="default: unsloth for memory (what a GPU user gets), both for timing")
    parser.add_argument("--recipes", help="comma-separated; default: every measured recipe of the pass")
    parser.add_argument("--tiny", action="store_true", help="the rehearsal: tiny shapes and lengths (a CPU)")
    parser.add_argument("--json", type=Path, help="write the rows here (after each measurement)")
    parser.add_argument("--limit", type=float, default=0, help="stop starting measurements after this many seconds")
    args = parser.parse_args()
    os.environ.setdefault("LOWRES_DATA_DIR", str(ROOT / "tests" / "fixtures" / "data"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    on_gpu = torch.cuda.is_available()
    check_shares()
    default = TIMED if args.which == "timing" else [f.recipe for f in FITS]
    wanted = args.recipes.split(",") if args.recipes else default
    fits = [f for f in FITS if f.recipe in wanted]
    if len(fits) != len(wanted):
        sys.exit(f"recipe_fit: --recipes: choose from {', '.join(f.recipe for f in FITS)}")
    backend = args.backend or ("unsloth" if args.which == "memory" else "both")
    backends = ["unsloth", "transformers"] if backend == "both" else [backend]
    if not on_gpu and "unsloth" in backends:
        print("recipe_fit: no GPU here, so transformers only (Unsloth needs one)")
        backends = ["transformers"]
    stages = "warmup,merge,rlvr" if args.which == "memory" else "warmup,rlvr"
    workdir = Path(tempfile.mkdtemp(prefix="recipe-fit-"))
    rows: list[dict] = []
    started = time.monotonic()

    def write() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"pass": args.which, "tiny": args.tiny, "gpu": on_gpu and
                                             torch.cuda.get_device_name(), "rows": rows}, indent=2) + "\n")

    jobs = [(fit, b) for fit in fits for b in backends]  # a recipe's backends one after the other: whole pairs
    # Side by side on a GPU for memory (each process under its own cap); one at a time for time.
    side_by_side = args.which == "memory" and on_gpu
    running: list[tuple[Fit, str, subprocess.Popen, Path]] = []
    for fit, b in jobs:
        if args.limit and time.monotonic() - started > args.limit:
            rows.extend(rows_of(fit, b, None, f"not started: past --limit {args.limit:g} s"))
            continue
        log = workdir / f"{fit.recipe}-{b}.log"
        command = bench_command(fit, b, stages, workdir, args.tiny, on_gpu)
        print(f"=== {fit.recipe} ({b}, cap {fit.cap_gib:g} GiB): {' '.join(command[2:])}", flush=True)
        proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "UNSLOTH_COMPILE_LOCATION": str(workdir / f"unsloth-{fit.recipe}")})
        running.append((fit, b, proc, log))
        if not side_by_side:
            finish(running.pop(), workdir, rows)
            write()
    for item in running:
        finish(item, workdir, rows)
        write()
    write()
    print_table(rows)
    return 0 if all(r["status"] != "crashed" and r["status"] != "not measured" for r in rows) else 1


def finish(item, workdir: Path, rows: list[dict]) -> None:
    fit, backend, proc, log = item
    code = proc.wait()
    report_file = workdir / f"{fit.recipe}-{backend}.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    tail = log.read_text()[-3000:]
    print(f"=== {fit.recipe} ({backend}): exit {code}\n{tail}", flush=True)
    rows.extend(rows_of(fit, backend, report, f"lowres bench exited {code} before any figure"))


def print_table(rows: list[dict]) -> None:
    def gib(v):
        return "-" if v is None else f"{v:.2f}"

    print("recipe | card (cap GiB) | backend | stage | status | peak allocated / reserved GiB | step s | fits")
    for r in rows:
        step = "-" if r.get("step_seconds") is None else f"{r['step_seconds']:.2f}"
        print(f"{r['recipe']} | {r['card']} ({r['cap_gib']:g}) | {r['backend']} | {r['stage']} | {r['status']} | "
              f"{gib(r.get('peak_allocated_gib'))} / {gib(r.get('peak_reserved_gib'))} | {step} | "
              f"{ {True: 'yes', False: 'no', None: '-'}[r.get('fits')] }")


if __name__ == "__main__":
    sys.exit(main())
