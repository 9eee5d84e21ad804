"""DiffusionCT's training recipe (paper section 3.3), read top to bottom.

:func:`train` is the whole recipe: the training pairs and the model, phase 1 (the encoder-decoder, L2 plus the anatomic
structure and frequency losses), then phase 2 with the encoder-decoder frozen: in the refine mode the image predictor
of E[B - A | A] first (held at the calibrated kernel filter when its filter comes from profiles), the diffusion's data
range measured on what that predictor leaves, and the conditional latent DDPM with an exponential moving average of
its weights. The two phase regimes, their losses and the steps between them follow in that order.

The loop every regime shares (seeded steps, checkpoints, resume, DDP) is ``train.loop``; the baselines' regimes are
``train.single_network`` and ``train.gan``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

from diffusionct.config import ALL_PHASES, DIFFUSION_PHASE, PREDICTOR_PHASE, TRAINING_PHASES, RunConfig
from diffusionct.diffusion import ConditionalDiffusion
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import replaced_on_success
from diffusionct.kernels.profiles import KERNEL_PROFILES_KEY, find_profile, transfer_gain
from diffusionct.methods import AUTOENCODER
from diffusionct.methods.library import MODEL_CARD
from diffusionct.methods.store import CONFIG_NAME, load_model, read_model_meta, save_model
from diffusionct.models.baselines import ResidualCNN
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.train.data import load_training_data, sample_image_crops, sample_pair_crops, trained_pixel_range
from diffusionct.train.loop import (Regime, TrainingRun, has_checkpoint, optimize, update_ema, validation_rmse,
                                    world_rank_and_size)
from diffusionct.train.single_network import fit_residual_network

log = logging.getLogger(__name__)

SHARPENING_GAIN = 1.05  # a calibrated gain above this somewhere: the target shows what the source has lost
LEARNED_PART_MARGIN = 0.01  # a learned correction beside a calibrated filter must lower the validation RMSE by 1 %
LEARNED_PART_CROPS, LEARNED_PART_CROP = 32, 128  # held-out crops that decide it


def train(manifest: Path, run_dir: Path, config: RunConfig, phase: str = ALL_PHASES, device: torch.device | None = None,
          resume: bool = False, overwrite: bool = False, profiles: tuple = ()) -> DiffusionCTModel:
    """Train the requested phase(s) into ``run_dir`` and save the model there. ``predictor``: phase 2's predictor
    alone, beside the run folder's trained U-Net, which it keeps (a new gap of a model library: ``library_gap``).
    ``profiles``: kernel profile files for a predictor whose filter comes from profiles (else the shipped ones)."""
    if phase not in TRAINING_PHASES:
        raise DiffusionCTError(f"--phase must be one of {', '.join(TRAINING_PHASES)}, got '{phase}'")
    with overwrite_guard(run_dir, phase, resume, overwrite):
        return _train(manifest, Path(run_dir), copy.deepcopy(config), phase, device or torch.device("cpu"), resume,
                      overwrite, profiles)


def _train(manifest: Path, run_dir: Path, config: RunConfig, phase: str, device: torch.device, resume: bool,
           overwrite: bool, profiles: tuple) -> DiffusionCTModel:
    # the config is this run's copy: phase 2 records values measured on the data (x0_scale) in it
    if phase == PREDICTOR_PHASE:
        if config.diffusion.mode != "refine" or config.diffusion.predictor.space != "image":
            raise DiffusionCTError("the predictor phase trains the refine mode's image predictor; this config has none "
                                   f"(diffusion.mode={config.diffusion.mode}, "
                                   f"diffusion.predictor.space={config.diffusion.predictor.space})")
        config.phase2.steps = 0  # the U-Net is kept as it is
        config.diffusion.x0_scale = 0.0  # the spread of what this predictor leaves: measured on these pairs
    torch.manual_seed(config.seed)  # the networks' initial weights
    model = prepare_run(run_dir, config, phase, resume, overwrite)
    if model is not None:  # phase 2 on a trained encoder-decoder: fresh phase-2 networks of this config
        fresh = DiffusionCTModel.build(config)
        model.predictor, model.config = fresh.predictor, config
        if phase == DIFFUSION_PHASE:
            model.unet = fresh.unet
    data = load_training_data(manifest, config.data.source_kernel, config.data.target_kernel,
                              config.data.validation_fraction, need_pairs=phase != AUTOENCODER, pairing=config.data.pairing)
    run = TrainingRun(config, run_dir, data, device)
    model = (model or DiffusionCTModel.build(config)).to(device)
    model.info.pop(MODEL_CARD, None)  # a card describes the trained model it came with (a donor's), not this one
    if phase != AUTOENCODER:
        hold_calibrated_filter(model, profiles)
    record: dict = {**model.info.get("training", {}), **data.notes}  # per phase: seconds, history (and learned part)
    done = [AUTOENCODER] if phase in (DIFFUSION_PHASE, PREDICTOR_PHASE) else []
    saved = {"manifest": str(manifest), **trained_pixel_range(data)}
    if phase in (AUTOENCODER, ALL_PHASES):  # phase 1: the encoder-decoder
        start = time.perf_counter()
        record[AUTOENCODER] = _phase_record(start, train_encoder_decoder(run, model))
        done.append(AUTOENCODER)
        if run.rank == 0:
            save_model(model, run_dir, done, {"training": record, **saved})
    if phase != AUTOENCODER:  # phase 2: the predictor, then the latent diffusion, the encoder-decoder frozen
        start = time.perf_counter()
        history, learned_part = train_latent_diffusion(run, model)
        record[DIFFUSION_PHASE if phase == ALL_PHASES else phase] = _phase_record(start, history, learned_part)
        done.append(DIFFUSION_PHASE)
        if run.rank == 0:
            save_model(model, run_dir, done, {"training": record, **saved})
    return model


def _phase_record(start: float, history: list, learned_part: dict | None = None) -> dict:
    """What the model's config.json keeps of a phase's training."""
    return {"seconds": round(time.perf_counter() - start, 1), "history": history[-20:],
            **({"learned_part": learned_part} if learned_part is not None else {})}


# ------------------------------------------------------------------------------------- phase 1


def train_encoder_decoder(run: TrainingRun, model: DiffusionCTModel) -> list:
    """Phase 1, then the latent scale that gives the diffusion unit-variance latents."""
    history = run.fit(EncoderDecoderRegime(run, model.autoencoder))
    model.autoencoder.eval()
    set_latent_scale(run, model)
    return history


class EncoderDecoderRegime(Regime):
    """The encoder-decoder trained to reconstruct crops of every series (both kernels): :func:`autoencoder_loss`."""

    name = AUTOENCODER

    def __init__(self, run: TrainingRun, autoencoder: torch.nn.Module):
        self.run, self.settings, self.autoencoder = run, run.config.phase1, autoencoder.train()
        self.modules = {AUTOENCODER: autoencoder}
        self.optimizers = {"optimizer": torch.optim.Adam(autoencoder.parameters(), lr=self.settings.lr)}
        self.trained = run.wrap(autoencoder)
        self.validation = run.tensor(sample_image_crops(run.data.validation_images, 8, self.settings.crop,
                                                        np.random.default_rng([run.config.seed, 99])))

    def step(self, step: int) -> dict[str, float]:
        loss_config, pc = self.run.config.loss, self.settings
        hu = self.run.tensor(sample_image_crops(self.run.data.images, pc.batch_size, pc.crop, self.run.step_rng(self.name, step)))
        loss, parts = autoencoder_loss(self.trained(hu), self.autoencoder.normalize(hu), loss_config.structure_weight,
                                       loss_config.frequency_weight)
        optimize(self.optimizers["optimizer"], loss)
        return {"loss": loss.item(), **parts}

    def validate(self) -> dict[str, float]:
        ae, cfg, val = self.autoencoder, self.run.config, self.validation
        ae.eval()
        with torch.no_grad():
            recon = ae(val)
            loss, _ = autoencoder_loss(recon, ae.normalize(val), cfg.loss.structure_weight, cfg.loss.frequency_weight)
            rmse_hu = (ae.denormalize(recon) - val.clamp(cfg.autoencoder.hu_min, cfg.autoencoder.hu_max)).pow(2).mean().sqrt()
        ae.train()
        return {"val_loss": loss.item(), "val_rmse_hu": rmse_hu.item()}


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


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


@torch.no_grad()
def set_latent_scale(run: TrainingRun, model: DiffusionCTModel) -> None:
    """1 / std of the unscaled latents of training crops, so the diffusion sees unit-variance latents."""
    ae = model.autoencoder
    crops = run.tensor(sample_image_crops(run.data.images, 16, run.config.phase1.crop, np.random.default_rng([run.config.seed, 7])))
    z = ae.encoder(ae.normalize(crops))
    ae.latent_scale.fill_(1.0 / max(float(z.std()), 1e-6))


# ------------------------------------------------------------------------------------- phase 2


def train_latent_diffusion(run: TrainingRun, model: DiffusionCTModel) -> tuple[list, dict | None]:
    """Phase 2: the image predictor first (refine mode), then the diffusion on what it leaves; the model keeps the
    averaged weights. Returns the diffusion's history and, for a predictor beside a calibrated filter, whether its
    learned part was kept."""
    if run.data.pairs.source.shape[0] == 0:
        raise DiffusionCTError("phase 2 needs training pairs of the source and target kernels; the manifest has none")
    for p in model.autoencoder.eval().parameters():
        p.requires_grad_(False)
    predictor_settings = run.config.diffusion.predictor
    learned_part = None
    if model.predictor is not None and predictor_settings.space == "image":  # trained first, then frozen
        learns = any(p.requires_grad for p in model.predictor.parameters())  # not when held whole at a calibrated filter
        fit_residual_network(run, model.predictor, PREDICTOR_PHASE, predictor_settings.training, validation_seed=95)
        if learns and model.predictor.kernel_filter is not None and not model.predictor.kernel_filter_trainable:
            learned_part = keep_learned_part_if_it_helps(run, model.predictor)
        for p in model.predictor.parameters():
            p.requires_grad_(False)
    diffusion = ConditionalDiffusion.from_config(run.config.diffusion)  # holds the config: x0_range's values reach it
    set_x0_range(run, model, diffusion)  # before the averaged copy and the checkpoint check: the saved config holds them
    regime = LatentDiffusionRegime(run, model, diffusion)
    history = run.fit(regime)
    for name, module in regime.trained.items():  # the model keeps the averaged weights
        module.load_state_dict(regime.averaged[name].state_dict())
        module.eval()
    return history, learned_part


@torch.no_grad()
def keep_learned_part_if_it_helps(run: TrainingRun, network: ResidualCNN) -> dict:
    """A network held at a calibrated filter keeps what it learned beside it only where that lowers the error on
    held-out crops (the validation cases, else the training ones) by ``LEARNED_PART_MARGIN``: the filter is the
    physics, and a correction learned from the simulator must earn its place on data it was not fitted to."""
    crop = min(LEARNED_PART_CROP, *run.data.pairs.source.shape[-2:])
    a, b, pixel_mm = run.validation_pairs(crop, 96, count=LEARNED_PART_CROPS)
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
    log.info("%s: validation RMSE %.3f HU with the learned part, %.3f HU with the calibrated filter alone: %s",
             PREDICTOR_PHASE, learned, physics, "kept" if kept else "dropped (the predictor is the filter)")
    return {"validation_rmse_hu": round(learned, 4), "calibrated_filter_rmse_hu": round(physics, 4), "kept": kept}


@torch.no_grad()
def set_x0_range(run: TrainingRun, model: DiffusionCTModel, diffusion: ConditionalDiffusion) -> None:
    """x0_shift (the paper and sdedit modes: the mean of the latent), x0_scale (1 / SD of the diffusion's x0,
    unscaled) and, in the paper mode, x0_clip (1.05 x its largest |value| once scaled), from 32 training crops, unless
    set in the config. The untrained latent predictor outputs zero, so its x0 is then the whole residual Z_B - Z_A;
    the image-space predictor is trained by then, so x0 is what it leaves."""
    d = run.config.diffusion
    if d.x0_scale and (d.x0_clip or d.mode != "paper"):
        return
    a, b, pixel_mm = (run.tensor(x) for x in sample_pair_crops(run.data.pairs, 32, run.config.phase2.crop,
                                                                 np.random.default_rng([run.config.seed, 11])))
    z_a, z_b = model.autoencoder.encode(a), model.autoencoder.encode(b)
    x0 = diffusion.unscaled(diffusion.from_pair(z_a, z_b, model.predicted_mean(a, z_a, pixel_mm)))
    if not d.x0_scale:
        if d.target == "latent":  # the latent itself: centred (the residual modes' x0 is)
            d.x0_shift = round(float(x0.mean()), 4)
        d.x0_scale = round(1.0 / max(float(x0.std()), 1e-6), 4)
    if d.mode == "paper" and not d.x0_clip:
        d.x0_clip = round(1.05 * float((x0 - d.x0_shift).abs().max()) * d.x0_scale, 4)


class LatentDiffusionRegime(Regime):
    """The conditional latent DDPM on pairs encoded by the frozen encoder-decoder: the U-Net learns the diffusion's
    target (``ConditionalDiffusion.training_target``) from the noised x0 and the condition Z_A (plus the predictor's
    mean in the refine mode); a latent predictor learns E[Z_B - Z_A | Z_A] jointly. Validated by the averaged
    networks' losses on fixed crops, timesteps and noise."""

    name = DIFFUSION_PHASE

    def __init__(self, run: TrainingRun, model: DiffusionCTModel, diffusion: ConditionalDiffusion):
        cfg = run.config
        self.run, self.model, self.diffusion, self.settings = run, model, diffusion, cfg.phase2
        self.trained = {"unet": model.unet.train()}
        if model.predictor is not None and cfg.diffusion.predictor.space == "latent":
            self.trained["predictor"] = model.predictor.train()
        if model.unet.skip is not None:  # the paper mode's U-Net starts as "Z_B = Z_A" (a resumed run reloads it)
            model.unet.skip.start_as_condition(cfg.diffusion.x0_shift, cfg.diffusion.x0_factor)
        self.averaged = {name: copy.deepcopy(module).eval() for name, module in self.trained.items()}
        for module in self.averaged.values():
            for p in module.parameters():
                p.requires_grad_(False)
        parameters = [p for m in self.trained.values() for p in m.parameters()]
        self.optimizers = {"optimizer": torch.optim.Adam(parameters, lr=self.settings.lr)}
        # checkpoint names: "unet"/"ema" as before the refine mode, "predictor"/"ema_predictor" beside them
        self.modules = {**self.trained, "ema": self.averaged["unet"]}
        if "predictor" in self.averaged:
            self.modules["ema_predictor"] = self.averaged["predictor"]
        self.nets = {name: run.wrap(module) for name, module in self.trained.items()}
        va, vb, self.val_pixel_mm = run.validation_pairs(self.settings.crop, 98)
        with torch.no_grad():
            self.val_za, self.val_zb = model.autoencoder.encode(va), model.autoencoder.encode(vb)
        self.val_a = va
        self.val_t = torch.linspace(0, cfg.diffusion.timesteps - 1, self.val_za.shape[0]).long().to(run.device)
        self.val_noise = torch.randn(self.val_za.shape, generator=torch.Generator().manual_seed(cfg.seed + 98)).to(run.device)

    def losses(self, modules: dict, a, pixel_mm, z_a, z_b, noise, t) -> dict[str, torch.Tensor]:
        out = {}
        if "predictor" in modules:  # the predictor learns E[Z_B - Z_A | Z_A]; the diffusion samples the rest
            mean = modules["predictor"](z_a)
            out["predictor_loss"] = ((mean - (z_b - z_a)) ** 2).mean()
            mean = mean.detach()
        else:
            with torch.no_grad():
                mean = self.model.predicted_mean(a, z_a, pixel_mm)
        diffusion = self.diffusion
        x0 = diffusion.from_pair(z_a, z_b, mean)
        prediction = modules["unet"](diffusion.add_noise(x0, noise, t), t, diffusion.condition(z_a, mean))
        out["diffusion_loss"] = diffusion.loss(prediction, diffusion.training_target(x0, noise, t))
        out["loss"] = sum(out.values())
        return out

    def step(self, step: int) -> dict[str, float]:
        run, pc, cfg = self.run, self.settings, self.run.config
        seed = run.step_seed(DIFFUSION_PHASE, step)
        a, b, pixel_mm = (run.tensor(x) for x in sample_pair_crops(run.data.pairs, pc.batch_size, pc.crop,
                                                                     np.random.default_rng(seed)))
        with torch.no_grad():
            z_a, z_b = self.model.autoencoder.encode(a), self.model.autoencoder.encode(b)
        gen = torch.Generator().manual_seed(seed)
        t = torch.randint(0, cfg.diffusion.timesteps, (z_a.shape[0],), generator=gen).to(run.device)
        noise = torch.randn(z_a.shape, generator=gen).to(run.device)
        out = self.losses(self.nets, a, pixel_mm, z_a, z_b, noise, t)
        optimize(self.optimizers["optimizer"], out["loss"])
        for name, module in self.trained.items():
            update_ema(self.averaged[name], module, step, cfg.diffusion.ema_decay)
        return {k: v.item() for k, v in out.items()}

    def validate(self) -> dict[str, float]:
        with torch.no_grad():
            out = self.losses(self.averaged, self.val_a, self.val_pixel_mm, self.val_za, self.val_zb, self.val_noise, self.val_t)
        return {f"val_{k}": v.item() for k, v in out.items()}


