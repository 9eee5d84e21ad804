"""Kernel profiles measured from real reconstructions of one scan (same-scan pairs), by the fixed procedure of the
project's calibration targets (``shared/tools/nps_curves.py``): soft-tissue 32 x 32 ROIs chosen on the reference
series, each less its 9 x 9 box mean and Hann-windowed, ring-averaged power at k / (32 pixels), k = 1..16.

Two reconstructions of one scan differ by the ratio of their kernels' windows, so per frequency
T(f) = sqrt(NPS_kernel / NPS_reference) is W_kernel / W_reference; its spread comes from a bootstrap over ROIs.
The reference kernel's own window is taken from a known profile of that kernel when there is one, else from its
noise spectrum: filtered back-projection gives noise power proportional to |f| W(f)^2, once the procedure's own
response (box mean and window, measured on white noise) is divided out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.profiles import KernelProfile
from diffusionct.kernels.spectra import BOX_PX, ROI_PX, soft_tissue_rois

BINS = ROI_PX // 2
BOOTSTRAP = 200
FLOOR_FRACTION = 3.0  # bins whose power is within 3x the stored images' white floor are not the kernel's
ROLL_OFF = 1.4  # beyond the measured band a window falls to zero (raised cosine) by 1.4 x its last frequency
MIN_WINDOW = 1e-3


class NoSoftTissue(DiffusionCTError):
    """A series without one soft-tissue ROI: nothing of its kernel's noise to measure."""


_WINDOW = np.hanning(ROI_PX)[:, None] * np.hanning(ROI_PX)[None, :]
_FREQUENCY = np.fft.fftfreq(ROI_PX)
_RINGS = np.rint(np.hypot(*np.meshgrid(_FREQUENCY, _FREQUENCY, indexing="ij")) * ROI_PX).astype(int)
_RING_MASKS = [_RINGS == k for k in range(1, BINS + 1)]


def _power(patch: np.ndarray) -> np.ndarray:
    """The fixed procedure's 2D spectrum of one patch: less its box mean, Hann-windowed, |FFT|^2 (not yet normalised)."""
    patch = np.asarray(patch, dtype=np.float64)
    return np.abs(np.fft.fft2((patch - ndimage.uniform_filter(patch, BOX_PX)) * _WINDOW)) ** 2


def _ring_mean(power: np.ndarray, scale: float) -> np.ndarray:
    """``power`` times ``scale`` averaged over the rings 1..BINS."""
    power = power * scale
    return np.array([power[ring].mean() for ring in _RING_MASKS])


def _norm(pixel_mm: float) -> float:
    """Power to NPS in HU^2 mm^2 (pixel area over the window's energy)."""
    return pixel_mm**2 / (ROI_PX**2 * np.mean(_WINDOW**2))


def roi_spectra(volumes: list[np.ndarray], pixel_mm: float) -> np.ndarray:
    """``(rois, len(volumes), BINS)`` ring-averaged noise power (HU^2 mm^2) of same-grid volumes ``(slices, H, W)``;
    the ROIs are chosen on ``volumes[0]`` (the reference)."""
    shapes = {v.shape for v in volumes}
    if len(shapes) != 1:
        raise DiffusionCTError(f"the reconstructions of one scan must share one grid, got shapes {sorted(shapes)}")
    out = []
    for i in range(volumes[0].shape[0]):
        for y, x in soft_tissue_rois(volumes[0][i]):
            out.append([_ring_mean(_power(volume[i, y:y + ROI_PX, x:x + ROI_PX]), _norm(pixel_mm)) for volume in volumes])
    if not out:
        raise NoSoftTissue("no soft-tissue region (32 x 32 pixels in -100..150 HU, inside the body) in the reference "
                               "series: calibration needs uniform soft tissue")
    return np.asarray(out)


def bin_frequencies(pixel_mm: float) -> np.ndarray:
    return np.arange(1, BINS + 1) / (ROI_PX * pixel_mm)


def procedure_response() -> np.ndarray:
    """The procedure's response per bin (box-mean removal and window) on white noise, relative to its mean power."""
    noise = np.random.default_rng(0).standard_normal((64, ROI_PX, ROI_PX))
    power = np.zeros((ROI_PX, ROI_PX))
    for patch in noise:
        power += _power(patch)
    return _ring_mean(power, 1.0 / (len(noise) * ROI_PX**2 * np.mean(_WINDOW**2)))


