"""Time a few real warmup (QLoRA SFT) and GRPO steps per backend on a randomly initialised model of a
real shape: step time, tokens/s and peak memory, as a table and a JSON file.

Random weights (built from the config, tokenizer from the embedded SmolLM2) make this runnable where
no model can be downloaded; speed and memory depend on the shape, not on the values. Each stage runs
as `python -m lowres warmup|rlvr` in its own process, as `lowres run` runs it.

    python benchmarks/gpu_speed.py --shape qwen2.5-1.5b --json speed.json          # on a GPU
    python benchmarks/gpu_speed.py --shape tiny --backends transformers --steps 2  # anywhere
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

# Layer shapes of real models (config.json values); "tiny" is for checking the script on a CPU.
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151936),
    "qwen2.5-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       intermediate_size=11008, vocab_size=151936),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=49152),
}


def tokenizer_source() -> str:
    carried = os.environ.get("LOWRES_GPU_TOKENIZER")
    if carried:
        return carried
    from lowres.models import resolve_model

    return resolve_model("embedded:smollm2-135m")


def build_model(shape: str, folder: Path) -> None:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The vocabulary is the real model's (its embedding and lm_head cost), the token ids the tokenizer's.
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def recipe(model: Path, backend: str, steps: int, out: Path, cpu: bool) -> dict:
    return {
        "name": f"speed-{backend}",
        "model": {"name_or_path": str(model), "max_seq_length": 2048, "backend": backend},
        "stages": ["warmup", "rlvr"],
        "data": {"warmup": {"source": "kk-solver", "n_puzzles": 64, "people": [3, 4, 5]},
                 "target": {"task": "kk_easy", "n_examples": 32}},
        "warmup": {"load_in_4bit": not cpu, "max_steps": steps + 1, "per_device_train_batch_size": 4,
                   "gradient_accumulation_steps": 1, "save_steps": 1000, "eval_fraction": 0.0},
        "rlvr": {"start_from": "base", "max_steps": steps + 1, "per_device_train_batch_size": 8,
                 "num_generations": 8, "max_prompt_length": 512, "max_completion_length": 64 if cpu else 256,
                 "save_steps": 1000},
        "output": {"dir": str(out)},
    }


def step_figures(metrics: Path, token_key: str) -> dict:
    """Median step time and tokens/s over the logged steps after the first (warm-up) one."""
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    pairs = list(zip(records, records[1:], strict=False))
    if not pairs:
        return {"steps_timed": 0}
    seconds = [b["time"] - a["time"] for a, b in pairs]
    figures = {"steps_timed": len(seconds), "step_seconds": round(statistics.median(seconds), 3)}
    tokens = [(b.get(token_key, 0) - a.get(token_key, 0)) / s for (a, b), s in zip(pairs, seconds, strict=True)
              if s > 0 and token_key in b]
    if tokens:
        figures["tokens_per_second"] = round(statistics.median(tokens), 1)
    return figures


def run_stage(args: list[str], log) -> tuple[int, float]:
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "lowres", *args], stdout=log, stderr=subprocess.STDOUT)
    return done.returncode, round(time.time() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b")
    parser.add_argument("--backends", default="unsloth,transformers")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage (after one untimed step)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--workdir", type=Path, help="keep models and runs here (default: a temp folder)")
    args = parser.parse_args()

    from lowres.hardware import detect, package_versions

    hw = detect()
    cpu = hw.device != "cuda"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lowres-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"model-{args.shape}"
    if not (model / "config.json").is_file():
        build_model(args.shape, model)
    rows = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        path = work / f"{backend}.yaml"
        path.write_text(yaml.safe_dump(recipe(model, backend, args.steps, work / "runs", cpu)))
        run = work / "runs" / f"speed-{backend}"
        with (work / f"{backend}.log").open("w") as log:
            for stage, stage_args, token_key in (
                    ("warmup", ["warmup", str(path), "--out", str(run / "warmup")], "num_input_tokens_seen"),
                    ("rlvr", ["rlvr", str(path), "--model", str(model), "--out", str(run / "rlvr")], "num_tokens")):
                code, wall = run_stage(stage_args, log)
                row = {"backend": backend, "stage": stage, "exit_code": code, "wall_seconds": wall}
                if code == 0:
                    summary = json.loads((run / stage / "summary.json").read_text())
                    row.update(step_figures(run / stage / "metrics.jsonl", token_key),
                               peak_memory=summary.get("peak_memory"), dtype=summary.get("dtype"),
                               backend_used=summary.get("backend"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {"shape": args.shape, "device": hw.device, "gpu": hw.gpu_name, "torch": torch.__version__,
              "cuda": torch.version.cuda, "versions": package_versions(), "steps": args.steps, "results": rows}
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.shape} (random weights) on {hw.gpu_name or hw.device}", title_justify="left")
    for column in ("backend", "stage", "step s", "tokens/s", "peak memory GiB", "exit"):
        table.add_column(column)
    for r in rows:
        mem = r.get("peak_memory") or {}
        peak = mem.get("gpu_allocated_gib", mem.get("rss_gib"))
        table.add_row(r["backend"], r["stage"], str(r.get("step_seconds", "-")), str(r.get("tokens_per_second", "-")),
                      "-" if peak is None else str(peak), str(r["exit_code"]))
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"figures → {args.json}")
    sys.exit(0 if all(r["exit_code"] == 0 for r in rows) else 1)


if __name__ == "__main__":
    main()
