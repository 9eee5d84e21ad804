"""DICOM CT series: reading a folder into a :class:`Volume` and writing a volume back as a series.

Slices are ordered by their ImagePositionPatient projected on the slice normal (never by file name or
InstanceNumber), converted to HU through RescaleSlope/RescaleIntercept, and checked for the things
that make a stack of slices not a volume: mixed sizes, gantry tilt, uneven spacing.
"""

from __future__ import annotations

import collections
import copy
import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from diffusionct import __version__
from diffusionct.errors import DiffusionCTError, InputError
from diffusionct.io.codestream import codestream_problem
from diffusionct.io.files import atomic_output_dir, iter_files
from diffusionct.io.records import write_record
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


# --------------------------------------------------------------------------------------------- writing


def hu_encoding(hu: np.ndarray) -> tuple[int, float, float]:
    """(PixelRepresentation, RescaleSlope, RescaleIntercept) storing ``hu`` in 16 bits.

    HU values are rounded to integers when the range fits 16 bits at slope 1 (every CT range does);
    unsigned storage with intercept -1024 (or lower) is used as most scanners do, signed storage
    otherwise, and a larger slope only for ranges wider than 65535 HU.
    """
    lo, hi = float(np.floor(np.min(hu))), float(np.ceil(np.max(hu)))
    intercept = min(-1024.0, lo)
    if hi - intercept <= 65535:
        return 0, 1.0, intercept
    if lo >= -32768 and hi <= 32767:
        return 1, 1.0, 0.0
    slope = float(np.ceil((hi - lo) / 65535.0 * 1000) / 1000)
    return 0, slope, lo


def encode_hu(hu: np.ndarray, representation: int, slope: float, intercept: float) -> np.ndarray:
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    dtype = np.int16 if representation else np.uint16
    info = np.iinfo(dtype)
    return np.clip(stored, info.min, info.max).astype(dtype)


@dataclass
class SeriesDescription:
    """What a written series says about itself.

    Attributes:
        description: SeriesDescription.
        kernel: ConvolutionKernel of the written images (the target kernel for a standardized series).
        derivation: DerivationDescription; None writes an ORIGINAL (simulated) series.
        manufacturer: Manufacturer, for series written from nothing.
        model_name: ManufacturerModelName, for series written from nothing.
        series_number: SeriesNumber.
        extra: further top-level attributes set on every slice, keyword -> value (e.g. KVP).
    """

    description: str
    kernel: str
    derivation: str | None = None
    manufacturer: str = "DiffusionCT"
    model_name: str = f"diffusionct {__version__}"
    series_number: int = 900
    extra: dict | None = None


@dataclass
class StudyContext:
    """Patient and study attributes for a series written from nothing (the simulator's)."""

    patient_id: str
    patient_name: str
    study_uid: str
    frame_of_reference_uid: str
    study_description: str = "DiffusionCT simulation"
    study_date: str = "20260101"
    study_time: str = "120000"


def _new_slice_dataset(study: StudyContext) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    ds.Modality = "CT"
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.KVP = 120
    return ds


# What a derived slice keeps of its source, module by module (DICOM PS3.3 A.3, the CT Image IOD), as highdicom builds
# derived objects: patient, study and equipment as they were; the acquisition that made the raw data; the geometry.
# Everything else stays behind: vendor and private attributes, overlays, icons, curves, burned-in annotation flags,
# lossy-compression history and any attribute of another module, which described the source's pixels or is not the
# writer's to vouch for. The writer sets the new series, image pixel, rescale and derivation attributes itself.
KEPT_FROM_SOURCE = {
    "SOP Common": ("SpecificCharacterSet", "TimezoneOffsetFromUTC"),
    "Patient": ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDsSequence",
                "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                "PatientSpeciesDescription", "PatientBreedDescription"),
    "Clinical Trial Subject": ("ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
                               "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
                               "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID"),
    "General Study": ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                      "StudyDescription", "ProcedureCodeSequence"),
    "Patient Study": ("PatientAge", "PatientSize", "PatientWeight", "PregnancyStatus"),
    "General Series": ("Modality", "Laterality", "BodyPartExamined", "PatientPosition", "ProtocolName", "SeriesDate",
                       "SeriesTime", "OperatorsName", "PerformingPhysicianName"),
    "Frame of Reference": ("FrameOfReferenceUID", "PositionReferenceIndicator"),
    "General Equipment": ("Manufacturer", "InstitutionName", "InstitutionAddress", "StationName", "InstitutionalDepartmentName",
                          "ManufacturerModelName", "DeviceSerialNumber"),
    "General Acquisition": ("AcquisitionNumber", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime"),
    "Image Plane": ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"),
    "Contrast/Bolus": ("ContrastBolusAgent", "ContrastBolusAgentSequence", "ContrastBolusRoute", "ContrastBolusVolume",
                       "ContrastBolusStartTime", "ContrastBolusStopTime", "ContrastBolusTotalDose", "ContrastFlowRate",
                       "ContrastFlowDuration", "ContrastBolusIngredient", "ContrastBolusIngredientConcentration"),
    "CT Image": ("KVP", "AcquisitionNumber", "DataCollectionDiameter", "ReconstructionDiameter", "DistanceSourceToDetector",
                 "DistanceSourceToPatient", "GantryDetectorTilt", "TableHeight", "RotationDirection", "ExposureTime",
                 "XRayTubeCurrent", "Exposure", "ExposureInuAs", "FilterType", "GeneratorPower", "FocalSpots",
                 "RevolutionTime", "SingleCollimationWidth", "TotalCollimationWidth", "TableSpeed", "TableFeedPerRotation",
                 "SpiralPitchFactor", "CTDIvol", "DataCollectionCenterPatient", "ReconstructionTargetCenterPatient"),
    "VOI LUT": ("WindowCenter", "WindowWidth"),
}
_KEPT_TAGS = tuple(dict.fromkeys(pydicom.datadict.tag_for_keyword(k) for keys in KEPT_FROM_SOURCE.values() for k in keys))