@dataclass
class PairedMeasurement:
    """Transfer curves of several kernels against a reference kernel, measured on reconstructions of the same scans."""

    pixel_mm: float
    frequencies: np.ndarray  # cycles/mm, BINS
    reference: str
    nps: dict[str, np.ndarray]  # mean NPS per kernel (reference included), HU^2 mm^2
    transfer: dict[str, np.ndarray]  # W_kernel / W_reference per bin
    spread: dict[str, np.ndarray]  # bootstrap SD of log transfer per bin
    rois: int


def measure_pairs(reference: str, scans: list[dict[str, np.ndarray]], pixel_mm: float, seed: int = 0) -> PairedMeasurement:
    """Transfer of every kernel of ``scans`` (each a dict kernel -> volume, one scan's reconstructions on one grid) to
    ``reference``, pooled over the scans' ROIs."""
    kernels = [reference] + sorted({k for scan in scans for k in scan if k != reference})
    spectra = []
    for scan in scans:
        if reference not in scan or len(scan) < 2:
            continue
        present = [k for k in kernels if k in scan]
        rois = roi_spectra([scan[k] for k in present], pixel_mm)
        full = np.full((len(rois), len(kernels), BINS), np.nan)
        full[:, [kernels.index(k) for k in present]] = rois
        spectra.append(full)
    if not spectra:
        raise DiffusionCTError(f"no scan has the reference kernel {reference} beside another kernel")
    power = np.concatenate(spectra)
    mean = np.nanmean(power, axis=0)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        sample = power[rng.integers(0, len(power), len(power))]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.nanmean(sample, axis=0)
            draws.append(0.5 * np.log(m[1:] / m[:1]))
    draws = np.asarray(draws)
    transfer = {k: np.sqrt(mean[i] / mean[0]) for i, k in enumerate(kernels) if i}
    spread = {k: np.nanstd(draws[:, i - 1], axis=0) for i, k in enumerate(kernels) if i}
    return PairedMeasurement(pixel_mm, bin_frequencies(pixel_mm), reference, dict(zip(kernels, mean)), transfer, spread,
                             len(power))


def white_floor(nps: np.ndarray) -> float:
    """The white noise floor of stored images in a spectrum (HU^2 mm^2): the level its last bins flatten to when they
    lie two decades under its peak and within a factor 1.5 of each other; 0 when they do not flatten."""
    tail = nps[-3:]
    if tail.max() < 0.01 * nps.max() and tail.max() < 1.5 * tail.min():
        return float(tail.min())
    return 0.0


def kernel_band(nps: np.ndarray) -> np.ndarray:
    """The bins where a spectrum is the kernel's, not the stored images' floor (a prefix of the bins)."""
    floor = white_floor(nps)
    good = nps > FLOOR_FRACTION * floor if floor else np.ones(len(nps), bool)
    return np.arange(len(nps)) < (np.argmin(good) if not good.all() else len(nps))


FIRST_FIT_BIN = 2  # the box mean and the anatomy left in soft tissue dominate the two lowest bins


def noise_amplitude(frequencies: np.ndarray, nps: np.ndarray) -> np.ndarray:
    """log sqrt(NPS / (|f| x the procedure's response)): log W(f) plus the series' own noise level (FBP noise power
    is proportional to |f| W(f)^2 times the dose, size and thickness terms, which do not depend on f)."""
    return 0.5 * np.log(nps / (frequencies * procedure_response()))


def fit_log_window(frequencies: np.ndarray, nps: np.ndarray, band: np.ndarray | None = None) -> tuple[float, float, float]:
    """(level, a, b) of log sqrt(NPS / (|f| response)) = level + a f^2 + b f^4: see :func:`fit_log_amplitude`."""
    return fit_log_amplitude(frequencies, noise_amplitude(frequencies, nps), band)


def fit_log_amplitude(frequencies: np.ndarray, log_amplitude: np.ndarray,
                      band: np.ndarray | None = None) -> tuple[float, float, float]:
    """(level, a, b) of a log noise amplitude = level + a f^2 + b f^4, fitted over the bins from the third to the end
    of ``band``: W(0) = 1 by construction, so ``level`` is the series' noise level and a, b its window."""
    use = np.arange(len(frequencies)) >= FIRST_FIT_BIN
    if band is not None:
        use &= band
    f = frequencies[use]
    design = np.column_stack([np.ones_like(f), f**2, f**4])
    level, a, b = np.linalg.lstsq(design, log_amplitude[use], rcond=None)[0]
    return float(level), float(a), float(b)


FIRST_NOISE_BIN = 5  # from the sixth bin (6 cycles per ROI) on, soft tissue's noise outweighs its anatomy


