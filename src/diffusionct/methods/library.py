"""Several trained models in one folder, one per kernel gap, and the choice of the one for a series.

A model folder serves one gap (source kernel -> target kernel). A *library* is a folder whose sub-folders are model
folders; the package ships one (``data/models``). Its models share one encoder-decoder and one U-Net, stored once in
the library folder (:func:`share_weights`); each gap has its own predictor (and diffusion scale), which is what
conditions the shared networks on the kernel pair (docs/model.md says why, with numbers). ``standardize --to B50`` picks, per
series, the model whose target is B50 and whose source is the series' kernel (read from DICOM
ConvolutionKernel, or given with ``--from``). Kernels match by family (:func:`kernel_family`: ``B30f``,
``B30`` and the simulator's ``SIM_B30`` are one). A gap may have several models trained on different pixel sizes
(fields of view): a series gets the one trained on the narrowest range that holds its pixel size
(:func:`for_pixel_size`; docs/history/results-analytic-library.md, twelfth run, measured why).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.names import KernelSet, kernel_among, kernel_family
from diffusionct.methods.store import (AUTOENCODER_NAME, CONFIG_NAME, PREDICTOR_NAME, UNET_NAME, WEIGHTS_DIGESTS, file_sha256,
                                     model_weight_files, read_model_config, read_model_meta, weights_path, write_model_config)

SHARED_NETWORKS = (AUTOENCODER_NAME, UNET_NAME)  # what a library's gaps share; each keeps its predictor

MODEL_CARD = "model_card"  # config.json key: what the gap is for, what it was trained on and how it measured
CARD_FIELDS = ("kernels", "summary", "method", "training_data", "licence", "simulated", "real_pairs", "intended_use", "remake")
TRAINED_PIXEL_MM = "trained_pixel_mm"  # config.json key: [smallest, largest] pixel size of the training pairs (mm)
PIXEL_TOLERANCE = 0.005  # a series 0.5 % outside a model's training range counts as in it (spacing rounding)

DEFAULT_MODEL = "siemens-b30f-b70f"  # the paper's direction: a smooth (Br40-like) to a sharp (Bl64-like) kernel


def shipped_library() -> Path:
    """The models shipped in the package (Siemens B10f-B70f and Canon FC13/FC51 gaps, on their measured profiles)."""
    return Path(str(resources.files("diffusionct.data").joinpath("models")))


def default_model_dir() -> Path:
    """The model used when none is named: the shipped smooth -> sharp model."""
    return shipped_library() / DEFAULT_MODEL


@dataclass(frozen=True)
class ModelEntry:
    """A model folder and the gap it was trained for (read from its config.json, no weights loaded)."""

    folder: Path
    sources: tuple[str, ...]
    target: str
    pixel_mm: tuple[float, float] | None = None  # the pixel sizes its gap's network was trained on (None: not recorded)
    card: tuple[tuple[str, str], ...] = ()  # its model card's (field, text), in CARD_FIELDS order

    @classmethod
    def read(cls, folder: Path) -> "ModelEntry":
        meta = read_model_config(folder)
        data = RunConfig.from_saved(meta["config"], str(folder / CONFIG_NAME)).data
        if not data.target_kernel.strip() or not data.source_kernel.strip():
            raise DiffusionCTError(f"{folder / CONFIG_NAME}: names no source and target kernel; retrain or re-copy the model")
        sources = tuple(str(s) for s in KernelSet.parse_list(data.source_kernel))
        trained = meta.get(TRAINED_PIXEL_MM)
        pixel_mm = (float(trained[0]), float(trained[1])) if trained else None
        card = meta.get(MODEL_CARD, {})
        fields = tuple((k, card[k]) for k in CARD_FIELDS if k in card)
        return cls(folder, sources, data.target_kernel, pixel_mm, fields)

    def card_text(self) -> str:
        """The model card as lines of ``field: text`` (empty when the model has none)."""
        return "\n".join(f"{name.replace('_', ' ')}: {text}" for name, text in self.card)

    def trained_at(self, pixel_mm: float) -> bool:
        """Whether ``pixel_mm`` lies in the range the model was trained on (True when no range is recorded)."""
        return self.pixel_mm is None or self.pixel_mm[0] * (1 - PIXEL_TOLERANCE) <= pixel_mm <= self.pixel_mm[1] * (1 + PIXEL_TOLERANCE)

    @property
    def gap(self) -> tuple[tuple[str, ...], str]:
        """The kernel pair it serves (target by family): models with the same gap differ only in how they were trained."""
        return self.sources, kernel_family(self.target)

    def standardizes_from(self, kernel: str) -> bool:
        return kernel_among(kernel, self.sources)

    def targets(self, kernel: str) -> bool:
        return kernel_family(self.target) == kernel_family(kernel)

    def __str__(self) -> str:
        trained = f", pixels {self.pixel_mm[0]:.2f}-{self.pixel_mm[1]:.2f} mm" if self.pixel_mm else ""
        return f"{self.folder.name} ({','.join(self.sources)} -> {self.target}{trained})"


def is_library(folder: Path) -> bool:
    """A folder of model folders (not itself a model folder)."""
    return folder.is_dir() and not (folder / CONFIG_NAME).is_file() and any(folder.glob(f"*/{CONFIG_NAME}"))


def library_models(folder: Path) -> list[ModelEntry]:
    """The models of a library, or the one model of a model folder, in name order."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file():
        return [ModelEntry.read(folder)]
    if not is_library(folder):
        raise DiffusionCTError(f"{folder}: neither a model folder (no {CONFIG_NAME}) nor a folder of model folders")
    return [ModelEntry.read(sub.parent) for sub in sorted(folder.glob(f"*/{CONFIG_NAME}"))]


