#!/usr/bin/env bash
# The phase-2 ablation of docs/results.md on the easy gap (b30 -> b50), same data and step budget as
# benchmarks/train_gaps.sh: refine (its run) against the modes in MODES (default: paper; add residual
# with MODES="residual paper"), then the refine model's reproducible share at 5, 10 and 25 sampling
# steps. Run after train_gaps.sh (it reuses its runs).
# Usage: benchmarks/ablation_easy_gap.sh DATA_DIR RUNS_DIR REPORTS_DIR
set -euo pipefail
DATA=${1:-/work/data}; RUNS=${2:-/work/runs}; REPORTS=${3:-/work/reports}
BIN=${BIN:-.venv/bin}
PHASE2_STEPS=${PHASE2_STEPS:-3000}
CFG="--config configs/shipped-model.yaml"
K="--set data.source_kernel=SIM_B30 --set data.target_kernel=SIM_B50"
dir=$RUNS/b30-b50
MODES=${MODES:-paper}
for mode in $MODES; do
  if [ ! -f "$dir/$mode/unet.safetensors" ]; then
    mkdir -p "$dir/$mode"
    [ -f "$dir/$mode/config.json" ] || cp "$RUNS/autoencoder/config.json" "$RUNS/autoencoder/autoencoder.safetensors" "$dir/$mode/"
    $BIN/diffusionct train --data "$DATA/train" -o "$dir/$mode" --phase diffusion $CFG $K \
        --set phase2.steps=$PHASE2_STEPS --set diffusion.mode=$mode --resume
  fi
done
[ -f "$REPORTS/ablation-b30-b50/results.json" ] || $BIN/diffusionct evaluate --data "$DATA/test" \
    -o "$REPORTS/ablation-b30-b50" --overwrite --model "$dir/diffusionct" $(for m in $MODES; do printf -- '--model %s ' "$dir/$m"; done)
for steps in 10 25; do
  [ -f "$REPORTS/steps-$steps-b30-b50/results.json" ] || $BIN/diffusionct evaluate --data "$DATA/test" \
      -o "$REPORTS/steps-$steps-b30-b50" --overwrite --model "$dir/diffusionct" --steps $steps
done
