#!/usr/bin/env bash
# One end-to-end check of clipbackdoor's GPU path, for a person with a GPU to run once (a few minutes on
# one H100/H200-class GPU): environment report, RN50 pre-training with MMCL and with MMCL+SSL from the CSV
# loader (bf16, channels_last, 8 loader workers), a CleanCLIP cleaning epoch, evaluation, a 2-GPU torchrun
# job when there are 2 GPUs, and `clipbackdoor demo --quick`. `--tiny` runs the same parts at CPU size.
#   bash scripts/gpu_check.sh                 # on a GPU machine
#   bash scripts/gpu_check.sh --tiny          # the same parts at CPU size: 1.5 to 3 minutes on 2 cores
#   bash scripts/gpu_check.sh --help
# Each part runs under its own time limit with its log in DIR/logs/; a part that fails or times out is
# marked FAIL with its log's last line and the check goes on. DIR/summary.md and DIR/summary.tsv hold the
# table; the exit status is 0 only if no part failed (2: bad usage or no usable environment).
# shellcheck disable=SC2317  # the parts are functions called by name through run_part
set -uo pipefail

PROG=gpu_check.sh
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SELF_DIR/.." && pwd)

usage() {
  cat <<'EOF'
Usage: bash scripts/gpu_check.sh [--tiny] [--out DIR] [--device DEVICE] [--timeout SECONDS]
                                 [--skip-demo] [--ddp] [-h|--help]

Checks clipbackdoor's GPU path end to end, one part after another, each under its own time limit:
  1 environment        python, torch, CUDA, cuDNN, GPUs, driver, CPUs, clipbackdoor, bf16 support
  2 data               synthetic pairs written as CleanCLIP-format CSVs with PNG images
                       (training pairs and, with --split clean, cleaning pairs)
  3 pretrain-mmcl      RN50 MMCL pre-training, 1 epoch, read through the CSV loader: batch 256, bf16,
                       channels_last, 8 loader workers, 5% BadNet poisons; samples/s from metrics.jsonl
  4 pretrain-mmcl-ssl  the same with MMCL+SSL (objective.inmodal_weight=1)
  5 clean-cleanclip    one CleanCLIP epoch on the clean pairs, from the MMCL model
  6 evaluate           clipbackdoor evaluate: zero-shot accuracy and ASR on the GPU
  7 ddp-2gpu           torchrun --nproc_per_node 2 MMCL+SSL pre-training (DDP, sharded evaluation);
                       SKIP with fewer than 2 GPUs
  8 demo-quick         clipbackdoor demo --quick (its runs use train.device=auto, so CUDA when present)

Options:
  --out DIR          output folder (default: runs/gpu_check in the repository); re-running replaces
                     the previous check's results there, and a non-empty folder that is not a
                     gpu_check folder is refused
  --tiny             CPU size: tiny-clip at 32 px, batch 64, 2 loader workers, a few hundred pairs, fp32
                     on the CPU (bf16 on a GPU); device cpu unless a GPU is present or --device is given
  --device DEVICE    cpu, cuda or cuda:N (default: cuda when available; without CUDA only with --tiny)
  --timeout SECONDS  time limit of every part (default: per part, see below)
  --skip-demo        leave out part 8 (marked SKIP)
  --ddp              run part 7 even without 2 GPUs: 2 CPU processes with gloo (needs --tiny on the
                     CPU; a check of the launch itself)
  -h, --help         this help

Default time limits (full / --tiny): environment 30/60 s, data 60/60 s, each pre-training 75/60 s,
clean 60/60 s, evaluate 45/60 s, ddp-2gpu 90/120 s, demo-quick 135/300 s: 8 minutes in all on one
GPU if every part ran to its limit. A healthy run on one H100/H200 is expected to take well under that.

The tool is .venv/bin/clipbackdoor and .venv/bin/python in the repository when present, otherwise
clipbackdoor and python3 on PATH; PYTHON=/path/to/python selects an interpreter (and runs the tool
as `$PYTHON -m clipbackdoor`).

Output in DIR: environment.txt, summary.md, summary.tsv, logs/<part>.log, data/ and data-clean/ (CSV
and PNGs), runs/<run>/ (run directories: config.yaml, metrics.jsonl, log.txt, checkpoints), demo/.
At full size the RN50 checkpoints take about 6 GB (8 GB with the 2-GPU part).
Exit status: 0 if no part failed, 1 if one did, 2 for bad usage or an unusable environment.
EOF
}

