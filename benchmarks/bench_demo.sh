#!/usr/bin/env bash
# Wall time and disk use of `clipbackdoor demo` (the numbers quoted in its help and in the README), run from
# scratch: the output folder is deleted first, so nothing is resumed.
#   bash benchmarks/bench_demo.sh [PRESET] [OUT_DIR]      (default: default runs/bench-demo)
# PRESET: default, quick, headline or paper-mini (see `clipbackdoor demo --help`).
set -euo pipefail
preset="${1:-default}"; out="${2:-runs/bench-demo}"
case "$preset" in
  default|quick|headline|paper-mini) flags=(--preset "$preset") ;;
  *) echo "usage: bench_demo.sh [default|quick|headline|paper-mini] [OUT_DIR]" >&2; exit 2 ;;
esac
if [[ -x .venv/bin/clipbackdoor ]]; then cb=.venv/bin/clipbackdoor; else cb=clipbackdoor; fi
rm -rf "$out"
t0=$(date +%s.%N)
"$cb" demo ${flags[@]+"${flags[@]}"} --out "$out"
t1=$(date +%s.%N)
echo "demo ($preset): $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
du -sh "$out"
