"""Volumes from any supported source (DICOM folder, NIfTI, NRRD, MHA) and masks on a volume's grid."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from diffusionct.errors import DiffusionCTError, InputError
from diffusionct.io.dicom import read_dicom_series, read_header
from diffusionct.io.files import atomic_output_file, check_output_free
from diffusionct.io.volume import Volume, in_plane_pixel_mm

ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_itk_image(path: Path) -> bool:
    return str(path).lower().endswith(ITK_SUFFIXES)


def image_pixel_mm(path: str | Path) -> float | None:
    """In-plane pixel size (mm, as :attr:`Volume.pixel_mm`) from an image file's header; None when it has none."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # reading the image itself says what is wrong with it
    spacing = reader.GetSpacing()
    return in_plane_pixel_mm(spacing) if len(spacing) >= 2 and header_has_spacing(path) else None


def header_has_spacing(path: str | Path) -> bool:
    """Whether an image file states its voxel size. ITK reads a MetaImage or NRRD header without one as 1 mm, which
    for a CT slice is a wrong pixel size that nothing would report; NIfTI always stores one."""
    name = str(path).lower()
    keys = {".mha": (b"elementspacing", b"elementsize"), ".mhd": (b"elementspacing", b"elementsize"),
            ".nrrd": (b"spacings:", b"space directions:"), ".nhdr": (b"spacings:", b"space directions:")}
    wanted = next((v for suffix, v in keys.items() if name.endswith(suffix)), None)
    if wanted is None:
        return True
    with open(path, "rb") as stream:
        header = stream.read(1 << 16)
    end = header.find(b"ElementDataFile") if name.endswith((".mha", ".mhd")) else header.find(b"\n\n")
    lines = [line.strip().lower() for line in header[:end if end >= 0 else None].splitlines()]
    return any(line.startswith(key) for line in lines for key in wanted)


