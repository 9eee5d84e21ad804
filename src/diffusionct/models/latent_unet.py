"""The conditional latent U-Net: MONAI's DiffusionModelUNet on [x_t, Z_A] concatenated."""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from diffusionct.config import UNetConfig


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