def _known_public_tag(tag) -> bool:
    """A standard attribute: an unknown one in a public group is invalid DICOM, which a damaged source header
    can hold; private tags are removed separately and group lengths are left to the writer."""
    return tag.is_private or (tag.element != 0 and (pydicom.datadict.dictionary_has_tag(tag)
                                                    or pydicom.datadict.repeater_has_tag(tag)))


def _drop_unknown_tags(ds: Dataset) -> None:
    """Remove, recursively, unknown public attributes and those that do not parse (a damaged source)."""
    for tag in list(ds.keys()):
        if not _known_public_tag(tag):
            log.debug("dropped unknown public attribute %s (damaged source header?)", tag)
            del ds[tag]
            continue
        try:
            element = ds[tag]  # pydicom parses a raw element here
        except Exception:  # noqa: BLE001 - a value of the wrong length for its VR, among others
            log.debug("dropped unparsable attribute %s (damaged source header?)", tag)
            del ds[tag]
            continue
        if element.VR == "SQ":
            for item in element.value or []:
                _drop_unknown_tags(item)


# Patient, study and frame-of-reference attributes: one value for a whole series
_SERIES_LEVEL = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
                 "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID",
                 "PositionReferenceIndicator")


def _series_level_values(sources: Sequence[Dataset]) -> dict[str, str]:
    """Per series-level attribute, the value most slices hold: a slice whose header was damaged (the
    attribute lost or garbled) gets the series' value, so the written series is one patient and study."""
    values: dict[str, collections.Counter] = {}
    for ds in sources:
        for keyword in _SERIES_LEVEL:
            try:
                if keyword in ds:
                    values.setdefault(keyword, collections.Counter())[str(ds[keyword].value)] += 1
            except Exception:  # noqa: BLE001 - an unparsable value does not vote
                continue
    return {keyword: counts.most_common(1)[0][0] for keyword, counts in values.items()}


def _derived_slice_dataset(source: Dataset) -> Dataset:
    """A new slice holding what :data:`KEPT_FROM_SOURCE` keeps of ``source`` (an attribute that does not parse, as a
    damaged header can hold, is left behind like the rest)."""
    ds = Dataset()
    for tag in _KEPT_TAGS:
        if tag not in source:
            continue
        try:
            element = copy.deepcopy(source[tag])  # pydicom parses a raw element here
        except Exception:  # noqa: BLE001 - a value of the wrong length for its VR, among others
            log.debug("dropped unparsable attribute %s (damaged source header?)", tag)
            continue
        ds.add(element)
    _drop_unknown_tags(ds)  # inside the kept sequences
    for item in (item for element in ds.values() if element.VR == "SQ" for item in element.value or []):
        item.remove_private_tags()
    return ds


_REPORTED_TAGS: set = set()  # tags already warned about in this process
# Maximum value lengths of the string VRs that vendors most often overfill.
_MAX_LENGTH = {"SH": 16, "CS": 16, "LO": 64, "AE": 16, "DS": 16, "IS": 12}


_CODE_KEYWORDS = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")


def _make_values_valid(ds: Dataset) -> None:
    """Make the values copied from a source valid for their VR, so the written file is valid DICOM:
    over-long strings (vendors overfill SH/LO) are truncated, other invalid values (a damaged header)
    emptied, and code-sequence items missing a code part dropped."""
    for element in list(ds.values()):
        if element.VR == "SQ":
            items = [item for item in element.value or []
                     if not any(k in item for k in _CODE_KEYWORDS) or all(k in item for k in _CODE_KEYWORDS)]
            for item in items:
                _make_values_valid(item)
            element.value = items
            continue
        if element.value is None or element.VR not in pydicom.valuerep.STR_VR:
            continue
        values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
        limit = _MAX_LENGTH.get(element.VR)
        if limit and element.VR not in ("DS", "IS") and any(isinstance(v, str) and len(v) > limit for v in values):
            if element.tag not in _REPORTED_TAGS:  # once per tag, not once per slice
                _REPORTED_TAGS.add(element.tag)
                log.warning("%s %s is longer than the %d characters of VR %s; truncated in the written series",
                            element.keyword or "tag", element.tag, limit, element.VR)
            fitted = [v[:limit] if isinstance(v, str) else v for v in values]
            element.value = fitted if isinstance(element.value, pydicom.multival.MultiValue) else fitted[0]
            values = fitted
        try:
            for value in values:  # numbers (DSfloat, IS) are validated in their written form
                text = str(value) if element.VR in ("DS", "IS") and value is not None else value
                pydicom.valuerep.validate_value(element.VR, text, pydicom.config.RAISE)
        except (ValueError, TypeError):
            if (element.tag, "invalid") not in _REPORTED_TAGS:
                _REPORTED_TAGS.add((element.tag, "invalid"))
                log.warning("%s %s holds an invalid %s value; written empty", element.keyword or "tag", element.tag, element.VR)
            element.value = ""


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    series: SeriesDescription,
    *,
    study: StudyContext | None = None,
    overwrite: bool = False,
    uid_seed: str | None = None,
    record: dict | None = None,
) -> Path:
    """Write ``volume`` as a CT series of single-frame files, atomically.

    When ``volume.headers`` holds the source slices (a volume read from DICOM), the series is derived
    from them: patient, study, frame of reference, geometry and acquisition tags are kept; UIDs are
    new; ImageType is ``DERIVED\\SECONDARY`` and DerivationDescription and SourceImageSequence say
    where it came from. Otherwise ``study`` supplies the patient and study of a new ORIGINAL series.

    The files go to a temporary folder beside ``out_dir`` that is renamed when complete, so an
    interrupted write leaves no partial series.

    ``uid_seed`` makes the output byte-reproducible: UIDs are derived from it (instead of random)
    and the content date and time are taken from the study instead of the clock. ``record`` is
    written inside the folder as the hidden completion record (see :mod:`diffusionct.io.records`),
    in the same rename as the slices.
    """
    derived = bool(volume.headers)
    if derived and len(volume.headers) != volume.shape[0]:
        raise DiffusionCTError(
            f"volume has {volume.shape[0]} slices but {len(volume.headers)} source headers; "
            "a derived series needs one source slice per output slice"
        )
    if not derived and study is None:
        raise DiffusionCTError("writing a series from nothing needs a StudyContext (patient and study)")
    if not np.isfinite(volume.hu).all():
        raise DiffusionCTError(f"{out_dir}: refusing to write non-finite HU values (NaN or infinity)")
    if not (np.isfinite(volume.spacing).all() and min(volume.spacing) > 0 and np.isfinite(volume.origin).all()
            and np.isfinite(volume.direction).all()):
        raise DiffusionCTError(f"{out_dir}: refusing to write an invalid geometry (spacing {volume.spacing}, "
                               f"origin {volume.origin})")
    representation, slope, intercept = hu_encoding(volume.hu)
    def new_uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=[uid_seed, *parts]) if uid_seed is not None else generate_uid()

    series_uid = new_uid("series")
    fallback_uids = {"StudyInstanceUID": new_uid("study"), "FrameOfReferenceUID": new_uid("frame")}
    series_values = _series_level_values(volume.headers) if derived else {}
    now = _dt.datetime.now() if uid_seed is None else _dt.datetime(2026, 1, 1, 12, 0, 0)
    affine = volume.index_to_patient()
    with atomic_output_dir(Path(out_dir), overwrite=overwrite) as tmp:
        for index in range(volume.shape[0]):
            if derived:
                source = volume.headers[index]
                ds = _derived_slice_dataset(source)
                for keyword, value in series_values.items():
                    setattr(ds, keyword, value)
                ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
                ds.DerivationDescription = (series.derivation or "derived")[:1024]
                ds.SourceImageSequence = [_source_reference(source)]
            else:
                ds = _new_slice_dataset(study)
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.Manufacturer = series.manufacturer
                ds.ManufacturerModelName = series.model_name
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = new_uid("instance", str(index))
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series.series_number
            ds.SeriesDescription = series.description[:64]
            ds.InstanceNumber = index + 1
            ds.ConvolutionKernel = series.kernel[:16]
            ds.ContentDate = now.strftime("%Y%m%d")
            ds.ContentTime = now.strftime("%H%M%S")
            ds.SeriesDate = ds.get("SeriesDate") or now.strftime("%Y%m%d")
            ds.SeriesTime = ds.get("SeriesTime") or now.strftime("%H%M%S")
            ds.SoftwareVersions = f"diffusionct {__version__}"
            _set_geometry(ds, volume, index, affine, keep_source=derived)
            if "SliceThickness" not in ds or not derived:
                ds.SliceThickness = _ds_float(volume.metadata.get("slice_thickness", volume.spacing[2]))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = representation
            ds.RescaleSlope = _ds_float(slope)
            ds.RescaleIntercept = _ds_float(intercept)
            ds.RescaleType = "HU"
            for keyword, value in (series.extra or {}).items():
                setattr(ds, keyword, value)
            if "Laterality" not in ds:
                ds.Laterality = ""  # type 2C in General Series; validators ask for it on unpaired body parts
            _make_values_valid(ds)
            for keyword, uid in fallback_uids.items():
                if not pydicom.uid.UID(str(ds.get(keyword, ""))).is_valid:  # a damaged source: one new UID for the series
                    setattr(ds, keyword, uid)
            ds.add_new(0x7FE00010, "OW", encode_hu(volume.hu[index], representation, slope, intercept).tobytes())
            _save(ds, tmp / f"CT{index + 1:05d}.dcm")
        _verify_series(tmp, volume.shape, Path(out_dir))
        if record is not None:
            write_record(tmp, record)
    return Path(out_dir)


