"""The real-pairs benchmark: every method on real same-scan kernel pairs, scored by the shared texture measure.

The Canon FC13 / FC51 phantom pairs (``../shared/data/canon-phantom-pairs``) have two regions. For each split
(calibrate or fit on one region, test on the other) and each direction, every method standardizes the test
region's source-kernel slices and ``../shared/tools/texture_pairs.py`` scores them against the real target-kernel
slices of the same scan (share of soft-tissue texture features within RE < 0.15, noise ratio, NPS correlation);
each number is the mean over the test region's slices. Methods:

* ``unchanged``: the source slice itself;
* ``histogram``: quantile matching fitted on the calibration region's pair;
* ``kernel-filter``: the calibrated linear filter, its profiles measured on the calibration region by
  ``diffusionct calibrate`` (the physics baseline);
* ``shipped library, nearest gap``: what a user without a model of these kernels would run: the shipped
  Siemens-like gap of the same sense (smooth -> sharp: B30 -> B70; sharp -> smooth: B70 -> B30).

    .venv/bin/python benchmarks/real_pairs.py [--json benchmarks/results/real_pairs.json] [--skip-shipped]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from diffusionct.config import RunConfig
from diffusionct.io.dicom import read_slice_stack
from diffusionct.kernels.calibrate import calibrate_paired
from diffusionct.methods import HistogramMethod, KernelFilterMethod

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAIRS = SHARED / "data" / "canon-phantom-pairs"
REGIONS = ("phantom1", "phantom2")
KERNELS = ("FC13", "FC51")  # smooth, sharp
NEAREST_GAP = {("FC13", "FC51"): "B70", ("FC51", "FC13"): "B30"}  # --to of the shipped library, by sense


def texture_measure():
    sys.path.insert(0, str(SHARED / "tools"))
    import texture_pairs  # noqa: PLC0415 - the shared, fixed measure

    return texture_pairs.compare


def region_slices(region: str) -> tuple[dict[str, np.ndarray], float]:
    stacks = {k: read_slice_stack(PAIRS / region / k) for k in KERNELS}
    return {k: hu.astype(np.float64) for k, (hu, _, _) in stacks.items()}, stacks[KERNELS[0]][2]


def calibrated_filter(region: str, source: str, target: str) -> KernelFilterMethod:
    """The kernel-filter method with profiles measured on one region only (the other stays unseen)."""
    calibration = calibrate_paired([PAIRS / region], reference="FC13", vendor="Canon", anchor_on_known=False)
    by_name = {p.name: p for p in calibration.profiles}
    config = RunConfig.from_dict({"data": {"source_kernel": source, "target_kernel": target}})
    return KernelFilterMethod(config, source=by_name[source], target=by_name[target])


def histogram(calibration: dict[str, np.ndarray], source: str, target: str) -> HistogramMethod:
    config = RunConfig.from_dict({"data": {"source_kernel": source, "target_kernel": target}})
    method = HistogramMethod(config)
    method.fit(calibration[source], calibration[target])
    return method


def score(compare, reference: np.ndarray, output: np.ndarray, source: np.ndarray) -> dict[str, float]:
    rows = [compare(r, o, s) for r, o, s in zip(reference, output, source)]
    return {key: float(np.mean([row[key] for row in rows])) for key in ("reproducible", "noise_ratio", "nps_corr", "psnr")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--skip-shipped", action="store_true", help="leave out the shipped library (no torch inference)")
    args = parser.parse_args()
    if not PAIRS.is_dir():
        sys.exit(f"{PAIRS} not found: the benchmark needs the shared Canon pairs")
    compare = texture_measure()
    slices = {r: region_slices(r) for r in REGIONS}
    shipped = {}
    if not args.skip_shipped:
        from diffusionct.model_library import DEFAULT_MODEL, library_models, shipped_library
        from diffusionct.standardize import Standardizer

        models = library_models(shipped_library())
        for (src, tgt), to in NEAREST_GAP.items():
            sense = "B30" if to == "B70" else "B70"
            entry = next(m for m in models if m.targets(to) and m.standardizes_from(sense)
                         and (to != "B70" or m.folder.name == DEFAULT_MODEL))
            shipped[(src, tgt)] = (entry.folder.name, Standardizer.load(entry.folder, device="cpu"))
    rows = []
    for calibrate_on in REGIONS:
        test_on = next(r for r in REGIONS if r != calibrate_on)
        (calibration, _), (test, pixel_mm) = slices[calibrate_on], slices[test_on]
        for source, target in (KERNELS, KERNELS[::-1]):
            methods = {"unchanged": None, "histogram": histogram(calibration, source, target),
                       "kernel-filter": calibrated_filter(calibrate_on, source, target)}
            if (source, target) in shipped:
                name, standardizer = shipped[(source, target)]
                methods[f"shipped {name}"] = standardizer
            for name, method in methods.items():
                start = time.perf_counter()
                output = test[source] if method is None else method.standardize_slices(
                    test[source].astype(np.float32), pixel_mm=pixel_mm)
                seconds = time.perf_counter() - start
                row = {"calibrated_on": calibrate_on, "tested_on": test_on, "gap": f"{source} -> {target}", "method": name,
                       **score(compare, test[target], np.asarray(output, np.float64), test[source]),
                       "seconds_per_slice": seconds / len(output)}
                rows.append(row)
                print(f"{calibrate_on} -> {test_on}  {source} -> {target}  {name:28s} reproducible {row['reproducible']:.3f}  "
                      f"noise ratio {row['noise_ratio']:.2f}  NPS corr {row['nps_corr']:.3f}  PSNR {row['psnr']:.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"data": str(PAIRS.relative_to(SHARED.parent)), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
