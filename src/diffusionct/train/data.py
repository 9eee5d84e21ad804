"""Training data from a manifest (``diffusionct scan`` or ``simulate``): slices, pairs and random crops."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from diffusionct.config import check_pairing
from diffusionct.errors import DiffusionCTError
from diffusionct.io.manifest import Manifest
from diffusionct.kernels.names import KernelSet
from diffusionct.io.volume import Volume
from diffusionct.kernels.transfer import estimate_transfer
from diffusionct.methods.library import TRAINED_PIXEL_MM

log = logging.getLogger(__name__)
BODY_HU = -500.0  # a crop must contain some tissue above this
MIN_BODY_FRACTION = 0.25
VolumeLoader = Callable[[str], Volume]  # a series path -> its volume, each read once per training set


@dataclass
class PairedSlices:
    """Aligned source (A) and target (B) slices ``(N, H, W)`` in HU, the case and pixel size (mm) of each slice."""

    source: np.ndarray
    target: np.ndarray
    cases: list[str]
    pixel_mm: np.ndarray  # (N,)


class PairCrops(NamedTuple):
    """A batch of aligned crops ``(B, 1, size, size)`` in HU and the pixel size of each ``(B,)``."""

    source: np.ndarray
    target: np.ndarray
    pixel_mm: np.ndarray


@dataclass
class TrainingData:
    images: list[np.ndarray]  # every series of every kernel, (slices, H, W) each (phase 1)
    pairs: PairedSlices  # (phase 2)
    validation_pairs: PairedSlices
    validation_images: list[np.ndarray]
    notes: dict = field(default_factory=dict)  # how the data was made (recorded in the model's config.json)
    unpaired_source: list[np.ndarray] = field(default_factory=list)  # the real sets, for methods that match
    unpaired_target: list[np.ndarray] = field(default_factory=list)  # distributions (histogram, CycleGAN)


def load_training_data(manifest_path: str | Path, source_kernel: str, target_kernel: str,
                       validation_fraction: float = 0.15, need_pairs: bool = True, pairing: str = "pairs") -> TrainingData:
    """Read the training set; split by case (study) into training and validation.

    ``pairing="pairs"``: same-scan pairs of the two kernels. ``"unpaired"``: the source and target sets are
    chosen by kernel (``MANUFACTURER:KERNEL``; several sources separated by commas), pairs are ignored, and
    pairs are synthesized from the target set with each source kernel's transfer (kernels/transfer.py).
    ``"mixed"``: both, UDA-CT's setting: the same-scan pairs where they exist, and synthesized pairs from every
    target image (validation on the real pairs when there are any)."""
    check_pairing(pairing)
    manifest = Manifest.read(manifest_path)
    load = _cached_volume_loader(manifest)  # one read of each series, shared by the paired and synthesized sets
    if pairing == "unpaired":
        return _unpaired_training_data(manifest, load, source_kernel, target_kernel, validation_fraction)
    paired = _paired_training_data(manifest, load, source_kernel, target_kernel, validation_fraction,
                                   need_pairs and pairing == "pairs")
    if pairing == "pairs":
        return paired
    synthesized = _unpaired_training_data(manifest, load, source_kernel, target_kernel, validation_fraction,
                                          _validation_cases(manifest.cases(), validation_fraction))
    real_pairs = len(paired.pairs.cases) + len(paired.validation_pairs.cases)
    log.info("training data (mixed): %d real and %d synthesized training slice pairs", len(paired.pairs.cases),
             len(synthesized.pairs.cases))
    validation = paired.validation_pairs if paired.validation_pairs.cases else synthesized.validation_pairs
    return TrainingData(paired.images, _concatenate(paired.pairs, synthesized.pairs), validation, paired.validation_images,
                        notes={**synthesized.notes, "pairing": "mixed", "real_pair_slices": real_pairs},
                        unpaired_source=synthesized.unpaired_source, unpaired_target=synthesized.unpaired_target)


def _paired_training_data(manifest: Manifest, load: VolumeLoader, source_kernel: str, target_kernel: str,
                          validation_fraction: float, need_pairs: bool) -> TrainingData:
    pairs = manifest.oriented_pairs(source_kernel, target_kernel)
    if need_pairs and not pairs:
        found = sorted({f"{a}<->{b}" for _, a, _, b in manifest.pairs})
        raise DiffusionCTError(
            f"{manifest.file}: no {source_kernel} -> {target_kernel} pairs (pairs found: {', '.join(found) or 'none'}); "
            "set data.source_kernel / data.target_kernel, give a manifest with same-scan pairs, or train without pairs "
            "(--set data.pairing=unpaired)")
    ct = [s for s in manifest.series if s.modality == "CT"]
    validation_cases = _validation_cases(manifest.cases(), validation_fraction)
    images, val_images = [], []
    for series in ct:
        (val_images if series.case in validation_cases else images).append(load(series.path).hu)
    train_pairs, val_pairs = _stack_pairs(), _stack_pairs()
    for path_a, path_b in pairs:
        a, b = load(path_a), load(path_b)
        study = manifest.case_of(path_a)
        _add_pair(val_pairs if study in validation_cases else train_pairs, a.hu, b.hu, study, a.pixel_mm)
    log.info("training data: %d series (%d validation), %d pairs", len(images), len(val_images), len(pairs))
    if not images:
        raise DiffusionCTError(f"{manifest.file}: no CT series to train on")
    return TrainingData(images, _finish(train_pairs), _finish(val_pairs), val_images or images[-1:])


TRANSFER_JITTER = (0.8, 1.0, 1.25)  # log-gain scales: the estimate's error measured across unpaired splits (docs/unpaired.md)


def _unpaired_training_data(manifest: Manifest, load: VolumeLoader, source_kernel: str, target_kernel: str,
                            validation_fraction: float, validation_cases: set[str] | None = None) -> TrainingData:
    target = KernelSet.parse(target_kernel)
    sources = KernelSet.parse_list(source_kernel)
    sets = {str(k): manifest.select(k) for k in [*sources, target]}
    empty = [name for name, entries in sets.items() if not entries]
    if empty:
        raise DiffusionCTError(f"{manifest.file}: no CT series of {', '.join(empty)} (kernels present: "
                               f"{', '.join(manifest.kernels()) or 'none'}); name the sets as KERNEL or MANUFACTURER:KERNEL")
    if validation_cases is None:
        validation_cases = _validation_cases(sorted({s.case for entries in sets.values() for s in entries}), validation_fraction)

    def volumes(entries, validation: bool):
        return [load(s.path) for s in entries if (s.case in validation_cases) == validation]

    target_train, target_val = volumes(sets[str(target)], False), volumes(sets[str(target)], True)
    if not target_train:
        raise DiffusionCTError(f"{manifest.file}: every {target} series fell into validation; add target series")
    transfers, source_images, val_images = {}, [], [v.hu for v in target_val]
    train_pairs, val_pairs = _stack_pairs(), _stack_pairs()
    for source in sources:
        source_train, source_val = volumes(sets[str(source)], False), volumes(sets[str(source)], True)
        transfer = estimate_transfer([(v.hu, v.spacing[0]) for v in source_train or source_val],
                                     [(v.hu, v.spacing[0]) for v in target_train])
        log.info("kernel transfer %s -> %s: gain %s at 0.1 0.2 0.3 0.4 cycles/mm (noise power ratio %.2f)", source, target,
                 " ".join(f"{g:.2f}" for g in transfer.gain(np.array([0.1, 0.2, 0.3, 0.4]))), transfer.noise_ratio)
        transfers[str(source)] = transfer
        source_images += [v.hu for v in source_train]
        val_images += [v.hu for v in source_val]
        for pairs, targets in ((train_pairs, target_train), (val_pairs, target_val)):
            for volume in targets:
                for scale in (TRANSFER_JITTER if pairs is train_pairs else (1.0,)):
                    _add_pair(pairs, transfer.scaled(scale).apply(volume.hu, volume.spacing[0]), volume.hu, str(source),
                              volume.pixel_mm)
    target_images = [v.hu for v in target_train]
    images = target_images + source_images
    log.info("training data (unpaired): %d series (%d validation), %d synthesized pairs", len(images), len(val_images),
             len(train_pairs["source"]))
    return TrainingData(images, _finish(train_pairs), _finish(val_pairs), val_images or images[-1:],
                        notes={"pairing": "unpaired", "kernel_transfer": {k: t.to_dict() for k, t in transfers.items()}},
                        unpaired_source=source_images, unpaired_target=target_images)


def trained_pixel_range(data: TrainingData) -> dict:
    """``{"trained_pixel_mm": [smallest, largest]}``, the pixel sizes of the training and validation pairs, for the
    model's config (a library chooses among a gap's models by it); empty without pairs."""
    sizes = np.concatenate([data.pairs.pixel_mm, data.validation_pairs.pixel_mm])
    return {TRAINED_PIXEL_MM: [round(float(sizes.min()), 4), round(float(sizes.max()), 4)]} if sizes.size else {}


def _validation_cases(cases: list[str], fraction: float) -> set[str]:
    n_val = int(round(fraction * len(cases))) if len(cases) > 1 else 0
    n_val = min(max(n_val, 1 if len(cases) > 2 else 0), len(cases) - 1)
    return set(cases[len(cases) - n_val:]) if n_val > 0 else set()


def _cached_volume_loader(manifest: Manifest) -> VolumeLoader:
    cache: dict[str, Volume] = {}

    def load(path: str) -> Volume:
        if path not in cache:
            cache[path] = manifest.read_volume(path)
        return cache[path]

    return load


def _add_pair(pairs: dict, source: np.ndarray, target: np.ndarray, case: str, pixel_mm: float) -> None:
    pairs["source"].append(source)
    pairs["target"].append(target)
    pairs["cases"] += [case] * source.shape[0]
    pairs["pixel_mm"] += [pixel_mm] * source.shape[0]


def _stack_pairs() -> dict:
    return {"source": [], "target": [], "cases": [], "pixel_mm": []}


def _concatenate(first: PairedSlices, second: PairedSlices) -> PairedSlices:
    """Both sets of pairs in one, mirror-padded to the larger slice size."""
    if not first.cases or not second.cases:
        return first if first.cases else second
    return _finish({"source": [first.source, second.source], "target": [first.target, second.target],
                    "cases": first.cases + second.cases, "pixel_mm": [*first.pixel_mm, *second.pixel_mm]})


def _finish(pairs: dict) -> PairedSlices:
    if not pairs["source"]:
        return PairedSlices(np.zeros((0, 1, 1), np.float32), np.zeros((0, 1, 1), np.float32), [], np.zeros(0, np.float32))
    rows = max(v.shape[1] for v in pairs["source"])
    cols = max(v.shape[2] for v in pairs["source"])
    return PairedSlices(np.concatenate([_mirror_pad(v, rows, cols) for v in pairs["source"]]),
                        np.concatenate([_mirror_pad(v, rows, cols) for v in pairs["target"]]), pairs["cases"],
                        np.asarray(pairs["pixel_mm"], np.float32))


def _mirror_pad(volume: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Series of other sizes (real crops around a tumour) stacked on one grid: mirrored, not air, at the
    edges, so that no crop shows an edge the scan did not have."""
    extra_rows, extra_cols = rows - volume.shape[1], cols - volume.shape[2]
    if not extra_rows and not extra_cols:
        return volume
    return np.pad(volume, ((0, 0), (0, extra_rows), (0, extra_cols)), mode="symmetric")


