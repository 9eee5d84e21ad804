"""A test set of real anatomy and real tumours: the six STS series of ../shared/data (GE, 0.98 mm pixels, 3.27 mm
slices, the sarcoma contour of each RTSTRUCT), each re-simulated at the simulator's kernels (docs/simulator.md,
"Re-simulation of a real CT").

The models were trained on random chest phantoms at 0.6-0.9 mm pixels; this set shows them real anatomy, real
tumour shapes and a pixel size outside that range, at kernels whose pairs are exact (one sinogram per case).

    .venv/bin/python benchmarks/real_anatomy_test_set.py DATA/sts-resim
    .venv/bin/diffusionct evaluate --data DATA/sts-resim -o REPORT --model src/diffusionct/data/models/sim-b30-b70
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.io.image import read_mask, read_volume
from diffusionct.simulate.simulator import SimulationConfig, Simulator

STS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts-ct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sts", type=Path, default=STS, help="the STS data folder (case/dicom/image, case/dicom/mask/RS.dcm)")
    parser.add_argument("--kernels", default="b10,b30,b50,b70")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    cases = sorted(p for p in args.sts.glob("STS_*") if (p / "dicom" / "mask" / "RS.dcm").is_file())
    if not cases:
        raise SystemExit(f"{args.sts}: no STS_*/dicom/image with dicom/mask/RS.dcm")
    sources = []
    for case in cases:
        volume = read_volume(case / "dicom" / "image")
        sources.append((volume, read_mask(case / "dicom" / "mask" / "RS.dcm", volume, None)))
    thickness = round(float(sources[0][0].spacing[2]), 2)  # one source slice per simulated slice
    config = SimulationConfig(kernels=args.kernels.split(","), thicknesses_mm=[thickness], seed=args.seed)
    print("manifest:", Simulator(config).run_from_cts(sources, args.out))


if __name__ == "__main__":
    main()
