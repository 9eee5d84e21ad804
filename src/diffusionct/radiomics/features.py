"""Radiomic features of a tumour mask in the paper's six classes.

Names are ``CLASS_DIM_IMAGETYPE_Feature``, e.g. ``GLCM_3D_original_Contrast`` or
``GOH_2D_log-sigma-1-0-mm_bin03``. Classes:

* ``ID``  intensity direct (pyradiomics first order)
* ``IH``  intensity histogram (IBSI 3.4, on the discretised grey levels; implemented here)
* ``GLCM`` and ``GLRLM`` (pyradiomics)
* ``NID`` neighbourhood intensity difference (pyradiomics NGTDM)
* ``GOH`` gradient orientation histogram (implemented here)

Settings come from a YAML file (``diffusionct/data/radiomics_params.yaml`` by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import SimpleITK as sitk
import yaml

from diffusionct.config import FEATURE_PRESETS
from diffusionct.errors import DiffusionCTError
from diffusionct.radiomics import families, preprocess

FEATURE_CLASSES = ("ID", "IH", "GLCM", "GLRLM", "NID", "GOH")  # the paper's six
# IBSI 1 families beyond them (off by default; `classes:` in the params or the ibsi-* presets turn them on):
# GLSZM (pyradiomics), NGLDM, GLDZM, local intensity, intensity-volume histogram (radiomics/families.py), and
# morphology (pyradiomics' shape class plus families.py); our own families' features are named by their IBSI tags
# STAT: IBSI statistics pyradiomics lacks; DIAG: IBSI's diagnostic features of each processing step
IBSI_FAMILIES = ("GLSZM", "NGLDM", "GLDZM", "MORPH", "LI", "IVH", "STAT", "DIAG")
OTHER_CLASSES = ("GLDM",)  # pyradiomics' grey level dependence matrix (a pyradiomics params file may ask for it)
_PYRADIOMICS_CLASSES = {"ID": "firstorder", "GLCM": "glcm", "GLRLM": "glrlm", "NID": "ngtdm", "GLSZM": "glszm", "GLDM": "gldm"}
# a pyradiomics params file's featureClass names, as this engine's classes (shape: pyradiomics' shape class, which
# MORPH computes beside IBSI's other morphology features)
PYRADIOMICS_FEATURE_CLASSES = {"firstorder": "ID", "glcm": "GLCM", "glrlm": "GLRLM", "glszm": "GLSZM", "ngtdm": "NID",
                               "gldm": "GLDM", "shape": "MORPH"}
_PYRADIOMICS_IMAGE_TYPES = {"Original": "original", "LoG": "LoG", "Wavelet": "wavelet"}
DIRECTIONAL = ("GLCM", "GLRLM")  # classes with a matrix per direction, which IBSI also merges (``aggregations``)
# 3D; 2D = per in-plane direction over the slices (IBSI 2.5D); 2Dslice = each slice on its own, averaged (IBSI 2D)
DIMENSIONS = ("3D", "2D", "2Dslice")
AGGREGATIONS = ("average", "merged")
DEFAULT_PARAMS = "radiomics_params.yaml"


def feature_class(name: str) -> str:
    """The class (ID, IH, GLCM, GLRLM, NID, GOH) of a feature name."""
    return name.split("_", 1)[0]


@dataclass
class FeatureSettings:
    """Feature extraction settings, normally read from a YAML params file (see :meth:`load`)."""

    setting: dict[str, Any] = field(default_factory=lambda: {"binWidth": 25})
    image_types: dict[str, dict] = field(default_factory=lambda: {"original": {}})
    dimensions: list[str] = field(default_factory=lambda: ["3D"])
    dimensions_2d_image_types: list[str] = field(default_factory=lambda: ["original"])
    classes: list[str] = field(default_factory=lambda: list(FEATURE_CLASSES))
    goh: dict[str, Any] = field(default_factory=lambda: {"bins_2D": 16, "bins_elevation": 8, "image_types": ["original"]})
    aggregations: list[str] = field(default_factory=lambda: ["average"])
    selected: dict[str, list[str]] = field(default_factory=dict)  # class -> the only features wanted (featureClass)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "FeatureSettings":
        """Settings from a YAML file; ``None`` loads the shipped defaults, ``ibsi-a`` .. ``ibsi-e`` IBSI 1's
        configurations A-E (a file of that name wins)."""
        if path is None:
            text = resources.files("diffusionct.data").joinpath(DEFAULT_PARAMS).read_text()
            source = DEFAULT_PARAMS
        elif str(path).lower() in FEATURE_PRESETS and not Path(path).exists():
            source = str(path).lower()
            text = resources.files("diffusionct.data.ibsi").joinpath(f"{source}.yaml").read_text()
        else:
            path = Path(path)
            if not path.is_file():
                raise DiffusionCTError(f"{path}: params file not found")
            try:
                text, source = path.read_text(encoding="utf-8"), str(path)
            except UnicodeDecodeError:
                raise DiffusionCTError(f"{path}: not a text (YAML) file") from None
        try:
            raw = yaml.safe_load(text) or {}
        except (yaml.YAMLError, RecursionError) as exc:
            raise DiffusionCTError(f"{source}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise DiffusionCTError(f"{source}: expected a YAML mapping of settings (setting:, imageType:, ...), "
                                   f"got a {type(raw).__name__}")
        raw, selected = _from_pyradiomics_format(raw, source)
        for key, kind in (("setting", dict), ("imageType", dict), ("goh", dict), ("dimensions", list),
                          ("dimensions_2D_image_types", list), ("classes", list), ("aggregations", list)):
            if raw.get(key) is not None and not isinstance(raw[key], kind):
                raise DiffusionCTError(f"{source}: '{key}' must be a {'mapping' if kind is dict else 'list'}, "
                                       f"got {raw[key]!r}")
        known = {"setting", "imageType", "dimensions", "dimensions_2D_image_types", "classes", "goh", "aggregations",
                 "featureClass"}
        unknown = set(raw) - known
        if unknown:
            raise DiffusionCTError(f"{source}: unknown keys {sorted(unknown)}; known keys: {sorted(known)}")
        settings = cls(
            setting=dict(raw.get("setting") or {}),
            image_types={k: v or {} for k, v in (raw.get("imageType") or {"original": {}}).items()},
            dimensions=list(raw.get("dimensions") or ["3D"]),
            dimensions_2d_image_types=list(raw.get("dimensions_2D_image_types") or ["original"]),
            classes=list(raw.get("classes") or FEATURE_CLASSES),
            goh={"bins_2D": 16, "bins_elevation": 8, "image_types": ["original"], **(raw.get("goh") or {})},
            aggregations=list(raw.get("aggregations") or ["average"]),
            selected=selected,
        )
        settings.validate(source)
        return settings

    def validate(self, source: str = "settings") -> None:
        known = FEATURE_CLASSES + IBSI_FAMILIES + OTHER_CLASSES
        bad = [c for c in self.classes if c not in known]
        if bad:
            raise DiffusionCTError(f"{source}: unknown feature classes {bad}; known: {', '.join(known)}")
        bad = [d for d in self.dimensions if d not in DIMENSIONS]
        if bad:
            raise DiffusionCTError(f"{source}: dimensions must be among {', '.join(DIMENSIONS)}, got {bad}")
        bad = [a for a in self.aggregations if a not in AGGREGATIONS]
        if bad or "average" not in self.aggregations:
            raise DiffusionCTError(f"{source}: aggregations must be [average] or [average, merged], got {self.aggregations}")
        bad = [t for t in self.image_types if t not in ("original", "LoG", "wavelet")]
        if bad:
            raise DiffusionCTError(f"{source}: image types must be original, LoG or wavelet, got {bad}")
        unsupported = sorted(set(self.setting) & UNSUPPORTED_SETTINGS)
        if unsupported:
            raise DiffusionCTError(f"{source}: setting {', '.join(unsupported)} is not applied by this engine (its "
                                   "pre-processing keys are resampledPixelSpacing, interpolator, resegmentRange in HU and "
                                   "outlierFilter in SD); remove it")
        unknown = sorted(set(self.setting) - KNOWN_SETTINGS - UNSUPPORTED_SETTINGS)
        if unknown:
            raise DiffusionCTError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SETTINGS))}")
        _check_values(self.setting, SETTING_VALUES, f"{source}: setting")
        for family, options in self.image_types.items():
            if not isinstance(options, dict):
                raise DiffusionCTError(f"{source}: imageType {family} must be a mapping of its options (or empty), "
                                       f"got {options!r:.40}")
            _check_values(options, SETTING_VALUES, f"{source}: imageType {family}")
        _check_values(self.goh, GOH_VALUES, f"{source}: goh")
        try:
            preprocess.lower_bound(self.setting.get("resegmentRange"))
            if "outlierFilter" in self.setting and not float(self.setting["outlierFilter"]) > 0:
                raise DiffusionCTError(f"outlierFilter must be a positive number of SDs, got {self.setting['outlierFilter']!r}")
            spacing = self.setting.get("resampledPixelSpacing")
            if spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3
                                            and all(isinstance(v, (int, float)) and v >= 0 for v in spacing)):
                raise DiffusionCTError(f"resampledPixelSpacing must be three non-negative numbers (x, y, z in mm; 0 keeps "
                                       f"an axis), got {spacing!r}")
            if self.setting.get("interpolator", "sitkLinear") not in preprocess.INTERPOLATORS:
                raise DiffusionCTError(f"interpolator must be one of {', '.join(preprocess.INTERPOLATORS)}")
        except DiffusionCTError as exc:
            raise DiffusionCTError(f"{source}: {exc}") from None


def _from_pyradiomics_format(raw: dict, source: str) -> tuple[dict, dict[str, list[str]]]:
    """A pyradiomics params file (``featureClass``, ``imageType: {Original: {}}``, ``setting: {force2D: true}``) as
    this engine's keys, and the features each ``featureClass`` list keeps; a file in this engine's own format passes
    unchanged. Without ``featureClass`` the classes are this engine's defaults (the paper's six), not pyradiomics'
    every class."""
    raw = dict(raw)
    image_types = raw.get("imageType")
    if isinstance(image_types, dict):
        unsupported = sorted(set(image_types) - set(_PYRADIOMICS_IMAGE_TYPES) - set(_PYRADIOMICS_IMAGE_TYPES.values()))
        if unsupported:
            raise DiffusionCTError(f"{source}: image types {unsupported} are not computed by this engine; it has Original "
                                   "(original), LoG and Wavelet (wavelet)")
        raw["imageType"] = {_PYRADIOMICS_IMAGE_TYPES.get(k, k): v for k, v in image_types.items()}
    setting = raw.get("setting")
    if isinstance(setting, dict) and "force2D" in setting:
        setting = dict(setting)
        if setting.pop("force2D"):
            if setting.pop("force2Ddimension", 0) not in (0, "0"):
                raise DiffusionCTError(f"{source}: force2Ddimension must be 0 (axial slices) in this engine")
            raw["dimensions"] = ["2D"]
            raw["dimensions_2D_image_types"] = list(raw.get("imageType") or {"original": {}})
        raw["setting"] = setting
    classes = raw.pop("featureClass", None)
    if classes is None:
        return raw, {}
    if not isinstance(classes, dict) or not all(v is None or (isinstance(v, list) and all(isinstance(n, str) for n in v))
                                                for v in classes.values()):
        raise DiffusionCTError(f"{source}: 'featureClass' must map pyradiomics classes to lists of feature names (or "
                               "nothing, for all of a class)")
    unknown = sorted(set(classes) - set(PYRADIOMICS_FEATURE_CLASSES))
    if unknown:
        raise DiffusionCTError(f"{source}: featureClass {unknown} is not computed by this engine; it has "
                               f"{', '.join(PYRADIOMICS_FEATURE_CLASSES)}")
    if raw.get("classes"):
        raise DiffusionCTError(f"{source}: give either 'featureClass' (pyradiomics) or 'classes', not both")
    raw["classes"] = [PYRADIOMICS_FEATURE_CLASSES[c] for c in classes]
    return raw, {PYRADIOMICS_FEATURE_CLASSES[c]: list(names) for c, names in classes.items() if names}


def select_features(features: dict[str, float], selected: dict[str, list[str]]) -> dict[str, float]:
    """Only the features a pyradiomics ``featureClass`` list names, for the classes that have such a list."""
    if not selected:
        return features
    return {name: value for name, value in features.items()
            if (cls := feature_class(name)) not in selected or name.split("_", 3)[-1] in selected[cls]}


def check_pyradiomics_names(dimensions) -> None:
    """pyradiomics' column names do not say 2D or 3D: a run that computes both cannot be written under them."""
    if {"2D", "3D"} <= set(dimensions):
        raise DiffusionCTError("pyradiomics' column names do not say 2D or 3D, and these settings compute both; use "
                               "dimensions: [3D] (or setting: force2D: true) with --names pyradiomics")


