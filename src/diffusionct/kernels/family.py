"""Reconstruction kernels: filtered back-projection filters defined by their frequency response.

A kernel is the ramp filter times a window W(f), f in cycles/mm. The ramp is the band-limited
Ram-Lak filter sampled in the spatial domain (Kak & Slaney, eq. 61), which keeps the DC term right
so that uniform regions keep their HU.

The family imitates Siemens' body kernels B10f, B30f, B50f and B70f. Each window was calibrated on
the simulator's own chest slices (0.69 mm pixels, 1 mm slices) by the fixed procedure of
:func:`diffusionct.kernels.spectra.kernel_texture` against real same-scan Siemens chest
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

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.profiles import KernelProfile, UnknownProfile, find_profile

NYQUIST_069 = 0.5 / 0.69  # cycles/mm at the calibration pixel, the reference of the boosts


@dataclass(frozen=True)
class Kernel:
    """A named reconstruction kernel.

    Attributes:
        name: the name used on the command line (``b10``, ``b30``, ``b50``, ``b70``).
        dicom_name: the ConvolutionKernel written to DICOM.
        like: the vendor kernels it imitates.
        window: W(f) -> gain, f in cycles/mm.
        noise_floor_hu2_mm2: white noise power of the stored images (a measured profile's floor; 0: none).
        of_images: the window is measured on a scanner's images (a profile), so it already holds the scanner's whole
            response: the simulator divides its own back-projection interpolation out (the analytic family does not).
    """

    name: str
    dicom_name: str
    like: str
    window: Callable[[np.ndarray], np.ndarray]
    noise_floor_hu2_mm2: float = 0.0
    of_images: bool = False

    def stretched(self, factor: float) -> "Kernel":
        """The same kernel with its frequency axis scaled by ``factor`` (> 1: sharper), same names.

        Domain randomization: one vendor kernel differs a little from scanner to scanner and with the
        reconstruction's field of view.
        """
        window = self.window
        return Kernel(self.name, self.dicom_name, self.like, lambda f: window(np.asarray(f) / factor),
                      self.noise_floor_hu2_mm2, self.of_images)


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


def kernel_from_profile(profile: KernelProfile) -> Kernel:
    """The simulator's kernel of a measured profile, written to DICOM as ``SIM_`` and the kernel's name (``SIM_B30F``:
    of the B30 family, so a model of B30f series takes it)."""
    return Kernel(profile.name, f"SIM_{profile.name.upper()}", profile.label, profile.window_at, profile.noise_floor_hu2_mm2,
                  of_images=True)


def get_kernel(name: str, profile_files: list | tuple = ()) -> Kernel:
    """A kernel by name: the analytic family (``b10`` .. ``b70`` and their aliases), else a measured profile (``B30f``,
    ``FC51``, ``Canon:FC13``) from ``profile_files`` or the shipped profiles."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in KERNELS:
        return KERNELS[key]
    try:
        return kernel_from_profile(find_profile(name, profile_files))
    except UnknownProfile as exc:  # a damaged profile file keeps its own message
        raise DiffusionCTError(
            f"unknown kernel '{name}': not one of the analytic family {', '.join(KERNELS)} "
            f"(aliases: {', '.join(f'{a}={k}' for a, k in ALIASES.items())}), and {exc}"
        ) from None
