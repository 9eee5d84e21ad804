"""What no method can know: rescans of a test set place a model against oracles of the target's noise.

The source and target kernels are reconstructed from one noisy sinogram, but the target kernel passes photon noise
that the source kernel filtered away: no method that sees only the source image can know that noise. Rescans of the
same test set (``diffusionct simulate ... --rescan K``: the same phantoms, doses and pixel sizes, new photon noise)
measure what that costs in the tumour features. With M the model and r_k = target_k - M(source_k), its miss on
rescan k (a part d fixed by the anatomy that the source image lacks, and noise n_k):

- **retest**: the target kernel of rescan 1 in place of the model (the same patient scanned again with the target
  kernel: the features' test-retest agreement);
- **model + noise sample**: M(source) + a (r_1 - r_2) / sqrt(2); d cancels, so this is an exact sample of the
  noise the target holds beyond what its source shows, what a perfect sampler of that noise adds (a = 1) or
  a part of it (a = 0.5: a quarter of its variance);
- **anatomy oracle**: M(source) + mean of r_1..r_m: a model that knows every anatomic detail the source lacks
  (d), with noise of 1/m the variance left in (about the cost of a noise sample at a = sqrt(1/m): the a = 0.5 row
  for m = 4).

A model is at the ceiling of its inputs when the noise-sample rows do not beat it and only the anatomy oracle does.

    .venv/bin/python benchmarks/noise_ceiling.py --data TEST --rescan RESCAN1 --rescan RESCAN2 [--rescan ...]
        --model MODEL -o OUT.json [--source SIM_B30 --target SIM_B50] [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffusionct.evaluate import TestCase, image_metrics_summary, load_test_cases, tumour_features
from diffusionct.radiomics.compare import compare_features
from diffusionct.radiomics.features import FeatureSettings
from diffusionct.radiomics.metrics import reproducible_mask
from diffusionct.standardize import Standardizer
from gap_table import bootstrap_lines

NOISE_SCALES = (0.5, 1.0)


def _same_patients(first: list[TestCase], rescan: list[TestCase], path: Path) -> list[TestCase]:
    """The rescan's cases in the first scan's order (a manifest lists pairs in the order of their new UIDs)."""
    by_name = {c.name: c for c in rescan}
    if by_name.keys() != {c.name for c in first} or any(
            not np.array_equal(c.labels, by_name[c.name].labels) for c in first):
        raise SystemExit(f"{path} is not a rescan of the test set: its cases or tumour masks differ "
                         "(simulate it with the test set's options and seed, adding --rescan K)")
    return [by_name[c.name] for c in first]


def oracle_outputs(scans: list[list[TestCase]], model_out: list[dict]) -> dict[str, dict]:
    """Every row's images of the first scan's cases, by row label."""
    names = [c.name for c in scans[0]]
    miss = [{c.name: c.target.hu - out[c.name] for c in cases} for cases, out in zip(scans, model_out)]
    noise = {n: (miss[1][n] - miss[2][n]) / np.sqrt(2) for n in names}
    rows = {"input": {c.name: c.source.hu for c in scans[0]},
            "model": model_out[0],
            "retest: the target kernel rescanned": {c.name: c.target.hu for c in scans[1]}}
    for a in NOISE_SCALES:
        rows[f"model + {a:g} x noise sample"] = {n: model_out[0][n] + a * noise[n] for n in names}
    for m in sorted({2, len(scans) - 1}):
        rows[f"anatomy oracle, noise variance 1/{m}"] = {
            n: model_out[0][n] + np.mean([miss[k][n] for k in range(1, m + 1)], axis=0) for n in names}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the test set (first scan)")
    parser.add_argument("--rescan", type=Path, action="append", required=True, help="a rescan of it (two or more)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", help="source kernel (default: the model's)")
    parser.add_argument("--target", help="target kernel (default: the model's)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON of every row")
    args = parser.parse_args()
    if len(args.rescan) < 2:
        parser.error("give two or more --rescan folders: the noise sample is the difference of two rescans")
    model = Standardizer.load(args.model, "cpu")
    source, target = args.source or model.source_kernel, args.target or model.target_kernel
    scans = [load_test_cases(folder / "manifest.json", source, target) for folder in [args.data, *args.rescan]]
    scans[1:] = [_same_patients(scans[0], cases, folder) for folder, cases in zip(args.rescan, scans[1:])]
    start = time.perf_counter()
    model_out = [{c.name: model.standardize_slices(c.source.hu, steps=args.steps, seed=args.seed, pixel_mm=c.source.pixel_mm)
                  for c in cases} for cases in scans]
    print(f"{source} -> {target}: {len(scans)} scans standardized in {time.perf_counter() - start:.0f} s", flush=True)
    settings = FeatureSettings.load()
    standard = tumour_features(scans[0], {c.name: c.target.hu for c in scans[0]}, settings, None)
    rows = []
    for label, images in oracle_outputs(scans, model_out).items():
        comparison = compare_features(standard, tumour_features(scans[0], images, settings, None))
        image, _ = image_metrics_summary(scans[0], images)
        good = reproducible_mask(comparison.re)
        rows.append({"label": label, "status": "ok", "reproducible_share": comparison.reproducible_share,
                     "ccc": {c: v["mean"] for c, v in comparison.ccc_table.items()},
                     "rmse_hu": image["rmse_hu"], "high_pass_ratio": image["high_pass_ratio"],
                     "per_tumour": {t: (int(g.sum()), g.size) for t, g in zip(comparison.tumours, good)}})
        print(f"{label}: {100 * comparison.reproducible_share:.2f} %", flush=True)
    classes = list(rows[0]["ccc"])
    print(f"\n| row | RE < 0.15 | {' | '.join('CCC ' + c for c in classes)} | RMSE HU |")
    print("|---" * (len(classes) + 3) + "|")
    for row in rows:
        print(f"| {row['label']} | {row['reproducible_share']:.4f} | "
              + " | ".join(f"{row['ccc'][c]:.5f}" for c in classes) + f" | {row['rmse_hu']:.2f} |")
    print(bootstrap_lines(rows, "model"))
    args.output.write_text(json.dumps({"source": source, "target": target, "data": str(args.data),
                                       "rescans": [str(p) for p in args.rescan], "model": str(args.model), "rows": rows},
                                      indent=1))


if __name__ == "__main__":
    main()
