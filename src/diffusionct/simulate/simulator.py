"""Paired-kernel CT series from random chest phantoms or from a real CT volume.

Output layout (all paths in the manifest are relative to the output folder)::

    OUT/
      manifest.json                    series, same-scan pairs, tumour masks, settings
      case_000/3mm/sim_smooth/*.dcm    one DICOM series per case, thickness and kernel
      case_000/3mm/sim_sharp/*.dcm
      case_000/3mm/tumours.nii.gz      tumour label map (1..k) on that series' grid

The whole folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from scipy import ndimage
from tqdm import tqdm

from diffusionct import __version__
from diffusionct.config import check_seed
from diffusionct.errors import DiffusionCTError
from diffusionct.io.dicom_writer import SeriesDescription, StudyContext, write_dicom_series
from diffusionct.io.files import atomic_output_dir
from diffusionct.io.image import write_nifti
from diffusionct.io.scan import find_pairs, manifest_dict, scan_folder
from diffusionct.io.volume import Volume
from diffusionct.kernels.family import Kernel, get_kernel
from diffusionct.simulate.phantom import random_phantom
from diffusionct.simulate.scanner import Scanner, ScannerSettings
from diffusionct.units import HU_RANGE

log = logging.getLogger(__name__)

SUBPLANE_MM = 0.5  # spacing of the planes averaged across a slice's thickness
MANUFACTURER = "DiffusionCT simulator"


@dataclass
class DomainRandomization:
    """Per-case random acquisition settings, so that a model trained on the output generalizes.

    Attributes:
        mas: dose range (low, high) in mAs, drawn log-uniformly per case; None: the scanner's.
        pixel_mm: pixel-size range (low, high), drawn uniformly per case; the field of view is
            matrix size x pixel; None: the scanner's.
        kernel_jitter: each kernel's frequency axis is scaled by a factor drawn uniformly from
            1 +/- jitter per case (the DICOM kernel name stays); 0: none.
    """

    mas: tuple[float, float] | None = None
    pixel_mm: tuple[float, float] | None = None
    kernel_jitter: float = 0.0

    def validate(self) -> None:
        for name in ("mas", "pixel_mm"):
            bounds = getattr(self, name)
            if bounds is None:
                continue
            if len(bounds) != 2 or not all(math.isfinite(v) and v > 0 for v in bounds) or bounds[0] > bounds[1]:
                raise DiffusionCTError(f"randomized {name} range must be two positive numbers LOW,HIGH; got {bounds}")
        if not (math.isfinite(self.kernel_jitter) and 0 <= self.kernel_jitter < 0.5):
            raise DiffusionCTError(f"kernel jitter must be in [0, 0.5), got {self.kernel_jitter}")

    def draw(self, rng: np.random.Generator, settings: ScannerSettings, kernels: list[Kernel]) -> tuple[ScannerSettings, list[Kernel], dict]:
        """One case's scanner settings and kernels, and a record of what was drawn."""
        changes = {}
        if self.mas is not None:
            changes["mas"] = float(np.exp(rng.uniform(np.log(self.mas[0]), np.log(self.mas[1]))))
        if self.pixel_mm is not None:
            changes["pixel_mm"] = float(rng.uniform(*self.pixel_mm))
        stretch = {k.name: float(rng.uniform(1 - self.kernel_jitter, 1 + self.kernel_jitter)) if self.kernel_jitter else 1.0
                   for k in kernels}
        record = {**changes, "kernel_stretch": stretch}
        return replace(settings, **changes), [k.stretched(stretch[k.name]) if stretch[k.name] != 1.0 else k for k in kernels], record


