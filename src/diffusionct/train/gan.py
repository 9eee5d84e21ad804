"""Adversarial regimes: pix2pix on pairs (Isola et al. 2017) and CycleGAN on unpaired sets (Zhu et al. 2017)."""

from __future__ import annotations

import numpy as np
import torch

from diffusionct.methods import CYCLEGAN, PIX2PIX
from diffusionct.models.baselines import RESIDUAL_SCALE, PatchDiscriminator, UNetGenerator
from diffusionct.train.data import sample_image_crops, sample_pair_crops
from diffusionct.train.loop import Regime, TrainingRun, optimize, validation_rmse


def train_pix2pix(run: TrainingRun) -> UNetGenerator:
    """pix2pix (``--method pix2pix``); its generator."""
    regime = Pix2PixRegime(run)
    run.fit(regime)
    return regime.generator.eval()


def train_cyclegan(run: TrainingRun) -> UNetGenerator:
    """CycleGAN (``--method cyclegan``); its A -> B generator."""
    regime = CycleGANRegime(run)
    run.fit(regime)
    return regime.modules["generator"].eval()


def _adam(parameters, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.999))  # the GAN papers' betas


class Pix2PixRegime(Regime):
    """pix2pix (Isola et al. 2017): U-Net generator of the residual, PatchGAN discriminator on (A, B), L1 weighted
    by ``l1_weight``; with ``latent_weight`` > 0 STAN-CT's loss in the discriminator's feature space."""

    name = PIX2PIX

    def __init__(self, run: TrainingRun):
        self.run, self.p2p = run, run.config.baselines.pix2pix
        self.settings = self.p2p.training
        self.generator = UNetGenerator(self.p2p.channels, self.p2p.depth).to(run.device).train()
        discriminator = PatchDiscriminator(self.p2p.channels).to(run.device).train()
        self.modules = {"generator": self.generator, "discriminator": discriminator}
        self.optimizers = {"optimizer_g": _adam(self.generator.parameters(), self.settings.lr),
                           "optimizer_d": _adam(discriminator.parameters(), self.settings.lr)}
        self.g_net, self.d_net = run.wrap(self.generator), run.wrap(discriminator)
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.validation = run.validation_pairs(self.settings.crop, 96)[:2]

    def step(self, step: int) -> dict[str, float]:
        pc, p2p, bce, d_net = self.settings, self.p2p, self.bce, self.d_net
        a, b, _ = (self.run.tensor(x) for x in sample_pair_crops(self.run.data.pairs, pc.batch_size, pc.crop,
                                                                   self.run.step_rng(PIX2PIX, step)))
        fake = a + self.g_net(a)
        real_logits, fake_logits = d_net(a, b), d_net(a, fake.detach())
        loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
        optimize(self.optimizers["optimizer_d"], loss_d)
        adversarial, fake_features = d_net(a, fake, with_features=True)
        l1 = (fake - b).abs().mean() / RESIDUAL_SCALE
        loss_g = bce(adversarial, torch.ones_like(adversarial)) + p2p.l1_weight * l1
        if p2p.latent_weight > 0:  # STAN-CT's latent-space loss, in the discriminator's feature space
            with torch.no_grad():
                _, real_features = d_net(a, b, with_features=True)
            loss_g = loss_g + p2p.latent_weight * (fake_features - real_features).abs().mean()
        optimize(self.optimizers["optimizer_g"], loss_g)
        return {"loss": loss_g.item(), "loss_d": loss_d.item(), "l1": l1.item()}

    def validate(self) -> dict[str, float]:
        return validation_rmse(self.generator, *self.validation)


class CycleGANRegime(Regime):
    """CycleGAN (Zhu et al. 2017) on unpaired crops: generators A->B and B->A (pix2pix's U-Net, residual), one
    single-image PatchGAN per domain, least-squares adversarial loss, cycle and identity L1 losses. Source and target
    crops are drawn independently, so no pair is ever used (with a paired manifest the pairs are hidden this way)."""

    name = CYCLEGAN

    def __init__(self, run: TrainingRun):
        g, self.weights = run.config.baselines.pix2pix, run.config.baselines.cyclegan
        self.run, self.settings = run, self.weights.training
        self.modules = {"generator": UNetGenerator(g.channels, g.depth), "generator_ba": UNetGenerator(g.channels, g.depth),
                        "discriminator_a": PatchDiscriminator(g.channels, inputs=1),
                        "discriminator_b": PatchDiscriminator(g.channels, inputs=1)}
        for module in self.modules.values():
            module.to(run.device).train()
        generators = [*self.modules["generator"].parameters(), *self.modules["generator_ba"].parameters()]
        discriminators = [*self.modules["discriminator_a"].parameters(), *self.modules["discriminator_b"].parameters()]
        self.optimizers = {"optimizer_g": _adam(generators, self.settings.lr),
                           "optimizer_d": _adam(discriminators, self.settings.lr)}
        self.g_ab, self.g_ba, self.d_a, self.d_b = (run.wrap(self.modules[k]) for k in
                                                    ("generator", "generator_ba", "discriminator_a", "discriminator_b"))
        self.sources, self.targets = unpaired_sets(run)
        self.validation = run.validation_pairs(self.settings.crop, 97)[:2]

    def step(self, step: int) -> dict[str, float]:
        pc, g_ab, g_ba, d_a, d_b = self.settings, self.g_ab, self.g_ba, self.d_a, self.d_b
        rng = self.run.step_rng(CYCLEGAN, step)
        a = self.run.tensor(sample_image_crops(self.sources, pc.batch_size, pc.crop, rng))
        b = self.run.tensor(sample_image_crops(self.targets, pc.batch_size, pc.crop, rng))
        fake_b, fake_a = a + g_ab(a), b + g_ba(b)
        cycle = ((fake_b + g_ba(fake_b) - a).abs().mean() + (fake_a + g_ab(fake_a) - b).abs().mean()) / RESIDUAL_SCALE
        identity = (g_ab(b).abs().mean() + g_ba(a).abs().mean()) / RESIDUAL_SCALE  # a B image stays as it is
        adversarial = _gan_loss(d_b(fake_b), True) + _gan_loss(d_a(fake_a), True)
        loss_g = adversarial + self.weights.cycle_weight * cycle + self.weights.identity_weight * identity
        optimize(self.optimizers["optimizer_g"], loss_g)
        loss_d = 0.5 * (_gan_loss(d_b(b), True) + _gan_loss(d_b(fake_b.detach()), False)
                        + _gan_loss(d_a(a), True) + _gan_loss(d_a(fake_a.detach()), False))
        optimize(self.optimizers["optimizer_d"], loss_d)
        return {"loss": loss_g.item(), "loss_d": loss_d.item(), "cycle": cycle.item()}

    def validate(self) -> dict[str, float]:
        return validation_rmse(self.modules["generator"], *self.validation)


def _gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The least-squares adversarial loss (LSGAN)."""
    return (logits - (1.0 if real else 0.0)).pow(2).mean()


def unpaired_sets(run: TrainingRun) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The real source and target sets; from a paired manifest, its pairs' two sides drawn independently."""
    if run.data.unpaired_source and run.data.unpaired_target:
        return run.data.unpaired_source, run.data.unpaired_target
    return [run.data.pairs.source], [run.data.pairs.target]
