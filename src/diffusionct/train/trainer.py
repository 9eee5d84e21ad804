"""Two-phase training (paper section 3.3): the encoder-decoder, then the conditional latent DDPM.

Reproducible and resumable: the crops and noise of step k come from generators seeded by
(seed, phase, k, rank), and a checkpoint (safetensors weights + optimizer tensors, JSON for the
rest) is written atomically every ``checkpoint_every`` steps, so a killed run resumed with
``--resume`` reaches the same weights as an uninterrupted one. Multi-process training uses
DistributedDataParallel when launched by ``torchrun`` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm import tqdm

from diffusionct.config import PhaseConfig, RunConfig, image_ddpm_diffusion_config, image_ddpm_unet_config
from diffusionct.diffusion import NoiseSchedule, condition, diffusion_loss, from_pair, training_target
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_file, replaced_on_success
from diffusionct.model_store import load_model, read_model_meta, save_model
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.train.data import TrainingData, sample_image_crops, sample_pair_crops
from diffusionct.units import HU_RANGE

log = logging.getLogger(__name__)
PHASES = ("autoencoder", "diffusion", "residual-cnn", "pix2pix", "ddpm", "predictor", "cyclegan")  # order fixes the step seeds


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


# ------------------------------------------------------------------------------------- state


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_seed(seed: int, phase: str, step: int, rank: int) -> int:
    return int(np.random.default_rng([seed, PHASES.index(phase), step, rank]).integers(0, 2**62))


def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                       prefix: str = "optimizer") -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _without_steps(config: dict) -> dict:
    """A config dict without the phases' step counts: a run may be resumed to train longer."""
    out = json.loads(json.dumps(config))
    for section in ("phase1", "phase2"):
        out.get(section, {}).pop("steps", None)
    out.get("diffusion", {}).get("predictor_training", {}).pop("steps", None)
    for name in ("residual_cnn", "pix2pix", "ddpm"):
        out.get("baselines", {}).get(name, {}).pop("steps", None)
    return out


def _optimizers(optimizer) -> dict[str, torch.optim.Optimizer]:
    """One optimizer is stored as ``optimizer``; several (a GAN's) under their own names."""
    return optimizer if isinstance(optimizer, dict) else {"optimizer": optimizer}


@dataclass
class PhaseState:
    step: int = 0
    history: list | None = None


