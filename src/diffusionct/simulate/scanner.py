"""The scanner model: HU slab -> noisy sinogram -> filtered back-projection with several kernels.

Per output slice:

1. The object's attenuation is averaged over the slice thickness (the detector row integrates along
   z), then forward projected (parallel beam, :mod:`diffusionct.simulate.projector`).
2. Photon noise: transmitted counts ``N ~ Poisson(I0 exp(-p))`` plus Gaussian electronic noise of
   ``electronic_noise`` counts, with ``I0 = photons_per_mas_mm * mas * thickness_mm`` per ray;
   the noisy line integral is ``-log(max(N, 1) / I0)``. Thicker slices gather more photons.
3. Every requested kernel reconstructs **the same noisy sinogram**, as a scanner does when the same
   raw data is reconstructed twice.

A mono-energetic beam is modelled (no beam hardening or scatter), at an effective energy where
water attenuates 0.0192 / mm (about 70 keV, NIST XCOM), so that HU = 1000 (mu - mu_w) / mu_w exactly
in the noise-free limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.simulate.kernels import Kernel, filter_sinograms
from diffusionct.simulate.projector import ParallelBeamGeometry, Projector

MU_WATER_PER_MM = 0.0192


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    return MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    return 1000.0 * (np.asarray(mu) - MU_WATER_PER_MM) / MU_WATER_PER_MM


@dataclass(frozen=True)
class ScannerSettings:
    """Acquisition settings of the simulated scanner.

    Attributes:
        size: reconstructed matrix (``size`` x ``size``).
        pixel_mm: reconstructed pixel size; the field of view is ``size * pixel_mm``.
        n_views: projections per half rotation (parallel beam, 0 to 180 degrees).
        mas: tube current-time product; the dose setting.
        photons_per_mas_mm: unattenuated photons per detector bin per view per mAs and mm of slice.
        electronic_noise: standard deviation of the detector's additive noise, in counts.
        kvp: tube voltage written to DICOM (the spectrum itself is not modelled).
    """

    size: int = 512
    pixel_mm: float = 0.7
    n_views: int = 720
    mas: float = 100.0
    photons_per_mas_mm: float = 4000.0
    electronic_noise: float = 5.0
    kvp: float = 120.0

    def __post_init__(self) -> None:
        if self.size < 16:
            raise DiffusionCTError(f"image size {self.size} is too small; use at least 16 pixels")
        if self.pixel_mm <= 0:
            raise DiffusionCTError(f"pixel size must be positive, got {self.pixel_mm} mm")
        if self.mas <= 0:
            raise DiffusionCTError(f"dose (mAs) must be positive, got {self.mas}")
        if self.n_views < 8:
            raise DiffusionCTError(f"n_views must be at least 8, got {self.n_views}")
        if self.electronic_noise < 0:
            raise DiffusionCTError(f"electronic noise must be >= 0, got {self.electronic_noise}")

    @property
    def geometry(self) -> ParallelBeamGeometry:
        return ParallelBeamGeometry(self.size, self.pixel_mm, self.n_views)

    def incident_photons(self, thickness_mm: float) -> float:
        return self.photons_per_mas_mm * self.mas * thickness_mm


class Scanner:
    """Acquires noisy sinograms and reconstructs them with named kernels."""

    def __init__(self, settings: ScannerSettings, device: str = "cpu"):
        self.settings = settings
        self.projector = Projector(settings.geometry, device=device)

    def sinograms(self, hu_slices: np.ndarray) -> np.ndarray:
        """Noise-free line integrals of HU slices ``(B, N, N)``."""
        return self.projector.project(hu_to_mu(hu_slices))

    def add_noise(self, sinos: np.ndarray, thickness_mm: float, rngs: list[np.random.Generator]) -> np.ndarray:
        """Poisson photon noise plus electronic noise, one generator per slice (order-independent)."""
        s = self.settings
        i0 = s.incident_photons(thickness_mm)
        noisy = np.empty_like(sinos)
        for index, (sino, rng) in enumerate(zip(sinos, rngs)):
            counts = rng.poisson(i0 * np.exp(-sino)).astype(np.float64)
            if s.electronic_noise > 0:
                counts += rng.normal(0.0, s.electronic_noise, size=counts.shape)
            noisy[index] = -np.log(np.maximum(counts, 1.0) / i0)
        return noisy

    def reconstruct(self, sinos: np.ndarray, kernel: Kernel) -> np.ndarray:
        """Filtered back-projection in HU of sinograms ``(B, n_views, n_detectors)``."""
        g = self.settings.geometry
        filtered = filter_sinograms(sinos, kernel, g.pixel_mm)
        mu = self.projector.backproject(filtered) * (math.pi / g.n_views)
        return mu_to_hu(mu)

    def scan(self, hu_slices: np.ndarray, kernels: list[Kernel], thickness_mm: float,
             rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        """Reconstructions ``{kernel name: (B, N, N) HU}`` of one noisy acquisition of ``hu_slices``."""
        noisy = self.add_noise(self.sinograms(hu_slices), thickness_mm, rngs)
        return {kernel.name: self.reconstruct(noisy, kernel).astype(np.float32) for kernel in kernels}
