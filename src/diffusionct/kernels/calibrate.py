"""``diffusionct calibrate``: kernel profiles measured from a user's own series.

Same-scan pairs (found by ``scan``: shared UIDs, or the same acquisition time and slice geometry when the
reconstructions were anonymized apart) give each kernel's transfer to a reference kernel directly
(:mod:`diffusionct.kernels.measure`). Without pairs (``--unpaired``: series of different patients, each with one
kernel) each series' own noise spectrum gives its kernel's window up to its noise level, which is removed series by
series before the patients are averaged (:mod:`diffusionct.kernels.unpaired`); the spread over patients decides
whether the result is worth more than the patients' own differences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.io.dicom import read_slice_stack
from diffusionct.io.scan import SeriesInfo, find_pairs, scan_folder
from diffusionct.kernels.names import kernel_family
from diffusionct.kernels.measure import FIRST_FIT_BIN, PairedMeasurement, measure_pairs, profiles_from_measurement
from diffusionct.kernels.profiles import KernelProfile, UnknownProfile, find_profile
from diffusionct.kernels.unpaired import (UnpairedMeasurement, log_windows, measure_unpaired, profiles_from_unpaired,
                                          transfer_spread, uncertain_transfers)

log = logging.getLogger(__name__)
PIXEL_TOLERANCE = 0.02  # relative: series pooled in one measurement share the pixel size this closely


@dataclass
class Calibration:
    profiles: list[KernelProfile]
    measurement: PairedMeasurement
    scans: int


def paired_scans(folders: list[Path]) -> tuple[list[dict[str, SeriesInfo]], str]:
    """Every scan with two or more kernels under ``folders`` (kernel -> series), and the manufacturer."""
    series = [info for folder in folders for info in scan_folder(folder)]
    by_uid = {s.series_uid: s for s in series}
    parent = {uid: uid for uid in by_uid}

    def root(uid: str) -> str:
        while parent[uid] != uid:
            uid = parent[uid]
        return uid

    for pair in find_pairs(series):
        parent[root(pair.series_a)] = root(pair.series_b)
    groups: dict[str, dict[str, SeriesInfo]] = {}
    for uid, info in by_uid.items():
        groups.setdefault(root(uid), {}).setdefault(info.kernel, info)
    scans = [g for g in groups.values() if len(g) > 1]
    if not scans:
        kernels = sorted({s.kernel for s in series})
        raise DiffusionCTError(f"no same-scan kernel pairs under {', '.join(map(str, folders))} (kernels found: "
                               f"{', '.join(kernels) or 'none'}); calibrate needs two reconstructions of one scan "
                               "(without pairs: `calibrate --unpaired` measures each kernel on its own series, docs/unpaired.md)")
    manufacturers = sorted({s.manufacturer for g in scans for s in g.values() if s.manufacturer})
    return scans, manufacturers[0] if manufacturers else ""


def calibrate_paired(folders: list[Path], reference: str | None = None, vendor: str | None = None,
                     profile_files: tuple = (), seed: int = 0, anchor_on_known: bool = True) -> Calibration:
    """Profiles of every kernel in the same-scan pairs under ``folders``, relative to ``reference`` (default: the
    smoothest kernel). The reference's absolute window comes from a known profile of it (``profile_files``, then the
    shipped ones) when there is one and ``anchor_on_known``, else from its noise spectrum. Remaking a shipped profile
    or measuring on held-out data needs ``anchor_on_known=False``: the known profile would feed the previous result (or
    other data) back in."""
    scans, manufacturer = paired_scans(folders)
    kernels = sorted({k for scan in scans for k in scan})
    if reference is not None:
        matches = [k for k in kernels if kernel_family(k) == kernel_family(reference)]
        if not matches:
            raise DiffusionCTError(f"--reference {reference}: no such kernel in the pairs (kernels: {', '.join(kernels)})")
        reference = matches[0]
    volumes, pixel = [], []
    for scan in scans:
        stacks = {k: read_slice_stack(info.path, info.series_uid) for k, info in scan.items()}
        volumes.append(_common_slices(stacks))
        pixel.append(next(iter(stacks.values()))[2])
    pixel_mm = common_pixel_mm(pixel)
    if reference is None:
        reference = _smoothest(volumes, pixel_mm)
    measurement = measure_pairs(reference, volumes, pixel_mm, seed=seed)
    vendor = vendor or manufacturer or "unknown"
    known = _known_profile(reference, vendor, profile_files) if anchor_on_known else None
    provenance = (f"measured by diffusionct calibrate on {len(scans)} same-scan reconstruction set(s) at {pixel_mm:.3f} mm"
                  + (f"; {reference}'s own window from the profile '{known.label}'" if known else
                     f"; {reference}'s own window from its noise spectrum"))
    return Calibration(profiles_from_measurement(measurement, vendor, provenance, known), measurement, len(scans))


@dataclass
class UnpairedCalibration:
    profiles: list[KernelProfile]
    measurement: UnpairedMeasurement
    draws: list[dict[str, np.ndarray]]  # bootstrap draws over patients (kernel -> patient indices)
    uncertain: list[str]  # transfers no larger than their spread over patients (written only with force)


def calibrate_unpaired(folders: list[Path], vendor: str | None = None, seed: int = 0, force: bool = False,
                       progress=None) -> UnpairedCalibration:
    """Profiles of every kernel of the CT series under ``folders`` (series of different patients, no pairs needed).
    Refused when a transfer between two kernels is no larger than its spread over patients, unless ``force``.
    ``progress(done, total)`` is called after each series is measured (one series in memory at a time)."""
    series = [info for folder in folders for info in scan_folder(folder) if info.modality == "CT"]
    if not series:
        raise DiffusionCTError(f"no CT series under {', '.join(map(str, folders))}")
    sets: dict[str, list] = {}
    for info in series:
        if not info.pixel_mm:
            raise DiffusionCTError(f"{info.path}: series {info.series_uid} states no PixelSpacing; a kernel is measured "
                                   "in cycles/mm, so its pixel size is needed")
        sets.setdefault(info.kernel, []).append((info.patient_id or info.series_uid, partial(_slices, info), info.pixel_mm))
    measurement = measure_unpaired(sets, progress)
    draws = measurement.draws(seed)
    problems = uncertain_transfers(measurement, draws)
    if problems and not force:
        raise DiffusionCTError(f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; add "
                               "patients of each kernel, or pass --force to write the profiles with their spread")
    manufacturers = sorted({s.manufacturer for s in series if s.manufacturer})
    vendor = vendor or (manufacturers[0] if manufacturers else "unknown")
    provenance = (f"measured by diffusionct calibrate --unpaired on {len(series)} series"
                  + (f" ({len(measurement.skipped)} without enough soft tissue left out)" if measurement.skipped else ""))
    for problem in problems:
        log.warning("%s", problem)
    return UnpairedCalibration(profiles_from_unpaired(measurement, vendor, provenance, draws), measurement, draws, problems)


def _slices(info: SeriesInfo) -> np.ndarray:
    return read_slice_stack(info.path, info.series_uid)[0]


def common_pixel_mm(pixel_sizes: list[float]) -> float:
    """The one pixel size of the scans pooled in a measurement (their median), refused when they differ."""
    pixel_mm = float(np.median(pixel_sizes))
    if max(abs(p / pixel_mm - 1) for p in pixel_sizes) > PIXEL_TOLERANCE:
        raise DiffusionCTError(f"the pairs have different pixel sizes ({', '.join(f'{p:.3f}' for p in sorted(set(pixel_sizes)))} mm): "
                               "a kernel's curve depends on the pixel size; calibrate each pixel size on its own")
    return pixel_mm


def _common_slices(stacks: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> dict[str, np.ndarray]:
    """Each kernel's slices at the positions every kernel of the scan has (the same planes, in one order)."""
    common = set.intersection(*({round(float(z), 2) for z in positions} for _, positions, _ in stacks.values()))
    if not common:
        raise DiffusionCTError(f"the reconstructions {', '.join(stacks)} of one scan share no slice position")
    out = {}
    for kernel, (hu, positions, _) in stacks.items():
        index = {round(float(z), 2): i for i, z in enumerate(positions)}
        out[kernel] = hu[[index[z] for z in sorted(common)]]
    return out


