"""Every standardization method behind one interface, trained and saved the same way.

A method folder holds ``config.json`` (``method``, kernels, settings) and safetensors weights.
``load_method(folder)`` returns an object with ``standardize_slices(hu, steps, seed, batch_size,
progress) -> hu``; ``diffusionct.train.methods.train_method(name, ...)`` trains one from a manifest (inference
never imports training).

Methods (``diffusionct train --method NAME``):

* ``identity``      no change (the paper's baseline row)
* ``histogram``     quantile (histogram) matching of body voxels to the target kernel's distribution
* ``kernel-filter`` the calibrated linear filter W_target / W_source of two kernel profiles (the physics baseline)
* ``autoencoder``   the trained encoder-decoder alone: encode A, decode (the paper's Encoder-Decoder row)
* ``residual-cnn``  Choe et al. 2019 residual CNN
* ``pix2pix``       conditional GAN of the GANai / STAN-CT family (U-Net generator, PatchGAN)
* ``cyclegan``      unpaired GAN of the CVH-CT / UDA-CT family (two generators, cycle consistency)
* ``ddpm``          image-space conditional DDPM (SR3 / Palette style; the paper's DDPM row)
* ``diffusionct``   the main model (default)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from diffusionct import __version__
# METHODS lives beside the settings: the CLI lists it without torch
from diffusionct.config import METHODS, RunConfig, image_ddpm_diffusion_config, image_ddpm_unet_config
from diffusionct.diffusion import ConditionalDiffusion
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_file
from diffusionct.kernels.profiles import KERNEL_PROFILES_KEY, KernelProfile, apply_transfer, find_profile, transfer_gain
from diffusionct.models.baselines import ResidualCNN
from diffusionct.units import HU_RANGE
from diffusionct.model_store import (CONFIG_NAME, FORMAT_VERSION, load_model, load_weights, read_model_meta, read_tensors,
                                     save_model, save_weights, write_model_config)
from diffusionct.models.diffusionct_model import DiffusionCTModel

Progress = Callable[[int], None] | None


def _batches(hu: np.ndarray, batch_size: int):
    for start in range(0, hu.shape[0], batch_size):
        yield start, hu[start:start + batch_size]


class Method:
    """Base class: a method maps source-kernel HU slices to target-kernel ones."""

    name = "method"
    uses_steps = False
    needs_pixel_mm = False  # a network conditioned on the pixel size (``standardize_slices(pixel_mm=...)``)

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

    def standardize_slices(self, hu: np.ndarray, steps: int | None = None, seed: int = 0, batch_size: int = 4,
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


class IdentityMethod(Method):
    name = "identity"

    @classmethod
    def load(cls, folder, config, device, meta=None):
        return cls(config, device)

    def _slices(self, hu, batch_size, progress):
        if progress:
            progress(hu.shape[0])
        return hu.copy()


class HistogramMethod(Method):
    """Maps each HU value through source quantiles -> target quantiles learned on body voxels of the pairs."""

    name = "histogram"
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
        levels = np.linspace(0, 1, self.config.baselines.histogram_quantiles)
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

    name = "kernel-filter"
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


def _pad(batch: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = batch.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        batch = F.pad(batch, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return batch, (h, w)


def sample_with_shared_noise(denoiser, cond: torch.Tensor, diffusion: ConditionalDiffusion, steps: int | None, seed: int,
                             cache: dict, source: torch.Tensor | None = None, temperature: float | None = None) -> torch.Tensor:
    """x_0 for a batch of slices; x_T is one noise image drawn from ``seed`` and shared by every slice
    (slice-to-slice consistency, and the output does not depend on how slices are batched)."""
    noise = cache.get("noise")
    if noise is None or noise.shape[1:] != cond.shape[1:]:
        noise = cache["noise"] = torch.randn((1, *cond.shape[1:]), generator=torch.Generator().manual_seed(seed))
    return diffusion.sample(denoiser, cond, steps=steps, initial_noise=noise.expand(cond.shape[0], -1, -1, -1), source=source,
                            temperature=temperature)


class NetworkMethod(Method):
    """Shared batching of a torch network over slices, with reflection padding to ``multiple``."""

    multiple = 1

    def _inference_modules(self) -> list[torch.nn.Module]:
        """The networks that ``_network_slices`` runs (put in channels-last layout there)."""
        return []

    @torch.no_grad()
    def _network_slices(self, hu: np.ndarray, batch_size: int, progress: Progress, fn) -> np.ndarray:
        # channels-last (NHWC): oneDNN's convolutions run 20-30 % faster in it on this CPU (docs/benchmarks.md)
        for module in self._inference_modules():
            module.to(memory_format=torch.channels_last)
        out = np.empty(hu.shape, dtype=np.float32)
        for start, chunk in _batches(hu, batch_size):
            batch, (h, w) = _pad(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))[:, None], self.multiple)
            batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
            out[start:start + chunk.shape[0]] = fn(batch)[:, 0, :h, :w].float().cpu().numpy()
            if progress:
                progress(chunk.shape[0])
        return out

    def _pixel_sizes(self, batch: torch.Tensor, pixel_mm: float | None) -> torch.Tensor | None:
        """``(B,)`` pixel sizes of a batch of slices of one series, for a network conditioned on them."""
        return None if pixel_mm is None else torch.full((batch.shape[0],), float(pixel_mm), device=batch.device)


class SingleNetworkMethod(NetworkMethod):
    """A method made of one network stored as ``WEIGHTS`` beside ``config.json``."""

    WEIGHTS = "network.safetensors"

    def __init__(self, config, device=torch.device("cpu"), network: torch.nn.Module | None = None):
        super().__init__(config, device)
        self.network = (network or self.build_network(config)).to(device).eval()
        self.needs_pixel_mm = bool(getattr(self.network, "uses_pixel_spacing", False))

    def _inference_modules(self) -> list[torch.nn.Module]:
        return [self.network]

    @staticmethod
    def build_network(config: RunConfig) -> torch.nn.Module:  # pragma: no cover
        raise NotImplementedError

    def _run(self, hu, steps, seed, batch_size, progress, pixel_mm, temperature):
        if not self.needs_pixel_mm:
            return self._network_slices(hu, batch_size, progress, self.network.convert)
        return self._network_slices(hu, batch_size, progress,
                                    lambda batch: self.network.convert(batch, self._pixel_sizes(batch, pixel_mm)))

    def _save_weights(self, folder):
        save_weights(self.network, folder / self.WEIGHTS)

    @classmethod
    def load(cls, folder, config, device, meta=None):
        method = cls(config, device)
        load_weights(method.network, folder / cls.WEIGHTS)
        method.network.to(device).eval()
        return method


class ResidualCNNMethod(SingleNetworkMethod):
    name = "residual-cnn"
    WEIGHTS = "residual_cnn.safetensors"

    @staticmethod
    def build_network(config):
        return ResidualCNN.baseline(config.baselines)


class Pix2PixMethod(SingleNetworkMethod):
    name = "pix2pix"
    WEIGHTS = "generator.safetensors"

    def __init__(self, config, device=torch.device("cpu"), network=None):
        super().__init__(config, device, network)
        self.multiple = self.network.multiple

    @staticmethod
    def build_network(config):
        from diffusionct.models.baselines import UNetGenerator

        return UNetGenerator(config.baselines.pix2pix_channels, config.baselines.pix2pix_depth)


class CycleGANMethod(Pix2PixMethod):
    """CycleGAN's A -> B generator (the family of CVH-CT and UDA-CT); trained on unpaired crops."""

    name = "cyclegan"


