"""The scanner model: HU slab -> noisy sinogram -> filtered back-projection with several kernels.

Per output slice:

1. The object's attenuation is averaged over the slice thickness (the detector row integrates along
   z), then forward projected (parallel beam, :mod:`diffusionct.simulate.projector`).
2. Photon noise: transmitted counts ``N ~ Poisson(I0 exp(-p))`` plus Gaussian electronic noise of
   ``electronic_noise`` counts, with ``I0 = photons_per_mas_mm2 * mas * thickness_mm * detector_mm``
   per ray, times the bowtie filter's transmission at the ray's offset and the tube-current
   modulation's factor for its view; the noisy line integral is ``-log(max(N, 1) / I0)``. Thicker
   slices gather more photons.

   * The **bowtie** filter is modelled as water whose thickness grows away from the centre,
     ``strength * (2R - 2 sqrt(R^2 - t^2))`` (capped at ``2R`` beyond ``R``): it flattens the flux
     behind a cylinder of radius ``R`` by the fraction ``strength``. It makes the noise non-stationary
     as on a real scanner: a patient larger than the filter's design gets more noise in the centre.
   * **Tube-current modulation** (angular, as Siemens CARE Dose4D or GE SmartmA): the current of a
     view is proportional to ``exp(max_t p)^strength``, normalised to the nominal mAs over the
     rotation; 0.5 is the square-root law that minimises noise for a given dose.

   Real scanners acquire fan beams and most rebin them to parallel beams before the filtered
   back-projection; the parallel geometry here is that rebinned geometry, with the bowtie and the
   modulation applied where they act (per ray and per view).
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
from diffusionct.kernels.family import Kernel
from diffusionct.simulate.fbp import filter_sinograms
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
        photons_per_mas_mm2: unattenuated photons per view per mAs per mm of detector width (at the
            isocentre) and mm of slice.
        electronic_noise: standard deviation of the detector's additive noise, in counts per bin.
        kvp: tube voltage written to DICOM (the spectrum itself is not modelled).
        detector_oversampling: detector bins per pixel width (see :mod:`~diffusionct.simulate.projector`).
        bowtie_radius_mm: radius of the water cylinder the bowtie filter is shaped for; 0: no bowtie.
        bowtie_strength: fraction of that cylinder's path the bowtie compensates (0..1).
        tcm_strength: angular tube-current modulation exponent; 0: constant current.
    """

    size: int = 512
    pixel_mm: float = 0.7
    n_views: int = 720
    mas: float = 100.0
    photons_per_mas_mm2: float = 5700.0
    electronic_noise: float = 5.0
    kvp: float = 120.0
    detector_oversampling: int = 2
    bowtie_radius_mm: float = 160.0
    bowtie_strength: float = 0.5
    tcm_strength: float = 0.5

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
        if self.detector_oversampling not in (1, 2, 3, 4):
            raise DiffusionCTError(f"detector oversampling must be 1, 2, 3 or 4, got {self.detector_oversampling}")
        if self.bowtie_radius_mm < 0 or not 0 <= self.bowtie_strength <= 1:
            raise DiffusionCTError(
                f"bowtie needs radius >= 0 and strength in 0..1, got {self.bowtie_radius_mm} mm and {self.bowtie_strength}")
        if not 0 <= self.tcm_strength <= 1:
            raise DiffusionCTError(f"tube-current modulation strength must be in 0..1, got {self.tcm_strength}")
        for name in ("pixel_mm", "mas", "photons_per_mas_mm2", "electronic_noise", "bowtie_radius_mm",
                     "bowtie_strength", "tcm_strength", "kvp"):
            if not math.isfinite(getattr(self, name)):
                raise DiffusionCTError(f"scanner setting {name} must be a finite number, got {getattr(self, name)}")

    @property
    def geometry(self) -> ParallelBeamGeometry:
        return ParallelBeamGeometry(self.size, self.pixel_mm, self.n_views, self.detector_oversampling)

    def incident_photons(self, thickness_mm: float) -> float:
        """Unattenuated photons per detector bin per view at the nominal current, without bowtie."""
        return self.photons_per_mas_mm2 * self.mas * thickness_mm * self.geometry.detector_mm

    def bowtie_transmission(self) -> np.ndarray:
        """Fraction of the photons the bowtie filter passes, per detector bin."""
        g = self.geometry
        t = (np.arange(g.n_detectors) - (g.n_detectors - 1) / 2.0) * g.detector_mm
        if self.bowtie_radius_mm == 0 or self.bowtie_strength == 0:
            return np.ones_like(t)
        r = self.bowtie_radius_mm
        chord = 2 * np.sqrt(np.clip(r**2 - t**2, 0.0, None))
        return np.exp(-MU_WATER_PER_MM * self.bowtie_strength * (2 * r - chord))

    def tube_current_profile(self, sino: np.ndarray) -> np.ndarray:
        """Relative tube current per view (mean 1) from the noise-free sinogram ``(n_views, n_det)``."""
        if self.tcm_strength == 0:
            return np.ones(sino.shape[0])
        weight = np.exp(self.tcm_strength * sino.max(axis=1))
        return weight / weight.mean()


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
        bowtie = s.incident_photons(thickness_mm) * s.bowtie_transmission()
        noisy = np.empty_like(sinos)
        for index, (sino, rng) in enumerate(zip(sinos, rngs)):
            i0 = s.tube_current_profile(sino)[:, None] * bowtie[None, :]
            counts = rng.poisson(i0 * np.exp(-sino)).astype(np.float64)
            if s.electronic_noise > 0:
                counts += rng.normal(0.0, s.electronic_noise, size=counts.shape)
            noisy[index] = -np.log(np.maximum(counts, 1.0) / i0)
        return noisy

    def reconstruct(self, sinos: np.ndarray, kernel: Kernel) -> np.ndarray:
        """Filtered back-projection in HU of sinograms ``(B, n_views, n_detectors)``."""
        return self.reconstruct_kernels(sinos, [kernel])[kernel.name]

    def reconstruct_kernels(self, sinos: np.ndarray, kernels: list[Kernel]) -> dict[str, np.ndarray]:
        """``{kernel name: (B, N, N) HU}``: every kernel's filtered sinograms back-projected in one pass."""
        g = self.settings.geometry
        filtered = filter_sinograms(sinos, kernels, g.detector_mm)
        hu = mu_to_hu(self.projector.backproject(filtered) * (math.pi / g.n_views))
        return {kernel.name: hu[i * len(sinos):(i + 1) * len(sinos)] for i, kernel in enumerate(kernels)}

    def scan(self, hu_slices: np.ndarray, kernels: list[Kernel], thickness_mm: float,
             rngs: list[np.random.Generator]) -> dict[str, np.ndarray]:
        """Reconstructions ``{kernel name: (B, N, N) HU}`` of one noisy acquisition of ``hu_slices``."""
        noisy = self.add_noise(self.sinograms(hu_slices), thickness_mm, rngs)
        images = {name: hu.astype(np.float32) for name, hu in self.reconstruct_kernels(noisy, kernels).items()}
        for kernel in kernels:  # a measured profile's white floor of stored images (after the photon noise's draws)
            if kernel.noise_floor_hu2_mm2 > 0:
                sd = math.sqrt(kernel.noise_floor_hu2_mm2) / self.settings.pixel_mm
                for image, rng in zip(images[kernel.name], rngs):
                    image += rng.normal(0.0, sd, image.shape).astype(np.float32)
        return images
