"""The one reader of training and test sets: which series exist, of which kernel and manufacturer, which
are same-scan pairs, and where their tumour masks are.

Three forms are read, all with paths relative to the file (or absolute):

- ``manifest.json`` written by ``diffusionct scan -o x.json`` or ``diffusionct simulate``;
- the series CSV of ``diffusionct scan -o x.csv`` (its pairs in ``x.pairs.csv`` beside it);
- a CSV written by hand for images that carry no kernel in their header (NIfTI, MHA): columns ``path``,
  ``kernel`` and ``manufacturer``, optionally ``case`` (which images are of one patient; default: the
  path) and ``mask`` (a tumour label map). Rows are unpaired; a DICOM folder may be named too.

A training or test set is then chosen by (kernel, manufacturer), not only by same-scan pairs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.names import KernelSet, kernel_family
from diffusionct.io.files import csv_text, read_json, write_text_atomic
from diffusionct.io.image import read_volume
from diffusionct.io.volume import Volume

REQUIRED_CSV_COLUMNS = ("path", "kernel")
SCAN_CSV_COLUMNS = ("series_uid", "study_uid", "kernel", "path")


@dataclass(frozen=True)
class SeriesEntry:
    """One image series of a set (a DICOM folder or an image file)."""

    path: str
    kernel: str
    manufacturer: str = ""
    case: str = ""  # the study (or patient) it belongs to: validation splits and pairs never cross cases
    modality: str = "CT"


def gap_slug(source_kernel: str, target_kernel: str) -> str:
    """A kernel gap's name in file and folder names (a report of several gaps keeps each gap's tables under it)."""
    return f"{source_kernel}-{target_kernel}".lower()


@dataclass
class Manifest:
    """A set of series, their same-scan pairs ``(path_a, kernel_a, path_b, kernel_b)`` and tumour masks."""

    file: Path
    series: list[SeriesEntry]
    pairs: list[tuple[str, str, str, str]] = field(default_factory=list)
    masks: dict[str, str] = field(default_factory=dict)  # series path -> label-map path

    @property
    def root(self) -> Path:
        return self.file.parent

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """Read a manifest JSON, a scan CSV or an image CSV (a folder: its ``manifest.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        if not path.is_file():
            raise DiffusionCTError(f"{path}: manifest not found; make one with `diffusionct scan DIR -o manifest.json`, "
                                   "`diffusionct simulate`, or write a CSV with columns path,kernel,manufacturer")
        if path.suffix.lower() == ".csv":
            return cls._read_csv(path)
        return cls._read_json(path)

    @classmethod
    def _read_json(cls, path: Path) -> "Manifest":
        data = read_json(path, "manifest")
        if not isinstance(data, dict) or not isinstance(data.get("series"), list):
            raise DiffusionCTError(f"{path}: no 'series' list; not a diffusionct manifest")
        try:
            series = [SeriesEntry(s["path"], s.get("kernel") or "", s.get("manufacturer") or "",
                                  s.get("study_uid") or s["path"], s.get("modality") or "CT") for s in data["series"]]
            pairs = [(p["path_a"], p["kernel_a"], p["path_b"], p["kernel_b"]) for p in data.get("pairs", [])]
        except (KeyError, TypeError) as exc:
            raise DiffusionCTError(f"{path}: a series or pair lacks {exc}; the manifest is damaged, re-run scan/simulate") from None
        return cls(path, series, pairs, dict(data.get("masks", {})))

    @classmethod
    def _read_csv(cls, path: Path) -> "Manifest":
        try:
            with open(path, newline="", encoding="utf-8") as stream:
                rows = list(csv.DictReader(stream))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DiffusionCTError(f"{path}: not a readable CSV ({exc})") from None
        columns = set(rows[0]) if rows else set()
        missing = [c for c in REQUIRED_CSV_COLUMNS if c not in columns]
        if not rows or missing:
            raise DiffusionCTError(f"{path}: a set CSV needs a header with the columns path,kernel[,manufacturer,case,mask] "
                                   f"and one row per image" + (f" (missing: {', '.join(missing)})" if rows else " (no rows)"))
        series, masks = [], {}
        for number, row in enumerate(rows, start=2):
            if not (row.get("path") or "").strip() or not (row.get("kernel") or "").strip():
                raise DiffusionCTError(f"{path}, line {number}: empty path or kernel")
            entry_path = row["path"].strip()
            series.append(SeriesEntry(entry_path, row["kernel"].strip(), (row.get("manufacturer") or "").strip(),
                                      (row.get("case") or row.get("study_uid") or "").strip() or entry_path,
                                      (row.get("modality") or "CT").strip()))
            if (row.get("mask") or "").strip():
                masks[entry_path] = row["mask"].strip()
        pairs = []
        pairs_file = path.with_suffix(".pairs.csv")
        if set(SCAN_CSV_COLUMNS) <= columns and pairs_file.is_file():  # `diffusionct scan -o x.csv` wrote both
            with open(pairs_file, newline="", encoding="utf-8") as stream:
                pairs = [(p["path_a"], p["kernel_a"], p["path_b"], p["kernel_b"]) for p in csv.DictReader(stream)]
        return cls(path, series, pairs, masks)

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def read_volume(self, path: str) -> Volume:
        """A series of the set as a Volume (DICOM folder, NIfTI, NRRD or MHA)."""
        return read_volume(self.resolve(path))

    def mask_of(self, path: str) -> str | None:
        return self.masks.get(path)

    def oriented_pairs(self, source_kernel: str, target_kernel: str) -> list[tuple[str, str]]:
        """Same-scan pairs as ``(source path, target path)``, whichever way round the manifest lists them; kernels match by
        family (:func:`kernel_family`), as everywhere else."""
        out = []
        for path_a, kernel_a, path_b, kernel_b in self.pairs:
            families = kernel_family(kernel_a), kernel_family(kernel_b)
            if families == (kernel_family(source_kernel), kernel_family(target_kernel)):
                out.append((path_a, path_b))
            elif families == (kernel_family(target_kernel), kernel_family(source_kernel)):
                out.append((path_b, path_a))
        return out

    def select(self, kernel_set: KernelSet | str) -> list[SeriesEntry]:
        """The CT series of one kernel (of one manufacturer)."""
        wanted = KernelSet.parse(kernel_set) if isinstance(kernel_set, str) else kernel_set
        return [s for s in self.series if s.modality == "CT" and wanted.matches(s)]

    def kernels(self) -> list[str]:
        """Every (manufacturer:)kernel of the set, to say what there is when a selection finds nothing."""
        return sorted({str(KernelSet(s.kernel, s.manufacturer)) for s in self.series if s.modality == "CT"})

    def cases(self) -> list[str]:
        """Every case (study) of the set, sorted: validation splits are drawn from this list."""
        return sorted({s.case for s in self.series})

    def case_of(self, path: str) -> str:
        return next((s.case for s in self.series if s.path == path), path)


def write_set_csv(path: str | Path, entries: list[SeriesEntry], masks: dict[str, str] | None = None) -> Path:
    """Write a set CSV (path, kernel, manufacturer, case, mask) that :meth:`Manifest.read` reads back."""
    write_text_atomic(Path(path), csv_text(["path", "kernel", "manufacturer", "case", "mask"],
                                           ([e.path, e.kernel, e.manufacturer, e.case, (masks or {}).get(e.path, "")]
                                            for e in entries)))
    return Path(path)

