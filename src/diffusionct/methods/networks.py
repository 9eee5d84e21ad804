"""The learned baselines: one network each (or the encoder-decoder alone), batched over slices."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from diffusionct.config import RunConfig, image_ddpm_diffusion_config, image_ddpm_unet_config
from diffusionct.diffusion import ConditionalDiffusion
from diffusionct.methods import AUTOENCODER, CYCLEGAN, DDPM, PIX2PIX, RESIDUAL_CNN
from diffusionct.methods.base import Method, Progress, _batches
from diffusionct.methods.store import load_model, load_weights, save_model, save_weights
from diffusionct.models.baselines import ResidualCNN
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.units import HU_RANGE


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
    name = RESIDUAL_CNN
    WEIGHTS = "residual_cnn.safetensors"

    @staticmethod
    def build_network(config):
        return ResidualCNN.of(config.baselines.residual_cnn)


class Pix2PixMethod(SingleNetworkMethod):
    name = PIX2PIX
    WEIGHTS = "generator.safetensors"

    def __init__(self, config, device=torch.device("cpu"), network=None):
        super().__init__(config, device, network)
        self.multiple = self.network.multiple

    @staticmethod
    def build_network(config):
        from diffusionct.models.baselines import UNetGenerator

        return UNetGenerator(config.baselines.pix2pix.channels, config.baselines.pix2pix.depth)


class CycleGANMethod(Pix2PixMethod):
    """CycleGAN's A -> B generator (the family of CVH-CT and UDA-CT); trained on unpaired crops."""

    name = CYCLEGAN


class ImageDDPMMethod(SingleNetworkMethod):
    """Conditional DDPM on the image itself (HU / ``baselines.ddpm.hu_scale``), sharing the diffusion code."""

    name = DDPM
    uses_steps = True
    WEIGHTS = "unet.safetensors"

    def __init__(self, config, device=torch.device("cpu"), network=None):
        super().__init__(config, device, network)
        self.multiple = 2 ** (len(config.baselines.ddpm.channels) - 1)
        self.diffusion = ConditionalDiffusion.from_config(image_ddpm_diffusion_config(config))

    @staticmethod
    def build_network(config):
        from diffusionct.models.latent_unet import ConditionalUNet
        return ConditionalUNet(image_ddpm_unet_config(config), 1)

    def _run(self, hu, steps, seed, batch_size, progress, pixel_mm, temperature):
        scale = self.config.baselines.ddpm.hu_scale
        shared: dict[str, torch.Tensor] = {}

        def convert(batch: torch.Tensor) -> torch.Tensor:
            cond = batch.clamp(*HU_RANGE) / scale
            x0 = sample_with_shared_noise(self.network, cond, self.diffusion, steps, seed, shared, temperature=temperature)
            return self.diffusion.to_target_latent(x0, cond) * scale

        return self._network_slices(hu, batch_size, progress, convert)


class AutoencoderMethod(NetworkMethod):
    """The encoder-decoder alone (no diffusion)."""

    name = AUTOENCODER

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
        save_model(self.model, folder, [AUTOENCODER], {"method": self.name, **(extra or {})})
