#!/usr/bin/env bash
# Unpaired standardization on real GE data (../shared/data/sts-ct): SOFT -> STANDARD, different patients.
# Trains DiffusionCT (data.pairing=unpaired), CycleGAN and histogram matching on the set CSV, and the kernel filter of
# the kernels' windows measured by `calibrate --unpaired` on the same series; then benchmarks/unpaired_real.py compares
# the standardized SOFT series with the STANDARD set (NPS, tumour features).
# Usage: benchmarks/train_unpaired_real.sh RUNS_DIR [STEPS_SCALE]   (resumable; about an hour on the 2-core CPU)
set -euo pipefail
RUNS=${1:-runs/real-soft-standard}
BIN=${BIN:-.venv/bin}
SHARED=${SHARED:-../shared/data/sts-ct}
mkdir -p "$RUNS"
$BIN/python benchmarks/unpaired_real.py sets "$SHARED" "$RUNS/sets.csv"
K="--config configs/fourth-run.yaml --set data.source_kernel=GE:SOFT --set data.target_kernel=GE:STANDARD --set data.pairing=unpaired"
[ -f "$RUNS/diffusionct/unet.safetensors" ] || $BIN/diffusionct train --data "$RUNS/sets.csv" -o "$RUNS/diffusionct" $K \
    --set phase2.steps=${PHASE2_STEPS:-1500} --set diffusion.predictor.training.steps=${PREDICTOR_STEPS:-600} --resume
[ -f "$RUNS/predictor-cnn/config.json" ] || $BIN/python benchmarks/export_predictor.py "$RUNS/diffusionct" "$RUNS/predictor-cnn"
[ -f "$RUNS/profiles.json" ] || $BIN/diffusionct calibrate --unpaired -i "$SHARED" -o "$RUNS/profiles.json" --vendor GE
[ -f "$RUNS/kernel-filter/config.json" ] || $BIN/diffusionct train --method kernel-filter --profiles "$RUNS/profiles.json" \
    --from GE:SOFT --to GE:STANDARD -o "$RUNS/kernel-filter"
[ -f "$RUNS/histogram/config.json" ] || $BIN/diffusionct train --method histogram --data "$RUNS/sets.csv" -o "$RUNS/histogram" $K
[ -f "$RUNS/cyclegan/config.json" ] || $BIN/diffusionct train --method cyclegan --data "$RUNS/sets.csv" -o "$RUNS/cyclegan" $K \
    --set baselines.cyclegan.training.steps=${CYCLEGAN_STEPS:-600} --resume
