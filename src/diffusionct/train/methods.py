"""Training any standardization method into its folder (``diffusionct train --method NAME``): DiffusionCT's phases
through the trainer, the kernel filter from pairs or profiles, each baseline through its regime.

The methods themselves (what inference loads) live in ``diffusionct.methods``, which never imports this package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusionct.config import ALL_PHASES, RunConfig
from diffusionct.methods import AUTOENCODER, CYCLEGAN, DIFFUSIONCT, HISTOGRAM, IDENTITY, KERNEL_FILTER, METHODS, PIX2PIX, RESIDUAL_CNN
from diffusionct.errors import DiffusionCTError
from diffusionct.methods.base import Method
from diffusionct.methods.classical import HistogramMethod, IdentityMethod, kernel_filter_method
from diffusionct.methods.diffusionct import DiffusionCTMethod
from diffusionct.methods.networks import AutoencoderMethod, CycleGANMethod, ImageDDPMMethod, Pix2PixMethod, ResidualCNNMethod
from diffusionct.train.data import load_training_data
from diffusionct.train.trainer import Trainer, overwrite_guard, prepare_run, train


def train_method(name: str, manifest: Path | None, run_dir: Path, config: RunConfig, device: torch.device,
                 resume: bool = False, overwrite: bool = False, phase: str = ALL_PHASES, profiles: tuple = ()) -> Method:
    """Train ``name`` on a manifest into ``run_dir`` (``diffusionct`` trains its phases, see trainer). ``kernel-filter``
    is calibrated on the manifest's same-scan pairs, or without a manifest made from the kernels' profiles (``profiles``:
    profile files, searched before the shipped ones)."""
    if name not in METHODS:
        raise DiffusionCTError(f"unknown method '{name}'; known methods: {', '.join(METHODS)}")
    config.check_training_steps(phase if name == DIFFUSIONCT else name)
    if name == KERNEL_FILTER:
        with overwrite_guard(run_dir, ALL_PHASES, resume, overwrite):
            prepare_run(run_dir, config, ALL_PHASES, resume, overwrite)  # an existing run folder needs --overwrite
            method = kernel_filter_method(config, device, manifest, profiles)
            method.save(Path(run_dir), {"manifest": str(manifest)} if manifest else None)
            return method
    if name == DIFFUSIONCT:
        model = train(manifest, run_dir, config, phase=phase, device=device, resume=resume, overwrite=overwrite,
                      profiles=profiles)
        return DiffusionCTMethod(config, device, model) if phase != AUTOENCODER else AutoencoderMethod(config, device, model)
    with overwrite_guard(run_dir, ALL_PHASES, resume, overwrite):
        return _train_baseline(name, manifest, Path(run_dir), config, device, resume, overwrite)


def _train_baseline(name: str, manifest: Path, run_dir: Path, config: RunConfig, device: torch.device, resume: bool,
                    overwrite: bool) -> Method:
    torch.manual_seed(config.seed)  # the networks' initial weights: the same seed gives the same model's bytes
    prepare_run(run_dir, config, ALL_PHASES, resume, overwrite)
    data = load_training_data(manifest, config.data.source_kernel, config.data.target_kernel,
                              config.data.validation_fraction, need_pairs=name != AUTOENCODER, pairing=config.data.pairing)
    if name == IDENTITY:
        method: Method = IdentityMethod(config, device)
    elif name == HISTOGRAM:
        method = HistogramMethod(config, device)
        if data.unpaired_target:  # without pairs: the real sets' distributions, not the synthesized pairs
            method.fit(*(np.concatenate([v.ravel() for v in images]) for images in (data.unpaired_source, data.unpaired_target)))
        else:
            method.fit(data.pairs.source, data.pairs.target)
    elif name == AUTOENCODER:
        trainer = Trainer(config, run_dir, data, device)
        trainer.train_autoencoder()
        method = AutoencoderMethod(config, device, trainer.model)
    elif name == RESIDUAL_CNN:
        method = ResidualCNNMethod(config, device, Trainer(config, run_dir, data, device).train_residual_cnn())
    elif name == PIX2PIX:
        method = Pix2PixMethod(config, device, Trainer(config, run_dir, data, device).train_pix2pix())
    elif name == CYCLEGAN:
        method = CycleGANMethod(config, device, Trainer(config, run_dir, data, device).train_cyclegan())
    else:
        method = ImageDDPMMethod(config, device, Trainer(config, run_dir, data, device).train_image_ddpm())
    method.save(Path(run_dir), {"manifest": str(manifest), **({"training": data.notes} if data.notes else {})})
    return method
