"""IBSI 1 image processing before feature computation (IBSI reference manual, chapter 2): interpolation to a
new grid, range re-segmentation and intensity-outlier filtering. Applied by ``extract_features`` when the
settings ask for it (``resampledPixelSpacing``, ``interpolator``, ``resegmentRange``, ``outlierFilter``).

Order, as in IBSI: interpolate image and mask; round CT intensities to integers; threshold the interpolated mask
at 0.5; re-segment by range and by outliers (mean +- n SD of the interpolated ROI), intersected; then discretise,
with fixed-bin-size grey levels numbered from the re-segmentation's lower bound.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from diffusionct.errors import DiffusionCTError

INTERPOLATORS = {"sitkNearestNeighbor": 0, "sitkLinear": 1, "sitkBSpline": 3}  # pyradiomics' names -> spline order
MASK_THRESHOLD = 0.5  # IBSI partial-volume threshold of an interpolated mask


def new_grid(shape: tuple[int, ...], spacing: tuple[float, ...], new_spacing: tuple[float, ...]) -> list[np.ndarray]:
    """IBSI 'align grid centres': per axis, the positions (in input voxel units) of the new grid's voxels, whose
    count is ceil(n * s / s_new) and whose centre coincides with the input grid's centre. Axes ordered (z, y, x)."""
    axes = []
    for n, s, s_new in zip(shape, spacing, new_spacing):
        if s_new <= 0 or s_new == s:
            axes.append(np.arange(n, dtype=np.float64))
            continue
        count = int(np.ceil(n * s / s_new))
        axes.append((n - 1) / 2.0 + (np.arange(count) - (count - 1) / 2.0) * s_new / s)
    return axes


