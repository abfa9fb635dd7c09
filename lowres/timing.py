"""How long `lowres run` will take on this machine, said before the first stage, from measured figures only.

Each stage that will run gets a figure from the first of these that applies, or none:

1. `lowres bench RECIPE --json runs/<name>/bench.json`: the bench's extrapolated time for a stage whose
   settings and inputs (its fingerprint) are the recipe's, measured with the backend this machine trains
   with. On a CPU it is scaled by the fp32 matmul speed of this machine against the bench's machine; a GPU
   figure is used only on the same GPU.
2. On a CPU, for a stage whose fingerprint is the bundled demo's: the demo's stage time measured on the
   project's 2-core machine (DEMO_SECONDS), scaled by the same yardstick. The README's "Time scales with
   the machine's speed" is this rule; it is a yardstick, not a promise (a machine with many cores does
   not speed up the demo's small matrix products as much as its GFLOP/s).

The yardstick is lowres.bench.matmul_gflops, measured when a figure needs it (about a second). A stage with
no figure is named, with how to measure it; a stage done before with the same inputs costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lowres.artifacts import read_json
from lowres.recipe import RLVR_ARMS, Recipe
from lowres.ui import duration

# The demo run in the manual ("The demo: what `lowres run` does offline"): a fresh run on 2026-12-07, the
# embedded model already converted, on the project's 2-core CPU machine at 181 → 179 GFLOP/s fp32 matmul
# (before → after; DEMO_GFLOPS is their midpoint). Seconds per stage (the RLVR stages with their signal
# check); eval is the evaluations of the base, warmed and RLVR models (32, 37 and 40 s): the baseline's
# adapter never moved, so its scores were the base's.
DEMO_GFLOPS = 180.2
DEMO_SECONDS = {"warmup": 117.7, "merge": 12.0, "rlvr": 123.4, "rlvr-no-warmup": 53.5, "eval": 109.2}
BENCH_FILE = "bench.json"


def eval_key(recipe: Recipe) -> str:
    """What the eval stage's time depends on: the eval settings and data, and which models it scores."""
    from lowres.fingerprint import eval_fingerprints, fingerprint

    return fingerprint(*eval_fingerprints(recipe).values())


def stage_keys(recipe: Recipe) -> dict[str, str]:
    """Each stage's fingerprint, eval's included (eval_key)."""
    from lowres.fingerprint import stage_fingerprints

    return {**stage_fingerprints(recipe), "eval": eval_key(recipe)}


@dataclass
class Estimate:
    seconds: dict[str, float] = field(default_factory=dict)   # stage -> seconds on this machine
    basis: dict[str, str] = field(default_factory=dict)       # stage -> "bench" or "demo"
    missing: list[str] = field(default_factory=list)          # stages with no figure
    done: list[str] = field(default_factory=list)             # stages that will be skipped
    gflops: float | None = None                               # this machine's yardstick, when measured
    bench: dict | None = None                                 # the bench report used, if any


def _usable_bench(recipe: Recipe, hw) -> tuple[dict | None, str | None]:
    """(the run folder's bench report, None) when it was measured on a machine like this one, else (None, why)."""
    report = read_json(recipe.run_dir / BENCH_FILE)
    if not (isinstance(report, dict) and isinstance(report.get("stages"), list)
            and isinstance(report.get("hardware"), dict) and isinstance(report.get("fingerprints"), dict)):
        return None, None
    measured_on = report["hardware"]
    if hw.device == "cpu" and not isinstance(measured_on.get("matmul_fp32_gflops"), (int, float)):
        return None, None
    if measured_on.get("device") != hw.device:
        return None, f"{recipe.run_dir / BENCH_FILE} was measured on {measured_on.get('device')}, not {hw.device}"
    if hw.device == "cuda" and measured_on.get("gpu") != hw.gpu_name:
        return None, f"{recipe.run_dir / BENCH_FILE} was measured on {measured_on.get('gpu')}, not {hw.gpu_name}"
    return report, None


