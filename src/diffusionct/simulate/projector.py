"""Parallel-beam forward projection and pixel-driven back-projection.

Geometry: parallel beams over [0, pi), ``n_views`` views, a flat detector of ``n_detectors`` bins of
``pixel_mm / detector_oversampling``, centred on the rotation axis. Bins narrower than a pixel (the
default, 2) keep the back-projection's linear interpolation from capping the sharpest kernels' MTF,
as a real scanner's quarter-detector offset and flying focal spot do. Image pixel (row r, column c) has its centre at
x = (c - (N-1)/2) dx, y = (r - (N-1)/2) dx. The ray of view angle theta at detector offset t is the
line {x cos(theta) + y sin(theta) = t}.

Two back-ends compute the same operators:

* ``numba``: compiled loops, parallel over views (projection) and rows (back-projection); the CPU
  default. Sums run in a fixed order, so results are bit-reproducible.
* ``torch``: vectorised gathers on any torch device (CUDA when available).

Forward projection is Joseph's method (step along the axis the ray is closest to, linear
interpolation across the other). Back-projection interpolates each view linearly at t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

try:  # numba is a listed dependency; the torch path keeps the projector usable without it
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    HAVE_NUMBA = False


@dataclass(frozen=True)
class ParallelBeamGeometry:
    """Scanner geometry for an ``size`` x ``size`` image of ``pixel_mm`` pixels."""

    size: int
    pixel_mm: float
    n_views: int
    detector_oversampling: int = 1

    @property
    def detector_step(self) -> float:
        """Detector bin width in pixels."""
        return 1.0 / self.detector_oversampling

    @property
    def detector_mm(self) -> float:
        return self.pixel_mm * self.detector_step

    @property
    def n_detectors(self) -> int:
        # covers the image's diagonal, odd so that one bin sits on the rotation axis
        n = int(math.ceil(self.size * math.sqrt(2) * self.detector_oversampling)) + 2
        return n + 1 - n % 2

    @cached_property
    def angles(self) -> np.ndarray:
        return np.arange(self.n_views, dtype=np.float64) * (math.pi / self.n_views)


if HAVE_NUMBA:

    @numba.njit(cache=True)
    def _joseph_ray(images, offset, slope, total):  # pragma: no cover - compiled
        """``total[b] = sum_i images[i, j, b]``, linearly interpolated at j = offset + slope * i (|slope| <= 1).

        ``images`` ``(n, n, m)`` is laid out so that the ray walks along its first axis, with the stack
        last so that one position serves every image. Outside the grid the images are zero, so a
        sample between the last column and the border interpolates toward zero: the sum is continuous
        in the ray's position (no rounding-dependent edge cases).
        """
        n, m = images.shape[0], images.shape[2]
        # only the rows whose sample can fall inside (-1, n) (one row of margin for rounding)
        lo, hi = 0, n
        if abs(slope) > 1e-9:
            a, b = (-1.0 - offset) / slope, (n - offset) / slope
            lo = max(int(math.floor(min(max(min(a, b), 0.0), float(n)))) - 1, 0)
            hi = min(int(math.ceil(min(max(max(a, b), 0.0), float(n)))) + 2, n)
        for i in range(lo, hi):
            j = offset + slope * i
            j0 = int(math.floor(j))
            w = j - j0
            if 0 <= j0 < n - 1:
                for k in range(m):
                    total[k] += images[i, j0, k] * (1 - w) + images[i, j0 + 1, k] * w
            elif j0 == -1:
                for k in range(m):
                    total[k] += images[i, 0, k] * w
            elif j0 == n - 1:
                for k in range(m):
                    total[k] += images[i, n - 1, k] * (1 - w)

    @numba.njit(parallel=True, cache=True)
    def _project_numba(images, angles, n_det, step):  # pragma: no cover - compiled
        """Project ``(n, n, m)`` images (stack last) to ``(n_views, n_det, m)``."""
        n, m = images.shape[0], images.shape[2]
        centre = (n - 1) / 2.0
        det_centre = (n_det - 1) / 2.0
        transposed = np.ascontiguousarray(images.transpose(1, 0, 2))  # rays along x walk the columns
        out = np.zeros((angles.shape[0], n_det, m), dtype=np.float64)
        for v in numba.prange(angles.shape[0]):
            c = math.cos(angles[v])
            s = math.sin(angles[v])
            for k in range(n_det):
                t = (k - det_centre) * step
                if abs(s) >= abs(c):
                    # ray mostly along x: for every column x, y = (t - x c) / s = offset + slope * column
                    _joseph_ray(transposed, (t + centre * c) / s + centre, -c / s, out[v, k])
                    out[v, k] /= abs(s)
                else:
                    # for every row y, x = (t - y s) / c
                    _joseph_ray(images, (t + centre * s) / c + centre, -s / c, out[v, k])
                    out[v, k] /= abs(c)
        return out


    @numba.njit(parallel=True, cache=True)
    def _backproject_numba(sinos, angles, n, step):  # pragma: no cover - compiled
        """Back-project ``(n_views, n_det, m)`` sinograms (the stack last, so that the m values of
        one sample are contiguous) to ``(n, n, m)``: the interpolation positions are computed once
        for all of them (the slices and kernels of one acquisition)."""
        n_views, n_det, m = sinos.shape
        centre = (n - 1) / 2.0
        det_centre = (n_det - 1) / 2.0
        cos_a = np.cos(angles) / step
        sin_a = np.sin(angles) / step
        out = np.zeros((n, n, m), dtype=np.float64)
        for row in numba.prange(n):
            y = row - centre
            line = np.zeros((n, m))
            # views outside, columns inside: each view's samples are read in order (cache-friendly);
            # every pixel still sums its views in ascending order, so the result is reproducible
            for v in range(n_views):
                base = y * sin_a[v] + det_centre
                for col in range(n):
                    t = (col - centre) * cos_a[v] + base
                    k = int(t) if t >= 0.0 else -1  # truncation is floor for t >= 0, and cheaper
                    w = t - k
                    if 0 <= k < n_det - 1:
                        for i in range(m):
                            line[col, i] += sinos[v, k, i] * (1 - w) + sinos[v, k + 1, i] * w
            out[row] = line
        return out


def _project_torch(images: torch.Tensor, angles: torch.Tensor, n_det: int, step: float) -> torch.Tensor:
    """Joseph projection of a batch ``(B, N, N)``: the same arithmetic as the numba kernel."""
    b, n, _ = images.shape
    centre = (n - 1) / 2.0
    t = (torch.arange(n_det, device=images.device, dtype=images.dtype) - (n_det - 1) / 2.0) * step
    out = torch.zeros(b, angles.numel(), n_det, device=images.device, dtype=images.dtype)
    flat = images.reshape(b, -1)
    for v, angle in enumerate(angles.tolist()):
        c, s = math.cos(angle), math.sin(angle)
        along_x = abs(s) >= abs(c)
        major, minor = (s, c) if along_x else (c, s)
        index = torch.arange(n, device=images.device, dtype=images.dtype)
        other = ((t[:, None] + centre * minor) / major + centre) + (-minor / major) * index[None, :]  # (n_det, n)
        i0 = torch.floor(other)
        w = other - i0
        # zero outside the grid: a neighbour off the grid contributes nothing (see _joseph_ray)
        valid0 = (i0 >= 0) & (i0 <= n - 1)
        valid1 = (i0 + 1 >= 0) & (i0 + 1 <= n - 1)
        i0 = i0.clamp(-1, n - 1).long()
        fixed = torch.arange(n, device=images.device).expand_as(i0)
        j0, j1 = i0.clamp(0, n - 1), (i0 + 1).clamp(0, n - 1)
        if along_x:
            idx0, idx1 = j0 * n + fixed, j1 * n + fixed
        else:
            idx0, idx1 = fixed * n + j0, fixed * n + j1
        v0 = flat[:, idx0.reshape(-1)].reshape(b, n_det, n) * valid0
        v1 = flat[:, idx1.reshape(-1)].reshape(b, n_det, n) * valid1
        samples = v0 * (1 - w) + v1 * w
        out[:, v] = samples.sum(-1) / abs(s if along_x else c)
    return out


def _backproject_torch(sinos: torch.Tensor, angles: torch.Tensor, n: int, step: float, chunk: int = 32) -> torch.Tensor:
    b, n_views, n_det = sinos.shape
    axis = torch.arange(n, device=sinos.device, dtype=sinos.dtype) - (n - 1) / 2.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    x, y = x.reshape(1, -1), y.reshape(1, -1)
    out = torch.zeros(b, n * n, device=sinos.device, dtype=sinos.dtype)
    for start in range(0, n_views, chunk):
        a = angles[start:start + chunk].to(sinos.dtype)
        t = (x * torch.cos(a)[:, None] + y * torch.sin(a)[:, None]) / step + (n_det - 1) / 2.0
        k = torch.floor(t)
        w = t - k
        valid = (k >= 0) & (k < n_det - 1)
        k = k.clamp(0, n_det - 2).long()
        rows = sinos[:, start:start + chunk]  # (b, c, n_det)
        index = k.unsqueeze(0).expand(b, -1, -1)
        v0 = torch.gather(rows, 2, index)
        v1 = torch.gather(rows, 2, index + 1)
        out += ((v0 * (1 - w) + v1 * w) * valid).sum(1)
    return out.reshape(b, n, n)


class Projector:
    """Forward and back projection for one geometry, on the CPU (numba) or a torch device.

    Units: images in mm^-1 (attenuation), sinograms in line integrals (dimensionless); ``project``
    scales by the pixel size, ``backproject`` returns the plain sum over views (FBP scales it).
    """

    def __init__(self, geometry: ParallelBeamGeometry, device: str | torch.device = "cpu", backend: str = "auto"):
        self.geometry = geometry
        self.device = torch.device(device)
        if backend == "auto":
            backend = "numba" if (self.device.type == "cpu" and HAVE_NUMBA) else "torch"
        if backend == "numba" and not HAVE_NUMBA:
            raise RuntimeError("the numba back-end needs numba installed")
        self.backend = backend

    def project(self, images: np.ndarray) -> np.ndarray:
        """Line integrals ``(B, n_views, n_detectors)`` of attenuation images ``(B, N, N)`` in mm^-1."""
        g = self.geometry
        images = np.asarray(images, dtype=np.float64)
        if self.backend == "numba":
            # float32 samples (SIMD over the stack, half the memory traffic), float64 sums
            stacked = np.ascontiguousarray(images.transpose(1, 2, 0), dtype=np.float32)
            sinos = np.ascontiguousarray(_project_numba(stacked, g.angles, g.n_detectors, g.detector_step).transpose(2, 0, 1))
        else:
            with torch.no_grad():
                sinos = _project_torch(torch.as_tensor(images, device=self.device, dtype=torch.float32),
                                       torch.as_tensor(g.angles), g.n_detectors, g.detector_step).double().cpu().numpy()
        return sinos * g.pixel_mm

    def backproject(self, sinos: np.ndarray) -> np.ndarray:
        """Sum over views of each sinogram ``(B, n_views, n_detectors)`` sampled at every pixel."""
        g = self.geometry
        sinos = np.asarray(sinos, dtype=np.float64)
        if self.backend == "numba":
            stacked = np.ascontiguousarray(sinos.transpose(1, 2, 0), dtype=np.float32)  # float32 samples, float64 sums
            return np.ascontiguousarray(_backproject_numba(stacked, g.angles, g.size, g.detector_step).transpose(2, 0, 1))
        with torch.no_grad():
            out = _backproject_torch(torch.as_tensor(sinos, device=self.device, dtype=torch.float32),
                                     torch.as_tensor(g.angles, device=self.device), g.size, g.detector_step)
        return out.double().cpu().numpy()
