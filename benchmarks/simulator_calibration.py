"""Calibration, realism and speed of the CT simulator.

    .venv/bin/python benchmarks/simulator_calibration.py [--out benchmarks/results/simulator.json]

Prints, each beside its target (docs/simulator.md):

1. per kernel, on the simulator's own chest slices (0.69 mm pixels, 1 mm slices): noise SD ratio to b30 and
   NPS mean frequency by the fixed procedure of ../shared/tools/kernel_stats.py (the project's own
   implementation, cross-checked against the tool itself when ../shared is present), against the real Siemens
   B10f-B70f ranges; MTF50 (circular edge, exact disk sinogram); HU of soft tissue, water and air;
2. centre / periphery noise SD in a 35 cm wide water-equivalent patient (non-stationary noise, >= 1.3);
3. case-to-case spread of body area and lung volume over 30 random phantoms;
4. speed: paired 512 x 512 slices per second of the scanner and of the whole simulate command, and this
   machine's float32 matmul GFLOP/s so that timings compare across machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from diffusionct.io.image import write_nifti
from diffusionct.io.volume import Volume
from diffusionct.simulate.calibration import calibrate, centre_periphery_noise
from diffusionct.kernels.spectra import kernel_texture
from diffusionct.kernels.family import KERNELS, get_kernel
from diffusionct.simulate.phantom import random_phantom
from diffusionct.simulate.scanner import Scanner, ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator, render_slab
from diffusionct.devices import matmul_gflops  # the one machine-speed probe

# Real Siemens same-scan chest reconstructions, 0.69 mm pixels (the simulator-realism issue):
# noise SD relative to B30f, and NPS mean frequency in cycles/mm, ranges over two scans.
REAL = {
    "b10": {"noise_ratio": (0.69, 0.75), "nps_mean_frequency": (0.232, 0.234)},
    "b30": {"noise_ratio": (1.0, 1.0), "nps_mean_frequency": (0.273, 0.298)},
    "b50": {"noise_ratio": (1.87, 2.29), "nps_mean_frequency": (0.429, 0.467)},
    "b70": {"noise_ratio": (3.94, 5.00), "nps_mean_frequency": (0.544, 0.562)},
}
TOLERANCE = 0.15  # within 15 % of the real range
SHARED_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "kernel_stats.py"


def within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] * (1 - TOLERANCE) <= value <= bounds[1] * (1 + TOLERANCE)


def chest_reconstructions(cases: int = 4, slices: int = 2, pixel_mm: float = 0.69) -> dict[str, np.ndarray]:
    """Every kernel's reconstruction of the same noisy 1 mm acquisitions of random chests."""
    settings = ScannerSettings(pixel_mm=pixel_mm)
    scanner = Scanner(settings)
    kernels = list(KERNELS.values())
    images: dict[str, list[np.ndarray]] = {k.name: [] for k in kernels}
    for case in range(cases):
        hu, _, _ = render_slab(random_phantom(100 + case), settings, 1.0, slices)
        recon = scanner.scan(hu, kernels, 1.0, [np.random.default_rng([case, i]) for i in range(slices)])
        for name, volume in recon.items():
            images[name].append(volume)
    return {name: np.concatenate(parts) for name, parts in images.items()}


def shared_tool_check(images: dict[str, np.ndarray], pixel_mm: float) -> dict[str, dict] | None:
    """The same numbers from ../shared/tools/kernel_stats.py on NIfTI copies; None when the tool is absent."""
    if not SHARED_TOOL.exists():
        return None
    tmp = Path(tempfile.mkdtemp())
    try:
        paths = []
        for name in ["b30", *[k for k in images if k != "b30"]]:
            path = tmp / f"{name}.nii.gz"
            write_nifti(Volume(hu=images[name], spacing=(pixel_mm, pixel_mm, 1.0)), path)
            paths.append(str(path))
        out = subprocess.run([sys.executable, str(SHARED_TOOL), *paths], capture_output=True, text=True, check=True).stdout
    finally:
        shutil.rmtree(tmp)
    result = {}
    for line in out.splitlines():
        m = re.match(r"(\S+)\.nii\.gz\s+noise SD\s+([\d.]+) HU\s+ratio\s+([\d.]+)\s+NPS mean ([\d.]+)", line)
        if m:
            result[m.group(1)] = {"noise_sd": float(m.group(2)), "noise_ratio": float(m.group(3)),
                                  "nps_mean_frequency": float(m.group(4))}
    return result


def anatomy_spread(cases: int = 30) -> dict:
    """Body area (cm^2, centre plane) and lung volume (litres, +/- 100 mm) over random phantoms."""
    axis = np.arange(-200, 200, 2.0) + 1.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    body, lung = [], []
    for seed in range(cases):
        phantom = random_phantom(1000 + seed)
        hu, _ = phantom.render(x, y, phantom.z_centre)
        body.append(float((hu > -500).sum()) * 4 / 100)
        planes = phantom.z_centre + np.arange(-100, 101, 10.0)
        lung.append(sum(float(phantom.lung_masks(x, y, z).sum()) * 4 * 10 for z in planes) / 1e6)
    stats = {}
    for name, values in (("body_area_cm2", body), ("lung_volume_l", lung)):
        v = np.array(values)
        stats[name] = {"mean": float(v.mean()), "sd": float(v.std()), "cv": float(v.std() / v.mean()),
                       "min": float(v.min()), "max": float(v.max())}
    return stats


