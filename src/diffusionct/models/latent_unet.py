"""The latent networks of phase 2: the conditional U-Net (MONAI's DiffusionModelUNet on [x_t, condition]
concatenated) and the ``refine`` mode's latent predictor."""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn
from torch.nn import functional as F

from diffusionct.config import UNetConfig
from diffusionct.models.baselines import conv_stack


class ConditionSkip(nn.Module):
    """A linear path from (x_t, Z_A) to the noise estimate: w_x(t) x_t + w_c(t) Z_A + w_1(t), per channel.

    Each coefficient is linear in the schedule's basis (1, a_t / s_t, 1 / s_t), with a_t = sqrt(abar_t) and
    s_t = sqrt(1 - abar_t), because that is the form of the exact answer when the target is an affine map of
    the condition: x_t = a_t x_0 + s_t eps gives eps = x_t / s_t - (a_t / s_t) x_0 (Ho et al. eq. 4). A plain
    U-Net has to learn that copy through its normalised layers; near t = T the sampler's x_0 = (x_t - s_t eps) / a_t
    multiplies its error by up to 1 / a_t ~ 150, and from pure noise it then never finds the image of Z_A.

    With ``size`` > 1 the condition's a_t / s_t term also passes a learned ``size`` x ``size`` convolution across
    channels (zero at the start): a linear filter of Z_A, the form of a kernel change between two reconstructions
    of one sinogram, that the linear path can learn before the U-Net does.
    """

    def __init__(self, channels: int, alpha_bar: torch.Tensor, size: int = 1):
        super().__init__()
        a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        self.register_buffer("basis", torch.stack([torch.ones_like(a), a / s, 1 / s], 1).float(), persistent=False)
        self.weight = nn.Parameter(torch.zeros(3, channels, 3))  # (x_t, Z_A, constant) x channel x basis
        self.filter: nn.Conv2d | None = None
        if size > 1:
            self.filter = nn.Conv2d(channels, channels, size, padding=size // 2, padding_mode="reflect", bias=False)
            nn.init.zeros_(self.filter.weight)

    def start_as_condition(self, x0_shift: float, x0_factor: float) -> None:
        """Start as the model "Z_B = Z_A": eps = (x_t - a_t x0) / s_t with x0 = (Z_A - x0_shift) x0_factor, the
        diffusion's scaling of its x_0 (``ConditionalDiffusion.scaled``)."""
        with torch.no_grad():
            self.weight.zero_()
            if self.filter is not None:
                self.filter.weight.zero_()
            self.weight[0, :, 2] = 1.0
            self.weight[1, :, 1] = -x0_factor
            self.weight[2, :, 1] = x0_shift * x0_factor

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        basis = self.basis[t]
        coef = torch.einsum("bk,jck->jbc", basis, self.weight)[..., None, None].to(x_t.dtype)
        out = coef[0] * x_t + coef[1] * cond + coef[2]
        if self.filter is not None:
            out = out + basis[:, 1, None, None, None].to(x_t.dtype) * self.filtered(cond)
        return out

    def filtered(self, cond: torch.Tensor) -> torch.Tensor:
        """The learned filter of Z_A with no response to a constant: a kernel change keeps the mean HU, and Z_A's
        mean, far from 0, would otherwise swamp what the filter learns."""
        w = self.filter.weight
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(F.pad(cond, [self.filter.padding[0]] * 4, mode="reflect"), w)


class ConditionalUNet(nn.Module):
    """Predicts the diffusion target from the noisy latent x_t, the timestep and the condition Z_A.

    ``alpha_bar``: the noise schedule's cumulative products, needed by ``cfg.condition_skip`` (``ConditionSkip``).
    """

    def __init__(self, cfg: UNetConfig, latent_channels: int, alpha_bar: torch.Tensor | None = None):
        super().__init__()
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=2 * latent_channels, out_channels=latent_channels,
            num_res_blocks=cfg.num_res_blocks, channels=tuple(cfg.channels), attention_levels=tuple(cfg.attention_levels),
            norm_num_groups=cfg.norm_num_groups, num_head_channels=cfg.num_head_channels,
        )
        self.skip: ConditionSkip | None = None
        if cfg.condition_skip:
            if alpha_bar is None:
                raise ValueError("unet.condition_skip needs the noise schedule's alpha_bar")
            self.skip = ConditionSkip(latent_channels, alpha_bar, cfg.condition_skip_size)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([x_t, cond], dim=1), t)
        return out if self.skip is None else out + self.skip(x_t, t, cond)


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