def choose_model(models: list[ModelEntry], source_kernel: str | None, target_kernel: str | None, what: str,
                 pixel_mm: float | None = None) -> ModelEntry:
    """The model for a series of ``source_kernel`` (None: unknown) to ``target_kernel`` (None: any target), of pixel
    size ``pixel_mm`` (None: unknown; it chooses among models of the same gap, :func:`for_pixel_size`).

    A model whose source is not the series' kernel is chosen only when it is the one model for the target
    (standardize then warns, or refuses with --strict, as for a single model). ``what`` names the series."""
    if source_kernel is not None and target_kernel is not None and kernel_family(source_kernel) == kernel_family(target_kernel):
        raise DiffusionCTError(f"{what}: its kernel {source_kernel} is already the target kernel {target_kernel}; nothing "
                               "to standardize (give --to another kernel, or leave this series out)")
    candidates = [m for m in models if target_kernel is None or m.targets(target_kernel)]
    if not candidates:
        targets = sorted({kernel_family(m.target) for m in models})
        raise DiffusionCTError(f"no model targets kernel {target_kernel}; the models target {', '.join(targets)}. "
                               "Train one (`diffusionct train`, docs/model.md) or choose another --to")
    if source_kernel is not None:
        matching = [m for m in candidates if m.standardizes_from(source_kernel)]
        if len(matching) == 1:
            return matching[0]
        if len(matching) > 1 and len({kernel_family(m.target) for m in matching}) > 1:
            raise DiffusionCTError(f"{what}: several models standardize {source_kernel}, to different kernels "
                                   f"({', '.join(map(str, matching))}); choose the target with --to")
        if matching:
            return for_pixel_size(matching, pixel_mm)  # one gap, several models
    if len({m.gap for m in candidates}) == 1:
        return for_pixel_size(candidates, pixel_mm)
    known = "unknown (no ConvolutionKernel; give it with --from)" if source_kernel is None else source_kernel
    raise DiffusionCTError(f"{what}: source kernel {known}; no single model fits among "
                           f"{', '.join(map(str, candidates))}: give --from KERNEL, --to KERNEL, or --model FOLDER")


def for_pixel_size(models: list[ModelEntry], pixel_mm: float | None) -> ModelEntry:
    """Among models of one gap, the one for slices of ``pixel_mm``: trained on the narrowest range that holds it,
    else on the range nearest to it (by ratio); the first by name when the pixel size is unknown or on a tie.

    A kernel is a filter in cycles/mm, but what the image holds beyond the Nyquist frequency of its pixels aliases
    differently at each pixel size: a predictor trained on 0.6-0.9 mm pixels serves 0.7 mm best and loses 4 points at
    0.977 mm, where one trained on 0.5-1.0 mm keeps them (docs/history/results-analytic-library.md, twelfth run)."""
    if pixel_mm is None:
        return models[0]

    def preference(model: ModelEntry) -> tuple[float, float]:
        if model.pixel_mm is None:
            return 0.0, math.inf  # trained on an unknown range: taken only before a model trained elsewhere
        low, high = model.pixel_mm
        outside = 0.0 if model.trained_at(pixel_mm) else abs(math.log(pixel_mm / (low if pixel_mm < low else high)))
        return outside, math.log(high / low)

    return min(models, key=preference)


