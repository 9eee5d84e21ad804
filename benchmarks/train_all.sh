#!/usr/bin/env bash
# The longer documented run (docs/results.md): simulate the training and test sets, train DiffusionCT
# (both diffusion modes) and every baseline on the same manifest, then evaluate them all.
# Usage: benchmarks/train_all.sh DATA_DIR RUNS_DIR REPORT_DIR      (hours on the 2-core CPU; minutes on a GPU)
set -euo pipefail
DATA=${1:-/work/data}; RUNS=${2:-/work/runs}; REPORT=${3:-/work/reports/full}
BIN=${BIN:-.venv/bin}
[ -f "$DATA/train/manifest.json" ] || $BIN/diffusionct simulate -o "$DATA/train" --cases 12 --thickness 1,3 --slices 12 --seed 1
[ -f "$DATA/test/manifest.json" ] || $BIN/diffusionct simulate -o "$DATA/test" --cases 4 --thickness 5 --slices 10 --seed 2
CFG="--config configs/shipped-model.yaml"
# DiffusionCT, residual mode (the shipped model) and paper mode on the same encoder-decoder
[ -f "$RUNS/shipped/unet.safetensors" ] || {
  $BIN/diffusionct train --data "$DATA/train" -o "$RUNS/shipped" --phase autoencoder $CFG --resume
  $BIN/diffusionct train --data "$DATA/train" -o "$RUNS/shipped" --phase diffusion $CFG --resume; }
if [ ! -f "$RUNS/paper/unet.safetensors" ]; then
  mkdir -p "$RUNS/paper"
  [ -f "$RUNS/paper/config.json" ] || cp "$RUNS/shipped/config.json" "$RUNS/shipped/autoencoder.safetensors" "$RUNS/paper/"
  $BIN/diffusionct train --data "$DATA/train" -o "$RUNS/paper" --phase diffusion $CFG --set diffusion.mode=paper --resume
fi
STEPS=${BASELINE_STEPS:-2000}   # the baselines' training steps (the documented run used 1000 on the CPU)
for method in identity histogram residual-cnn pix2pix ddpm; do
  key=$(echo $method | tr - _)
  [ -f "$RUNS/$method/config.json" ] || $BIN/diffusionct train --method $method --data "$DATA/train" -o "$RUNS/$method" $CFG \
      --set baselines.$key.steps=$STEPS --resume
done
# The image-space DDPM is left out of the full-size evaluation on the CPU: MONAI's U-Net has self-attention in
# its middle block, 16,384 tokens for a 512 x 512 image (docs/results.md); add --model "$RUNS/ddpm" on a GPU.
$BIN/diffusionct evaluate --data "$DATA/test" -o "$REPORT" --overwrite \
  --model "$RUNS/shipped" --model "$RUNS/paper" --model "$RUNS/identity" --model "$RUNS/histogram" \
  --model "$RUNS/residual-cnn" --model "$RUNS/pix2pix"
