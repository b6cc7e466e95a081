#!/usr/bin/env bash
# The measurements behind docs/results.md: pre-train MMCL and MMCL+SSL side by side (one thread each, the
# fastest use of 2 cores), then clean the MMCL model with each defense and the MMCL+SSL model with
# CleanCLIP. Wall times are printed per stage.
#   bash benchmarks/core_pipeline.sh OUT_DIR [SEED]
set -euo pipefail
out="${1:?usage: core_pipeline.sh OUT_DIR [SEED]}"; seed="${2:-0}"
cb="${CLIPBACKDOOR:-clipbackdoor}"
common=(seed="$seed" train.threads=1 train.progress=false)
timed() { local name=$1; shift; local t0=$SECONDS; "$@" > "$out/$name.log" 2>&1; echo "$name: $((SECONDS - t0)) s"; }
mkdir -p "$out"
timed pretrain-mmcl     $cb pretrain --config mmcl     --out "$out/mmcl"     "${common[@]}" &
timed pretrain-mmcl-ssl $cb pretrain --config mmcl-ssl --out "$out/mmcl-ssl" "${common[@]}" &
wait
cmp "$out/mmcl/poison_manifest.json" "$out/mmcl-ssl/poison_manifest.json" && echo "same poison manifest"
timed clean-mmcl-cleanclip $cb clean --from "$out/mmcl" --defense cleanclip --out "$out/mmcl-cleanclip" "${common[@]:1}" &
timed clean-mmcl-mmcl      $cb clean --from "$out/mmcl" --defense mmcl      --out "$out/mmcl-mmcl"      "${common[@]:1}" &
wait
timed clean-mmcl-ssl            $cb clean --from "$out/mmcl"     --defense ssl       --out "$out/mmcl-ssl-cleaning" "${common[@]:1}" &
timed clean-mmcl-ssl-cleanclip  $cb clean --from "$out/mmcl-ssl" --defense cleanclip --out "$out/mmcl-ssl-cleanclip" "${common[@]:1}" &
wait