def share_weights(library: Path) -> list[str]:
    """Store once, in the library folder, each weights file that two or more of its models hold byte for byte (the
    encoder-decoder and U-Net of models that share them); the models then find it there (``store.weights_path``),
    and loading verifies it against the checksum each model's config.json records. A file whose copies differ, that a
    model's config does not record, or whose name the library folder already holds stays where it is. Returns the names
    moved."""
    library = Path(library)
    if not is_library(library):
        raise DiffusionCTError(f"{library}: not a folder of model folders; share_weights works on a library")
    copies: dict[str, list[Path]] = {}
    for entry in library_models(library):
        for path in entry.folder.glob("*.safetensors"):
            copies.setdefault(path.name, []).append(path)
    moved = []
    for name, paths in sorted(copies.items()):
        if len(paths) < 2 or (library / name).exists():
            continue
        held = {file_sha256(path) for path in paths}
        if len(held) != 1 or {_recorded_digest(path.parent, name) for path in paths} != held:
            continue
        os.replace(paths[0], library / name)  # every model finds it there from now on; then drop the other copies
        for path in paths[1:]:
            path.unlink()
        moved.append(name)
    return moved


def _recorded_digest(folder: Path, name: str) -> str | None:
    """The SHA-256 of weights file ``name`` that the model in ``folder`` records in its config.json (None: none)."""
    return read_model_config(folder).get(WEIGHTS_DIGESTS, {}).get(name)


def shared_networks_model(library: Path) -> Path:
    """The first model (by name) of ``library`` that takes its encoder-decoder and U-Net from the files the library
    folder shares (what a new gap's predictor is trained beside)."""
    library = Path(library)
    if is_library(library):
        for entry in library_models(library):
            meta = read_model_config(entry.folder)
            if all(weights_path(entry.folder, name, meta) == library / name for name in SHARED_NETWORKS):
                return entry.folder
    raise DiffusionCTError(f"{library}: not a model library whose models share {' and '.join(SHARED_NETWORKS)} in the "
                           "library folder; give a folder inside a copy of the shipped library (`diffusionct info` "
                           "says where it is) or one that `share_weights` wrote")


def copy_model_out(folder: Path, out: Path) -> None:
    """A model of a library copied to ``out`` as a model folder of its own: its config and every weights file,
    the shared ones included (verified against the checksums its config records)."""
    meta = read_model_meta(Path(folder))
    Path(out).mkdir(parents=True)
    for path in model_weight_files(Path(folder), meta):
        shutil.copy2(path, Path(out) / path.name)
    shutil.copy2(Path(folder) / CONFIG_NAME, Path(out) / CONFIG_NAME)


def assemble_gap_model(run: Path, unet_run: Path, out: Path, unet_scale: bool = False) -> None:
    """``out``: ``run``'s model (its predictor and diffusion scale ``x0_scale``, or with ``unet_scale`` the U-Net
    model's) with ``unet_run``'s U-Net and diffusion settings; both must hold the same encoder-decoder."""
    meta, donor = read_model_meta(Path(run)), read_model_meta(Path(unet_run))
    # through weights_path: a model of an existing library (the shipped one) keeps its shared files in the library
    autoencoder = weights_path(run, AUTOENCODER_NAME, meta)
    if file_sha256(autoencoder) != file_sha256(weights_path(unet_run, AUTOENCODER_NAME, donor)):
        raise DiffusionCTError(f"{run}: its encoder-decoder differs from {unet_run}'s; the U-Net works in that one's latent space")
    Path(out).mkdir(parents=True)
    shutil.copy2(autoencoder, Path(out) / AUTOENCODER_NAME)
    shutil.copy2(weights_path(run, PREDICTOR_NAME, meta), Path(out) / PREDICTOR_NAME)
    shutil.copy2(weights_path(unet_run, UNET_NAME, donor), Path(out) / UNET_NAME)
    config, x0_scale = meta["config"], meta["config"]["diffusion"]["x0_scale"]
    config["unet"] = donor["config"]["unet"]
    # the diffusion and the sampler are the U-Net's; the predictor's settings are the run's own, as its weights are
    config["diffusion"] = {**donor["config"]["diffusion"], "predictor": config["diffusion"]["predictor"],
                           **({} if unet_scale else {"x0_scale": x0_scale})}
    data = donor["config"]["data"]  # a donor of a library may hold a U-Net trained on another gap: it says which
    meta["unet_trained_on"] = donor.get("unet_trained_on") or f"{data['source_kernel']} -> {data['target_kernel']}"
    meta.pop(WEIGHTS_DIGESTS, None)
    write_model_config(Path(out), meta)
