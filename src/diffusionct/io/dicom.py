"""DICOM CT series: reading a folder into a :class:`Volume` (writing one back: ``dicom_writer.py``).

Slices are ordered by their ImagePositionPatient projected on the slice normal (never by file name or
InstanceNumber), converted to HU through RescaleSlope/RescaleIntercept, and checked for the things
that make a stack of slices not a volume: mixed sizes, gantry tilt, uneven spacing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from diffusionct.errors import InputError
from diffusionct.io.codestream import codestream_problem
from diffusionct.io.files import iter_files
from diffusionct.io.volume import Volume, in_plane_pixel_mm

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Image SOP classes a CT reader accepts (CT and Enhanced CT are the CT ones; others are refused by modality).
NON_IMAGE_MODALITIES = {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SEG", "SR", "PR", "KO", "REG"}
# Files that sit beside DICOM series and are skipped without a warning.
KNOWN_NON_DICOM_SUFFIXES = (".md", ".txt", ".csv", ".json", ".yaml", ".yml", ".nii", ".nii.gz", ".nrrd", ".mha",
                            ".mhd", ".raw", ".png", ".jpg", ".pdf", ".html", ".log", ".xml", ".zip")
SPACING_TOLERANCE_MM = 0.01  # allowed deviation of slice gaps from their median, plus 1 %
TILT_TOLERANCE = 1e-3  # cosine tolerance between the slice normal and the slice-to-slice step


@dataclass(frozen=True)
class SliceHeader:
    """A DICOM file's header, read without pixel data."""

    path: Path
    dataset: Dataset

    @property
    def series_uid(self) -> str:
        return str(self.dataset.get("SeriesInstanceUID", ""))

    @property
    def modality(self) -> str:
        return str(self.dataset.get("Modality", ""))

    @property
    def has_pixels(self) -> bool:
        return "Rows" in self.dataset and "Columns" in self.dataset


class CorruptDicomError(InputError):
    """A file that starts as DICOM (the DICM preamble) but cannot be read: truncated or damaged."""


def read_header(path: Path) -> Dataset:
    """Read a DICOM header (no pixel data); raise :class:`InputError` when the file is not DICOM and
    :class:`CorruptDicomError` when it is DICOM but damaged or unreadable."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        raise InputError(path, "not a DICOM file (no DICM preamble)") from None
    except PermissionError:
        raise CorruptDicomError(path, "cannot be read (permission denied)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise CorruptDicomError(path, f"corrupt or truncated DICOM file ({exc.__class__.__name__}: {exc})") from None


def collect_headers(paths: Iterable[Path], *, warn_skipped: bool = True, strict: bool = False) -> list[SliceHeader]:
    """Headers of every readable DICOM file; other files are skipped with a warning. With ``strict`` a
    damaged DICOM file is an error (reading a series: a skipped slice would show as a gap elsewhere)."""
    headers = []
    for path in paths:
        if path.name.lower().endswith(KNOWN_NON_DICOM_SUFFIXES):
            log.debug("not DICOM by name, skipped: %s", path)
            continue
        try:
            header = SliceHeader(path, read_header(path))
            if strict:
                _check_complete(header)
            headers.append(header)
        except InputError as exc:
            if strict and isinstance(exc, CorruptDicomError):
                raise
            if warn_skipped:
                log.warning("skipped %s", exc)
    return headers


def _check_complete(header: SliceHeader) -> None:
    """pydicom reads a truncated file up to where it stops: a header without the attributes every object
    (or every CT image) has is a damaged file, not a file to skip."""
    ds = header.dataset
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"):
        if keyword not in ds:
            raise CorruptDicomError(header.path, f"incomplete DICOM header (no {keyword}): the file is truncated or damaged")
        if not pydicom.uid.UID(str(ds[keyword].value)).is_valid:
            raise CorruptDicomError(header.path, f"{keyword} {str(ds[keyword].value)[:70]!r} is not a valid UID")
    if header.modality == "CT" and not header.has_pixels:
        raise CorruptDicomError(header.path, "CT image without Rows/Columns: the file is truncated or damaged")


def group_by_series(headers: Sequence[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Image headers grouped by SeriesInstanceUID (non-image objects such as RTSTRUCT are left out)."""
    series: dict[str, list[SliceHeader]] = {}
    for header in headers:
        if header.has_pixels and header.modality not in NON_IMAGE_MODALITIES:
            series.setdefault(header.series_uid, []).append(header)
    return series


