#!/usr/bin/env bash
# The phase-2 ablation of docs/history/results-analytic-library.md on the easy gap (b30 -> b50), same data and step budget as
# benchmarks/train_gaps.sh: its DiffusionCT run against the modes in MODES (default "refine paper paper-cos":
# runs named mode-MODE; add residual, paper-skip: paper-cos with the U-Net's condition skip, paper-skip3 and
# paper-skip5: with its 3x3 or 5x5 filter of Z_A), then the first mode's reproducible share at 10 and 25 sampling
# steps (5 is in the comparison). Run after train_gaps.sh b30:b50 (it reuses its runs).
# Usage: benchmarks/ablation_easy_gap.sh DATA_DIR RUNS_DIR REPORTS_DIR
set -euo pipefail
DATA=${1:-runs/data}; RUNS=${2:-runs}; REPORTS=${3:-runs/reports}
BIN=${BIN:-.venv/bin}
PHASE2_STEPS=${PHASE2_STEPS:-3000}
CFG="--config configs/fourth-run.yaml"  # the recipe these modes were compared in (temperature 1: from pure noise)
# paper-cos, paper-skip, paper-skipN: configs/paper-mode.yaml (6,000 steps, cosine from 5e-4; the sixth run's paper
# mode with the condition skip off, the seventh run's with it), the skip's filter size set per mode
PAPER="--config configs/paper-mode.yaml"
K="--set data.source_kernel=SIM_B30 --set data.target_kernel=SIM_B50"
dir=$RUNS/b30-b50
MODES=${MODES:-"refine paper paper-cos"}
for mode in $MODES; do
  run=$dir/mode-$mode
  case $mode in
    paper-cos) settings="$PAPER --set unet.condition_skip=false --set unet.condition_skip_size=1";;
    paper-skip) settings="$PAPER --set unet.condition_skip_size=1";;
    paper-skip[0-9]) settings="$PAPER --set unet.condition_skip_size=${mode#paper-skip}";;
    *) settings="$CFG --set phase2.steps=$PHASE2_STEPS --set diffusion.mode=$mode";;
  esac
  if [ ! -f "$run/unet.safetensors" ]; then
    mkdir -p "$run"
    [ -f "$run/config.json" ] || cp "$RUNS/autoencoder/config.json" "$RUNS/autoencoder/autoencoder.safetensors" "$run/"
    $BIN/diffusionct train --data "$DATA/train" -o "$run" --phase diffusion $settings $K --resume
  fi
  [ -f "$REPORTS/ablation-b30-b50-$mode/results.json" ] || $BIN/diffusionct evaluate --data "$DATA/test" \
      -o "$REPORTS/ablation-b30-b50-$mode" --overwrite --model "$run"
done
first=$dir/mode-${MODES%% *}
for steps in ${STEPS_TABLE-10 25}; do
  [ -f "$REPORTS/steps-$steps-b30-b50/results.json" ] || $BIN/diffusionct evaluate --data "$DATA/test" \
      -o "$REPORTS/steps-$steps-b30-b50" --overwrite --model "$first" --steps $steps
done
