"""A new kernel gap for a model library: its predictor trained beside the library's shared encoder-decoder and U-Net.

A library's gaps share one encoder-decoder and one U-Net; each gap has its own predictor (the kernel pair's
conditional mean) and diffusion scale. docs/history/results-analytic-library.md (tenth run) measured that a U-Net trained on one gap serves
the others, so a gap costs its predictor alone: 1,000 steps, 2-7 minutes on a 2-core CPU (docs/benchmarks.md), 0.2 MB. The gap is
trained in a staging folder beside the library and moved in only when complete, so the library never lists a
half-trained gap; a run that fails is removed, unless it checkpointed (``--resume`` continues it).
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import torch

from diffusionct.config import PREDICTOR_PHASE, RunConfig, apply_override
from diffusionct.errors import DiffusionCTError
from diffusionct.methods.library import (SHARED_NETWORKS, assemble_gap_model, copy_model_out,
                                       shared_networks_model)
from diffusionct.methods.store import file_sha256, read_model_meta, read_tensors
from diffusionct.train.loop import has_checkpoint
from diffusionct.train.recipe import train

log = logging.getLogger(__name__)

# what a gap may set for itself: its data and its own predictor (width, depth, kernel filter, training: the section
# assemble_gap_model keeps the gap's); the rest (encoder-decoder, U-Net, diffusion, sampling, the predictor's space)
# is the library's
GAP_SECTIONS = ("data.", "diffusion.predictor.")
LIBRARY_KEYS = ("diffusion.predictor.space",)


def train_library_gap(manifest: Path, gap_dir: Path, overrides: list[str], device: torch.device,
                      resume: bool = False, overwrite: bool = False, profiles: tuple = ()) -> Path:
    """Train the predictor of the gap ``overrides`` name (``data.source_kernel=...``, ``data.target_kernel=...``)
    on ``manifest``'s pairs, beside the shared networks of the library ``gap_dir`` lies in; writes ``gap_dir``
    (config.json and predictor.safetensors) and returns it. ``profiles``: kernel profile files for a predictor whose
    filter is the calibrated one (``diffusion.predictor.kernel_filter_from=profiles``; default: the shipped profiles)."""
    gap_dir = Path(gap_dir)
    library = gap_dir.parent
    donor = shared_networks_model(library)
    if gap_dir.exists() and not overwrite:
        raise DiffusionCTError(f"{gap_dir}: exists; pass --overwrite to replace that gap, or give a new folder name")
    config = gap_config(read_model_meta(donor)["config"], overrides)
    staging = library.parent / f".{library.name}.{gap_dir.name}.partial"
    if not (resume and staging.is_dir()):
        shutil.rmtree(staging, ignore_errors=True)
        copy_model_out(donor, staging)  # the donor's networks; its predictor is replaced by a fresh one
    log.info("training the predictor of %s -> %s beside %s's shared networks (in %s)", config.data.source_kernel,
             config.data.target_kernel, donor.name, staging)
    try:
        train(manifest, staging, config, phase=PREDICTOR_PHASE, device=device, resume=resume, profiles=profiles)
    except BaseException:
        if has_checkpoint(staging):
            log.warning("the unfinished gap is kept in %s for --resume (delete it to start over)", staging)
        else:  # nothing trained yet: nothing worth leaving beside the library
            shutil.rmtree(staging, ignore_errors=True)
        raise
    _keep_shared_networks(staging, library)
    _move_into_library(staging, donor, gap_dir)
    return gap_dir


def _keep_shared_networks(staging: Path, library: Path) -> None:
    """The predictor phase leaves the shared networks as they were: check their tensors, and store the library's
    bytes (a file saved again may differ in its metadata)."""
    for name in SHARED_NETWORKS:
        kept, shared = read_tensors(staging / name), read_tensors(library / name)
        if kept.keys() != shared.keys() or not all(torch.equal(kept[k], shared[k]) for k in kept):
            raise DiffusionCTError(f"{staging / name}: changed in training; the gap cannot share the library's")
        shutil.copy2(library / name, staging / name)


def _move_into_library(staging: Path, donor: Path, gap_dir: Path) -> None:
    """The trained gap with the donor's U-Net, moved in complete; an old gap (``--overwrite``) is moved aside whole."""
    library = gap_dir.parent
    ready, replaced = staging.with_suffix(".ready"), staging.with_suffix(".replaced")
    shutil.rmtree(ready, ignore_errors=True)
    assemble_gap_model(staging, donor, ready)
    if gap_dir.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(gap_dir, replaced)
    os.replace(ready, gap_dir)  # a complete model folder with its own copies of the shared files ...
    for name in SHARED_NETWORKS:  # ... which it then takes from the library (its config records their checksums)
        if file_sha256(gap_dir / name) == file_sha256(library / name):
            (gap_dir / name).unlink()
    shutil.rmtree(staging)
    shutil.rmtree(replaced, ignore_errors=True)


def gap_config(donor_config: dict, overrides: list[str]) -> RunConfig:
    """The library model's config with the gap's own kernels, seed and predictor training (``overrides``)."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key != "seed" and (not key.startswith(GAP_SECTIONS) or key in LIBRARY_KEYS):
            raise DiffusionCTError(f"--set {key}: a library gap takes its networks and diffusion from the library; "
                                   "it sets only seed, data.* and diffusion.predictor.* but its space (its own predictor)")
    data = copy.deepcopy(donor_config)
    data["data"] = {**data.get("data", {}), "source_kernel": "", "target_kernel": ""}  # the gap names its own
    for item in overrides:
        apply_override(data, item)
    if not data["data"]["source_kernel"] or not data["data"]["target_kernel"]:
        raise DiffusionCTError("a library gap needs its kernels: give --from KERNEL and --to KERNEL")
    return RunConfig.from_saved(data, "the library model's config and --set")
