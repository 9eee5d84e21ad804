"""Kernel windows measured from unpaired sets: series of different patients, each reconstructed with one kernel.

Without same-scan pairs, two sets differ by their kernels *and* by their patients (size, anatomy, dose, slice
thickness). FBP noise power is |f| W(f)^2 times terms that do not depend on the frequency (dose, attenuation,
thickness), so the log of each series' noise spectrum is its kernel's log window plus a constant of its own:

1. a kernel's spectrum is its series' noise power pooled ROI by ROI (by the fixed procedure of the paired
   calibration, :mod:`diffusionct.kernels.measure`). Measured on the simulator against same-scan truth, this
   pooling estimates the transfer closer than a mean over patients of their log spectra, each patient weighing the
   same (``docs/unpaired.md``);
2. between two kernels, log sqrt(NPS_target / NPS_source) = c + log(W_target / W_source): the constant c (the sets'
   difference in dose and patients) is fitted beside a smooth even polynomial of the transfer, so it never enters
   the transfer, and W(0) = 1 on both sides; the transfer per bin is the ratio less c. (Taking each series' level
   out first, from its own extrapolation to f = 0, measured worse: that extrapolation is noisy);
3. absolute windows: the smoothest kernel's from its own spectrum (log W = a f^2 + b f^4 with W(0) = 1, as for the
   paired reference), the others' through their transfer to it, as ``calibrate`` does with same-scan pairs.

Each series keeps its own noise level, changed only by the kernel ratio. The spread is a bootstrap over patients
(not ROIs: with a few patients a side, the patients are what varies), kept in the profiles and drawn by
``calibrate``; :func:`uncertain_transfers` names the kernel pairs whose transfer is not larger than its spread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.measure import (BINS, FIRST_FIT_BIN, NoSoftTissue, extend_window, fit_log_amplitude, fit_log_window,
                                         kernel_band, noise_amplitude, roi_spectra, white_floor)
from diffusionct.kernels.profiles import KernelProfile
from diffusionct.kernels.spectra import ROI_PX

log = logging.getLogger(__name__)
MIN_ROIS = 8  # a series with fewer soft-tissue ROIs gives a spectrum too noisy to add a patient's worth to a kernel
BOOTSTRAP = 200
DEGREE = 4  # log transfer: terms f^2 .. f^8
RIDGE = 1e-3


@dataclass
class SeriesSpectrum:
    """One series' log noise amplitude per bin of the common grid (NaN where the series did not measure)."""

    patient: str
    log_amplitude: np.ndarray  # log sqrt(NPS / (|f| response)): log W + the series' own level
    level: float  # the series' own level (dose, size, thickness) from its smooth fit: for pictures, never pooled
    rois: int
    noise_floor: float


@dataclass
class TransferFit:
    """log(W_to / W_from) between two kernels of unpaired sets."""

    offset: float  # c: the sets' difference in log noise amplitude (dose, patients), not the kernels'
    coefficients: np.ndarray  # of (f / f_norm)^(2k + 2), k = 0..DEGREE-1
    f_norm: float
    per_bin: np.ndarray  # measured log transfer per bin, c removed (the smooth fit below FIRST_FIT_BIN; NaN unmeasured)
    usable: np.ndarray  # the bins the fit used

    def smooth(self, frequencies: np.ndarray) -> np.ndarray:
        f = np.asarray(frequencies, float) / self.f_norm
        return sum(a * f ** (2 * k + 2) for k, a in enumerate(self.coefficients))


