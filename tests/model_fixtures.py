from pathlib import Path

import pytest

from diffusionct.config import RunConfig
from diffusionct.simulate.scanner import ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator

TINY_OVERRIDES = [
    "autoencoder.base_channels=8", "autoencoder.latent_channels=4", "autoencoder.decoder_channels=16",
    "unet.channels=[16,16]", "unet.attention_levels=[false,true]", "unet.num_head_channels=8", "unet.norm_num_groups=8",
    "phase1.steps=6", "phase1.batch_size=2", "phase1.crop=32", "phase1.validate_every=3", "phase1.checkpoint_every=3",
    "phase2.steps=6", "phase2.batch_size=2", "phase2.crop=32", "phase2.validate_every=3", "phase2.checkpoint_every=3",
    "baselines.residual_cnn_channels=8", "baselines.residual_cnn_layers=3", "baselines.residual_cnn.steps=6",
    "baselines.residual_cnn.crop=32", "baselines.residual_cnn.batch_size=2", "diffusion.steps=3",
    "baselines.pix2pix_channels=8", "baselines.pix2pix.steps=4", "baselines.pix2pix.crop=32", "baselines.pix2pix.batch_size=2",
    "baselines.cyclegan.steps=4", "baselines.cyclegan.crop=32", "baselines.cyclegan.batch_size=2",
    "baselines.ddpm_channels=[8,8]", "baselines.ddpm.steps=4", "baselines.ddpm.crop=32", "baselines.ddpm.batch_size=2",
    "diffusion.predictor_channels=8", "diffusion.predictor_layers=3", "diffusion.predictor_training.steps=4",
    "diffusion.predictor_training.crop=32", "diffusion.predictor_training.batch_size=2",
    "diffusion.predictor_training.validate_every=2", "diffusion.predictor_training.checkpoint_every=2",
]


def tiny_config(*extra: str) -> RunConfig:
    return RunConfig.load(overrides=[*TINY_OVERRIDES, *extra])


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Three simulated cases, 96 x 96 (the chest shrunk to fit), b30 and b70: a manifest with pairs."""
    out = tmp_path_factory.mktemp("data") / "sim"
    cfg = SimulationConfig(cases=3, thicknesses_mm=[2.0], slices=4, seed=5, n_tumours=2,
                           scanner=ScannerSettings(size=96, pixel_mm=2.0, n_views=128))
    return Simulator(cfg).run_phantoms(out)


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A DiffusionCT model trained for a few steps on the tiny data (SIM_B30 -> SIM_B70)."""
    from diffusionct.train.trainer import train

    folder = tmp_path_factory.mktemp("model") / "run"
    train(tiny_data, folder, tiny_config(), phase="all")
    return folder
