"""Parallel-beam forward projection and pixel-driven back-projection.

Geometry: parallel beams over [0, pi), ``n_views`` views, a flat detector of ``n_detectors`` bins as
wide as an image pixel, centred on the rotation axis. Image pixel (row r, column c) has its centre at
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

    @property
    def n_detectors(self) -> int:
        # covers the image's diagonal, odd so that one bin sits on the rotation axis
        n = int(math.ceil(self.size * math.sqrt(2))) + 2
        return n + 1 - n % 2

    @cached_property
    def angles(self) -> np.ndarray:
        return np.arange(self.n_views, dtype=np.float64) * (math.pi / self.n_views)


if HAVE_NUMBA:

    @numba.njit(parallel=True, cache=True)
    def _project_numba(image, angles, n_det):  # pragma: no cover - compiled
        n = image.shape[0]
        centre = (n - 1) / 2.0
        det_centre = (n_det - 1) / 2.0
        out = np.zeros((angles.shape[0], n_det), dtype=np.float64)
        for v in numba.prange(angles.shape[0]):
            c = math.cos(angles[v])
            s = math.sin(angles[v])
            for k in range(n_det):
                t = k - det_centre
                total = 0.0
                if abs(s) >= abs(c):
                    # ray mostly along x: for every column x, y = (t - x c) / s
                    for col in range(n):
                        x = col - centre
                        y = (t - x * c) / s + centre
                        r0 = int(math.floor(y))
                        w = y - r0
                        if 0 <= r0 < n - 1:
                            total += image[r0, col] * (1 - w) + image[r0 + 1, col] * w
                        elif r0 == n - 1 and w == 0.0:
                            total += image[r0, col]
                    out[v, k] = total / abs(s)
                else:
                    for row in range(n):
                        y = row - centre
                        x = (t - y * s) / c + centre
                        c0 = int(math.floor(x))
                        w = x - c0
                        if 0 <= c0 < n - 1:
                            total += image[row, c0] * (1 - w) + image[row, c0 + 1] * w
                        elif c0 == n - 1 and w == 0.0:
                            total += image[row, c0]
                    out[v, k] = total / abs(c)
        return out

    @numba.njit(parallel=True, cache=True)
    def _backproject_numba(sino, angles, n):  # pragma: no cover - compiled
        n_views, n_det = sino.shape
        centre = (n - 1) / 2.0
        det_centre = (n_det - 1) / 2.0
        cos_a = np.cos(angles)
        sin_a = np.sin(angles)
        out = np.zeros((n, n), dtype=np.float64)
        for row in numba.prange(n):
            y = row - centre
            for col in range(n):
                x = col - centre
                total = 0.0
                for v in range(n_views):
                    t = x * cos_a[v] + y * sin_a[v] + det_centre
                    k = int(math.floor(t))
                    w = t - k
                    if 0 <= k < n_det - 1:
                        total += sino[v, k] * (1 - w) + sino[v, k + 1] * w
                out[row, col] = total
        return out


def _project_torch(images: torch.Tensor, angles: torch.Tensor, n_det: int) -> torch.Tensor:
    """Joseph projection of a batch ``(B, N, N)``: the same arithmetic as the numba kernel."""
    b, n, _ = images.shape
    centre = (n - 1) / 2.0
    t = torch.arange(n_det, device=images.device, dtype=images.dtype) - (n_det - 1) / 2.0
    axis = torch.arange(n, device=images.device, dtype=images.dtype) - centre
    out = torch.zeros(b, angles.numel(), n_det, device=images.device, dtype=images.dtype)
    flat = images.reshape(b, -1)
    for v, angle in enumerate(angles.tolist()):
        c, s = math.cos(angle), math.sin(angle)
        along_x = abs(s) >= abs(c)
        other = (t[:, None] - axis[None, :] * (c if along_x else s)) / (s if along_x else c) + centre  # (n_det, n)
        i0 = torch.floor(other)
        w = other - i0
        last = (i0 == n - 1) & (w == 0)  # a sample exactly on the last row or column
        valid = ((i0 >= 0) & (i0 < n - 1)) | last
        i0 = torch.where(last, i0 - 1, i0)
        w = torch.where(last, torch.ones_like(w), w)
        i0 = i0.clamp(0, n - 2).long()
        fixed = torch.arange(n, device=images.device).expand_as(i0)
        if along_x:
            idx0, idx1 = i0 * n + fixed, (i0 + 1) * n + fixed
        else:
            idx0, idx1 = fixed * n + i0, fixed * n + i0 + 1
        v0 = flat[:, idx0.reshape(-1)].reshape(b, n_det, n)
        v1 = flat[:, idx1.reshape(-1)].reshape(b, n_det, n)
        samples = (v0 * (1 - w) + v1 * w) * valid
        out[:, v] = samples.sum(-1) / abs(s if along_x else c)
    return out


def _backproject_torch(sinos: torch.Tensor, angles: torch.Tensor, n: int, chunk: int = 32) -> torch.Tensor:
    b, n_views, n_det = sinos.shape
    axis = torch.arange(n, device=sinos.device, dtype=sinos.dtype) - (n - 1) / 2.0
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    x, y = x.reshape(1, -1), y.reshape(1, -1)
    out = torch.zeros(b, n * n, device=sinos.device, dtype=sinos.dtype)
    for start in range(0, n_views, chunk):
        a = angles[start:start + chunk].to(sinos.dtype)
        t = x * torch.cos(a)[:, None] + y * torch.sin(a)[:, None] + (n_det - 1) / 2.0
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
            sinos = np.stack([_project_numba(np.ascontiguousarray(im), g.angles, g.n_detectors) for im in images])
        else:
            with torch.no_grad():
                sinos = _project_torch(torch.as_tensor(images, device=self.device, dtype=torch.float32),
                                       torch.as_tensor(g.angles), g.n_detectors).double().cpu().numpy()
        return sinos * g.pixel_mm

    def backproject(self, sinos: np.ndarray) -> np.ndarray:
        """Sum over views of each sinogram ``(B, n_views, n_detectors)`` sampled at every pixel."""
        g = self.geometry
        sinos = np.asarray(sinos, dtype=np.float64)
        if self.backend == "numba":
            return np.stack([_backproject_numba(np.ascontiguousarray(s), g.angles, g.size) for s in sinos])
        with torch.no_grad():
            out = _backproject_torch(torch.as_tensor(sinos, device=self.device, dtype=torch.float32),
                                     torch.as_tensor(g.angles, device=self.device), g.size)
        return out.double().cpu().numpy()
