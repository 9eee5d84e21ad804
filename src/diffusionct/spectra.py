"""The radially averaged noise power spectrum, one implementation for the simulator's calibration and the
judge's image metrics (a neutral module: the judge imports nothing of the simulator or the methods)."""

from __future__ import annotations

import numpy as np


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
