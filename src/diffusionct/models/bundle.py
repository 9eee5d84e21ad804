"""A trained DiffusionCT model on disk: ``config.json`` plus safetensors weights, loaded once and reused.

Layout of a model folder::

    config.json                 RunConfig, format version, phases trained, kernels, training record
    autoencoder.safetensors     encoder-decoder weights (+ latent_scale)
    unet.safetensors            EMA weights of the conditional latent U-Net (after phase 2)
    predictor.safetensors       weights of the refine mode's predictor (after phase 2): the EMA of the latent
                                predictor, or the image-space residual CNN

Nothing is unpickled: weights are safetensors, everything else is JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusionct import __version__
from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_file, read_json
from diffusionct.models.autoencoder import Autoencoder
from diffusionct.models.baselines import ResidualCNN
from diffusionct.models.latent_unet import ConditionalUNet, LatentPredictor

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
AUTOENCODER_NAME = "autoencoder.safetensors"
UNET_NAME = "unet.safetensors"
PREDICTOR_NAME = "predictor.safetensors"
WEIGHTS_DIGESTS = "weights_sha256"


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """Atomic safetensors write of a module's state dict (contiguous CPU tensors)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_output_file(path) as tmp:
        save_file(state, str(tmp), metadata={"diffusionct": __version__})


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, with a clear error for a missing or damaged one (never unpickled)."""
    if not Path(path).is_file():
        raise DiffusionCTError(f"{path}: weights file missing; the model folder is incomplete, retrain or re-copy it")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise DiffusionCTError(f"{path}: cannot read weights ({exc}); the model folder is corrupt, retrain or re-copy it") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model_config(folder: Path, meta: dict) -> None:
    """config.json of a model folder, written last: it records the SHA-256 of every weights file beside
    it, which loading verifies (a flipped bit in the weights would otherwise change every output)."""
    digests = {path.name: _sha256(path) for path in sorted(Path(folder).glob("*.safetensors"))}
    with atomic_output_file(Path(folder) / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps({**meta, WEIGHTS_DIGESTS: digests}, indent=2, sort_keys=True))


def _verify_digests(folder: Path, meta: dict) -> None:
    digests = meta.get(WEIGHTS_DIGESTS)
    if digests is None:  # written before checksums were recorded: nothing to verify
        return
    if not isinstance(digests, dict):
        raise DiffusionCTError(f"{folder / CONFIG_NAME}: corrupt {WEIGHTS_DIGESTS}; re-copy the model folder")
    for name, expected in digests.items():
        path = folder / name
        if not path.is_file():
            raise DiffusionCTError(f"{path}: weights file missing; the model folder is incomplete, retrain or re-copy it")
        if _sha256(path) != expected:
            raise DiffusionCTError(f"{path}: does not match the checksum recorded in {CONFIG_NAME} (damaged or changed "
                                   "after training); re-copy or retrain the model")


def load_weights(module: torch.nn.Module, path: Path) -> None:
    state = read_tensors(path)
    missing, unexpected = set(module.state_dict()) - set(state), set(state) - set(module.state_dict())
    if missing or unexpected:
        raise DiffusionCTError(
            f"{path}: weights do not match the model built from config.json ({len(missing)} missing, "
            f"{len(unexpected)} unexpected tensors, e.g. {sorted(missing | unexpected)[:2]}); config and weights are from different runs")
    shapes = [k for k, v in module.state_dict().items() if v.shape != state[k].shape]
    if shapes:
        raise DiffusionCTError(f"{path}: tensor shapes differ from config.json for {shapes[:3]}; config and weights do not match")
    module.load_state_dict(state)


@dataclass
class DiffusionCTModel:
    """The encoder-decoder and the latent U-Net with their configuration."""

    config: RunConfig
    autoencoder: Autoencoder
    unet: ConditionalUNet | None = None
    predictor: LatentPredictor | ResidualCNN | None = None  # the refine mode's conditional-mean estimate
    info: dict = field(default_factory=dict)

    @classmethod
    def build(cls, config: RunConfig) -> "DiffusionCTModel":
        latent, d = config.autoencoder.latent_channels, config.diffusion
        predictor: LatentPredictor | ResidualCNN | None = None
        if d.mode == "refine":
            predictor = (ResidualCNN(d.predictor_channels, d.predictor_layers) if d.predictor == "image"
                         else LatentPredictor(latent, d.predictor_channels, d.predictor_layers))
        return cls(config, Autoencoder(config.autoencoder), ConditionalUNet(config.unet, latent), predictor)

    def predicted_mean(self, hu: torch.Tensor, z_source: torch.Tensor) -> torch.Tensor | None:
        """The refine mode's estimate m of E[Z_B - Z_A | A]; None in the other modes.

        A latent predictor maps Z_A to m; the image-space one predicts the HU residual, so
        m = E(A + r(A)) - Z_A (exact with the space-to-depth encoder, whose latent is the image)."""
        if self.predictor is None:
            return None
        if isinstance(self.predictor, ResidualCNN):
            return self.autoencoder.encode(self.predictor.convert(hu)) - z_source
        return self.predictor(z_source)

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.autoencoder, self.unet, self.predictor) if m is not None]

    def to(self, device: torch.device) -> "DiffusionCTModel":
        for module in self._modules():
            module.to(device)
        return self

    def eval(self) -> "DiffusionCTModel":
        for module in self._modules():
            module.eval()
        return self

    @property
    def source_kernel(self) -> str:
        return self.config.data.source_kernel

    @property
    def target_kernel(self) -> str:
        return self.config.data.target_kernel

    def save(self, folder: Path, phases: list[str], extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.autoencoder, folder / AUTOENCODER_NAME)
        if "diffusion" in phases and self.unet is not None:
            save_weights(self.unet, folder / UNET_NAME)
            if self.predictor is not None:
                save_weights(self.predictor, folder / PREDICTOR_NAME)
        meta = {**self.info, **(extra or {}), "format_version": FORMAT_VERSION, "diffusionct_version": __version__,
                "phases": phases, "config": self.config.to_dict()}
        meta.pop(WEIGHTS_DIGESTS, None)
        write_model_config(folder, meta)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", need_diffusion: bool = True) -> "DiffusionCTModel":
        folder = Path(folder)
        meta = read_model_meta(folder)
        config = RunConfig.from_saved(meta["config"], f"{folder / CONFIG_NAME}")
        model = cls.build(config)
        model.info = {k: v for k, v in meta.items() if k != "config"}
        load_weights(model.autoencoder, folder / AUTOENCODER_NAME)
        if need_diffusion:
            if "diffusion" not in meta.get("phases", []) or not (folder / UNET_NAME).exists():
                raise DiffusionCTError(f"{folder}: the model has no trained diffusion phase; run `diffusionct train --phase diffusion`")
            load_weights(model.unet, folder / UNET_NAME)
            if model.predictor is not None:
                load_weights(model.predictor, folder / PREDICTOR_NAME)
        else:
            model.unet = model.predictor = None
        return model.to(torch.device(device)).eval()


def read_model_meta(folder: Path, require_autoencoder: bool = True) -> dict:
    if not folder.is_dir():
        raise DiffusionCTError(f"{folder}: model folder not found")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise DiffusionCTError(f"{folder}: not a DiffusionCT model folder (no {CONFIG_NAME}); give the folder that "
                               "`diffusionct train` wrote")
    meta = read_json(path, "model config")
    version = meta.get("format_version")
    if version == FORMAT_VERSION and not isinstance(meta.get("config"), dict):
        raise DiffusionCTError(f"{path}: corrupt model config: no 'config' section; re-copy or retrain the model")
    if version != FORMAT_VERSION:
        raise DiffusionCTError(
            f"{folder}: model format {version} was written by diffusionct {meta.get('diffusionct_version', '?')}; "
            f"this version ({__version__}) reads format {FORMAT_VERSION}: retrain or use a matching version")
    if require_autoencoder and not (folder / AUTOENCODER_NAME).is_file():
        raise DiffusionCTError(f"{folder}: {AUTOENCODER_NAME} is missing")
    _verify_digests(folder, meta)
    return meta
