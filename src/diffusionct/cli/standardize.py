"""`diffusionct standardize`: standardize CT series to the model's target kernel."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.cli.options import TEMPERATURE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("standardize", help="standardize CT series to the model's target kernel",
                       description="Standardize a DICOM series folder, a folder tree of series (the model is loaded "
                                   "once; finished outputs are skipped, so a stopped batch resumes) or a NIfTI file.")
    p.add_argument("-i", "--input", type=Path, required=True, help="DICOM series folder, folder tree, or image file (NIfTI, NRRD, MHA; 2D or 3D)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output series folder (or tree, or .nii.gz)")
    p.add_argument("--model", type=Path, help="model folder, or a folder of model folders (one per kernel gap; each "
                                              "series gets the one for its kernel); default: the shipped model(s)")
    p.add_argument("--to", dest="target_kernel", metavar="KERNEL",
                   help="target kernel (e.g. B50): use the model that standardizes to it (shipped: B70 from B30 or B10, B50, B30)")
    p.add_argument("--from", dest="source_kernel", metavar="KERNEL",
                   help="the input's kernel, when its header has none (NIfTI) or is wrong (default: ConvolutionKernel)")
    p.add_argument("--pixel-mm", type=float, metavar="MM",
                   help="pixel size of an image file whose header has none (a 2D .mha, a bare .nrrd); refused otherwise")
    p.add_argument("--steps", type=int, help="reverse diffusion steps (default: the model's)")
    p.add_argument("--temperature", type=float, help=TEMPERATURE_HELP)
    p.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives identical output")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=4, help="slices per forward pass")
    p.add_argument("--format", default=None, choices=["dicom", "nifti"], help="output format (default: the input's)")
    p.add_argument("--series", help="series UID when the input folder holds several and only one is wanted")
    p.add_argument("--strict", action="store_true", help="refuse inputs whose kernel is not the model's source kernel")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    p.add_argument("--scheduler", help="run one task per series on Dask: tcp://HOST:PORT (a running cluster) or "
                                       "local:N (N worker processes here); default: this process")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.standardize_runs import run_standardize

    results = run_standardize(args.input, args.output, model_dir=args.model, steps=args.steps, seed=args.seed,
                              device=args.device, batch_size=args.batch_size, output_format=args.format,
                              strict=args.strict, overwrite=args.overwrite, series_uid=args.series,
                              scheduler=args.scheduler, target_kernel=args.target_kernel,
                              source_kernel=args.source_kernel, temperature=args.temperature, pixel_mm=args.pixel_mm)
    for result in results:
        status = "skipped (already done)" if result.skipped else f"{result.seconds:.1f} s, {result.seconds_per_slice:.2f} s/slice"
        print(f"{result.input} -> {result.output}: {result.slices} slices, {status}")
    return 0
