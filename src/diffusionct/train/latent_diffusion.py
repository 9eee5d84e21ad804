"""DiffusionCT's two phases (paper section 3.3): the encoder-decoder (L2 + anatomic structure loss), then the
conditional latent DDPM with the encoder-decoder frozen (and, in refine mode, its predictor trained first)."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
from torch.nn import functional as F

from diffusionct.config import DIFFUSION_PHASE, PREDICTOR_PHASE
from diffusionct.errors import DiffusionCTError
from diffusionct.methods import AUTOENCODER
from diffusionct.train.data import sample_image_crops, sample_pair_crops
from diffusionct.train.loop import TrainerBase, optimize, step_seed, update_ema

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- losses


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def autoencoder_loss(recon: torch.Tensor, target: torch.Tensor, structure_weight: float,
                     frequency_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L2 + anatomic structure loss (L1 between image gradients, which keeps edges and texture
    placement) + frequency loss (L1 between amplitude spectra, which rewards keeping noise power)."""
    l2 = F.mse_loss(recon, target)
    (rx, ry), (tx, ty) = image_gradients(recon), image_gradients(target)
    structure = (rx - tx).abs().mean() + (ry - ty).abs().mean()
    h, w = target.shape[-2:]
    frequency = (torch.fft.rfft2(recon).abs() - torch.fft.rfft2(target).abs()).abs().mean() / math.sqrt(h * w)
    total = l2 + structure_weight * structure + frequency_weight * frequency
    return total, {"l2": l2.item(), "structure": structure.item(), "frequency": frequency.item()}