class ImageDDPMMethod(SingleNetworkMethod):
    """Conditional DDPM on the image itself (HU / ``ddpm_hu_scale``), sharing the diffusion code."""

    name = "ddpm"
    uses_steps = True
    WEIGHTS = "unet.safetensors"

    def __init__(self, config, device=torch.device("cpu"), network=None):
        super().__init__(config, device, network)
        self.multiple = 2 ** (len(config.baselines.ddpm_channels) - 1)
        self.diffusion = ConditionalDiffusion.from_config(image_ddpm_diffusion_config(config))

    @staticmethod
    def build_network(config):
        from diffusionct.models.latent_unet import ConditionalUNet
        return ConditionalUNet(image_ddpm_unet_config(config), 1)

    def _run(self, hu, steps, seed, batch_size, progress, pixel_mm, temperature):
        scale = self.config.baselines.ddpm_hu_scale
        shared: dict[str, torch.Tensor] = {}

        def convert(batch: torch.Tensor) -> torch.Tensor:
            cond = batch.clamp(*HU_RANGE) / scale
            x0 = sample_with_shared_noise(self.network, cond, self.diffusion, steps, seed, shared, temperature=temperature)
            return self.diffusion.to_target_latent(x0, cond) * scale

        return self._network_slices(hu, batch_size, progress, convert)


