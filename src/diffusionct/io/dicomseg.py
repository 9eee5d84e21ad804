"""DICOM-SEG (Segmentation Storage) segments rasterized on a CT volume's grid.

Binary and fractional segmentations are read frame by frame: each frame's segment number comes from its
SegmentIdentificationSequence and its place from its PlanePositionSequence, mapped onto the reference
volume's voxel grid (so a SEG that stores only the frames holding the segment, or frames of several
segments in any order, reads the same). The SEG's orientation and pixel spacing must be the image's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from diffusionct.errors import InputError
from diffusionct.io.dicom import header_numbers
from diffusionct.io.volume import Volume

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_dicom_seg(ds) -> bool:
    return str(ds.get("Modality", "")) == "SEG" or str(ds.get("SOPClassUID", "")) == SEG_STORAGE


def _choose_segment(path: Path, names: dict[int, str], roi: str | None) -> int:
    if not names:
        raise InputError(path, "DICOM-SEG without segments (empty SegmentSequence)")
    if roi is None:
        if len(names) != 1:
            raise InputError(path, f"holds {len(names)} segments; choose one with --roi: {', '.join(names.values())}")
        return next(iter(names))
    matches = [number for number, name in names.items() if name.lower() == roi.lower()]
    if not matches:
        raise InputError(path, f"no segment named '{roi}'; segments present: {', '.join(names.values())}")
    return matches[0]


def _number_text(item, keyword: str) -> str:
    """A segment number as text ('' when absent or unparsable: pydicom raises for bytes of the wrong length)."""
    try:
        return str(item.get(keyword, "")).strip()
    except Exception:  # noqa: BLE001 - any parse failure is a damaged number
        return ""


def _group(ds, frame_group, name: str):
    """A functional group of one frame: its own, else the shared one."""
    shared = ds.get("SharedFunctionalGroupsSequence") or [None]
    for groups in (frame_group, shared[0]):
        if groups is not None and groups.get(name):  # an empty sequence gives nothing, as an absent one
            return groups[name][0]
    return None


def read_seg_mask(path: str | Path, reference: Volume, roi: str | None = None) -> np.ndarray:
    """The voxels of one segment (by label; may be omitted when the SEG holds one) on ``reference``'s grid."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        frames = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a damaged file
        raise InputError(path, f"cannot read the DICOM-SEG ({exc.__class__.__name__}: {exc})") from None
    if not is_dicom_seg(ds):
        raise InputError(path, f"not a DICOM-SEG (modality {ds.get('Modality', 'missing')})")
    try:
        return _segment_voxels(path, ds, frames, reference, roi)
    except (pydicom.errors.BytesLengthException, ValueError, TypeError, OverflowError) as exc:
        # a value pydicom cannot parse (bytes of the wrong length for its VR) or one that is not the number it must be
        raise InputError(path, f"a malformed DICOM-SEG value ({exc.__class__.__name__}: {str(exc)[:120]}); "
                               "re-export the DICOM-SEG") from None


def _segment_voxels(path: Path, ds, frames: np.ndarray, reference: Volume, roi: str | None) -> np.ndarray:
    from diffusionct.io.rtstruct import check_same_patient_and_frame

    numbered = [item for item in ds.get("SegmentSequence", []) if _number_text(item, "SegmentNumber").isdigit()]
    if len(numbered) != len(ds.get("SegmentSequence", [])):
        raise InputError(path, "a segment of the SegmentSequence has no (readable) SegmentNumber; re-export the DICOM-SEG")
    names = {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in numbered}
    number = _choose_segment(path, names, roi)
    check_same_patient_and_frame(path, str(ds.get("PatientID", "")), {str(ds.get("FrameOfReferenceUID", ""))}, reference)
    frames = frames.reshape(-1, int(ds.Rows), int(ds.Columns))
    if str(ds.get("SegmentationType", "BINARY")) == "FRACTIONAL":
        frames = frames > float(ds.get("MaximumFractionalValue", 255)) / 2
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [None] * frames.shape[0])
    to_index = np.linalg.inv(reference.index_to_patient())
    mask = np.zeros(reference.shape, dtype=bool)
    for frame, groups in zip(frames, per_frame):
        identification = _group(ds, groups, "SegmentIdentificationSequence")
        if identification is None:
            continue
        referenced = _number_text(identification, "ReferencedSegmentNumber")
        if not referenced.isdigit():
            raise InputError(path, "a frame's SegmentIdentificationSequence has no (readable) ReferencedSegmentNumber; "
                                   "re-export the DICOM-SEG")
        if int(referenced) != number:
            continue
        _check_plane(path, ds, groups, reference)
        position = _group(ds, groups, "PlanePositionSequence")
        if position is None:
            raise InputError(path, "a frame has no PlanePositionSequence: cannot place it on the image")
        ipp = header_numbers(position, path, "ImagePositionPatient", 3)
        if ipp is None:
            raise InputError(path, "a frame has no ImagePositionPatient: cannot place it on the image")
        x, y, z = (to_index @ np.array([*ipp, 1.0]))[:3]
        if max(abs(x - round(x)), abs(y - round(y)), abs(z - round(z))) > 0.1:
            raise InputError(path, f"a frame at {ipp} does not lie on the image's voxel grid; resample the segmentation")
        _paste(mask, frame.astype(bool), int(round(z)), int(round(y)), int(round(x)))
    if not mask.any():
        raise InputError(path, f"segment '{names[number]}' does not overlap the image")
    return mask


def _check_plane(path: Path, ds, groups, reference: Volume) -> None:
    orientation = _group(ds, groups, "PlaneOrientationSequence")
    measures = _group(ds, groups, "PixelMeasuresSequence")
    iop = None if orientation is None else header_numbers(orientation, path, "ImageOrientationPatient", 6)
    if iop is not None:
        iop = np.array(iop)
        own = np.concatenate([reference.direction[:, 0], reference.direction[:, 1]])
        if not np.allclose(iop, own, atol=1e-3):
            raise InputError(path, "the segmentation's orientation differs from the image's; resample it onto the image")
    if measures is not None:
        spacing = header_numbers(measures, path, "PixelSpacing", 2)
        if spacing is not None and not np.allclose(spacing, [reference.spacing[1], reference.spacing[0]], rtol=1e-3):
            raise InputError(path, f"the segmentation's pixel spacing {spacing} differs from the image's; resample it")


def _paste(mask: np.ndarray, frame: np.ndarray, z: int, row: int, col: int) -> None:
    """Add ``frame`` at (row, col) of slice ``z``, clipped to the image (a frame outside it adds nothing)."""
    if not 0 <= z < mask.shape[0]:
        return
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + frame.shape[0], mask.shape[1]), min(col + frame.shape[1], mask.shape[2])
    if r1 > r0 and c1 > c0:
        mask[z, r0:r1, c0:c1] |= frame[r0 - row:r1 - row, c0 - col:c1 - col]
