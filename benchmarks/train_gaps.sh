#!/usr/bin/env bash
# The kernel gaps of docs/history/results-analytic-library.md, each trained and evaluated on the same simulated data:
#   b30 -> b70  the shipped model's gap (the paper's Br40 -> Bl64 direction)
#   b30 -> b50  easy;  b10 -> b70  hard;  b70 -> b30  reverse
# One encoder-decoder (phase 1, every kernel) is shared; per gap: DiffusionCT (refine mode) phase 2, the
# baselines, and `diffusionct evaluate` on the disjoint 5 mm test set.
# Usage: benchmarks/train_gaps.sh DATA_DIR RUNS_DIR REPORTS_DIR [GAP ...]    (hours on the 2-core CPU)
# PREDICTOR_AS_BASELINE=1 adds DiffusionCT's own image-space predictor as a residual-CNN row (same network and
# training as --method residual-cnn); with BASELINES="identity histogram" it replaces the separate CNN run.
# BASELINES="identity histogram autoencoder pix2pix ddpm" with PREDICTOR_AS_BASELINE=1: every baseline of the
# paper (issue 16's bar); EXTRA_MODELS="mode-paper ..." adds other model folders of runs/GAP/; REPORT_PREFIX
# names the report folders (default: the gap's name).
# Resumable: every step is skipped when its output exists, and training resumes from checkpoints.
set -euo pipefail
DATA=${1:-runs/data}; RUNS=${2:-runs}; REPORTS=${3:-runs/reports}
shift $(( $# < 3 ? $# : 3 ))
GAPS=${*:-"b30:b70 b30:b50 b10:b70 b70:b30"}
BIN=${BIN:-.venv/bin}
PHASE2_STEPS=${PHASE2_STEPS:-1500}      # DiffusionCT phase 2 (the shipped recipe)
BASELINE_STEPS=${BASELINE_STEPS:-1000}  # residual CNN, pix2pix
BASELINES=${BASELINES:-"identity histogram residual-cnn"}
CFG="--config ${CFG_FILE:-configs/shipped-model.yaml}"  # CFG_FILE=configs/fourth-run.yaml: the fourth run's recipe
KERNELS=b10,b30,b50,b70
TEST_CASES=${TEST_CASES:-12}  # 12 cases (25 tumours) since the ninth run; their first 4 are the earlier test set
[ -f "$DATA/train/manifest.json" ] || $BIN/diffusionct simulate -o "$DATA/train" --cases 12 --kernels $KERNELS \
    --thickness 1,3 --slices 12 --seed 1 --dose-range 50,250 --pixel-range 0.6,0.9 --kernel-jitter 0.05
[ -f "$DATA/test/manifest.json" ] || $BIN/diffusionct simulate -o "$DATA/test" --cases $TEST_CASES --kernels $KERNELS \
    --thickness 5 --slices 10 --seed 2
[ -f "$RUNS/autoencoder/autoencoder.safetensors" ] || \
    $BIN/diffusionct train --data "$DATA/train" -o "$RUNS/autoencoder" --phase autoencoder $CFG --resume
for gap in $GAPS; do
  src=${gap%:*}; dst=${gap#*:}; name=$src-$dst
  K="--set data.source_kernel=SIM_${src^^} --set data.target_kernel=SIM_${dst^^}"
  dir=$RUNS/$name
  if [ ! -f "$dir/diffusionct/unet.safetensors" ]; then
    mkdir -p "$dir/diffusionct"
    [ -f "$dir/diffusionct/config.json" ] || cp "$RUNS/autoencoder/config.json" "$RUNS/autoencoder/autoencoder.safetensors" "$dir/diffusionct/"
    $BIN/diffusionct train --data "$DATA/train" -o "$dir/diffusionct" --phase diffusion $CFG $K \
        --set phase2.steps=$PHASE2_STEPS --resume
  fi
  models=("$dir/diffusionct")
  if [ -n "${PREDICTOR_AS_BASELINE:-}" ]; then  # the image predictor is the residual CNN: export it, train none
    [ -f "$dir/predictor-cnn/config.json" ] || $BIN/python benchmarks/export_predictor.py "$dir/diffusionct" "$dir/predictor-cnn"
    models+=("$dir/predictor-cnn")
  fi
  for extra in ${EXTRA_MODELS:-}; do [ -f "$dir/$extra/config.json" ] && models+=("$dir/$extra"); done
  for method in $BASELINES; do
    case $method in
      residual-cnn|pix2pix|cyclegan|ddpm) steps="--set baselines.$(echo $method | tr - _).steps=$BASELINE_STEPS" ;;
      *) steps="" ;;
    esac
    if [ "$method" = autoencoder ]; then  # DiffusionCT's own encoder-decoder, not another phase-1 training
      [ -f "$dir/$method/config.json" ] || $BIN/python benchmarks/export_predictor.py --autoencoder "$dir/diffusionct" "$dir/$method"
    else
      [ -f "$dir/$method/config.json" ] || \
        $BIN/diffusionct train --method $method --data "$DATA/train" -o "$dir/$method" $CFG $K $steps --resume
    fi
    models+=("$dir/$method")
  done
  report=$REPORTS/${REPORT_PREFIX:-}$name
  [ -f "$report/results.json" ] || \
    $BIN/diffusionct evaluate --data "$DATA/test" -o "$report" --overwrite $(printf -- '--model %s ' "${models[@]}")
done