def read_image(path: str | Path, pixel_mm: float | None = None) -> Volume:
    """Read a NIfTI, NRRD or MHA file with SimpleITK; voxel values are taken as HU, geometry kept. A 2D image is a
    one-slice volume (written back as 2D). ``pixel_mm``: the in-plane pixel size of an image whose header has none."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist or is not a file")
    if path.name.lower().endswith((".gz", ".nii")):
        _check_payload(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"cannot read image, corrupt or truncated ({str(exc).strip().splitlines()[-1]})") from None
    dimension = image.GetDimension()
    if dimension not in (2, 3) or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a 2D or 3D single-channel image, got {dimension}D "
                               f"with {image.GetNumberOfComponentsPerPixel()} components")
    image = _with_pixel_size(path, image, pixel_mm)
    if dimension == 2:
        image = sitk.JoinSeries(image)  # one slice; its spacing along z is the pixel size (there is no other)
        image.SetSpacing((*image.GetSpacing()[:2], image.GetSpacing()[0]))
    if not all(np.isfinite(image.GetSpacing())) or min(image.GetSpacing()) <= 0 or not all(np.isfinite(image.GetOrigin())):
        raise InputError(path, f"invalid geometry: spacing {image.GetSpacing()}, origin {image.GetOrigin()}")
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    _refuse_non_finite(path, int(np.count_nonzero(~np.isfinite(hu))))
    return Volume(
        hu=hu,
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.array(image.GetDirection()).reshape(3, 3),
        metadata={"source": str(path), **({IMAGE_DIMENSION: 2} if dimension == 2 else {})},
    )


IMAGE_DIMENSION = "image_dimension"  # Volume.metadata: 2 for a volume read from a 2D image (written back as one)


def _with_pixel_size(path: Path, image: sitk.Image, pixel_mm: float | None) -> sitk.Image:
    """The image with the user's pixel size where its header has none; a header's own size is never overridden."""
    if header_has_spacing(path):
        stated = in_plane_pixel_mm(image.GetSpacing())
        if pixel_mm is not None and abs(stated - pixel_mm) > 0.01 * stated:
            raise InputError(path, f"its header gives {stated:.4g} mm pixels, not --pixel-mm {pixel_mm:g}; drop --pixel-mm")
        return image
    if pixel_mm is None:
        raise InputError(path, "its header gives no pixel size (ITK would read 1 mm); give it with --pixel-mm MM")
    if not (math.isfinite(pixel_mm) and 0 < pixel_mm < 10):
        raise InputError(path, f"--pixel-mm must be a pixel size in mm between 0 and 10, got {pixel_mm}")
    image.SetSpacing((pixel_mm, pixel_mm, *image.GetSpacing()[2:]))
    return image


# NIfTI datatype code -> numpy type (the codes of the NIfTI-1 standard)
_NIFTI_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}


def _open_stream(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _check_payload(path: Path) -> None:
    """Read a NIfTI file (or any .gz) to its end before ITK does, which reads a truncated file with the
    missing part as zeros and NaN voxels as 0: a short, damaged or non-finite payload is an :class:`InputError`."""
    seen = bad = count = 0
    try:
        with _open_stream(path) as stream:
            head = stream.read(544)
            if not path.name.lower().endswith((".nii", ".nii.gz")):  # a .gz of another format: the stream only
                while stream.read(1 << 24):
                    pass
                return
            dtype, offset, count = _nifti_layout(path, head)
            if offset > len(head):
                stream.read(offset - len(head))
            rest = head[offset:]
            while rest:
                usable = len(rest) - len(rest) % dtype.itemsize
                values = np.frombuffer(rest[:usable], dtype)[: count - seen]
                if dtype.kind == "f":
                    bad += int(np.count_nonzero(~np.isfinite(values)))
                seen += values.size
                rest = rest[usable:] + stream.read(1 << 24)
                if len(rest) < dtype.itemsize:
                    break
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(path, f"corrupt or truncated file ({exc})") from None
    if seen < count:
        raise InputError(path, f"truncated: holds {seen} of its {count} voxels")
    _refuse_non_finite(path, bad)


def _refuse_non_finite(path: Path, count: int) -> None:
    if count:
        raise InputError(path, f"{count} voxel(s) hold non-finite values (NaN or infinity); fill them (e.g. with "
                               "-1024 HU outside the body) before use")


def _nifti_layout(path: Path, header: bytes) -> tuple[np.dtype, int, int]:
    """(voxel type, data offset, voxel count) from a single-file NIfTI-1 or NIfTI-2 header."""
    for order in ("<", ">"):
        size = np.frombuffer(header[:4], order + "i4")[0] if len(header) >= 4 else 0
        if size == 348 and len(header) >= 352:
            dims = np.frombuffer(header[40:56], order + "i2").astype(np.int64)
            code = int(np.frombuffer(header[70:72], order + "i2")[0])
            offset = max(int(np.frombuffer(header[108:112], order + "f4")[0]), 352)
            break
        if size == 540 and len(header) >= 544:
            dims = np.frombuffer(header[16:80], order + "i8").astype(np.int64)
            code = int(np.frombuffer(header[12:14], order + "i2")[0])
            offset = max(int(np.frombuffer(header[168:176], order + "i8")[0]), 544)
            break
    else:
        raise InputError(path, "not a NIfTI file (no valid header)")
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or np.any(dims[1:ndim + 1] < 1) or code not in _NIFTI_TYPES:
        raise InputError(path, f"unsupported or damaged NIfTI header (dimensions {dims[:8].tolist()}, datatype {code})")
    return np.dtype(order + _NIFTI_TYPES[code]), offset, int(np.prod(dims[1:ndim + 1]))


def read_volume(path: str | Path, series_uid: str | None = None, pixel_mm: float | None = None) -> Volume:
    """A CT volume from a DICOM series folder (or one of its files) or a NIfTI/NRRD/MHA file (``pixel_mm``: the
    pixel size of an image file whose header has none)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    if is_itk_image(path):
        return read_image(path, pixel_mm)
    read_header(path)  # raises a clear error when the file is not DICOM either
    return read_dicom_series(path.parent, series_uid)


def volume_to_sitk(volume: Volume, array: np.ndarray | None = None) -> sitk.Image:
    values = volume.hu if array is None else array
    if volume.metadata.get(IMAGE_DIMENSION) == 2 and values.shape[0] == 1:  # read from a 2D image: written as one
        image = sitk.GetImageFromArray(values[0])
        image.SetSpacing(volume.spacing[:2])
        image.SetOrigin(volume.origin[:2])
        image.SetDirection(tuple(volume.direction[:2, :2].flatten()))
        return image
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.flatten()))
    return image


