"""Reconstruction kernels: filtered back-projection filters defined by their frequency response.

A kernel is the ramp filter times a window W(f), f in cycles/mm. The ramp is the band-limited
Ram-Lak filter sampled in the spatial domain (Kak & Slaney, eq. 61), which keeps the DC term right
so that uniform regions keep their HU.

The family imitates Siemens' body kernels B10f, B30f, B50f and B70f. Each window was calibrated on
the simulator's own chest slices (0.69 mm pixels, 1 mm slices) by the fixed procedure of
:func:`diffusionct.spectra.kernel_texture` against real same-scan Siemens chest
reconstructions (noise SD relative to B30f; power-weighted mean frequency of the noise spectrum):

======  ======================================  =============  ====================
kernel  window W(f)                             real ratio     real NPS mean (c/mm)
======  ======================================  =============  ====================
b10     Gaussian, 50 % at 0.33 c/mm             0.69 - 0.75    0.232 - 0.234
b30     Gaussian, 50 % at 0.42 c/mm             1              0.273 - 0.298
b50     (1 + 1.8 (f/F)^4) x Gaussian(0.465)     1.87 - 2.29    0.429 - 0.467
b70     (1 + 1.9 (f/F)^2) x cos^2 0.46 -> 1.0   3.94 - 5.00    0.544 - 0.562
======  ======================================  =============  ====================

F = 0.725 cycles/mm, the Nyquist frequency of a 0.69 mm pixel. The sharp kernels boost the high
frequencies (edge enhancement), as real B50f-B70f kernels do; b70 keeps gain past the pixel's
Nyquist frequency, which the detector's finer sampling (two bins per pixel) passes on. All windows
are in absolute frequency, as vendor kernels are, so with coarser pixels the kernels become alike,
as on a real scanner with a large field of view. The measured values (and MTF50) are printed by
``benchmarks/simulator_calibration.py`` and kept in ``docs/simulator.md``.

The names ``smooth``, ``medium`` and ``sharp`` of earlier versions are aliases of b30, b50 and b70
(Br40-, Br54- and Bl64-class use); their DICOM ConvolutionKernel is the family name (SIM_B30...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from diffusionct.errors import DiffusionCTError

NYQUIST_069 = 0.5 / 0.69  # cycles/mm at the calibration pixel, the reference of the boosts


@dataclass(frozen=True)
class Kernel:
    """A named reconstruction kernel.

    Attributes:
        name: the name used on the command line (``b10``, ``b30``, ``b50``, ``b70``).
        dicom_name: the ConvolutionKernel written to DICOM.
        like: the vendor kernels it imitates.
        window: W(f) -> gain, f in cycles/mm.
    """

    name: str
    dicom_name: str
    like: str
    window: Callable[[np.ndarray], np.ndarray]

    def stretched(self, factor: float) -> "Kernel":
        """The same kernel with its frequency axis scaled by ``factor`` (> 1: sharper), same names.

        Domain randomization: one vendor kernel differs a little from scanner to scanner and with the
        reconstruction's field of view.
        """
        window = self.window
        return Kernel(self.name, self.dicom_name, self.like, lambda f: window(np.asarray(f) / factor))


def gaussian_window(half_gain_frequency: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: np.exp(-np.log(2.0) * (f / half_gain_frequency) ** 2)


def raised_cosine(f: np.ndarray, start: float, stop: float) -> np.ndarray:
    x = np.clip((f - start) / (stop - start), 0.0, 1.0)
    return 0.5 * (1 + np.cos(np.pi * x))


def _b50(f: np.ndarray) -> np.ndarray:
    return (1 + 1.8 * (f / NYQUIST_069) ** 4) * gaussian_window(0.465)(f)


def _b70(f: np.ndarray) -> np.ndarray:
    return (1 + 1.9 * (f / NYQUIST_069) ** 2) * raised_cosine(f, 0.46, 1.0)


KERNELS: dict[str, Kernel] = {
    k.name: k
    for k in (
        Kernel("b10", "SIM_B10", "Siemens B10f (very smooth)", gaussian_window(0.33)),
        Kernel("b30", "SIM_B30", "Siemens B30f / Br40, GE STANDARD", gaussian_window(0.42)),
        Kernel("b50", "SIM_B50", "Siemens B50f / Br54", _b50),
        Kernel("b70", "SIM_B70", "Siemens B70f / Bl64, GE LUNG", _b70),
    )
}
ALIASES = {"smooth": "b30", "medium": "b50", "sharp": "b70"}


def get_kernel(name: str) -> Kernel:
    key = ALIASES.get(name.lower(), name.lower())
    try:
        return KERNELS[key]
    except KeyError:
        raise DiffusionCTError(
            f"unknown kernel '{name}'; known kernels: {', '.join(KERNELS)} "
            f"(aliases: {', '.join(f'{a}={k}' for a, k in ALIASES.items())})"
        ) from None


def ramp_filter(n_detectors: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Frequency response of the spatially sampled Ram-Lak filter, its frequencies and the FFT size.

    The size is an even FFT-friendly length of at least twice the detector (no circular wrap-around).
    """
    size = next_fast_len(2 * n_detectors, real=True)
    while size % 2:
        size = next_fast_len(size + 1, real=True)
    n = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-size // 2 + 1, 0)])
    h = np.zeros(size)
    h[0] = 1.0 / (4 * spacing_mm**2)
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd] * spacing_mm) ** 2
    response = np.real(np.fft.rfft(h)) * spacing_mm
    freqs = np.fft.rfftfreq(size, d=spacing_mm)
    return response, freqs, size


def filter_sinograms(sinos: np.ndarray, kernels: list[Kernel], spacing_mm: float) -> np.ndarray:
    """Ramp x window of every kernel along the detector axis of ``(B, n_views, n_detectors)`` sinograms.

    Returns ``(len(kernels) * B, n_views, n_detectors)``, kernel-major; the forward FFT is shared.
    """
    n_det = sinos.shape[-1]
    ramp, freqs, size = ramp_filter(n_det, spacing_mm)
    spectrum = rfft(np.ascontiguousarray(sinos), n=size, axis=-1, workers=-1)
    filtered = [irfft(spectrum * (ramp * kernel.window(freqs)), n=size, axis=-1, workers=-1)[..., :n_det]
                for kernel in kernels]
    return np.concatenate(filtered)
