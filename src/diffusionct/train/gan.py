"""Adversarial regimes: pix2pix on pairs (Isola et al. 2017) and CycleGAN on unpaired sets (Zhu et al. 2017)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from diffusionct.methods import CYCLEGAN, PIX2PIX
from diffusionct.train.data import sample_image_crops, sample_pair_crops
from diffusionct.train.loop import TrainerBase, optimize, step_seed, validation_rmse

log = logging.getLogger(__name__)


class GANRegime(TrainerBase):
    def train_pix2pix(self):
        """pix2pix (Isola et al. 2017): U-Net generator, PatchGAN discriminator, L1 weight 100."""
        from diffusionct.models.baselines import RESIDUAL_SCALE, PatchDiscriminator, UNetGenerator

        cfg = self.config
        p2p, pc = cfg.baselines.pix2pix, cfg.baselines.pix2pix.training
        generator = UNetGenerator(p2p.channels, p2p.depth).to(self.device).train()
        discriminator = PatchDiscriminator(p2p.channels).to(self.device).train()
        optimizers = {"optimizer_g": torch.optim.Adam(generator.parameters(), lr=pc.lr, betas=(0.5, 0.999)),
                      "optimizer_d": torch.optim.Adam(discriminator.parameters(), lr=pc.lr, betas=(0.5, 0.999))}
        modules = {"generator": generator, "discriminator": discriminator}
        state = self._load_state(PIX2PIX, modules, optimizers)
        g_net, d_net = self._wrap(generator), self._wrap(discriminator)
        bce = torch.nn.BCEWithLogitsLoss()
        va, vb, _ = self._validation_pairs(pc.crop, 96)

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(step_seed(cfg.seed, PIX2PIX, step, self.rank))
            a, b_, _ = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop, rng))
            fake = a + g_net(a)
            real_logits, fake_logits = d_net(a, b_), d_net(a, fake.detach())
            loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
            optimize(optimizers["optimizer_d"], loss_d)
            adversarial, fake_features = d_net(a, fake, with_features=True)
            l1 = (fake - b_).abs().mean() / RESIDUAL_SCALE
            loss_g = bce(adversarial, torch.ones_like(adversarial)) + p2p.l1_weight * l1
            if p2p.latent_weight > 0:  # STAN-CT's latent-space loss, in the discriminator's feature space
                with torch.no_grad():
                    _, real_features = d_net(a, b_, with_features=True)
                loss_g = loss_g + p2p.latent_weight * (fake_features - real_features).abs().mean()
            optimize(optimizers["optimizer_g"], loss_g)
            return {"loss": loss_g.item(), "loss_d": loss_d.item(), "l1": l1.item()}

        def validate_fn() -> dict:
            return validation_rmse(generator, va, vb)

        self._loop(PIX2PIX, pc, state, optimizers, step_fn, validate_fn,
                   lambda step, history: self._save_state(PIX2PIX, step, modules, optimizers, history))
        return generator.eval()

    def train_cyclegan(self):
        """CycleGAN (Zhu et al. 2017) on unpaired crops: generators A->B and B->A (pix2pix's U-Net, residual),
        one single-image PatchGAN per domain, least-squares adversarial loss, cycle and identity L1 losses.
        Source and target crops are drawn independently, so no pair is ever used (with a paired manifest the
        pairs are hidden this way)."""
        from diffusionct.models.baselines import RESIDUAL_SCALE, PatchDiscriminator, UNetGenerator

        cfg = self.config
        g, c, pc = cfg.baselines.pix2pix, cfg.baselines.cyclegan, cfg.baselines.cyclegan.training
        modules = {"generator": UNetGenerator(g.channels, g.depth), "generator_ba": UNetGenerator(g.channels, g.depth),
                   "discriminator_a": PatchDiscriminator(g.channels, inputs=1),
                   "discriminator_b": PatchDiscriminator(g.channels, inputs=1)}
        for module in modules.values():
            module.to(self.device).train()
        generators = [*modules["generator"].parameters(), *modules["generator_ba"].parameters()]
        discriminators = [*modules["discriminator_a"].parameters(), *modules["discriminator_b"].parameters()]
        optimizers = {"optimizer_g": torch.optim.Adam(generators, lr=pc.lr, betas=(0.5, 0.999)),
                      "optimizer_d": torch.optim.Adam(discriminators, lr=pc.lr, betas=(0.5, 0.999))}
        state = self._load_state(CYCLEGAN, modules, optimizers)
        g_ab, g_ba, d_a, d_b = (self._wrap(modules[k]) for k in ("generator", "generator_ba", "discriminator_a", "discriminator_b"))
        sources, targets = self._unpaired_sets()
        va, vb, _ = self._validation_pairs(pc.crop, 97)

        def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
            return (logits - (1.0 if real else 0.0)).pow(2).mean()

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(step_seed(cfg.seed, CYCLEGAN, step, self.rank))
            a = self._tensor(sample_image_crops(sources, pc.batch_size, pc.crop, rng))
            b_ = self._tensor(sample_image_crops(targets, pc.batch_size, pc.crop, rng))
            fake_b, fake_a = a + g_ab(a), b_ + g_ba(b_)
            cycle = ((fake_b + g_ba(fake_b) - a).abs().mean() + (fake_a + g_ab(fake_a) - b_).abs().mean()) / RESIDUAL_SCALE
            identity = (g_ab(b_).abs().mean() + g_ba(a).abs().mean()) / RESIDUAL_SCALE  # a B image stays as it is
            adversarial = gan_loss(d_b(fake_b), True) + gan_loss(d_a(fake_a), True)
            loss_g = adversarial + c.cycle_weight * cycle + c.identity_weight * identity
            optimize(optimizers["optimizer_g"], loss_g)
            loss_d = 0.5 * (gan_loss(d_b(b_), True) + gan_loss(d_b(fake_b.detach()), False)
                            + gan_loss(d_a(a), True) + gan_loss(d_a(fake_a.detach()), False))
            optimize(optimizers["optimizer_d"], loss_d)
            return {"loss": loss_g.item(), "loss_d": loss_d.item(), "cycle": cycle.item()}

        def validate_fn() -> dict:
            return validation_rmse(modules["generator"], va, vb)

        self._loop(CYCLEGAN, pc, state, optimizers, step_fn, validate_fn,
                   lambda step, history: self._save_state(CYCLEGAN, step, modules, optimizers, history))
        return modules["generator"].eval()

    def _unpaired_sets(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The real source and target sets; from a paired manifest, its pairs' two sides drawn independently."""
        if self.data.unpaired_source and self.data.unpaired_target:
            return self.data.unpaired_source, self.data.unpaired_target
        return [self.data.pairs.source], [self.data.pairs.target]

