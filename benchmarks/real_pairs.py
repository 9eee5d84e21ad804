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
  Siemens-like gap of the same sense (smooth -> sharp: B30 -> B70; sharp -> smooth: B70 -> B30);
* with ``--heldout OUT`` (made by ``benchmarks/heldout_canon_library.sh OUT``): DiffusionCT trained on pairs simulated
  with the calibration region's profiles alone (its predictor's filter held at the calibrated one), and that
  predictor alone (what the diffusion adds is the difference).

    .venv/bin/python benchmarks/real_pairs.py [--json benchmarks/results/real_pairs.json] [--skip-shipped] [--heldout OUT]
    .venv/bin/python benchmarks/real_pairs.py --write-profiles phantom1 OUT/phantom1/profiles.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from diffusionct.config import RunConfig, image_predictor_baseline_config
from diffusionct.io.dicom import read_slice_stack
from diffusionct.kernels.calibrate import calibrate_paired
from diffusionct.kernels.profiles import profiles_document
from diffusionct.methods.classical import HistogramMethod, KernelFilterMethod
from diffusionct.standardize import Standardizer

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


def region_profiles(region: str) -> list:
    """The Canon profiles measured on one region only (the other stays unseen)."""
    return calibrate_paired([PAIRS / region], reference="FC13", vendor="Canon", anchor_on_known=False).profiles


def calibrated_filter(region: str, source: str, target: str) -> KernelFilterMethod:
    """The kernel-filter method with profiles measured on one region only."""
    by_name = {p.name: p for p in region_profiles(region)}
    config = RunConfig.from_dict({"data": {"source_kernel": source, "target_kernel": target}})
    return KernelFilterMethod(config, source=by_name[source], target=by_name[target])


def histogram(calibration: dict[str, np.ndarray], source: str, target: str) -> HistogramMethod:
    config = RunConfig.from_dict({"data": {"source_kernel": source, "target_kernel": target}})
    method = HistogramMethod(config)
    method.fit(calibration[source], calibration[target])
    return method


def heldout_models(heldout: Path, region: str, source: str, target: str) -> dict:
    """DiffusionCT trained for this gap on the region's profiles alone, and its image predictor alone."""
    from export_predictor import image_predictor  # noqa: PLC0415 - the benchmarks' own helper, beside this file

    from diffusionct.methods.networks import ResidualCNNMethod

    folder = heldout / region / "library" / f"canon-{source.lower()}-{target.lower()}"
    if not (folder / "config.json").is_file():
        sys.exit(f"{folder}: missing; run benchmarks/heldout_canon_library.sh {heldout}")
    model, network = image_predictor(folder)
    config = dataclasses.replace(model.config, baselines=image_predictor_baseline_config(model.config))
    return {"DiffusionCT (held-out)": Standardizer.load(folder, device="cpu"),
            "its predictor alone": ResidualCNNMethod(config, network=network)}


def score(compare, reference: np.ndarray, output: np.ndarray, source: np.ndarray) -> dict[str, float]:
    rows = [compare(r, o, s) for r, o, s in zip(reference, output, source)]
    return {key: float(np.mean([row[key] for row in rows])) for key in ("reproducible", "noise_ratio", "nps_corr", "psnr")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--skip-shipped", action="store_true", help="leave out the shipped library (no torch inference)")
    parser.add_argument("--heldout", type=Path, help="held-out libraries made by benchmarks/heldout_canon_library.sh")
    parser.add_argument("--write-profiles", nargs=2, metavar=("REGION", "FILE"),
                        help="write the profiles measured on REGION alone to FILE and stop")
    args = parser.parse_args()
    if not PAIRS.is_dir():
        sys.exit(f"{PAIRS} not found: the benchmark needs the shared Canon pairs")
    if args.write_profiles:
        region, out = args.write_profiles
        Path(out).write_text(profiles_document(region_profiles(region), reference="FC13"))
        return
    compare = texture_measure()
    slices = {r: region_slices(r) for r in REGIONS}
    shipped = {}
    if not args.skip_shipped:
        from diffusionct.methods.library import DEFAULT_MODEL, library_models, shipped_library

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
            if args.heldout:
                methods.update(heldout_models(args.heldout, calibrate_on, source, target))
            if (source, target) in shipped:
                name, standardizer = shipped[(source, target)]
                methods[f"shipped {name}"] = standardizer
            for name, method in methods.items():
                start = time.perf_counter()
                convert = None if method is None else (
                    method.standardize_slices if isinstance(method, Standardizer) else method.convert_slices)
                output = test[source] if convert is None else convert(test[source].astype(np.float32), pixel_mm=pixel_mm)
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
