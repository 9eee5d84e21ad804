"""The predictor's linear kernel filter alone (``RadialKernelFilter.fit_``, as at the start of training): fitted on
whole training pairs, applied to the test pairs; prints its gain beside the simulator's nominal kernel ratio and
the body RMSE against the target (docs/results.md, sixth run: the ridge of the fit).

    .venv/bin/python benchmarks/kernel_filter_fit.py TRAIN_MANIFEST TEST_MANIFEST b30 b70 [--slices-per-series 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffusionct.io.manifest import Manifest
from diffusionct.models.baselines import RadialKernelFilter
from diffusionct.simulate.kernels import get_kernel

FREQUENCIES = (0.175, 0.325, 0.475, 0.575, 0.675, 0.725)  # cycles/mm; the test's Nyquist is 0.71 (0.7 mm pixels)


def _slices(manifest_path: str, source: str, target: str, per_series: int):
    manifest = Manifest.read(manifest_path)
    a, b, pixel_mm = [], [], []
    for path_a, path_b in manifest.oriented_pairs(f"SIM_{source.upper()}", f"SIM_{target.upper()}"):
        volume_a, volume_b = manifest.read_volume(path_a), manifest.read_volume(path_b)
        for k in np.linspace(0, volume_a.shape[0] - 1, per_series).round().astype(int):
            a.append(volume_a.hu[k]), b.append(volume_b.hu[k]), pixel_mm.append(volume_a.pixel_mm)
    return torch.tensor(np.array(a)), torch.tensor(np.array(b)), torch.tensor(pixel_mm, dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("source", help="simulator kernel name, e.g. b30")
    parser.add_argument("target")
    parser.add_argument("--slices-per-series", type=int, default=2)
    args = parser.parse_args()
    a, b, pixel_mm = _slices(args.train, args.source, args.target, args.slices_per_series)
    test_a, test_b, test_pixel_mm = _slices(args.test, args.source, args.target, 3)
    kernel_filter = RadialKernelFilter()
    kernel_filter.fit_(a, b, pixel_mm)
    f = np.array(FREQUENCIES)
    nominal = get_kernel(args.target).window(f) / get_kernel(args.source).window(f)
    with torch.no_grad():
        gain = kernel_filter.gain_at(torch.tensor(f, dtype=torch.float32)).numpy()
        out = kernel_filter(test_a[:, None].float(), test_pixel_mm)[:, 0]
    body = test_b > -500
    print(f"{args.source} -> {args.target}: fitted on {len(a)} training slices, tested on {len(test_a)}")
    print("cycles/mm        " + " ".join(f"{v:6.3f}" for v in f))
    print("nominal ratio    " + " ".join(f"{v:6.2f}" for v in nominal))
    print("fitted gain      " + " ".join(f"{v:6.2f}" for v in gain))
    rmse = float(((out - test_b)[body] ** 2).mean().sqrt())
    print(f"test body RMSE: filter {rmse:.2f} HU, input {float(((test_a - test_b)[body] ** 2).mean().sqrt()):.2f} HU")


if __name__ == "__main__":
    main()
