"""Accuracy of the kernel transfer measured between unpaired sets (docs/unpaired.md), on a simulated training set.

    .venv/bin/python benchmarks/kernel_transfer_accuracy.py runs/data/train-measured-wide

(the training set of the shipped library, made by benchmarks/remake_library.sh: the measured Siemens and Canon
profiles, 0.5-1.0 mm pixels, 50-250 mAs, kernels stretched by up to 5 % per case.)

Per gap, the gain at 0.1/0.2/0.3/0.4 cycles/mm: the truth (cross-spectrum of the two kernels' images of the same
scans, all cases) and the estimates from case groups without shared patients, and from both sets of all cases.
Then the mean |log(estimate / truth)| per gap over the three splits without shared patients, and over 40 random
splits of 3 against 3 patients (the size of a small real study). Prints markdown tables.
"""

from __future__ import annotations

import sys

import numpy as np

from diffusionct.io.manifest import Manifest
from diffusionct.kernels.transfer import estimate_transfer

FREQUENCIES = np.array([0.1, 0.2, 0.3, 0.4])
GAPS = (("SIM_B30F", "SIM_B50F"), ("SIM_B30F", "SIM_B70F"), ("SIM_B10F", "SIM_B70F"), ("SIM_B70F", "SIM_B30F"),
        ("SIM_FC13", "SIM_FC51"))
SPLITS = ((range(0, 6), range(6, 12)), (range(6, 12), range(0, 6)), (range(0, 12, 2), range(1, 12, 2)), (range(12), range(12)))
SMALL_SPLITS = 40


class Sets:
    """The 1 mm series of a simulated training manifest by kernel and case number, read once."""

    def __init__(self, manifest: Manifest):
        self.manifest, self.cache = manifest, {}

    def volumes(self, kernel: str, cases) -> list[tuple[np.ndarray, float]]:
        out = []
        for series in self.manifest.select(kernel):
            if "/1mm/" in series.path and any(f"case_{c:03d}" in series.path for c in cases):
                if series.path not in self.cache:
                    volume = self.manifest.read_volume(series.path)
                    self.cache[series.path] = (volume.hu, volume.spacing[0])
                out.append(self.cache[series.path])
        return out


def same_scan_ratio(sets: Sets, source: str, target: str) -> np.ndarray:
    """The truth: sum of cross-spectra over sum of target power, in rings around each frequency."""
    cross_sum, power_sum = np.zeros(len(FREQUENCIES)), np.zeros(len(FREQUENCIES))
    for (a, pixel), (b, _) in zip(sets.volumes(source, range(12)), sets.volumes(target, range(12))):
        spectrum_a, spectrum_b = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
        radius = np.hypot(np.fft.fftfreq(a.shape[1], d=pixel)[:, None], np.fft.rfftfreq(a.shape[2], d=pixel)[None, :])
        cross = (spectrum_a * np.conj(spectrum_b)).real.sum(0)
        power = (np.abs(spectrum_b) ** 2).sum(0)
        for i, frequency in enumerate(FREQUENCIES):
            ring = np.abs(radius - frequency) < 0.02
            cross_sum[i] += cross[ring].sum()
            power_sum[i] += power[ring].sum()
    return cross_sum / power_sum


def main(manifest_path: str) -> None:
    sets = Sets(Manifest.read(manifest_path))
    permutations = np.random.default_rng(0)
    small = [tuple(np.split(permutations.permutation(12)[:6], 2)) for _ in range(SMALL_SPLITS)]
    print("| gap | truth (same scans) | source 0-5, target 6-11 | source 6-11, target 0-5 | even vs odd cases | both sets all 12 cases |")
    print("|---|---|---|---|---|---|")
    errors = {}
    for source, target in GAPS:
        truth = same_scan_ratio(sets, source, target)
        cells = [estimate_transfer(sets.volumes(source, s), sets.volumes(target, t)).gain(FREQUENCIES) for s, t in SPLITS]
        name = f"{source[4:].lower()} -> {target[4:].lower()}"
        print(f"| {name} | " + " | ".join(" ".join(f"{x:.2f}" for x in c) for c in [truth, *cells]) + " |")
        small_gains = [estimate_transfer(sets.volumes(source, s), sets.volumes(target, t)).gain(FREQUENCIES) for s, t in small]
        errors[name] = [np.mean([np.abs(np.log(g / truth)).mean() for g in gains]) for gains in (cells[:3], small_gains)]
    print("\n| gap | mean abs log error, 6 vs 6 (three splits) | 3 vs 3 (40 random splits) |\n|---|---|---|")
    for name, (six, three) in errors.items():
        print(f"| {name} | {six:.3f} | {three:.3f} |")
    print(f"| mean | {np.mean([e[0] for e in errors.values()]):.3f} | {np.mean([e[1] for e in errors.values()]):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/data/train-measured-wide")
