"""Folder scans: group DICOM files into series, describe them and find same-scan kernel pairs."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffusionct.errors import InputError
from diffusionct.io.dicom import folder_series, header_numbers, kernel_name, reconstructions, slice_size
from diffusionct.io.files import write_text_atomic
from diffusionct.io.volume import in_plane_pixel_mm

log = logging.getLogger(__name__)

POSITION_DECIMALS = 2  # slice positions are compared to 0.01 mm


@dataclass
class SeriesInfo:
    """One image series found by a scan."""

    series_uid: str
    path: str
    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    modality: str
    manufacturer: str
    model: str
    kernel: str
    slice_thickness: float | None
    slices: int
    rows: int
    columns: int
    description: str
    positions: list[float] = field(default_factory=list, repr=False)
    pixel_mm: float | None = None  # in-plane pixel size (mean of row and column spacing)
    acquisition: str = ""  # AcquisitionDate + AcquisitionTime: one raw acquisition, whatever the UIDs say

    def key(self) -> tuple:
        """What two series of one scan share: study, frame of reference and slice positions."""
        return (self.study_uid, self.frame_of_reference_uid, tuple(self.positions), self.rows, self.columns)

    def acquisition_key(self) -> tuple | None:
        """What two series of one scan share when separate anonymization gave them different study and frame UIDs:
        the acquisition's date and time and the slice geometry (None without an acquisition time)."""
        if not self.acquisition:
            return None
        return (self.acquisition, tuple(self.positions), self.rows, self.columns, self.pixel_mm)


@dataclass
class SeriesPair:
    """Two reconstructions of the same scan: same study, frame of reference and slices, other kernels."""

    series_a: str
    series_b: str
    kernel_a: str
    kernel_b: str
    path_a: str
    path_b: str
    slices: int


def _series_info(uid: str, headers) -> SeriesInfo:
    ds = headers[0].dataset
    paths = sorted({str(h.path.parent) for h in headers})
    common = Path(paths[0]) if len(paths) == 1 else Path(_common_parent(paths))
    positions = []
    for h in headers:
        ipp, iop = _lenient(h, "ImagePositionPatient", 3), _lenient(h, "ImageOrientationPatient", 6)
        if ipp is not None and iop is not None:
            normal = np.cross(np.array(iop[:3]), np.array(iop[3:]))
            positions.append(round(float(np.dot(np.array(ipp), normal)), POSITION_DECIMALS))
    thickness = _lenient(headers[0], "SliceThickness", 1)
    spacing = _lenient(headers[0], "PixelSpacing", 2)
    try:
        rows, columns = slice_size(headers[0])
    except InputError as exc:
        log.warning("%s", exc)
        rows = columns = 0
    return SeriesInfo(
        series_uid=uid,
        path=str(common),
        patient_id=str(ds.get("PatientID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        modality=str(ds.get("Modality", "")),
        manufacturer=str(ds.get("Manufacturer", "")),
        model=str(ds.get("ManufacturerModelName", "")),
        kernel=kernel_name(ds),
        slice_thickness=thickness[0] if thickness else None,
        slices=len(headers),
        rows=rows,
        columns=columns,
        description=str(ds.get("SeriesDescription", "")),
        positions=sorted(positions),
        pixel_mm=in_plane_pixel_mm(spacing) if spacing else None,
        acquisition=_acquisition(ds),
    )


def _acquisition(ds) -> str:
    time = str(ds.get("AcquisitionTime", "") or "").strip()
    return f"{str(ds.get('AcquisitionDate', '') or '').strip()} {time}".strip() if time else ""


def _lenient(header, keyword: str, count: int) -> list[float] | None:
    """A header's numbers for listing: a malformed value is warned about and left out (reading the series
    refuses it with the same message)."""
    try:
        return header_numbers(header.dataset, header.path, keyword, count)
    except InputError as exc:
        log.warning("%s", exc)
        return None


def _common_parent(paths: list[str]) -> str:
    return os.path.commonpath(paths)


def scan_folder(folder: str | Path) -> list[SeriesInfo]:
    """Every image series under ``folder``, sorted by patient, study and series description."""
    series, _ = folder_series(Path(folder))
    infos = []
    for uid, headers in series.items():
        parts = reconstructions(headers)
        if len(parts) > 1:  # listed apart; each is read from its own folder (reading refuses them mixed in one)
            log.warning("series %s holds %d reconstructions under one SeriesInstanceUID (kernels %s): listed apart",
                        uid, len(parts), ", ".join(sorted({k or "?" for k, _ in parts})))
        infos += [_series_info(uid, part) for part in parts.values()]
    return sorted(infos, key=lambda s: (s.patient_id, s.study_uid, s.kernel, s.series_uid))


def find_pairs(series: list[SeriesInfo]) -> list[SeriesPair]:
    """Pairs of CT series of one scan reconstructed with different kernels: same study, frame of reference and slices,
    or (anonymized apart, other UIDs) same acquisition date and time and the same slice geometry."""
    groups: dict[tuple, list[SeriesInfo]] = {}
    for info in series:
        if info.modality == "CT" and info.positions:
            groups.setdefault(("uids", *info.key()), []).append(info)
            if info.acquisition_key() is not None:
                groups.setdefault(("acquisition", *info.acquisition_key()), []).append(info)
    pairs, seen = [], set()
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if a.kernel != b.kernel and frozenset((a.series_uid, b.series_uid)) not in seen:
                    seen.add(frozenset((a.series_uid, b.series_uid)))
                    pairs.append(SeriesPair(a.series_uid, b.series_uid, a.kernel, b.kernel, a.path, b.path, a.slices))
    return pairs


TABLE_COLUMNS = (
    ("patient", "patient_id"), ("study", "study_uid"), ("series", "series_uid"), ("modality", "modality"),
    ("manufacturer", "manufacturer"), ("model", "model"), ("kernel", "kernel"),
    ("thickness", "slice_thickness"), ("pixel mm", "pixel_mm"), ("slices", "slices"), ("size", None),
)


def _cell(info: SeriesInfo, attribute: str | None) -> str:
    if attribute is None:
        return f"{info.rows}x{info.columns}"
    value = getattr(info, attribute)
    if isinstance(value, float):
        return f"{value:g}" if abs(value - round(value, 3)) > 1e-9 else f"{round(value, 3):g}"
    if attribute.endswith("_uid") and len(str(value)) > 18:
        return "..." + str(value)[-15:]
    return "" if value is None else str(value)


def format_table(series: list[SeriesInfo]) -> str:
    rows = [[name for name, _ in TABLE_COLUMNS]] + [[_cell(s, a) for _, a in TABLE_COLUMNS] for s in series]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def manifest_dict(series: list[SeriesInfo], pairs: list[SeriesPair]) -> dict:
    return {
        "series": [{k: v for k, v in asdict(s).items() if k != "positions"} for s in series],
        "pairs": [asdict(p) for p in pairs],
    }


def write_manifest(path: str | Path, series: list[SeriesInfo], pairs: list[SeriesPair]) -> Path:
    """Write the scan as JSON (``.json``) or as a CSV of series (``.csv``; pairs in ``*.pairs.csv``)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        pairs_path = path.with_suffix(".pairs.csv")
        # the pairs first: a series file without its pairs file would read as a scan that found none
        write_text_atomic(pairs_path, _csv([asdict(p) for p in pairs], list(SeriesPair.__dataclass_fields__)))
        try:
            write_text_atomic(path, _csv([{k: v for k, v in asdict(s).items() if k != "positions"} for s in series]))
        except BaseException:
            pairs_path.unlink(missing_ok=True)
            raise
    else:
        write_text_atomic(path, json.dumps(manifest_dict(series, pairs), indent=2))
    return path


def _csv(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames or (list(rows[0]) if rows else []))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
