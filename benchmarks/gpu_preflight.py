"""The GPU check's first phase: is this the machine we think, and does everything import? (gpu_check.sh)

    python benchmarks/gpu_preflight.py --expect gpu   # on the GPU machine: CUDA must be there
    python benchmarks/gpu_preflight.py --expect cpu   # in the CPU rehearsal: the same imports, Unsloth's no-GPU error

Imports every package the later phases need, each in turn, and Unsloth in child processes (importing it here
would patch this process). Without CUDA it checks both of Unsloth's paths: with its CPU fallback off it must stop
with its own "You need a GPU" error and nothing else, and forced onto its GPU path (UNSLOTH_ALLOW_CPU=1) it must
import, which is where the first kit's missing packages showed (desk check 2, K1-K3). Exit 1 on the first
surprise, with what it was.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time

PACKAGES = ("torch", "transformers", "accelerate", "peft", "datasets", "trl", "bitsandbytes", "math_verify",
            "lowres.cli", "lowres.train.rlvr", "lowres.train.warmup", "pytest")
NO_GPU_ERROR = "You need a GPU"  # unsloth_zoo/device_type.py, raised when no accelerator is found


def unsloth_child(**env) -> tuple[int, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import unsloth; from unsloth import FastLanguageModel"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=240)
    lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
    print(f"  import unsloth{' with ' + ' '.join(f'{k}={v}' for k, v in env.items()) if env else ''}: exit "
          f"{done.returncode} in {time.perf_counter() - started:.0f} s; last line: {lines[-1] if lines else ''}")
    return done.returncode, lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=("gpu", "cpu"), required=True)
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA available: {cuda}"
          + (f", {torch.cuda.get_device_name(0)}" if cuda else ""))
    if cuda != (args.expect == "gpu"):
        print(f"preflight: expected {'a CUDA GPU' if args.expect == 'gpu' else 'no GPU'} here")
        return 1
    for name in PACKAGES:
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
        except Exception as e:
            print(f"preflight: import {name} failed: {type(e).__name__}: {e}")
            return 1
        print(f"  import {name} {getattr(module, '__version__', '')}: {time.perf_counter() - started:.1f} s")
    if args.expect == "gpu":
        code, last = unsloth_child()
        if code != 0:
            print(f"preflight: import unsloth failed: {last}")
            return 1
    else:
        code, last = unsloth_child(UNSLOTH_DISABLE_CPU_FALLBACK="1")
        if code == 0 or NO_GPU_ERROR not in last:
            print(f"preflight: expected Unsloth's own no-GPU error ({NO_GPU_ERROR!r}), got: {last or 'success'}")
            return 1
        code, last = unsloth_child(UNSLOTH_ALLOW_CPU="1")
        if code != 0:
            print(f"preflight: Unsloth's GPU import path failed: {last}")
            return 1
    print("preflight: every package imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
