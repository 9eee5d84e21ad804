"""Kernel profiles: a reconstruction kernel as measured data, not as a formula in code.

A profile is a kernel's window W(f) (f in cycles/mm, W(0) = 1): the factor the kernel puts on the ramp filter of
filtered back-projection. Because back-projection is linear, two reconstructions of one scan differ by the ratio
of their windows, so a pair of profiles is also the calibrated linear filter between two kernels
(:func:`transfer_gain`), and the simulator reconstructs with any profile's window.

Each profile says where it came from (``provenance``), at which pixel size it was measured (``pixel_mm``; what a
kernel passes beyond that pixel's Nyquist frequency aliases back, so the measured curve is the kernel as seen at
that pixel size), up to which frequency it was measured (``measured_up_to``; beyond, it is extrapolated), the
spread of its measurement (``spread``, the standard deviation of log W per frequency) and the white noise floor of
the stored images (``noise_floor_hu2_mm2``: real DICOM stores integers after the vendor's own processing, so a very
smooth kernel's spectrum flattens at high frequency, as B10f's does above 0.6 cycles/mm).

A profile file (``diffusionct calibrate`` writes one; ``simulate``, ``train`` and the ``kernel-filter`` method
read them) is JSON: ``{"format": "diffusionct-kernel-profiles", "version": 1, "profiles": [...]}``. The shipped
profiles (``kernels/data/*.json``) are Siemens B10f-B70f, Canon FC13 / FC51 and GE SOFT / STANDARD (unpaired); the
commands that remake them are in ``docs/kernels.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.names import kernel_family

FORMAT = "diffusionct-kernel-profiles"
VERSION = 1
MAX_GAIN = 40.0  # a transfer is clipped to [1/40, 40]: beyond, it would amplify what the source holds no signal of
SHIPPED = Path(__file__).with_name("data")


class UnknownProfile(DiffusionCTError):
    """No profile (shipped or in the files given) answers to a kernel name."""


@dataclass(frozen=True)
class KernelProfile:
    """One kernel's measured window.

    Attributes:
        name: the kernel's own name (``B30f``, ``FC13``, ``STANDARD``).
        vendor: its manufacturer (``Siemens``, ``Canon``, ``GE``; matched by its beginning).
        frequencies: cycles/mm, ascending, from 0.
        window: W at each frequency; W(0) = 1.
        pixel_mm: the pixel size the window was measured at.
        measured_up_to: cycles/mm; the window beyond it is extrapolated.
        provenance: what it was measured on and how.
        aliases: other names it answers to.
        spread: standard deviation of log W per frequency (empty: not measured).
        noise_floor_hu2_mm2: white noise power of the stored images (0: none).
    """

    name: str
    vendor: str
    frequencies: tuple[float, ...]
    window: tuple[float, ...]
    pixel_mm: float
    measured_up_to: float
    provenance: str
    aliases: tuple[str, ...] = ()
    spread: tuple[float, ...] = ()
    noise_floor_hu2_mm2: float = 0.0
    source: str = field(default="", compare=False)  # the file it was read from, for messages

    def __post_init__(self):
        where = f"{self.source}: " if self.source else ""
        f, w = np.asarray(self.frequencies, float), np.asarray(self.window, float)
        if not self.name.strip():
            raise DiffusionCTError(f"{where}a kernel profile has no name")
        if f.ndim != 1 or len(f) < 2 or len(f) != len(w):
            raise DiffusionCTError(f"{where}profile {self.name}: frequencies and window must be two lists of one length (>= 2)")
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(w))) or f[0] != 0 or np.any(np.diff(f) <= 0):
            raise DiffusionCTError(f"{where}profile {self.name}: frequencies must be finite, ascending and start at 0")
        if np.any(w <= 0) or not math.isclose(w[0], 1.0, rel_tol=1e-6):
            raise DiffusionCTError(f"{where}profile {self.name}: the window must be positive with W(0) = 1")
        if self.spread and len(self.spread) != len(f):
            raise DiffusionCTError(f"{where}profile {self.name}: spread must have one value per frequency")
        for label, value in (("pixel_mm", self.pixel_mm), ("measured_up_to", self.measured_up_to)):
            if not (math.isfinite(value) and value > 0):
                raise DiffusionCTError(f"{where}profile {self.name}: {label} must be a positive number, got {value}")
        if not (math.isfinite(self.noise_floor_hu2_mm2) and self.noise_floor_hu2_mm2 >= 0):
            raise DiffusionCTError(f"{where}profile {self.name}: noise_floor_hu2_mm2 must be >= 0")

    @property
    def label(self) -> str:
        return f"{self.vendor} {self.name}".strip()

    def answers_to(self, name: str) -> bool:
        """Whether a kernel named ``name`` (``B30F``, ``SIM_B30F``, ``GE:STANDARD``) is this profile's kernel."""
        vendor, _, kernel = name.rpartition(":")
        if vendor and not self.vendor.upper().startswith(vendor.strip().upper()):
            return False
        return kernel_family(kernel) in {kernel_family(n) for n in (self.name, *self.aliases)}

    def window_at(self, frequency: np.ndarray) -> np.ndarray:
        """W at ``frequency`` cycles/mm: log-linear between the tabulated points, the last value held beyond."""
        log_w = np.interp(np.abs(np.asarray(frequency, float)), self.frequencies, np.log(self.window))
        return np.exp(log_w)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("source")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "") -> "KernelProfile":
        if not isinstance(data, dict):
            raise DiffusionCTError(f"{source}: a kernel profile must be a JSON object")
        known = {f for f in cls.__dataclass_fields__ if f != "source"}
        unknown = sorted(set(data) - known)
        missing = sorted({"name", "vendor", "frequencies", "window", "pixel_mm", "measured_up_to", "provenance"} - set(data))
        if unknown or missing:
            raise DiffusionCTError(f"{source}: kernel profile {data.get('name', '?')}: "
                                   + (f"unknown keys {unknown}" if unknown else f"missing keys {missing}"))
        texts = [k for k in ("name", "vendor", "provenance") if not isinstance(data[k], str)]
        aliases = data.get("aliases", [])
        if texts or not (isinstance(aliases, (list, tuple)) and all(isinstance(a, str) for a in aliases)):
            raise DiffusionCTError(f"{source}: kernel profile {data.get('name', '?')}: "
                                   f"{', '.join(texts) or 'aliases'} must be text")
        try:
            values = {k: tuple(float(x) for x in v) if k in ("frequencies", "window", "spread") else v for k, v in data.items()}
            values["aliases"] = tuple(aliases)
            values["name"], values["vendor"] = str(data["name"]), str(data["vendor"])
            values["pixel_mm"], values["measured_up_to"] = float(data["pixel_mm"]), float(data["measured_up_to"])
            values["noise_floor_hu2_mm2"] = float(data.get("noise_floor_hu2_mm2", 0.0))
        except (TypeError, ValueError):
            raise DiffusionCTError(f"{source}: kernel profile {data.get('name', '?')}: a value is not a number "
                                   "(frequencies, window, spread, pixel_mm, measured_up_to, noise_floor_hu2_mm2)") from None
        return cls(**values, source=source)


