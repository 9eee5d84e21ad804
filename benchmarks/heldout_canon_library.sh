#!/usr/bin/env bash
# Learned models on real pairs they have not seen: for each Canon region, the FC13 / FC51 profiles measured on that
# region alone, simulated pairs reconstructed with them, and both Canon gaps trained on those pairs beside the shipped
# library's shared networks by the recipe of benchmarks/remake_library.sh (the same simulation and training). `benchmarks/real_pairs.py
# --heldout OUT` then tests each region's library on the other region.
# Usage: benchmarks/heldout_canon_library.sh OUT    (resumable; about 2 x (2 + 2 x 2.5) minutes on the 2-core CPU)
set -euo pipefail
OUT=${1:?usage: $0 OUT}
BIN=${BIN:-.venv/bin}
STEPS=${STEPS:-1000}  # predictor training steps (the shipped recipe)
DONOR=${DONOR:-siemens-b30f-b70f}  # a shipped gap whose settings the new gaps take
for region in phantom1 phantom2; do
  dir=$OUT/$region
  mkdir -p "$dir"
  [ -f "$dir/profiles.json" ] || $BIN/python benchmarks/real_pairs.py --write-profiles "$region" "$dir/profiles.json"
  [ -f "$dir/train/manifest.json" ] || $BIN/diffusionct simulate -o "$dir/train" --profiles "$dir/profiles.json" \
      --kernels FC13,FC51 --cases 12 --thickness 1,3 --slices 12 --seed 1 --dose-range 50,250 --pixel-range 0.5,1.0 \
      --kernel-jitter 0.05 --overwrite
  if [ ! -d "$dir/library" ]; then  # the shipped shared networks (and one donor gap whose settings the new gaps take)
    mkdir -p "$dir/library.partial"
    cp -r src/diffusionct/data/models/{autoencoder.safetensors,unet.safetensors,$DONOR} "$dir/library.partial/"
    mv "$dir/library.partial" "$dir/library"
  fi
  for gap in FC13:FC51 FC51:FC13; do
    src=${gap%:*}; dst=${gap#*:}; name=canon-${src,,}-${dst,,}
    [ -f "$dir/library/$name/config.json" ] || $BIN/diffusionct train --phase predictor --data "$dir/train" \
        -o "$dir/library/$name" --from "SIM_$src" --to "SIM_$dst" --profiles "$dir/profiles.json" \
        --set diffusion.predictor.kernel_filter_from=profiles --set diffusion.predictor.training.steps=$STEPS --resume
  done
done
