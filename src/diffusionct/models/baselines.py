"""Networks of the baseline methods (they take tensors, not files).

* :class:`ResidualCNN`: the kernel-conversion CNN of Choe et al. (Radiology 2019, "Deep learning-based
  image conversion of CT reconstruction kernels"): a stack of 3x3 convolutions with ReLU that
  predicts the HU residual B - A of a full slice; trained with an L2 loss. Choe et al. used a
  plain stack of convolutions of 64 channels; the depth here is a setting (default 6 layers).
"""

from __future__ import annotations

import torch
from torch import nn

HU_SCALE = 1000.0  # network input: HU / 1000
RESIDUAL_SCALE = 100.0  # network output: residual HU / 100


class ResidualCNN(nn.Module):
    def __init__(self, channels: int = 64, layers: int = 6):
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            modules += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        modules.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.net = nn.Sequential(*modules)

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        """Predicted residual B - A in HU for HU slices ``(B, 1, H, W)``."""
        return self.net(hu.clamp(-1024, 3071) / HU_SCALE) * RESIDUAL_SCALE

    def convert(self, hu: torch.Tensor) -> torch.Tensor:
        """The target-kernel image A + (B - A)."""
        return hu + self(hu)