@dataclass
class UnpairedMeasurement:
    """The spectra of every series of every kernel on one frequency grid (that of the coarsest pixel)."""

    frequencies: np.ndarray  # cycles/mm, BINS
    series: dict[str, list[SeriesSpectrum]]  # kernel -> its series, one per patient
    skipped: list[str] = field(default_factory=list)  # why series were left out

    def log_spectrum(self, kernel: str, patients: np.ndarray | None = None) -> np.ndarray:
        """The kernel's log noise amplitude per bin: its patients' noise power pooled ROI by ROI, as same-scan pairs
        pool it (``patients``: indices, a bootstrap draw); NaN where a patient did not measure."""
        series = self.series[kernel] if patients is None else [self.series[kernel][i] for i in patients]
        power = np.exp(2 * np.array([s.log_amplitude for s in series]))
        rois = np.array([s.rois for s in series], float)
        return 0.5 * np.log(rois @ power / rois.sum())

    def band(self, kernel: str) -> np.ndarray:
        """The bins every series of the kernel measured (above the stored images' floor)."""
        return np.all([np.isfinite(s.log_amplitude) for s in self.series[kernel]], axis=0)

    def fit_transfer(self, from_kernel: str, to_kernel: str, draw: dict | None = None) -> TransferFit:
        """log(W_to / W_from): the ratio of the kernels' spectra, less the constant c fitted beside its smooth shape.
        ``draw``: kernel -> patient indices (a bootstrap draw)."""
        draw = draw or {}
        f = self.frequencies
        ratio = self.log_spectrum(to_kernel, draw.get(to_kernel)) - self.log_spectrum(from_kernel, draw.get(from_kernel))
        usable = self.band(from_kernel) & self.band(to_kernel) & (np.arange(len(f)) >= FIRST_FIT_BIN)
        if usable.sum() < DEGREE + 2:
            raise DiffusionCTError(f"the noise spectra of {from_kernel} and {to_kernel} overlap in too few frequencies "
                                   "to estimate their transfer")
        f_norm = float(f[-1])
        design = np.column_stack([np.ones(usable.sum())] + [(f[usable] / f_norm) ** (2 * k + 2) for k in range(DEGREE)])
        ridge = RIDGE * np.eye(DEGREE + 1)
        ridge[0, 0] = 0.0
        solution = np.linalg.solve(design.T @ design + ridge, design.T @ ratio[usable])
        fit = TransferFit(float(solution[0]), solution[1:], f_norm, np.full(len(f), np.nan), usable)
        measured = self.band(from_kernel) & self.band(to_kernel)
        fit.per_bin[measured] = ratio[measured] - fit.offset
        low = np.arange(len(f)) < FIRST_FIT_BIN  # the box mean and anatomy own these bins: the smooth fit there
        fit.per_bin[low] = fit.smooth(f[low])
        return fit

    def draws(self, seed: int = 0, count: int = BOOTSTRAP) -> list[dict[str, np.ndarray]]:
        """Bootstrap draws over patients: per kernel, patient indices drawn with replacement."""
        rng = np.random.default_rng(seed)
        return [{k: rng.integers(0, len(s), len(s)) for k, s in self.series.items()} for _ in range(count)]

    def patients(self, kernel: str) -> int:
        return len(self.series[kernel])

    def rois(self, kernel: str) -> int:
        return sum(s.rois for s in self.series[kernel])


def series_spectrum(hu: np.ndarray, pixel_mm: float, frequencies: np.ndarray, patient: str) -> SeriesSpectrum:
    """The log noise amplitude of one series ``(slices, H, W)`` on the grid ``frequencies`` (cycles/mm)."""
    spectra = roi_spectra([hu], pixel_mm)[:, 0]
    nps = spectra.mean(0)
    own = np.arange(1, BINS + 1) / (ROI_PX * pixel_mm)
    band = kernel_band(nps)
    level, _, _ = fit_log_window(own, nps, band)
    on_grid = np.interp(frequencies, own[band], noise_amplitude(own, nps)[band], right=np.nan)
    return SeriesSpectrum(patient, on_grid, level, len(spectra), white_floor(nps))


def measure_unpaired(sets: dict[str, list[tuple[str, np.ndarray | Callable[[], np.ndarray], float]]],
                     progress: Callable[[int, int], None] | None = None) -> UnpairedMeasurement:
    """Spectra of every kernel of ``sets`` (kernel -> ``(patient, slices, pixel_mm)`` per series; the slices may be a
    function that reads them, so that an archive is read one series at a time). Series of one patient and kernel are
    pooled into one (a patient counts once); series without enough soft tissue are left out. ``progress(done,
    total)`` after each series."""
    pixel = max(px for series in sets.values() for _, _, px in series)
    frequencies = np.arange(1, BINS + 1) / (ROI_PX * pixel)
    total, done = sum(len(series) for series in sets.values()), 0
    measured: dict[str, list[SeriesSpectrum]] = {}
    skipped = []
    for kernel, series in sets.items():
        by_patient: dict[str, list[SeriesSpectrum]] = {}
        for patient, slices, pixel_mm in series:
            try:
                spectrum = series_spectrum(slices() if callable(slices) else slices, pixel_mm, frequencies, patient)
            except NoSoftTissue:
                spectrum = None
            done += 1
            if progress:
                progress(done, total)
            if spectrum is None or spectrum.rois < MIN_ROIS:
                skipped.append(f"{kernel} {patient}: {spectrum.rois if spectrum else 0} soft-tissue ROIs (need {MIN_ROIS})")
                log.warning("left out %s", skipped[-1])
                continue
            by_patient.setdefault(patient, []).append(spectrum)
        measured[kernel] = [_one_patient(spectra) for spectra in by_patient.values()]
    empty = [k for k, series in measured.items() if not series]
    if empty:
        raise DiffusionCTError(f"too little uniform soft tissue to measure the kernels' noise: no series of "
                               f"{', '.join(empty)} has {MIN_ROIS} ROIs of {ROI_PX} x {ROI_PX} px in -100..150 HU inside "
                               "the body; give more or larger series")
    return UnpairedMeasurement(frequencies, measured, skipped)


