"""`diffusionct demo`: the end-to-end demo on the built-in default (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the end-to-end demo on the built-in default (what `make demo` runs)")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"), help="demo folder")
    p.add_argument("--quick", action="store_true", help="a small version (its time budget 2.5 minutes, see --budget-minutes)")
    p.add_argument("--budget-minutes", type=float, help="time to fit the demo into on this machine (default 8, --quick 2.5): "
                   "the machine's speed is measured first and the demo scaled down when it would not fit")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diffusionct.demo import run_demo

    report = run_demo(args.output, quick=args.quick, overwrite=args.overwrite, device=args.device,
                      budget_s=None if args.budget_minutes is None else 60 * args.budget_minutes)
    print(f"report: {report}")
    return 0
