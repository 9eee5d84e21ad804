"""`diffusionct scan`: list the DICOM series under a folder and find same-scan kernel pairs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scan", help="list the DICOM series under a folder and find same-scan kernel pairs")
    p.add_argument("folder", type=Path, help="folder tree to scan")
    p.add_argument("-o", "--output", type=Path, help="write a manifest (.json, or .csv plus .pairs.csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.io.scan import find_pairs, format_table, scan_folder, write_manifest

    series = scan_folder(args.folder)
    pairs = find_pairs(series)
    print(format_table(series))
    print(f"\n{len(series)} series, {len(pairs)} paired series (same scan, different kernels)")
    for pair in pairs:
        print(f"  pair: {pair.kernel_a} <-> {pair.kernel_b}  ({pair.slices} slices)  {pair.path_a} | {pair.path_b}")
    if args.output:
        write_manifest(args.output, series, pairs)
        print(f"manifest written to {args.output}")
    return 0