def _known_profile(kernel: str, vendor: str, files: tuple) -> KernelProfile | None:
    try:
        return find_profile(f"{vendor}:{kernel}" if vendor else kernel, files)
    except UnknownProfile:  # a damaged --profiles file is an error, not an unknown kernel
        return None


def _smoothest(scans: list[dict[str, np.ndarray]], pixel_mm: float) -> str:
    """The kernel with the least high-frequency power (first scan with every kernel, else the first scan)."""
    scan = max(scans, key=len)
    kernels = sorted(scan)
    measurement = measure_pairs(kernels[0], [scan], pixel_mm)
    power = {k: float(np.sum(nps[len(nps) // 2:])) for k, nps in measurement.nps.items()}
    return min(power, key=power.get)


def plot_calibration(calibration: Calibration, path: Path) -> None:
    """The measured transfer of each kernel to the reference, with its bootstrap spread (+- 2 SD), and each window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diffusionct.io.files import atomic_output_file

    m = calibration.measurement
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for kernel, transfer in m.transfer.items():
        spread = m.spread[kernel]
        line, = left.plot(m.frequencies, transfer, "o-", ms=3, label=f"{kernel} / {m.reference}")
        left.fill_between(m.frequencies, transfer * np.exp(-2 * spread), transfer * np.exp(2 * spread), alpha=0.25,
                          color=line.get_color())
    left.set_yscale("log")
    left.set(xlabel="cycles/mm", ylabel="transfer (ratio of windows)", title=f"measured, {m.rois} ROIs, {m.pixel_mm:.3f} mm")
    left.legend()
    for profile in calibration.profiles:
        f = np.asarray(profile.frequencies)
        right.plot(f, profile.window, label=profile.name)
        right.axvline(profile.measured_up_to, color="grey", lw=0.5)
    right.set(xlabel="cycles/mm", ylabel="window W(f)", title="profiles (grey: end of the measured band)")
    right.legend()
    fig.tight_layout()
    with atomic_output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def plot_unpaired(calibration: UnpairedCalibration, path: Path) -> None:
    """Each kernel's window with its spread over patients (+- 2 SD) and each patient's own spectrum (its level
    removed); the transfers between the kernels with their spread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diffusionct.io.files import atomic_output_file

    m = calibration.measurement
    f = m.frequencies
    windows = log_windows(m)
    drawn = [log_windows(m, d) for d in calibration.draws]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for kernel in sorted(m.series):
        log_w, spread = windows[kernel], np.nanstd([d[kernel] for d in drawn], axis=0)
        line, = left.plot(f, np.exp(log_w), "o-", ms=3, label=f"{kernel} ({m.patients(kernel)} patients)")
        left.fill_between(f, np.exp(log_w - 2 * spread), np.exp(log_w + 2 * spread), alpha=0.2, color=line.get_color())
        for series in m.series[kernel]:  # from the first fitted bin: below, the box mean leaves mostly anatomy
            left.plot(f[FIRST_FIT_BIN:], np.exp(series.log_amplitude - series.level)[FIRST_FIT_BIN:], lw=0.6,
                      color=line.get_color())
    left.set_yscale("log")
    left.set(xlabel="cycles/mm", ylabel="window W(f)", title="kernels (thin: each patient's spectrum, level removed)")
    left.legend()
    kernels = sorted(m.series)
    for i, source in enumerate(kernels):
        for target in kernels[i + 1:]:
            fit, spread = transfer_spread(m, source, target, calibration.draws)
            line, = right.plot(f, np.exp(fit.per_bin), "o-", ms=3, label=f"{target} / {source}")
            right.fill_between(f, np.exp(fit.per_bin - 2 * spread), np.exp(fit.per_bin + 2 * spread), alpha=0.2,
                               color=line.get_color())
    right.axhline(1.0, color="grey", lw=0.5)
    right.set_yscale("log")
    right.set(xlabel="cycles/mm", ylabel="transfer (ratio of windows)", title="transfers, +- 2 SD over patients")
    if len(kernels) > 1:
        right.legend()
    fig.tight_layout()
    with atomic_output_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