def _verify_series(folder: Path, shape: tuple[int, int, int], out_dir: Path) -> None:
    """Read every written file back before the rename: all slices there, each whole (a full disk can
    leave short files without an error on some file systems)."""
    files = sorted(folder.glob("*.dcm"))
    pixel_bytes = shape[1] * shape[2] * 2
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            complete = len(ds.PixelData) == pixel_bytes and (ds.Rows, ds.Columns) == shape[1:]
        except Exception:  # pydicom raises many types for a short file
            complete = False
        if not complete:
            raise DiffusionCTError(f"{out_dir}: the written slice {path.name} is incomplete (disk full?); nothing was written")
    if len(files) != shape[0]:
        raise DiffusionCTError(f"{out_dir}: {len(files)} of {shape[0]} slices written; nothing was written")


def _set_geometry(ds: Dataset, volume: Volume, index: int, affine: np.ndarray, keep_source: bool) -> None:
    """Image plane attributes of slice ``index``; a source slice's own strings are kept when they agree."""
    position = (affine @ np.array([0.0, 0.0, index, 1.0]))[:3]
    orientation = np.concatenate([volume.direction[:, 0], volume.direction[:, 1]])
    spacing = np.array([volume.spacing[1], volume.spacing[0]])
    agree = (
        keep_source
        and all(_valid_ds(ds, keyword) for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"))
        and "ImagePositionPatient" in ds and np.allclose(np.array(ds.ImagePositionPatient, float), position, atol=1e-3)
        and "ImageOrientationPatient" in ds and np.allclose(np.array(ds.ImageOrientationPatient, float), orientation, atol=1e-5)
        and "PixelSpacing" in ds and np.allclose(np.array(ds.PixelSpacing, float), spacing, atol=1e-5)
    )
    if not agree:
        ds.ImagePositionPatient = [_ds_float(v) for v in position]
        ds.ImageOrientationPatient = [_ds_float(v) for v in orientation]
        ds.PixelSpacing = [_ds_float(v) for v in spacing]
    ds.SliceLocation = _ds_float(float(np.array(ds.ImagePositionPatient, float) @ volume.direction[:, 2]))


def _valid_ds(ds: Dataset, keyword: str) -> bool:
    """Whether the source's own decimal strings of ``keyword`` are valid DS (at most 16 characters each; scanners in the
    wild write 17, which pydicom would drop on writing) and so may be copied as they are."""
    if keyword not in ds:
        return False
    values = ds[keyword].value
    values = values if isinstance(values, (list, tuple, pydicom.multival.MultiValue)) else [values]
    return all(len(str(getattr(v, "original_string", None) or v)) <= 16 for v in values)


def _ds_float(value: float) -> str:
    """A DS string of at most 16 characters that keeps as many digits of ``value`` as DS allows (pydicom's own)."""
    return format_number_as_ds(float(value))


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"DIFFCT_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.save_as(path, enforce_file_format=True)