def pyradiomics_names(features: dict[str, float]) -> dict[str, float]:
    """The features under pyradiomics' column names (``original_glcm_Contrast``) where pyradiomics computes them; the
    engine's own classes keep their names. pyradiomics' names do not say 2D or 3D, so one run may hold only one."""
    classes = {**_PYRADIOMICS_CLASSES, "MORPH": "shape"}
    renamed: dict[str, float] = {}
    dims = set()
    for name, value in features.items():
        cls, dim, image_type, feature = name.split("_", 3)
        pyradiomics_class = classes.get(cls)
        if pyradiomics_class and dim in ("2D", "3D") and not feature.islower():  # lower case: IBSI-tag names of ours
            dims.add(dim)
            name = f"{image_type}_{pyradiomics_class}_{feature}"
        renamed[name] = value
    check_pyradiomics_names(dims)
    return renamed


# IBSI pre-processing (radiomics/preprocess.py); outlierFilter is ours (pyradiomics has no range + SD combination)
PREPROCESSING_SETTINGS = {"resampledPixelSpacing", "interpolator", "resegmentRange", "outlierFilter"}
# Settings the engine applies (pyradiomics' keys where pyradiomics computes the class); every other key is an
# error instead of being ignored without a word.
KNOWN_SETTINGS = {"binWidth", "binCount", "padDistance", "minimumROISize", "voxelArrayShift", "symmetricalGLCM",
                  "distances", "weightingNorm", "gldm_a", "sigma", "wavelet", "start_level", "level", "label",
                  "ivhBinWidth", "ivhBinCount",  # the intensity-volume histogram's own discretisation (IBSI 3.5)
                  *PREPROCESSING_SETTINGS}
