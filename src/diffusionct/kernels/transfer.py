"""The kernel transfer between two unpaired sets of CT images, and same-scan pairs synthesized with it.

Filtered back-projection is linear: two reconstructions of one scan with kernels a and b differ by a
radial filter of the image, H(f) = W_a(f) / W_b(f) (the kernels' windows; the ramp cancels). Noise passes
through the same filter, so in uniform soft tissue the noise power spectra of the two kernels satisfy
NPS_a(f) = |H(f)|^2 NPS_b(f). Across *different* scans (unpaired sets, other patients and doses) the
ratio of the sets' mean spectra keeps that shape up to one constant c (dose, patient size):

    NPS_source(f) / NPS_target(f) = c |H(f)|^2,   with H(0) = 1 (a kernel keeps the mean HU).

We fit log H as an even polynomial without constant term, log H(f) = sum_k a_k (f / f_n)^(2k), together
with log c, by weighted least squares over the frequencies both sets measure; H(0) = 1 holds by
construction. Applied to a target-kernel image B, H gives the source-kernel image of the same scan,
A = F^-1[H F[B]]: training pairs (A, B) from target images alone, with the source kernel's transfer
learnt from source images of other patients. Vendor kernels with non-linear steps, fan-beam geometry
and differing pixel sizes make this an approximation; `docs/unpaired.md` measures how good.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.profiles import apply_transfer
from diffusionct.kernels.spectra import radial_nps

ROI = 32  # px, noise patches
SOFT_TISSUE_HU = (-100.0, 150.0)  # after a 3-px Gaussian: uniform tissue, where noise dominates the spectrum
BODY_MARGIN_PX = 6
DETREND_SIGMA_PX = 4.0  # removes the slow anatomy inside a patch; the same for both sets, so the ratio keeps
BINS = 16
DEGREE = 4  # terms f^2 .. f^8 of log H
MAX_GAIN = 20.0  # |H| is clipped here: above it a kernel's high frequencies are noise the target never had


@dataclass(frozen=True)
class KernelTransfer:
    """H(f) = exp(sum_k coefficients[k] (f / f_norm)^(2k + 2)), f in cycles/mm, fitted up to ``f_max``.

    Attributes:
        coefficients: the a_k of log H.
        f_norm: the frequency scale of the polynomial (cycles/mm).
        f_max: the highest frequency both sets measured; H is held constant above it.
        noise_ratio: c, the ratio of the sets' noise power at low frequency (dose, size; not applied).
        measured: the (frequency, measured |H|) points of the fit, for reports.
    """

    coefficients: tuple[float, ...]
    f_norm: float
    f_max: float
    noise_ratio: float = 1.0
    measured: tuple[tuple[float, float], ...] = ()

    def gain(self, frequency: np.ndarray) -> np.ndarray:
        f = np.minimum(np.asarray(frequency, dtype=np.float64), self.f_max) / self.f_norm
        log_gain = sum(a * f ** (2 * k + 2) for k, a in enumerate(self.coefficients))
        return np.clip(np.exp(log_gain), 0.0, MAX_GAIN)

    def apply(self, hu: np.ndarray, pixel_mm: float) -> np.ndarray:
        """The source-kernel version of target-kernel slices ``(..., H, W)`` (edges reflected, not wrapped)."""
        return apply_transfer(hu, self.gain, pixel_mm, pad=ROI)

    def scaled(self, factor: float) -> "KernelTransfer":
        """The transfer with its log-gain times ``factor`` (training augmentation around the estimate)."""
        return KernelTransfer(tuple(a * factor for a in self.coefficients), self.f_norm, self.f_max, self.noise_ratio,
                              self.measured)

    def to_dict(self) -> dict:
        return {"coefficients": list(self.coefficients), "f_norm": self.f_norm, "f_max": self.f_max,
                "noise_ratio": self.noise_ratio, "measured": [list(p) for p in self.measured]}

    @classmethod
    def from_dict(cls, data: dict) -> "KernelTransfer":
        return cls(tuple(data["coefficients"]), data["f_norm"], data["f_max"], data.get("noise_ratio", 1.0),
                   tuple(tuple(p) for p in data.get("measured", ())))


def noise_patches(hu: np.ndarray) -> np.ndarray:
    """Detrended ROI x ROI patches of uniform soft tissue inside the body of slices ``(Z, H, W)``."""
    patches = []
    for image in np.asarray(hu, dtype=np.float64):
        smooth = ndimage.gaussian_filter(image, 3)
        body = ndimage.binary_erosion(ndimage.binary_fill_holes(image > -500), iterations=BODY_MARGIN_PX)
        uniform = (smooth > SOFT_TISSUE_HU[0]) & (smooth < SOFT_TISSUE_HU[1]) & body
        residual = image - ndimage.gaussian_filter(image, DETREND_SIGMA_PX)
        for r in range(0, image.shape[0] - ROI + 1, ROI // 2):
            for c in range(0, image.shape[1] - ROI + 1, ROI // 2):
                if uniform[r:r + ROI, c:c + ROI].all():
                    patches.append(residual[r:r + ROI, c:c + ROI])
    return np.asarray(patches).reshape(-1, ROI, ROI)


def set_nps(volumes: list[tuple[np.ndarray, float]], f_max: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean radial NPS of a set of ``(slices, pixel_mm)`` volumes, on common rings up to ``f_max``; patch count."""
    spectra, weights = [], []
    for hu, pixel_mm in volumes:
        patches = noise_patches(hu)
        if len(patches):
            freqs, nps = radial_nps(patches, pixel_mm, BINS, max_frequency=f_max, taper=True)
            spectra.append(nps)
            weights.append(len(patches))
    if not spectra:
        return np.linspace(0, f_max, BINS), np.full(BINS, np.nan), 0
    stacked, w = np.asarray(spectra), np.asarray(weights, float)[:, None]
    valid = np.isfinite(stacked)  # patch-count weighted mean over the series that measured each ring
    mean = (np.where(valid, stacked, 0) * w).sum(0) / np.maximum((valid * w).sum(0), 1e-12)
    mean[~valid.any(0)] = np.nan
    return freqs, mean, int(sum(weights))


