"""Training data from a manifest (``diffusionct scan`` or ``simulate``): slices, pairs and random crops."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.io.dicom import read_dicom_series
from diffusionct.io.files import read_json

log = logging.getLogger(__name__)
BODY_HU = -500.0  # a crop must contain some tissue above this
MIN_BODY_FRACTION = 0.25


@dataclass
class PairedSlices:
    """Aligned source (A) and target (B) slices ``(N, H, W)`` in HU, and the case of each slice."""

    source: np.ndarray
    target: np.ndarray
    cases: list[str]


@dataclass
class TrainingData:
    images: list[np.ndarray]  # every series of every kernel, (slices, H, W) each (phase 1)
    pairs: PairedSlices  # (phase 2)
    validation_pairs: PairedSlices
    validation_images: list[np.ndarray]


def read_manifest(path: str | Path) -> tuple[dict, Path]:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise DiffusionCTError(f"{path}: manifest not found; make one with `diffusionct scan DIR -o manifest.json` "
                               "or `diffusionct simulate`")
    manifest = read_json(path, "manifest")
    if "series" not in manifest:
        raise DiffusionCTError(f"{path}: no 'series' list; not a diffusionct manifest")
    return manifest, path.parent


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _oriented_pairs(manifest: dict, source_kernel: str, target_kernel: str) -> list[tuple[str, str]]:
    pairs = []
    for pair in manifest.get("pairs", []):
        kernels = (pair["kernel_a"], pair["kernel_b"])
        if kernels == (source_kernel, target_kernel):
            pairs.append((pair["path_a"], pair["path_b"]))
        elif kernels == (target_kernel, source_kernel):
            pairs.append((pair["path_b"], pair["path_a"]))
    return pairs


def load_training_data(manifest_path: str | Path, source_kernel: str, target_kernel: str,
                       validation_fraction: float = 0.15, need_pairs: bool = True) -> TrainingData:
    """Read every series of a manifest; split by case (study) into training and validation."""
    manifest, root = read_manifest(manifest_path)
    pairs = _oriented_pairs(manifest, source_kernel, target_kernel)
    if need_pairs and not pairs:
        found = sorted({f"{p['kernel_a']}<->{p['kernel_b']}" for p in manifest.get("pairs", [])})
        raise DiffusionCTError(
            f"{manifest_path}: no {source_kernel} -> {target_kernel} pairs (pairs found: {', '.join(found) or 'none'}); "
            "set data.source_kernel / data.target_kernel or give a manifest with same-scan pairs")
    by_path = {s["path"]: s for s in manifest["series"]}
    studies = sorted({s["study_uid"] for s in manifest["series"]})
    n_val = int(round(validation_fraction * len(studies))) if len(studies) > 1 else 0
    n_val = min(max(n_val, 1 if len(studies) > 2 else 0), len(studies) - 1)
    validation_studies = set(studies[len(studies) - n_val:])
    cache: dict[str, np.ndarray] = {}

    def load(path: str) -> np.ndarray:
        if path not in cache:
            cache[path] = read_dicom_series(_resolve(root, path)).hu
        return cache[path]

    images, val_images = [], []
    for series in manifest["series"]:
        if series.get("modality") != "CT":
            continue
        (val_images if series["study_uid"] in validation_studies else images).append(load(series["path"]))
    train_pairs, val_pairs = _stack_pairs(), _stack_pairs()
    for path_a, path_b in pairs:
        a, b = load(path_a), load(path_b)
        study = by_path[path_a]["study_uid"] if path_a in by_path else path_a
        target = val_pairs if study in validation_studies else train_pairs
        target["source"].append(a)
        target["target"].append(b)
        target["cases"] += [study] * a.shape[0]
    log.info("training data: %d series (%d validation), %d pairs", len(images), len(val_images), len(pairs))
    if not images:
        raise DiffusionCTError(f"{manifest_path}: no CT series to train on")
    return TrainingData(images, _finish(train_pairs), _finish(val_pairs), val_images or images[-1:])


def _stack_pairs() -> dict:
    return {"source": [], "target": [], "cases": []}


def _finish(pairs: dict) -> PairedSlices:
    if not pairs["source"]:
        return PairedSlices(np.zeros((0, 1, 1), np.float32), np.zeros((0, 1, 1), np.float32), [])
    return PairedSlices(np.concatenate(pairs["source"]), np.concatenate(pairs["target"]), pairs["cases"])


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


def sample_pair_crops(pairs: PairedSlices, batch: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops of source and target slices (phase 2)."""
    a_crops, b_crops = [], []
    for _ in range(batch):
        i = int(rng.integers(0, pairs.source.shape[0]))
        r, c = _crop_origin(rng, pairs.source[i], size)
        a, b = _augment(rng, pairs.source[i, r:r + size, c:c + size], pairs.target[i, r:r + size, c:c + size])
        a_crops.append(a)
        b_crops.append(b)
    return np.stack(a_crops)[:, None].astype(np.float32), np.stack(b_crops)[:, None].astype(np.float32)
