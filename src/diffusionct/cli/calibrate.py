"""`diffusionct calibrate`: measure kernel profiles from your own reconstructions (same-scan pairs, or --unpaired sets)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.errors import DiffusionCTError


DESCRIPTION = ("Finds same-scan kernel pairs under the folders (as `scan` does, also when anonymization broke the UIDs), "
               "measures each kernel's transfer to a reference kernel on soft tissue, and writes a kernel profile file "
               "(JSON) and a picture of the curves with their spread (PNG). With --unpaired, series of different patients: "
               "each kernel's window from its series' own noise spectra, each series' noise level removed, spread by a "
               "bootstrap over patients.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", description=DESCRIPTION,
                       help="measure kernel profiles from your own reconstructions (same-scan pairs, or --unpaired sets)")
    p.add_argument("-i", "--input", type=Path, action="append", required=True, help="folder tree of DICOM series (repeat for several)")
    p.add_argument("-o", "--output", type=Path, required=True, help="profile file (.json); the picture is written beside it (.png)")
    p.add_argument("--reference", metavar="KERNEL", help="the kernel the others are measured against (default: the smoothest)")
    p.add_argument("--vendor", help="manufacturer recorded in the profiles (default: the series' Manufacturer)")
    p.add_argument("--profiles", type=Path, action="append", default=[], metavar="FILE",
                   help="profile file(s) that may know the reference kernel's own window (default: the shipped profiles)")
    p.add_argument("--unpaired", action="store_true",
                   help="no same-scan pairs: measure each kernel on its own series (different patients; docs/unpaired.md)")
    p.add_argument("--force", action="store_true",
                   help="with --unpaired: write the profiles even when the patients differ as much as the kernels")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap that gives the spread")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.io.files import check_output_free, write_text_atomic
    from diffusionct.kernels.profiles import profiles_document

    if args.output.suffix.lower() != ".json":
        raise DiffusionCTError(f"{args.output}: give a .json file name for the kernel profiles")
    if args.unpaired and args.reference:
        raise DiffusionCTError("--reference names the kernel same-scan pairs are measured against; --unpaired measures "
                               "every kernel on its own: drop one of them")
    picture = args.output.with_suffix(".png")
    for path in (args.output, picture):  # the output apart from the inputs: the command line's guard (cli.main)
        check_output_free(path, args.overwrite)
    if args.unpaired:
        return _calibrate_unpaired(args, picture)
    from diffusionct.kernels.calibrate import calibrate_paired, plot_calibration

    calibration = calibrate_paired(args.input, reference=args.reference, vendor=args.vendor,
                                   profile_files=tuple(args.profiles), seed=args.seed)
    m = calibration.measurement
    plot_calibration(calibration, picture)
    write_text_atomic(args.output, profiles_document(calibration.profiles, reference=m.reference))
    print(f"{calibration.scans} scan(s), {m.rois} soft-tissue ROIs at {m.pixel_mm:.3f} mm; transfer to {m.reference}:")
    _print_table(m.frequencies, m.transfer)
    _print_profile_use(args.output, picture)
    return 0


def _calibrate_unpaired(args: argparse.Namespace, picture: Path) -> int:
    from tqdm import tqdm

    from diffusionct.io.files import write_text_atomic
    from diffusionct.kernels.calibrate import calibrate_unpaired, plot_unpaired
    from diffusionct.kernels.profiles import profiles_document

    with tqdm(desc="series", unit="series", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(1)

        calibration = calibrate_unpaired(args.input, vendor=args.vendor, seed=args.seed, force=args.force, progress=progress)
    m = calibration.measurement
    plot_unpaired(calibration, picture)
    write_text_atomic(args.output, profiles_document(calibration.profiles, pairing="unpaired"))
    print(", ".join(f"{k}: {m.patients(k)} patient(s), {m.rois(k)} ROIs" for k in sorted(m.series)) + "; windows:")
    _print_table(m.frequencies, {p.name: p.window_at(m.frequencies) for p in calibration.profiles})
    _print_profile_use(args.output, picture)
    return 0


def _print_table(frequencies, curves: dict) -> None:
    print("  f (c/mm) " + " ".join(f"{k:>9s}" for k in curves))
    for i, f in enumerate(frequencies):
        print(f"  {f:8.3f} " + " ".join(f"{c[i]:9.3f}" for c in curves.values()))


def _print_profile_use(output: Path, picture: Path) -> None:
    print(f"profiles written to {output} (curves: {picture.name}); use them with "
          f"`diffusionct train --method kernel-filter --profiles {output} --from K --to K` or "
          f"`diffusionct simulate --profiles {output} --kernels K,K`")