def estimate_transfer(source: list[tuple[np.ndarray, float]], target: list[tuple[np.ndarray, float]],
                      min_patches: int = 20) -> KernelTransfer:
    """Fit the source kernel's transfer from the target kernel's, from unpaired sets of ``(slices, pixel_mm)``."""
    f_max = min(0.5 / max(px for _, px in source), 0.5 / max(px for _, px in target))  # both sets' Nyquist
    freqs, nps_source, n_source = set_nps(source, f_max)
    _, nps_target, n_target = set_nps(target, f_max)
    if min(n_source, n_target) < min_patches:
        raise DiffusionCTError(f"too little uniform soft tissue to measure the kernels' noise ({n_source} source and "
                               f"{n_target} target patches of {ROI} px, need {min_patches}); give more or larger series")
    floor = 1e-4 * np.nanmax(nps_target)
    usable = np.isfinite(nps_source) & np.isfinite(nps_target) & (nps_source > floor) & (nps_target > floor)
    usable &= freqs > 0.5 / (DETREND_SIGMA_PX * max(px for _, px in source + target)) / np.pi  # below: detrended away
    if usable.sum() < DEGREE + 2:
        raise DiffusionCTError("the kernels' noise spectra overlap in too few frequencies to estimate the transfer")
    f, log_ratio = freqs[usable], 0.5 * np.log(nps_source[usable] / nps_target[usable])  # log sqrt(c) + log H
    f_norm = float(f_max)
    design = np.column_stack([np.ones_like(f)] + [(f / f_norm) ** (2 * k + 2) for k in range(DEGREE)])
    ridge = 1e-3 * np.eye(design.shape[1])
    ridge[0, 0] = 0.0
    solution = np.linalg.solve(design.T @ design + ridge, design.T @ log_ratio)
    measured = tuple((float(x), float(np.exp(y - solution[0]))) for x, y in zip(f, log_ratio))
    return KernelTransfer(tuple(float(a) for a in solution[1:]), f_norm, float(f.max()), float(np.exp(2 * solution[0])),
                          measured)
