"""`diffusionct compare`: feature reproducibility of test images against standard ones (RE, CCC)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.cli.features import case_jobs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="feature reproducibility of test images against standard ones (RE, CCC)",
                       description="Items of the same name in --reference, --test and --masks (NIfTI files or DICOM "
                                   "series folders; masks as label maps or RTSTRUCT folders) are compared tumour by tumour.")
    p.add_argument("--reference", type=Path, required=True, help="folder of standard-kernel images")
    p.add_argument("--test", type=Path, required=True, help="folder of test images (same names)")
    p.add_argument("--masks", type=Path, required=True, help="folder of tumour masks (same names)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder for CSV and JSON")
    p.add_argument("--roi", help="RTSTRUCT ROI name")
    p.add_argument("--params", type=Path, help="feature settings YAML, or a preset name (ibsi-a .. ibsi-e)")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.io.files import check_output_free
    from diffusionct.io.items import match_items
    from diffusionct.radiomics.batch import extract_many
    from diffusionct.radiomics.compare import compare_features, write_comparison
    from diffusionct.radiomics.features import FeatureSettings

    check_output_free(args.output, args.overwrite)
    settings = FeatureSettings.load(args.params)
    matched = match_items(reference=args.reference, test=args.test, masks=args.masks)
    feature_sets = {}
    for role in ("reference", "test"):
        jobs = [job for name, paths in matched.items() for job in case_jobs(name, paths[role], paths["masks"], args.roi, settings)]
        feature_sets[role], errors = extract_many(jobs, settings, workers=args.workers)
        for key, message in errors.items():
            print(f"warning: {role} {key}: {message}")
    result = compare_features(feature_sets["reference"], feature_sets["test"])
    write_comparison(result, args.output, overwrite=args.overwrite)
    print(f"{len(result.tumours)} tumours, {len(result.feature_names)} features; "
          f"RE < 0.15: {100 * result.reproducible_share:.1f} %")
    for cls, row in result.ccc_table.items():
        print(f"  CCC {cls:6s} {row['mean']:.3f} +/- {row['std']:.3f}  ({row['features']} features)")
    print(f"written to {args.output}")
    return 0