die_usage() { echo "$PROG: $1 (see --help)" >&2; exit 2; }
die_env() { echo "$PROG: $1" >&2; exit 2; }

# -- options -------------------------------------------------------------------------------------------
out="" tiny=0 device="" timeout_all="" skip_demo=0 force_ddp=0
while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --tiny) tiny=1 ;;
    --skip-demo) skip_demo=1 ;;
    --ddp) force_ddp=1 ;;
    --out | --device | --timeout)
      (($# >= 2)) || die_usage "$1 needs a value"
      case "$1" in --out) out=$2 ;; --device) device=$2 ;; --timeout) timeout_all=$2 ;; esac
      shift ;;
    --out=*) out=${1#*=} ;;
    --device=*) device=${1#*=} ;;
    --timeout=*) timeout_all=${1#*=} ;;
    *) die_usage "unknown option '$1'" ;;
  esac
  shift
done
[[ -z "$timeout_all" || "$timeout_all" =~ ^[1-9][0-9]*$ ]] || die_usage "--timeout wants whole seconds > 0, got '$timeout_all'"
[[ -z "$device" || "$device" =~ ^(cpu|cuda|cuda:[0-9]+)$ ]] || die_usage "--device must be cpu, cuda or cuda:N, got '$device'"
[[ -n "$out" ]] || out="$ROOT/runs/gpu_check"

# -- the tool ------------------------------------------------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
  py=$PYTHON
  cb=("$py" -m clipbackdoor)
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  py="$ROOT/.venv/bin/python"
  if [[ -x "$ROOT/.venv/bin/clipbackdoor" ]]; then cb=("$ROOT/.venv/bin/clipbackdoor"); else cb=("$py" -m clipbackdoor); fi
else
  py=$(command -v python3 || true)
  [[ -n "$py" ]] || die_env "no .venv in $ROOT and no python3 on PATH: run scripts/install.sh or set PYTHON=..."
  if command -v clipbackdoor >/dev/null; then cb=("$(command -v clipbackdoor)"); else cb=("$py" -m clipbackdoor); fi
fi
command -v "$py" >/dev/null || die_env "python '$py' not found (PYTHON=$py?)"
command -v timeout >/dev/null || die_env "needs coreutils' timeout"

