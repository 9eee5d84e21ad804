"""Speed of the feature engine: 100 tumours x all default features on this machine.

    .venv/bin/python benchmarks/features_speed.py [--tumours 100] [--workers 2] [--params ibsi-c]

Tumours are the six real STS tumours (cropped, 3.27 mm slices) and simulated ones of 5-40 mm, cycled
to the requested count when the shared data is present; simulated only otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffusionct.radiomics.batch import TumourJob, extract_many
from diffusionct.radiomics.features import FeatureSettings, crop_to_mask

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts-ct"


def synthetic_tumours(count: int, seed: int = 0) -> list[TumourJob]:
    """Ellipsoidal textured tumours of 5-40 mm on a 0.7 x 0.7 x 1 mm grid."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        radius = rng.uniform(2.5, 20)
        n = int(2 * radius / 0.7) + 20
        nz = int(2 * radius) + 10
        z, y, x = np.meshgrid(np.arange(nz) - nz / 2, (np.arange(n) - n / 2) * 0.7, (np.arange(n) - n / 2) * 0.7, indexing="ij")
        mask = (x / radius) ** 2 + (y / radius) ** 2 + (z / radius) ** 2 < 1
        image = rng.normal(30, 40, size=mask.shape) + np.where(mask, 0, -800)
        jobs.append(TumourJob(f"sim{i}", image, mask, (0.7, 0.7, 1.0)))
    return jobs


def real_tumours() -> list[TumourJob]:
    from diffusionct.io import read_dicom_series
    from diffusionct.io.image import read_mask

    jobs = []
    for case in sorted(SHARED.glob("STS_*")):
        volume = read_dicom_series(case / "dicom" / "image")
        mask = read_mask(case / "dicom" / "mask" / "RS.dcm", volume, "GTV_Mass_CT")
        image, crop = crop_to_mask(volume.hu, mask, 8)
        jobs.append(TumourJob(case.name, image, crop, volume.spacing))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tumours", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--params", help="feature settings YAML or preset (default: the shipped settings)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/features.json"))
    args = parser.parse_args()
    real = real_tumours() if SHARED.is_dir() else []
    pool = real + synthetic_tumours(max(0, args.tumours - len(real)))
    jobs = [TumourJob(f"{j.key}#{i}", j.image, j.mask, j.spacing) for i, j in enumerate(pool[: args.tumours])]
    settings = FeatureSettings.load(args.params)
    start = time.perf_counter()
    features, errors = extract_many(jobs, settings, workers=args.workers, progress=False)
    elapsed = time.perf_counter() - start
    counts = sorted({len(f) for f in features.values()})
    result = {"tumours": len(jobs), "workers": args.workers, "seconds": round(elapsed, 1),
              "features_per_tumour": counts, "errors": len(errors), "real_tumours": len(real),
              "params": args.params or "shipped"}
    print(json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
