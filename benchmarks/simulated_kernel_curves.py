"""Do the simulator's measured-profile kernels behave like the real scanners, curve by curve?

Simulates random chests with the shipped Siemens profiles (B10f, B30f, B50f, B70f, at 0.693 mm like the real
calibration scan) and Canon profiles (FC13, FC51, at 0.683 mm), measures the simulated series with the shared
``../shared/tools/nps_curves.py`` procedure (its own code, imported), and compares each kernel's transfer to the
reference kernel with the real one (Siemens: ``../shared/calibration``; Canon: measured on the shared pairs), bin by
bin from 0.05 to 0.70 cycles/mm. The bar: within 10 % at every bin.

    .venv/bin/python benchmarks/simulated_kernel_curves.py [--cases 3] [--slices 4] [--mas 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from diffusionct.io.dicom import read_slice_stack
from diffusionct.io.manifest import Manifest
from diffusionct.simulate.scanner import ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BAND = (0.05, 0.70)


def shared_curves():
    sys.path.insert(0, str(SHARED / "tools"))
    import nps_curves  # noqa: PLC0415 - the shared, fixed procedure

    return nps_curves.curves


def simulate(kernels: list[str], pixel_mm: float, args, out: Path) -> dict[str, np.ndarray]:
    config = SimulationConfig(cases=args.cases, kernels=kernels, thicknesses_mm=[1.0], slices=args.slices, seed=args.seed,
                              scanner=replace(ScannerSettings(), pixel_mm=pixel_mm, mas=args.mas))
    manifest = Manifest.read(Simulator(config).run_phantoms(out))
    volumes = {}
    for kernel in kernels:
        series = [s for s in manifest.series if s.path.endswith(f"sim_{kernel}")]
        volumes[kernel] = np.concatenate([read_slice_stack(manifest.resolve(s.path))[0] for s in series]).astype(np.float64)
    return volumes


def real_canon(curves) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    pairs = SHARED / "data" / "canon-phantom-pairs"
    stacks = {k: np.concatenate([read_slice_stack(pairs / r / k)[0] for r in ("phantom1", "phantom2")]).astype(np.float64)
              for k in ("FC13", "FC51")}
    freq, nps, _ = curves([stacks["FC13"], stacks["FC51"]], 0.683)
    return freq, {"FC51": np.sqrt(nps[1] / nps[0])}


def compare(name: str, freq: np.ndarray, simulated: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    band = (freq >= BAND[0]) & (freq <= BAND[1])
    for kernel, curve in real.items():
        error = simulated[kernel] / curve - 1
        worst = int(np.argmax(np.abs(error) * band))
        rows.append({"set": name, "kernel": kernel, "frequencies": freq.round(4).tolist(), "real": curve.round(4).tolist(),
                     "simulated": simulated[kernel].round(4).tolist(), "max_abs_error": float(np.abs(error[band]).max()),
                     "worst_frequency": float(freq[worst])})
        print(f"{name}: {kernel}  max |sim / real - 1| over {BAND[0]}-{BAND[1]} c/mm = {rows[-1]['max_abs_error']:.3f} "
              f"(at {freq[worst]:.3f})")
        print("   f      " + " ".join(f"{f:6.3f}" for f in freq[band]))
        print("   real   " + " ".join(f"{v:6.2f}" for v in curve[band]))
        print("   sim    " + " ".join(f"{v:6.2f}" for v in simulated[kernel][band]))
    return rows


def spectrum_shape(freq: np.ndarray, simulated: np.ndarray, real: np.ndarray) -> dict:
    """The reference kernel's own noise spectrum, simulated against real, each over its median in 0.2-0.65 cycles/mm
    (the dose sets the level, the kernel and the scanner the shape); below 0.2 the chests' anatomy differs."""
    band = (freq >= 0.2) & (freq <= 0.65)
    ratio = (simulated / real) / np.median(simulated[band] / real[band])
    print(f"Siemens B30f noise spectrum, simulated / real over 0.2-0.65 c/mm: {ratio[band].min():.2f} .. {ratio[band].max():.2f}")
    print("   f      " + " ".join(f"{f:6.3f}" for f in freq[band]))
    print("   ratio  " + " ".join(f"{v:6.2f}" for v in ratio[band]))
    return {"set": "Siemens", "kernel": "B30f noise spectrum (shape)", "frequencies": freq.round(4).tolist(),
            "simulated_over_real": ratio.round(4).tolist(), "max_abs_error": float(np.abs(ratio[band] - 1).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--mas", type=float, default=30.0, help="dose (the real chest's B30f noise is 27.8 HU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    curves = shared_curves()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        siemens = simulate(["B30f", "B10f", "B50f", "B70f"], 0.69336, args, Path(tmp) / "siemens")
        freq, nps, count = curves(list(siemens.values()), 0.69336)
        print(f"Siemens: {count} ROIs; simulated B30f noise SD {np.sqrt(np.trapezoid(nps[0], freq)):.1f} (rough)")
        real = json.loads((SHARED / "calibration" / "siemens-chest-b10f-b70f.json").read_text())
        sim = {k: np.sqrt(n / nps[0]) for k, n in zip(list(siemens)[1:], nps[1:])}
        rows += compare("Siemens", freq, sim, {k: np.asarray(v) for k, v in real["transfer_vs_reference"].items()})
        rows.append(spectrum_shape(freq, nps[0], np.asarray(real["nps_hu2_mm2"][real["reference"]], float)))
        canon = simulate(["FC13", "FC51"], 0.683, args, Path(tmp) / "canon")
        freq, nps, count = curves([canon["FC13"], canon["FC51"]], 0.683)
        real_freq, real_curves = real_canon(curves)
        rows += compare("Canon", freq, {"FC51": np.sqrt(nps[1] / nps[0])}, real_curves)
    if args.json:
        args.json.write_text(json.dumps({"mas": args.mas, "cases": args.cases, "slices": args.slices, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