def _crop_origin(rng: np.random.Generator, image: np.ndarray, size: int) -> tuple[int, int]:
    """A crop position, retried until the crop holds enough body (texture lives in tissue)."""
    h, w = image.shape
    best, best_fraction = (0, 0), -1.0
    for _ in range(10):
        r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        fraction = float((image[r:r + size, c:c + size] > BODY_HU).mean())
        if fraction >= MIN_BODY_FRACTION:
            return r, c
        if fraction > best_fraction:
            best, best_fraction = (r, c), fraction
    return best


def _augment(rng: np.random.Generator, *crops: np.ndarray) -> list[np.ndarray]:
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for crop in crops:
        crop = np.rot90(crop, k)
        out.append(np.ascontiguousarray(crop[:, ::-1] if flip else crop))
    return out


def sample_image_crops(images: list[np.ndarray], batch: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(batch, 1, size, size)`` random crops of random slices of every series (phase 1)."""
    crops = []
    for _ in range(batch):
        series = images[int(rng.integers(0, len(images)))]
        slice_ = series[int(rng.integers(0, series.shape[0]))]
        r, c = _crop_origin(rng, slice_, min(size, *slice_.shape))
        crops.append(_augment(rng, slice_[r:r + size, c:c + size])[0])
    return np.stack(crops)[:, None].astype(np.float32)


def sample_pair_crops(pairs: PairedSlices, batch: int, size: int, rng: np.random.Generator) -> PairCrops:
    """Aligned crops of source and target slices (phase 2), with their pixel sizes."""
    a_crops, b_crops, indices = [], [], []
    for _ in range(batch):
        i = int(rng.integers(0, pairs.source.shape[0]))
        r, c = _crop_origin(rng, pairs.source[i], size)
        a, b = _augment(rng, pairs.source[i, r:r + size, c:c + size], pairs.target[i, r:r + size, c:c + size])
        a_crops.append(a)
        b_crops.append(b)
        indices.append(i)
    return PairCrops(np.stack(a_crops)[:, None].astype(np.float32), np.stack(b_crops)[:, None].astype(np.float32),
                     pairs.pixel_mm[indices].astype(np.float32))
