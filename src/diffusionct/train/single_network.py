"""Regimes of one network trained on pairs: a residual network (the residual CNN of Choe et al. 2019, which is also
DiffusionCT's image predictor) and the image-space conditional DDPM."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch.nn import functional as F

from diffusionct.config import PhaseConfig, image_ddpm_diffusion_config, image_ddpm_unet_config
from diffusionct.diffusion import ConditionalDiffusion
from diffusionct.errors import DiffusionCTError
from diffusionct.methods import DDPM, RESIDUAL_CNN
from diffusionct.models.baselines import RESIDUAL_SCALE, ResidualCNN
from diffusionct.models.latent_unet import ConditionalUNet
from diffusionct.train.data import sample_pair_crops
from diffusionct.train.loop import Regime, TrainingRun, optimize, update_ema, validation_rmse
from diffusionct.units import HU_RANGE

log = logging.getLogger(__name__)


def train_residual_cnn(run: TrainingRun) -> ResidualCNN:
    """Choe et al.'s residual CNN (``--method residual-cnn``) of the run's baseline settings."""
    settings = run.config.baselines.residual_cnn
    if settings.kernel_filter_from != "pairs":
        raise DiffusionCTError("baselines.residual_cnn.kernel_filter_from must be pairs: the baseline fits its filter "
                               "on the pairs (the calibrated filter: diffusion.predictor.kernel_filter_from=profiles "
                               "or --method kernel-filter)")
    network = ResidualCNN.of(settings).to(run.device)
    return fit_residual_network(run, network, RESIDUAL_CNN, settings.training, validation_seed=97)


def fit_residual_network(run: TrainingRun, network: torch.nn.Module, phase: str, settings: PhaseConfig,
                         validation_seed: int) -> torch.nn.Module:
    """``network`` trained as a :class:`ResidualRegime` (nothing to train when every weight is held), in eval mode."""
    if not any(p.requires_grad for p in network.parameters()):  # held whole (a calibrated filter): nothing to train
        log.info("%s: every weight is held fixed; no training", phase)
        return network.eval()
    run.fit(ResidualRegime(run, network, phase, settings, validation_seed))
    return network.eval()


class ResidualRegime(Regime):
    """A network whose ``forward(A)`` predicts the HU residual B - A, trained with an L2 loss in HU / 100. A network
    that starts with a trainable linear kernel filter has it fitted by least squares on whole pairs first."""

    def __init__(self, run: TrainingRun, network: torch.nn.Module, phase: str, settings: PhaseConfig, validation_seed: int):
        self.run, self.network, self.name, self.settings = run, network.train(), phase, settings
        self.modules = {"network": network}
        self.optimizers = {"optimizer": torch.optim.Adam(network.parameters(), lr=settings.lr)}
        self.trained = run.wrap(network)
        self.validation = run.validation_pairs(settings.crop, validation_seed)

    def start(self, step: int) -> None:
        if step == 0 and getattr(self.network, "kernel_filter_trainable", False):  # not one held at a calibrated filter
            self.network.fit_kernel_filter(*filter_fitting_slices(self.run))

    def step(self, step: int) -> dict[str, float]:
        pc = self.settings
        a, b, pixel_mm = (self.run.tensor(x) for x in sample_pair_crops(self.run.data.pairs, pc.batch_size, pc.crop,
                                                                          self.run.step_rng(self.name, step)))
        loss = F.mse_loss(self.trained(a, pixel_mm), b - a) / RESIDUAL_SCALE**2
        optimize(self.optimizers["optimizer"], loss)
        return {"loss": loss.item()}

    def validate(self) -> dict[str, float]:
        return validation_rmse(self.network, *self.validation)


def filter_fitting_slices(run: TrainingRun, count: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``count`` whole training pairs (evenly spaced) and their pixel sizes, to fit a linear kernel filter."""
    pairs = run.data.pairs
    chosen = np.unique(np.linspace(0, len(pairs.pixel_mm) - 1, count).round().astype(int))
    return tuple(torch.from_numpy(np.ascontiguousarray(x[chosen])) for x in (pairs.source, pairs.target, pairs.pixel_mm))


def train_image_ddpm(run: TrainingRun) -> ConditionalUNet:
    """The image-space conditional DDPM (``--method ddpm``); its averaged network."""
    regime = ImageDDPMRegime(run)
    run.fit(regime)
    return regime.averaged


class ImageDDPMRegime(Regime):
    """Image-space conditional DDPM (SR3 / Palette style): A concatenated with the noisy B (or B - A), HU / ``hu_scale``;
    validated by the averaged network's loss on fixed crops, noise levels and noise."""

    name = DDPM

    def __init__(self, run: TrainingRun):
        cfg = run.config
        self.run, self.settings, self.scale = run, cfg.baselines.ddpm.training, cfg.baselines.ddpm.hu_scale
        self.diffusion = ConditionalDiffusion.from_config(image_ddpm_diffusion_config(cfg))
        self.network = ConditionalUNet(image_ddpm_unet_config(cfg), 1).to(run.device).train()
        self.averaged = copy.deepcopy(self.network).eval()
        self.modules = {"unet": self.network, "ema": self.averaged}
        self.optimizers = {"optimizer": torch.optim.Adam(self.network.parameters(), lr=self.settings.lr)}
        self.trained = run.wrap(self.network)
        val_a, val_b = (x.clamp(*HU_RANGE) / self.scale for x in run.validation_pairs(self.settings.crop, 96)[:2])
        self.val_a, self.val_x0 = val_a, self.diffusion.from_pair(val_a, val_b)
        self.val_t = torch.linspace(0, self.diffusion.schedule.timesteps - 1, self.val_x0.shape[0]).long().to(run.device)
        self.val_noise = torch.randn(self.val_x0.shape, generator=torch.Generator().manual_seed(cfg.seed + 96)).to(run.device)

    def step(self, step: int) -> dict[str, float]:
        run, pc, diffusion = self.run, self.settings, self.diffusion
        seed = run.step_seed(DDPM, step)
        crops = sample_pair_crops(run.data.pairs, pc.batch_size, pc.crop, np.random.default_rng(seed))
        a, b = (run.tensor(x).clamp(*HU_RANGE) / self.scale for x in (crops.source, crops.target))
        gen = torch.Generator().manual_seed(seed)
        x0 = diffusion.from_pair(a, b)
        t = torch.randint(0, diffusion.schedule.timesteps, (x0.shape[0],), generator=gen).to(run.device)
        noise = torch.randn(x0.shape, generator=gen).to(run.device)
        loss = diffusion.loss(self.trained(diffusion.add_noise(x0, noise, t), t, a), diffusion.training_target(x0, noise, t))
        optimize(self.optimizers["optimizer"], loss)
        update_ema(self.averaged, self.network, step, diffusion.config.ema_decay)
        return {"loss": loss.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        diffusion, x0, noise, t = self.diffusion, self.val_x0, self.val_noise, self.val_t
        prediction = self.averaged(diffusion.add_noise(x0, noise, t), t, self.val_a)
        return {"val_loss": diffusion.loss(prediction, diffusion.training_target(x0, noise, t)).item()}
