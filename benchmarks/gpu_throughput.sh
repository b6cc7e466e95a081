#!/usr/bin/env bash
# The GPU throughput figures of the open issue (RN50 CLIP, 224 px, batch 256, bf16, one H100/H200), measured
# in one run that writes every figure as files directly in $OUT (six files, no folders, so that all of them
# come back from a lent GPU machine, which returns at most 8):
#   summary.md         each figure beside the issue's target and the old code's figure, then the details
#   results.json       every figure (value, unit, peak GPU memory, details), the setup and the environment
#   profile_model.txt  torch.profiler: MMCL and MMCL+SSL steps of the model alone (self CUDA and CPU time)
#   profile_loader.txt torch.profiler and cProfile: the loader alone in one process (CSV, CSV+SSL, shards)
#   profile_eval.txt   torch.profiler: one evaluation pass
#   log.txt            everything the run printed
# Usage:
#   OUT=/tmp/tp bash benchmarks/gpu_throughput.sh                          # a GPU machine with the project
#   bash benchmarks/gpu_throughput.sh --prepare runs/gpu_prep              # where pip works: wheels + WordNet
#   WHEELS=runs/gpu_prep/wheels NLTK_DATA=$PWD/runs/gpu_prep/nltk_data OUT=/tmp/tp \
#     bash benchmarks/gpu_throughput.sh                                    # a GPU machine with torch only
#   OUT=/tmp/tp DEVICE=cpu MODEL=tiny-clip BATCH=32 IMAGES=256 STEPS=2 WARMUP=1 WORKERS=2 EVAL_IMAGES=200 \
#     EVAL_BATCH=100 RUN_EVAL_IMAGES=100 FIT_BATCHES="64" bash benchmarks/gpu_throughput.sh   # CPU check
# Settings (environment variables; the defaults are the issue's setup on one GPU):
#   OUT=runs/gpu_throughput  MODEL=RN50  BATCH=256  PRECISION=bf16 (fp32 on the CPU)  DEVICE=cuda
#   STEPS=40 (timed steps a measurement)  WARMUP=5  WORKERS=8 (loader workers)  CHANNELS_LAST=1
#   IMAGES=16384 (generated JPEG pairs; the CSV and the shards hold the same images)
#   EVAL_IMAGES=10000  EVAL_BATCH=500  RUN_EVAL_IMAGES=500 (the pretrain run's evaluation set)
#   FIT_BATCHES="512 1024"  LIMIT=470 (seconds for the whole script: parts that would run past it are
#   skipped and reported as such)  GEN_JOBS (data processes; default the CPUs, at most 16)  WORK (scratch:
#   data, run directories; default a temporary folder, removed at the end unless KEEP_WORK=1)
#   WHEELS (a folder of wheels to install first, with pip --no-index, into WORK)  PYTHON (the interpreter)
# Sizing for 8 minutes on one H100 with 16 CPU cores (estimates scaled from the CPU figures in
# docs/benchmarks.md; no GPU has run this yet): data about 30 s (16,384 pairs at 224 px, ~15 ms a pair on each
# of 16 cores), then one process of about 4-5 min: each steady measurement is 50 steps (64 batches of 256
# in the data, so no pass crosses an epoch), about 15-35 s a part with its warm-up, the pretrain run about
# 45 s (start-up, 2 evaluations of 500 images, 64 steps, 1.6 GB of checkpoints), the 4 batch-size checks
# about 50 s. LIMIT=470 caps it all. The CPU check above takes about a minute on 2 cores.
# Exit status: 0 if every part ran, 1 if one failed or was skipped, 2 for bad settings or no usable
# environment.
set -uo pipefail

PROG=gpu_throughput.sh
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SELF_DIR/.." && pwd)
BENCH="$SELF_DIR/bench_throughput.py"

die() { echo "$PROG: $1" >&2; exit 2; }

if [[ -n "${PYTHON:-}" ]]; then py=$PYTHON
elif [[ -x "$ROOT/.venv/bin/python" ]]; then py="$ROOT/.venv/bin/python"
else py=$(command -v python3 || true)
fi
if [[ -z "$py" ]] || ! command -v "$py" >/dev/null; then die "no python3 (set PYTHON=...)"; fi

