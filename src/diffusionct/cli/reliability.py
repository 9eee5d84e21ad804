"""`diffusionct reliability`: which features to trust after standardization (how much it moved each)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reliability", help="which features to trust after standardization (how much it moved each)",
                       description="Per feature, the median over tumours of how much the standardization changed it "
                                   "(|after - before| / |before|), from two tables of `diffusionct features`: the source "
                                   "images' and the standardized images'. A feature moved by more than the threshold is "
                                   "flagged: on the simulated test set such features miss the target kernel's values "
                                   "(RE >= 0.15) far more often (docs/results.md, 'Feature reliability').")
    p.add_argument("--before", type=Path, required=True, help="features of the source images (CSV of `features`)")
    p.add_argument("--after", type=Path, required=True, help="features of the same tumours in the standardized images")
    p.add_argument("-o", "--output", type=Path, required=True, help="CSV: feature, class, median change, trusted")
    p.add_argument("--threshold", type=float, default=None, help="the median change above which a feature is flagged "
                                                                 "(default: the measured one, docs/results.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.io.files import check_output_free, write_text_atomic
    from diffusionct.radiomics.reliability import CHANGE_THRESHOLD, feature_reliability, read_feature_csv, reliability_csv

    check_output_free(args.output, args.overwrite)
    threshold = CHANGE_THRESHOLD if args.threshold is None else args.threshold
    rows = feature_reliability(read_feature_csv(args.before), read_feature_csv(args.after), threshold)
    write_text_atomic(args.output, reliability_csv(rows))
    flagged = sum(r.flagged for r in rows)
    print(f"{len(rows) - flagged} of {len(rows)} features trusted, {flagged} flagged (the standardization moved them by "
          f"more than {threshold:g} of their value, median over the tumours); written to {args.output}")
    return 0