def write_nifti(volume: Volume, path: str | Path, *, array: np.ndarray | None = None, overwrite: bool = False) -> Path:
    """Write ``volume`` (or ``array`` on its grid, e.g. a mask) as NIfTI, atomically."""
    path = Path(path)
    check_output_free(path, overwrite)
    values = volume.hu if array is None else array
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DiffusionCTError(f"{path}: refusing to write non-finite values (NaN or infinity)")
    image = volume_to_sitk(volume, array)
    with atomic_output_file(path, verify=lambda tmp: _verify_written(tmp, path, image)) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as exc:
            raise DiffusionCTError(f"{path}: cannot write the image ({str(exc).strip().splitlines()[-1]})") from None
    return path


def _verify_written(tmp: Path, path: Path, image: sitk.Image) -> None:
    """Read the written file back (ITK reports a full disk on stderr only): its whole payload and size."""
    try:
        if tmp.name.lower().endswith((".gz", ".nii")):
            _check_payload(tmp)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(tmp))
        reader.ReadImageInformation()
        complete = tuple(reader.GetSize()) == tuple(image.GetSize())
    except (InputError, RuntimeError):
        complete = False
    if not complete:
        raise DiffusionCTError(f"{path}: the written file is incomplete (disk full?); nothing was written")


MAX_LABELS = 255  # a label map numbers a few regions; thousands of values is an image given as a mask


def read_label_map(path: str | Path, reference: Volume, roi: str | None = None) -> np.ndarray:
    """Integer labels on ``reference``'s grid (0 = background) from a NIfTI/NRRD/MHA label image, or one
    RTSTRUCT ROI or DICOM-SEG segment (``roi``: its name) as label 1. A label image must share the reference grid and hold small non-negative
    integers; a folder holding one RTSTRUCT or SEG file stands for that file."""
    from diffusionct.io.dicomseg import read_seg_mask
    from diffusionct.io.rtstruct import read_rtstruct_mask

    path = Path(path)
    if path.is_dir():
        masks = [p for p in sorted(path.rglob("*")) if p.is_file() and _mask_kind(p)]
        if len(masks) != 1:
            raise InputError(path, f"expected one RTSTRUCT or DICOM-SEG file in the folder, found {len(masks)}")
        path = masks[0]
    if not is_itk_image(path):
        if _mask_kind(path) == "SEG":
            return read_seg_mask(path, reference, roi).astype(np.int32)
        return read_rtstruct_mask(path, reference, roi).astype(np.int32)
    image = read_image(path)
    if not reference.same_grid(image, tol=1e-2):
        raise InputError(
            path,
            f"mask grid (shape {image.shape}, spacing {np.round(image.spacing, 3)}, origin {np.round(image.origin, 2)}) "
            f"differs from the image's (shape {reference.shape}, spacing {np.round(reference.spacing, 3)}, "
            f"origin {np.round(reference.origin, 2)}); resample the mask onto the image first",
        )
    values = image.hu
    labels = np.unique(values)
    if labels.size > MAX_LABELS + 1:
        raise InputError(path, f"holds {labels.size} distinct values: a mask numbers a few regions (is this the CT image?)")
    if np.any(labels != np.round(labels)):
        raise InputError(path, "holds non-integer values: a mask is a label map of integers")
    if labels[0] < 0:
        raise InputError(path, f"holds a negative label ({labels[0]:g}): labels are 0 (background) or positive")
    return values.astype(np.int32)


def read_mask(path: str | Path, reference: Volume, roi: str | None = None) -> np.ndarray:
    """A boolean mask (every non-zero label) on ``reference``'s grid, see :func:`read_label_map`."""
    return read_label_map(path, reference, roi) > 0


def _mask_kind(path: Path) -> str | None:
    """'RTSTRUCT' or 'SEG' for a DICOM mask file, else None."""
    from diffusionct.io.dicomseg import is_dicom_seg

    try:
        ds = read_header(path)
    except InputError:
        return None
    if is_dicom_seg(ds):
        return "SEG"
    return "RTSTRUCT" if str(ds.get("Modality", "")) == "RTSTRUCT" else None
