import json
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
    "baselines.residual_cnn.channels=8", "baselines.residual_cnn.layers=3", "baselines.residual_cnn.training.steps=6",
    "baselines.residual_cnn.training.crop=32", "baselines.residual_cnn.training.batch_size=2", "diffusion.steps=3",
    "baselines.pix2pix.channels=8", "baselines.pix2pix.training.steps=4", "baselines.pix2pix.training.crop=32",
    "baselines.pix2pix.training.batch_size=2",
    "baselines.cyclegan.training.steps=4", "baselines.cyclegan.training.crop=32", "baselines.cyclegan.training.batch_size=2",
    "baselines.ddpm.channels=[8,8]", "baselines.ddpm.training.steps=4", "baselines.ddpm.training.crop=32", "baselines.ddpm.training.batch_size=2",
    "diffusion.predictor.channels=8", "diffusion.predictor.layers=3", "diffusion.predictor.training.steps=4",
    "diffusion.predictor.training.crop=32", "diffusion.predictor.training.batch_size=2",
    "diffusion.predictor.training.validate_every=2", "diffusion.predictor.training.checkpoint_every=2",
]


def tiny_config(*extra: str) -> RunConfig:
    return RunConfig.load(overrides=[*TINY_OVERRIDES, *extra])


FORMAT1_MODEL_CONFIG = Path(__file__).parent / "data" / "format1-config.json"  # siemens-b30f-b70f's, as shipped in format 1


def format1_config() -> dict:
    """A complete RunConfig dict of config format 1 (flat predictor_ and baseline-prefixed keys)."""
    return json.loads(FORMAT1_MODEL_CONFIG.read_text())["config"]


def as_format1(config: dict) -> dict:
    """A format-2 RunConfig dict written as format 1 wrote it (the inverse of config.migrate_format1's moves)."""
    from diffusionct.config import FORMAT1_KEYS, section_of

    config = json.loads(json.dumps(config))
    values = {}
    for old, new in FORMAT1_KEYS.items():
        section, name = section_of(config, new)
        values[old] = section.pop(name)
    for old, value in values.items():
        section, name = section_of(config, old, create=True)
        section[name] = value
    config["baselines"].pop("histogram")  # emptied: format 1 had no such section
    return config


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
    from diffusionct.train.recipe import train

    folder = tmp_path_factory.mktemp("model") / "run"
    train(tiny_data, folder, tiny_config(), phase="all")
    return folder
