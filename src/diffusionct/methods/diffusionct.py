"""DiffusionCT itself: encode, reverse diffusion in the latent space conditioned on the source, decode."""

from __future__ import annotations

import time

import torch

from diffusionct.config import DIFFUSION_PHASE
from diffusionct.diffusion import ConditionalDiffusion
from diffusionct.errors import DiffusionCTError
from diffusionct.methods import AUTOENCODER, DIFFUSIONCT
from diffusionct.methods.networks import NetworkMethod, sample_with_shared_noise
from diffusionct.methods.store import load_model, save_model
from diffusionct.models.diffusionct_model import DiffusionCTModel


class DiffusionCTMethod(NetworkMethod):
    """Encode A, reverse diffusion conditioned on Z_A (refine: on Z_A + m(Z_A)) from noise shared by all slices,
    decode."""

    name = DIFFUSIONCT
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
        save_model(self.model, folder, [AUTOENCODER, DIFFUSION_PHASE], {"method": self.name, **(extra or {})})

    @classmethod
    def load(cls, folder, config, device, meta=None):
        return cls(config, device, load_model(folder, device, meta=meta))