# pyradiomics' extractor pre-processing keys, which this engine does not apply (it calls the feature classes)
UNSUPPORTED_SETTINGS = {"resegmentMode", "resegmentShape",
                        "normalize", "normalizeScale", "removeOutliers", "preCrop", "correctMask", "geometryTolerance",
                        "minimumROIDimensions"}


def _number(low: float, high: float, integer: bool = False, low_open: bool = False):
    """A check that a value is a number (an integer with ``integer``) in [low, high] ((low, high] with ``low_open``)."""
    def valid(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        return math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
    kind = "an integer" if integer else "a number"
    return valid, f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}]"


def _list_of(check):
    valid, words = check
    return (lambda v: isinstance(v, list) and len(v) > 0 and all(valid(x) for x in v)), f"a list of {words.replace('a ', '', 1)}s"


# each setting's type and range, checked at load: a wrong one is refused naming its key, not met as a traceback deep
# in the extraction (the upper bounds are far beyond any tumour's needs, below what would exhaust memory)
SETTING_VALUES = {
    "binWidth": _number(0, 1e6, low_open=True), "binCount": _number(1, 1e6, integer=True),
    "ivhBinWidth": _number(0, 1e6, low_open=True), "ivhBinCount": _number(1, 100_000, integer=True),
    "padDistance": _number(0, 1000, integer=True), "minimumROISize": _number(0, 1e12, integer=True),
    "voxelArrayShift": _number(-1e6, 1e6), "symmetricalGLCM": ((lambda v: isinstance(v, bool)), "true or false"),
    "distances": _list_of(_number(1, 100, integer=True)),
    "weightingNorm": ((lambda v: v in (None, "manhattan", "euclidean", "infinity", "no_weighting")),
                      "null, manhattan, euclidean, infinity or no_weighting"),
    "gldm_a": _number(0, 1e6), "sigma": _list_of(_number(0, 100, low_open=True)),
    "wavelet": ((lambda v: isinstance(v, str) and v != ""), "a wavelet name such as coif1"),
    "start_level": _number(0, 10, integer=True), "level": _number(1, 10, integer=True),
    "label": _number(1, 2**31 - 1, integer=True),
}
GOH_VALUES = {"bins_2D": _number(1, 360, integer=True), "bins_elevation": _number(1, 180, integer=True),
              "image_types": ((lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)), "a list of image types")}