@dataclass
class SimulationConfig:
    """What to simulate.

    Attributes:
        cases: number of random phantoms (ignored with a source CT, which is one case).
        kernels: kernel names, reconstructed from the same noisy sinogram.
        thicknesses_mm: slice thicknesses; each gives its own paired series per case.
        slices: slices per series (phantom mode).
        seed: makes the output byte-reproducible.
        scanner: acquisition settings (matrix size, pixel size, dose, views).
        n_tumours: tumours per phantom (None: 1 to 3 at random).
        denoise_sigma_px: Gaussian smoothing of a source CT before re-simulation (its own noise).
        randomize: per-case dose, pixel size and kernel jitter (phantom mode).
        rescan: which noise realization (0: the first scan). A rescan keeps the phantoms, the drawn doses,
            pixel sizes and kernels and the study, and draws new photon noise with new series UIDs: the
            same patient scanned again, as in a test-retest study.
    """

    cases: int = 1
    kernels: list[str] = field(default_factory=lambda: ["b30", "b70"])
    thicknesses_mm: list[float] = field(default_factory=lambda: [1.0])
    slices: int = 8
    seed: int = 0
    scanner: ScannerSettings = field(default_factory=ScannerSettings)
    n_tumours: int | None = None
    denoise_sigma_px: float = 0.7
    randomize: DomainRandomization = field(default_factory=DomainRandomization)
    rescan: int = 0
    profiles: list[str] = field(default_factory=list)  # kernel profile files searched before the shipped profiles

    def validate(self, from_ct: bool = False) -> None:
        check_seed(self.seed)
        if self.rescan < 0:
            raise DiffusionCTError(f"--rescan must be 0 (the first scan) or more, got {self.rescan}")
        self.randomize.validate()
        if not self.kernels:
            raise DiffusionCTError("no kernels given; pass e.g. --kernels b30,b70")
        resolved = [get_kernel(name, self.profiles).name for name in self.kernels]
        if len(set(resolved)) != len(resolved):
            raise DiffusionCTError(f"kernels repeat: {','.join(self.kernels)}")
        if not from_ct and self.cases < 1:
            raise DiffusionCTError(f"--cases must be at least 1, got {self.cases}")
        if self.slices < 1:
            raise DiffusionCTError(f"--slices must be at least 1, got {self.slices}")
        if not self.thicknesses_mm:
            raise DiffusionCTError("no slice thickness given; pass e.g. --thickness 1,3")
        largest_pixel = max([self.scanner.pixel_mm, *(self.randomize.pixel_mm or ())])
        for t in self.thicknesses_mm:
            if not math.isfinite(t):
                raise DiffusionCTError(f"slice thickness must be a finite number of mm, got {t}")
            if t < largest_pixel and not from_ct:
                raise DiffusionCTError(
                    f"slice thickness {t} mm is below the pixel spacing {largest_pixel} mm; use a thicker slice"
                )


def _grid(settings: ScannerSettings) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(settings.size) - (settings.size - 1) / 2.0) * settings.pixel_mm
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return x, y


def phantom_scale(settings: ScannerSettings, phantom) -> float:
    """1 when the field of view holds the whole chest with a 5 % margin, else the shrink factor that fits it.

    Small test fields of view (64-128 pixels) then still show the anatomy and the tumours, smaller; a large
    patient in a normal field of view is shrunk rather than truncated (truncation streaks are not modelled).
    """
    half_fov = settings.size * settings.pixel_mm / 2
    return min(1.0, 0.95 * half_fov / phantom.half_width_mm)