def speed(device: str) -> dict:
    settings = ScannerSettings()
    scanner = Scanner(settings, device=device)
    kernels = [get_kernel("b30"), get_kernel("b70")]
    slices = np.zeros((8, settings.size, settings.size)) - 1000
    slices[:, 100:400, 80:430] = 40
    scanner.scan(slices[:1], kernels, 1.0, [np.random.default_rng(0)])  # compile
    start = time.perf_counter()
    scanner.scan(slices, kernels, 1.0, [np.random.default_rng(i) for i in range(8)])
    scanner_rate = 8 / (time.perf_counter() - start)
    tmp = Path(tempfile.mkdtemp())
    try:  # the whole command: phantom rendering at 1 mm (2 planes per slice), scan, DICOM writing
        cfg = SimulationConfig(cases=1, slices=12, thicknesses_mm=[1.0], seed=0, scanner=settings)
        start = time.perf_counter()
        Simulator(cfg, device=device).run_phantoms(tmp / "sim")
        end_to_end = 12 / (time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp)
    return {"paired_slices_per_second_scanner": scanner_rate, "paired_slices_per_second_end_to_end": end_to_end}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/simulator.json"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    gflops = matmul_gflops(torch.device("cpu"))
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                                f"float32 matmul {gflops:.0f} GFLOP/s", "settings": asdict(ScannerSettings())}
    print(results["machine"])

    pixel = 0.69
    images = chest_reconstructions(pixel_mm=pixel)
    texture = kernel_texture(images["b30"], images, pixel)
    tool = shared_tool_check(images, pixel)
    mtf = calibrate(replace(ScannerSettings(), pixel_mm=pixel), body_hu=40.0, device=args.device)
    water = calibrate(replace(ScannerSettings(), pixel_mm=pixel), body_hu=0.0, device=args.device)
    results["kernels"] = {}
    print(f"kernel texture on simulated chests ({texture['b30'].n_rois} ROIs), {pixel} mm pixels, 1 mm slices; "
          f"targets: real Siemens range, +/- {TOLERANCE:.0%}")
    for name in KERNELS:
        t, real = texture[name], REAL[name]
        row = {**asdict(t), "target": real, "mtf50": mtf[name].mtf50, "soft_mean": mtf[name].uniform_mean,
               "water_mean": water[name].uniform_mean, "air_mean": mtf[name].air_mean,
               "ok": within(t.noise_ratio, real["noise_ratio"]) and within(t.nps_mean_frequency, real["nps_mean_frequency"])}
        if tool:
            row["shared_tool"] = tool.get(name)
        results["kernels"][name] = row
        check = f"  (shared tool: ratio {tool[name]['noise_ratio']:.2f}, NPS mean {tool[name]['nps_mean_frequency']:.3f})" if tool else ""
        print(f"{name}: noise {t.noise_sd:5.1f} HU ratio {t.noise_ratio:4.2f} (real {real['noise_ratio'][0]}-{real['noise_ratio'][1]})  "
              f"NPS mean {t.nps_mean_frequency:.3f} c/mm (real {real['nps_mean_frequency'][0]}-{real['nps_mean_frequency'][1]})  "
              f"MTF50 {mtf[name].mtf50:.3f} c/mm  soft {mtf[name].uniform_mean:5.1f} water {water[name].uniform_mean:4.1f} "
              f"air {mtf[name].air_mean:7.1f}  {'OK' if row['ok'] else 'OUT OF RANGE'}{check}")
    results["b70_mtf50_ok"] = mtf["b70"].mtf50 >= 0.7
    print(f"b70 MTF50 {mtf['b70'].mtf50:.3f} c/mm (target >= 0.7)")

    cp = centre_periphery_noise(replace(ScannerSettings(), pixel_mm=0.75))
    results["centre_periphery"] = cp
    print(f"35 cm patient, b30: centre noise {cp['centre_sd']:.1f} HU, periphery {cp['periphery_sd']:.1f} HU, "
          f"ratio {cp['ratio']:.2f} (target >= 1.3)")
    spread = anatomy_spread()
    results["anatomy"] = spread
    for name, v in spread.items():
        print(f"{name}: mean {v['mean']:.1f}, SD {v['sd']:.1f} (CV {v['cv']:.2f}), range {v['min']:.1f}-{v['max']:.1f}")

    results.update(speed(args.device))
    print(f"paired 512x512 slices per second: scanner {results['paired_slices_per_second_scanner']:.2f}, "
          f"end to end {results['paired_slices_per_second_end_to_end']:.2f} (target >= 1)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