# ------------------------------------------------------------------------------------- the run folder and the filter


def prepare_run(run_dir: Path, config: RunConfig, phase: str, resume: bool, overwrite: bool) -> DiffusionCTModel | None:
    """Check the run folder for the requested phase; returns the model to continue from (phase 2)."""
    run_dir = Path(run_dir)
    if phase in (DIFFUSION_PHASE, PREDICTOR_PHASE):
        meta = read_model_meta(run_dir) if run_dir.exists() else None
        if meta is None or AUTOENCODER not in meta.get("phases", []):
            raise DiffusionCTError(f"{run_dir}: phase 2 needs a trained encoder-decoder in this run folder; "
                                   "run `diffusionct train --phase autoencoder` (or --phase all) first")
        saved = RunConfig.from_saved(meta["config"])
        if saved.autoencoder != config.autoencoder:
            raise DiffusionCTError(f"{run_dir}: the autoencoder settings differ from the checkpoint's "
                                   f"({saved.autoencoder} vs {config.autoencoder}); use the run's own config")
        if phase == PREDICTOR_PHASE and (DIFFUSION_PHASE not in meta.get("phases", []) or saved.unet != config.unet):
            raise DiffusionCTError(f"{run_dir}: the predictor phase trains beside a trained U-Net of the same settings; "
                                   "this run folder has none")
        return load_model(run_dir, need_diffusion=phase == PREDICTOR_PHASE, meta=meta)
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite):
        raise DiffusionCTError(f"{run_dir}: run folder exists; pass --resume to continue it or --overwrite to start over")
    return None


