"""Training any standardization method into its folder (``diffusionct train --method NAME``): DiffusionCT's phases
through the trainer, the kernel filter from pairs or profiles, each baseline through its regime.

The methods themselves (what inference loads) live in ``diffusionct.methods``, which never imports this package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusionct.config import ALL_PHASES, RunConfig
from diffusionct.methods import (AUTOENCODER, CYCLEGAN, DDPM, DIFFUSIONCT, HISTOGRAM, IDENTITY, KERNEL_FILTER, METHODS, PIX2PIX,
                                 RESIDUAL_CNN)
from diffusionct.errors import DiffusionCTError
from diffusionct.methods.base import Method
from diffusionct.methods.classical import HistogramMethod, IdentityMethod, kernel_filter_method
from diffusionct.methods.diffusionct import DiffusionCTMethod
from diffusionct.methods.networks import AutoencoderMethod, CycleGANMethod, ImageDDPMMethod, Pix2PixMethod, ResidualCNNMethod
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.train.data import load_training_data
from diffusionct.train.gan import train_cyclegan, train_pix2pix
from diffusionct.train.loop import TrainingRun, world_rank_and_size
from diffusionct.train.recipe import overwrite_guard, prepare_run, train, train_encoder_decoder
from diffusionct.train.single_network import train_image_ddpm, train_residual_cnn


# each network baseline: the method that runs it and the function that trains its network
NETWORK_BASELINES = {RESIDUAL_CNN: (ResidualCNNMethod, train_residual_cnn), PIX2PIX: (Pix2PixMethod, train_pix2pix),
                     CYCLEGAN: (CycleGANMethod, train_cyclegan), DDPM: (ImageDDPMMethod, train_image_ddpm)}


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
        model = DiffusionCTModel.build(config).to(device)
        train_encoder_decoder(TrainingRun(config, run_dir, data, device), model)
        method = AutoencoderMethod(config, device, model)
    else:
        network_method, train_network = NETWORK_BASELINES[name]
        method = network_method(config, device, train_network(TrainingRun(config, run_dir, data, device)))
    if world_rank_and_size()[0] == 0:  # under torchrun every process holds the same weights; the first writes them
        method.save(Path(run_dir), {"manifest": str(manifest), **({"training": data.notes} if data.notes else {})})
    return method
