"""Unpaired standardization measured on real data without twins: GE SOFT -> STANDARD (../shared/data/sts-ct).

    .venv/bin/python benchmarks/unpaired_real.py sets ../shared/data/sts-ct RUNS/sets.csv      # the set CSV
    benchmarks/train_unpaired_real.sh RUNS                                                      # the models
    .venv/bin/python benchmarks/unpaired_real.py evaluate ../shared/data/sts-ct RUNS OUT.json   # this table
    ... evaluate ../shared/data/sts-ct RUNS OUT.json --diffusion-steps 1,2,5                      # DiffusionCT's steps

There is no same-scan STANDARD image of a SOFT series, so distributions are compared (issue 12): each SOFT
series is standardized by each method and compared with the STANDARD set (other patients):
- noise texture by the project's fixed procedure (spectra.kernel_texture, each series its own ROIs): NPS mean
  frequency and noise SD, averaged per set; the bar: the standardized SOFT NPS mean frequency within 10 % of
  the STANDARD set's;
- tumour features (GTV_Mass_CT, the shipped feature settings): per feature, the mean over the standardized SOFT
  tumours against the mean over the STANDARD tumours; reported: the share of features whose means differ by
  less than 15 % (the RE threshold applied to set means), the mean two-sample KS statistic (3 vs 3 tumours:
  too few for a KS test to reject anything, so the statistic, not a p-value), and the median over features of
  |mean difference| / the STANDARD tumours' SD (a CCC of feature means is ~1 whatever the method: the
  features' scales differ by orders of magnitude).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffusionct.io.image import read_label_map, read_volume
from diffusionct.io.manifest import SeriesEntry, write_set_csv
from diffusionct.io.scan import scan_folder
from diffusionct.radiomics.features import FeatureSettings
from diffusionct.radiomics.set_comparison import compare_sets, measure_series
from diffusionct.standardize import Standardizer

ROI_NAME = "GTV_Mass_CT"
METHODS = ("histogram", "kernel-filter", "cyclegan", "predictor-cnn", "diffusionct")


def cases(shared: Path) -> list[tuple[str, Path, Path, str]]:
    """(case, image folder, RTSTRUCT, kernel) of every STS case."""
    out = []
    for info in scan_folder(shared):
        if info.modality == "CT":
            folder = Path(info.path)  # as found by the scan (relative to the working folder or absolute)
            out.append((folder.parent.parent.name, folder, folder.parent / "mask" / "RS.dcm", info.kernel))
    return sorted(out)


def write_sets(shared: Path, out: Path) -> Path:
    entries = [SeriesEntry(str(folder.resolve()), kernel, "GE MEDICAL SYSTEMS", case) for case, folder, _, kernel in cases(shared)]
    return write_set_csv(out, entries)


def evaluate(shared: Path, runs: Path, out: Path, diffusion_steps: tuple[int, ...] = ()) -> dict:
    """``diffusion_steps``: DiffusionCT at each of these sampling steps (rows ``diffusionct N steps``) instead
    of its default alone."""
    settings = FeatureSettings.load()
    rows: dict[str, list[dict]] = {"STANDARD (target set)": [], "input (SOFT)": []}
    timings = {}
    standardizers = {m: Standardizer.load(runs / m, "cpu") for m in METHODS if (runs / m / "config.json").is_file()}
    for case, folder, rtstruct, kernel in cases(shared):
        volume = read_volume(folder)
        labels = read_label_map(rtstruct, volume, roi=ROI_NAME)
        if kernel == "STANDARD":
            rows["STANDARD (target set)"].append(measure_series(volume.hu, labels, volume.spacing, settings))
            continue
        rows["input (SOFT)"].append(measure_series(volume.hu, labels, volume.spacing, settings))
        for method, standardizer in standardizers.items():
            runs_of_method = [(f"{method} {n} steps", n) for n in diffusion_steps] if method == "diffusionct" and diffusion_steps \
                else [(method, None)]
            for name, steps in runs_of_method:
                start = time.perf_counter()
                hu = standardizer.standardize_slices(volume.hu, steps=steps, seed=0, pixel_mm=volume.pixel_mm)
                timings.setdefault(name, []).append((time.perf_counter() - start) / volume.hu.shape[0])
                rows.setdefault(name, []).append(measure_series(hu, labels, volume.spacing, settings))
    target = rows["STANDARD (target set)"]
    result = {"target_nps_mean_frequency": float(np.nanmean([r.nps_mean_frequency for r in target])),
              "target_noise_sd": float(np.nanmean([r.noise_sd for r in target])),
              "methods": {name: {**compare_sets(r, target), "seconds_per_slice": float(np.mean(timings.get(name, [0.0])))}
                          for name, r in rows.items() if name != "STANDARD (target set)"}}
    out.write_text(json.dumps(result, indent=2))
    return result


def table(result: dict) -> str:
    lines = [f"STANDARD set: NPS mean frequency {result['target_nps_mean_frequency']:.3f} cycles/mm, noise SD "
             f"{result['target_noise_sd']:.1f} HU", "",
             "| method | NPS mean freq. (c/mm) | error vs STANDARD | noise SD (HU) | feature means within 15 % | mean KS statistic "
             "| median std. difference | s/slice |", "|---|---|---|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | {m['nps_mean_frequency']:.3f} | {100 * m['nps_frequency_error']:.1f} % | {m['noise_sd']:.1f} | "
                     f"{100 * m['feature_means_within_15pct']:.1f} % | {m['mean_ks_statistic']:.2f} | {m['median_standardized_difference']:.2f} | "
                     f"{m['seconds_per_slice']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sets")
    p.add_argument("shared", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("evaluate")
    p.add_argument("shared", type=Path)
    p.add_argument("runs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--diffusion-steps", default="", help="comma-separated sampling steps for DiffusionCT (default: its own)")
    args = parser.parse_args()
    if args.command == "sets":
        print(write_sets(args.shared, args.out))
    else:
        steps = tuple(int(n) for n in args.diffusion_steps.split(",") if n.strip())
        print(table(evaluate(args.shared, args.runs, args.out, steps)))


if __name__ == "__main__":
    main()
