"""RTSTRUCT contours rasterized to a voxel mask on a CT volume's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.draw import polygon as fill_polygon

from diffusionct.errors import InputError
from diffusionct.io.dicom import read_header
from diffusionct.io.volume import Volume


def _load(path: Path):
    ds = read_header(Path(path))
    if str(ds.get("Modality", "")) != "RTSTRUCT" or "StructureSetROISequence" not in ds:
        raise InputError(path, f"not an RTSTRUCT (modality {ds.get('Modality', 'missing')})")
    return ds


def rtstruct_roi_names(path: str | Path) -> list[str]:
    """Names of the ROIs defined in an RTSTRUCT file."""
    return [str(item.get("ROIName", "")) for item in _load(Path(path)).StructureSetROISequence]


def check_same_patient_and_frame(path: Path, patient: str, frames: set[str], reference: Volume) -> None:
    """Contours or segments drawn on another patient or another frame of reference do not belong on this
    image (checked when both sides say which)."""
    own_patient = str(reference.metadata.get("patient_id", ""))
    if patient and own_patient and patient != own_patient:
        # the identities stay in the data: a message may reach logs and reports that the data may not
        raise InputError(path, "belongs to another patient than the image (their PatientID differ); use the mask made "
                               "on this image")
    frame = str(reference.metadata.get("frame_of_reference_uid", ""))
    frames = set(frames) - {""}
    if frame and frames and frame not in frames:
        raise InputError(path, f"drawn in frame of reference {sorted(frames)[0]} but the image's is {frame}; "
                               "use the mask made on this image")


def read_rtstruct_mask(path: str | Path, reference: Volume, roi: str | None = None) -> np.ndarray:
    """Rasterize one ROI's closed planar contours onto ``reference``'s grid.

    A voxel is inside when its centre lies inside a contour; contours on the same slice combine by
    parity (XOR), so a contour inside another cuts a hole, as the DICOM standard describes.

    Args:
        path: the RTSTRUCT file.
        reference: the volume whose grid the mask is drawn on.
        roi: the ROI name (case-insensitive); may be omitted when the file holds a single ROI.
    """
    path = Path(path)
    ds = _load(path)
    rois = ds.get("StructureSetROISequence", [])
    names = {_integer(item.get("ROINumber")): str(item.get("ROIName", "")) for item in rois}
    if None in names:
        raise InputError(path, "an ROI of the StructureSetROISequence has no ROINumber; re-export the RTSTRUCT")
    if roi is None:
        if len(names) != 1:
            raise InputError(path, f"holds {len(names)} ROIs; choose one with --roi: {', '.join(names.values())}")
        number = next(iter(names))
    else:
        matches = [n for n, name in names.items() if name.lower() == roi.lower()]
        if not matches:
            raise InputError(path, f"no ROI named '{roi}'; ROIs present: {', '.join(names.values())}")
        number = matches[0]
    check_same_patient_and_frame(path, str(ds.get("PatientID", "")),
                                 {str(item.get("ReferencedFrameOfReferenceUID", "")) for item in rois
                                  if _integer(item.get("ROINumber")) == number}, reference)
    contours = []
    for item in ds.get("ROIContourSequence", []):
        if _integer(item.get("ReferencedROINumber")) == number:
            contours.extend(item.get("ContourSequence", []))
    if not contours:
        raise InputError(path, f"ROI '{names[number]}' has no contours")
    to_index = np.linalg.inv(reference.index_to_patient())
    mask = np.zeros(reference.shape, dtype=bool)
    drawn = 0
    for contour in contours:
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) not in ("CLOSED_PLANAR", "POINT"):
            continue
        points = _contour_points(path, contour, names[number])
        index = (to_index @ np.c_[points, np.ones(len(points))].T)[:3].T  # (x, y, z) continuous indices
        slices = np.rint(index[:, 2]).astype(int)
        if np.ptp(index[:, 2]) > 0.5:
            raise InputError(path, "a contour is not planar in the image's slice direction")
        z = int(slices[0])
        if not 0 <= z < reference.shape[0]:
            continue  # contour outside the image's slices
        rows, cols = fill_polygon(index[:, 1], index[:, 0], shape=reference.shape[1:])
        layer = np.zeros(reference.shape[1:], dtype=bool)
        layer[rows, cols] = True
        mask[z] ^= layer
        drawn += 1
    if drawn == 0 or not mask.any():
        raise InputError(path, f"ROI '{names[number]}' does not overlap the image")
    return mask


def _contour_points(path: Path, contour, roi: str) -> np.ndarray:
    """A contour's (x, y, z) points; damaged ContourData is one error naming the ROI."""
    try:
        values = np.asarray(contour.get("ContourData", []), dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(path, f"ROI '{roi}': a contour's ContourData is not a list of numbers; re-export the RTSTRUCT") from None
    if values.size < 3 or values.size % 3 or not np.isfinite(values).all():
        raise InputError(path, f"ROI '{roi}': a contour's ContourData holds {values.size} values, not finite x, y, z "
                               "triplets; re-export the RTSTRUCT")
    return values.reshape(-1, 3)


def _integer(value) -> int | None:
    """An IS value as an integer, or None when it is missing or not one."""
    try:
        return int(str(value).strip())
    except ValueError:
        return None
