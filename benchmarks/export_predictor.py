"""Save the image-space predictor of a DiffusionCT run (refine mode, ``diffusion.predictor.space=image``) as a
``residual-cnn`` model folder: the same network (Choe et al.'s residual CNN) trained by the same routine
and settings as ``diffusionct train --method residual-cnn``, so evaluating it beside the DiffusionCT run
measures exactly what the diffusion adds to its own predictor. With ``--autoencoder``: its encoder-decoder
alone as an ``autoencoder`` model folder (the paper's Encoder-Decoder row: DiffusionCT's own phase 1).

    .venv/bin/python benchmarks/export_predictor.py RUN_DIR OUT_DIR
    .venv/bin/python benchmarks/export_predictor.py --autoencoder RUN_DIR OUT_DIR
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from diffusionct.config import image_predictor_baseline_config
from diffusionct.methods.networks import AutoencoderMethod, ResidualCNNMethod
from diffusionct.models.baselines import ResidualCNN
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.methods.store import load_model


def image_predictor(run: Path) -> tuple[DiffusionCTModel, ResidualCNN]:
    """A DiffusionCT run and its image-space predictor (refine mode, ``diffusion.predictor.space=image``)."""
    model = load_model(run)
    if not isinstance(model.predictor, ResidualCNN):
        raise SystemExit(f"{run}: no image-space predictor (diffusion.predictor.space=image) to export")
    return model, model.predictor


def save_as_residual_cnn(model: DiffusionCTModel, network: ResidualCNN, out: Path, extra: dict) -> None:
    """``network`` (of ``model``'s predictor settings) as a ``residual-cnn`` model folder."""
    config = dataclasses.replace(model.config, baselines=image_predictor_baseline_config(model.config))
    ResidualCNNMethod(config, network=network).save(out, extra)


def export(run: Path, out: Path) -> None:
    model, network = image_predictor(run)
    save_as_residual_cnn(model, network, out, {"exported_from": str(run)})


def export_autoencoder(run: Path, out: Path) -> None:
    model = load_model(run, need_diffusion=False)
    AutoencoderMethod(model.config, model=model).save(out, {"exported_from": str(run)})


if __name__ == "__main__":
    args = sys.argv[1:]
    autoencoder = args[:1] == ["--autoencoder"]
    if len(args) != 2 + autoencoder:
        raise SystemExit(__doc__)
    (export_autoencoder if autoencoder else export)(Path(args[-2]), Path(args[-1]))
