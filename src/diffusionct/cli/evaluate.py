"""`diffusionct evaluate`: standardize a paired test set with each model and report feature reproducibility."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusionct.cli.options import TEMPERATURE_HELP
from diffusionct.errors import DiffusionCTError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="standardize a paired test set with each model and report feature reproducibility",
                       description="The paper's evaluation: CCC per feature class, reproducible features over RE "
                                   "thresholds, image metrics and tumour panels, as one HTML report plus CSV and JSON.")
    p.add_argument("--data", type=Path, required=True, help="test manifest with paired series and tumour masks")
    p.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeat for several)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    p.add_argument("--steps", type=int, help="diffusion steps (default: each model's)")
    p.add_argument("--temperature", type=float, help=TEMPERATURE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="feature extraction processes")
    p.add_argument("--max-cases", type=int, help="evaluate at most this many test pairs")
    p.add_argument("--params", type=Path, help="feature settings YAML (default: the shipped params)")
    p.add_argument("--combat-train", type=Path, metavar="MANIFEST",
                   help="a paired set of other patients: fit ComBat on its tumours (onto the target kernel) and add "
                        "the arms ComBat and METHOD + ComBat beside the unchanged input and each method")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.evaluate import ARMS
    from diffusionct.io.files import atomic_output_dir
    from diffusionct.report.evaluation_report import evaluate_to_report

    if args.max_cases is not None and args.max_cases < 1:
        raise DiffusionCTError(f"--max-cases must be at least 1, got {args.max_cases} (leave it out for every test pair)")
    with atomic_output_dir(args.output, overwrite=args.overwrite) as tmp:
        report = evaluate_to_report(args.data, args.model, tmp, steps=args.steps, seed=args.seed, device=args.device,
                                    workers=args.workers, max_cases=args.max_cases, params=args.params,
                                    temperature=args.temperature, combat_train=args.combat_train)
        models = [m for m in json.loads((tmp / "results.json").read_text())["methods"] if m["arm"] == ARMS[1]]
        if models and all(m["status"] != "ok" for m in models):  # a report of nothing is no result
            raise DiffusionCTError(f"every model failed ({models[0]['method']}: {models[0]['error']}); nothing was written")
    print(f"report: {args.output / report.name}")
    return 0