# -- --prepare DIR: what a machine with torch alone needs, fetched where pip works ----------------------------
if [[ "${1:-}" == "--prepare" ]]; then
  dest=${2:-}
  [[ -n "$dest" ]] || die "--prepare needs a folder (e.g. runs/gpu_prep: runs/ is ignored by git)"
  # The packages clipbackdoor needs beyond the GPU image's (which has torch, torchvision, timm, numpy,
  # pillow, pyyaml, tqdm, safetensors, huggingface-hub, regex, click, joblib, matplotlib), at the versions
  # installed here: pure-Python wheels, and wcwidth's for x86-64 Linux (any CPython >= 3.10).
  names="open_clip_torch ftfy wcwidth webdataset braceexpand nltk defusedxml"
  # shellcheck disable=SC2086  # one argument per name
  pins=$("$py" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
    $names) || die "cannot read the versions of $names with $py"
  mkdir -p "$dest/wheels" || die "cannot create $dest"
  # shellcheck disable=SC2086
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$dest/wheels" $pins ||
    die "pip download failed"
  # WordNet for EDA's caption views (MMCL+SSL, CleanCLIP), as nltk's zip: NLTK_DATA=<abs path>/nltk_data.
  tmp=$(mktemp -d) || die "no temporary folder"
  PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" "$py" -m clipbackdoor setup-wordnet --dest "$tmp" >/dev/null ||
    die "clipbackdoor setup-wordnet failed (apt-get install wordnet-base wordnet-sense-index)"
  mkdir -p "$dest/nltk_data/corpora"
  "$py" - "$tmp/corpora/wordnet" "$dest/nltk_data/corpora/wordnet.zip" <<'PY' || die "cannot zip WordNet"
import sys, zipfile
from pathlib import Path
src, zip_path = Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted(src.iterdir()):
        z.write(f, f"wordnet/{f.name}")
PY
  rm -rf -- "$tmp"
  echo "prepared $dest: $(ls "$dest/wheels" | wc -l) wheels ($pins), nltk_data/corpora/wordnet.zip; $(du -sh "$dest" | cut -f1)"
  exit 0
