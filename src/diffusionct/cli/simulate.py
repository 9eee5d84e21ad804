"""`diffusionct simulate`: simulate paired-kernel CT series (same noisy sinogram, several kernels)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.cli.options import csv_list, float_list, pair
from diffusionct.errors import DiffusionCTError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate paired-kernel CT series (same noisy sinogram, several kernels)",
        description="Simulate CT acquisitions of random chest phantoms (or of a real CT with --from-ct) and "
                    "reconstruct every kernel from the same noisy sinogram.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (refused if it exists)")
    p.add_argument("--cases", type=int, default=1, help="number of random phantoms (default 1)")
    p.add_argument("--kernels", type=csv_list, default=["b30", "b70"],
                   help="comma-separated kernels: the analytic family b10, b30, b50, b70 (the shipped models' training "
                        "kernels; aliases smooth=b30, medium=b50, sharp=b70), or measured profiles by name: B10f, B30f, B50f, "
                        "B70f (Siemens), FC13, FC51 (Canon), or those of --profiles; default b30,b70")
    p.add_argument("--profiles", type=Path, action="append", default=[], metavar="FILE",
                   help="kernel profile file from `diffusionct calibrate` (repeat for several)")
    p.add_argument("--thickness", type=float_list, default=[1.0], help="comma-separated slice thicknesses in mm")
    p.add_argument("--slices", type=int, default=8, help="slices per series (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--size", type=int, help="matrix size (default 512)")
    p.add_argument("--pixel-mm", type=float, help="pixel size in mm (default 0.7)")
    p.add_argument("--views", type=int, help="projections over 180 degrees (default 720)")
    p.add_argument("--mas", type=float, help="dose in mAs (default 100)")
    p.add_argument("--bowtie", type=float, help="bowtie filter strength 0..1 (default 0.5; 0: none)")
    p.add_argument("--tcm", type=float, help="angular tube-current modulation strength 0..1 (default 0.5; 0: constant)")
    p.add_argument("--dose-range", type=float_list, metavar="LOW,HIGH",
                   help="domain randomization: dose drawn per case, log-uniform in mAs (e.g. 40,300)")
    p.add_argument("--pixel-range", type=float_list, metavar="LOW,HIGH",
                   help="domain randomization: pixel size (field of view) drawn per case in mm (e.g. 0.6,0.9)")
    p.add_argument("--kernel-jitter", type=float, default=0.0,
                   help="domain randomization: each kernel's frequency axis scaled by 1 +/- this per case (e.g. 0.08)")
    p.add_argument("--tumours", type=int, help="tumours per phantom (default 1-3 at random)")
    p.add_argument("--rescan", type=int, default=0, metavar="K",
                   help="the K-th rescan of the same data set (same --seed and options): same phantoms, doses and "
                        "pixel sizes, new photon noise and series UIDs, for test-retest studies (default 0: the first scan)")
    p.add_argument("--from-ct", type=Path,
                   help="re-simulate this CT (DICOM series, a folder tree of series: one case each, or NIfTI) instead of phantoms")
    p.add_argument("--series", help="series UID when --from-ct holds several")
    p.add_argument("--from-mask", type=Path, help="tumour mask of --from-ct (NIfTI or RTSTRUCT)")
    p.add_argument("--roi", help="RTSTRUCT ROI name for --from-mask")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from diffusionct.devices import resolve_device
    from diffusionct.io.image import read_mask, read_volume
    from diffusionct.io.scan import scan_folder
    from diffusionct.simulate.scanner import ScannerSettings
    from diffusionct.simulate.simulator import DomainRandomization, SimulationConfig, Simulator

    overrides = {"size": args.size, "pixel_mm": args.pixel_mm, "n_views": args.views, "mas": args.mas,
                 "bowtie_strength": args.bowtie, "tcm_strength": args.tcm}
    scanner = replace(ScannerSettings(), **{k: v for k, v in overrides.items() if v is not None})
    randomize = DomainRandomization(mas=pair(args.dose_range, "--dose-range"), pixel_mm=pair(args.pixel_range, "--pixel-range"),
                                    kernel_jitter=args.kernel_jitter)
    config = SimulationConfig(cases=args.cases, kernels=args.kernels, thicknesses_mm=args.thickness, slices=args.slices,
                              seed=args.seed, scanner=scanner, n_tumours=args.tumours, randomize=randomize,
                              rescan=args.rescan, profiles=[str(p) for p in args.profiles])
    simulator = Simulator(config, device=str(resolve_device(args.device)))
    if args.from_ct:
        found = scan_folder(args.from_ct) if args.from_ct.is_dir() and not args.series else []
        if len(found) > 1 and args.from_mask:
            raise DiffusionCTError(f"{args.from_ct} holds several series: --from-mask needs one, chosen with --series UID")
        if len(found) > 1:  # a folder tree: every series is a case
            sources = [(read_volume(info.path, info.series_uid), None) for info in found]
        else:
            volume = read_volume(args.from_ct, args.series)
            sources = [(volume, read_mask(args.from_mask, volume, args.roi) if args.from_mask else None)]
        manifest = simulator.run_from_cts(sources, args.output, overwrite=args.overwrite)
    else:
        manifest = simulator.run_phantoms(args.output, overwrite=args.overwrite)
    print(f"simulated series written to {args.output}; manifest: {manifest}")
    return 0
