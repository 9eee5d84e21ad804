"""Reconstruction kernels: filtered back-projection filters defined by their frequency response.

A kernel is the ramp filter times a window W(f), f in cycles/mm. The ramp is the band-limited
Ram-Lak filter sampled in the spatial domain (Kak & Slaney, eq. 61), which keeps the DC term right
so that uniform regions keep their HU. The windows:

* ``smooth``: like Siemens Br40 / B30f (GE STANDARD): a Gaussian roll-off to 50 % at 0.34 cycles/mm.
* ``medium``: like Siemens Br54 / B50f: flat to 0.18 cycles/mm, then a raised cosine to 0 at 0.71.
* ``sharp``: like Siemens Bl64 / B70f (GE LUNG / BONE): edge enhancement (1 + 1.2 (f/0.714)^2) under
  a raised cosine from 0.39 to 0.79 cycles/mm.

All windows are defined in absolute frequency, as vendor kernels are; 0.714 cycles/mm is the
Nyquist frequency of the default 0.7 mm pixel. With coarser pixels the kernels become alike, as on
a real scanner with a large field of view.

Their measured MTF50 (edge method, ``benchmarks/simulator_calibration.py``) is in
``docs/simulator.md``; the windows act on top of the projector's interpolation blur.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from diffusionct.errors import DiffusionCTError


NOMINAL_NYQUIST = 0.5 / 0.7  # cycles/mm at the default 0.7 mm pixel


@dataclass(frozen=True)
class Kernel:
    """A named reconstruction kernel.

    Attributes:
        name: the name used on the command line (``smooth``, ``medium``, ``sharp``).
        dicom_name: the ConvolutionKernel written to DICOM.
        like: the vendor kernels it imitates.
        window: W(f, f_nyquist) -> gain, f in cycles/mm.
    """

    name: str
    dicom_name: str
    like: str
    window: Callable[[np.ndarray, float], np.ndarray]


def _smooth(f: np.ndarray, nyquist: float) -> np.ndarray:
    return np.exp(-np.log(2.0) * (f / 0.34) ** 2)


def _raised_cosine(f: np.ndarray, start: float, stop: float) -> np.ndarray:
    x = np.clip((f - start) / (stop - start), 0.0, 1.0)
    return 0.5 * (1 + np.cos(np.pi * x))


def _medium(f: np.ndarray, nyquist: float) -> np.ndarray:
    return _raised_cosine(f, 0.18, 0.71)


def _sharp(f: np.ndarray, nyquist: float) -> np.ndarray:
    return (1 + 1.2 * (f / NOMINAL_NYQUIST) ** 2) * _raised_cosine(f, 0.39, 0.79)


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("smooth", "SIM_SMOOTH", "Siemens Br40 / B30f, GE STANDARD", _smooth),
        Kernel("medium", "SIM_MEDIUM", "Siemens Br54 / B50f", _medium),
        Kernel("sharp", "SIM_SHARP", "Siemens Bl64 / B70f, GE LUNG", _sharp),
    )
}


def get_kernel(name: str) -> Kernel:
    try:
        return KERNELS[name.lower()]
    except KeyError:
        raise DiffusionCTError(f"unknown kernel '{name}'; known kernels: {', '.join(KERNELS)}") from None


def ramp_filter(n_detectors: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Frequency response of the spatially sampled Ram-Lak filter, its frequencies and the FFT size."""
    size = int(2 ** np.ceil(np.log2(2 * n_detectors)))
    n = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-size // 2 + 1, 0)])
    h = np.zeros(size)
    h[0] = 1.0 / (4 * spacing_mm**2)
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd] * spacing_mm) ** 2
    response = np.real(np.fft.rfft(h)) * spacing_mm
    freqs = np.fft.rfftfreq(size, d=spacing_mm)
    return response, freqs, size


def filter_sinograms(sinos: np.ndarray, kernel: Kernel, spacing_mm: float) -> np.ndarray:
    """Apply ramp x window along the detector axis of ``(..., n_views, n_detectors)`` sinograms."""
    n_det = sinos.shape[-1]
    ramp, freqs, size = ramp_filter(n_det, spacing_mm)
    response = ramp * kernel.window(freqs, 0.5 / spacing_mm)
    spectrum = np.fft.rfft(sinos, n=size, axis=-1)
    return np.fft.irfft(spectrum * response, n=size, axis=-1)[..., :n_det]