def render_slab(phantom, settings: ScannerSettings, thickness: float, slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thickness-averaged HU slices, tumour labels (majority over the slice) and slice centres (mm)."""
    x, y = _grid(settings)
    scale = phantom_scale(settings, phantom)
    x, y = x / scale, y / scale
    n_sub = max(1, int(math.ceil(thickness / SUBPLANE_MM)))
    centres = phantom.z_centre + (np.arange(slices) - (slices - 1) / 2.0) * thickness
    hu = np.empty((slices, settings.size, settings.size), dtype=np.float64)
    labels = np.zeros((slices, settings.size, settings.size), dtype=np.uint8)
    n_labels = len(phantom.tumours)
    for k, zc in enumerate(centres):
        planes = zc + ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * thickness
        votes = np.zeros((n_labels + 1, settings.size, settings.size), dtype=np.int32)
        acc = np.zeros((settings.size, settings.size))
        for z in planes:
            plane_hu, plane_labels = phantom.render(x, y, phantom.z_centre + (float(z) - phantom.z_centre) / scale)
            acc += plane_hu
            for label in range(1, n_labels + 1):
                votes[label] += plane_labels == label
        hu[k] = acc / n_sub
        if n_labels:
            best = votes[1:].argmax(0)
            labels[k] = np.where(votes[1:].max(0) * 2 >= n_sub, best + 1, 0)
    return hu, labels, centres


class Simulator:
    """Runs the scanner over phantoms or a source CT and writes paired series."""

    def __init__(self, config: SimulationConfig, device: str = "cpu"):
        self.config = config
        self.kernels = [get_kernel(k, config.profiles) for k in config.kernels]
        self.scanner = Scanner(config.scanner, device=device)

    def _rngs(self, case: int, thickness_index: int, slices: int) -> list[np.random.Generator]:
        # 17 + rescan: the first scan keeps the noise of every data set simulated before rescans existed
        noise_stream = 17 + self.config.rescan
        return [np.random.default_rng([self.config.seed, case, thickness_index, k, noise_stream]) for k in range(slices)]

    def _uid_seed(self, name: str) -> str:
        rescan = f"/rescan{self.config.rescan}" if self.config.rescan else ""
        return f"{self.config.seed}/{name}{rescan}"

    def _write_case(self, root: Path, case_name: str, study: StudyContext, uid_seed: str, images: dict[str, np.ndarray],
                    labels: np.ndarray | None, template: Volume, thickness: float, settings: ScannerSettings,
                    acquisition: dict | None = None) -> dict:
        folder = root / case_name / f"{thickness:g}mm"
        s = settings
        rescan = f" rescan {self.config.rescan}" if self.config.rescan else ""
        series = {}
        for kernel in self.kernels:
            volume = Volume(hu=images[kernel.name], spacing=template.spacing, origin=template.origin,
                            direction=template.direction, metadata={"slice_thickness": thickness})
            description = SeriesDescription(
                description=f"Simulated {kernel.name} {thickness:g} mm{rescan}", kernel=kernel.dicom_name,
                manufacturer=MANUFACTURER, model_name=f"diffusionct {__version__} parallel-beam",
                series_number=100 + 10 * self.config.thicknesses_mm.index(thickness) + self.kernels.index(kernel),
                extra={"KVP": s.kvp, "XRayTubeCurrent": int(round(s.mas)), "Exposure": int(round(s.mas))},
            )
            path = folder / f"sim_{kernel.name}"
            write_dicom_series(volume, path, description, study=study, uid_seed=f"{uid_seed}/{thickness}/{kernel.name}")
            series[kernel.name] = str(path.relative_to(root))
        entry = {"case": case_name, "thickness_mm": thickness, "series": series, "mask": None,
                 "acquisition": acquisition or {"mas": s.mas, "pixel_mm": s.pixel_mm}}
        if labels is not None:
            mask_path = folder / "tumours.nii.gz"
            write_nifti(template, mask_path, array=labels.astype(np.uint8))
            entry["mask"] = str(mask_path.relative_to(root))
        return entry

    def run_phantoms(self, out_dir: Path, overwrite: bool = False) -> Path:
        """Simulate ``config.cases`` random chests; returns the manifest path."""
        cfg = self.config
        cfg.validate()
        with atomic_output_dir(Path(out_dir), overwrite=overwrite) as root, \
                tqdm(total=cfg.cases * len(cfg.thicknesses_mm), desc="simulate", unit="series", disable=None) as bar:
            entries, cases = [], []
            for case in range(cfg.cases):
                phantom = random_phantom(hash_seed(cfg.seed, case), n_tumours=cfg.n_tumours)
                name = f"case_{case:03d}"
                study = _study(cfg.seed, name)
                cases.append({"case": name, "tumours": [
                    {"label": i + 1, "diameter_mm": round(tm.diameter_mm, 2), "shape": tm.shape, "texture": tm.texture}
                    for i, tm in enumerate(phantom.tumours)]})
                s, kernels, drawn = cfg.randomize.draw(np.random.default_rng([cfg.seed, case, 101]), cfg.scanner, self.kernels)
                scanner = self.scanner if s == cfg.scanner else Scanner(s, device=str(self.scanner.projector.device))
                half = (s.size - 1) / 2.0 * s.pixel_mm
                for t_index, thickness in enumerate(cfg.thicknesses_mm):
                    hu, labels, centres = render_slab(phantom, s, thickness, cfg.slices)
                    images = scanner.scan(hu, kernels, thickness, self._rngs(case, t_index, cfg.slices))
                    template = Volume(hu=hu, spacing=(s.pixel_mm, s.pixel_mm, thickness),
                                      origin=(-half, -half, float(centres[0])))
                    entries.append(self._write_case(root, name, study, self._uid_seed(name), images, labels, template,
                                                    thickness, s, drawn))
                    bar.update()
            _write_manifest(root, cfg, entries, cases)
        return Path(out_dir) / "manifest.json"

    def run_from_cts(self, sources: list[tuple[Volume, np.ndarray | None]], out_dir: Path, overwrite: bool = False) -> Path:
        """Re-simulate real CTs, one case each: their (smoothed) HU is the object, the kernels are simulated.

        The source's own kernel and noise carry into the result: the object is the source image after a
        ``denoise_sigma_px`` Gaussian, so its resolution caps what a sharp simulated kernel can show and its
        remaining noise is scanned again as if it were anatomy (docs/simulator.md).
        """
        cfg = self.config
        cfg.validate(from_ct=True)
        names: list[str] = []
        for volume, mask in sources:
            _check_source(volume, mask)
            # a new identity (the source's PatientID stays in the source), unique to the source for its UIDs
            origin = str(volume.metadata.get("series_uid") or volume.metadata.get("source") or "")
            names.append(f"ct_{len(names):03d}_{hashlib.sha256(origin.encode()).hexdigest()[:8]}")
        with atomic_output_dir(Path(out_dir), overwrite=overwrite) as root, \
                tqdm(total=len(sources) * len(cfg.thicknesses_mm), desc="re-simulate", unit="series", disable=None) as bar:
            entries, cases = [], []
            for (volume, mask), name in zip(sources, names):
                entries += self._resimulate(root, volume, mask, name, bar.update)
                cases.append({"case": name, "source": volume.metadata.get("source", "")})
            _write_manifest(root, cfg, entries, cases)
        return Path(out_dir) / "manifest.json"

    def _resimulate(self, root: Path, volume: Volume, mask: np.ndarray | None, name: str, done) -> list[dict]:
        """Every thickness of one source CT; its object and scanner are prepared once."""
        cfg = self.config
        dx, dy, dz = volume.spacing
        rows, cols = volume.shape[1:]
        size = int(max(rows, cols, 16)) + 2 * RESIMULATION_MARGIN_PX
        size += size % 2
        settings = ScannerSettings(**{**asdict(cfg.scanner), "size": size, "pixel_mm": dx})
        scanner = Scanner(settings, device=str(self.scanner.projector.device))
        obj = np.clip(volume.hu.astype(np.float64), *HU_RANGE)
        if cfg.denoise_sigma_px > 0:
            obj = ndimage.gaussian_filter(obj, sigma=(0, cfg.denoise_sigma_px, cfg.denoise_sigma_px))
        top, left = (size - rows) // 2, (size - cols) // 2
        case = int(np.random.default_rng([cfg.seed, *name.encode()]).integers(0, 2**31 - 1))
        study = _study(cfg.seed, name)
        entries = []
        for t_index, thickness in enumerate(cfg.thicknesses_mm):
            group = int(round(thickness / dz))
            if group < 1 or abs(group * dz - thickness) > 0.25 * dz:
                raise DiffusionCTError(
                    f"slice thickness {thickness} mm is not a multiple of the source's {dz:.3f} mm slice spacing"
                )
            n_out = volume.shape[0] // group
            if n_out < 1:
                raise DiffusionCTError(f"the source has {volume.shape[0]} slices, fewer than one {thickness} mm slice")
            slab = obj[: n_out * group].reshape(n_out, group, rows, cols).mean(1)
            padded = _continued_to_air(slab, top, left, size)
            images = scanner.scan(padded, self.kernels, group * dz, self._rngs(case, t_index, n_out))
            images = {k: v[:, top:top + rows, left:left + cols] for k, v in images.items()}
            origin = volume.index_to_patient() @ np.array([0, 0, (group - 1) / 2.0, 1.0])
            template = Volume(hu=slab, spacing=(dx, dy, group * dz), origin=tuple(origin[:3]), direction=volume.direction)
            labels = None
            if mask is not None:
                labels = (mask[: n_out * group].reshape(n_out, group, rows, cols).mean(1) >= 0.5).astype(np.uint8)
            entries.append(self._write_case(root, name, study, self._uid_seed(name), images, labels, template,
                                            thickness, settings))
            done()
        return entries


def _check_source(volume: Volume, mask: np.ndarray | None) -> None:
    source = volume.metadata.get("source", "the source CT")
    dx, dy, _ = volume.spacing
    if abs(dx - dy) > 1e-3:
        raise DiffusionCTError(f"{source}: re-simulation needs square pixels, the source has {dx} x {dy} mm")
    if not np.isfinite(volume.hu).all():
        raise DiffusionCTError(f"{source}: {int((~np.isfinite(volume.hu)).sum())} voxels are NaN or infinite; "
                               "repair or crop the image before re-simulating it")
    if mask is not None and mask.shape != volume.shape:
        raise DiffusionCTError(f"{source}: mask shape {mask.shape} differs from the CT's {volume.shape}")


RESIMULATION_MARGIN_PX = 32  # the source continued beyond its borders, fading to air (about a sharp kernel's reach)


def _continued_to_air(slab: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``slab`` ``(N, rows, cols)`` at (top, left) of a ``size`` x ``size`` grid, mirrored beyond its borders and faded
    to air (-1000 HU) over ``RESIMULATION_MARGIN_PX`` pixels with a raised cosine.

    A source cropped from a larger CT (a region around a tumour) ends in tissue; set into air, its border would be
    scanned as a tissue-air edge that the patient does not have, and every kernel would ring on it differently (on
    the six STS crops the b30 and b70 series differed by 200-500 HU RMS along the border and 5 HU inside). A source
    whose border is air is continued in air, as before."""
    rows, cols = slab.shape[1:]
    pads = ((0, 0), (top, size - rows - top), (left, size - cols - left))
    mirrored = np.pad(slab, pads, mode="symmetric")
    distance = np.maximum(_outside_distance(size, top, rows)[:, None], _outside_distance(size, left, cols)[None, :])
    fade = 0.5 * (1 + np.cos(np.pi * np.clip(distance / RESIMULATION_MARGIN_PX, 0, 1)))
    return -1000.0 + (mirrored + 1000.0) * fade


def _outside_distance(size: int, start: int, length: int) -> np.ndarray:
    """Per grid index, how many pixels it lies outside [start, start + length) (0 inside)."""
    index = np.arange(size)
    return np.maximum(np.maximum(start - index, index - (start + length - 1)), 0).astype(np.float64)


def hash_seed(seed: int, case: int) -> int:
    return int(np.random.default_rng([seed, case]).integers(0, 2**31 - 1))


def _study(seed: int, name: str) -> StudyContext:
    return StudyContext(
        patient_id=f"SIM_{seed}_{name}"[:64], patient_name=f"Simulated^{name}",
        study_uid=generate_uid(entropy_srcs=[str(seed), name, "study"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[str(seed), name, "frame"]),
        study_description="DiffusionCT simulated acquisition",
    )


def _write_manifest(root: Path, cfg: SimulationConfig, entries: list[dict], cases: list[dict]) -> None:
    series = scan_folder(root)
    for info in series:
        info.path = str(Path(info.path).relative_to(root))
    pairs = find_pairs(series)
    manifest = manifest_dict(series, pairs)
    manifest.update({
        "generator": f"diffusionct {__version__} simulate",
        "config": asdict(cfg),
        "acquisitions": entries,
        "cases": cases,
        "masks": {e["series"][k]: e["mask"] for e in entries for k in e["series"] if e["mask"]},
    })
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
