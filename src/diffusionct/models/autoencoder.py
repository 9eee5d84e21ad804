"""The encoder-decoder of DiffusionCT (paper section 3.1), without skip connections.

Encoder: ResNet-18 style. The stem (7x7 convolution, stride 2, normalisation, ReLU) is the paper's
first block; each further stage is two BasicBlocks (3x3 convolutions with an identity shortcut
inside the block), the first with stride 2, doubling the channels, as ResNet-18's layer1..layer4.
Two departures from ResNet-18, for texture: the stem's max-pool is replaced by the first stage's
strided convolution (max-pooling discards the noise texture the model must keep), and GroupNorm
replaces BatchNorm (single-slice inference matches training). A 1x1 convolution maps to the latent.

Decoder (asymmetric): a 3x3 convolution from the latent, then per factor 2 an up-sampling block
(nearest up-sampling, 3x3 convolution halving the width, GroupNorm, ReLU, BasicBlock), and plain 1x1
convolutions at the end. Nothing of the input reaches the decoder except through the latent.

With ``space_to_depth`` the encoder also adds the fixed space-to-depth rearrangement of the input
(PixelUnshuffle) to its latent and the decoder adds the inverse rearrangement of the latent's first
channels to its output; the learned branches start at zero, so training begins from an exact round
trip. Every pixel still reaches the decoder only through the latent.

Contract between stages (as MONAI/diffusers): ``encode(hu_tensor) -> z`` and ``decode(z) -> hu``,
with z multiplied by ``latent_scale`` so that latents have about unit variance for the diffusion.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from diffusionct.config import AutoencoderConfig


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    """ResNet's BasicBlock: two 3x3 convolutions and a shortcut (a 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = _norm(out_channels)
        self.shortcut = (
            nn.Identity() if stride == 1 and in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), _norm(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c = cfg.base_channels
        self.stem = nn.Sequential(nn.Conv2d(1, c, 7, 2, 3, bias=False), _norm(c), nn.ReLU(inplace=True))
        stages, channels = [], c
        for level in range(int(math.log2(cfg.downsample)) - 1):
            out = c * 2**level
            blocks = [BasicBlock(channels, out, stride=2)] + [BasicBlock(out, out) for _ in range(cfg.blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        if not stages:  # downsample 2: one stage at full resolution after the stem
            stages.append(nn.Sequential(*[BasicBlock(c, c) for _ in range(cfg.blocks_per_stage)]))
        self.stages = nn.Sequential(*stages)
        self.to_latent = nn.Conv2d(channels, cfg.latent_channels, 1)
        self.space_to_depth = nn.PixelUnshuffle(cfg.downsample) if cfg.space_to_depth else None
        if self.space_to_depth is not None:  # start as the exact space-to-depth map
            nn.init.zeros_(self.to_latent.weight)
            nn.init.zeros_(self.to_latent.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.to_latent(self.stages(self.stem(x)))
        if self.space_to_depth is not None:
            s2d = self.space_to_depth(x)
            z = z + F.pad(s2d, (0, 0, 0, 0, 0, z.shape[1] - s2d.shape[1]))
        return z


class Decoder(nn.Module):
    """Up-sampling decoder; its width halves at every factor 2 (down to 16) to keep full resolution cheap."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        d = cfg.decoder_channels
        self.from_latent = nn.Sequential(nn.Conv2d(cfg.latent_channels, d, 3, 1, 1), nn.ReLU(inplace=True))
        ups = []
        for _ in range(int(math.log2(cfg.downsample))):
            out = max(16, d // 2)
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d, out, 3, 1, 1), _norm(out),
                    nn.ReLU(inplace=True), BasicBlock(out, out)]
            d = out
        self.up = nn.Sequential(*ups)
        self.head = nn.Sequential(nn.Conv2d(d, d, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(d, d, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(d, 1, 1))
        self.factor = cfg.downsample
        self.depth_to_space = nn.PixelShuffle(cfg.downsample) if cfg.space_to_depth else None
        if self.depth_to_space is not None:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.head(self.up(self.from_latent(z)))
        if self.depth_to_space is not None:
            out = out + self.depth_to_space(z[:, : self.factor**2])
        return out


class Autoencoder(nn.Module):
    """Image <-> latent. Works on HU tensors ``(B, 1, H, W)``; H and W must be multiples of ``downsample``."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.register_buffer("latent_scale", torch.ones(()))

    # HU <-> network range ----------------------------------------------------------------------
    def normalize(self, hu: torch.Tensor) -> torch.Tensor:
        lo, hi = self.cfg.hu_min, self.cfg.hu_max
        return (hu.clamp(lo, hi) - lo) / (hi - lo) * 2 - 1

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.cfg.hu_min, self.cfg.hu_max
        return (x + 1) / 2 * (hi - lo) + lo

    # the contract used by every later stage ------------------------------------------------------
    def encode(self, hu: torch.Tensor) -> torch.Tensor:
        """Scaled latent of HU images."""
        return self.encoder(self.normalize(hu)) * self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """HU images of scaled latents."""
        return self.denormalize(self.decoder(z / self.latent_scale))

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        """Network-range reconstruction (for the training losses)."""
        return self.decoder(self.encoder(self.normalize(hu)))
