"""DiffusionCT's networks as one object: the encoder-decoder, the conditional latent U-Net and the refine
mode's predictor, built from a RunConfig. Tensors in, tensors out; reading and writing a model folder is
``diffusionct.methods.store``'s job."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffusionct.config import RunConfig
from diffusionct.diffusion import NoiseSchedule
from diffusionct.models.autoencoder import Autoencoder
from diffusionct.models.baselines import ResidualCNN
from diffusionct.models.latent_unet import ConditionalUNet, LatentPredictor


@dataclass
class DiffusionCTModel:
    """The encoder-decoder and the latent U-Net with their configuration."""

    config: RunConfig
    autoencoder: Autoencoder
    unet: ConditionalUNet | None = None
    predictor: LatentPredictor | ResidualCNN | None = None  # the refine mode's conditional-mean estimate
    info: dict = field(default_factory=dict)

    @classmethod
    def build(cls, config: RunConfig) -> "DiffusionCTModel":
        latent, d = config.autoencoder.latent_channels, config.diffusion
        predictor: LatentPredictor | ResidualCNN | None = None
        if d.mode == "refine":
            predictor = (ResidualCNN.of(d.predictor) if d.predictor.space == "image"
                         else LatentPredictor(latent, d.predictor.channels, d.predictor.layers))
        unet = ConditionalUNet(config.unet, latent, NoiseSchedule.from_config(d).alpha_bar)
        return cls(config, Autoencoder(config.autoencoder), unet, predictor)

    def predicted_mean(self, hu: torch.Tensor, z_source: torch.Tensor,
                       pixel_mm: torch.Tensor | None = None) -> torch.Tensor | None:
        """The refine mode's estimate m of E[Z_B - Z_A | A]; None in the other modes.

        A latent predictor maps Z_A to m; the image-space one predicts the HU residual, so
        m = E(A + r(A)) - Z_A (exact with the space-to-depth encoder, whose latent is the image).
        ``pixel_mm`` ``(B,)``: the slices' pixel size, for a predictor conditioned on it."""
        if self.predictor is None:
            return None
        if isinstance(self.predictor, ResidualCNN):
            return self.autoencoder.encode(self.predictor.convert(hu, pixel_mm)) - z_source
        return self.predictor(z_source)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.autoencoder, self.unet, self.predictor) if m is not None]

    def to(self, device: torch.device) -> "DiffusionCTModel":
        for module in self.modules():
            module.to(device)
        return self

    def eval(self) -> "DiffusionCTModel":
        for module in self.modules():
            module.eval()
        return self
