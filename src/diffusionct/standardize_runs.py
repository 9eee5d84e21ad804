"""The `standardize` command's runs: every series of a file, folder or tree, each with its model, resumable.

    run_standardize(Path("scans/"), Path("out/"), target_kernel="B70f")

Planning (one job per series, its model chosen from a library by kernel, target and pixel size), completion records
(a finished output is skipped when its record matches, anything else in the way is refused), one loaded model per
process, and the jobs run here or on a Dask cluster (`distributed.py`). The per-image API is `standardize.Standardizer`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from diffusionct.config import check_seed
from diffusionct.distributed import local_workers
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import check_output_apart
from diffusionct.io.records import read_record, remove_record, write_record
from diffusionct.methods.library import (ModelEntry, choose_model, default_model_dir, for_pixel_size, is_library,
                                      library_models, shipped_library)
from diffusionct.methods.store import CONFIG_NAME, model_weight_files, read_model_config
from diffusionct.standardize import Standardizer

log = logging.getLogger(__name__)


@dataclass
class SeriesResult:
    input: Path
    output: Path
    slices: int
    seconds: float = 0.0
    skipped: bool = False

    @property
    def seconds_per_slice(self) -> float:
        return self.seconds / max(self.slices, 1)


class SeriesInput(NamedTuple):
    """One series to standardize: where it is read and written, and what chooses its model."""

    source: Path
    target: Path
    series_uid: str | None
    kernel: str | None  # the series' ConvolutionKernel (None for an image file, which has none)
    pixel_mm: float | None  # in-plane pixel size (None: not in the header)


def _jobs(input_path: Path, output: Path, output_format: str, series_uid: str | None,
          pixel_mm: float | None = None) -> list[SeriesInput]:
    """One job per series: one series maps to ``output``, a tree to sub-folders. ``pixel_mm``: an image file's pixel
    size where its header has none (refused for DICOM, whose header always has one)."""
    from diffusionct.io.dicom import dicom_pixel_mm, kernel_name, read_header
    from diffusionct.io.image import image_pixel_mm, is_itk_image
    from diffusionct.io.scan import scan_folder

    if not input_path.exists():
        raise DiffusionCTError(f"{input_path}: input does not exist")
    if pixel_mm is not None and not is_itk_image(input_path):
        raise DiffusionCTError(f"{input_path}: --pixel-mm is for an image file whose header has no pixel size; "
                               "DICOM states its own (PixelSpacing): drop --pixel-mm")
    if input_path.is_file():
        if not is_itk_image(input_path):
            header = read_header(input_path)
            return [SeriesInput(input_path.parent, output, series_uid, kernel_name(header) or None,
                                dicom_pixel_mm(header, input_path))]
        if output_format == "dicom":
            raise DiffusionCTError(f"{input_path}: DICOM output needs a DICOM input (its metadata); use --format nifti")
        target = output if is_itk_image(output) else output / input_path.name
        return [SeriesInput(input_path, target, None, None, image_pixel_mm(input_path) or pixel_mm)]
    series = [s for s in scan_folder(input_path) if s.modality == "CT"]
    if series_uid is not None:
        series = [s for s in series if s.series_uid == series_uid]
    if not series:
        raise DiffusionCTError(f"{input_path}: no CT series found" + (f" with UID {series_uid}" if series_uid else ""))
    if len(series) == 1:
        target = output if output_format == "dicom" or is_itk_image(output) else output / "standardized.nii.gz"
        return [SeriesInput(Path(series[0].path), target, series[0].series_uid, series[0].kernel or None, series[0].pixel_mm)]
    jobs = []
    for info in series:
        relative = Path(info.path).relative_to(input_path) if Path(info.path) != input_path else Path(info.series_uid)
        target = output / relative
        jobs.append(SeriesInput(Path(info.path), target if output_format == "dicom" else target.with_suffix(".nii.gz"),
                                info.series_uid, info.kernel or None, info.pixel_mm))
    return jobs


def _model_per_series(jobs: list[SeriesInput], model_dir: Path | None, source_kernel: str | None,
                      target_kernel: str | None) -> list[Path]:
    """The model folder of each job: the one named, or, from a library (``--model`` of several models, or the
    shipped ones when ``--to`` is given), the one for the series' kernel, the target and the pixel size. Without
    either, the shipped gap from the series' kernel to the default gap's target (the default gap itself for a series
    of unknown kernel); a series already at that target is refused, not sharpened again."""
    default = None  # the shipped default gap, when neither a model nor a target is named
    if model_dir or target_kernel:
        folder = Path(model_dir) if model_dir else shipped_library()
        if not (target_kernel or is_library(folder)):
            return [folder] * len(jobs)
        models = library_models(folder)
    else:
        default = ModelEntry.read(default_model_dir())
        models, target_kernel = library_models(shipped_library()), default.target
    chosen = []
    for job in jobs:
        kernel = source_kernel or job.kernel
        entry = (for_pixel_size([m for m in models if m.gap == default.gap], job.pixel_mm) if default and not kernel
                 else choose_model(models, kernel, target_kernel, str(job.source), job.pixel_mm))
        log.info("%s (kernel %s, %s): model %s", job.source, kernel or "unknown",
                 f"{job.pixel_mm:.3f} mm pixels" if job.pixel_mm else "pixel size unknown", entry)
        if job.pixel_mm and not entry.trained_at(job.pixel_mm):
            log.warning("%s: pixels of %.3f mm, outside the %.2f-%.2f mm that model %s was trained on; its accuracy there "
                        "is not measured", job.source, job.pixel_mm, *entry.pixel_mm, entry.folder.name)
        chosen.append(entry.folder)
    return chosen


def model_fingerprint(folder: Path) -> str:
    """A short hash of a model folder's content, naming the model in outputs and UIDs: its weights (those it shares
    with its library too) and its config.json as read, so a model written in an earlier format and its rewrite in
    today's are one model (docs/decisions.md, ``fingerprint-of-what-is-read``)."""
    meta = read_model_config(folder) if (folder / CONFIG_NAME).is_file() else {}
    digest = hashlib.sha256()
    for path in model_weight_files(folder, meta):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    read = {key: value for key, value in meta.items() if key != "format_version"}
    digest.update(json.dumps(read, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:12]


def _finished_outputs(records: dict[Path, dict], overwrite: bool) -> set[Path]:
    """The targets that already hold this run's finished output (their completion record matches).

    Any other existing target (an empty folder, unrelated files, another model's or seed's output, a
    file without its record) is refused before any work unless ``overwrite`` replaces it (and then every
    target is written again)."""
    finished: set[Path] = set()
    if overwrite:
        return finished
    for target, expected in records.items():
        if not target.exists() and not target.is_symlink():
            continue
        record = read_record(target)
        if record is not None and all(record.get(key) == value for key, value in expected.items()):
            finished.add(target)
        else:
            why = "was written with other settings" if record is not None else "is not a finished output of diffusionct"
            raise DiffusionCTError(f"{target}: exists and {why}; pass --overwrite to replace it or choose another output")
    return finished


@dataclass(frozen=True)
class SeriesJob:
    """One series to standardize: everything a worker (this process or a Dask worker) needs, no loaded model."""

    source: Path
    target: Path
    series_uid: str | None
    model_dir: Path | None
    model_name: str
    device: str
    steps: int | None
    seed: int
    batch_size: int
    output_format: str
    strict: bool
    overwrite: bool
    record: dict
    torch_threads: int  # float sums may depend on the thread count: every worker uses the planner's choice
    source_kernel: str | None = None  # the input's kernel as the user gave it (--from), else the series' own
    temperature: float | None = None  # the sampler's start-noise scale (None for a method without a sampler)
    pixel_mm: float | None = None  # an image file's pixel size as the user gave it (--pixel-mm; its header has none)


_LOADED: dict[tuple, Standardizer] = {}  # per process: a worker loads each model once for all its series
MODELS_HELD = 4  # models held per process (a library's gaps; each a few MB)


def loaded_standardizer(model_dir: Path | None, device: str, fingerprint: str) -> Standardizer:
    """The model of ``model_dir`` as loaded earlier in this process, if its content (``fingerprint``) is the same."""
    key = (str(model_dir), device, fingerprint)
    if key not in _LOADED:
        if len(_LOADED) >= MODELS_HELD:
            del _LOADED[next(iter(_LOADED))]  # the longest held
        _LOADED[key] = Standardizer.load(model_dir, device)
    return _LOADED[key]


def run_standardize(input_path: Path, output: Path, model_dir: Path | None = None, steps: int | None = None,
                    seed: int = 0, device: str = "auto", batch_size: int = 4, output_format: str | None = None,
                    strict: bool = False, overwrite: bool = False, series_uid: str | None = None,
                    scheduler: str | None = None, target_kernel: str | None = None,
                    source_kernel: str | None = None, temperature: float | None = None,
                    pixel_mm: float | None = None) -> list[SeriesResult]:
    """Standardize every series under ``input_path``: in this process (each model loaded once), or with
    ``scheduler`` on a Dask cluster, one task per series (each worker loads a model once).

    ``model_dir``: a model folder, or a folder of model folders from which each series gets the one for its
    kernel (``source_kernel`` overrides the series' own) and ``target_kernel``; default: the shipped model,
    or with ``target_kernel`` the shipped model for that target. ``steps`` and ``temperature``: the sampler's
    (default: each model's). ``pixel_mm``: the pixel size of an image file whose header has none."""
    from diffusionct.io.image import is_itk_image

    input_path, output = Path(input_path), Path(output)
    check_seed(seed)
    Standardizer.check_temperature(temperature)
    if batch_size < 1:
        raise DiffusionCTError(f"--batch-size must be at least 1, got {batch_size}")
    if output_format is None:
        output_format = "nifti" if is_itk_image(input_path) or is_itk_image(output) else "dicom"
    jobs = _jobs(input_path, output, output_format, series_uid, pixel_mm)
    check_output_apart(output, [input_path, *(job[0] for job in jobs)])  # a DICOM file's series is its folder
    model_folders = _model_per_series(jobs, model_dir, source_kernel, target_kernel)
    import torch

    threads = torch.get_num_threads()  # local:N: the cores shared among the workers (see distributed.py)
    workers = local_workers(scheduler)
    threads = max(1, threads // workers) if workers else threads
    named = model_dir is not None or target_kernel is not None
    settings = {folder: _model_settings(folder, device, steps, temperature, named) for folder in dict.fromkeys(model_folders)}
    series_jobs = []
    for (source, target, uid, _, _), folder in zip(jobs, model_folders):
        name, model_steps, model_temperature, method = settings[folder]
        record = {"input": str(source.resolve()), "series_uid": uid, "model": name.split()[-1], "method": method,
                  "steps": model_steps, "seed": seed, "format": output_format}
        if model_temperature is not None:
            record["temperature"] = model_temperature
        series_jobs.append(SeriesJob(
            source, target, uid, folder, name, device, model_steps, seed, batch_size, output_format, strict, overwrite,
            record, threads, source_kernel, model_temperature, pixel_mm))
    finished = _finished_outputs({job.target: job.record for job in series_jobs}, overwrite)
    results = [SeriesResult(job.source, job.target, 0, skipped=True) for job in series_jobs if job.target in finished]
    todo = [job for job in series_jobs if job.target not in finished]
    for job in series_jobs:
        if job.target in finished:
            log.info("%s is finished (its record matches), skipped", job.target)
    if scheduler is not None and todo:
        from functools import partial

        from diffusionct.distributed import run_on_cluster

        results += run_on_cluster(todo, scheduler, partial(standardize_series, progress=False))
    else:
        results += [standardize_series(job) for job in todo]
    order = {job.target: i for i, job in enumerate(series_jobs)}
    return sorted(results, key=lambda r: order[r.output])


def _model_settings(folder: Path, device: str, steps: int | None, temperature: float | None,
                    named: bool) -> tuple[str, int | None, float | None, str]:
    """(name with content fingerprint, sampling steps, sampling temperature, method) of a model, its steps checked
    before any series is read; no steps nor temperature for a method without a sampler."""
    fingerprint = model_fingerprint(folder) if folder.is_dir() else "missing"
    name = f"{folder.name if named else 'default'} {fingerprint}"
    standardizer = loaded_standardizer(folder, device, name)
    if not standardizer.method.uses_steps:
        return name, None, None, standardizer.method.name
    sampler = standardizer.method.diffusion.config  # the method's own (the image DDPM's temperature is not the run's)
    steps = sampler.steps if steps is None else steps
    standardizer.check_steps(steps)
    temperature = sampler.temperature if temperature is None else temperature
    return name, steps, float(temperature), standardizer.method.name


def standardize_series(job: SeriesJob, progress: bool = True) -> SeriesResult:
    """Read, standardize and write one series (atomically, with its completion record)."""
    from tqdm import tqdm

    from diffusionct import __version__
    from diffusionct.io.dicom_writer import SeriesDescription, write_dicom_series
    from diffusionct.io.image import read_volume, write_nifti

    import torch

    if torch.get_num_threads() != job.torch_threads:
        torch.set_num_threads(job.torch_threads)
    standardizer = loaded_standardizer(job.model_dir, job.device, job.model_name)
    source, target, steps, seed = job.source, job.target, job.steps, job.seed
    volume = read_volume(source, job.series_uid, job.pixel_mm)
    start = time.perf_counter()
    try:
        warning = standardizer.check_kernel(volume, job.strict, job.source_kernel)
        if warning:
            log.warning("%s: %s", source, warning)
        with tqdm(total=volume.shape[0], desc=source.name[:30], unit="slice", disable=None if progress else True) as bar:
            result = standardizer.standardize(volume, steps=steps, seed=seed, batch_size=job.batch_size, progress=bar.update,
                                              temperature=job.temperature)
    except DiffusionCTError as exc:  # name the series the problem is with
        raise DiffusionCTError(f"{source}: {exc}") from None
    record = {**job.record, "slices": volume.shape[0], "diffusionct_version": __version__}
    if job.output_format == "nifti":
        remove_record(target)  # a crash between the image and its record leaves no stale record
        write_nifti(result, target, overwrite=job.overwrite)
        write_record(target, record)
    else:
        if not volume.headers:
            raise DiffusionCTError(f"{source}: DICOM output needs a DICOM input; use --format nifti")
        how = f"{steps} DDIM steps, temperature {job.temperature:g}, seed {seed}" if steps else "deterministic"
        derivation = (f"Standardized from {job.source_kernel or volume.kernel or 'unknown'} to {standardizer.output_kernel} kernel by "
                      f"diffusionct {__version__} ({standardizer.method.name} model {job.model_name}, {how})")
        # the UIDs follow the input, the model's content (not its folder name), the steps, the seed and the temperature
        uid_seed = "|".join([str(volume.headers[0].get("SOPInstanceUID", "")), str(volume.shape[0]), job.model_name,
                             str(steps), str(seed), *([] if job.temperature is None else [f"{job.temperature:g}"])])
        write_dicom_series(result, target, SeriesDescription(
            description=f"{volume.headers[0].get('SeriesDescription', '')} standardized"[-64:].strip(),
            kernel=standardizer.output_kernel, derivation=derivation,
            series_number=int(volume.headers[0].get("SeriesNumber", 0) or 0) + 1000), overwrite=job.overwrite,
            uid_seed=uid_seed, record=record)
    seconds = time.perf_counter() - start
    log.info("%s: %d slices in %.1f s (%.2f s/slice)", source, volume.shape[0], seconds, seconds / volume.shape[0])
    return SeriesResult(source, target, volume.shape[0], seconds)
