"""Regimes of one network trained on pairs: the residual CNN (Choe et al. 2019; also DiffusionCT's image
predictor) and the image-space conditional DDPM."""

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
from diffusionct.train.data import sample_pair_crops
from diffusionct.train.loop import TrainerBase, optimize, step_seed, update_ema, validation_rmse
from diffusionct.units import HU_RANGE

log = logging.getLogger(__name__)

LEARNED_PART_MARGIN = 0.01  # a learned correction beside a calibrated filter must lower the validation RMSE by 1 %
LEARNED_PART_CROPS, LEARNED_PART_CROP = 32, 128  # held-out crops that decide it


class SingleNetworkRegime(TrainerBase):
    def train_residual_cnn(self):
        """Choe et al.'s residual CNN: L2 between the predicted and the true residual B - A (in HU / 100)."""
        from diffusionct.models.baselines import ResidualCNN

        settings = self.config.baselines.residual_cnn
        if settings.kernel_filter_from != "pairs":
            raise DiffusionCTError("baselines.residual_cnn.kernel_filter_from must be pairs: the baseline fits its filter "
                                   "on the pairs (the calibrated filter: diffusion.predictor.kernel_filter_from=profiles "
                                   "or --method kernel-filter)")
        network = ResidualCNN.of(settings).to(self.device)
        return self._train_residual_network(network, RESIDUAL_CNN, settings.training, 97)

    def _train_residual_network(self, network: torch.nn.Module, phase: str, pc: PhaseConfig, validation_seed: int):
        """Trains a network whose ``forward(A)`` predicts the HU residual B - A, with an L2 loss in HU / 100
        (the residual CNN baseline, and the refine mode's image-space predictor)."""
        from diffusionct.models.baselines import RESIDUAL_SCALE

        cfg = self.config
        if not any(p.requires_grad for p in network.parameters()):  # held whole (a calibrated filter): nothing to train
            log.info("%s: every weight is held fixed; no training", phase)
            return network.eval()
        network.train()
        optimizer = torch.optim.Adam(network.parameters(), lr=pc.lr)
        state = self._load_state(phase, {"network": network}, optimizer)
        net = self._wrap(network)
        validation = self._validation_pairs(pc.crop, validation_seed)
        if state.step == 0 and getattr(network, "kernel_filter_trainable", False):  # not one held at the calibrated filter
            network.fit_kernel_filter(*self._filter_fitting_slices())

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(step_seed(cfg.seed, phase, step, self.rank))
            a, b_, pixel_mm = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop, rng))
            loss = F.mse_loss(net(a, pixel_mm), b_ - a) / RESIDUAL_SCALE**2
            optimize(optimizer, loss)
            return {"loss": loss.item()}

        def validate_fn() -> dict:
            return validation_rmse(network, *validation)

        def save_fn(step: int, history: list) -> None:
            self._save_state(phase, step, {"network": network}, optimizer, history)

        self._loop(phase, pc, state, optimizer, step_fn, validate_fn, save_fn)
        network.eval()
        if getattr(network, "kernel_filter", None) is not None and not network.kernel_filter_trainable:
            self._keep_learned_part_if_it_helps(network, phase)
        return network

    @torch.no_grad()
    def _keep_learned_part_if_it_helps(self, network, phase: str) -> None:
        """A network held at a calibrated filter keeps what it learned beside it only where that lowers the error on
        held-out crops (the validation cases, else the training ones) by ``LEARNED_PART_MARGIN``: the filter is the
        physics, and a correction learned from the simulator must earn its place on data it was not fitted to."""
        crop = min(LEARNED_PART_CROP, *self.data.pairs.source.shape[-2:])
        a, b, pixel_mm = self._validation_pairs(crop, 96, count=LEARNED_PART_CROPS)
        learned = validation_rmse(network, a, b, pixel_mm)["val_rmse_hu"]
        last = network.net[-1]
        weight, bias = last.weight.clone(), last.bias.clone()
        last.weight.zero_()
        last.bias.zero_()
        physics = validation_rmse(network, a, b, pixel_mm)["val_rmse_hu"]
        kept = learned < (1 - LEARNED_PART_MARGIN) * physics
        if kept:
            last.weight.copy_(weight)
            last.bias.copy_(bias)
        self.learned_part = {"validation_rmse_hu": round(learned, 4), "calibrated_filter_rmse_hu": round(physics, 4),
                             "kept": kept}
        log.info("%s: validation RMSE %.3f HU with the learned part, %.3f HU with the calibrated filter alone: %s", phase,
                 learned, physics, "kept" if kept else "dropped (the predictor is the filter)")

    def _filter_fitting_slices(self, count: int = 48) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Up to ``count`` whole training pairs (evenly spaced) and their pixel sizes, to fit a linear kernel filter."""
        pairs = self.data.pairs
        chosen = np.unique(np.linspace(0, len(pairs.pixel_mm) - 1, count).round().astype(int))
        return tuple(torch.from_numpy(np.ascontiguousarray(x[chosen])) for x in (pairs.source, pairs.target, pairs.pixel_mm))

    def train_image_ddpm(self):
        """Image-space conditional DDPM (SR3 / Palette style): A concatenated with the noisy B (or B - A)."""
        from diffusionct.models.latent_unet import ConditionalUNet

        cfg = self.config
        diffusion = ConditionalDiffusion.from_config(image_ddpm_diffusion_config(cfg))
        settings, pc = cfg.baselines.ddpm, cfg.baselines.ddpm.training
        unet = ConditionalUNet(image_ddpm_unet_config(cfg), 1).to(self.device).train()
        ema = copy.deepcopy(unet).eval()
        optimizer = torch.optim.Adam(unet.parameters(), lr=pc.lr)
        state = self._load_state(DDPM, {"unet": unet, "ema": ema}, optimizer)
        net = self._wrap(unet)
        scale = settings.hu_scale

        def step_fn(step: int) -> dict:
            seed = step_seed(cfg.seed, DDPM, step, self.rank)
            crops = sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop, np.random.default_rng(seed))
            a, b_ = (self._tensor(x).clamp(*HU_RANGE) / scale for x in (crops.source, crops.target))
            gen = torch.Generator().manual_seed(seed)
            x0 = diffusion.from_pair(a, b_)
            t = torch.randint(0, diffusion.schedule.timesteps, (x0.shape[0],), generator=gen).to(self.device)
            noise = torch.randn(x0.shape, generator=gen).to(self.device)
            loss = diffusion.loss(net(diffusion.add_noise(x0, noise, t), t, a), diffusion.training_target(x0, noise, t))
            optimize(optimizer, loss)
            update_ema(ema, unet, step, diffusion.config.ema_decay)
            return {"loss": loss.item()}

        val_a, val_b = (x.clamp(*HU_RANGE) / scale for x in self._validation_pairs(pc.crop, 96)[:2])
        val_x0 = diffusion.from_pair(val_a, val_b)
        val_t = torch.linspace(0, diffusion.schedule.timesteps - 1, val_x0.shape[0]).long().to(self.device)
        val_noise = torch.randn(val_x0.shape, generator=torch.Generator().manual_seed(cfg.seed + 96)).to(self.device)

        def validate_fn() -> dict:  # the averaged network's loss on fixed validation crops, noise levels and noise
            with torch.no_grad():
                prediction = ema(diffusion.add_noise(val_x0, val_noise, val_t), val_t, val_a)
                return {"val_loss": diffusion.loss(prediction, diffusion.training_target(val_x0, val_noise, val_t)).item()}

        self._loop(DDPM, pc, state, optimizer, step_fn, validate_fn,
                   lambda step, history: self._save_state(DDPM, step, {"unet": unet, "ema": ema}, optimizer, history))
        return ema

