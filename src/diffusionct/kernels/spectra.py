"""Noise spectra and the fixed kernel-texture procedure, one implementation for the simulator's calibration
and the judge's image metrics (a neutral module: the judge imports nothing of the simulator or the methods)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


def radial_nps(patches: np.ndarray, pixel_mm: float, bins: int, max_frequency: float | None = None,
               taper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """NPS of square noise patches ``(k, n, n)`` (each made zero-mean), averaged over the patches and over
    rings of radial frequency: ``bins`` rings from 0 to ``max_frequency`` cycles/mm (default: the corner
    of the spectrum). Returns (ring centres, NPS in HU^2 mm^2); a ring without samples is NaN.
    ``taper``: a 2D Hann window (power-normalised) against leakage, for steep spectra compared across kernels."""
    patches = patches - patches.mean(axis=(1, 2), keepdims=True)
    n = patches.shape[-1]
    if taper:
        hann = np.outer(np.hanning(n), np.hanning(n))
        patches = patches * hann / np.sqrt((hann**2).mean())
    power = (np.abs(np.fft.fft2(patches)) ** 2).mean(0) * pixel_mm**2 / (n * n)
    f = np.fft.fftfreq(n, d=pixel_mm)
    radius = np.sqrt(f[None, :] ** 2 + f[:, None] ** 2).ravel()
    edges = np.linspace(0, radius.max() if max_frequency is None else max_frequency, bins + 1)
    ring = np.digitize(radius, edges) - 1
    nps = np.array([power.ravel()[ring == i].mean() if np.any(ring == i) else np.nan for i in range(bins)])
    return 0.5 * (edges[1:] + edges[:-1]), nps


# --------------------------------------------------------------------------- the texture procedure
# The fixed procedure of the project's kernel measurements on real scans (shared/tools/kernel_stats.py):
# soft-tissue ROIs chosen on the reference series, noise = ROI minus its 9 x 9 box mean.
ROI_PX, ROI_STEP_PX, BOX_PX = 32, 16, 9


def soft_tissue_rois(reference_slice: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners of 32 x 32 ROIs that lie in -100..150 HU (after a 3-pixel Gaussian), 10 px inside the body."""
    smooth = ndimage.gaussian_filter(reference_slice.astype(np.float64), 3)
    body = ndimage.binary_fill_holes(reference_slice > -500)
    ok = (smooth > -100) & (smooth < 150) & ndimage.binary_erosion(body, iterations=10)
    rows, cols = reference_slice.shape
    return [(y, x) for y in range(0, rows - ROI_PX, ROI_STEP_PX) for x in range(0, cols - ROI_PX, ROI_STEP_PX)
            if ok[y:y + ROI_PX, x:x + ROI_PX].all()]


@dataclass
class KernelTexture:
    noise_sd: float  # median over ROIs, HU
    noise_ratio: float  # to the reference series
    nps_mean_frequency: float  # cycles/mm
    n_rois: int


def kernel_texture(reference: np.ndarray, series: dict[str, np.ndarray], pixel_mm: float) -> dict[str, KernelTexture]:
    """Noise SD ratio and NPS mean frequency of same-grid volumes ``(slices, rows, cols)`` by the fixed procedure.

    ``reference`` picks the ROIs and is the denominator of the ratio (a B30-like series).
    """
    f = np.fft.fftshift(np.fft.fftfreq(ROI_PX, d=pixel_mm))
    radial = np.hypot(*np.meshgrid(f, f))
    sds = {name: [] for name in series}
    freqs = {name: [] for name in series}
    ref_sds = []
    for i in range(reference.shape[0]):
        boxes = soft_tissue_rois(reference[i])
        if not boxes:
            continue
        for name, volume in [("__reference__", reference), *series.items()]:
            power = np.zeros((ROI_PX, ROI_PX))
            for y, x in boxes:
                patch = volume[i, y:y + ROI_PX, x:x + ROI_PX].astype(np.float64)
                patch = patch - ndimage.uniform_filter(patch, BOX_PX)
                (ref_sds if name == "__reference__" else sds[name]).append(patch.std())
                power += np.abs(np.fft.fftshift(np.fft.fft2(patch))) ** 2
            if name != "__reference__":
                freqs[name].append(float((power * radial).sum() / power.sum()))
    if not ref_sds:
        raise ValueError("no soft-tissue ROI found in the reference series")
    base = float(np.median(ref_sds))
    return {name: KernelTexture(float(np.median(sds[name])), float(np.median(sds[name])) / base,
                                float(np.mean(freqs[name])), len(ref_sds)) for name in series}