class LatentDiffusionRegime(TrainerBase):
    def train_autoencoder(self) -> list:
        cfg, pc = self.config, self.config.phase1
        ae = self.model.autoencoder.train()
        optimizer = torch.optim.Adam(ae.parameters(), lr=pc.lr)
        state = self._load_state(AUTOENCODER, {AUTOENCODER: ae}, optimizer)
        net = self._wrap(ae)
        val = self._tensor(sample_image_crops(self.data.validation_images, 8, pc.crop, np.random.default_rng([cfg.seed, 99])))

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(step_seed(cfg.seed, AUTOENCODER, step, self.rank))
            hu = self._tensor(sample_image_crops(self.data.images, pc.batch_size, pc.crop, rng))
            target = ae.normalize(hu)
            loss, parts = autoencoder_loss(net(hu), target, cfg.loss.structure_weight, cfg.loss.frequency_weight)
            optimize(optimizer, loss)
            return {"loss": loss.item(), **parts}

        def validate_fn() -> dict:
            ae.eval()
            with torch.no_grad():
                recon = ae(val)
                loss, parts = autoencoder_loss(recon, ae.normalize(val), cfg.loss.structure_weight, cfg.loss.frequency_weight)
                rmse_hu = (ae.denormalize(recon) - val.clamp(cfg.autoencoder.hu_min, cfg.autoencoder.hu_max)).pow(2).mean().sqrt()
            ae.train()
            return {"val_loss": loss.item(), "val_rmse_hu": rmse_hu.item()}

        def save_fn(step: int, history: list) -> None:
            self._save_state(AUTOENCODER, step, {AUTOENCODER: ae}, optimizer, history)

        history = self._loop(AUTOENCODER, pc, state, optimizer, step_fn, validate_fn, save_fn)
        ae.eval()
        self._set_latent_scale()
        return history

    @torch.no_grad()
    def _set_latent_scale(self) -> None:
        """1 / std of the unscaled latents of training crops, so the diffusion sees unit-variance latents."""
        ae = self.model.autoencoder
        rng = np.random.default_rng([self.config.seed, 7])
        crops = self._tensor(sample_image_crops(self.data.images, 16, self.config.phase1.crop, rng))
        z = ae.encoder(ae.normalize(crops))
        ae.latent_scale.fill_(1.0 / max(float(z.std()), 1e-6))

    # ----------------------------------------------------------------------------- phase 2
    def train_diffusion(self) -> list:
        """Phase 2: the conditional latent DDPM (and, in the refine mode, the latent predictor with it)."""
        cfg, pc = self.config, self.config.phase2
        if self.data.pairs.source.shape[0] == 0:
            raise DiffusionCTError("phase 2 needs training pairs of the source and target kernels; the manifest has none")
        ae = self.model.autoencoder.eval()
        for p in ae.parameters():
            p.requires_grad_(False)
        model = self.model
        trained = {"unet": model.unet.train()}
        joint_predictor = model.predictor is not None and cfg.diffusion.predictor.space == "latent"
        if joint_predictor:
            trained["predictor"] = model.predictor.train()
        elif model.predictor is not None:  # the image-space predictor: trained first, then frozen
            self._train_residual_network(model.predictor, PREDICTOR_PHASE, cfg.diffusion.predictor.training, 95)
            for p in model.predictor.parameters():
                p.requires_grad_(False)
        self._set_x0_range()  # before the averaged copy and the checkpoint check: the saved config holds the values
        if model.unet.skip is not None:  # the paper mode's U-Net starts as "Z_B = Z_A" (a resumed run reloads it)
            model.unet.skip.start_as_condition(cfg.diffusion.x0_shift, cfg.diffusion.x0_factor)
        averaged = {name: copy.deepcopy(module).eval() for name, module in trained.items()}
        for module in averaged.values():
            for p in module.parameters():
                p.requires_grad_(False)
        optimizer = torch.optim.Adam([p for m in trained.values() for p in m.parameters()], lr=pc.lr)
        # checkpoint names: "unet"/"ema" as before the refine mode, "predictor"/"ema_predictor" beside them
        checkpointed = {**trained, "ema": averaged["unet"]}
        if "predictor" in averaged:
            checkpointed["ema_predictor"] = averaged["predictor"]
        state = self._load_state(DIFFUSION_PHASE, checkpointed, optimizer)
        nets = {name: self._wrap(module) for name, module in trained.items()}
        va, vb, val_pixel_mm = self._validation_pairs(pc.crop, 98)
        val_gen = torch.Generator().manual_seed(cfg.seed + 98)
        with torch.no_grad():
            val_za, val_zb = ae.encode(va), ae.encode(vb)
        val_t = torch.linspace(0, cfg.diffusion.timesteps - 1, val_za.shape[0]).long().to(self.device)
        val_noise = torch.randn(val_za.shape, generator=val_gen).to(self.device)

        def losses(modules: dict, a, pixel_mm, z_a, z_b, noise, t) -> dict[str, torch.Tensor]:
            out = {}
            if "predictor" in modules:  # the predictor learns E[Z_B - Z_A | Z_A]; the diffusion samples the rest
                mean = modules["predictor"](z_a)
                out["predictor_loss"] = ((mean - (z_b - z_a)) ** 2).mean()
                mean = mean.detach()
            else:
                with torch.no_grad():
                    mean = model.predicted_mean(a, z_a, pixel_mm)
            diffusion = self.diffusion
            x0 = diffusion.from_pair(z_a, z_b, mean)
            prediction = modules["unet"](diffusion.add_noise(x0, noise, t), t, diffusion.condition(z_a, mean))
            out["diffusion_loss"] = diffusion.loss(prediction, diffusion.training_target(x0, noise, t))
            out["loss"] = sum(out.values())
            return out

        def step_fn(step: int) -> dict:
            seed = step_seed(cfg.seed, DIFFUSION_PHASE, step, self.rank)
            a, b, pixel_mm = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop,
                                                                          np.random.default_rng(seed)))
            with torch.no_grad():
                z_a, z_b = ae.encode(a), ae.encode(b)
            gen = torch.Generator().manual_seed(seed)
            t = torch.randint(0, cfg.diffusion.timesteps, (z_a.shape[0],), generator=gen).to(self.device)
            noise = torch.randn(z_a.shape, generator=gen).to(self.device)
            out = losses(nets, a, pixel_mm, z_a, z_b, noise, t)
            optimize(optimizer, out["loss"])
            for name, module in trained.items():
                update_ema(averaged[name], module, step, cfg.diffusion.ema_decay)
            return {k: v.item() for k, v in out.items()}

        def validate_fn() -> dict:
            with torch.no_grad():
                out = losses(averaged, va, val_pixel_mm, val_za, val_zb, val_noise, val_t)
            return {f"val_{k}": v.item() for k, v in out.items()}

        def save_fn(step: int, history: list) -> None:
            self._save_state(DIFFUSION_PHASE, step, checkpointed, optimizer, history)

        history = self._loop(DIFFUSION_PHASE, pc, state, optimizer, step_fn, validate_fn, save_fn)
        for name, module in trained.items():  # the model keeps the EMA weights
            module.load_state_dict(averaged[name].state_dict())
            module.eval()
        return history

    def _set_x0_range(self) -> None:
        """x0_shift (the paper and sdedit modes: the mean of the latent), x0_scale (1 / SD of the diffusion's
        x0, unscaled) and, in the paper mode, x0_clip (1.05 x its largest |value| once scaled), from 32
        training crops, unless set in the config. The untrained
        latent predictor outputs zero, so its x0 is then the whole residual Z_B - Z_A; the image-space
        predictor is trained by then, so x0 is what it leaves."""
        d = self.config.diffusion
        if d.x0_scale and (d.x0_clip or d.mode != "paper"):
            return
        rng = np.random.default_rng([self.config.seed, 11])
        a, b, pixel_mm = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, 32, self.config.phase2.crop, rng))
        with torch.no_grad():
            z_a, z_b = self.model.autoencoder.encode(a), self.model.autoencoder.encode(b)
            x0 = self.diffusion.unscaled(self.diffusion.from_pair(z_a, z_b, self.model.predicted_mean(a, z_a, pixel_mm)))
        if not d.x0_scale:
            if d.target == "latent":  # the latent itself: centred (the residual modes' x0 is)
                d.x0_shift = round(float(x0.mean()), 4)
            d.x0_scale = round(1.0 / max(float(x0.std()), 1e-6), 4)
        if d.mode == "paper" and not d.x0_clip:
            d.x0_clip = round(1.05 * float((x0 - d.x0_shift).abs().max()) * d.x0_scale, 4)

    # ----------------------------------------------------------------------------- baseline
