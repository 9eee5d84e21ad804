#!/usr/bin/env bash
# The shipped model library, remade on the measured kernels: every gap's predictor starts as the calibrated filter of
# the two kernels' shipped profiles (held fixed: the physics) and its convolutions learn what that filter misses, on
# pairs simulated with those profiles; the encoder-decoder and U-Net are the library's shared networks, kept.
# Usage: benchmarks/remake_library.sh OUT [GAP ...]    GAP: SOURCE:TARGET (default: the shipped gaps)
#   then replace src/diffusionct/data/models with OUT (about 2.5 minutes a gap on the 2-core CPU, after 6 minutes of simulation; resumable).
set -euo pipefail
OUT=${1:?usage: $0 OUT [GAP ...]}; shift
BIN=${BIN:-.venv/bin}
DATA=${DATA:-runs/data/train-measured-wide}  # the simulated training pairs (made when missing; runs/ is ignored)
STEPS=${STEPS:-1000}
SHARED=${SHARED:-src/diffusionct/data/models}  # the shared networks (and one gap whose settings the new ones take)
DONOR=${DONOR:-siemens-b30f-b70f}  # a gap of $SHARED whose settings the new gaps take (the earlier library's: sim-b30-b70)
GAPS=${*:-"B30f:B70f B30f:B50f B10f:B70f B10f:B50f B10f:B30f B50f:B30f B50f:B70f B70f:B30f B70f:B50f FC13:FC51 FC51:FC13"}
[ -f "$DATA/manifest.json" ] || $BIN/diffusionct simulate -o "$DATA" --cases 12 --kernels B10f,B30f,B50f,B70f,FC13,FC51 \
    --thickness 1,3 --slices 12 --seed 1 --dose-range 50,250 --pixel-range 0.5,1.0 --kernel-jitter 0.05
if [ ! -d "$OUT" ]; then
  mkdir -p "$OUT.partial"
  cp -r "$SHARED"/{autoencoder.safetensors,unet.safetensors} "$OUT.partial/"
  cp -r "$SHARED/$DONOR" "$OUT.partial/donor"  # under its own name: the donor's gap is remade too
  mv "$OUT.partial" "$OUT"
fi
for gap in $GAPS; do
  src=${gap%:*}; dst=${gap#*:}
  case $src in FC*) vendor=canon ;; *) vendor=siemens ;; esac
  name=$vendor-${src,,}-${dst,,}
  [ -f "$OUT/$name/config.json" ] || $BIN/diffusionct train --phase predictor --data "$DATA" -o "$OUT/$name" \
      --from "SIM_${src^^}" --to "SIM_${dst^^}" --set diffusion.predictor.kernel_filter_from=profiles \
      --set diffusion.predictor.training.steps=$STEPS --resume
done
rm -rf "${OUT:?}/donor"  # the donor's predictor is the earlier one; its settings live on in every new gap
