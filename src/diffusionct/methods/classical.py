"""Methods without a network: no change, histogram matching, and the calibrated kernel filter (the physics baseline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_file
from diffusionct.kernels.profiles import KERNEL_PROFILES_KEY, KernelProfile, apply_transfer, find_profile, transfer_gain
from diffusionct.methods import HISTOGRAM, IDENTITY, KERNEL_FILTER
from diffusionct.methods.base import Method, _batches
from diffusionct.methods.store import CONFIG_NAME, read_tensors


class IdentityMethod(Method):
    name = IDENTITY

    @classmethod
    def load(cls, folder, config, device, meta=None):
        return cls(config, device)

    def _slices(self, hu, batch_size, progress):
        if progress:
            progress(hu.shape[0])
        return hu.copy()


class HistogramMethod(Method):
    """Maps each HU value through source quantiles -> target quantiles learned on body voxels of the pairs."""

    name = HISTOGRAM
    WEIGHTS = "histogram.safetensors"

    def __init__(self, config, device=torch.device("cpu"), source_q=None, target_q=None):
        super().__init__(config, device)
        self.source_q, self.target_q = source_q, target_q

    def fit(self, source: np.ndarray, target: np.ndarray) -> None:
        """Quantiles of body voxels: of the same voxels for pairs, of each set's own body for unpaired sets."""
        if source.shape == target.shape:
            source_body = target_body = (source > -500) | (target > -500)
        else:
            source_body, target_body = source > -500, target > -500
        levels = np.linspace(0, 1, self.config.baselines.histogram.quantiles)
        self.source_q = np.quantile(source[source_body], levels)
        self.target_q = np.quantile(target[target_body], levels)

    def _slices(self, hu, batch_size, progress):
        out = np.interp(hu, self.source_q, self.target_q)
        outside = (hu < self.source_q[0]) | (hu > self.source_q[-1])
        out[outside] = hu[outside]  # beyond the learned range (air, metal): unchanged
        if progress:
            progress(hu.shape[0])
        return out

    def _save_weights(self, folder):
        with atomic_output_file(folder / self.WEIGHTS) as tmp:
            save_file({"source_quantiles": torch.from_numpy(self.source_q), "target_quantiles": torch.from_numpy(self.target_q)}, str(tmp))

    @classmethod
    def load(cls, folder, config, device, meta=None):
        path = folder / cls.WEIGHTS
        tensors = read_tensors(path)
        quantiles = [tensors.get(name) for name in ("source_quantiles", "target_quantiles")]
        if any(q is None or q.ndim != 1 or q.numel() < 2 or not torch.isfinite(q).all() for q in quantiles) \
                or quantiles[0].shape != quantiles[1].shape or bool((quantiles[0].diff() < 0).any()):
            raise DiffusionCTError(f"{path}: not a histogram-matching table (two increasing, finite quantile lists); "
                                   "retrain or re-copy the model")
        return cls(config, device, quantiles[0].numpy(), quantiles[1].numpy())


class KernelFilterMethod(Method):
    """The calibrated linear filter between two kernels: filtered back-projection is linear, so two reconstructions of
    one scan differ by W_target(f) / W_source(f), applied here on each slice's DFT at its pixel size. The physics
    baseline every learned method must beat on real pairs; its two profiles are stored in ``config.json``."""

    name = KERNEL_FILTER
    needs_pixel_mm = True

    def __init__(self, config, device=torch.device("cpu"), source: KernelProfile | None = None,
                 target: KernelProfile | None = None):
        super().__init__(config, device)
        self.source, self.target = source, target

    def gain(self, cycles_per_mm: np.ndarray) -> np.ndarray:
        return transfer_gain(self.source, self.target, cycles_per_mm)

    def _run(self, hu, steps, seed, batch_size, progress, pixel_mm, temperature):
        out = np.empty(hu.shape, dtype=np.float32)
        for start, chunk in _batches(hu, batch_size):
            out[start:start + len(chunk)] = apply_transfer(chunk, self.gain, pixel_mm)
            if progress:
                progress(len(chunk))
        return out

    def _meta(self) -> dict:
        return {**super()._meta(), KERNEL_PROFILES_KEY: {"source": self.source.to_dict(), "target": self.target.to_dict()}}

    @classmethod
    def load(cls, folder, config, device, meta=None):
        profiles = (meta or {}).get(KERNEL_PROFILES_KEY)
        if not isinstance(profiles, dict) or not {"source", "target"} <= set(profiles):
            raise DiffusionCTError(f"{folder}: a kernel-filter model needs 'kernel_profiles' with 'source' and 'target' "
                                   f"in {CONFIG_NAME}; remake it with `diffusionct train --method kernel-filter`")
        where = str(Path(folder) / CONFIG_NAME)
        return cls(config, device, KernelProfile.from_dict(profiles["source"], where),
                   KernelProfile.from_dict(profiles["target"], where))


def kernel_filter_method(config: RunConfig, device: torch.device, manifest: Path | None = None,
                         profiles: tuple = ()) -> KernelFilterMethod:
    """The kernel-filter method of ``config``'s kernel pair: measured on the manifest's same-scan pairs, else from the
    kernels' profiles."""
    source, target = config.data.source_kernel, config.data.target_kernel
    if manifest is None:
        return KernelFilterMethod(config, device, find_profile(source, profiles), find_profile(target, profiles))
    from diffusionct.io.manifest import Manifest
    from diffusionct.kernels.calibrate import common_pixel_mm
    from diffusionct.kernels.measure import measure_pairs, profiles_from_measurement

    data = Manifest.read(manifest)
    pairs = data.oriented_pairs(source, target)
    if not pairs:
        raise DiffusionCTError(f"{manifest}: no {source} -> {target} same-scan pairs to calibrate the filter on; "
                               "drop --data to use the kernels' profiles")
    scans, pixel = [], []
    for path_a, path_b in pairs:
        a, b = data.read_volume(path_a), data.read_volume(path_b)
        scans.append({source: a.hu, target: b.hu})
        pixel.append(a.pixel_mm)
    measurement = measure_pairs(source, scans, common_pixel_mm(pixel))
    made = profiles_from_measurement(measurement, "", f"calibrated on the same-scan pairs of {manifest}")
    by_name = {p.name: p for p in made}
    return KernelFilterMethod(config, device, by_name[source], by_name[target])
