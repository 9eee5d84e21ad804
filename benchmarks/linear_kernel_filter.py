"""How much of a kernel change a linear filter explains, and how much the pixel size matters (docs/history/results-analytic-library.md,
"Pixel size"). A k x k filter of the residual B - A is fitted by least squares on training pairs (all of them, or
those of some pixel sizes) and applied to the test pairs; the body RMSE against B is printed.

Two reconstructions of one sinogram differ by a filter in cycles/mm, so at another pixel size the filter in
pixels is another one: a filter fitted across pixel sizes is their average.

    .venv/bin/python benchmarks/linear_kernel_filter.py TRAIN_MANIFEST TEST_MANIFEST b30 b50 [--size 25]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.ndimage import correlate

from diffusionct.io.manifest import Manifest

SAMPLES_PER_SERIES = 4000
MARGIN = 40  # pixels from the slice edge (no air-only corners)


def _design(a: np.ndarray, b: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of k x k neighbourhoods of A at random pixels, and the residual B - A there."""
    r = size // 2
    z = rng.integers(0, a.shape[0], SAMPLES_PER_SERIES)
    y = rng.integers(r + MARGIN, a.shape[1] - r - MARGIN, SAMPLES_PER_SERIES)
    x = rng.integers(r + MARGIN, a.shape[2] - r - MARGIN, SAMPLES_PER_SERIES)
    rows = np.stack([a[z, y + dy, x + dx] for dy in range(-r, r + 1) for dx in range(-r, r + 1)], 1)
    return rows, b[z, y, x] - a[z, y, x]


def _pairs(manifest: Manifest, source: str, target: str):
    for path_a, path_b in manifest.oriented_pairs(source, target):
        a, b = manifest.read_volume(path_a), manifest.read_volume(path_b)
        yield a.pixel_mm, a.hu.astype(np.float64), b.hu.astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train_manifest")
    parser.add_argument("test_manifest")
    parser.add_argument("source_kernel")
    parser.add_argument("target_kernel")
    parser.add_argument("--size", type=int, default=25, help="filter size in pixels (odd)")
    args = parser.parse_args()
    source, target = (f"SIM_{k.upper()}" if "_" not in k and ":" not in k else k
                      for k in (args.source_kernel, args.target_kernel))
    rng = np.random.default_rng(0)
    train = [(pixel, *_design(a, b, args.size, rng)) for pixel, a, b in _pairs(Manifest.read(args.train_manifest), source, target)]
    test = list(_pairs(Manifest.read(args.test_manifest), source, target))
    test_pixels = sorted({round(p, 3) for p, _, _ in test})
    print(f"{source} -> {target}; test pixel sizes {test_pixels} mm; filter {args.size} x {args.size}")
    inputs = [np.sqrt(np.mean((a - b)[b > -900] ** 2)) for _, a, b in test]
    print(f"{'unchanged input':44s}                 test RMSE {np.mean(inputs):5.2f} HU")
    low = min(test_pixels) - 0.06
    high = max(test_pixels) + 0.06
    for name, keep in (("all training pairs", lambda p: True),
                       (f"pixel size {low:.2f}-{high:.2f} mm (like the test)", lambda p: low <= p <= high),
                       (f"pixel size outside {low:.2f}-{high:.2f} mm", lambda p: not low <= p <= high)):
        chosen = [(rows, y) for pixel, rows, y in train if keep(pixel)]
        if not chosen:
            continue
        weights = np.linalg.lstsq(np.concatenate([r for r, _ in chosen]), np.concatenate([y for _, y in chosen]), rcond=None)[0]
        kernel = weights.reshape(args.size, args.size)
        errors = [np.sqrt(np.mean((a + np.stack([correlate(s, kernel, mode="nearest") for s in a]) - b)[b > -900] ** 2))
                  for _, a, b in test]
        print(f"{name:44s} ({len(chosen):2d} series) test RMSE {np.mean(errors):5.2f} HU")


if __name__ == "__main__":
    main()