def _check_values(values: dict, schema: dict, where: str) -> None:
    for key, value in values.items():
        if key in schema and not schema[key][0](value):
            raise DiffusionCTError(f"{where} {key} must be {schema[key][1]}, got {value!r:.40}")


# ------------------------------------------------------------------------------------ images


def _to_sitk(array: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def mask_region(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    """The mask's bounding box plus ``pad`` voxels, within the array."""
    nz = np.nonzero(mask)
    lo = [max(0, int(i.min()) - pad) for i in nz]
    hi = [min(s, int(i.max()) + 1 + pad) for i, s in zip(nz, mask.shape)]
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def crop_to_mask(image: np.ndarray, mask: np.ndarray, pad: int, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """``image``, ``mask`` (and ``others`` on their grid) cut to the mask's bounding box plus ``pad`` voxels."""
    region = mask_region(mask, pad)
    return (image[region], mask[region], *(other[region] for other in others))


def _image_types(image: sitk.Image, mask: sitk.Image, settings: FeatureSettings) -> Iterator[tuple[str, str, sitk.Image]]:
    """(family, name, image) of every derived image: original, LoG per sigma, wavelet decompositions."""
    from radiomics import imageoperations

    for family, options in settings.image_types.items():
        if family == "original":
            yield "original", "original", image
            continue
        kwargs = {**settings.setting, **options}
        generator = imageoperations.getLoGImage if family == "LoG" else imageoperations.getWaveletImage
        for derived, name, _ in generator(image, mask, **kwargs):
            yield family, name.replace("_", "-"), derived


# ------------------------------------------------------------------------------------ IH


MAX_GREY_LEVELS = 2048  # a 3D GLCM of 2,048 levels and 13 directions takes 0.4 GB; beyond, a setting is wrong, not a tumour


def discretise(values: np.ndarray, bin_width: float = 25.0, bin_count: int | None = None,
               lower_bound: float | None = None) -> np.ndarray:
    """Grey levels 1..N: a fixed bin width as pyradiomics (bins start at floor(min / width) * width; with a
    re-segmentation ``lower_bound``, at that bound as IBSI 2.7.2), or with ``bin_count`` a fixed number of bins
    over [min, max] (IBSI 2.7.3; the maximum falls in the last bin)."""
    if bin_count is not None:
        low, high = values.min(), values.max()
        if high == low:
            return np.ones(values.shape, dtype=np.int64)
        levels = np.floor(bin_count * (values - low) / (high - low)).astype(np.int64) + 1
        return np.minimum(levels, bin_count)
    low = np.floor(values.min() / bin_width) * bin_width if lower_bound is None else lower_bound
    levels = (values.max() - low) / bin_width + 1
    if levels > MAX_GREY_LEVELS:
        raise DiffusionCTError(f"binWidth {bin_width:g} gives {levels:.3g} grey levels over this ROI's {values.max() - low:g} "
                               f"units; texture matrices take at most {MAX_GREY_LEVELS}: use a larger binWidth or a binCount")
    return np.floor((values - low) / bin_width).astype(np.int64) + 1


def intensity_histogram_features(levels: np.ndarray) -> dict[str, float]:
    """IBSI intensity-histogram features of discretised grey levels (section 3.4 of the IBSI manual)."""
    x = levels.astype(np.float64)
    mean = x.mean()
    var = x.var()
    sd = np.sqrt(var)
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    counts = np.bincount(levels)[1:].astype(np.float64)  # grey levels 1..max
    prob = counts / counts.sum()
    nonzero = prob[prob > 0]
    # histogram gradient: central differences inside, one-sided at the ends (IBSI 3.4.20-23)
    grad = np.gradient(counts) if counts.size > 1 else np.zeros(1)
    robust = x[(x >= p10) & (x <= p90)]
    return {
        "Mean": mean, "Variance": var,
        "Skewness": float(((x - mean) ** 3).mean() / sd**3) if sd > 0 else 0.0,
        "Kurtosis": float(((x - mean) ** 4).mean() / var**2 - 3) if var > 0 else 0.0,
        "Median": p50, "Minimum": x.min(), "Percentile10": p10, "Percentile90": p90, "Maximum": x.max(),
        "Mode": float(np.argmax(counts) + 1), "InterquartileRange": p75 - p25, "Range": x.max() - x.min(),
        "MeanAbsoluteDeviation": np.abs(x - mean).mean(),
        "RobustMeanAbsoluteDeviation": np.abs(robust - robust.mean()).mean(),
        "MedianAbsoluteDeviation": np.abs(x - p50).mean(),
        "CoefficientOfVariation": sd / mean if mean != 0 else np.nan,
        "QuartileCoefficientOfDispersion": (p75 - p25) / (p75 + p25) if (p75 + p25) != 0 else np.nan,
        "Entropy": float(-(nonzero * np.log2(nonzero)).sum()), "Uniformity": float((prob**2).sum()),
        "MaximumHistogramGradient": float(grad.max()), "MaximumHistogramGradientGreyLevel": float(np.argmax(grad) + 1),
        "MinimumHistogramGradient": float(grad.min()), "MinimumHistogramGradientGreyLevel": float(np.argmin(grad) + 1),
    }


# ------------------------------------------------------------------------------------ GOH


def _orientation_bins(angle: np.ndarray, bins: int, full_circle: bool = True) -> np.ndarray:
    """Bin index of angles, bins centred on multiples of the bin width (0 degrees is a bin centre)."""
    span = 2 * np.pi if full_circle else np.pi
    width = span / bins
    shifted = angle + (np.pi if full_circle else np.pi / 2) + width / 2
    return np.floor(shifted / width).astype(np.int64) % bins if full_circle else np.clip(np.floor(shifted / width).astype(np.int64), 0, bins - 1)


def _histogram_stats(prefix: str, index: np.ndarray, bins: int) -> dict[str, float]:
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    prob = counts / max(counts.sum(), 1)
    nz = prob[prob > 0]
    feats = {f"{prefix}bin{k:02d}": float(prob[k]) for k in range(bins)}
    feats[f"{prefix}Entropy"] = float(-(nz * np.log2(nz)).sum())
    feats[f"{prefix}Uniformity"] = float((prob**2).sum())
    feats[f"{prefix}MaximumFrequency"] = float(prob.max())
    return feats


def gradient_orientation_features(image: np.ndarray, mask: np.ndarray, spacing, bins_2d: int = 16,
                                  bins_elevation: int = 8, dimension: str = "2D") -> dict[str, float]:
    """Gradient orientation histogram of the voxels in ``mask``.

    Gradients are central differences in mm (``np.gradient`` with the voxel spacing, x, y, z order).
    2D: the in-plane orientation atan2(gy, gx) over 360 degrees in ``bins_2d`` bins. 3D: azimuth
    (``bins_2d`` bins) and elevation (``bins_elevation`` bins over 180 degrees) of the 3D gradient.
    Voxels with zero gradient have no orientation and are left out. Features: the normalised bin
    frequencies, histogram entropy, uniformity and maximum frequency, the mean and SD of the gradient
    magnitude, and the mean resultant length of the orientations (1 = all gradients parallel).
    """
    sx, sy, sz = (float(s) for s in spacing)
    if dimension == "3D" and image.shape[0] > 1:
        gz, gy, gx = np.gradient(image.astype(np.float64), sz, sy, sx)
    else:
        gy, gx = np.gradient(image.astype(np.float64), sy, sx, axis=(1, 2))
        gz = np.zeros_like(gx)
    gx, gy, gz = gx[mask], gy[mask], gz[mask]
    magnitude = np.sqrt(gx**2 + gy**2 + gz**2)
    oriented = magnitude > 1e-9
    feats = {"MeanMagnitude": float(magnitude.mean()), "SDMagnitude": float(magnitude.std())}
    if not oriented.any():
        feats.update(_histogram_stats("", np.zeros(0, dtype=np.int64), bins_2d))
        feats["ResultantLength"] = np.nan
        return feats
    gx, gy, gz, magnitude = gx[oriented], gy[oriented], gz[oriented], magnitude[oriented]
    azimuth = np.arctan2(gy, gx)
    feats.update(_histogram_stats("" if dimension == "2D" else "Azimuth", _orientation_bins(azimuth, bins_2d), bins_2d))
    if dimension == "3D":
        elevation = np.arcsin(np.clip(gz / magnitude, -1, 1))
        feats.update(_histogram_stats("Elevation", _orientation_bins(elevation, bins_elevation, full_circle=False), bins_elevation))
        unit = np.stack([gx, gy, gz]) / magnitude
    else:
        unit = np.stack([gx, gy]) / np.sqrt(gx**2 + gy**2)
    feats["ResultantLength"] = float(np.linalg.norm(unit.mean(axis=1)))
    return feats


# ------------------------------------------------------------------------------------ extraction


def check_inputs(image: np.ndarray, mask: np.ndarray, minimum_voxels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Validate an image and mask pair; returns (float image, bool mask). Raises DiffusionCTError."""
    image = np.asarray(image, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if image.ndim != 3:
        raise DiffusionCTError(f"image must be 3D (slices, rows, columns), got shape {image.shape}")
    if image.shape != mask.shape:
        raise DiffusionCTError(f"mask shape {mask.shape} differs from image shape {image.shape}: they must share a grid")
    count = int(mask.sum())
    if count == 0:
        raise DiffusionCTError("mask is empty: no voxel to compute features on")
    if count < minimum_voxels:
        raise DiffusionCTError(f"mask has {count} voxel(s); radiomic features need at least {minimum_voxels}")
    bad = ~np.isfinite(image)
    if (bad & mask).any():
        raise DiffusionCTError(f"image has {int((bad & mask).sum())} NaN or infinite voxels inside the mask")
    if bad.any():  # outside the mask they only reach the filters: treat them as air
        image = np.where(bad, -1024.0, image)
    return image, mask


def interpolation_margin(pad: int) -> int:
    """How many input voxels around the mask an IBSI interpolation reads (the new grid's voxels up to ``pad`` new voxels
    out, and the interpolator's support)."""
    return 2 * pad + 4


def _preprocess(image: np.ndarray, mask: np.ndarray, spacing, setting: dict, pad: int, whole: tuple | None = None):
    """IBSI interpolation and re-segmentation when the settings ask for them (radiomics/preprocess.py); only the
    tumour's neighbourhood is interpolated, on the grid of the whole image (``whole``: see preprocess.resample)."""
    if setting.get("resampledPixelSpacing"):
        image, mask, spacing = preprocess.resample(image, mask, spacing, setting["resampledPixelSpacing"],
                                                   setting.get("interpolator", "sitkLinear"), margin=interpolation_margin(pad), whole=whole)
        if not mask.any():
            raise DiffusionCTError("the mask vanished on the resampled grid (smaller than half a new voxel); use a finer "
                                   "resampledPixelSpacing")
    # the shape of the tumour (morphology and GLDZM distances use it), and the re-segmented intensity mask
    return image, preprocess.resegment_by_settings(image, mask, setting), mask, spacing


def extract_features(image: np.ndarray, mask: np.ndarray, spacing, settings: FeatureSettings | None = None,
                     whole: tuple | None = None, diagnostics: dict[str, float] | None = None) -> dict[str, float]:
    """Every enabled feature of one tumour.

    Args:
        image: HU array ``(slices, rows, columns)``.
        mask: the tumour, same shape (non-zero = inside).
        spacing: voxel size (x, y, z) in mm.
        settings: feature settings; the shipped defaults when omitted.
        whole: when ``image`` is a crop of a larger image, (that image's shape, the crop's offset): an IBSI
            interpolation then uses the whole image's grid, as an uncropped run does.
        diagnostics: the ``DIAG`` features, when the caller measured them on the whole image (a crop cannot).

    Returns:
        ``{name: value}``; values are floats and may be NaN or infinite where a feature is undefined
        (see :mod:`diffusionct.radiomics.metrics` for how those are counted).
    """
    from radiomics import imageoperations

    from diffusionct.radiomics import pyradiomics_classes

    settings = settings or FeatureSettings.load()
    image, mask = check_inputs(image, mask, int(settings.setting.get("minimumROISize", 2)))
    out: dict[str, float] = {}
    if "DIAG" in settings.classes:
        if diagnostics is None:
            diagnostics = preprocess.diagnostics(image, mask, spacing, settings.setting)
        out.update({f"DIAG_3D_original_{k}": v for k, v in diagnostics.items()})
    pad = int(settings.setting.get("padDistance", 8))
    image, mask, morphological, spacing = _preprocess(image, mask, spacing, settings.setting, pad, whole)
    image, morphological, mask = crop_to_mask(image, morphological, pad, mask)
    sitk_image = _to_sitk(image.astype(np.float32), spacing)
    sitk_mask = _to_sitk(mask.astype(np.uint8), spacing)
    kwargs = {k: v for k, v in settings.setting.items() if k not in ("padDistance", "minimumROISize", *PREPROCESSING_SETTINGS)}
    kwargs["label"] = 1
    bin_width = float(kwargs.get("binWidth", 25))
    bin_count = int(kwargs["binCount"]) if "binCount" in kwargs else None  # pyradiomics: binCount wins over binWidth
    lower_bound = preprocess.lower_bound(settings.setting.get("resegmentRange")) if bin_count is None else None
    if lower_bound is not None:
        kwargs["binLowerBound"] = lower_bound  # IBSI grey-level numbering in pyradiomics too (pyradiomics_classes)
    bbox, _ = imageoperations.checkMask(sitk_image, sitk_mask, minimumROIDimensions=1, minimumROISize=1, label=1)
    # GLDZM's distances to the tumour's edge: of the mask alone, so once per dimension, and only when asked for
    # (2D and 2Dslice share the in-plane distances)
    geometry = {dim: "3D" if dim == "3D" else "2D" for dim in settings.dimensions}
    by_geometry = ({g: _bbox_crop(families.edge_distance(morphological, g), bbox) for g in set(geometry.values())}
                   if "GLDZM" in settings.classes else {})
    edge_distances = {dim: by_geometry[g] for dim, g in geometry.items() if g in by_geometry}
    merged = "merged" in settings.aggregations
    for family, name, derived in _image_types(sitk_image, sitk_mask, settings):
        cropped, cropped_mask = imageoperations.cropToTumorMask(derived, sitk_mask, bbox)
        array = sitk.GetArrayFromImage(cropped).astype(np.float64)
        array_mask = sitk.GetArrayFromImage(cropped_mask).astype(bool)
        levels = np.zeros(array.shape, dtype=np.int64)  # the grey levels of the texture classes, over the whole ROI
        levels[array_mask] = discretise(array[array_mask], bin_width, bin_count, lower_bound)
        for dim in settings.dimensions:
            if dim != "3D" and family not in settings.dimensions_2d_image_types:
                continue
            if dim == "2Dslice":
                out.update(_per_slice(settings.classes, name, levels, array_mask, edge_distances.get(dim), merged, kwargs))
                continue
            dim_kwargs = {**kwargs, "force2D": dim == "2D", "force2Ddimension": 0}
            for cls in settings.classes:
                if cls in _PYRADIOMICS_CLASSES and not (cls == "ID" and dim == "2D"):
                    values = pyradiomics_classes.compute(_PYRADIOMICS_CLASSES[cls], cropped, cropped_mask, dim_kwargs)
                    out.update({f"{cls}_{dim}_{name}_{k}": float(v) for k, v in values.items()})
                if cls in DIRECTIONAL and merged:  # pyradiomics sums the directions' matrices under this weighting
                    values = pyradiomics_classes.compute(_PYRADIOMICS_CLASSES[cls], cropped, cropped_mask,
                                                         {**dim_kwargs, "weightingNorm": "no_weighting"})
                    out.update({f"{cls}_{dim}merged_{name}_{k}": float(v) for k, v in values.items()})
            if "IH" in settings.classes and dim == "3D":
                out.update({f"IH_3D_{name}_{k}": float(v) for k, v in intensity_histogram_features(levels[array_mask]).items()})
            if "STAT" in settings.classes and dim == "3D":
                out.update({f"STAT_3D_{name}_{k}": v for k, v in extra_statistics(array[array_mask]).items()})
            out.update(_ibsi_texture_families(settings.classes, dim, name, levels, array_mask, edge_distances.get(dim)))
            if "GOH" in settings.classes and family in settings.goh.get("image_types", ["original"]):
                goh = gradient_orientation_features(array, array_mask, spacing, int(settings.goh["bins_2D"]),
                                                    int(settings.goh["bins_elevation"]), dimension=dim)
                out.update({f"GOH_{dim}_{name}_{k}": float(v) for k, v in goh.items()})
    out.update(_ibsi_whole_roi_families(settings, image, mask, morphological, spacing))
    return select_features(out, settings.selected)


def _bbox_crop(array: np.ndarray, bbox) -> np.ndarray:
    """``array`` cut as pyradiomics' cropToTumorMask cuts (bbox: x, y, z index bounds, inclusive)."""
    return array[bbox[4]:bbox[5] + 1, bbox[2]:bbox[3] + 1, bbox[0]:bbox[1] + 1]


def _ibsi_texture_families(classes, dim: str, name: str, levels: np.ndarray, mask: np.ndarray,
                           distance: np.ndarray | None, label: str | None = None) -> dict[str, float]:
    """NGLDM and GLDZM of one image type, on the grey levels of this run (as GLCM's); ``label`` names the dimension
    in the feature names when it is not ``dim`` (one slice, computed as 2D, is ``2Dslice``)."""
    label = label or dim
    out = {}
    if "NGLDM" in classes:
        out.update({f"NGLDM_{label}_{name}_{k}": v for k, v in families.ngldm_features(levels, mask, dim).items()})
    if "GLDZM" in classes:
        out.update({f"GLDZM_{label}_{name}_{k}": v for k, v in families.gldzm_features(levels, mask, distance, dim).items()})
    return out


def _per_slice(classes, name: str, levels: np.ndarray, mask: np.ndarray, distance: np.ndarray | None,
               merged: bool, kwargs: dict) -> dict[str, float]:
    """IBSI's 2D aggregation: every texture class of each slice on its own, the features averaged over the slices.
    The grey levels are the whole ROI's (a slice never re-discretises), handed to pyradiomics as they are; the other
    settings (distances, symmetry, ...) are the run's. IBSI averages a GLCM feature over every slice's every
    directional matrix that holds a pair, so a slice counts as many times as it has such directions (pyradiomics
    averages a slice's directions first)."""
    from diffusionct.radiomics import pyradiomics_classes

    binning = ("binWidth", "binCount", "binLowerBound")
    identity = {**{k: v for k, v in kwargs.items() if k not in binning},
                "binWidth": 1, "binLowerBound": 0.5, "force2D": True, "force2Ddimension": 0, "label": 1}
    per_slice: dict[str, list[tuple[float, float]]] = {}  # feature -> (value, weight) per slice
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        plane, plane_mask = levels[z:z + 1].astype(np.float32), mask[z:z + 1]
        image, roi = _to_sitk(plane, (1.0, 1.0, 1.0)), _to_sitk(plane_mask.astype(np.uint8), (1.0, 1.0, 1.0))
        values: dict[str, float] = {}
        for cls in classes:
            if cls in _PYRADIOMICS_CLASSES and cls != "ID":
                runs = [("2Dslice", identity)] + ([("2Dslicemerged", {**identity, "weightingNorm": "no_weighting"})]
                                                   if merged and cls in DIRECTIONAL else [])
                for dim, run_settings in runs:
                    computed = pyradiomics_classes.compute(_PYRADIOMICS_CLASSES[cls], image, roi, run_settings, levels.max())
                    values.update({f"{cls}_{dim}_{name}_{k}": v for k, v in computed.items()})
        values.update(_ibsi_texture_families(classes, "2D", name, levels[z:z + 1], plane_mask,
                                             None if distance is None else distance[z:z + 1], label="2Dslice"))
        directions = _paired_directions(plane_mask[0])
        for key, value in values.items():
            per_slice.setdefault(key, []).append((value, directions if key.startswith("GLCM_2Dslice_") else 1.0))
    out = {}
    for key, pairs in per_slice.items():
        value, weight = np.array(pairs, dtype=np.float64).T
        finite = np.isfinite(value) & (weight > 0)
        out[key] = float(np.average(value[finite], weights=weight[finite])) if finite.any() else float("nan")
    return out


def _paired_directions(plane: np.ndarray) -> int:
    """How many of the four in-plane directions at distance 1 hold a pair of ROI voxels in ``plane`` (H, W)."""
    pairs = (plane[:, :-1] & plane[:, 1:], plane[:-1, :] & plane[1:, :], plane[:-1, :-1] & plane[1:, 1:],
             plane[:-1, 1:] & plane[1:, :-1])
    return sum(bool(p.any()) for p in pairs)


def extra_statistics(values: np.ndarray) -> dict[str, float]:
    """IBSI 1's intensity statistics that pyradiomics' first order lacks (3.3.15-17), under their IBSI names."""
    x = np.asarray(values, np.float64)
    median, (p25, p75), mean = np.median(x), np.percentile(x, [25, 75]), x.mean()
    return {"medad": float(np.abs(x - median).mean()),
            "cov": float(x.std() / mean) if mean != 0 else float("nan"),
            "qcod": float((p75 - p25) / (p75 + p25)) if p75 + p25 != 0 else float("nan")}


def _ibsi_whole_roi_families(settings: FeatureSettings, image: np.ndarray, mask: np.ndarray, morphological: np.ndarray,
                             spacing) -> dict[str, float]:
    """Morphology, local intensity and the intensity-volume histogram: of the original image's 3D ROI only."""
    from diffusionct.radiomics import pyradiomics_classes

    out: dict[str, float] = {}
    if "MORPH" in settings.classes:
        shape = pyradiomics_classes.compute("shape", _to_sitk(image.astype(np.float32), spacing),
                                            _to_sitk(morphological.astype(np.uint8), spacing), {"label": 1})
        out.update({f"MORPH_3D_original_{k}": v for k, v in shape.items()})
        extra = families.morphology_features(image, mask, morphological, spacing, shape["MeshVolume"], shape["SurfaceArea"])
        out.update({f"MORPH_3D_original_{k}": v for k, v in extra.items()})
    if "LI" in settings.classes:
        out.update({f"LI_3D_original_{k}": v for k, v in families.local_intensity_features(image, mask, spacing).items()})
    if "IVH" in settings.classes:
        ivh = families.intensity_volume_features(image[mask], settings.setting.get("ivhBinWidth"), settings.setting.get("resegmentRange"),
                                                 settings.setting.get("ivhBinCount"))
        out.update({f"IVH_3D_original_{k}": v for k, v in ivh.items()})
    return out
