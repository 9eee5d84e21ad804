"""Training runs: the trainer of a run folder (one class of the regimes: latent diffusion, single networks,
GANs, around one loop in loop.py), and ``train``, which trains DiffusionCT's phases into a model folder."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from diffusionct.config import ALL_PHASES, DIFFUSION_PHASE, PREDICTOR_PHASE, TRAINING_PHASES, RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import replaced_on_success
from diffusionct.kernels.profiles import KERNEL_PROFILES_KEY, find_profile, transfer_gain
from diffusionct.methods import AUTOENCODER
from diffusionct.methods.library import MODEL_CARD
from diffusionct.methods.store import CONFIG_NAME, load_model, read_model_meta, save_model
from diffusionct.models.baselines import ResidualCNN
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.train.gan import GANRegime
from diffusionct.train.latent_diffusion import LatentDiffusionRegime
from diffusionct.train.loop import has_checkpoint, world_rank_and_size
from diffusionct.train.single_network import SingleNetworkRegime

log = logging.getLogger(__name__)

SHARPENING_GAIN = 1.05  # a calibrated gain above this somewhere: the target shows what the source has lost


class Trainer(LatentDiffusionRegime, SingleNetworkRegime, GANRegime):
    """Every training regime over one run folder's data, device and checkpoints (DiffusionCT's refine mode
    trains its image predictor with the single-network regime's routine, so the regimes meet here)."""


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
    fresh = not run_dir.exists()
    try:
        with replaced_on_success(run_dir) if overwrite and not resume and phase != DIFFUSION_PHASE else contextlib.nullcontext():
            yield
    except BaseException:
        if fresh and run_dir.is_dir() and not has_checkpoint(run_dir) and not (run_dir / CONFIG_NAME).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def train(manifest: Path, run_dir: Path, config: RunConfig, phase: str = ALL_PHASES, device: torch.device | None = None,
          resume: bool = False, overwrite: bool = False, profiles: tuple = ()) -> DiffusionCTModel:
    """Train the requested phase(s) into ``run_dir`` and save the model there. ``predictor``: phase 2's predictor
    alone, beside the run folder's trained U-Net, which it keeps (a new gap of a model library: ``library_gap``).
    ``profiles``: kernel profile files for a predictor whose filter comes from profiles (else the shipped ones)."""
    if phase not in TRAINING_PHASES:
        raise DiffusionCTError(f"--phase must be one of {', '.join(TRAINING_PHASES)}, got '{phase}'")
    with overwrite_guard(run_dir, phase, resume, overwrite):
        return _train(manifest, run_dir, config, phase, device or torch.device("cpu"), resume, overwrite, profiles)


def hold_calibrated_filter(model: DiffusionCTModel, profiles: tuple = ()) -> None:
    """A predictor whose kernel filter comes from profiles (``diffusion.predictor.kernel_filter_from``) gets the gap's
    calibrated filter W_target / W_source, held fixed; the model records the two profiles (its provenance).

    Its convolutions learn what the filter misses only where the source has lost something the target shows (the gain
    exceeds 1 somewhere: a smoother source). Towards a smoother target the filter is the whole map (filtered
    back-projection is linear and the source holds every frequency the target keeps), so a learned correction could
    only add the simulator's differences from real scanners: measured on the real Canon pairs, FC51 -> FC13 with one
    kept 0.74 of the features where the filter alone keeps 0.85 (docs/results.md, section 3)."""
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


def _train(manifest: Path, run_dir: Path, config: RunConfig, phase: str, device: torch.device, resume: bool,
           overwrite: bool, profiles: tuple = ()) -> DiffusionCTModel:
    from diffusionct.train.data import load_training_data, trained_pixel_range

    config = copy.deepcopy(config)  # phase 2 records values measured on the data (x0_scale) in the model's config
    if phase == PREDICTOR_PHASE:
        if config.diffusion.mode != "refine" or config.diffusion.predictor.space != "image":
            raise DiffusionCTError("the predictor phase trains the refine mode's image predictor; this config has none "
                                   f"(diffusion.mode={config.diffusion.mode}, diffusion.predictor.space={config.diffusion.predictor.space})")
        config.phase2.steps = 0  # the U-Net is kept as it is
        config.diffusion.x0_scale = 0.0  # the spread of what this predictor leaves: measured on these pairs
    torch.manual_seed(config.seed)
    model = prepare_run(run_dir, config, phase, resume, overwrite)
    if model is not None:  # phase 2 on a trained encoder-decoder: fresh phase-2 networks of this config
        fresh = DiffusionCTModel.build(config)
        model.predictor, model.config = fresh.predictor, config
        if phase == DIFFUSION_PHASE:
            model.unet = fresh.unet
    data = load_training_data(manifest, config.data.source_kernel, config.data.target_kernel,
                              config.data.validation_fraction, need_pairs=phase != AUTOENCODER, pairing=config.data.pairing)
    trainer = Trainer(config, run_dir, data, device, model)
    trainer.model.info.pop(MODEL_CARD, None)  # a card describes the trained model it came with (a donor's), not this one
    if phase != AUTOENCODER:
        hold_calibrated_filter(trainer.model, profiles)
    rank, _ = world_rank_and_size()
    record: dict = {**trainer.model.info.get("training", {}), **data.notes}
    phases = [AUTOENCODER, DIFFUSION_PHASE] if phase == ALL_PHASES else [phase]
    done = [AUTOENCODER] if phase in (DIFFUSION_PHASE, PREDICTOR_PHASE) else []
    for name in phases:
        start = time.perf_counter()
        history = trainer.train_autoencoder() if name == AUTOENCODER else trainer.train_diffusion()
        done.append(DIFFUSION_PHASE if name == PREDICTOR_PHASE else name)
        record[name] = {"seconds": round(time.perf_counter() - start, 1), "history": history[-20:]}
        if getattr(trainer, "learned_part", None) is not None:  # the predictor beside a calibrated filter: kept or not
            record[name]["learned_part"] = trainer.learned_part
        if rank == 0:
            save_model(trainer.model, run_dir, done, {"training": record, "manifest": str(manifest),
                                                      **trained_pixel_range(data)})
    return trainer.model


def init_distributed() -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False
