"""The latent networks of phase 2: the conditional U-Net (MONAI's DiffusionModelUNet on [x_t, condition]
concatenated) and the ``refine`` mode's latent predictor."""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from diffusionct.config import UNetConfig
from diffusionct.models.baselines import conv_stack


class ConditionalUNet(nn.Module):
    """Predicts the diffusion target from the noisy latent x_t, the timestep and the condition Z_A."""

    def __init__(self, cfg: UNetConfig, latent_channels: int):
        super().__init__()
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=2 * latent_channels, out_channels=latent_channels,
            num_res_blocks=cfg.num_res_blocks, channels=tuple(cfg.channels), attention_levels=tuple(cfg.attention_levels),
            norm_num_groups=cfg.norm_num_groups, num_head_channels=cfg.num_head_channels,
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, cond], dim=1), t)


class LatentPredictor(nn.Module):
    """Estimates the conditional mean of Z_B - Z_A from Z_A (the deterministic part of the map).

    A plain stack of 3x3 convolutions at the latent resolution whose last layer starts at zero, so
    an untrained predictor changes nothing (Whang et al. 2022 use a U-Net; a stack of this depth
    sees 13 latent pixels, 52 image pixels with the 4x latent).
    """

    def __init__(self, latent_channels: int, channels: int = 64, layers: int = 6):
        super().__init__()
        self.net = conv_stack(latent_channels, channels, layers, latent_channels)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z_source: torch.Tensor) -> torch.Tensor:
        return self.net(z_source)
