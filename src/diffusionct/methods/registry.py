"""Every method by its name: loading a model folder dispatches here."""

from __future__ import annotations

from pathlib import Path

import torch

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.methods import DIFFUSIONCT, METHODS
from diffusionct.methods.base import Method
from diffusionct.methods.classical import HistogramMethod, IdentityMethod, KernelFilterMethod
from diffusionct.methods.diffusionct import DiffusionCTMethod
from diffusionct.methods.networks import (AutoencoderMethod, CycleGANMethod, ImageDDPMMethod, Pix2PixMethod,
                                          ResidualCNNMethod)
from diffusionct.methods.store import CONFIG_NAME, read_model_meta

REGISTRY: dict[str, type[Method]] = {cls.name: cls for cls in (
    IdentityMethod, HistogramMethod, KernelFilterMethod, AutoencoderMethod, ResidualCNNMethod, Pix2PixMethod, CycleGANMethod,
    ImageDDPMMethod, DiffusionCTMethod)}
if tuple(REGISTRY) != METHODS:  # pragma: no cover - a developer error, caught by any import in the tests
    raise RuntimeError(f"the method names {METHODS} and the registry's classes {tuple(REGISTRY)} differ")


def load_method(folder: str | Path, device: torch.device = torch.device("cpu")) -> Method:
    """Load any method from its folder (the method name is in ``config.json``)."""
    folder = Path(folder)
    meta = read_model_meta(folder, require_autoencoder=False)
    name = meta.get("method", DIFFUSIONCT)
    config = RunConfig.from_saved(meta["config"], str(folder / CONFIG_NAME))
    if name not in REGISTRY:
        raise DiffusionCTError(f"{folder}: unknown method '{name}' in {CONFIG_NAME}; known: {', '.join(METHODS)}")
    return REGISTRY[name].load(folder, config, device, meta)  # meta: read and verified once
