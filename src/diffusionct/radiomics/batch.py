"""Feature extraction for many tumours, in parallel processes, and for label maps."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from diffusionct.errors import DiffusionCTError
from diffusionct.radiomics import preprocess
from diffusionct.radiomics.features import (FeatureSettings, check_inputs, extract_features, interpolation_margin,
                                             mask_region)


@dataclass
class TumourJob:
    """One tumour: an image crop around it, its mask, the voxel spacing (x, y, z) and an identifier; where the crop
    lies in the whole image (an IBSI interpolation uses the whole image's grid) and, when asked for, the IBSI
    diagnostics measured on the whole image."""

    key: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    whole: tuple | None = None  # (the whole image's shape, the crop's offset), z, y, x
    diagnostics: dict | None = None


def tumour_jobs(key: str, image: np.ndarray, labels: np.ndarray, spacing, settings: FeatureSettings,
                min_voxels: int | None = None) -> list[TumourJob]:
    """One job per non-zero label of a label map (keys ``key:label``), cropped with the filter padding."""
    if image.shape != labels.shape:
        raise DiffusionCTError(f"{key}: mask shape {labels.shape} differs from image shape {image.shape}")
    pad = int(settings.setting.get("padDistance", 8))
    minimum = int(settings.setting.get("minimumROISize", 2)) if min_voxels is None else min_voxels
    jobs = []
    for label in np.unique(labels[labels > 0]).astype(int):
        mask = labels == label
        if mask.sum() < minimum:
            continue  # too small to describe (reported by the caller through the missing key)
        # the crop keeps every voxel an interpolation reads
        region = mask_region(mask, interpolation_margin(pad) if settings.setting.get("resampledPixelSpacing") else pad)
        diagnostics = None
        if "DIAG" in settings.classes:
            try:
                diagnostics = preprocess.diagnostics(*check_inputs(image, mask), spacing, settings.setting)
            except DiffusionCTError:
                pass  # the tumour's own run reports the error
        jobs.append(TumourJob(f"{key}:{label}", np.ascontiguousarray(image[region]), mask[region], tuple(spacing),
                              (image.shape, tuple(r.start for r in region)), diagnostics))
    return jobs


def _run(job: TumourJob, settings: FeatureSettings) -> tuple[str, dict[str, float] | str]:
    try:
        return job.key, extract_features(job.image, job.mask, job.spacing, settings, job.whole, job.diagnostics)
    except DiffusionCTError as exc:
        return job.key, str(exc)


def extract_many(jobs: list[TumourJob], settings: FeatureSettings | None = None, workers: int | None = None,
                 progress: bool = True, scheduler: str | None = None) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Features of every job; returns (features by key, error message by key). Order is the jobs' order. With
    ``scheduler`` (a Dask address or ``local:N``) the tumours are computed on that cluster, one task each."""
    settings = settings or FeatureSettings.load()
    if scheduler:
        from diffusionct.distributed import run_on_cluster

        return _split(jobs, dict(run_on_cluster(jobs, scheduler, functools.partial(_run, settings=settings), unit="tumours")))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results: dict[str, dict[str, float] | str] = {}
    bar = tqdm(total=len(jobs), desc="features", unit="tumour", disable=None if progress else True)
    if workers <= 1 or len(jobs) < 3:
        for job in jobs:
            key, value = _run(job, settings)
            results[key] = value
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_run, job, settings) for job in jobs]
            for future in cf.as_completed(futures):
                key, value = future.result()
                results[key] = value
                bar.update()
    bar.close()
    return _split(jobs, results)


def _split(jobs: list[TumourJob], results: dict) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    features = {j.key: results[j.key] for j in jobs if isinstance(results[j.key], dict)}
    errors = {j.key: results[j.key] for j in jobs if isinstance(results[j.key], str)}
    return features, errors
