"""Save the image-space predictor of a DiffusionCT run (refine mode, ``diffusion.predictor=image``) as a
``residual-cnn`` model folder: the same network (Choe et al.'s residual CNN) trained by the same routine
and settings as ``diffusionct train --method residual-cnn``, so evaluating it beside the DiffusionCT run
measures exactly what the diffusion adds to its own predictor.

    .venv/bin/python benchmarks/export_predictor.py RUN_DIR OUT_DIR
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from diffusionct.methods import ResidualCNNMethod
from diffusionct.models.baselines import ResidualCNN
from diffusionct.model_store import load_model


def export(run: Path, out: Path) -> None:
    model = load_model(run)
    if not isinstance(model.predictor, ResidualCNN):
        raise SystemExit(f"{run}: no image-space predictor (diffusion.predictor=image) to export")
    d = model.config.diffusion
    baselines = dataclasses.replace(model.config.baselines, residual_cnn_channels=d.predictor_channels,
                                    residual_cnn_layers=d.predictor_layers, residual_cnn=d.predictor_training)
    config = dataclasses.replace(model.config, baselines=baselines)
    ResidualCNNMethod(config, network=model.predictor).save(out, {"exported_from": str(run)})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    export(Path(sys.argv[1]), Path(sys.argv[2]))
