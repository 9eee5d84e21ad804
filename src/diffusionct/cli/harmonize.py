"""`diffusionct harmonize`: ComBat on feature tables: fit on one, apply to others (docs/harmonization.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.errors import DiffusionCTError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("harmonize", help="ComBat on feature tables: fit on one, apply to others (docs/harmonization.md)",
                       description="Feature-level harmonization (ComBat, empirical Bayes), beside image standardization. "
                                   "`fit` estimates each batch's (scanner's, kernel's) location and scale per feature on a "
                                   "training table and writes them as JSON; `apply` harmonizes new tables of those batches.")
    p.add_argument("action", choices=["fit", "apply"])
    p.add_argument("-i", "--input", type=Path, required=True, help="feature CSV: an id column first, a batch column, features")
    p.add_argument("-o", "--output", type=Path, required=True, help="fit: the ComBat file (.json); apply: the harmonized CSV")
    p.add_argument("--batch", required=True, metavar="COLUMN", help="the column naming each sample's batch (e.g. kernel)")
    p.add_argument("--covariates", metavar="A,B", help="fit: numeric columns whose effects ComBat keeps (e.g. age)")
    p.add_argument("--model", type=Path, help="apply: the file `harmonize fit` wrote")
    p.add_argument("--reference", metavar="BATCH", help="fit: bring every batch onto this one (e.g. the standard kernel), "
                                                      "which stays as it is; default: the pooled mean and variance")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.harmonization import ComBat, FeatureTable
    from diffusionct.io.files import check_output_free

    check_output_free(args.output, args.overwrite)
    covariates = [c.strip() for c in args.covariates.split(",") if c.strip()] if args.covariates else []
    if args.action == "fit":
        if args.model:
            raise DiffusionCTError("--model is what `harmonize apply` reads; `harmonize fit` writes its model to -o")
        table = FeatureTable.read(args.input, args.batch, covariates)
        combat = ComBat.fit(table.values, table.batches, table.features, table.covariates, covariates, args.reference)
        combat.save(args.output)
        print(f"ComBat fitted on {len(table.ids)} samples of {len(combat.batches)} batches ({', '.join(combat.batches)}), "
              f"{len(combat.features)} features; written to {args.output}; apply it with `diffusionct harmonize apply "
              f"-i TABLE --batch {args.batch} --model {args.output} -o OUT.csv`")
        return 0
    if not args.model:
        raise DiffusionCTError("harmonize apply needs --model, the file `harmonize fit` wrote")
    if covariates or args.reference:
        raise DiffusionCTError("--covariates and --reference are fixed when fitting; harmonize apply reads the fitted model's")
    combat = ComBat.load(args.model)
    table = FeatureTable.read(args.input, args.batch, combat.covariates, combat.features)
    table.write(args.output, combat.apply(table.values, table.batches, table.covariates))
    print(f"{len(table.ids)} samples x {len(combat.features)} features harmonized to {args.output}")
    return 0