def describe_series(uid: str, headers: Sequence[SliceHeader]) -> str:
    ds = headers[0].dataset
    return (
        f"{uid} ({ds.get('Modality', '?')}, {len(headers)} files, "
        f"kernel {ds.get('ConvolutionKernel', '?')}, '{ds.get('SeriesDescription', '')}')"
    )


def folder_series(folder: Path, strict: bool = False) -> tuple[dict[str, list[SliceHeader]], int]:
    """Image series (UID -> headers) of every DICOM file under ``folder``, and how many files were read
    (``strict``: a damaged DICOM file is an error, see :func:`collect_headers`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "does not exist or is not a folder")
    files = list(iter_files(folder))
    if not files:
        raise InputError(folder, "folder is empty: expected the DICOM files of a CT series")
    return group_by_series(collect_headers(files, strict=strict)), len(files)


def select_series(folder: Path, series_uid: str | None = None) -> list[SliceHeader]:
    """The headers of the one CT series to read from ``folder`` (searched recursively)."""
    series, n_files = folder_series(Path(folder), strict=True)
    if not series:
        raise InputError(folder, f"no DICOM image series found among {n_files} files")
    if series_uid is not None:
        if series_uid not in series:
            listing = "; ".join(describe_series(uid, h) for uid, h in series.items())
            raise InputError(folder, f"series {series_uid} not found; series present: {listing}")
        return _one_reconstruction(folder, series_uid, series[series_uid])
    if len(series) > 1:
        listing = "; ".join(describe_series(uid, h) for uid, h in series.items())
        raise InputError(folder, f"holds {len(series)} series; choose one with --series UID: {listing}")
    return _one_reconstruction(folder, *next(iter(series.items())))


def reconstructions(headers: Sequence[SliceHeader]) -> dict[tuple, list[SliceHeader]]:
    """The headers of one SeriesInstanceUID by reconstruction (kernel and matrix): more than one when two
    reconstructions were given one UID, as some exports and anonymizers do."""
    parts: dict[tuple, list[SliceHeader]] = {}
    for header in headers:
        try:
            size = slice_size(header)
        except InputError:  # a malformed size: a group of its own, refused with its message when read
            size = None
        parts.setdefault((kernel_name(header.dataset), size), []).append(header)
    return parts


def _one_reconstruction(folder: Path, uid: str, headers: list[SliceHeader]) -> list[SliceHeader]:
    """``headers`` when they are of one kernel (slices of other sizes are refused with their own message later)."""
    kernels = sorted({kernel for kernel, _ in reconstructions(headers)})
    if len(kernels) > 1:
        raise InputError(folder, f"series {uid} holds {len(kernels)} reconstructions under one SeriesInstanceUID (kernels "
                                 f"{', '.join(k or '?' for k in kernels)}); put each in a folder of its own and give that folder")
    return headers


MAX_RESCALE_SLOPE = 1000.0  # CT scanners store HU at slope 1 (sometimes 0.5 or 2); larger is a broken header
MAX_ABS_INTERCEPT = 100000.0


def header_numbers(ds: Dataset, path: Path, keyword: str, count: int | None = None) -> list[float] | None:
    """The finite numbers of a DS/IS attribute (None when absent); a malformed or non-finite value is an
    :class:`InputError` naming the file and the attribute."""
    if keyword not in ds:
        return None
    try:  # pydicom parses a value on first access and raises for bytes of the wrong length
        value = ds[keyword].value
    except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed attribute of this file
        raise InputError(path, f"malformed {keyword} ({exc.__class__.__name__})") from None
    if value in (None, ""):
        return None
    values = list(value) if isinstance(value, (pydicom.multival.MultiValue, list, tuple)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(path, f"malformed {keyword} {values!r}: not a number") from None
    if not all(np.isfinite(numbers)):
        raise InputError(path, f"{keyword} holds a non-finite value {values!r}")
    if count is not None and len(numbers) != count:
        raise InputError(path, f"{keyword} must hold {count} numbers, got {len(numbers)}")
    return numbers


def _orientation(ds: Dataset, path: Path) -> np.ndarray:
    """3x3 direction matrix (columns: column axis, row axis, slice normal) from ImageOrientationPatient."""
    iop = header_numbers(ds, path, "ImageOrientationPatient", 6)
    if iop is None:
        raise InputError(path, "missing ImageOrientationPatient; cannot place the slice in space")
    row_dir, col_dir = np.array(iop[:3]), np.array(iop[3:])
    norms = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if min(norms) < 0.99 or max(norms) > 1.01 or abs(row_dir @ col_dir) > 0.01:
        raise InputError(path, f"invalid ImageOrientationPatient {iop}: the row and column directions must be "
                               "orthogonal unit vectors")
    normal = np.cross(row_dir, col_dir)
    return np.stack([row_dir, col_dir, normal], axis=1)


def _check_header(header: SliceHeader, first: SliceHeader) -> None:
    """One slice's own attributes: CT, HU conversion, position, pixel spacing, size, no gantry tilt."""
    ds, path = header.dataset, header.path
    if header.modality != "CT":
        raise InputError(path, f"modality is {header.modality or 'missing'}, expected CT")
    for tag in ("RescaleSlope", "RescaleIntercept"):
        if header_numbers(ds, path, tag, 1) is None:
            raise InputError(path, f"missing {tag}; cannot convert stored values to HU")
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if not 0 < slope <= MAX_RESCALE_SLOPE:
        raise InputError(path, f"RescaleSlope {slope:g} is outside (0, {MAX_RESCALE_SLOPE:g}]; the stored values "
                               "cannot be converted to HU")
    if abs(intercept) > MAX_ABS_INTERCEPT:
        raise InputError(path, f"RescaleIntercept {intercept:g} is outside +-{MAX_ABS_INTERCEPT:g}")
    if header_numbers(ds, path, "ImagePositionPatient", 3) is None:
        raise InputError(path, "missing ImagePositionPatient; cannot order the slices")
    spacing = header_numbers(ds, path, "PixelSpacing", 2)
    if spacing is not None and min(spacing) <= 0:
        raise InputError(path, f"PixelSpacing {spacing} must be positive")
    _orientation(ds, path)
    size, first_size = slice_size(header), slice_size(first)
    if size != first_size:
        raise InputError(path, f"slice size {size[0]}x{size[1]} differs from {first_size[0]}x{first_size[1]} of "
                               f"{first.path.name}")