def resample(image: np.ndarray, mask: np.ndarray, spacing_xyz, new_spacing_xyz, interpolator: str = "sitkLinear",
             margin: int | None = None, whole: tuple | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Image and mask on the new grid; returns (image, mask, spacing x, y, z). A new spacing of 0 keeps that axis
    (``[2, 2, 0]``: IBSI's slice-wise 2D configurations). The grid is the whole image's (its centre aligned): with
    ``whole`` = (shape, offset), ``image`` is the part of a larger image starting at ``offset`` (z, y, x), and the grid
    is that image's, so a crop around a tumour gives the voxels the whole image would. With ``margin`` only the grid's
    voxels within ``margin`` input voxels of the mask are computed (speed)."""
    if interpolator not in INTERPOLATORS:
        raise DiffusionCTError(f"interpolator must be one of {', '.join(INTERPOLATORS)}, got {interpolator!r}")
    if len(new_spacing_xyz) != 3 or any(float(s) < 0 for s in new_spacing_xyz):
        raise DiffusionCTError(f"resampledPixelSpacing must be three non-negative numbers (x, y, z; 0 keeps an axis), "
                               f"got {new_spacing_xyz!r}")
    spacing_zyx = tuple(float(s) for s in reversed(tuple(spacing_xyz)))
    target_zyx = tuple(float(s) for s in reversed(tuple(new_spacing_xyz)))
    shape, offset = whole if whole is not None else (image.shape, (0, 0, 0))
    axes = [a - o for a, o in zip(new_grid(tuple(shape), spacing_zyx, target_zyx), offset)]
    if whole is not None:  # the grid's points that fall on this part
        axes = [a[(a >= 0) & (a <= n - 1)] for a, n in zip(axes, image.shape)]
    if margin is not None:  # the new grid's voxels near the mask, and the input block they read from
        inside = np.nonzero(mask)
        low = [max(0, int(i.min()) - margin) for i in inside]
        high = [min(n - 1, int(i.max()) + margin) for i, n in zip(inside, image.shape)]
        axes = [a[(a >= lo) & (a <= hi)] for a, lo, hi in zip(axes, low, high)]
        start = [max(0, lo - 4) for lo in low]
        block = tuple(slice(b, min(n, hi + 5)) for b, hi, n in zip(start, high, image.shape))
        image, mask = image[block], mask[block]
        axes = [a - b for a, b in zip(axes, start)]
    coordinates = np.meshgrid(*axes, indexing="ij")
    order = INTERPOLATORS[interpolator]
    values = ndimage.map_coordinates(image.astype(np.float64), coordinates, order=order, mode="nearest", prefilter=order > 1)
    values = np.round(values)  # CT: integer HU after interpolation (IBSI 2.3)
    fraction = ndimage.map_coordinates(mask.astype(np.float64), coordinates, order=min(order, 1), mode="constant", cval=0.0)
    out_spacing = tuple(t if t > 0 else s for s, t in zip(spacing_zyx, target_zyx))
    return values, fraction >= MASK_THRESHOLD, tuple(reversed(out_spacing))


def resegment(image: np.ndarray, mask: np.ndarray, value_range=None, outlier_sd: float | None = None) -> np.ndarray:
    """The mask re-segmented: voxels inside ``value_range`` (inclusive; None for an open end) and, with
    ``outlier_sd``, within mean +- outlier_sd x SD of the whole ROI (IBSI 2.5: the two criteria are each taken on the
    ROI before re-segmentation and intersected, as mirp, the reference implementation, does)."""
    out = mask.copy()
    if outlier_sd is not None:
        values = image[mask]
        mean, sd = values.mean(), values.std()
        out &= (image >= mean - outlier_sd * sd) & (image <= mean + outlier_sd * sd)
    if value_range is not None:
        low, high = _range(value_range)
        if low is not None:
            out &= image >= low
        if high is not None:
            out &= image <= high
    if not out.any():
        raise DiffusionCTError("re-segmentation left no voxel in the mask; widen resegmentRange or outlierFilter")
    return out


def resegment_by_settings(image: np.ndarray, mask: np.ndarray, setting: dict) -> np.ndarray:
    """The intensity mask as the settings re-segment it (``resegmentRange``, ``outlierFilter``); the mask itself when
    they ask for neither."""
    if "resegmentRange" not in setting and "outlierFilter" not in setting:
        return mask
    outliers = setting.get("outlierFilter")
    return resegment(image, mask, setting.get("resegmentRange"), None if outliers is None else float(outliers))


def _range(value_range) -> tuple[float | None, float | None]:
    if not isinstance(value_range, (list, tuple)) or len(value_range) != 2:
        raise DiffusionCTError(f"resegmentRange must be [low, high] (null for an open end), got {value_range!r}")
    low, high = (None if v is None else float(v) for v in value_range)
    if low is not None and high is not None and low > high:
        raise DiffusionCTError(f"resegmentRange low {low} is above high {high}")
    return low, high


def lower_bound(value_range) -> float | None:
    """The re-segmentation's lower bound: IBSI numbers fixed-bin-size grey levels from it."""
    return None if value_range is None else _range(value_range)[0]


def diagnostics(image: np.ndarray, mask: np.ndarray, spacing_xyz, setting: dict) -> dict[str, float]:
    """IBSI 1's diagnostic features (the ``img_*``, ``vox_*`` and ``*_mask_*`` tags of its reference tables): the
    image and the ROI after each processing step (initial, interpolated, re-segmented), so that a difference from a
    reference can be traced to the step that made it. The whole image is interpolated here (features interpolate the
    ROI's neighbourhood only); the morphological mask is the interpolated one, the intensity mask is re-segmented."""
    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    out = {**_image_diagnostics("init_img", image, spacing_xyz), **_roi_diagnostics("init_roi", image, mask, mask)}
    if setting.get("resampledPixelSpacing"):
        image, mask, spacing_xyz = resample(image, mask, spacing_xyz, setting["resampledPixelSpacing"],
                                            setting.get("interpolator", "sitkLinear"))
    out.update(_image_diagnostics("interp_img", image, spacing_xyz))
    out.update(_roi_diagnostics("interp_roi", image, mask, mask))
    out.update(_roi_diagnostics("reseg_roi", image, resegment_by_settings(image, mask, setting), mask))
    return out


def _image_diagnostics(step: str, image: np.ndarray, spacing_xyz) -> dict[str, float]:
    out = {f"img_dim_{axis}_{step}": float(n) for axis, n in zip("xyz", reversed(image.shape))}
    out.update({f"vox_dim_{axis}_{step}": float(s) for axis, s in zip("xyz", spacing_xyz)})
    out.update({f"mean_int_{step}": float(image.mean()), f"min_int_{step}": float(image.min()),
                f"max_int_{step}": float(image.max())})
    return out


def _roi_diagnostics(step: str, image: np.ndarray, intensity_mask: np.ndarray, morphological_mask: np.ndarray) -> dict[str, float]:
    out = {f"int_mask_dim_{axis}_{step}": float(n) for axis, n in zip("xyz", reversed(image.shape))}
    for name, mask in (("int_mask", intensity_mask), ("morph_mask", morphological_mask)):
        inside = np.nonzero(mask)
        extent = [int(i.max()) - int(i.min()) + 1 if i.size else 0 for i in inside]
        out.update({f"{name}_bb_dim_{axis}_{step}": float(n) for axis, n in zip("xyz", reversed(extent))})
        out[f"{name}_vox_count_{step}"] = float(mask.sum())
    values = image[intensity_mask]
    out.update({f"int_mask_mean_int_{step}": float(values.mean()), f"int_mask_min_int_{step}": float(values.min()),
                f"int_mask_max_int_{step}": float(values.max())})
    return out
