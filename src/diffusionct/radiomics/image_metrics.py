"""Image-level comparisons in HU: RMSE, PSNR, SSIM, high-pass noise ratio and noise power spectra."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from diffusionct.kernels import spectra
from diffusionct.units import HU_MAX, HU_MIN

HU_DATA_RANGE = HU_MAX - HU_MIN


def high_pass(hu: np.ndarray, sigma_px: float = 1.5) -> np.ndarray:
    """Per slice: the image minus its Gaussian blur; keeps the noise and fine texture."""
    hu = np.asarray(hu, dtype=np.float64)
    return hu - ndimage.gaussian_filter(hu, sigma=(0, sigma_px, sigma_px))


def high_pass_ratio(test: np.ndarray, reference: np.ndarray, region: np.ndarray | None = None) -> float:
    """SD of the high-pass part of ``test`` over that of ``reference`` inside ``region`` (1 = same texture power)."""
    ht, hr = high_pass(test), high_pass(reference)
    if region is not None:
        ht, hr = ht[region], hr[region]
    return float(ht.std() / max(hr.std(), 1e-9))


def interslice_ratio(test: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Mean |slice k+1 - slice k| of ``test`` over that of ``reference``, where both slices are in ``region``.

    1 means the output changes from slice to slice as much as the real series does; much more means
    slice-to-slice flicker, much less means over-smoothing along z. NaN for single-slice volumes.
    """
    if test.shape[0] < 2:
        return float("nan")
    both = region[1:] & region[:-1]
    dt = np.abs(np.diff(np.asarray(test, np.float64), axis=0))[both]
    dr = np.abs(np.diff(np.asarray(reference, np.float64), axis=0))[both]
    return float(dt.mean() / max(dr.mean(), 1e-9))


def rmse(test: np.ndarray, reference: np.ndarray, region: np.ndarray | None = None) -> float:
    diff = np.asarray(test, np.float64) - np.asarray(reference, np.float64)
    if region is not None:
        diff = diff[region]
    return float(np.sqrt(np.mean(diff**2)))


def psnr(test: np.ndarray, reference: np.ndarray, data_range: float = HU_DATA_RANGE) -> float:
    error = rmse(test, reference)
    return float("inf") if error == 0 else float(20 * np.log10(data_range / error))


def ssim(test: np.ndarray, reference: np.ndarray, data_range: float = HU_DATA_RANGE) -> float:
    """Mean SSIM over slices, HU clipped to the CT window [-1024, 3071]."""
    t = np.clip(test, HU_MIN, HU_MAX)
    r = np.clip(reference, HU_MIN, HU_MAX)
    return float(np.mean([structural_similarity(a, b, data_range=data_range) for a, b in zip(t, r)]))


def radial_nps(hu: np.ndarray, region: np.ndarray, pixel_mm: float, patch: int = 32, bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS (0 to Nyquist) of the high-pass image over square patches lying fully inside ``region``."""
    noise = high_pass(hu)
    patches = [noise[z, r:r + patch, c:c + patch]
               for z in range(hu.shape[0])
               for r in range(0, hu.shape[1] - patch + 1, patch)
               for c in range(0, hu.shape[2] - patch + 1, patch)
               if region[z, r:r + patch, c:c + patch].all()]
    if not patches:
        edges = np.linspace(0, 0.5 / pixel_mm, bins + 1)
        return 0.5 * (edges[1:] + edges[:-1]), np.full(bins, np.nan)
    return spectra.radial_nps(np.stack(patches), pixel_mm, bins, max_frequency=0.5 / pixel_mm)