def read_profiles(path: str | Path) -> list[KernelProfile]:
    """The profiles of a profile file (one-line errors for a missing, damaged or foreign file)."""
    from diffusionct.io.files import read_json

    path = Path(path)
    data = read_json(path, "kernel profile file")
    if data.get("format") != FORMAT:
        raise DiffusionCTError(f"{path}: not a kernel profile file (expected \"format\": \"{FORMAT}\"); "
                               "make one with `diffusionct calibrate`")
    if data.get("version") != VERSION:
        raise DiffusionCTError(f"{path}: kernel profile format version {data.get('version')} is not {VERSION}")
    profiles = data.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        raise DiffusionCTError(f"{path}: the file holds no profiles")
    return [KernelProfile.from_dict(p, str(path)) for p in profiles]


def profiles_document(profiles: list[KernelProfile], **extra) -> str:
    """A profile file's text (what :func:`read_profiles` reads back)."""
    return json.dumps({"format": FORMAT, "version": VERSION, **extra, "profiles": [p.to_dict() for p in profiles]}, indent=1)


@lru_cache(maxsize=1)
def _shipped() -> tuple[KernelProfile, ...]:
    return tuple(p for path in sorted(SHIPPED.glob("*.json")) for p in read_profiles(path))


def shipped_profiles() -> list[KernelProfile]:
    """Every profile shipped with the package."""
    return list(_shipped())


KERNEL_PROFILES_KEY = "kernel_profiles"  # config.json: {"source": profile, "target": profile} of a model made from them


def find_profile(name: str, files: list[str | Path] | tuple = ()) -> KernelProfile:
    """The profile a kernel name means: from ``files`` first (a user's own calibration), then the shipped ones."""
    candidates = [p for path in files for p in read_profiles(path)] + shipped_profiles()
    for profile in candidates:
        if profile.answers_to(name):
            return profile
    known = ", ".join(sorted({p.label for p in candidates}))
    raise UnknownProfile(f"no kernel profile for '{name}'; known: {known}. Measure one with `diffusionct calibrate`")


def transfer_gain(source: KernelProfile, target: KernelProfile, frequency: np.ndarray) -> np.ndarray:
    """The calibrated linear filter from ``source`` to ``target`` kernel at ``frequency`` cycles/mm: W_target / W_source,
    held beyond the frequency both measured and clipped to [1/MAX_GAIN, MAX_GAIN]."""
    f = np.minimum(np.abs(np.asarray(frequency, float)), min(source.measured_up_to, target.measured_up_to))
    return np.clip(target.window_at(f) / source.window_at(f), 1.0 / MAX_GAIN, MAX_GAIN)


def apply_transfer(hu: np.ndarray, gain_of_frequency, pixel_mm: float, pad: int = 32) -> np.ndarray:
    """A radial filter applied to slices ``(..., H, W)``: ``gain_of_frequency(cycles/mm)`` on the DFT grid of each slice,
    edges mirrored by ``pad`` pixels (not wrapped)."""
    hu = np.asarray(hu, dtype=np.float64)
    pad = min(pad, hu.shape[-2] - 1, hu.shape[-1] - 1)
    padded = np.pad(hu, [(0, 0)] * (hu.ndim - 2) + [(pad, pad), (pad, pad)], mode="reflect")
    fy = np.fft.fftfreq(padded.shape[-2], d=pixel_mm)
    fx = np.fft.rfftfreq(padded.shape[-1], d=pixel_mm)
    gain = gain_of_frequency(np.hypot(fy[:, None], fx[None, :]))
    out = np.fft.irfft2(np.fft.rfft2(padded) * gain, s=padded.shape[-2:])
    return out[..., pad:pad + hu.shape[-2], pad:pad + hu.shape[-1]].astype(np.float32)
