#!/usr/bin/env bash
# The phase-2 ablation of docs/results.md on the easy gap (b30 -> b50), same data and step budget as
# benchmarks/train_gaps.sh: its DiffusionCT run against the modes in MODES (default "refine paper":
# runs named refine-MODE; add residual), then the first mode's reproducible share at 10 and 25 sampling
# steps (5 is in the comparison). Run after train_gaps.sh b30:b50 (it reuses its runs).
# Usage: benchmarks/ablation_easy_gap.sh DATA_DIR RUNS_DIR REPORTS_DIR
set -euo pipefail
DATA=${1:-/work/data}; RUNS=${2:-/work/runs}; REPORTS=${3:-/work/reports}
BIN=${BIN:-.venv/bin}
PHASE2_STEPS=${PHASE2_STEPS:-3000}
CFG="--config configs/shipped-model.yaml"
K="--set data.source_kernel=SIM_B30 --set data.target_kernel=SIM_B50"
dir=$RUNS/b30-b50
MODES=${MODES:-"refine paper"}
for mode in $MODES; do
  run=$dir/mode-$mode
  if [ ! -f "$run/unet.safetensors" ]; then
    mkdir -p "$run"
    [ -f "$run/config.json" ] || cp "$RUNS/autoencoder/config.json" "$RUNS/autoencoder/autoencoder.safetensors" "$run/"
    $BIN/diffusionct train --data "$DATA/train" -o "$run" --phase diffusion $CFG $K \
        --set phase2.steps=$PHASE2_STEPS --set diffusion.mode=$mode --resume
  fi
  [ -f "$REPORTS/ablation-b30-b50-$mode/results.json" ] || $BIN/diffusionct evaluate --data "$DATA/test" \
      -o "$REPORTS/ablation-b30-b50-$mode" --overwrite --model "$run"
done
first=$dir/mode-${MODES%% *}
for steps in ${STEPS_TABLE-10 25}; do
  [ -f "$REPORTS/steps-$steps-b30-b50/results.json" ] || $BIN/diffusionct evaluate --data "$DATA/test" \
      -o "$REPORTS/steps-$steps-b30-b50" --overwrite --model "$first" --steps $steps
done
