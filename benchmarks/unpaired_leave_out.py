"""Unpaired calibration judged on patients it did not see: GE SOFT -> STANDARD (../shared/data/sts-ct).

    .venv/bin/python benchmarks/unpaired_leave_out.py ../shared/data/sts-ct OUT.json

Each split holds out one SOFT and one STANDARD patient (every such pair: 3 x 3 splits). On the other patients the
kernels' windows are measured as ``diffusionct calibrate --unpaired`` measures them, and histogram matching is fitted;
the held-out SOFT series is standardized by the kernel filter W_STANDARD / W_SOFT of those windows (what the unpaired
models' training pairs are made with) and by histogram matching, and compared with the held-out STANDARD series by the
project's set comparison (radiomics/set_comparison.py: noise SD and NPS mean frequency by the fixed procedure, tumour
feature means). One patient against another: the spread over splits is the patients', and it is reported. The
in-sample row (fitted on all six, measured on the same six) is printed beside it, not as a result.

ComBat arms (issue 37's four arms on real scans): ComBat onto STANDARD fitted on the split's other four patients'
tumours (two a kernel, the least ComBat accepts) and applied to the held-out SOFT tumour, on its unchanged features and
on top of the kernel filter. Different patients: only the distance between feature distributions is measured (the
held-out SOFT tumour's features against the held-out STANDARD patient's), never a per-tumour error.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.harmonization import combat_onto_reference
from diffusionct.io.image import read_label_map, read_volume
from diffusionct.kernels.profiles import apply_transfer, transfer_gain
from diffusionct.kernels.unpaired import measure_unpaired, profiles_from_unpaired, uncertain_transfers
from diffusionct.methods.classical import HistogramMethod
from diffusionct.radiomics.features import FeatureSettings
from diffusionct.radiomics.set_comparison import compare_sets, measure_series

sys.path.insert(0, str(Path(__file__).parent))
from unpaired_real import ROI_NAME, cases  # noqa: E402

SOURCE, TARGET = "SOFT", "STANDARD"
INPUT, FILTER = "input (SOFT)", "kernel filter (unpaired calibration)"
COMBAT_ON = {INPUT: "ComBat", FILTER: "kernel filter + ComBat"}  # ComBat arms: on the features of these
METRICS = ("noise_sd_error", "nps_frequency_error", "feature_means_within_15pct")


def kernel_filter(training: dict[str, list]) -> tuple[Callable[[np.ndarray], np.ndarray], list[str]]:
    """The filter W_target / W_source of the windows measured on ``training`` (kernel -> [(case, hu, pixel_mm)]), and
    why ``calibrate --unpaired`` would refuse it without --force (empty: it would not)."""
    measurement = measure_unpaired(training)
    by_name = {p.name: p for p in profiles_from_unpaired(measurement, "GE", "leave-patients-out split")}
    return lambda f: transfer_gain(by_name[SOURCE], by_name[TARGET], f), uncertain_transfers(measurement)


def histogram(training: dict[str, list]) -> HistogramMethod:
    method = HistogramMethod(RunConfig())
    method.fit(*(np.concatenate([hu.ravel() for _, hu, _ in training[k]]) for k in (SOURCE, TARGET)))
    return method


def fit_methods(training: dict[str, list]) -> tuple[dict[str, Callable], list[str]]:
    """The unpaired methods fitted on ``training``, each a function of a SOFT volume, and why `calibrate --unpaired`
    would refuse the kernel filter's calibration."""
    gain, uncertain = kernel_filter(training)
    matching = histogram(training)
    return {INPUT: lambda volume: volume.hu, "histogram matching": lambda volume: matching.convert_slices(volume.hu),
            FILTER: lambda volume: apply_transfer(volume.hu, gain, volume.pixel_mm)}, uncertain


def score(test: list, standard: list) -> dict:
    compared = compare_sets(test, standard)
    target_sd = float(np.nanmean([m.noise_sd for m in standard]))
    return {"noise_sd": compared["noise_sd"], "noise_sd_error": abs(compared["noise_sd"] - target_sd) / target_sd,
            "nps_mean_frequency": compared["nps_mean_frequency"], "nps_frequency_error": compared["nps_frequency_error"],
            "feature_means_within_15pct": compared["feature_means_within_15pct"]}


