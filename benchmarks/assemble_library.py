"""The shipped model library: per-gap models that share one encoder-decoder and one U-Net (docs/model.md).

Every gap keeps its own predictor (the kernel pair's conditional mean), its config and its diffusion scale
(``x0_scale``: the spread of what its predictor leaves); the U-Net is the one trained on the ``--unet-from`` gap
(docs/results.md, tenth run: a U-Net trained on one gap serves the others with no measurable loss; that run's
comparison assembled the ninth run's per-gap models, ``git worktree add /tmp/v9 24c3e2d``, with each other U-Net). The
encoder-decoder must be the same file in every model (phase 1 is trained once). Writes ``OUT/<name>/config.json``
and the predictors; ``autoencoder.safetensors`` and ``unet.safetensors`` once, in ``OUT``.

    .venv/bin/python benchmarks/assemble_library.py OUT --unet-from RUNS/b30-b70/diffusionct \\
        sim-b30-b70=RUNS/b30-b70/diffusionct sim-b30-b50=RUNS/b30-b50/diffusionct ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from diffusionct.model_library import share_weights
from diffusionct.model_store import (AUTOENCODER_NAME, PREDICTOR_NAME, UNET_NAME, WEIGHTS_DIGESTS, file_sha256,
                                     read_model_meta, weights_path, write_model_config)


def assemble_model(run: Path, unet_run: Path, out: Path, unet_scale: bool = False) -> None:
    """``out``: ``run``'s model (its predictor and x0 scale, or with ``unet_scale`` the U-Net's) with ``unet_run``'s U-Net."""
    meta, donor = read_model_meta(run), read_model_meta(unet_run)
    # through weights_path: a model of an existing library (the shipped one) keeps its shared files in the library
    autoencoder = weights_path(run, AUTOENCODER_NAME, meta)
    if file_sha256(autoencoder) != file_sha256(weights_path(unet_run, AUTOENCODER_NAME, donor)):
        sys.exit(f"{run}: its encoder-decoder differs from {unet_run}'s; the U-Net works in that one's latent space")
    out.mkdir(parents=True)
    shutil.copy2(autoencoder, out / AUTOENCODER_NAME)
    shutil.copy2(weights_path(run, PREDICTOR_NAME, meta), out / PREDICTOR_NAME)
    shutil.copy2(weights_path(unet_run, UNET_NAME, donor), out / UNET_NAME)
    config, x0_scale = meta["config"], meta["config"]["diffusion"]["x0_scale"]
    config["unet"] = donor["config"]["unet"]
    config["diffusion"] = {**donor["config"]["diffusion"], **({} if unet_scale else {"x0_scale": x0_scale})}
    data = donor["config"]["data"]
    meta["unet_trained_on"] = f"{data['source_kernel']} -> {data['target_kernel']}"
    meta.pop(WEIGHTS_DIGESTS, None)
    write_model_config(out, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--unet-from", type=Path, required=True, help="the model whose U-Net every gap uses")
    parser.add_argument("--unet-scale", action="store_true",
                        help="every gap takes the U-Net model's x0_scale instead of its own (a comparison, not shipped)")
    parser.add_argument("models", nargs="+", help="NAME=RUN: a trained model folder per gap")
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"{args.out} exists; give a new folder")
    staging = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for spec in args.models:
        name, _, run = spec.partition("=")
        assemble_model(Path(run), args.unet_from, staging / name, args.unet_scale)
    print("shared:", ", ".join(share_weights(staging)))
    staging.rename(args.out)


if __name__ == "__main__":
    main()