class Trainer:
    """Trains one run folder, phase by phase."""

    def __init__(self, config: RunConfig, run_dir: Path, data: TrainingData, device: torch.device,
                 model: DiffusionCTModel | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.data = data
        self.device = device
        self.model = (model or DiffusionCTModel.build(config)).to(device)
        self.schedule = NoiseSchedule.from_config(config.diffusion)
        self.rank, self.world = _world()

    # ----------------------------------------------------------------------------- checkpoints
    def _state_paths(self, phase: str) -> tuple[Path, Path]:
        folder = self.run_dir / "state"
        return folder / f"{phase}.safetensors", folder / f"{phase}.json"

    def _save_state(self, phase: str, step: int, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer], history: list) -> None:
        if self.rank != 0:
            return
        tensors_path, meta_path = self._state_paths(phase)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"phase": phase, "step": step, "history": history, "config": self.config.to_dict()}
        tensors = {}
        for name, opt in _optimizers(optimizer).items():
            opt_tensors, meta[name] = _optimizer_tensors(opt, name)
            tensors.update(opt_tensors)
        for prefix, module in modules.items():
            tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
        with atomic_output_file(tensors_path) as tmp:
            save_file(tensors, str(tmp))
        with atomic_output_file(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))

    def _load_state(self, phase: str, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer]) -> PhaseState:
        tensors_path, meta_path = self._state_paths(phase)
        if not meta_path.is_file() or not tensors_path.is_file():
            return PhaseState(0, [])
        meta = json.loads(meta_path.read_text())
        if _without_steps(meta["config"]) != _without_steps(self.config.to_dict()):
            raise DiffusionCTError(f"{meta_path}: the run was started with another config; resume without --config/--set "
                                   "changes, or start a new run")
        tensors = load_file(str(tensors_path))
        for prefix, module in modules.items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        for name, opt in _optimizers(optimizer).items():
            _restore_optimizer(opt, tensors, meta[name], name)
        log.info("resumed %s at step %d", phase, meta["step"])
        return PhaseState(meta["step"], meta["history"])

    # ----------------------------------------------------------------------------- helpers
    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.world > 1:
            return torch.nn.parallel.DistributedDataParallel(module)
        return module

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _loop(self, phase: str, pc: PhaseConfig, state: PhaseState, step_fn, validate_fn, save_fn) -> list:
        history = state.history or []
        bar = tqdm(total=pc.steps, initial=state.step, desc=phase, unit="step", disable=None if self.rank == 0 else True)
        start = time.perf_counter()
        for step in range(state.step, pc.steps):
            metrics = step_fn(step)
            bar.update()
            bar.set_postfix(loss=f"{metrics['loss']:.4g}")
            done = step + 1
            if done % pc.validate_every == 0 or done == pc.steps:
                record = {"step": done, **metrics, **validate_fn(), "seconds": round(time.perf_counter() - start, 1)}
                history.append(record)
                if self.rank == 0:
                    log.info("%s step %d: %s", phase, done, {k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()})
            if done % pc.checkpoint_every == 0 or done == pc.steps:
                save_fn(done, history)
        bar.close()
        return history

    # ----------------------------------------------------------------------------- phase 1
    def train_autoencoder(self) -> list:
        cfg, pc = self.config, self.config.phase1
        ae = self.model.autoencoder.train()
        optimizer = torch.optim.Adam(ae.parameters(), lr=pc.lr)
        state = self._load_state("autoencoder", {"autoencoder": ae}, optimizer)
        net = self._wrap(ae)
        val = self._tensor(sample_image_crops(self.data.validation_images, 8, pc.crop, np.random.default_rng([cfg.seed, 99])))

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(_step_seed(cfg.seed, "autoencoder", step, self.rank))
            hu = self._tensor(sample_image_crops(self.data.images, pc.batch_size, pc.crop, rng))
            target = ae.normalize(hu)
            loss, parts = autoencoder_loss(net(hu), target, cfg.loss.structure_weight, cfg.loss.frequency_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
            self._save_state("autoencoder", step, {"autoencoder": ae}, optimizer, history)

        history = self._loop("autoencoder", pc, state, step_fn, validate_fn, save_fn)
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
        joint_predictor = model.predictor is not None and cfg.diffusion.predictor == "latent"
        if joint_predictor:
            trained["predictor"] = model.predictor.train()
        elif model.predictor is not None:  # the image-space predictor: trained first, then frozen
            self._train_residual_network(model.predictor, "predictor", cfg.diffusion.predictor_training, 95)
            for p in model.predictor.parameters():
                p.requires_grad_(False)
        averaged = {name: copy.deepcopy(module).eval() for name, module in trained.items()}
        for module in averaged.values():
            for p in module.parameters():
                p.requires_grad_(False)
        optimizer = torch.optim.Adam([p for m in trained.values() for p in m.parameters()], lr=pc.lr)
        # checkpoint names: "unet"/"ema" as before the refine mode, "predictor"/"ema_predictor" beside them
        checkpointed = {**trained, "ema": averaged["unet"]}
        if "predictor" in averaged:
            checkpointed["ema_predictor"] = averaged["predictor"]
        self._set_x0_range()  # before the checkpoint check: the saved config holds the values
        state = self._load_state("diffusion", checkpointed, optimizer)
        nets = {name: self._wrap(module) for name, module in trained.items()}
        va, vb = self._validation_pairs(pc.crop, 98)
        val_gen = torch.Generator().manual_seed(cfg.seed + 98)
        with torch.no_grad():
            val_za, val_zb = ae.encode(va), ae.encode(vb)
        val_t = torch.linspace(0, cfg.diffusion.timesteps - 1, val_za.shape[0]).long().to(self.device)
        val_noise = torch.randn(val_za.shape, generator=val_gen).to(self.device)

        def losses(modules: dict, a, z_a, z_b, noise, t) -> dict[str, torch.Tensor]:
            out = {}
            if "predictor" in modules:  # the predictor learns E[Z_B - Z_A | Z_A]; the diffusion samples the rest
                mean = modules["predictor"](z_a)
                out["predictor_loss"] = ((mean - (z_b - z_a)) ** 2).mean()
                mean = mean.detach()
            else:
                with torch.no_grad():
                    mean = model.predicted_mean(a, z_a)
            x0 = from_pair(cfg.diffusion, z_a, z_b, mean)
            x_t = self.schedule.add_noise(x0, noise, t)
            prediction = modules["unet"](x_t, t, condition(cfg.diffusion, z_a, mean))
            out["diffusion_loss"] = diffusion_loss(cfg.diffusion, prediction, training_target(cfg.diffusion, self.schedule, x0, noise, t))
            out["loss"] = sum(out.values())
            return out

        def step_fn(step: int) -> dict:
            seed = _step_seed(cfg.seed, "diffusion", step, self.rank)
            a, b = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop,
                                                                np.random.default_rng(seed)))
            with torch.no_grad():
                z_a, z_b = ae.encode(a), ae.encode(b)
            gen = torch.Generator().manual_seed(seed)
            t = torch.randint(0, cfg.diffusion.timesteps, (z_a.shape[0],), generator=gen).to(self.device)
            noise = torch.randn(z_a.shape, generator=gen).to(self.device)
            out = losses(nets, a, z_a, z_b, noise, t)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            with torch.no_grad():
                decay = min(cfg.diffusion.ema_decay, (1 + step) / (10 + step))  # warm-up of the average
                for name, module in trained.items():
                    for p_ema, p in zip(averaged[name].parameters(), module.parameters()):
                        p_ema.lerp_(p, 1 - decay)
            return {k: v.item() for k, v in out.items()}

        def validate_fn() -> dict:
            with torch.no_grad():
                out = losses(averaged, va, val_za, val_zb, val_noise, val_t)
            return {f"val_{k}": v.item() for k, v in out.items()}

        def save_fn(step: int, history: list) -> None:
            self._save_state("diffusion", step, checkpointed, optimizer, history)

        history = self._loop("diffusion", pc, state, step_fn, validate_fn, save_fn)
        for name, module in trained.items():  # the model keeps the EMA weights
            module.load_state_dict(averaged[name].state_dict())
            module.eval()
        return history

    def _set_x0_range(self) -> None:
        """x0_scale (1 / SD of the diffusion's x0, unscaled) and, in the paper mode, x0_clip (1.05 x its
        largest |value| once scaled), from 32 training crops, unless set in the config. The untrained
        latent predictor outputs zero, so its x0 is then the whole residual Z_B - Z_A; the image-space
        predictor is trained by then, so x0 is what it leaves."""
        d = self.config.diffusion
        if d.x0_scale and (d.x0_clip or d.mode != "paper"):
            return
        rng = np.random.default_rng([self.config.seed, 11])
        a, b = sample_pair_crops(self.data.pairs, 32, self.config.phase2.crop, rng)
        with torch.no_grad():
            a = self._tensor(a)
            z_a, z_b = self.model.autoencoder.encode(a), self.model.autoencoder.encode(self._tensor(b))
            x0 = from_pair(d, z_a, z_b, self.model.predicted_mean(a, z_a)) / d.x0_factor
        if not d.x0_scale:
            d.x0_scale = round(1.0 / max(float(x0.std()), 1e-6), 4)
        if d.mode == "paper" and not d.x0_clip:
            d.x0_clip = round(1.05 * float(x0.abs().max()) * d.x0_scale, 4)

    # ----------------------------------------------------------------------------- baseline
    def train_residual_cnn(self):
        """Choe et al.'s residual CNN: L2 between the predicted and the true residual B - A (in HU / 100)."""
        from diffusionct.models.baselines import ResidualCNN

        b = self.config.baselines
        network = ResidualCNN(b.residual_cnn_channels, b.residual_cnn_layers).to(self.device)
        return self._train_residual_network(network, "residual-cnn", b.residual_cnn, 97)

    def _train_residual_network(self, network: torch.nn.Module, phase: str, pc: PhaseConfig, validation_seed: int):
        """Trains a network whose ``forward(A)`` predicts the HU residual B - A, with an L2 loss in HU / 100
        (the residual CNN baseline, and the refine mode's image-space predictor)."""
        from diffusionct.models.baselines import RESIDUAL_SCALE

        cfg = self.config
        network.train()
        optimizer = torch.optim.Adam(network.parameters(), lr=pc.lr)
        state = self._load_state(phase, {"network": network}, optimizer)
        net = self._wrap(network)
        va, vb = self._validation_pairs(pc.crop, validation_seed)

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(_step_seed(cfg.seed, phase, step, self.rank))
            a, b_ = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop, rng))
            loss = F.mse_loss(net(a), b_ - a) / RESIDUAL_SCALE**2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

        def validate_fn() -> dict:
            with torch.no_grad():
                rmse = (network.convert(va) - vb).pow(2).mean().sqrt().item()
            return {"val_rmse_hu": rmse}

        def save_fn(step: int, history: list) -> None:
            self._save_state(phase, step, {"network": network}, optimizer, history)

        self._loop(phase, pc, state, step_fn, validate_fn, save_fn)
        return network.eval()

    def train_pix2pix(self):
        """pix2pix (Isola et al. 2017): U-Net generator, PatchGAN discriminator, L1 weight 100."""
        from diffusionct.models.baselines import RESIDUAL_SCALE, PatchDiscriminator, UNetGenerator

        cfg = self.config
        b, pc = cfg.baselines, cfg.baselines.pix2pix
        generator = UNetGenerator(b.pix2pix_channels, b.pix2pix_depth).to(self.device).train()
        discriminator = PatchDiscriminator(b.pix2pix_channels).to(self.device).train()
        optimizers = {"optimizer_g": torch.optim.Adam(generator.parameters(), lr=pc.lr, betas=(0.5, 0.999)),
                      "optimizer_d": torch.optim.Adam(discriminator.parameters(), lr=pc.lr, betas=(0.5, 0.999))}
        modules = {"generator": generator, "discriminator": discriminator}
        state = self._load_state("pix2pix", modules, optimizers)
        g_net, d_net = self._wrap(generator), self._wrap(discriminator)
        bce = torch.nn.BCEWithLogitsLoss()
        va, vb = self._validation_pairs(pc.crop, 96)

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(_step_seed(cfg.seed, "pix2pix", step, self.rank))
            a, b_ = (self._tensor(x) for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop, rng))
            fake = a + g_net(a)
            real_logits, fake_logits = d_net(a, b_), d_net(a, fake.detach())
            loss_d = 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))
            optimizers["optimizer_d"].zero_grad(set_to_none=True)
            loss_d.backward()
            optimizers["optimizer_d"].step()
            adversarial, fake_features = d_net(a, fake, with_features=True)
            l1 = (fake - b_).abs().mean() / RESIDUAL_SCALE
            loss_g = bce(adversarial, torch.ones_like(adversarial)) + b.pix2pix_l1_weight * l1
            if b.pix2pix_latent_weight > 0:  # STAN-CT's latent-space loss, in the discriminator's feature space
                with torch.no_grad():
                    _, real_features = d_net(a, b_, with_features=True)
                loss_g = loss_g + b.pix2pix_latent_weight * (fake_features - real_features).abs().mean()
            optimizers["optimizer_g"].zero_grad(set_to_none=True)
            loss_g.backward()
            optimizers["optimizer_g"].step()
            return {"loss": loss_g.item(), "loss_d": loss_d.item(), "l1": l1.item()}

        def validate_fn() -> dict:
            with torch.no_grad():
                return {"val_rmse_hu": (generator.convert(va) - vb).pow(2).mean().sqrt().item()}

        self._loop("pix2pix", pc, state, step_fn, validate_fn,
                   lambda step, history: self._save_state("pix2pix", step, modules, optimizers, history))
        return generator.eval()

    def train_cyclegan(self):
        """CycleGAN (Zhu et al. 2017) on unpaired crops: generators A->B and B->A (pix2pix's U-Net, residual),
        one single-image PatchGAN per domain, least-squares adversarial loss, cycle and identity L1 losses.
        Source and target crops are drawn independently, so no pair is ever used (with a paired manifest the
        pairs are hidden this way)."""
        from diffusionct.models.baselines import RESIDUAL_SCALE, PatchDiscriminator, UNetGenerator

        cfg = self.config
        b, pc = cfg.baselines, cfg.baselines.cyclegan
        modules = {"generator": UNetGenerator(b.pix2pix_channels, b.pix2pix_depth),
                   "generator_ba": UNetGenerator(b.pix2pix_channels, b.pix2pix_depth),
                   "discriminator_a": PatchDiscriminator(b.pix2pix_channels, inputs=1),
                   "discriminator_b": PatchDiscriminator(b.pix2pix_channels, inputs=1)}
        for module in modules.values():
            module.to(self.device).train()
        generators = [*modules["generator"].parameters(), *modules["generator_ba"].parameters()]
        discriminators = [*modules["discriminator_a"].parameters(), *modules["discriminator_b"].parameters()]
        optimizers = {"optimizer_g": torch.optim.Adam(generators, lr=pc.lr, betas=(0.5, 0.999)),
                      "optimizer_d": torch.optim.Adam(discriminators, lr=pc.lr, betas=(0.5, 0.999))}
        state = self._load_state("cyclegan", modules, optimizers)
        g_ab, g_ba, d_a, d_b = (self._wrap(modules[k]) for k in ("generator", "generator_ba", "discriminator_a", "discriminator_b"))
        sources, targets = self._unpaired_sets()
        va, vb = self._validation_pairs(pc.crop, 97)

        def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
            return (logits - (1.0 if real else 0.0)).pow(2).mean()

        def step_fn(step: int) -> dict:
            rng = np.random.default_rng(_step_seed(cfg.seed, "cyclegan", step, self.rank))
            a = self._tensor(sample_image_crops(sources, pc.batch_size, pc.crop, rng))
            b_ = self._tensor(sample_image_crops(targets, pc.batch_size, pc.crop, rng))
            fake_b, fake_a = a + g_ab(a), b_ + g_ba(b_)
            cycle = ((fake_b + g_ba(fake_b) - a).abs().mean() + (fake_a + g_ab(fake_a) - b_).abs().mean()) / RESIDUAL_SCALE
            identity = (g_ab(b_).abs().mean() + g_ba(a).abs().mean()) / RESIDUAL_SCALE  # a B image stays as it is
            adversarial = gan_loss(d_b(fake_b), True) + gan_loss(d_a(fake_a), True)
            loss_g = adversarial + b.cyclegan_cycle_weight * cycle + b.cyclegan_identity_weight * identity
            optimizers["optimizer_g"].zero_grad(set_to_none=True)
            loss_g.backward()
            optimizers["optimizer_g"].step()
            loss_d = 0.5 * (gan_loss(d_b(b_), True) + gan_loss(d_b(fake_b.detach()), False)
                            + gan_loss(d_a(a), True) + gan_loss(d_a(fake_a.detach()), False))
            optimizers["optimizer_d"].zero_grad(set_to_none=True)
            loss_d.backward()
            optimizers["optimizer_d"].step()
            return {"loss": loss_g.item(), "loss_d": loss_d.item(), "cycle": cycle.item()}

        def validate_fn() -> dict:
            with torch.no_grad():
                return {"val_rmse_hu": (modules["generator"].convert(va) - vb).pow(2).mean().sqrt().item()}

        self._loop("cyclegan", pc, state, step_fn, validate_fn,
                   lambda step, history: self._save_state("cyclegan", step, modules, optimizers, history))
        return modules["generator"].eval()

    def _unpaired_sets(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The real source and target sets; from a paired manifest, its pairs' two sides drawn independently."""
        if self.data.unpaired_source and self.data.unpaired_target:
            return self.data.unpaired_source, self.data.unpaired_target
        return [self.data.pairs.source], [self.data.pairs.target]

    def train_image_ddpm(self):
        """Image-space conditional DDPM (SR3 / Palette style): A concatenated with the noisy B (or B - A)."""
        from diffusionct.models.latent_unet import ConditionalUNet

        cfg = self.config
        diffusion = image_ddpm_diffusion_config(cfg)
        b, pc = cfg.baselines, cfg.baselines.ddpm
        unet = ConditionalUNet(image_ddpm_unet_config(cfg), 1).to(self.device).train()
        ema = copy.deepcopy(unet).eval()
        optimizer = torch.optim.Adam(unet.parameters(), lr=pc.lr)
        state = self._load_state("ddpm", {"unet": unet, "ema": ema}, optimizer)
        net = self._wrap(unet)
        scale = b.ddpm_hu_scale

        def step_fn(step: int) -> dict:
            seed = _step_seed(cfg.seed, "ddpm", step, self.rank)
            a, b_ = (self._tensor(x).clamp(*HU_RANGE) / scale
                     for x in sample_pair_crops(self.data.pairs, pc.batch_size, pc.crop, np.random.default_rng(seed)))
            gen = torch.Generator().manual_seed(seed)
            x0 = from_pair(diffusion, a, b_)
            t = torch.randint(0, diffusion.timesteps, (x0.shape[0],), generator=gen).to(self.device)
            noise = torch.randn(x0.shape, generator=gen).to(self.device)
            loss = diffusion_loss(diffusion, net(self.schedule.add_noise(x0, noise, t), t, a),
                                  training_target(diffusion, self.schedule, x0, noise, t))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                decay = min(diffusion.ema_decay, (1 + step) / (10 + step))
                for p_ema, p in zip(ema.parameters(), unet.parameters()):
                    p_ema.lerp_(p, 1 - decay)
            return {"loss": loss.item()}

        self._loop("ddpm", pc, state, step_fn, lambda: {},
                   lambda step, history: self._save_state("ddpm", step, {"unet": unet, "ema": ema}, optimizer, history))
        return ema

    def _validation_pairs(self, crop: int, seed: int):
        """Eight fixed (source, target) crops of the validation cases (of the training ones when none)."""
        pairs = self.data.validation_pairs if self.data.validation_pairs.source.shape[0] else self.data.pairs
        return (self._tensor(x) for x in sample_pair_crops(pairs, 8, crop, np.random.default_rng([self.config.seed, seed])))


def prepare_run(run_dir: Path, config: RunConfig, phase: str, resume: bool, overwrite: bool) -> DiffusionCTModel | None:
    """Check the run folder for the requested phase; returns the model to continue from (phase 2)."""
    run_dir = Path(run_dir)
    if phase == "diffusion":
        meta = read_model_meta(run_dir) if run_dir.exists() else None
        if meta is None or "autoencoder" not in meta.get("phases", []):
            raise DiffusionCTError(f"{run_dir}: phase 2 needs a trained encoder-decoder in this run folder; "
                                   "run `diffusionct train --phase autoencoder` (or --phase all) first")
        saved = RunConfig.from_saved(meta["config"])
        if saved.autoencoder != config.autoencoder:
            raise DiffusionCTError(f"{run_dir}: the autoencoder settings differ from the checkpoint's "
                                   f"({saved.autoencoder} vs {config.autoencoder}); use the run's own config")
        return load_model(run_dir, need_diffusion=False, meta=meta)
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite):
        raise DiffusionCTError(f"{run_dir}: run folder exists; pass --resume to continue it or --overwrite to start over")
    return None


