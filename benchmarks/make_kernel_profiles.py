"""Remake the shipped kernel profiles (``src/diffusionct/kernels/data/*.json``) from the shared calibration data.

* ``siemens.json``: B10f, B30f, B50f, B70f from ``../shared/calibration/siemens-chest-b10f-b70f.json`` (noise spectra
  and transfers of one real chest scan, 0.693 mm pixels); B30f's own window from its noise spectrum, the others
  through their measured transfer to B30f; B10f's bins on the stored images' noise floor are extrapolated.
* ``canon.json``: FC13 and FC51 measured by ``diffusionct calibrate`` on both regions of
  ``../shared/data/canon-phantom-pairs`` (the real-pairs benchmark calibrates on one region only).
* ``ge.json``: SOFT and STANDARD measured by ``diffusionct calibrate --unpaired`` on the six series of
  ``../shared/data/sts-ct`` (different patients, no pairs: each series' window with its noise level removed, averaged
  over patients; the spread is over patients).

    .venv/bin/python benchmarks/make_kernel_profiles.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffusionct.io.files import write_text_atomic
from diffusionct.kernels.calibrate import calibrate_paired, calibrate_unpaired
from diffusionct.kernels.measure import PairedMeasurement, profiles_from_measurement
from diffusionct.kernels.profiles import SHIPPED, profiles_document

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SIEMENS = SHARED / "calibration" / "siemens-chest-b10f-b70f.json"
CANON = SHARED / "data" / "canon-phantom-pairs"
GE = SHARED / "data" / "sts-ct"


def siemens() -> list:
    data = json.loads(SIEMENS.read_text())
    reference = data["reference"]
    nps = {k: np.asarray(v, float) for k, v in data["nps_hu2_mm2"].items()}
    transfer = {k: np.asarray(v, float) for k, v in data["transfer_vs_reference"].items()}
    measurement = PairedMeasurement(
        pixel_mm=float(data["pixel_mm"]), frequencies=np.asarray(data["frequency_cycles_per_mm"], float), reference=reference,
        nps={reference: nps[reference], **{k: nps[k] for k in transfer}}, transfer=transfer,
        spread={k: np.zeros(len(v)) for k, v in transfer.items()}, rois=int(data["rois"]))
    provenance = ("real Siemens chest reconstructions of one acquisition (1 mm slices), noise spectra by "
                  "shared/tools/nps_curves.py (shared/calibration/siemens-chest-b10f-b70f.json)")
    profiles = profiles_from_measurement(measurement, "Siemens", provenance)
    return [_with_alias(p) for p in profiles]


def _with_alias(profile):
    from dataclasses import replace

    return replace(profile, aliases=(profile.name[:-1],) if profile.name[-1].isalpha() else ())


def main() -> None:
    SHIPPED.mkdir(exist_ok=True)
    write_text_atomic(SHIPPED / "siemens.json", profiles_document(siemens()) + "\n")
    canon = calibrate_paired([CANON], reference="FC13", vendor="Canon", anchor_on_known=False)  # not on itself
    write_text_atomic(SHIPPED / "canon.json", profiles_document(canon.profiles) + "\n")
    ge = calibrate_unpaired([GE], vendor="GE")
    write_text_atomic(SHIPPED / "ge.json", profiles_document(ge.profiles, pairing="unpaired") + "\n")
    for path in sorted(SHIPPED.glob("*.json")):
        print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