def _one_patient(spectra: list[SeriesSpectrum]) -> SeriesSpectrum:
    if len(spectra) == 1:
        return spectra[0]
    with np.errstate(invalid="ignore"):
        log_amplitude = np.mean([s.log_amplitude for s in spectra], axis=0)
    return SeriesSpectrum(spectra[0].patient, log_amplitude, float(np.mean([s.level for s in spectra])),
                          sum(s.rois for s in spectra), max(s.noise_floor for s in spectra))


def transfer_spread(measurement: UnpairedMeasurement, from_kernel: str, to_kernel: str,
                    draws: list[dict] | None = None) -> tuple[TransferFit, np.ndarray]:
    """The transfer from ``from_kernel`` to ``to_kernel`` and the bootstrap SD over patients of its log, per bin."""
    draws = draws if draws is not None else measurement.draws()
    fit = measurement.fit_transfer(from_kernel, to_kernel)
    spread = np.nanstd([measurement.fit_transfer(from_kernel, to_kernel, d).per_bin for d in draws], axis=0)
    return fit, spread


def uncertain_transfers(measurement: UnpairedMeasurement, draws: list[dict] | None = None) -> list[str]:
    """One line per kernel pair whose transfer, where it is largest, is not larger than its spread over patients (or
    that has one patient a side, so no spread at all)."""
    draws = draws if draws is not None else measurement.draws()
    kernels = sorted(measurement.series)
    problems = []
    for i, source in enumerate(kernels):
        for target in kernels[i + 1:]:
            if measurement.patients(source) < 2 or measurement.patients(target) < 2:
                problems.append(f"{source} / {target}: one patient of a kernel, so the patients' own texture cannot be "
                                "told from the kernel's")
                continue
            fit, spread = transfer_spread(measurement, source, target, draws)
            peak = int(np.argmax(np.where(fit.usable, np.abs(fit.per_bin), -1)))
            if spread[peak] >= abs(fit.per_bin[peak]):
                problems.append(f"{source} -> {target}: transfer {np.exp(fit.per_bin[peak]):.2f} at "
                                f"{measurement.frequencies[peak]:.2f} cycles/mm, spread over patients x/ "
                                f"{np.exp(spread[peak]):.2f}: the patients differ as much as the kernels")
    return problems


def log_windows(measurement: UnpairedMeasurement, draw: dict | None = None) -> dict[str, np.ndarray]:
    """Every kernel's log window per bin: the smoothest kernel's from its own spectrum (smooth, W(0) = 1), the others'
    through their transfer to it."""
    f = measurement.frequencies
    own = {}
    for kernel in measurement.series:
        _, a, b = fit_log_amplitude(f, measurement.log_spectrum(kernel, (draw or {}).get(kernel)), measurement.band(kernel))
        own[kernel] = a * f**2 + b * f**4
    reference = min(own, key=lambda k: own[k][-1])
    return {k: own[reference] if k == reference else own[reference] + measurement.fit_transfer(reference, k, draw).per_bin
            for k in measurement.series}


def profiles_from_unpaired(measurement: UnpairedMeasurement, vendor: str, provenance: str,
                           draws: list[dict] | None = None) -> list[KernelProfile]:
    """A profile per kernel, with the bootstrap SD over patients (``draws``, default :meth:`UnpairedMeasurement.draws`)
    of its log window as its spread."""
    windows = log_windows(measurement)
    drawn = [log_windows(measurement, d) for d in (draws if draws is not None else measurement.draws())]
    f = measurement.frequencies
    profiles = []
    for kernel in sorted(measurement.series):
        band = np.isfinite(windows[kernel]) & measurement.band(kernel)
        if band.sum() < 4:
            raise DiffusionCTError(f"kernel {kernel}: fewer than 4 frequency bins above the stored images' noise floor")
        grid, values, up_to = extend_window(f, np.exp(windows[kernel]), band)
        spread = np.nan_to_num(np.nanstd([d[kernel] for d in drawn], axis=0))
        spread_grid = np.concatenate([[0.0], spread, np.full(len(grid) - len(f) - 1, spread[band][-1])])
        floors = [s.noise_floor for s in measurement.series[kernel]]
        profiles.append(KernelProfile(
            name=kernel, vendor=vendor, frequencies=tuple(np.round(grid, 5)), window=tuple(np.round(values / values[0], 6)),
            pixel_mm=round(float(0.5 / f[-1]), 5), measured_up_to=round(up_to, 5),
            provenance=(f"{provenance}; {measurement.patients(kernel)} patient(s), {measurement.rois(kernel)} ROIs; "
                        "noise spectra pooled by ROI, the sets' noise levels fitted apart from the transfer"),
            spread=tuple(np.round(spread_grid, 5)), noise_floor_hu2_mm2=round(float(np.median(floors)), 4)))
    return profiles
