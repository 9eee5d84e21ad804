"""Networks of the baseline methods (they take tensors, not files).

* :class:`ResidualCNN`: the kernel-conversion CNN of Choe et al. (Radiology 2019, "Deep learning-based
  image conversion of CT reconstruction kernels"): a stack of 3x3 convolutions with ReLU that
  predicts the HU residual B - A of a full slice; trained with an L2 loss. Choe et al. used a
  plain stack of convolutions of 64 channels; the depth here is a setting (default 6 layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from diffusionct.units import HU_RANGE

if TYPE_CHECKING:
    from diffusionct.config import PredictorConfig

HU_SCALE = 1000.0  # network input: HU / 1000
RESIDUAL_SCALE = 100.0  # network output: residual HU / 100


def conv_stack(in_channels: int, channels: int, layers: int, out_channels: int) -> nn.Sequential:
    """``layers`` 3x3 convolutions with ReLU between them (Choe et al.'s plain stack)."""
    modules: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(layers - 2):
        modules += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    modules.append(nn.Conv2d(channels, out_channels, 3, padding=1))
    return nn.Sequential(*modules)


REFERENCE_PIXEL_MM = 0.75  # the pixel-size input is log(pixel_mm / 0.75): 0 for a typical chest FOV


class RadialKernelFilter(nn.Module):
    """A learned isotropic linear filter whose gain is a function of spatial frequency in cycles per mm.

    A change of reconstruction kernel is, to first order, the ratio of two kernels' transfer functions: an
    isotropic filter in cycles/mm, the same at every field of view. Its gain is ``knots`` values on
    [0, ``max_cycles_per_mm``] (linear in between, the last one beyond), starting at 1 (the identity). For a
    slice of pixel size p the gain is sampled at |f| / p, so one set of knots serves every pixel size, crops and
    whole slices alike. ``size`` 0 (the default) applies it in the Fourier domain on the slice's own DFT grid (the
    slice mirrored by ``FOURIER_PAD`` pixels against wrap-around): the filter exactly, at any reach. An odd
    ``size`` applies it as a ``size`` x ``size`` convolution kernel sampled on a ``grid`` x ``grid`` DFT grid and
    renormalised to sum 1, as models saved before the Fourier form did (25): the crop cuts the tails of a
    sharpening kernel (test RMSE b30 -> b50 4.26 HU at 25, 3.90 in the Fourier form; docs/history/results-analytic-library.md, eighth
    run). The gain at 0 is 1 either way.

    ``pixel_anchors`` (mm, ascending; empty: none) gives each anchor its own knots, and a slice the gain
    interpolated linearly in pixel size between the two anchors around its own (the nearest beyond them): the
    content a sharp kernel passes beyond a pixel's Nyquist frequency aliases back, so the same kernel change is
    a different filter in cycles/mm at 0.55 and at 0.95 mm (b30 -> b50 at 0.475 cycles/mm: 1.58 and 1.84;
    docs/history/results-analytic-library.md, fourteenth run).
    """

    FOURIER_PAD = 32  # pixels mirrored on each side before the FFT (a kernel change reaches ~30 px at 0.7 mm)

    def __init__(self, size: int = 0, knots: int = 48, max_cycles_per_mm: float = 1.5, grid: int = 64,
                 pixel_anchors: tuple[float, ...] = ()):
        super().__init__()
        if size != 0 and (size % 2 == 0 or size > grid):
            raise ValueError(f"filter size must be 0 (Fourier) or odd and at most the grid ({grid}), got {size}")
        if len(pixel_anchors) == 1 or any(b <= a for a, b in zip(pixel_anchors, pixel_anchors[1:])):
            raise ValueError(f"pixel anchors must be none or two or more ascending sizes in mm, got {pixel_anchors}")
        self.size, self.grid, self.max_cycles_per_mm = size, grid, max_cycles_per_mm
        self.pixel_anchors = tuple(float(a) for a in pixel_anchors)
        # one row of knots per anchor; without anchors the one row keeps the shape of models saved before them
        self.gain = nn.Parameter(torch.ones(len(pixel_anchors), knots) if pixel_anchors else torch.ones(knots))

    def anchor_weights(self, pixel_mm: torch.Tensor) -> torch.Tensor:
        """``(B, anchors)`` weights of each anchor's knots for slices of pixel sizes ``pixel_mm`` ``(B,)``: linear
        between the two anchors around each size, all on the nearest anchor beyond them."""
        anchors = torch.tensor(self.pixel_anchors, dtype=torch.float64, device=pixel_mm.device)
        size = pixel_mm.detach().double().reshape(-1).clamp(anchors[0], anchors[-1])
        below = (torch.searchsorted(anchors, size, right=True) - 1).clamp(0, len(anchors) - 2)
        upper = (size - anchors[below]) / (anchors[below + 1] - anchors[below])
        weights = torch.zeros(len(size), len(anchors), dtype=torch.float64, device=pixel_mm.device)
        weights.scatter_(1, below[:, None], (1 - upper)[:, None])
        weights.scatter_add_(1, below[:, None] + 1, upper[:, None])
        return weights.to(self.gain)

    def gain_at(self, cycles_per_mm: torch.Tensor, pixel_mm: torch.Tensor | None = None) -> torch.Tensor:
        """The filter's gain at spatial frequencies in cycles/mm (linear interpolation between knots). The gain at 0
        is 1 whatever the first knot holds: every reconstruction kernel keeps the mean HU, so a change of kernel does.

        With pixel anchors, ``pixel_mm`` ``(B,)`` is needed and ``cycles_per_mm`` is ``(B, ...)``: each slice's
        frequencies at the gain of its own pixel size."""
        below, weight = self._knot_interpolation(cycles_per_mm)
        if not self.pixel_anchors:
            knots = torch.cat([self.gain.new_ones(1), self.gain[1:]])
            return knots[below] * (1 - weight) + knots[below + 1] * weight
        if pixel_mm is None:
            raise ValueError("this filter's gain depends on the pixel size: pass pixel_mm")
        knots = self.anchor_weights(pixel_mm) @ self.gain  # (B, knots)
        knots = torch.cat([knots.new_ones(len(knots), 1), knots[:, 1:]], dim=1)
        flat_below = below.reshape(len(knots), -1)
        lower, upper = knots.gather(1, flat_below), knots.gather(1, flat_below + 1)
        return (lower * (1 - weight.reshape_as(lower)) + upper * weight.reshape_as(lower)).reshape(below.shape)

    def _knot_interpolation(self, cycles_per_mm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each frequency the knot below it and the weight of the knot above (linear interpolation)."""
        last = self.gain.shape[-1] - 1
        position = (cycles_per_mm / self.max_cycles_per_mm * last).clamp(0, last)
        below = position.floor().long().clamp(max=last - 1)
        return below, position - below

    @staticmethod
    def _radial_frequency(height: int, width: int, device=None, onesided: bool = False) -> torch.Tensor:
        """``(height, width)`` distance of each DFT bin from zero frequency, in cycles per pixel; ``onesided``: the
        ``(height, width // 2 + 1)`` bins of ``torch.fft.rfft2``."""
        columns = torch.fft.rfftfreq(width, device=device) if onesided else torch.fft.fftfreq(width, device=device)
        return torch.sqrt(torch.fft.fftfreq(height, device=device)[:, None] ** 2 + columns[None] ** 2)

    def kernels(self, pixel_mm: torch.Tensor) -> torch.Tensor:
        """``(B, 1, size, size)`` convolution kernels for slices of pixel sizes ``pixel_mm`` ``(B,)`` (cropped form)."""
        if self.size == 0:
            raise ValueError("this filter is applied in the Fourier domain (size 0): it has no cropped kernel")
        radius = self._radial_frequency(self.grid, self.grid, self.gain.device)
        gain = self.gain_at(radius[None] / pixel_mm.to(radius).reshape(-1, 1, 1), pixel_mm)
        kernel = torch.fft.fftshift(torch.fft.ifft2(gain).real, dim=(-2, -1))  # real: the gain is even
        start = self.grid // 2 - self.size // 2
        kernel = kernel[:, None, start:start + self.size, start:start + self.size]
        # cropping the tails changes the kernel's sum, i.e. its gain at 0 (by 1.7 % for a sharpening gap at 0.7 mm:
        # 14 HU in lung); give the lost part back evenly so that the kernel keeps the mean HU exactly
        return kernel + (1 - kernel.sum(dim=(-2, -1), keepdim=True)) / self.size**2

    @torch.no_grad()
    def fit_(self, source: torch.Tensor, target: torch.Tensor, pixel_mm: torch.Tensor, ridge: float = 1e-3) -> None:
        """Set the gain to the least-squares filter from ``source`` to ``target`` slices ``(N, H, W)``.

        Minimises sum |B(f) - G(|f| / p) A(f)|^2 over the DFT of Hann-windowed slices, G linear between knots
        (a tridiagonal system); ``ridge`` (relative to each knot's power) keeps the system well posed and leaves knots
        without data (beyond the slices' corner frequency) at 1. Training then starts from the best linear filter instead of the identity,
        which a gain of 10 or more (a smooth source, a sharp target) would take thousands of steps to reach. The
        first knot is solved with the others but not used (the gain at 0 is 1). With pixel anchors, a slice's
        equations count for each anchor by its interpolation weights (one system for every anchor's knots).
        """
        knots = self.gain.shape[-1]
        anchors = self.anchor_weights(pixel_mm).double() if self.pixel_anchors else torch.ones(len(pixel_mm), 1, dtype=torch.float64)
        normal = torch.zeros(anchors.shape[1] * knots, anchors.shape[1] * knots, dtype=torch.float64)
        right = torch.zeros(anchors.shape[1] * knots, dtype=torch.float64)
        window = torch.hann_window(source.shape[-2], periodic=False)[:, None] * torch.hann_window(source.shape[-1], periodic=False)
        radius = self._radial_frequency(*source.shape[-2:]).flatten()
        for a, b, p, w in zip(source.double(), target.double(), pixel_mm.double(), anchors):
            slice_normal, slice_right = self._normal_equations(a, b, window, radius / p, knots)
            normal += torch.kron(w[:, None] * w[None, :], slice_normal)
            right += torch.kron(w, slice_right)
        # the ridge is relative to each knot's own power: source spectra fall by 10^3-10^4 from the lowest to the
        # highest frequencies, and one ridge relative to the mean power pulled a sharpening gain of 7-40 there to 2-4
        # (docs/history/results-analytic-library.md, sixth run); a knot without data gets only the floor and so the gain 1
        power = normal.diagonal()
        strength = ridge * power + 1e-9 * power.mean()
        gain = torch.linalg.solve(normal + torch.diag(strength), right + strength)
        self.gain.copy_(gain.reshape(self.gain.shape).to(self.gain))

    @torch.no_grad()
    def set_gain_(self, gain_of_frequency) -> None:
        """Set every anchor's knots to ``gain_of_frequency(cycles/mm)`` (numpy in, numpy out): a filter known in
        advance, e.g. the calibrated W_target / W_source of two measured kernels, the same at every pixel size."""
        knots = self.gain.shape[-1]
        gain = torch.as_tensor(gain_of_frequency(np.linspace(0.0, self.max_cycles_per_mm, knots)), dtype=self.gain.dtype)
        self.gain.copy_(gain.expand_as(self.gain))

    def _normal_equations(self, a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, cycles_per_mm: torch.Tensor,
                          knots: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One slice pair's least-squares normal matrix ``(knots, knots)`` and right side ``(knots,)``, on the DFT of the
        windowed slices less the source's mean; ``cycles_per_mm``: the flattened DFT grid's frequencies."""
        spectrum_a, spectrum_b = torch.fft.fft2((a - a.mean()) * window), torch.fft.fft2((b - a.mean()) * window)
        below, weight = self._knot_interpolation(cycles_per_mm)
        weight = weight.double()
        power = (spectrum_a.abs() ** 2).flatten()
        cross = (spectrum_b * spectrum_a.conj()).real.flatten()
        normal = torch.zeros(knots, knots, dtype=torch.float64)
        right = torch.zeros(knots, dtype=torch.float64)
        for i, wi in ((below, 1 - weight), (below + 1, weight)):
            right.index_add_(0, i, wi * cross)
            for j, wj in ((below, 1 - weight), (below + 1, weight)):
                normal.view(-1).index_add_(0, i * knots + j, wi * wj * power)
        return normal, right

    def forward(self, x: torch.Tensor, pixel_mm: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, 1, H, W)`` filtered, each slice with the gain of its pixel size (edges mirrored)."""
        pixel_mm = pixel_mm.reshape(-1).expand(x.shape[0]) if pixel_mm.numel() == 1 else pixel_mm
        if self.size == 0:
            return self._fourier(x, pixel_mm)
        kernels = self.kernels(pixel_mm)
        padded = nn.functional.pad(x, [self.size // 2] * 4, mode="reflect")
        batch = x.shape[0]  # one group per slice: each its own kernel
        out = nn.functional.conv2d(padded.reshape(1, batch, *padded.shape[-2:]), kernels, groups=batch)
        return out.reshape_as(x)

    def _fourier(self, x: torch.Tensor, pixel_mm: torch.Tensor) -> torch.Tensor:
        """The gain applied on the DFT grid of each mirrored slice (in float32 whatever the input's precision)."""
        pad = min(self.FOURIER_PAD, x.shape[-2] - 1, x.shape[-1] - 1)
        padded = nn.functional.pad(x.float(), [pad] * 4, mode="reflect")
        height, width = padded.shape[-2:]
        radius = self._radial_frequency(height, width, x.device, onesided=True)
        gain = self.gain_at(radius[None] / pixel_mm.to(radius).reshape(-1, 1, 1), pixel_mm)[:, None]
        out = torch.fft.irfft2(torch.fft.rfft2(padded) * gain, s=(height, width))
        return out[..., pad:pad + x.shape[-2], pad:pad + x.shape[-1]].to(x.dtype)


class ResidualCNN(nn.Module):
    """Choe et al.'s residual CNN; with ``pixel_spacing`` its hidden layers are modulated by the pixel size.

    A reconstruction kernel is a filter in cycles per millimetre, so the same kernel change is another filter
    in cycles per pixel at another field of view (0.6-0.9 mm pixels). A network that sees pixels only learns
    their average; the pixel size enters as FiLM (Perez et al. 2018): each hidden layer's channels are scaled
    and shifted by a small MLP of log(pixel_mm / 0.75), zero-initialised so that training starts from the
    plain network.
    """

    def __init__(self, channels: int = 64, layers: int = 6, pixel_spacing: bool = False, kernel_filter: bool = False,
                 kernel_filter_size: int = 0, kernel_filter_pixel_anchors: tuple[float, ...] = ()):
        super().__init__()
        self.kernel_filter = RadialKernelFilter(kernel_filter_size, pixel_anchors=tuple(kernel_filter_pixel_anchors)) if kernel_filter else None
        self.net = conv_stack(2 if kernel_filter else 1, channels, layers, 1)
        self.uses_pixel_spacing = pixel_spacing or kernel_filter
        self.film: nn.Sequential | None = None
        self.modulated_layers = layers - 1  # every convolution but the output one
        if pixel_spacing:
            self.film = nn.Sequential(nn.Linear(1, 32), nn.SiLU(), nn.Linear(32, 2 * channels * self.modulated_layers))
            nn.init.zeros_(self.film[-1].weight)
            nn.init.zeros_(self.film[-1].bias)

    @classmethod
    def of(cls, settings: "PredictorConfig") -> "ResidualCNN":
        """The network of a predictor's settings: the ``--method residual-cnn`` baseline's or DiffusionCT's image
        predictor (trained and loaded alike)."""
        return cls(settings.channels, settings.layers, settings.pixel_spacing, settings.kernel_filter,
                   settings.kernel_filter_size, tuple(settings.kernel_filter_pixel_anchors))

    def forward(self, hu: torch.Tensor, pixel_mm: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted residual B - A in HU for HU slices ``(B, 1, H, W)``; ``pixel_mm`` ``(B,)``: their pixel
        size, needed (and only used) when the network was built with ``pixel_spacing`` or ``kernel_filter``.

        With the kernel filter, the stack sees A and the filtered A and predicts what the linear filter misses:
        B - A = (F(A) - A) + stack(A, F(A))."""
        x = hu.clamp(*HU_RANGE) / HU_SCALE
        if self.uses_pixel_spacing and pixel_mm is None:
            raise ValueError("this network is conditioned on the pixel size: pass pixel_mm")
        linear = None
        if self.kernel_filter is not None:
            linear = self.kernel_filter(x, pixel_mm) - x
            x = torch.cat([x, x + linear], dim=1)
        residual = self._stack(x, pixel_mm) * RESIDUAL_SCALE
        return residual if linear is None else residual + linear * HU_SCALE

    def fit_kernel_filter(self, source_hu: torch.Tensor, target_hu: torch.Tensor, pixel_mm: torch.Tensor) -> None:
        """Start the kernel filter (when built with one) at the least-squares filter of these slices ``(N, H, W)``."""
        if self.kernel_filter is not None:
            self.kernel_filter.fit_(source_hu.clamp(*HU_RANGE) / HU_SCALE, target_hu.clamp(*HU_RANGE) / HU_SCALE, pixel_mm)

    def hold_kernel_filter(self, gain_of_frequency, learn_residual: bool = True) -> None:
        """Make the kernel filter ``gain_of_frequency`` (cycles/mm) and keep it out of training, with the convolutions'
        output at zero: the network starts as exactly that linear filter and learns only what it misses; without
        ``learn_residual`` the convolutions stay at zero too, and the network is the filter."""
        if self.kernel_filter is None:
            raise ValueError("this network was built without a kernel filter")
        self.kernel_filter.set_gain_(gain_of_frequency)
        self.kernel_filter.gain.requires_grad_(False)
        last = self.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        if not learn_residual:
            for parameter in self.parameters():
                parameter.requires_grad_(False)

    @property
    def kernel_filter_trainable(self) -> bool:
        return self.kernel_filter is not None and self.kernel_filter.gain.requires_grad

    def _stack(self, x: torch.Tensor, pixel_mm: torch.Tensor | None) -> torch.Tensor:
        """The convolution stack, its hidden layers modulated by the pixel size when built with FiLM."""
        if self.film is None:
            return self.net(x)
        size = torch.log(pixel_mm.to(x).reshape(-1, 1) / REFERENCE_PIXEL_MM).expand(x.shape[0], 1)
        scales_shifts = self.film(size)[:, :, None, None].chunk(2 * self.modulated_layers, dim=1)
        layer = 0
        for module in self.net:
            x = module(x)
            if isinstance(module, nn.Conv2d) and layer < self.modulated_layers:
                x = x * (1 + scales_shifts[2 * layer]) + scales_shifts[2 * layer + 1]
                layer += 1
        return x

    def convert(self, hu: torch.Tensor, pixel_mm: torch.Tensor | None = None) -> torch.Tensor:
        """The target-kernel image A + (B - A)."""
        return hu + self(hu, pixel_mm)


def _down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.InstanceNorm2d(cout, affine=True),
                         nn.ReLU(inplace=True))


class UNetGenerator(nn.Module):
    """pix2pix generator (Isola et al. 2017): an encoder-decoder with skip connections.

    It outputs the residual B - A in HU / 100, so an untrained generator starts near the identity
    (as kernel-conversion GANs such as GANai / STAN-CT learn a correction of the input).
    """

    def __init__(self, channels: int = 32, depth: int = 4):
        super().__init__()
        widths = [min(channels * 2**i, channels * 8) for i in range(depth)]
        self.downs = nn.ModuleList([_down(1, widths[0], norm=False)] +
                                   [_down(widths[i - 1], widths[i]) for i in range(1, depth)])
        self.ups = nn.ModuleList([_up(widths[-1], widths[-2])] +
                                 [_up(widths[i] * 2, widths[i - 1]) for i in range(depth - 2, 0, -1)])
        self.out = nn.ConvTranspose2d(widths[0] * 2, 1, 4, 2, 1)
        self.multiple = 2**depth

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        x = hu.clamp(*HU_RANGE) / HU_SCALE
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = torch.cat([up(x), skips.pop()], dim=1)
        return self.out(x) * RESIDUAL_SCALE

    def convert(self, hu: torch.Tensor) -> torch.Tensor:
        return hu + self(hu)


class PatchDiscriminator(nn.Module):
    """PatchGAN: real/fake logits per patch of its inputs in HU / 1000: the pair (A, B) for pix2pix
    (``inputs=2``), one image for CycleGAN's unpaired domains (``inputs=1``)."""

    def __init__(self, channels: int = 32, layers: int = 3, inputs: int = 2):
        super().__init__()
        modules: list[nn.Module] = [_down(inputs, channels, norm=False)]
        width = channels
        for _ in range(layers - 1):
            modules.append(_down(width, min(width * 2, channels * 8)))
            width = min(width * 2, channels * 8)
        modules.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*modules)

    def forward(self, *images_hu: torch.Tensor, with_features: bool = False):
        """Patch logits; with ``with_features`` also the last hidden layer (the discriminator's latent space)."""
        stacked = torch.cat([image.clamp(*HU_RANGE) for image in images_hu], dim=1) / HU_SCALE
        features = self.net[:-1](stacked)
        logits = self.net[-1](features)
        return (logits, features) if with_features else logits