def window_from_nps(frequencies: np.ndarray, nps: np.ndarray, band: np.ndarray | None = None) -> np.ndarray:
    """An absolute window from a noise spectrum. Below :data:`FIRST_NOISE_BIN` anatomy and the box mean disturb the
    bins, so log W there is the smooth a f^2 + b f^4 of :func:`fit_log_window`; from it on, the measured amplitude
    itself (a 3-bin mean of its departure from the fit, continuous at the join): real spectra keep more power at high
    frequencies than two terms can follow (Siemens B30f: 1.6x the fit at 0.5-0.6 cycles/mm)."""
    f = np.asarray(frequencies, float)
    level, a, b = fit_log_window(f, nps, band)
    smooth = a * f**2 + b * f**4
    padded = np.pad(noise_amplitude(f, nps) - level - smooth, 1, mode="edge")
    departure = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
    beyond = np.arange(len(f)) >= FIRST_NOISE_BIN
    return np.exp(smooth + np.where(beyond, departure - departure[FIRST_NOISE_BIN], 0.0))


def without_floor(nps: np.ndarray) -> np.ndarray:
    """Per bin, the kernel's own share of a spectrum's amplitude: a measured transfer includes the stored images' white
    floor, which the simulator adds again on top of the window."""
    floor = white_floor(nps)
    return np.sqrt(np.clip(1.0 - floor / np.asarray(nps, float), 0.0, None)) if floor else np.ones(len(nps))


def extend_window(frequencies: np.ndarray, window: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The window on [0, ROLL_OFF x the last frequency]: W(0) = 1, the measured band as it is, the bins past it (a noise
    floor) continued along log W's slope in f^2 over the band's last three bins, then a raised-cosine roll-off."""
    f, w = np.asarray(frequencies, float), np.asarray(window, float).copy()
    last = int(np.flatnonzero(band)[-1])
    if last < len(f) - 1:
        slope = np.polyfit(f[last - 2:last + 1] ** 2, np.log(w[last - 2:last + 1]), 1)[0]
        w[last + 1:] = w[last] * np.exp(slope * (f[last + 1:] ** 2 - f[last] ** 2))
    measured_up_to = float(f[last])
    step = f[1] - f[0]
    beyond = np.arange(f[-1] + step, ROLL_OFF * f[-1] + step, step)
    cosine = 0.5 * (1 + np.cos(np.pi * np.clip((beyond - f[-1]) / ((ROLL_OFF - 1) * f[-1]), 0, 1)))
    grid = np.concatenate([[0.0], f, beyond])
    values = np.concatenate([[1.0], w, np.maximum(w[-1] * cosine, MIN_WINDOW)])
    return grid, np.maximum(values, MIN_WINDOW), measured_up_to


def profiles_from_measurement(measurement: PairedMeasurement, vendor: str, provenance: str,
                              reference_window: KernelProfile | None = None) -> list[KernelProfile]:
    """A profile per kernel of a paired measurement; the reference's window from ``reference_window`` when given
    (a known profile of that kernel), else from its noise spectrum."""
    f = measurement.frequencies
    ref_nps = measurement.nps[measurement.reference]
    ref_band = kernel_band(ref_nps)
    if reference_window is not None:
        ref_w = reference_window.window_at(f)
    else:
        ref_w = window_from_nps(f, ref_nps, ref_band)
    profiles = []
    for kernel, nps in measurement.nps.items():
        band = kernel_band(nps) & ref_band
        if band.sum() < 4:
            raise DiffusionCTError(f"kernel {kernel}: fewer than 4 frequency bins above the stored images' noise floor")
        w = ref_w if kernel == measurement.reference else ref_w * measurement.transfer[kernel] * without_floor(nps)
        grid, values, up_to = extend_window(f, w, band)
        spread = np.zeros(len(f)) if kernel == measurement.reference else np.nan_to_num(measurement.spread[kernel])
        spread_grid = np.concatenate([[0.0], spread, np.full(len(grid) - len(f) - 1, spread[-1])])
        profiles.append(KernelProfile(
            name=kernel, vendor=vendor, frequencies=tuple(np.round(grid, 5)), window=tuple(np.round(values / values[0], 6)),
            pixel_mm=round(measurement.pixel_mm, 5), measured_up_to=round(up_to, 5),
            provenance=f"{provenance}; {measurement.rois} ROIs; relative to {measurement.reference}",
            spread=tuple(np.round(spread_grid, 5)), noise_floor_hu2_mm2=round(white_floor(nps), 4)))
    return profiles
