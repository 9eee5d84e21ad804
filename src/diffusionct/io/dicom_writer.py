"""Writing a volume as a DICOM CT series: module by module, from an allow-list of its source's attributes (a
standardized series), or from a study description (a simulated one); atomically, read back before the rename."""

from __future__ import annotations

import collections
import copy
import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from diffusionct import __version__
from diffusionct.errors import DiffusionCTError
from diffusionct.io.dicom import CT_IMAGE_STORAGE
from diffusionct.io.files import atomic_output_dir
from diffusionct.io.records import write_record
from diffusionct.io.volume import Volume

log = logging.getLogger(__name__)


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
    ds.remove_private_tags()  # inside the kept sequences too, at any depth (pydicom walks them)
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
