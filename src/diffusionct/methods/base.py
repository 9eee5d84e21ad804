"""The interface every method implements: source-kernel HU slices in, target-kernel HU slices out."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from diffusionct import __version__
from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.methods.store import FORMAT_VERSION, write_model_config

Progress = Callable[[int], None] | None


def _batches(hu: np.ndarray, batch_size: int):
    for start in range(0, hu.shape[0], batch_size):
        yield start, hu[start:start + batch_size]


class Method:
    """Base class: a method maps source-kernel HU slices to target-kernel ones."""

    name = "method"
    uses_steps = False
    needs_pixel_mm = False  # a network conditioned on the pixel size (``convert_slices(pixel_mm=...)``)

    def __init__(self, config: RunConfig, device: torch.device = torch.device("cpu")):
        self.config = config
        self.device = device

    @property
    def source_kernel(self) -> str:
        return self.config.data.source_kernel

    @property
    def target_kernel(self) -> str:
        return self.config.data.target_kernel

    def _slices(self, hu: np.ndarray, batch_size: int, progress: Progress) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def convert_slices(self, hu: np.ndarray, steps: int | None = None, seed: int = 0, batch_size: int = 4,
                       progress: Progress = None, pixel_mm: float | None = None,
                       temperature: float | None = None) -> np.ndarray:
        """Target-kernel slices for source-kernel HU slices ``(N, H, W)`` of in-plane pixel size ``pixel_mm``
        (needed by a model conditioned on it, ignored by the others). ``steps`` and ``temperature`` (default: the
        model's) are the diffusion sampler's; methods without one ignore them."""
        if hu.ndim != 3:
            raise DiffusionCTError(f"expected slices (N, H, W), got shape {hu.shape}")
        if self.needs_pixel_mm and pixel_mm is None:
            raise DiffusionCTError(f"this {self.name} model is conditioned on the pixel size: give the slices' "
                                   "in-plane pixel size in mm (pixel_mm), e.g. Volume.pixel_mm")
        if pixel_mm is not None and not (np.isfinite(pixel_mm) and 0.0 < pixel_mm < 100.0):
            raise DiffusionCTError(f"pixel size {pixel_mm} mm is not a positive size below 100 mm")
        return self._run(hu, steps, seed, batch_size, progress, pixel_mm, temperature).astype(np.float32)

    def _run(self, hu, steps, seed, batch_size, progress, pixel_mm, temperature) -> np.ndarray:
        return self._slices(hu, batch_size, progress)

    def _meta(self) -> dict:
        return {"format_version": FORMAT_VERSION, "diffusionct_version": __version__, "method": self.name,
                "phases": [], "config": self.config.to_dict()}

    def save(self, folder: Path, extra: dict | None = None) -> None:
        """Weights first, then config.json with their checksums (a folder without it is no model)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_weights(folder)
        write_model_config(folder, {**self._meta(), **(extra or {})})

    def _save_weights(self, folder: Path) -> None:
        """Write the method's safetensors files (none for a method without weights)."""
