#!/usr/bin/env bash
# The smallest end-to-end experiment on a CPU (about 2 minutes on 2 cores): poison synthetic pairs with a
# BadNet trigger, pre-train a tiny CLIP with MMCL, clean it with CleanCLIP, and evaluate.
#   bash scripts/quickstart.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/quickstart}"
cb=.venv/bin/clipbackdoor
$cb poison   --config mmcl --out "$out/poison"
$cb pretrain --config mmcl --out "$out/mmcl" poison.manifest="$out/poison/poison_manifest.json" train.epochs=6
$cb clean    --from "$out/mmcl" --defense cleanclip --out "$out/mmcl-cleanclip" train.epochs=3
$cb evaluate --checkpoint "$out/mmcl-cleanclip" eval.asr_draws=3
