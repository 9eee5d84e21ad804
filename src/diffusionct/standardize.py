"""Standardization: a CT volume reconstructed with the source kernel -> its target-kernel counterpart.

    standardizer = Standardizer.load("path/to/model", device="auto")   # once
    out = standardizer.standardize(volume, steps=5, seed=0)            # per series

Inference (paper section 3.3): encode A to Z_A, run the reverse diffusion conditioned on Z_A, decode
Z_A'. Full slices at native size (padded by reflection to the networks' multiple, cropped back), in
batches. The starting noise is drawn once per seed and shared by every slice, and DDIM with eta = 0
is deterministic, so neighbouring slices are standardized consistently and the same input, model and
seed give the same output bytes. Outside the body (below -500 HU, holes filled) the input is kept, so
air stays air.

Runs over files and folders (a model per series, resume records, Dask) are `standardize_runs.py`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from diffusionct.config import check_seed
from diffusionct.devices import resolve_device
from diffusionct.errors import DiffusionCTError
from diffusionct.io.volume import Volume
from diffusionct.kernels.names import KernelSet, kernel_among
from diffusionct.methods.base import Method
from diffusionct.methods.registry import load_method
from diffusionct.methods.library import default_model_dir
from diffusionct.units import HU_RANGE

log = logging.getLogger(__name__)
OUTPUT_RANGE = HU_RANGE  # what the DICOM writer stores
BODY_THRESHOLD_HU = -500.0


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Per slice: tissue above -500 HU with holes (lungs, airways) filled, grown by 2 pixels."""
    out = np.empty(hu.shape, dtype=bool)
    for i, image in enumerate(hu):
        filled = ndimage.binary_fill_holes(image > BODY_THRESHOLD_HU)
        out[i] = ndimage.binary_dilation(filled, iterations=2)
    return out


class Standardizer:
    """A loaded method (DiffusionCT or a baseline), reused for many series."""

    def __init__(self, method: Method):
        self.method = method

    @classmethod
    def load(cls, model_dir: str | Path | None = None, device: str = "auto") -> "Standardizer":
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        return cls(load_method(folder, resolve_device(device)))

    @property
    def config(self):
        return self.method.config

    @property
    def source_kernel(self) -> str:
        return self.method.source_kernel

    @property
    def target_kernel(self) -> str:
        return self.method.target_kernel

    def standardize_slices(self, hu: np.ndarray, steps: int | None = None, seed: int = 0, batch_size: int = 4,
                           progress: Callable[[int], None] | None = None, pixel_mm: float | None = None,
                           temperature: float | None = None) -> np.ndarray:
        """Standardize HU slices ``(N, H, W)`` of in-plane pixel size ``pixel_mm`` (mm; needed by models
        conditioned on it); air outside the body is kept; clipped to the writer's range. ``steps`` and
        ``temperature``: the sampler's (default: the model's)."""
        self.check_steps(steps)
        self.check_temperature(temperature)
        check_seed(seed)
        if not np.isfinite(hu).all():
            raise DiffusionCTError("the input holds non-finite values (NaN or infinity); fill them before standardizing")
        out = self.method.convert_slices(hu, steps=steps, seed=seed, batch_size=batch_size, progress=progress,
                                             pixel_mm=pixel_mm, temperature=temperature)
        if not np.isfinite(out).all():
            raise DiffusionCTError(f"the {self.method.name} model produced non-finite values (NaN or infinity): its "
                                   "weights are damaged or training diverged; retrain it or use another model")
        out = np.clip(out, *OUTPUT_RANGE)
        keep = ~body_mask(hu)
        out[keep] = hu[keep]  # outside the body the input is kept as it was
        return out

    @property
    def output_kernel(self) -> str:
        """The ConvolutionKernel written to the output: the target kernel's name without its manufacturer."""
        return KernelSet.parse(self.target_kernel).kernel

    def check_steps(self, steps: int | None) -> None:
        if steps is not None and not 1 <= steps <= self.config.diffusion.timesteps:
            raise DiffusionCTError(f"--steps must be in 1..{self.config.diffusion.timesteps} (the diffusion's T), got {steps}")

    @staticmethod
    def check_temperature(temperature: float | None) -> None:
        if temperature is not None and not 0.0 <= temperature <= 1.0:
            raise DiffusionCTError(f"--temperature must be in [0, 1] (0: the deterministic path from the zero start, 1: "
                                   f"the model's distribution), got {temperature}")

    def check_kernel(self, volume: Volume, strict: bool = False, kernel: str | None = None) -> str | None:
        """A warning (or, with ``strict``, an error) when the input's kernel (``kernel``: as given by the user,
        else the volume's) is not of the model's source kernel family."""
        kernel = kernel or volume.kernel
        if kernel is None or kernel_among(kernel, map(str, KernelSet.parse_list(self.source_kernel))):
            return None
        message = (f"input kernel is {kernel or 'unknown'} but the model standardizes {self.source_kernel} -> "
                   f"{self.target_kernel}")
        if strict:
            raise DiffusionCTError(message + " (refused by --strict)")
        return message

    def standardize(self, volume: Volume, steps: int | None = None, seed: int = 0, batch_size: int = 4,
                    progress: Callable[[int], None] | None = None, temperature: float | None = None) -> Volume:
        """The standardized volume on the same grid, with the target kernel in its metadata."""
        hu = self.standardize_slices(volume.hu, steps=steps, seed=seed, batch_size=batch_size, progress=progress,
                                     pixel_mm=volume.pixel_mm, temperature=temperature)
        return volume.with_hu(hu, kernel=self.output_kernel, standardized_from=volume.kernel)