def slice_size(header: SliceHeader) -> tuple[int, int]:
    """(Rows, Columns), each a positive integer, or an :class:`InputError` naming the file."""
    numbers = [header_numbers(header.dataset, header.path, keyword, 1) for keyword in ("Rows", "Columns")]
    if any(n is None or n[0] < 1 or n[0] != int(n[0]) for n in numbers):
        raise InputError(header.path, f"invalid image size Rows x Columns {numbers}")
    return int(numbers[0][0]), int(numbers[1][0])


def _check_slices(headers: Sequence[SliceHeader], even: bool = True) -> tuple[list[SliceHeader], np.ndarray, np.ndarray]:
    """Sort slices along the normal and validate the stack; returns (sorted headers, direction, positions).
    ``even``: refuse uneven slice spacing (a volume needs it; a stack of separate slices does not)."""
    first = headers[0]
    for header in headers:
        _check_header(header, first)
        tilt = (header_numbers(header.dataset, header.path, "GantryDetectorTilt", 1) or [0.0])[0]
        if abs(tilt) > 1e-3 and len(headers) > 1:  # a tilted stack is sheared; one slice is still a plane
            raise InputError(header.path, f"gantry tilt of {tilt} degrees is not supported; resample the series first")
    for header in headers[1:]:  # one series is one patient, study and frame of reference
        for keyword in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"):
            if str(header.dataset.get(keyword, "")) != str(first.dataset.get(keyword, "")):
                raise InputError(header.path, f"{keyword} differs from that of {first.path.name} in the same series")
    direction = _orientation(first.dataset, first.path)
    for header in headers[1:]:
        if not np.allclose(_orientation(header.dataset, header.path), direction, atol=1e-4):
            raise InputError(header.path, f"ImageOrientationPatient differs from that of {first.path.name}")
    normal = direction[:, 2]
    positions = np.array([header_numbers(h.dataset, h.path, "ImagePositionPatient", 3) for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    headers = [headers[i] for i in order]
    positions = positions[order]
    if len(headers) > 1:
        steps = np.diff(positions, axis=0)
        gaps = np.linalg.norm(steps, axis=1)
        if np.any(gaps < 1e-6):
            dup = int(np.argmin(gaps))
            raise InputError(headers[dup + 1].path, f"duplicate slice position (same as {headers[dup].path.name})")
        cosines = np.abs(steps @ normal) / gaps
        if np.any(cosines < 1 - TILT_TOLERANCE):
            bad = int(np.argmin(cosines))
            raise InputError(
                headers[bad + 1].path,
                "slices are not stacked along their normal (gantry tilt or sheared series); resample first",
            )
        median = float(np.median(gaps))
        deviation = np.abs(gaps - median)
        if even and np.any(deviation > SPACING_TOLERANCE_MM + 0.01 * median):
            bad = int(np.argmax(deviation))
            raise InputError(
                headers[bad + 1].path,
                f"uneven slice spacing: gap of {gaps[bad]:.3f} mm where the series has {median:.3f} mm"
                " (missing slice?); resample the series to even spacing first",
            )
    return headers, direction, positions


def _compressed_problem(ds: Dataset) -> str | None:
    """What the codestream of a compressed slice shows to be damaged (None: not compressed, or nothing shown)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed or "PixelData" not in ds:
        return None
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(getattr(ds, "NumberOfFrames", 1) or 1)))
    return next((p for p in (codestream_problem(f, str(syntax)) for f in frames) if p), None)


def _pixels_hu(header: SliceHeader) -> np.ndarray:
    try:
        ds = pydicom.dcmread(header.path)
        problem = _compressed_problem(ds)
        stored = None if problem else ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad or undecodable pixel data
        raise InputError(header.path, f"cannot decode pixel data ({exc.__class__.__name__}: {exc})") from None
    if problem:
        raise InputError(header.path, f"damaged compressed pixel data: {problem}; re-export or re-copy this slice")
    if stored.ndim != 2:
        raise InputError(header.path, f"expected a single-frame greyscale slice, got pixel array {stored.shape}")
    slope = float(ds.RescaleSlope)
    intercept = float(ds.RescaleIntercept)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def read_slice_stack(folder: str | Path, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The slices of one CT series as separate planes, spacing between them unchecked (a few slices of separate regions,
    as sample reconstructions often come): HU ``(N, H, W)`` sorted along the normal, each slice's position along it
    (mm) and the in-plane pixel size (mm). Everything else is checked as :func:`read_dicom_series` checks it."""
    headers, direction, positions = _check_slices(select_series(Path(folder), series_uid), even=False)
    first = headers[0]
    pixel_mm = dicom_pixel_mm(first.dataset, first.path)
    if pixel_mm is None:
        raise InputError(first.path, "no PixelSpacing: the pixel size is needed to measure a kernel in cycles/mm")
    return np.stack([_pixels_hu(h) for h in headers]), positions @ direction[:, 2], pixel_mm


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read one CT series from a folder (searched recursively) into a :class:`Volume` in HU.

    Args:
        folder: a folder holding the series' files (other non-DICOM files are skipped with a warning).
        series_uid: which series to read when the folder holds several image series.

    Raises:
        InputError: the folder holds no, several (without ``series_uid``) or an invalid CT series.
    """
    headers, direction, positions = _check_slices(select_series(Path(folder), series_uid))
    first = headers[0].dataset
    pixel_spacing = header_numbers(first, headers[0].path, "PixelSpacing", 2)
    if pixel_spacing is None:  # 1 mm would be a silent guess: every kernel's filter is in cycles per mm
        raise InputError(headers[0].path, "no PixelSpacing in the header; the pixel size is needed (every kernel is a "
                                          "filter in cycles/mm): add PixelSpacing to the series' headers")
    row_spacing, col_spacing = pixel_spacing
    if len(headers) > 1:
        slice_spacing = float(np.median(np.linalg.norm(np.diff(positions, axis=0), axis=1)))
    else:
        numbers = (header_numbers(first, headers[0].path, "SpacingBetweenSlices", 1)
                   or header_numbers(first, headers[0].path, "SliceThickness", 1) or [1.0])
        slice_spacing = numbers[0] if numbers[0] > 0 else 1.0
    hu = np.stack([_pixels_hu(h) for h in headers])
    metadata = {
        "source": str(folder),
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "study_uid": str(first.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
        "kernel": kernel_name(first),
        "slice_thickness": (header_numbers(first, headers[0].path, "SliceThickness", 1) or [slice_spacing])[0] or slice_spacing,
        "manufacturer": str(first.get("Manufacturer", "")),
        "patient_id": str(first.get("PatientID", "")),
    }
    return Volume(
        hu=hu,
        spacing=(col_spacing, row_spacing, slice_spacing),
        origin=tuple(positions[0]),
        direction=direction,
        headers=[h.dataset for h in headers],
        metadata=metadata,
    )


def dicom_pixel_mm(ds: Dataset, path: Path) -> float | None:
    """In-plane pixel size (mm, the mean of row and column spacing, as :attr:`Volume.pixel_mm`); None when absent."""
    spacing = header_numbers(ds, path, "PixelSpacing", 2)
    return in_plane_pixel_mm(spacing) if spacing else None


def kernel_name(ds: Dataset) -> str:
    kernel = ds.get("ConvolutionKernel", "")
    if isinstance(kernel, pydicom.multival.MultiValue):
        return "\\".join(str(k) for k in kernel)
    return str(kernel)
