"""Unpaired training sets from a simulated (paired) manifest: the pairs hidden, as in a real multi-patient study.

    .venv/bin/python benchmarks/unpaired_sets.py DATA/train SIM_B30 SIM_B70 DATA/unpaired-b30-b70.csv

The source kernel's series are taken from the first half of the cases and the target kernel's from the other
half, so no image of the source set has its twin in the target set. Train on the CSV with
``--set data.pairing=unpaired`` and evaluate on the paired test set as usual: the paired and unpaired methods are
then measured on the same test pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffusionct.io.manifest import Manifest, SeriesEntry, write_set_csv


def unpaired_sets(manifest_path: Path, source_kernel: str, target_kernel: str, out: Path) -> Path:
    manifest = Manifest.read(manifest_path)
    cases = sorted({s.case for s in manifest.series})
    first_half = set(cases[: len(cases) // 2])
    entries = [SeriesEntry(str(manifest.resolve(s.path)), s.kernel, s.manufacturer, s.case)
               for s in manifest.series
               if (s.kernel == source_kernel and s.case in first_half) or (s.kernel == target_kernel and s.case not in first_half)]
    return write_set_csv(out, entries)


if __name__ == "__main__":
    manifest, source, target, out = sys.argv[1:5]
    print(unpaired_sets(Path(manifest), source, target, Path(out)))
