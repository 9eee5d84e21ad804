"""Physical checks of the simulated scanner: noise, MTF (edge method), NPS and HU accuracy.

Used by ``benchmarks/simulator_calibration.py`` at full size and by the tests at tiny sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusionct.simulate.kernels import get_kernel
from diffusionct.simulate.scanner import Scanner, ScannerSettings


def disk_phantom(settings: ScannerSettings, body_hu: float = 40.0, rod_hu: float = 1000.0,
                 body_radius_frac: float = 0.42, rod_radius_frac: float = 0.12) -> tuple[np.ndarray, dict]:
    """A uniform cylinder (``body_hu``) in air with a high-contrast rod off centre for the edge method."""
    n, px = settings.size, settings.pixel_mm
    axis = (np.arange(n) - (n - 1) / 2.0) * px
    y, x = np.meshgrid(axis, axis, indexing="ij")
    half = n * px / 2
    body_r, rod_r = body_radius_frac * 2 * half, rod_radius_frac * 2 * half
    rod_centre = (0.45 * body_r, 0.0)
    image = np.full((n, n), -1000.0)
    image[x**2 + y**2 < body_r**2] = body_hu
    image[(x - rod_centre[0]) ** 2 + (y - rod_centre[1]) ** 2 < rod_r**2] = rod_hu
    roi_r = 0.25 * body_r
    regions = {
        "uniform": ((x + 0.45 * body_r) ** 2 + y**2) < roi_r**2,
        "air": (x**2 + (y - 0.5 * (body_r + half)) ** 2) < (0.2 * (half - body_r)) ** 2,
        "x": x, "y": y, "rod_centre": rod_centre, "rod_radius": rod_r,
    }
    return image, regions


def mtf_edge(image: np.ndarray, regions: dict, pixel_mm: float, bin_px: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """MTF from the circular edge of the rod: oversampled radial ESF -> LSF -> |FFT|."""
    cx, cy = regions["rod_centre"]
    r = np.sqrt((regions["x"] - cx) ** 2 + (regions["y"] - cy) ** 2) / pixel_mm
    rod_r = regions["rod_radius"] / pixel_mm
    band = np.abs(r - rod_r) < 8
    edges = np.arange(rod_r - 8, rod_r + 8 + bin_px, bin_px)
    index = np.digitize(r[band], edges)
    esf = np.array([image[band][index == i].mean() if np.any(index == i) else np.nan for i in range(1, len(edges))])
    valid = ~np.isnan(esf)
    esf = np.interp(np.arange(len(esf)), np.flatnonzero(valid), esf[valid])
    lsf = -np.diff(esf)
    lsf *= np.hanning(len(lsf))
    spectrum = np.abs(np.fft.rfft(lsf, n=4096))
    freqs = np.fft.rfftfreq(4096, d=bin_px * pixel_mm)
    return freqs, spectrum / spectrum[0]


def mtf50(freqs: np.ndarray, mtf: np.ndarray) -> float:
    """Frequency (cycles/mm) where the MTF first falls to 0.5."""
    below = np.flatnonzero(mtf < 0.5)
    if not below.size:
        return float(freqs[-1])
    i = below[0]
    return float(np.interp(0.5, [mtf[i], mtf[i - 1]], [freqs[i], freqs[i - 1]]))


def radial_nps(noise: np.ndarray, pixel_mm: float, bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged noise power spectrum of square noise patches ``(k, n, n)``."""
    patches = noise - noise.mean(axis=(1, 2), keepdims=True)
    n = patches.shape[-1]
    power = (np.abs(np.fft.fft2(patches)) ** 2).mean(0) * pixel_mm**2 / (n * n)
    f = np.fft.fftfreq(n, d=pixel_mm)
    fr = np.sqrt(f[None, :] ** 2 + f[:, None] ** 2)
    edges = np.linspace(0, fr.max(), bins + 1)
    idx = np.digitize(fr.ravel(), edges) - 1
    nps = np.array([power.ravel()[idx == i].mean() if np.any(idx == i) else 0.0 for i in range(bins)])
    return 0.5 * (edges[1:] + edges[:-1]), nps


@dataclass
class KernelCalibration:
    kernel: str
    noise_sd: float
    uniform_mean: float
    air_mean: float
    mtf50: float
    nps_peak: float


def calibrate(settings: ScannerSettings, kernels=("smooth", "medium", "sharp"), thickness_mm: float = 1.0,
              body_hu: float = 40.0, seed: int = 0, device: str = "cpu") -> dict[str, KernelCalibration]:
    """Noise, HU accuracy, MTF50 and NPS peak of each kernel on one noisy scan of the disk phantom."""
    scanner = Scanner(settings, device=device)
    image, regions = disk_phantom(settings, body_hu=body_hu)
    clean = scanner.sinograms(image[None])
    noisy = scanner.add_noise(clean, thickness_mm, [np.random.default_rng(seed)])
    n = settings.size
    uniform = regions["uniform"]
    # NPS of the noise alone (noisy minus noise-free reconstruction) over a central square in the body
    patch = max(16, n // 3)
    r0 = c0 = (n - patch) // 2
    out = {}
    for name in kernels:
        kernel = get_kernel(name)
        recon_noisy = scanner.reconstruct(noisy, kernel)[0]
        recon_clean = scanner.reconstruct(clean, kernel)[0]
        noise = recon_noisy - recon_clean
        f, nps = radial_nps(noise[None, r0:r0 + patch, c0:c0 + patch], settings.pixel_mm, bins=max(8, patch // 4))
        freqs, mtf = mtf_edge(recon_clean, regions, settings.pixel_mm)
        out[name] = KernelCalibration(
            kernel=name, noise_sd=float(recon_noisy[uniform].std()), uniform_mean=float(recon_noisy[uniform].mean()),
            air_mean=float(recon_noisy[regions["air"]].mean()), mtf50=mtf50(freqs, mtf), nps_peak=float(f[np.argmax(nps)]),
        )
    return out
