"""`diffusionct train`: train the encoder-decoder (phase 1) and the latent DDPM (phase 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.config import ALL_PHASES, PREDICTOR_PHASE, TRAINING_PHASES
from diffusionct.errors import DiffusionCTError
from diffusionct.methods import DIFFUSIONCT, KERNEL_FILTER, METHODS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the encoder-decoder (phase 1) and the latent DDPM (phase 2)",
                       description="Phase 1 trains the encoder-decoder on every image of the manifest; phase 2 the "
                                   "conditional latent DDPM on its source->target kernel pairs. Multi-GPU/multi-node: "
                                   "launch with torchrun.")
    p.add_argument("--data", type=Path, help="manifest.json from `diffusionct scan` or `simulate`, the CSV of `scan -o x.csv`, or a "
                   "CSV of images with columns path,kernel,manufacturer[,case] (NIfTI/MHA/DICOM folders); kernel-filter: its "
                   "same-scan pairs calibrate the filter (without --data: the kernels' profiles)")
    p.add_argument("--profiles", type=Path, action="append", default=[], metavar="FILE",
                   help="kernel profile file(s) from `diffusionct calibrate` for kernel-filter, and for a DiffusionCT "
                        "predictor with diffusion.predictor.kernel_filter_from=profiles (default: the shipped profiles)")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (the trained model)")
    p.add_argument("--method", default=DIFFUSIONCT, choices=METHODS,
                   help="what to train: diffusionct (default) or a baseline: identity (no change), histogram "
                        "(histogram matching), kernel-filter (the calibrated linear filter of two kernel profiles, instant), "
                        "autoencoder (encoder-decoder alone), residual-cnn (Choe et al. 2019), "
                        "pix2pix (conditional GAN, GANai/STAN-CT family), cyclegan (unpaired GAN, CVH-CT/UDA-CT family), "
                        "ddpm (image-space conditional DDPM)")
    p.add_argument("--phase", default=ALL_PHASES, choices=TRAINING_PHASES,
                   help="diffusionct phases; predictor: a new kernel gap for a model library, its predictor trained "
                        "beside the library's shared encoder-decoder and U-Net (-o LIBRARY/NAME inside a copy of the "
                        "shipped library, with --from and --to; about 7 min on a 2-core CPU)")
    p.add_argument("--from", dest="source", metavar="KERNEL", help="source kernel (data.source_kernel)")
    p.add_argument("--to", dest="target", metavar="KERNEL", help="target kernel (data.target_kernel)")
    p.add_argument("--config", type=Path, help="YAML config (see docs/model.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. phase1.steps=500")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing run folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.config import RunConfig
    from diffusionct.devices import training_device
    from diffusionct.train.methods import train_method
    from diffusionct.train.loop import init_distributed

    overrides = [*args.set, *(f"data.{key}_kernel={kernel}" for key, kernel in (("source", args.source), ("target", args.target))
                              if kernel)]
    device = training_device(args.device, distributed=init_distributed())
    if args.phase == PREDICTOR_PHASE:
        return _train_library_gap(args, overrides, device)
    if args.profiles and args.method not in (KERNEL_FILTER, DIFFUSIONCT):
        raise DiffusionCTError("--profiles goes with --method kernel-filter or diffusionct (simulate takes profiles too)")
    if args.data is None and args.method != KERNEL_FILTER:
        raise DiffusionCTError(f"--method {args.method} trains on data: give --data MANIFEST")
    config = RunConfig.load(args.config, overrides)
    train_method(args.method, args.data, args.output, config, device, resume=args.resume, overwrite=args.overwrite,
                 phase=args.phase, profiles=tuple(args.profiles))
    print(f"{args.method} model written to {args.output}")
    return 0


def _train_library_gap(args: argparse.Namespace, overrides: list[str], device) -> int:
    from diffusionct.train.library_gap import train_library_gap

    if args.method != DIFFUSIONCT or args.config is not None:
        raise DiffusionCTError("--phase predictor trains a DiffusionCT gap with the library's own settings: "
                               "drop --method and --config (--set may change the seed and diffusion.predictor.training)")
    folder = train_library_gap(args.data, args.output, overrides, device, resume=args.resume, overwrite=args.overwrite,
                               profiles=tuple(args.profiles))
    print(f"gap written to {folder}; standardize with --model {folder.parent} --to KERNEL")
    return 0
