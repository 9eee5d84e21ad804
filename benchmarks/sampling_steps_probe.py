"""RMSE against the target of a few test slices standardized at several sampling steps: does a model's sampler
converge (used for the paper mode in docs/history/results-analytic-library.md)?

    .venv/bin/python benchmarks/sampling_steps_probe.py MODEL TEST_MANIFEST SOURCE_KERNEL TARGET_KERNEL [--steps 5,25,100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from diffusionct.io.manifest import Manifest
from diffusionct.methods.registry import load_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("source_kernel")
    parser.add_argument("target_kernel")
    parser.add_argument("--steps", default="5,25,100")
    parser.add_argument("--slices", default="4,6", help="slice range of the first test pair")
    args = parser.parse_args()
    manifest = Manifest.read(args.manifest)
    path_a, path_b = manifest.oriented_pairs(args.source_kernel, args.target_kernel)[0]
    first, last = (int(v) for v in args.slices.split(","))
    source = manifest.read_volume(path_a)
    a, b = source.hu[first:last], manifest.read_volume(path_b).hu[first:last]
    body = b > -500
    print(f"input: RMSE {np.sqrt(((a - b)[body] ** 2).mean()):.1f} HU")
    method = load_method(args.model)
    for steps in (int(n) for n in args.steps.split(",")):
        start = time.perf_counter()
        out = method.convert_slices(a, steps=steps, seed=0, batch_size=len(a), pixel_mm=source.pixel_mm)
        print(f"{steps} steps: RMSE {np.sqrt(((out - b)[body] ** 2).mean()):.1f} HU ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
