#!/usr/bin/env bash
# The simulated test set's check of a library's gaps against the baselines trained on the same simulated pairs:
# the calibrated linear filter (from the kernels' profiles, no training), histogram matching and Choe et al.'s residual
# CNN, each gap evaluated by `diffusionct evaluate` on the disjoint test set (5 mm, other phantoms, seed 2).
# Usage: benchmarks/evaluate_library.sh LIBRARY TRAIN_DATA TEST_DATA RUNS REPORTS GAP ...
#   GAP: NAME=SOURCE:TARGET, e.g. siemens-b30f-b70f=B30f:B70f canon-fc13-fc51=FC13:FC51   (resumable)
# EXTRA="DIR ..." adds model folders to every gap's evaluation (e.g. the earlier shipped gap); BASELINES (default
# "kernel-filter histogram residual-cnn") chooses the baselines.
set -euo pipefail
LIB=${1:?}; DATA=${2:?}; TEST=${3:?}; RUNS=${4:?}; REPORTS=${5:?}; shift 5
BIN=${BIN:-.venv/bin}
BASELINE_STEPS=${BASELINE_STEPS:-1000}
BASELINES=${BASELINES:-"kernel-filter histogram residual-cnn"}
[ -f "$TEST/manifest.json" ] || $BIN/diffusionct simulate -o "$TEST" --cases 12 \
    --kernels B10f,B30f,B50f,B70f,FC13,FC51 --thickness 5 --slices 10 --seed 2
for spec in "$@"; do
  name=${spec%%=*}; gap=${spec#*=}; src=${gap%:*}; dst=${gap#*:}
  K="--from SIM_${src^^} --to SIM_${dst^^}"
  dir=$RUNS/$name
  models=("$LIB/$name")
  for method in $BASELINES; do
    if [ ! -f "$dir/$method/config.json" ]; then
      case $method in
        kernel-filter) $BIN/diffusionct train --method kernel-filter $K -o "$dir/$method" ;;
        residual-cnn) $BIN/diffusionct train --method residual-cnn --data "$DATA" $K -o "$dir/$method" \
                          --set baselines.residual_cnn.training.steps=$BASELINE_STEPS --resume ;;
        *) $BIN/diffusionct train --method $method --data "$DATA" $K -o "$dir/$method" ;;
      esac
    fi
    models+=("$dir/$method")
  done
  for extra in ${EXTRA:-}; do models+=("$extra"); done
  [ -f "$REPORTS/$name/results.json" ] || $BIN/diffusionct evaluate --data "$TEST" -o "$REPORTS/$name" --overwrite \
      $(printf -- '--model %s ' "${models[@]}")
done