def estimate(recipe: Recipe, stages: list[str], done: list[str], gflops=None,
             keys: dict[str, str] | None = None) -> tuple[Estimate, str | None]:
    """The time `stages` (those that will run, one entry per run: an RLVR arm once per seed; eval once, for
    all its models) take here; `done`: those that will be skipped. gflops: a function measuring this machine's fp32
    matmul GFLOP/s (lowres.hardware.matmul_gflops), called at most once. keys: each stage's fingerprint, as
    the run plan holds them (default: computed, `stage_keys`). Returns the estimate and why the bench file
    was not used (None: used, or none there)."""
    from lowres.hardware import detect

    if gflops is None:
        from lowres.hardware import matmul_gflops as gflops
    hw = detect(recipe.model.dtype, recipe.model.backend, recipe.num_processes)
    result = Estimate(done=list(done))
    keys = keys or stage_keys(recipe)
    report, unused = _usable_bench(recipe, hw)
    bench_rows = {}
    if report is not None:
        for row in report["stages"]:
            if not isinstance(row, dict):
                continue
            same = report["fingerprints"].get(row.get("stage")) == keys.get(row.get("stage"))
            if (same and row.get("backend") == hw.backend and row.get("status") == "ok"
                    and isinstance(row.get("extrapolated_seconds"), (int, float))):
                bench_rows[row["stage"]] = float(row["extrapolated_seconds"])
    demo_keys = {}
    if hw.device == "cpu":
        from lowres.recipe import bundled_recipes, load_recipe

        demo_keys = stage_keys(load_recipe(bundled_recipes()["demo"]))

    def yardstick() -> float:
        if result.gflops is None:
            result.gflops = float(gflops())
        return result.gflops

    for stage in dict.fromkeys(stages):
        runs = stages.count(stage)  # an RLVR arm runs once per seed of the recipe's `seeds`
        if stage in bench_rows:
            scale = report["hardware"]["matmul_fp32_gflops"] / yardstick() if hw.device == "cpu" else 1.0
            # (the bench already multiplies an arm by the recipe's seeds: here only the runs left to do count)
            per_run = bench_rows[stage] / max(len(recipe.seeds), 1) if stage in RLVR_ARMS else bench_rows[stage]
            result.seconds[stage], result.basis[stage] = per_run * runs * scale, "bench"
            result.bench = report
        elif stage in demo_keys and demo_keys[stage] == keys[stage]:
            result.seconds[stage] = DEMO_SECONDS[stage] * runs * DEMO_GFLOPS / yardstick()
            result.basis[stage] = "demo"
        else:
            result.missing.append(stage)
    return result, unused


def estimate_lines(recipe: Recipe, result: Estimate, unused: str | None) -> list[str]:
    """What `lowres run` prints before its first stage."""
    lines = []
    if result.seconds:
        parts = ", ".join(f"{stage} {duration(seconds)}" for stage, seconds in result.seconds.items())
        total = sum(result.seconds.values())
        bases = []
        if "bench" in result.basis.values():
            bench = result.bench
            where = bench["hardware"].get("gpu") or f"{bench['hardware']['matmul_fp32_gflops']} GFLOP/s fp32 matmul"
            stages = [s for s, b in result.basis.items() if b == "bench"]
            basis = f"{', '.join(stages)}: {recipe.run_dir / BENCH_FILE}'s figures (measured on {where}"
            basis += f", scaled to this machine's {result.gflops:.0f} GFLOP/s)" if result.gflops else ")"
            bases.append(basis)
        if "demo" in result.basis.values():
            stages = [s for s, b in result.basis.items() if b == "demo"]
            bases.append(f"{', '.join(stages)}: the demo's stages as measured on the project's 2-core machine at "
                         f"{DEMO_GFLOPS:.0f} GFLOP/s fp32 matmul, scaled to this machine's {result.gflops:.0f} "
                         "GFLOP/s (measured just now)")
        what = "the stages that will run" if not result.missing else "the stages with a figure"
        lines.append(f"time estimate for {what} on this machine: ≈ {duration(total)} ({parts}); based on "
                     + "; ".join(bases))
    if result.missing:
        bench_file = recipe.run_dir / BENCH_FILE
        lines.append(f"no time estimate for {', '.join(result.missing)}: "
                     + (f"{unused}; " if unused else "")
                     + f"`lowres bench {recipe.source} --json {bench_file}` (with the same --set options) measures "
                       "a few steps of each stage, and `lowres run` then uses its figures")
    if result.done:
        lines.append(f"done before with the same inputs, skipped: {', '.join(result.done)}")
    return lines


@dataclass
class Pace:
    """The estimate corrected as stages finish. The first estimate assumes the machine stays as fast, and as
    free of other work, as when its speed was measured; a loaded machine can take several times longer. So
    after each stage, the stages left are re-estimated at the pace of those finished so far."""

    estimated: dict[str, float]   # stage -> seconds for one run of it (an RLVR arm per seed)
    pending: list[str]            # the stages still to run, in order, one entry per run
    spent: float = 0.0            # seconds the finished stages with a figure took
    expected: float = 0.0         # seconds their figures said

    def finished(self, stage: str, seconds: float) -> str | None:
        """The line to print when `stage` ends after `seconds`; None when it had no figure."""
        if stage in self.pending:
            self.pending.remove(stage)
        if stage not in self.estimated:
            return None
        self.spent += seconds
        self.expected += self.estimated[stage]
        ratio = self.spent / self.expected
        line = f"{stage} took {duration(seconds)} (estimated {duration(self.estimated[stage])})"
        left = [self.estimated[name] for name in self.pending if name in self.estimated]
        if left:
            line += f"; the stages left ≈ {duration(ratio * sum(left))} at the pace so far"
            if not 0.8 <= ratio <= 1.25:
                line += (f", {ratio:.1f}× the first estimate, which assumed this machine stays as fast and as "
                         "free of other work as when it measured its speed")
        return line
