"""Subcommands beyond ``info`` and ``scan``, each importing its heavy modules only when run."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.errors import DiffusionCTError


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from diffusionct.devices import resolve_device
    from diffusionct.io.image import read_mask, read_volume
    from diffusionct.simulate.scanner import ScannerSettings
    from diffusionct.simulate.simulator import SimulationConfig, Simulator

    if args.mas is not None and args.mas <= 0:
        raise DiffusionCTError(f"--mas (dose) must be positive, got {args.mas}")
    scanner = ScannerSettings()
    overrides = {k: v for k, v in {"size": args.size, "pixel_mm": args.pixel_mm, "n_views": args.views, "mas": args.mas}.items()
                 if v is not None}
    scanner = replace(scanner, **overrides)
    config = SimulationConfig(cases=args.cases, kernels=args.kernels, thicknesses_mm=args.thickness, slices=args.slices,
                              seed=args.seed, scanner=scanner, n_tumours=args.tumours)
    simulator = Simulator(config, device=str(resolve_device(args.device)))
    if args.from_ct:
        volume = read_volume(args.from_ct, args.series)
        mask = read_mask(args.from_mask, volume, args.roi) if args.from_mask else None
        manifest = simulator.run_from_ct(volume, args.output, mask=mask, overwrite=args.overwrite)
    else:
        manifest = simulator.run_phantoms(args.output, overwrite=args.overwrite)
    print(f"simulated series written to {args.output}; manifest: {manifest}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add every further subcommand to the ``diffusionct`` parser."""
    p = sub.add_parser(
        "simulate",
        help="simulate paired-kernel CT series (same noisy sinogram, several kernels)",
        description="Simulate CT acquisitions of random chest phantoms (or of a real CT with --from-ct) and "
                    "reconstruct every kernel from the same noisy sinogram.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (refused if it exists)")
    p.add_argument("--cases", type=int, default=1, help="number of random phantoms (default 1)")
    p.add_argument("--kernels", type=_csv_list, default=["smooth", "sharp"], help="comma-separated kernels (smooth,medium,sharp)")
    p.add_argument("--thickness", type=_float_list, default=[1.0], help="comma-separated slice thicknesses in mm")
    p.add_argument("--slices", type=int, default=8, help="slices per series (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--size", type=int, help="matrix size (default 512)")
    p.add_argument("--pixel-mm", type=float, help="pixel size in mm (default 0.7)")
    p.add_argument("--views", type=int, help="projections over 180 degrees (default 720)")
    p.add_argument("--mas", type=float, help="dose in mAs (default 100)")
    p.add_argument("--tumours", type=int, help="tumours per phantom (default 1-3 at random)")
    p.add_argument("--from-ct", type=Path, help="re-simulate this CT (DICOM folder or NIfTI) instead of phantoms")
    p.add_argument("--series", help="series UID when --from-ct holds several")
    p.add_argument("--from-mask", type=Path, help="tumour mask of --from-ct (NIfTI or RTSTRUCT)")
    p.add_argument("--roi", help="RTSTRUCT ROI name for --from-mask")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_simulate)