@contextlib.contextmanager
def overwrite_guard(run_dir: Path, phase: str, resume: bool, overwrite: bool):
    """With --overwrite (not --resume) the old run is kept until the new one has succeeded; a run folder this run
    created is removed when the run fails before its first checkpoint (a full disk, a bad setting found late)."""
    run_dir = Path(run_dir)
    rank, world = world_rank_and_size()  # under torchrun the first process alone moves and removes folders
    fresh = not run_dir.exists()
    replacing = overwrite and not resume and phase != DIFFUSION_PHASE and rank == 0
    try:
        with replaced_on_success(run_dir) if replacing else contextlib.nullcontext():
            if world > 1:
                dist.barrier()  # the others start once the old run is set aside (they would read its checkpoints)
            yield
    except BaseException:
        if rank == 0 and fresh and run_dir.is_dir() and not has_checkpoint(run_dir) and not (run_dir / CONFIG_NAME).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def hold_calibrated_filter(model: DiffusionCTModel, profiles: tuple = ()) -> None:
    """A predictor whose kernel filter comes from profiles (``diffusion.predictor.kernel_filter_from``) gets the gap's
    calibrated filter W_target / W_source, held fixed; the model records the two profiles (its provenance).

    Its convolutions learn what the filter misses only where the source has lost something the target shows (the gain
    exceeds 1 somewhere: a smoother source). Towards a smoother target the filter is the whole map (filtered
    back-projection is linear and the source holds every frequency the target keeps), so a learned correction could
    only add the simulator's differences from real scanners: measured on the real Canon pairs, FC51 -> FC13 with one
    kept 0.74 of the features where the filter alone keeps 0.85 (docs/decisions.md, ``nothing-learned-towards-smooth``)."""
    model.info.pop(KERNEL_PROFILES_KEY, None)  # a donor's (another gap's) would be wrong
    if model.config.diffusion.predictor.kernel_filter_from != "profiles" or not isinstance(model.predictor, ResidualCNN):
        return
    data = model.config.data
    source, target = find_profile(data.source_kernel, profiles), find_profile(data.target_kernel, profiles)
    gain = functools.partial(transfer_gain, source, target)
    sharpening = bool(np.max(gain(np.linspace(0.0, min(source.measured_up_to, target.measured_up_to), 256))) > SHARPENING_GAIN)
    model.predictor.hold_kernel_filter(gain, learn_residual=sharpening)
    model.info[KERNEL_PROFILES_KEY] = {"source": source.to_dict(), "target": target.to_dict()}
    log.info("the predictor's kernel filter is the calibrated %s -> %s filter, held fixed%s", source.label, target.label,
             "" if sharpening else "; a smoother target: nothing is learned beside it")
