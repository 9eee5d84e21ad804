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
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import read_json, write_text_atomic
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


@dataclass(frozen=True)
class KernelSet:
    """A kernel of a manufacturer, as a user names it: ``KERNEL`` or ``MANUFACTURER:KERNEL``
    (case-insensitive; the manufacturer matches by its beginning, e.g. ``GE:STANDARD``)."""

    kernel: str
    manufacturer: str = ""

    @classmethod
    def parse(cls, text: str) -> "KernelSet":
        manufacturer, _, kernel = text.rpartition(":")
        if not kernel.strip():
            raise DiffusionCTError(f"'{text}' names no kernel; write KERNEL or MANUFACTURER:KERNEL, e.g. GE:STANDARD")
        return cls(kernel.strip(), manufacturer.strip())

    @classmethod
    def parse_list(cls, text: str) -> list["KernelSet"]:
        """Several sets separated by commas (``GE:SOFT,GE:LUNG``: a many-to-one model's sources)."""
        return [cls.parse(part) for part in text.split(",") if part.strip()]

    def matches(self, entry: SeriesEntry) -> bool:
        return (entry.kernel.upper() == self.kernel.upper()
                and entry.manufacturer.upper().startswith(self.manufacturer.upper()))

    def __str__(self) -> str:
        return f"{self.manufacturer}:{self.kernel}" if self.manufacturer else self.kernel


def kernel_family(name: str) -> str:
    """A kernel's name as a user means it, for matching a series to a model: case-insensitive, the first value
    of a multi-valued ConvolutionKernel (``B30f\\3``), without a manufacturer (``GE:SOFT``), the simulator's
    ``SIM_`` prefix (its kernels are calibrated to Siemens' B10f-B70f) and Siemens' one-letter variant suffix
    (``B30f``, ``Br40d``): ``B30f``, ``B30`` and ``SIM_B30`` are one family."""
    kernel = name.split("\\")[0].rpartition(":")[2].strip().upper()
    kernel = kernel.removeprefix("SIM_")
    match = re.fullmatch(r"([A-Z]{1,3}\d{2})[A-Z]", kernel)
    return match.group(1) if match else kernel


def kernel_among(kernel: str, kernels: Iterable[str]) -> bool:
    """Whether ``kernel`` is of the family of one of ``kernels`` (a model's source kernels)."""
    return any(kernel_family(kernel) == kernel_family(k) for k in kernels)


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
        """Same-scan pairs as ``(source path, target path)``, whichever way round the manifest lists them."""
        out = []
        for path_a, kernel_a, path_b, kernel_b in self.pairs:
            if (kernel_a, kernel_b) == (source_kernel, target_kernel):
                out.append((path_a, path_b))
            elif (kernel_a, kernel_b) == (target_kernel, source_kernel):
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
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "kernel", "manufacturer", "case", "mask"])
    for entry in entries:
        writer.writerow([entry.path, entry.kernel, entry.manufacturer, entry.case, (masks or {}).get(entry.path, "")])
    write_text_atomic(Path(path), buffer.getvalue())
    return Path(path)