# One look at torch before anything runs: CUDA, GPU count, bf16. Warnings on stderr are kept apart, and
# only the last line of stdout counts.
probe_err=$(mktemp "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || die_env "cannot create a temporary file"
probe=$("$py" -c '
import torch, clipbackdoor  # noqa: F401
ok = torch.cuda.is_available()
print(int(ok), torch.cuda.device_count() if ok else 0, int(ok and torch.cuda.is_bf16_supported()))
' 2>"$probe_err")
probe_rc=$?
probe_msg=$(grep -v '^[[:space:]]*$' "$probe_err" | tail -n 1)
rm -f -- "$probe_err"
probe=${probe##*$'\n'}
if ((probe_rc != 0)) || [[ ! "$probe" =~ ^[01]\ [0-9]+\ [01]$ ]]; then
  die_env "cannot import torch and clipbackdoor with $py: ${probe_msg:-no output}"
fi
read -r cuda_ok gpu_count bf16_ok <<<"$probe"

if [[ -z "$device" ]]; then
  if ((cuda_ok)); then device=cuda
  elif ((tiny)); then device=cpu
  else die_env "no CUDA device: use --tiny for a CPU check"
  fi
fi
if [[ "$device" == cuda* ]]; then
  ((cuda_ok)) || die_env "no CUDA device: use --tiny for a CPU check"
  if [[ "$device" == cuda:* ]] && ((10#${device#cuda:} >= gpu_count)); then
    die_env "--device $device: only $gpu_count GPU(s) visible"
  fi
elif ((!tiny)); then
  die_env "--device cpu trains RN50 at 224 px on the CPU (hours): use --tiny for a CPU check"
fi
if ((force_ddp)) && [[ "$device" != cpu ]] && ((gpu_count < 2)); then
  die_usage "--ddp without 2 GPUs runs on the CPU: add --device cpu (with --tiny)"
fi

# -- settings ------------------------------------------------------------------------------------------
if ((tiny)); then
  mode=tiny model=tiny-clip size=32 batch=64 workers=2 ddp_workers=1 patch=4
  n_train=$((64 * 6)) n_clean=$((64 * 4)) n_eval=200
  declare -A limit=([environment]=60 [data]=60 [pretrain-mmcl]=60 [pretrain-mmcl-ssl]=60
    [clean-cleanclip]=60 [evaluate]=60 [ddp-2gpu]=120 [demo-quick]=300)
else
  mode=full model=RN50 size=224 batch=256 workers=8 ddp_workers=4 patch=16
  n_train=$((256 * 6)) n_clean=$((256 * 4)) n_eval=500
  declare -A limit=([environment]=30 [data]=60 [pretrain-mmcl]=75 [pretrain-mmcl-ssl]=75
    [clean-cleanclip]=60 [evaluate]=45 [ddp-2gpu]=90 [demo-quick]=135)
fi
precision=fp32
if [[ "$device" == cuda* ]]; then
  if ((bf16_ok)); then precision=bf16; else precision=fp32; fi
fi
if [[ -n "$timeout_all" ]]; then
  for k in "${!limit[@]}"; do limit[$k]=$timeout_all; done
fi

# -- the output folder ---------------------------------------------------------------------------------
MARK=.gpu_check
if [[ -e "$out" && ! -d "$out" ]]; then die_env "--out $out exists and is not a folder"; fi
if [[ -d "$out" && ! -e "$out/$MARK" ]] && [[ -n "$(ls -A "$out" 2>/dev/null)" ]]; then
  die_env "$out is not empty and holds no earlier gpu_check: choose another --out"
fi
mkdir -p "$out" || die_env "cannot create $out"
out=$(cd "$out" && pwd)
# Only what an earlier check wrote goes; runs resume, so a stale run would be skipped instead of re-run.
rm -rf -- "$out/data" "$out/data-clean" "$out/runs" "$out/demo" "$out/logs" \
  "$out/environment.txt" "$out/summary.md" "$out/summary.tsv"
mkdir -p "$out/logs" "$out/runs"
echo "clipbackdoor gpu_check output folder; $PROG replaces its contents on every run" >"$out/$MARK"
logs="$out/logs"

# -- running a part under its time limit ---------------------------------------------------------------
# Every command of a part runs under `timeout` with what is left of the part's limit. timeout puts the
# command in its own process group (loader workers, torchrun ranks, sweep workers) and kills all of it;
# commands run in the background and are waited for, so that Ctrl-C here stops them too.
children=()
watcher=""
exec 3>&2 # the terminal's stderr, for messages while a part's output goes to its log
on_signal() {
  trap - INT TERM
  echo "$PROG: interrupted; stopping ${current_part:-the check} (its log: ${current_log:-none})" >&3
  local pid
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  [[ -z "$watcher" ]] || kill "$watcher" 2>/dev/null
  wait 2>/dev/null
  exit 130
}
trap on_signal INT TERM

part_deadline=0 part_timed_out=0
tmo_start() { # start "$@" in the background under the part's remaining time; its pid in $started
  local left=$((part_deadline - SECONDS))
  ((left >= 1)) || left=1
  timeout -k 15 "$left" "$@" &
  started=$!
  children+=("$started")
}
tmo_wait() { # wait for pid $1; notes a timeout
  local rc
  wait "$1"; rc=$?
  local kept=() pid
  for pid in "${children[@]}"; do [[ "$pid" == "$1" ]] || kept+=("$pid"); done
  children=("${kept[@]+"${kept[@]}"}")
  if ((rc == 124 || (rc == 137 && SECONDS >= part_deadline))); then part_timed_out=1; fi
  return "$rc"
}
tmo() { tmo_start "$@"; tmo_wait "$started"; }

now_ms() { local ns; ns=$(date +%s%N); echo $((ns / 1000000)); }
fmt_secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }
last_line() { # the last non-empty line of a log, one line, at most 200 characters
  tail -n 60 "$1" 2>/dev/null | tr '\r' '\n' | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-200
}

names=() statuses=() seconds=() thrs=() units=() details=() logfiles=()
record() { # name status seconds throughput unit detail log
  names+=("$1"); statuses+=("$2"); seconds+=("$3"); thrs+=("$4"); units+=("$5"); details+=("$6"); logfiles+=("$7")
}

total_parts=8 part_no=0 current_part="" current_log=""
# Part outputs: a part function sets these (it runs in this shell, its output sent to its log).
part_thr="-" part_unit="-" part_detail=""
run_part() { # name function description
  local name=$1 fn=$2 what=$3 log="$logs/$1.log" rc t0 ms status detail
  part_no=$((part_no + 1))
  printf '[%d/%d] %-18s %s\n' "$part_no" "$total_parts" "$name" "$what"
  part_thr="-" part_unit="-" part_detail="" part_timed_out=0
  part_deadline=$((SECONDS + ${limit[$name]}))
  current_part=$name current_log=$log
  t0=$(now_ms)
  "$fn" >"$log" 2>&1
  rc=$?
  ms=$(($(now_ms) - t0))
  current_part="" current_log=""
  if ((rc == 0)); then
    status=PASS detail=$part_detail
  else
    status=FAIL
    if ((part_timed_out)); then
      detail="timed out after ${limit[$name]} s (--timeout); last line: $(last_line "$log")"
    else
      detail="exit $rc: $(last_line "$log")"
    fi
  fi
  record "$name" "$status" "$(fmt_secs "$ms")" "$part_thr" "$part_unit" "$detail" "logs/$name.log"
  local rate=""
  [[ "$part_thr" != "-" && $status == PASS ]] && rate="  $(human_rate "$part_thr") $part_unit"
  printf '      %s  %s s%s\n' "$status" "$(fmt_secs "$ms")" "$rate"
  [[ $status == PASS ]] || printf '      %s\n' "$detail"
}
skip_part() { # name reason
  part_no=$((part_no + 1))
  printf '[%d/%d] %-18s SKIP: %s\n' "$part_no" "$total_parts" "$1" "$2"
  echo "SKIP: $2" >"$logs/$1.log"
  record "$1" SKIP 0.0 - - "$2" "logs/$1.log"
}
human_rate() { # 3012.4 -> 3,012; 12.34 -> 12.3
  local int=${1%%.*} grouped=""
  if ((int < 100)); then
    printf '%s' "$1"
    return
  fi
  while ((${#int} > 3)); do
    grouped=",${int: -3}$grouped"
    int=${int:0:${#int}-3}
  done
  printf '%s' "$int$grouped"
}

# Reads run directories (metrics.jsonl, config.yaml, summary.json); prints "value<TAB>unit<TAB>detail".
IFS= read -r -d '' METRICS_PY <<'PY' || true
import json, statistics, sys
from pathlib import Path

def fail(msg):
    print(f"metrics: {msg}", file=sys.stderr)
    sys.exit(1)

def records(run):
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        fail(f"{path} is missing")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

def complete(run):
    path = Path(run) / "summary.json"
    if not path.is_file() or json.loads(path.read_text()).get("status") != "complete":
        fail(f"{run} is not complete (no summary.json with status complete)")

def evals(recs):
    return [r for r in recs if r.get("kind") == "eval"]

def eval_rate(recs):
    timed = [r for r in evals(recs) if r.get("eval_seconds") and r.get("eval_images")]
    return timed[-1]["eval_images"] / timed[-1]["eval_seconds"] if timed else None

def train(run):
    import yaml
    complete(run)
    recs = records(run)
    batch = yaml.safe_load((Path(run) / "config.yaml").read_text())["train"]["batch_size"]
    sps = [r["samples_per_second"] for r in recs if r.get("kind") == "train" and "samples_per_second" in r]
    epoch = [r for r in recs if r.get("kind") == "epoch"]
    world = next((r.get("world_size", 1) for r in recs if r.get("kind") == "data"), 1)
    skip = 2 if len(sps) >= 4 else 1 if len(sps) >= 2 else 0
    steady = sps[skip:]
    epoch_rate = None
    if epoch and epoch[-1].get("epoch_seconds"):
        steps = epoch[-1]["step"] - (epoch[-2]["step"] if len(epoch) > 1 else 0)
        epoch_rate = steps * batch / epoch[-1]["epoch_seconds"]
    if steady:
        value = statistics.median(steady)
        how = f"median of {len(steady)} step{'s' if len(steady) > 1 else ''} after the first {skip}"
    elif epoch_rate:
        value, how = epoch_rate, "from epoch_seconds"
    else:
        fail("no train records with samples_per_second and no timed epoch record")
    if not value > 0:
        fail(f"throughput {value} is not positive")
    parts = [how]
    if epoch_rate and steady:
        parts.append(f"whole epoch {epoch_rate:.0f}/s with loader start and warm-up")
    if world > 1:
        parts.append(f"{world} ranks, global batch {batch}")
    last = evals(recs)[-1]
    parts.append(f"top1 {last['zeroshot_top1']:.3f}, ASR {last['asr_top1']:.3f}, "
                 f"target on clean {last.get('clean_target_rate', float('nan')):.3f}")
    rate = eval_rate(recs)
    if rate:
        parts.append(f"eval {rate:.0f} img/s")
    print(f"{value:.1f}\tsamples/s\t" + "; ".join(parts))

def evaluate(out, ref):
    recs = evals(records(out))
    if not recs:
        fail(f"no eval record in {out}/metrics.jsonl")
    r = recs[-1]
    parts = [f"top1 {r['zeroshot_top1']:.3f}, ASR {r['asr_top1']:.3f} of runs/{Path(ref).name} on "
             f"{r['eval_images']} images ({r['asr_images']} triggered)"]
    ref_recs = records(ref)
    ref_eval = evals(ref_recs)[-1]
    same = abs(ref_eval["zeroshot_top1"] - r["zeroshot_top1"]) < 1e-9 and abs(ref_eval["asr_top1"] - r["asr_top1"]) < 1e-9
    parts.append("as in its last eval" if same else
                 f"the run's last eval said top1 {ref_eval['zeroshot_top1']:.3f}, ASR {ref_eval['asr_top1']:.3f}")
    rate = eval_rate(recs)
    if rate:
        parts.append(f"on {r.get('device', '?')}, clean and triggered images")
        print(f"{rate:.1f}\timages/s\t" + "; ".join(parts))
    else:
        print("-\t-\t" + "; ".join(parts))

def demo(out):
    out = Path(out)
    summaries = sorted(out.rglob("summary.json"))
    done = [p for p in summaries if json.loads(p.read_text()).get("status") == "complete"]
    configs = sorted(out.rglob("config.yaml"))
    if not done:
        fail(f"no complete run under {out}")
    if not (out / "report.html").is_file():
        fail(f"{out}/report.html is missing")
    # The device each run resolved train.device=auto to, from its data record.
    devices = sorted({str(r.get("device", "?")) for p in configs for r in records(p.parent) if r.get("kind") == "data"})
    print(f"-\t-\t{len(done)} runs complete, report.html written\t{','.join(devices)}")

mode = sys.argv[1]
{"train": train, "evaluate": evaluate, "demo": demo}[mode](*sys.argv[2:])
PY
metrics() { # mode args...: sets part_thr, part_unit, part_detail
  local line rc
  line=$(timeout 60 "$py" -c "$METRICS_PY" "$@")
  rc=$?
  ((rc == 0)) || return "$rc"
  IFS=$'\t' read -r part_thr part_unit part_detail <<<"$line"
  echo "metrics: $part_thr $part_unit; $part_detail"
}

# -- the parts -----------------------------------------------------------------------------------------
common=(
  "model.name=$model" data.train.name=csv "data.train.path=$out/data/data.csv"
  "data.eval.num_samples=$n_eval" poison.budget=0.05 "attack.patch_size=$patch"
  train.epochs=1 train.log_every=1 train.progress=false
)
speed=("data.num_workers=$workers" "train.batch_size=$batch" "train.precision=$precision"
  train.channels_last=true "train.device=$device")

IFS= read -r -d '' ENV_PY <<'PY' || true
import datetime, importlib.metadata as md, os, platform, sys
import torch
brief_path = sys.argv[1]

def row(key, value):
    print(f"{key:<20} {value}")

def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"

row("date", datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
row("host", f"{platform.node()} ({platform.platform()})")
row("python", f"{platform.python_version()} ({sys.executable})")
row("torch", torch.__version__)
row("torchvision", version("torchvision"))
row("open_clip_torch", version("open_clip_torch"))
import clipbackdoor
row("clipbackdoor", f"{version('clipbackdoor')} ({os.path.dirname(clipbackdoor.__file__)})")
row("CUDA (torch build)", torch.version.cuda or "none (a CPU build of torch)")
cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
row("cuDNN", cudnn or "not available")
ok = torch.cuda.is_available()
count = torch.cuda.device_count() if ok else 0
row("CUDA available", "yes" if ok else "no")
row("GPU count", count)
names = []
for i in range(count):
    p = torch.cuda.get_device_properties(i)
    names.append(p.name)
    row(f"GPU {i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
                    f"{p.multi_processor_count} SMs")
bf16 = ok and torch.cuda.is_bf16_supported()
row("bf16 on GPU", ("yes" if bf16 else "no") if ok else "n/a (no CUDA)")
usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
row("CPUs", f"{os.cpu_count()} ({usable} usable by this process)")
row("torch threads", torch.get_num_threads())
try:
    kib = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
    row("memory", f"{kib / 2**20:.1f} GiB")
except (OSError, StopIteration, ValueError):
    pass
gpus = f"{count}x {names[0]}" if names else "no GPU"
brief = f"torch {torch.__version__}, CUDA {torch.version.cuda or '-'}, cuDNN {cudnn or '-'}, {gpus}"
if ok:
    brief += f", bf16 {'yes' if bf16 else 'no'}"
brief += f", {usable} CPUs"
open(brief_path, "w").write(brief + "\n")
PY
part_environment() {
  local env_file="$out/environment.txt" brief="$logs/environment.brief"
  tmo "$py" -c "$ENV_PY" "$brief" >"$env_file" || return 1
  if command -v nvidia-smi >/dev/null; then
    local smi
    if smi=$(timeout 20 nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>&1); then
      while IFS= read -r line; do printf '%-20s %s\n' "nvidia-smi" "$line"; done <<<"$smi" >>"$env_file"
      local driver=${smi%%$'\n'*}
      driver=${driver##*, }
      printf '%s, driver %s\n' "$(cat "$brief")" "$driver" >"$brief.tmp" && mv "$brief.tmp" "$brief"
    else
      printf '%-20s %s\n' "nvidia-smi" "failed: ${smi##*$'\n'}" >>"$env_file"
    fi
    timeout 20 nvidia-smi || true # the full table, in this part's log
  else
    printf '%-20s %s\n' "nvidia-smi" "not found" >>"$env_file"
  fi
  printf '%-20s %s\n' "nproc" "$(nproc 2>/dev/null || echo '?')" >>"$env_file"
  {
    printf '%-20s %s\n' "tool" "${cb[*]}"
    printf '%-20s %s\n' "check" "$mode: $model at $size px, batch $batch, $workers loader workers, $precision, channels_last, on $device"
  } >>"$env_file"
  part_detail=$(cat "$brief")
  cat "$env_file"
}

part_data() {
  local p1 p2 r1 r2 t0 ms mib
  t0=$(now_ms)
  echo "writing $n_train training pairs and $n_clean clean pairs at $size px in two processes"
  # One torch thread each: the generator gains nothing from more, and two processes would oversubscribe.
  tmo_start env OMP_NUM_THREADS=1 "${cb[@]}" synthetic --out "$out/data" -n "$n_train" --image-size "$size" --split train
  p1=$started
  tmo_start env OMP_NUM_THREADS=1 "${cb[@]}" synthetic --out "$out/data-clean" -n "$n_clean" --image-size "$size" --split clean
  p2=$started
  tmo_wait "$p1"; r1=$?
  tmo_wait "$p2"; r2=$?
  ((r1 == 0 && r2 == 0)) || return 1
  ms=$(($(now_ms) - t0))
  mib=$(du -smc "$out/data" "$out/data-clean" | tail -n 1 | cut -f1)
  # Pairs per second over the part: both processes side by side, their start-up included.
  part_thr=$(fmt_secs $(((n_train + n_clean) * 1000000 / (ms > 0 ? ms : 1))))
  part_unit=pairs/s
  part_detail="$n_train train + $n_clean clean pairs, $size px PNG, $mib MiB; 2 processes side by side, start-up included"
}

part_pretrain() { # run name, config
  tmo "${cb[@]}" pretrain --config "$2" --out "$out/runs/$1" "${common[@]}" "${speed[@]}" || return 1
  metrics train "$out/runs/$1"
}
part_pretrain_mmcl() { part_pretrain mmcl mmcl; }
part_pretrain_ssl() { part_pretrain mmcl-ssl mmcl-ssl; }

part_clean() {
  [[ -f "$out/runs/mmcl/summary.json" ]] || { echo "no complete MMCL run to clean (pretrain-mmcl failed)"; return 1; }
  tmo "${cb[@]}" clean --from "$out/runs/mmcl" --defense cleanclip --out "$out/runs/mmcl-cleanclip" \
    data.train.name=csv "data.train.path=$out/data-clean/data.csv" train.epochs=1 train.log_every=1 \
    train.progress=false "${speed[@]}" || return 1
  metrics train "$out/runs/mmcl-cleanclip"
}

part_evaluate() {
  local target="$out/runs/mmcl-cleanclip"
  [[ -f "$target/summary.json" ]] || target="$out/runs/mmcl"
  [[ -f "$target/summary.json" ]] || { echo "no complete run to evaluate (pre-training and cleaning failed)"; return 1; }
  tmo "${cb[@]}" evaluate --checkpoint "$target" --out "$out/runs/evaluate" "train.device=$device" || return 1
  metrics evaluate "$out/runs/evaluate" "$target"
}

part_ddp() {
  local ddp_device=cuda
  [[ "$device" == cpu ]] && ddp_device=cpu
  # torchrun is torch.distributed.run; --standalone picks a free local port.
  tmo "$py" -m torch.distributed.run --standalone --nproc_per_node 2 -m clipbackdoor pretrain \
    --config mmcl-ssl --out "$out/runs/ddp-mmcl-ssl" "${common[@]}" "data.num_workers=$ddp_workers" \
    "train.batch_size=$batch" "train.precision=$precision" train.channels_last=true "train.device=$ddp_device" || return 1
  metrics train "$out/runs/ddp-mmcl-ssl"
}

# The demo has no device option: its runs keep train.device=auto, CUDA when torch sees it. --device cpu
# hides the GPUs from it, and --device cuda:N shows it that GPU alone.
demo_env=(env)
demo_device="cuda" demo_why="torch sees CUDA in this environment"
if [[ "$device" == cpu ]]; then
  demo_device=cpu demo_why="no CUDA"
  if ((cuda_ok)); then demo_env+=("CUDA_VISIBLE_DEVICES="); demo_why="GPUs hidden with CUDA_VISIBLE_DEVICES="; fi
elif [[ "$device" == cuda:* ]]; then
  index=${device#cuda:}
  visible_one=$index
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    IFS=, read -r -a visible <<<"$CUDA_VISIBLE_DEVICES"
    visible_one=${visible[index]:-$index}
  fi
  demo_env+=("CUDA_VISIBLE_DEVICES=$visible_one")
  demo_device=$device demo_why="shown that GPU alone with CUDA_VISIBLE_DEVICES=$visible_one"
fi

gpu_watch() { # append to $1 the pids of the demo's processes that nvidia-smi lists as using a GPU
  local pid
  while :; do
    for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do
      [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || continue
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$out/demo" && echo "$pid" >>"$1"
    done
    sleep 2
  done
}

part_demo() {
  local seen="$logs/demo-gpu-pids.txt" rc line runs devices note n
  if [[ "$device" != cpu ]] && command -v nvidia-smi >/dev/null; then
    : >"$seen"
    gpu_watch "$seen" >/dev/null 2>&1 &
    watcher=$!
  fi
  echo "${demo_env[*]} ${cb[*]} demo --quick --out $out/demo"
  tmo "${demo_env[@]}" "${cb[@]}" demo --quick --out "$out/demo"
  rc=$?
  if [[ -n "$watcher" ]]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; watcher=""; fi
  ((rc == 0)) || return "$rc"
  line=$(timeout 60 "$py" -c "$METRICS_PY" demo "$out/demo") || return 1
  IFS=$'\t' read -r _ _ runs devices <<<"$line"
  note="runs on $devices (train.device=auto; $demo_why)"
  # cuda:N is shown to the demo as its only GPU, which its runs call cuda:0: compare the kind only.
  [[ "$devices" == "${demo_device%%:*}"* ]] || note+="; expected ${demo_device%%:*}"
  if [[ "$device" != cpu ]] && command -v nvidia-smi >/dev/null; then
    n=$(sort -u "$seen" | grep -c . || true)
    if ((n > 0)); then note+="; nvidia-smi saw $n demo processes on the GPU"
    else note+="; nvidia-smi listed no demo process (it may not see this container's pids)"; fi
  fi
  part_detail="$runs; $note"
  echo "demo: $part_detail"
}

# -- run -----------------------------------------------------------------------------------------------
start_ms=$(now_ms)
echo "clipbackdoor GPU check ($mode): $model at $size px, batch $batch, $workers loader workers, $precision, on $device"
echo "output: $out  (logs in logs/)"
echo

run_part environment part_environment "python, torch, CUDA, GPUs, CPUs"
echo
sed 's/^/      /' "$out/environment.txt" 2>/dev/null
echo
run_part data part_data "$n_train + $n_clean synthetic pairs as CSV + ${size} px PNG"
run_part pretrain-mmcl part_pretrain_mmcl "$model MMCL, 1 epoch from the CSV, batch $batch, $precision, $workers workers"
run_part pretrain-mmcl-ssl part_pretrain_ssl "$model MMCL+SSL (inmodal_weight=1), the same settings"
run_part clean-cleanclip part_clean "CleanCLIP, 1 epoch on the clean CSV, from the MMCL model"
run_part evaluate part_evaluate "clipbackdoor evaluate: zero-shot accuracy and ASR"
if ((gpu_count >= 2)) && [[ "$device" != cpu ]] || ((force_ddp)); then
  run_part ddp-2gpu part_ddp "torchrun --nproc_per_node 2: MMCL+SSL, DDP, sharded evaluation"
elif [[ "$device" == cpu ]]; then
  skip_part ddp-2gpu "needs 2 GPUs; this check runs on the CPU (--ddp runs it with gloo)"
else
  skip_part ddp-2gpu "needs 2 GPUs; $gpu_count visible"
fi
if ((skip_demo)); then
  skip_part demo-quick "--skip-demo"
else
  run_part demo-quick part_demo "clipbackdoor demo --quick (16 runs; train.device=auto)"
fi
total_ms=$(($(now_ms) - start_ms))

# -- summary -------------------------------------------------------------------------------------------
md_cell() { local s=${1//|/\\|}; printf '%s' "${s//$'\t'/ }"; }
n=${#names[@]}
failed=0 passed=0 skipped=0
{
  printf 'part\tstatus\tseconds\tthroughput\tunit\tdetail\tlog\n'
  for ((i = 0; i < n; i++)); do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${names[i]}" "${statuses[i]}" "${seconds[i]}" "${thrs[i]}" \
      "${units[i]}" "${details[i]//$'\t'/ }" "${logfiles[i]}"
  done
} >"$out/summary.tsv"

rows=()
rows+=("part|result|seconds|throughput|log|detail")
for ((i = 0; i < n; i++)); do
  case "${statuses[i]}" in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; SKIP) skipped=$((skipped + 1)) ;; esac
  thr="-"
  [[ "${thrs[i]}" != "-" ]] && thr="$(human_rate "${thrs[i]}") ${units[i]}"
  rows+=("$(md_cell "${names[i]}")|${statuses[i]}|${seconds[i]}|$(md_cell "$thr")|${logfiles[i]}|$(md_cell "${details[i]}")")
done
# Every column but the last (detail) padded to its widest cell.
widths=(0 0 0 0 0 0)
for row in "${rows[@]}"; do
  IFS='|' read -r -a cells <<<"${row//\\|/$'\x01'}"
  for c in 0 1 2 3 4; do cell=${cells[c]-}; ((${#cell} > widths[c])) && widths[c]=${#cell}; done
done
table() {
  local first=1 row cells c line sep
  for row in "${rows[@]}"; do
    IFS='|' read -r -a cells <<<"${row//\\|/$'\x01'}"
    line="|"
    for c in 0 1 2 3 4 5; do
      if ((c == 5)); then line+=" ${cells[c]-} |"; else line+=" $(printf '%-*s' "${widths[c]}" "${cells[c]-}") |"; fi
    done
    printf '%s\n' "${line//$'\x01'/\\|}"
    if ((first)); then
      sep="|"
      for c in 0 1 2 3 4 5; do
        if ((c == 5)); then sep+="---|"; else sep+="$(printf '%*s' $((widths[c] + 2)) '' | tr ' ' -)|"; fi
      done
      printf '%s\n' "$sep"
      first=0
    fi
  done
}
total_s=$(fmt_secs "$total_ms")
verdict="$passed passed, $failed failed, $skipped skipped in $total_s s"
if ((failed == 0)); then verdict="OK: $verdict"; else verdict="FAILED: $verdict"; fi
{
  echo "# clipbackdoor GPU check"
  echo
  echo "$(date '+%Y-%m-%d %H:%M') · $mode: $model at $size px, batch $batch, $workers loader workers, $precision, on $device · $(cat "$logs/environment.brief" 2>/dev/null || echo 'environment unknown')"
  echo
  table
  echo
  echo "$verdict. Logs are relative to $out."
} >"$out/summary.md"

echo
echo "== summary =="
table
echo
echo "$verdict"
echo "written: $out/summary.md, $out/summary.tsv, $out/environment.txt"
((failed == 0)) || exit 1
exit 0