fi
[[ $# -eq 0 ]] || die "takes no arguments but --prepare DIR; settings are environment variables (see its header)"

# -- settings ----------------------------------------------------------------------------------------------
OUT=${OUT:-$ROOT/runs/gpu_throughput}
MODEL=${MODEL:-RN50} BATCH=${BATCH:-256} STEPS=${STEPS:-40} WARMUP=${WARMUP:-5} WORKERS=${WORKERS:-8}
IMAGES=${IMAGES:-16384} EVAL_IMAGES=${EVAL_IMAGES:-10000} EVAL_BATCH=${EVAL_BATCH:-500}
RUN_EVAL_IMAGES=${RUN_EVAL_IMAGES:-500} FIT_BATCHES=${FIT_BATCHES-512 1024} CHANNELS_LAST=${CHANNELS_LAST:-1}
LIMIT=${LIMIT:-470}
for v in BATCH STEPS WARMUP WORKERS IMAGES EVAL_IMAGES EVAL_BATCH RUN_EVAL_IMAGES LIMIT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
for v in BATCH STEPS IMAGES EVAL_IMAGES EVAL_BATCH LIMIT; do ((${!v} > 0)) || die "$v must be > 0"; done
[[ "$FIT_BATCHES" =~ ^[0-9\ ]*$ ]] || die "FIT_BATCHES must be whole numbers, got '$FIT_BATCHES'"
[[ "$CHANNELS_LAST" =~ ^[01]$ ]] || die "CHANNELS_LAST must be 0 or 1"
# Whole shards of one batch each, so the shards split evenly over the loader workers.
((IMAGES % BATCH == 0)) || IMAGES=$(((IMAGES / BATCH + 1) * BATCH))
shards=$((IMAGES / BATCH))
((shards >= WORKERS)) || die "IMAGES/BATCH = $shards shards, fewer than WORKERS=$WORKERS (the shard loader needs one each)"
nproc=$(nproc 2>/dev/null || echo 4)
GEN_JOBS=${GEN_JOBS:-$((nproc < 16 ? nproc : 16))}
((GEN_JOBS > shards)) && GEN_JOBS=$shards

mkdir -p "$OUT" || die "cannot create OUT=$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f -- "$OUT/summary.md" "$OUT/results.json" "$OUT/profile_model.txt" "$OUT/profile_loader.txt" \
  "$OUT/profile_eval.txt" "$OUT/log.txt"
if [[ -n "${WORK:-}" ]]; then
  mkdir -p "$WORK" || die "cannot create WORK=$WORK"
  WORK=$(cd "$WORK" && pwd)
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_throughput.XXXXXX") || die "cannot create a scratch folder"
fi
start_s=$(date +%s)
deadline=$((start_s + LIMIT))

# shellcheck disable=SC2329  # run by the trap
cleanup() { [[ "${KEEP_WORK:-0}" == 1 ]] || rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'echo "$PROG: interrupted" >&2; exit 130' INT TERM

run() {
  echo "GPU throughput: $MODEL, batch $BATCH, $STEPS timed steps, $WORKERS loader workers, $IMAGES pairs; out $OUT"
  echo "scratch: $WORK (LIMIT $LIMIT s)"
  if [[ -n "${WHEELS:-}" ]]; then
    compgen -G "$WHEELS/*.whl" >/dev/null || { echo "no wheels in WHEELS=$WHEELS"; return 2; }
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl ||
      { echo "pip install of $WHEELS failed"; return 2; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    echo "installed $(ls "$WHEELS" | wc -l) wheels from $WHEELS into $WORK/site"
  fi
  # Always this checkout's code, installed or not.
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  local probe cuda_ok bf16_ok size
  probe=$("$py" "$BENCH" probe "$MODEL" 2>&1 | tail -n 1)
  [[ "$probe" =~ ^[01]\ [01]\ [0-9]+$ ]] ||
    { echo "cannot import torch, clipbackdoor and its packages with $py, or no MODEL=$MODEL: $probe"; return 2; }
  read -r cuda_ok bf16_ok size <<<"$probe"
  if [[ -z "${DEVICE:-}" ]]; then
    ((cuda_ok)) || { echo "no CUDA device: set DEVICE=cpu (and MODEL=tiny-clip, small sizes) for a CPU check"; return 2; }
    DEVICE=cuda
  fi
  [[ "$DEVICE" =~ ^(cpu|cuda|cuda:[0-9]+)$ ]] || { echo "DEVICE must be cpu, cuda or cuda:N, got '$DEVICE'"; return 2; }
  [[ "$DEVICE" == cpu ]] || ((cuda_ok)) || { echo "DEVICE=$DEVICE but torch sees no CUDA device"; return 2; }
  if [[ -z "${PRECISION:-}" ]]; then
    if [[ "$DEVICE" != cpu ]] && ((bf16_ok)); then PRECISION=bf16; else PRECISION=fp32; fi
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

  # -- data: shards from the project's generator, in GEN_JOBS processes; the CSV from the same JPEGs --------
  local t0 k jobs_shards n pids=() rc=0
  t0=$(date +%s)
  echo "data: $IMAGES pairs at $size px as $shards JPEG shards of $BATCH, in $GEN_JOBS processes"
  mkdir -p "$WORK/parts"
  for ((k = 0; k < GEN_JOBS; k++)); do
    jobs_shards=$((shards / GEN_JOBS + (k < shards % GEN_JOBS ? 1 : 0)))
    n=$((jobs_shards * BATCH))
    OMP_NUM_THREADS=1 "$py" -m clipbackdoor synthetic --format webdataset --image-format jpg --split train \
      --seed "$k" -n "$n" --image-size "$size" --samples-per-shard "$BATCH" --out "$WORK/parts/$(printf %02d "$k")" \
      >"$WORK/gen-$k.log" 2>&1 &
    pids+=($!)
  done
  for k in "${!pids[@]}"; do
    wait "${pids[k]}" || { rc=1; echo "data process $k failed: $(tail -n 3 "$WORK/gen-$k.log")"; }
  done
  ((rc == 0)) || return 1
  "$py" "$BENCH" gather-data "$WORK" || return 1
  echo "data: $(($(date +%s) - t0)) s, $(du -sh "$WORK/shards" | cut -f1) of shards"

  # -- the measurements, in one process that stops in time for the summary ------------------------------
  local left=$((deadline - $(date +%s) - 10))
  ((left > 30)) || { echo "no time left for the measurements (LIMIT=$LIMIT)"; return 1; }
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  # shellcheck disable=SC2086
  timeout -k 10 "$left" "$py" "$BENCH" measure --work "$WORK" --out "$OUT" --model "$MODEL" --batch "$BATCH" \
    --precision "$PRECISION" --device "$DEVICE" --workers "$WORKERS" --steps "$STEPS" --warmup "$WARMUP" \
    --channels-last "$CHANNELS_LAST" --eval-images "$EVAL_IMAGES" --eval-batch "$EVAL_BATCH" \
    --run-eval-images "$RUN_EVAL_IMAGES" --fit-batches $FIT_BATCHES --deadline "$((deadline - 10))" \
    --commit "$commit"
  rc=$?
  ((rc == 124 || rc == 137)) && echo "the measurement process ran past its $left s and was stopped"
  echo
  if [[ -f "$OUT/results.json" ]]; then
    "$py" "$BENCH" summary --out "$OUT" || rc=1
  else
    printf '# GPU throughput\n\nNo measurement ran; see log.txt.\n' >"$OUT/summary.md"
    rc=1
  fi
  echo "total $(($(date +%s) - start_s)) s; written: $(cd "$OUT" && ls | tr '\n' ' ')"
  return "$rc"
}

run 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
