"""The kernel transfer between two unpaired sets of CT images, and same-scan pairs synthesized with it.

Filtered back-projection is linear: two reconstructions of one scan with kernels a and b differ by a
radial filter of the image, H(f) = W_a(f) / W_b(f) (the kernels' windows; the ramp cancels). Across
*different* scans (unpaired sets, other patients and doses) the ratio of the kernels' noise spectra is
|H|^2 times one constant, the sets' difference in dose and patients; :mod:`diffusionct.kernels.unpaired`
fits that constant beside log H(f) = sum_k a_k (f / f_n)^(2k) (no constant term: H(0) = 1), so it never
enters H.

Applied to a target-kernel image B, H gives the source-kernel image of the same scan, A = F^-1[H F[B]]:
training pairs (A, B) from target images alone, with the source kernel's transfer learnt from source images
of other patients. Vendor kernels with non-linear steps, fan-beam geometry and differing pixel sizes make
this an approximation; `docs/unpaired.md` measures how good.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusionct.kernels.profiles import apply_transfer
from diffusionct.kernels.unpaired import measure_unpaired

PAD_PX = 32  # mirrored edge when a transfer is applied
MAX_GAIN = 20.0  # |H| is clipped here: above it a kernel's high frequencies are noise the target never had


@dataclass(frozen=True)
class KernelTransfer:
    """H(f) = exp(sum_k coefficients[k] (f / f_norm)^(2k + 2)), f in cycles/mm, fitted up to ``f_max``.

    Attributes:
        coefficients: the a_k of log H.
        f_norm: the frequency scale of the polynomial (cycles/mm).
        f_max: the highest frequency both sets measured; H is held constant above it.
        noise_ratio: the ratio of the sets' mean noise power, window removed (dose, size; for reports, never applied).
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
        return apply_transfer(hu, self.gain, pixel_mm, pad=PAD_PX)

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


def estimate_transfer(source: list[tuple[np.ndarray, float]], target: list[tuple[np.ndarray, float]]) -> KernelTransfer:
    """Fit the source kernel's transfer from the target kernel's, from unpaired sets of ``(slices, pixel_mm)``, one
    patient a series."""
    measurement = measure_unpaired({"source": [(f"series {i}", hu, px) for i, (hu, px) in enumerate(source)],
                                    "target": [(f"series {i}", hu, px) for i, (hu, px) in enumerate(target)]})
    fit = measurement.fit_transfer("target", "source")  # log(W_source / W_target) = log H
    f = measurement.frequencies[fit.usable]
    return KernelTransfer(tuple(float(a) for a in fit.coefficients), fit.f_norm, float(f.max()), float(np.exp(2 * fit.offset)),
                          tuple((float(x), float(np.exp(y))) for x, y in zip(f, fit.per_bin[fit.usable])))
