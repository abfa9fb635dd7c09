"""This machine's fp32 matmul speed (2048×2048, on torch's current threads), the yardstick every CPU
timing in the README is stated with:  python benchmarks/gflops.py  (--threads N to pin the thread count)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    import torch

    from lowres.bench import matmul_gflops

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"fp32 matmul 2048²: {matmul_gflops():.1f} GFLOP/s on {torch.get_num_threads()} threads")