def run(shared: Path) -> dict:
    settings = FeatureSettings.load()
    data = {}
    for case, folder, rtstruct, kernel in cases(shared):
        volume = read_volume(folder)
        data[case] = (kernel, volume, read_label_map(rtstruct, volume, roi=ROI_NAME))
    by_kernel = {k: sorted(c for c, (kernel, _, _) in data.items() if kernel == k) for k in (SOURCE, TARGET)}

    def training(excluded: set[str]) -> dict[str, list]:
        return {k: [(c, data[c][1].hu, data[c][1].pixel_mm) for c in cases_ if c not in excluded] for k, cases_ in by_kernel.items()}

    cache: dict[str, object] = {}

    def measured(case: str, hu: np.ndarray | None = None):  # None: the series as it is (measured once)
        _, volume, labels = data[case]
        if hu is None and case in cache:
            return cache[case]
        result = measure_series(volume.hu if hu is None else hu, labels, volume.spacing, settings)
        if hu is None:
            cache[case] = result
        return result

    splits = []
    for soft, standard in itertools.product(by_kernel[SOURCE], by_kernel[TARGET]):
        try:
            methods, uncertain = fit_methods(training({soft, standard}))
        except DiffusionCTError as exc:  # e.g. the only other SOFT patient has no soft tissue to measure
            splits.append({"held_out": [soft, standard], "skipped": str(exc)})
            continue
        held_out = {name: measured(soft, method(data[soft][1])) for name, method in methods.items()}
        held_out.update(combat_arms(held_out, methods, [c for c in by_kernel[SOURCE] if c != soft],
                                    [c for c in by_kernel[TARGET] if c != standard], data, measured))
        target = [measured(standard)]
        splits.append({"held_out": [soft, standard], "calibrate_would_refuse": uncertain,
                       "methods": {name: score([m], target) for name, m in held_out.items()}})
    methods = fit_methods(training(set()))[0]
    target = [measured(c) for c in by_kernel[TARGET]]
    in_sample = {name: score([measured(case, method(data[case][1])) for case in by_kernel[SOURCE]], target)
                 for name, method in methods.items()}
    return {"splits": splits, "summary": summarize(splits), "in_sample": in_sample}


def combat_arms(held_out: dict, methods: dict[str, Callable], train_soft: list[str], train_standard: list[str], data: dict,
                measured: Callable) -> dict:
    """ComBat onto STANDARD fitted on the split's other patients' tumours (their SOFT features, unchanged or kernel
    filtered, beside their STANDARD features) and applied to the held-out SOFT tumour. ComBat changes features, not
    images: its noise numbers are those of the images it was applied to."""
    standard_features = {c: measured(c).features for c in train_standard}
    arms = {}
    for base, name in COMBAT_ON.items():
        soft_features = {c: (measured(c) if base == INPUT else measured(c, methods[base](data[c][1]))).features
                         for c in train_soft}
        try:
            harmonized, _ = combat_onto_reference({SOURCE: soft_features, TARGET: standard_features}, TARGET,
                                                  {"held-out": held_out[base].features}, SOURCE)
        except DiffusionCTError as exc:  # one training patient of a kernel: ComBat has no variance to estimate
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        arms[name] = dataclasses.replace(held_out[base], features=harmonized["held-out"])
    return arms


def summarize(splits: list[dict]) -> dict:
    done = [s for s in splits if "methods" in s]
    out = {}
    for name in done[0]["methods"] if done else ():
        out[name] = {}
        for metric in METRICS:
            values = np.array([s["methods"][name][metric] for s in done], float)
            values = values[np.isfinite(values)]
            out[name][metric] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max()),
                                 "splits": int(len(values))} if len(values) else None
    return out


def table(result: dict) -> str:
    lines = ["| method | noise SD off the held-out STANDARD | NPS mean frequency off | tumour feature means within 15 % |"
             " in-sample (noise / frequency / features) |", "|---|---|---|---|---|"]
    for name, metrics in result["summary"].items():
        cells = []
        for metric in METRICS:
            m = metrics[metric]
            cells.append("n/a" if m is None else f"{100 * m['mean']:.1f} % ({100 * m['min']:.1f}-{100 * m['max']:.1f}, "
                                                  f"{m['splits']} splits)")
        s = result["in_sample"].get(name)
        in_sample = "n/a" if s is None else (f"{100 * s['noise_sd_error']:.1f} / {100 * s['nps_frequency_error']:.1f} / "
                                              f"{100 * s['feature_means_within_15pct']:.1f} %")
        lines.append(f"| {name} | {' | '.join(cells)} | {in_sample} |")
    refused = [s for s in result["splits"] if s.get("calibrate_would_refuse")]
    lines += ["", f"`calibrate --unpaired` would refuse {len(refused)} of {len(result['splits'])} splits' calibrations without "
              f"--force ({refused[0]['calibrate_would_refuse'][0] if refused else ''})"]
    skipped = [s for s in result["splits"] if "skipped" in s]
    if skipped:
        lines.append("")
        lines += [f"split {' + '.join(s['held_out'])} left out: {s['skipped']}" for s in skipped]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    result = run(args.shared)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
