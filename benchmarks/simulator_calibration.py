"""Calibration and speed of the CT simulator at full size (512 x 512, 0.7 mm pixels).

    .venv/bin/python benchmarks/simulator_calibration.py [--out benchmarks/results/simulator.json]

Prints, per kernel: noise SD in uniform soft tissue, MTF50 (circular-edge method), NPS peak, mean HU
of soft tissue, water and air; then the speed of paired reconstruction and of the whole simulate
command per 512 x 512 slice.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from diffusionct.simulate.calibration import calibrate
from diffusionct.simulate.kernels import get_kernel
from diffusionct.simulate.scanner import Scanner, ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator.json"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = ScannerSettings()
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                     "settings": asdict(settings)}
    soft = calibrate(settings, body_hu=40.0, device=args.device)
    water = calibrate(settings, body_hu=0.0, device=args.device)
    results["kernels"] = {k: {**asdict(v), "water_mean": water[k].uniform_mean} for k, v in soft.items()}
    results["noise_ratio_sharp_smooth"] = soft["sharp"].noise_sd / soft["smooth"].noise_sd
    results["mtf50_ratio_sharp_smooth"] = soft["sharp"].mtf50 / soft["smooth"].mtf50
    for k, v in results["kernels"].items():
        print(f"{k:7s} noise {v['noise_sd']:6.1f} HU  MTF50 {v['mtf50']:.3f} c/mm  NPS peak {v['nps_peak']:.3f} c/mm  "
              f"soft {v['uniform_mean']:6.1f}  water {v['water_mean']:5.1f}  air {v['air_mean']:7.1f}")
    print(f"noise ratio sharp/smooth {results['noise_ratio_sharp_smooth']:.2f}, "
          f"MTF50 ratio {results['mtf50_ratio_sharp_smooth']:.2f}")

    # speed: one noisy acquisition reconstructed with smooth and sharp, per slice
    scanner = Scanner(settings, device=args.device)
    kernels = [get_kernel("smooth"), get_kernel("sharp")]
    slices = np.zeros((4, settings.size, settings.size)) - 1000
    slices[:, 100:400, 80:430] = 40
    scanner.scan(slices[:1], kernels, 1.0, [np.random.default_rng(0)])  # compile
    start = time.perf_counter()
    scanner.scan(slices, kernels, 1.0, [np.random.default_rng(i) for i in range(4)])
    per_pair = (time.perf_counter() - start) / 4
    results["paired_slices_per_second_scanner"] = 1 / per_pair
    # the whole command: phantom rendering at 1 mm (2 planes per slice), scan, DICOM writing
    tmp = Path(tempfile.mkdtemp())
    try:
        cfg = SimulationConfig(cases=1, slices=8, thicknesses_mm=[1.0], seed=0, scanner=settings)
        start = time.perf_counter()
        Simulator(cfg, device=args.device).run_phantoms(tmp / "sim")
        results["paired_slices_per_second_end_to_end"] = 8 / (time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp)
    print(f"paired 512x512 slices per second: scanner {results['paired_slices_per_second_scanner']:.2f}, "
          f"end to end {results['paired_slices_per_second_end_to_end']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
