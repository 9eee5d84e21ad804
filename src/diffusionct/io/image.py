"""Volumes from any supported source (DICOM folder, NIfTI, NRRD, MHA) and masks on a volume's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from diffusionct.errors import InputError
from diffusionct.io.dicom import read_dicom_series, read_header
from diffusionct.io.files import atomic_output_file, check_output_free
from diffusionct.io.volume import Volume

ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_itk_image(path: Path) -> bool:
    return str(path).lower().endswith(ITK_SUFFIXES)


def read_image(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MHA file with SimpleITK; voxel values are taken as HU, geometry kept."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist or is not a file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a 3D single-channel image, got {image.GetDimension()}D "
                               f"with {image.GetNumberOfComponentsPerPixel()} components")
    return Volume(
        hu=sitk.GetArrayFromImage(image).astype(np.float32),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.array(image.GetDirection()).reshape(3, 3),
        metadata={"source": str(path)},
    )


def read_volume(path: str | Path, series_uid: str | None = None) -> Volume:
    """A CT volume from a DICOM series folder (or one of its files) or a NIfTI/NRRD/MHA file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    if is_itk_image(path):
        return read_image(path)
    read_header(path)  # raises a clear error when the file is not DICOM either
    return read_dicom_series(path.parent, series_uid)


def volume_to_sitk(volume: Volume, array: np.ndarray | None = None) -> sitk.Image:
    image = sitk.GetImageFromArray(volume.hu if array is None else array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.flatten()))
    return image


def write_nifti(volume: Volume, path: str | Path, *, array: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Write ``volume`` (or ``array`` on its grid, e.g. a mask) as NIfTI, atomically."""
    path = Path(path)
    check_output_free(path, overwrite)
    with atomic_output_file(path) as tmp:
        sitk.WriteImage(volume_to_sitk(volume, array), str(tmp), useCompression=True)
    return path


def read_mask(path: str | Path, reference: Volume, roi: str | None = None) -> np.ndarray:
    """A boolean mask on ``reference``'s grid from a NIfTI/NRRD/MHA label image or an RTSTRUCT.

    A label image must share the reference grid; every non-zero voxel is in the mask.
    """
    from diffusionct.io.rtstruct import read_rtstruct_mask

    path = Path(path)
    if path.is_dir():
        rtstructs = [p for p in sorted(path.rglob("*")) if p.is_file() and _is_rtstruct(p)]
        if len(rtstructs) != 1:
            raise InputError(path, f"expected one RTSTRUCT file in the folder, found {len(rtstructs)}")
        path = rtstructs[0]
    if is_itk_image(path):
        mask = read_image(path)
        if not reference.same_grid(mask, tol=1e-2):
            raise InputError(
                path,
                f"mask grid (shape {mask.shape}, spacing {np.round(mask.spacing, 3)}, origin {np.round(mask.origin, 2)}) "
                f"differs from the image's (shape {reference.shape}, spacing {np.round(reference.spacing, 3)}, "
                f"origin {np.round(reference.origin, 2)}); resample the mask onto the image first",
            )
        return mask.hu > 0.5
    return read_rtstruct_mask(path, reference, roi)


def _is_rtstruct(path: Path) -> bool:
    try:
        return str(read_header(path).get("Modality", "")) == "RTSTRUCT"
    except InputError:
        return False