def overwrite_guard(run_dir: Path, phase: str, resume: bool, overwrite: bool):
    """With --overwrite (not --resume) the old run is kept until the new one has succeeded."""
    if overwrite and not resume and phase != "diffusion":
        return replaced_on_success(Path(run_dir))
    return contextlib.nullcontext()


def train(manifest: Path, run_dir: Path, config: RunConfig, phase: str = "all", device: torch.device | None = None,
          resume: bool = False, overwrite: bool = False) -> DiffusionCTModel:
    """Train the requested phase(s) into ``run_dir`` and save the model there."""
    if phase not in ("autoencoder", "diffusion", "all"):
        raise DiffusionCTError(f"--phase must be autoencoder, diffusion or all, got '{phase}'")
    with overwrite_guard(run_dir, phase, resume, overwrite):
        return _train(manifest, run_dir, config, phase, device or torch.device("cpu"), resume, overwrite)


def _train(manifest: Path, run_dir: Path, config: RunConfig, phase: str, device: torch.device, resume: bool,
           overwrite: bool) -> DiffusionCTModel:
    from diffusionct.train.data import load_training_data

    config = copy.deepcopy(config)  # phase 2 records values measured on the data (x0_scale) in the model's config
    torch.manual_seed(config.seed)
    model = prepare_run(run_dir, config, phase, resume, overwrite)
    if model is not None:  # phase 2 on a trained encoder-decoder: fresh phase-2 networks of this config
        fresh = DiffusionCTModel.build(config)
        model.unet, model.predictor, model.config = fresh.unet, fresh.predictor, config
    data = load_training_data(manifest, config.data.source_kernel, config.data.target_kernel,
                              config.data.validation_fraction, need_pairs=phase != "autoencoder", pairing=config.data.pairing)
    trainer = Trainer(config, run_dir, data, device, model)
    rank, _ = _world()
    record: dict = {**trainer.model.info.get("training", {}), **data.notes}
    phases = ["autoencoder", "diffusion"] if phase == "all" else [phase]
    done = ["autoencoder"] if phase == "diffusion" else []
    for name in phases:
        start = time.perf_counter()
        history = trainer.train_autoencoder() if name == "autoencoder" else trainer.train_diffusion()
        done.append(name)
        record[name] = {"seconds": round(time.perf_counter() - start, 1), "history": history[-20:]}
        if rank == 0:
            save_model(trainer.model, run_dir, done, {"training": record, "manifest": str(manifest)})
    return trainer.model


def init_distributed() -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False