class AutoencoderMethod(NetworkMethod):
    """The encoder-decoder alone (no diffusion)."""

    name = "autoencoder"

    def __init__(self, config, device=torch.device("cpu"), model: DiffusionCTModel | None = None):
        super().__init__(config, device)
        self.model = model
        self.multiple = config.autoencoder.downsample

    @classmethod
    def load(cls, folder, config, device, meta=None):
        return cls(config, device, load_model(folder, device, need_diffusion=False, meta=meta))

    def _inference_modules(self) -> list[torch.nn.Module]:
        return [self.model.autoencoder]

    def _slices(self, hu, batch_size, progress):
        ae = self.model.autoencoder
        return self._network_slices(hu, batch_size, progress, lambda x: ae.decode(ae.encode(x)))

    def save(self, folder, extra=None):
        save_model(self.model, folder, ["autoencoder"], {"method": self.name, **(extra or {})})


class DiffusionCTMethod(NetworkMethod):
    """Encode A, reverse diffusion conditioned on Z_A (refine: on Z_A + m(Z_A)) from noise shared by all slices,
    decode."""

    name = "diffusionct"
    uses_steps = True

    def __init__(self, config, device=torch.device("cpu"), model: DiffusionCTModel | None = None):
        super().__init__(config, device)
        self.model = model
        self.multiple = config.size_multiple
        self.diffusion = ConditionalDiffusion.from_config(config.diffusion)
        self.stage_seconds = {"encode": 0.0, "diffuse": 0.0, "decode": 0.0}
        self.needs_pixel_mm = bool(getattr(model and model.predictor, "uses_pixel_spacing", False))

    def _inference_modules(self) -> list[torch.nn.Module]:
        return self.model.modules()

    def _run(self, hu, steps, seed, batch_size, progress, pixel_mm, temperature):
        minimum = self.config.size_multiple
        if min(hu.shape[1:]) < minimum:
            raise DiffusionCTError(f"images of {hu.shape[1]}x{hu.shape[2]} pixels are smaller than the "
                                   f"{minimum}x{minimum} this model needs")
        ae, unet, diffusion = self.model.autoencoder, self.model.unet, self.diffusion
        shared: dict[str, torch.Tensor] = {}

        def convert(batch: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            z_a = ae.encode(batch)
            t1 = time.perf_counter()
            mean = self.model.predicted_mean(batch, z_a, self._pixel_sizes(batch, pixel_mm))
            x0 = sample_with_shared_noise(unet, diffusion.condition(z_a, mean), diffusion, steps, seed, shared, source=z_a,
                                          temperature=temperature)
            t2 = time.perf_counter()
            images = ae.decode(diffusion.to_target_latent(x0, z_a, mean))
            t3 = time.perf_counter()
            for stage, seconds in zip(("encode", "diffuse", "decode"), (t1 - t0, t2 - t1, t3 - t2)):
                self.stage_seconds[stage] += seconds
            return images

        return self._network_slices(hu, batch_size, progress, convert)

    def save(self, folder, extra=None):
        save_model(self.model, folder, ["autoencoder", "diffusion"], {"method": self.name, **(extra or {})})

    @classmethod
    def load(cls, folder, config, device, meta=None):
        return cls(config, device, load_model(folder, device, meta=meta))


# Every method by its name: loading dispatches here; the CLI's list (config.METHODS, importable without torch)
# must name exactly these.
REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (
    IdentityMethod, HistogramMethod, KernelFilterMethod, AutoencoderMethod, ResidualCNNMethod, Pix2PixMethod, CycleGANMethod, ImageDDPMMethod,
    DiffusionCTMethod)}
if set(REGISTRY) != set(METHODS):  # pragma: no cover - a developer error, caught by any import in the tests
    raise RuntimeError(f"config.METHODS {sorted(METHODS)} and the method registry {sorted(REGISTRY)} differ")


def load_method(folder: str | Path, device: torch.device = torch.device("cpu")) -> Method:
    """Load any method from its folder (the method name is in ``config.json``)."""
    folder = Path(folder)
    meta = read_model_meta(folder, require_autoencoder=False)
    name = meta.get("method", "diffusionct")
    config = RunConfig.from_saved(meta["config"], str(folder / CONFIG_NAME))
    if name not in REGISTRY:
        raise DiffusionCTError(f"{folder}: unknown method '{name}' in {CONFIG_NAME}; known: {', '.join(METHODS)}")
    return REGISTRY[name].load(folder, config, device, meta)  # meta: read and verified once


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


