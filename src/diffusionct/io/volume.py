"""The CT volume: HU voxels plus the geometry and metadata needed to write it back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np


def in_plane_pixel_mm(spacing: Sequence[float]) -> float:
    """The one in-plane pixel size of a slice (mm): the mean of the first two of ``spacing``, its column and row
    spacing in either order (SimpleITK's x, y or DICOM PixelSpacing's row, column)."""
    return (float(spacing[0]) + float(spacing[1])) / 2.0


@dataclass
class Volume:
    """A 3D CT image in Hounsfield units.

    Axis conventions follow SimpleITK: ``hu`` is indexed ``[slice, row, column]`` (z, y, x), while
    ``spacing`` and ``origin`` are given in (x, y, z) order, in millimetres, in the DICOM patient
    coordinate system (LPS). ``direction`` is a 3x3 matrix whose *columns* are the unit vectors of
    the column (x), row (y) and slice (z) axes in patient space.

    Attributes:
        hu: float32 array ``(slices, rows, columns)`` of Hounsfield units.
        spacing: voxel size (x, y, z) in mm; z is the distance between slice centres.
        origin: patient position (x, y, z) of the centre of voxel ``[0, 0, 0]``.
        direction: 3x3 direction cosine matrix (columns are axis directions).
        headers: per-slice source DICOM headers (pydicom Datasets without pixel data), kept so a
            derived series can carry the patient, study and acquisition metadata. Empty for
            volumes that did not come from DICOM.
        metadata: free-form descriptive fields (kernel, slice thickness, series UID, source path).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    headers: list[Any] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def pixel_mm(self) -> float:
        """In-plane pixel size in mm (:func:`in_plane_pixel_mm`)."""
        return in_plane_pixel_mm(self.spacing)

    def __post_init__(self) -> None:
        self.hu = np.asarray(self.hu, dtype=np.float32)
        if self.hu.ndim != 3:
            raise ValueError(f"Volume.hu must be 3D (slices, rows, columns), got shape {self.hu.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def kernel(self) -> str | None:
        return self.metadata.get("kernel")

    def with_hu(self, hu: np.ndarray, **metadata: Any) -> "Volume":
        """A copy on the same grid with new voxel values (headers shared, metadata updated)."""
        if tuple(hu.shape) != self.shape:
            raise ValueError(f"new voxel array {hu.shape} does not match the volume {self.shape}")
        return replace(self, hu=np.asarray(hu, dtype=np.float32), metadata={**self.metadata, **metadata})

    def slab(self, start: int, stop: int) -> "Volume":
        """The slices ``start:stop`` as a volume of their own (origin moved, headers kept)."""
        if not 0 <= start < stop <= self.shape[0]:
            raise ValueError(f"slice range {start}:{stop} outside 0:{self.shape[0]}")
        origin = (self.index_to_patient() @ np.array([0.0, 0.0, start, 1.0]))[:3]
        return replace(self, hu=self.hu[start:stop], origin=tuple(origin), headers=self.headers[start:stop],
                       metadata=dict(self.metadata))

    def index_to_patient(self) -> np.ndarray:
        """4x4 affine mapping (x, y, z) voxel indices (column, row, slice) to patient mm (LPS)."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    def same_grid(self, other: "Volume", tol: float = 1e-3) -> bool:
        """True when ``other`` lies on this volume's voxel grid (shape, spacing, origin, direction)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )
