"""A trained model on disk (every method's folder is read and written here): ``config.json`` plus safetensors weights, loaded once and reused.

Layout of a model folder::

    config.json                 RunConfig, format version, phases trained, kernels, training record
    autoencoder.safetensors     encoder-decoder weights (+ latent_scale)
    unet.safetensors            EMA weights of the conditional latent U-Net (after phase 2)
    predictor.safetensors       weights of the refine mode's predictor (after phase 2): the EMA of the latent
                                predictor, or the image-space residual CNN

A model folder inside a library (a folder of model folders, ``methods.library``) may leave out a weights file that
the library folder holds for several of its models (``library.share_weights``: one encoder-decoder and one
U-Net serving every gap); config.json records that file's SHA-256 all the same, and loading verifies it.

Nothing is unpickled: weights are safetensors, everything else is JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusionct import __version__
from diffusionct.config import CONFIG_FORMAT, RunConfig, migrate_format1
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_file, read_json
from diffusionct.kernels.profiles import KERNEL_PROFILES_KEY, KernelProfile
from diffusionct.models.diffusionct_model import DiffusionCTModel

FORMAT_VERSION = CONFIG_FORMAT  # config.json's layout; format 1 is read through migrate()
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_model_config(folder: Path, meta: dict) -> None:
    """config.json of a model folder, written last: it records the SHA-256 of every weights file beside
    it, which loading verifies (a flipped bit in the weights would otherwise change every output); the record stays
    when ``library.share_weights`` later moves a file to the library folder, and a config written again (a model
    card added) keeps the record of a file its library holds."""
    recorded = meta.get(WEIGHTS_DIGESTS) if isinstance(meta.get(WEIGHTS_DIGESTS), dict) else {}
    shared = {name: digest for name, digest in recorded.items() if not (Path(folder) / name).is_file()}
    digests = {**shared, **{path.name: file_sha256(path) for path in sorted(Path(folder).glob("*.safetensors"))}}
    with atomic_output_file(Path(folder) / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps({**meta, WEIGHTS_DIGESTS: digests}, indent=2, sort_keys=True))


def weights_path(folder: Path, name: str, meta: dict) -> Path:
    """Where the model in ``folder`` (config ``meta``) keeps its weights file ``name``: in its folder, or, when the
    folder lacks it and the config records its checksum, in the library folder above it (a file its models share)."""
    own = Path(folder) / name
    digests = meta.get(WEIGHTS_DIGESTS)
    if own.is_file() or not isinstance(digests, dict) or name not in digests:
        return own
    shared = own.parent.parent / name
    return shared if shared.is_file() else own


def model_weight_files(folder: Path, meta: dict) -> list[Path]:
    """Every weights file of the model in ``folder``: its own and those it shares with its library."""
    digests = meta.get(WEIGHTS_DIGESTS)
    names = {p.name for p in Path(folder).glob("*.safetensors")} | (set(digests) if isinstance(digests, dict) else set())
    return [weights_path(folder, name, meta) for name in sorted(names)]


def _verify_digests(folder: Path, meta: dict) -> None:
    digests = meta.get(WEIGHTS_DIGESTS)
    if digests is None:  # without the record, a damaged or swapped weights file would load and change every output
        raise DiffusionCTError(f"{folder / CONFIG_NAME}: records no {WEIGHTS_DIGESTS} (the checksums of its weights), so "
                               "damaged weights could not be told; re-copy the model folder or retrain it")
    for name, expected in digests.items():
        path = weights_path(folder, name, meta)
        if not path.is_file():
            raise DiffusionCTError(f"{path}: weights file missing; the model folder is incomplete (a model of a library "
                                   f"may share {name} with the library folder above it: copy the whole library), "
                                   "retrain or re-copy it")
        if file_sha256(path) != expected:
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


def save_model(model: DiffusionCTModel, folder: Path, phases: list[str], extra: dict | None = None) -> None:
    """Write a DiffusionCT model folder: the weights of the phases trained, then config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model.autoencoder, folder / AUTOENCODER_NAME)
    if "diffusion" in phases and model.unet is not None:
        save_weights(model.unet, folder / UNET_NAME)
        if model.predictor is not None:
            save_weights(model.predictor, folder / PREDICTOR_NAME)
    meta = {**model.info, **(extra or {}), "format_version": FORMAT_VERSION, "diffusionct_version": __version__,
            "phases": phases, "config": model.config.to_dict()}
    meta.pop(WEIGHTS_DIGESTS, None)
    write_model_config(folder, meta)


def load_model(folder: str | Path, device: str | torch.device = "cpu", need_diffusion: bool = True,
               meta: dict | None = None) -> DiffusionCTModel:
    """Read a DiffusionCT model folder (``meta``: its config.json when the caller has read and verified it)."""
    folder = Path(folder)
    meta = meta if meta is not None else read_model_meta(folder)
    if not weights_path(folder, AUTOENCODER_NAME, meta).is_file():
        raise DiffusionCTError(f"{folder}: {AUTOENCODER_NAME} is missing")
    config = RunConfig.from_saved(meta["config"], f"{folder / CONFIG_NAME}")
    model = DiffusionCTModel.build(config)
    model.info = {k: v for k, v in meta.items() if k != "config"}
    load_weights(model.autoencoder, weights_path(folder, AUTOENCODER_NAME, meta))
    if need_diffusion:
        if "diffusion" not in meta.get("phases", []) or not weights_path(folder, UNET_NAME, meta).exists():
            raise DiffusionCTError(f"{folder}: the model has no trained diffusion phase; run `diffusionct train --phase diffusion`")
        load_weights(model.unet, weights_path(folder, UNET_NAME, meta))
        if model.predictor is not None:
            load_weights(model.predictor, weights_path(folder, PREDICTOR_NAME, meta))
    else:
        model.unet = model.predictor = None
    return model.to(torch.device(device)).eval()


def read_model_meta(folder: Path, require_autoencoder: bool = True) -> dict:
    """A model folder's config.json, checked, with the checksums of its weights verified."""
    meta = read_model_config(folder)
    if require_autoencoder and not weights_path(folder, AUTOENCODER_NAME, meta).is_file():
        raise DiffusionCTError(f"{folder}: {AUTOENCODER_NAME} is missing")
    _verify_digests(folder, meta)
    return meta


def read_model_config(folder: Path) -> dict:
    """A model folder's config.json, checked against the schema (its weights not read: for listing and routing)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DiffusionCTError(f"{folder}: model folder not found")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise DiffusionCTError(f"{folder}: not a DiffusionCT model folder (no {CONFIG_NAME}); give the folder that "
                               "`diffusionct train` wrote")
    meta = read_json(path, "model config")
    check_model_meta(meta, path)  # a key of the wrong type is named first
    version = meta.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise DiffusionCTError(
            f"{folder}: model format {version} was written by diffusionct {meta.get('diffusionct_version', '?')}; "
            f"this version ({__version__}) reads formats 1-{FORMAT_VERSION}: retrain or use a matching version")
    if not isinstance(meta.get("config"), dict):
        raise DiffusionCTError(f"{path}: corrupt model config: no 'config' section; re-copy or retrain the model")
    return migrate(meta)


def migrate(meta: dict) -> dict:
    """A model's config.json of an earlier format as today's: the one place a format change is undone (the file
    itself is not rewritten, and the model's fingerprint, taken of what is read, stays the same)."""
    if meta["format_version"] == 1:
        meta = {**meta, "config": migrate_format1(meta["config"]), "format_version": FORMAT_VERSION}
    return meta


def _text(value) -> bool:
    return isinstance(value, str)


def _number_pair(value) -> bool:
    """[smallest, largest] pixel size in mm: two finite positive numbers in order."""
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value)
            and value[0] <= value[1])


def _text_mapping(value) -> bool:
    return isinstance(value, dict) and all(_text(k) and _text(v) for k, v in value.items())


def _digests(value) -> bool:
    return isinstance(value, dict) and all(_text(k) and _text(v) and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in value.items())


# config.json's top-level keys besides "config" (RunConfig checks that one): what each must be, and the check.
# Routing, loading and `info` read them, so a wrong type is refused here, naming the key, rather than
# failing later in whatever code first touches it (or being ignored).
MODEL_META_SCHEMA = {
    "format_version": ("the integer format number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "diffusionct_version": ("a version text", _text),
    "method": ("a method name (text)", _text),
    "phases": ("a list of phase names", lambda v: isinstance(v, list) and all(_text(p) for p in v)),
    "manifest": ("a path (text)", _text),
    "unet_trained_on": ("a text such as 'B30f -> B70f'", _text),
    "trained_pixel_mm": ("[smallest, largest] pixel size in mm, two positive numbers in order", _number_pair),
    "model_card": ("a mapping of field names to texts", _text_mapping),
    "training": ("a mapping (the training record)", lambda v: isinstance(v, dict)),
    "kernel_profiles": ("a mapping with a 'source' and a 'target' kernel profile",
                        lambda v: isinstance(v, dict) and set(v) == {"source", "target"}),
    WEIGHTS_DIGESTS: ("a mapping of weights file names to SHA-256 digests (64 hex digits)", _digests),
}


def check_model_meta(meta: dict, path: Path) -> None:
    """Each known key of a model's config.json of the type its readers expect (unknown keys are left to the
    method that wrote them); the kernel profiles are checked as profiles."""
    for key, (expected, valid) in MODEL_META_SCHEMA.items():
        if key in meta and not valid(meta[key]):
            shown = json.dumps(meta[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise DiffusionCTError(f"{path}: '{key}' must be {expected}, got {shown}; re-copy or retrain the model")
    for role, profile in meta.get(KERNEL_PROFILES_KEY, {}).items():
        KernelProfile.from_dict(profile, f"{path} ({KERNEL_PROFILES_KEY}.{role})")
