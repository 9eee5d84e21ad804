"""The shipped model library: per-gap models that share one encoder-decoder and one U-Net (docs/model.md).

Every gap keeps its own predictor (the kernel pair's conditional mean), its config and its diffusion scale
(``x0_scale``: the spread of what its predictor leaves); the U-Net is the one trained on the ``--unet-from`` gap
(docs/history/results-analytic-library.md, tenth run: a U-Net trained on one gap serves the others with no measurable loss; that run's
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

from diffusionct.methods.library import assemble_gap_model, share_weights


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
        assemble_gap_model(Path(run), args.unet_from, staging / name, args.unet_scale)
    print("shared:", ", ".join(share_weights(staging)))
    staging.rename(args.out)


if __name__ == "__main__":
    main()
