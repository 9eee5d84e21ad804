"""Mapping of our feature names to IBSI reference tags, and the comparison against reference values.

The dimension part of a texture feature's name says how IBSI 1 aggregates it (section 3.1.1 of its manual):

========================  ===================================================  ==========================
our dimension             matrices                                             IBSI tag suffix
========================  ===================================================  ==========================
``3D``                    one per direction over the volume, features averaged  ``3D_avg`` / ``3D``
``3Dmerged``              the directions' matrices summed, then features        ``3D_comb``
``2D``                    one per in-plane direction over all slices (merged     ``2_5D_avg`` / ``2_5D``
                          slices, pyradiomics' ``force2D``), features averaged
``2Dmerged``              every slice and direction summed                      ``2_5D_comb``
``2Dslice``               one per slice and direction, features averaged        ``2D_avg`` / ``2D``
``2Dslicemerged``         per slice the directions summed, features averaged    ``2D_comb``
========================  ===================================================  ==========================

The second suffix is that of the classes without directions (NGTDM, GLSZM, NGLDM, GLDZM).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

_ID = {
    "Mean": "stat_mean", "Variance": "stat_var", "Skewness": "stat_skew", "Kurtosis": "stat_kurt",
    "Median": "stat_median", "Minimum": "stat_min", "10Percentile": "stat_p10", "90Percentile": "stat_p90",
    "Maximum": "stat_max", "InterquartileRange": "stat_iqr", "Range": "stat_range",
    "MeanAbsoluteDeviation": "stat_mad", "RobustMeanAbsoluteDeviation": "stat_rmad", "Energy": "stat_energy",
    "RootMeanSquared": "stat_rms",
}
_IH = {
    "Mean": "ih_mean", "Variance": "ih_var", "Skewness": "ih_skew", "Kurtosis": "ih_kurt", "Median": "ih_median",
    "Minimum": "ih_min", "Percentile10": "ih_p10", "Percentile90": "ih_p90", "Maximum": "ih_max", "Mode": "ih_mode",
    "InterquartileRange": "ih_iqr", "Range": "ih_range", "MeanAbsoluteDeviation": "ih_mad",
    "RobustMeanAbsoluteDeviation": "ih_rmad", "MedianAbsoluteDeviation": "ih_medad", "CoefficientOfVariation": "ih_cov",
    "QuartileCoefficientOfDispersion": "ih_qcod", "Entropy": "ih_entropy", "Uniformity": "ih_uniformity",
    "MaximumHistogramGradient": "ih_max_grad", "MaximumHistogramGradientGreyLevel": "ih_max_grad_g",
    "MinimumHistogramGradient": "ih_min_grad", "MinimumHistogramGradientGreyLevel": "ih_min_grad_g",
}
_GLCM = {
    "JointAverage": "cm_joint_avg", "MaximumProbability": "cm_joint_max", "SumSquares": "cm_joint_var",
    "JointEntropy": "cm_joint_entr", "DifferenceAverage": "cm_diff_avg", "DifferenceVariance": "cm_diff_var",
    "DifferenceEntropy": "cm_diff_entr", "SumAverage": "cm_sum_avg", "SumEntropy": "cm_sum_entr",
    "JointEnergy": "cm_energy", "Contrast": "cm_contrast", "Id": "cm_inv_diff", "Idn": "cm_inv_diff_norm",
    "Idm": "cm_inv_diff_mom", "Idmn": "cm_inv_diff_mom_norm", "InverseVariance": "cm_inv_var",
    "Correlation": "cm_corr", "Autocorrelation": "cm_auto_corr", "ClusterTendency": "cm_clust_tend",
    "ClusterShade": "cm_clust_shade", "ClusterProminence": "cm_clust_prom", "Imc1": "cm_info_corr1",
    "Imc2": "cm_info_corr2",
}
_GLRLM = {
    "ShortRunEmphasis": "rlm_sre", "LongRunEmphasis": "rlm_lre", "LowGrayLevelRunEmphasis": "rlm_lgre",
    "HighGrayLevelRunEmphasis": "rlm_hgre", "ShortRunLowGrayLevelEmphasis": "rlm_srlge",
    "ShortRunHighGrayLevelEmphasis": "rlm_srhge", "LongRunLowGrayLevelEmphasis": "rlm_lrlge",
    "LongRunHighGrayLevelEmphasis": "rlm_lrhge", "GrayLevelNonUniformity": "rlm_glnu",
    "GrayLevelNonUniformityNormalized": "rlm_glnu_norm", "RunLengthNonUniformity": "rlm_rlnu",
    "RunLengthNonUniformityNormalized": "rlm_rlnu_norm", "RunPercentage": "rlm_r_perc",
    "GrayLevelVariance": "rlm_gl_var", "RunVariance": "rlm_rl_var", "RunEntropy": "rlm_rl_entr",
}
_GLSZM = {
    "SmallAreaEmphasis": "szm_sze", "LargeAreaEmphasis": "szm_lze", "LowGrayLevelZoneEmphasis": "szm_lgze",
    "HighGrayLevelZoneEmphasis": "szm_hgze", "SmallAreaLowGrayLevelEmphasis": "szm_szlge",
    "SmallAreaHighGrayLevelEmphasis": "szm_szhge", "LargeAreaLowGrayLevelEmphasis": "szm_lzlge",
    "LargeAreaHighGrayLevelEmphasis": "szm_lzhge", "GrayLevelNonUniformity": "szm_glnu",
    "GrayLevelNonUniformityNormalized": "szm_glnu_norm", "SizeZoneNonUniformity": "szm_zsnu",
    "SizeZoneNonUniformityNormalized": "szm_zsnu_norm", "ZonePercentage": "szm_z_perc", "GrayLevelVariance": "szm_gl_var",
    "ZoneVariance": "szm_zs_var", "ZoneEntropy": "szm_zs_entr",
}
_MORPH = {  # pyradiomics' shape class; the other morphology features are named by their IBSI tags (families.py)
    "MeshVolume": "morph_volume", "VoxelVolume": "morph_vol_approx", "SurfaceArea": "morph_area_mesh",
    "SurfaceVolumeRatio": "morph_av", "Sphericity": "morph_sphericity", "Maximum3DDiameter": "morph_diam",
}
_OWN_PREFIX = {"NGLDM": "ngl", "GLDZM": "dzm", "LI": "loc", "IVH": "ivh", "MORPH": "morph", "STAT": "stat"}  # named by IBSI tag
_NID = {"Coarseness": "ngt_coarseness", "Contrast": "ngt_contrast", "Busyness": "ngt_busyness",
        "Complexity": "ngt_complexity", "Strength": "ngt_strength"}

# IBSI features that are another of its features by definition (IBSI 1, 3.6.7 and 3.6.15)
SAME_AS = {"cm_diff_avg": "cm_dissimilarity", "cm_clust_tend": "cm_sum_var"}
_SUFFIXES = {"3D": ("3D_avg", "3D"), "3Dmerged": ("3D_comb", None), "2D": ("2_5D_avg", "2_5D"),
             "2Dmerged": ("2_5D_comb", None), "2Dslice": ("2D_avg", "2D"), "2Dslicemerged": ("2D_comb", None)}
_WHOLE_ROI = ("ID", "IH", "MORPH", "LI", "IVH", "STAT", "DIAG")  # one value per ROI, no aggregation

# Known, documented deviations of our values from the IBSI definitions (docs/radiomics.md); none at present.
KNOWN_DEVIATIONS: dict[str, str] = {}
# Where our value and IBSI's differ by definition, how IBSI's follows from ours (applied by ibsi_values)
IBSI_CONVERSIONS = {"stat_kurt": lambda value: value - 3.0}  # pyradiomics' kurtosis -> IBSI's excess kurtosis


def ibsi_tags(name: str) -> list[str]:
    """The IBSI tags of one of our feature names (original image only; two where IBSI names one feature twice), or
    none when unmapped."""
    parts = name.split("_", 3)
    if len(parts) != 4 or parts[2] != "original" or parts[1] not in _SUFFIXES:
        return []
    cls, dim, _, feature = parts
    table = {"ID": _ID, "IH": _IH, "GLCM": _GLCM, "GLRLM": _GLRLM, "NID": _NID, "GLSZM": _GLSZM, "MORPH": _MORPH}.get(cls, {})
    if feature in table:
        base = table[feature]
    elif cls == "DIAG" and feature.islower():  # named by the whole tag
        base = feature
    elif cls in _OWN_PREFIX and feature.islower():
        base = f"{_OWN_PREFIX[cls]}_{feature}"
    else:
        return []
    if cls in _WHOLE_ROI:
        return [base] if dim == "3D" else []
    with_directions, without = _SUFFIXES[dim]
    suffix = with_directions if cls in ("GLCM", "GLRLM") else without
    if suffix is None:
        return []
    return [f"{b}_{suffix}" for b in (base, SAME_AS.get(base)) if b]


def ibsi_values(features: dict[str, float]) -> dict[str, float]:
    """The features that map to IBSI tags, under those tags, with IBSI's definitions (e.g. excess kurtosis)."""
    out = {}
    for name, value in features.items():
        for tag in ibsi_tags(name):
            out[tag] = float(IBSI_CONVERSIONS[tag](value)) if tag in IBSI_CONVERSIONS else float(value)
    return out


@dataclass
class ReferenceCheck:
    feature: str
    tag: str
    value: float
    reference: float
    tolerance: float
    matches: bool
    known_deviation: str | None


def read_reference(path: str | Path) -> dict[str, tuple[float, float]]:
    """IBSI reference values: ``{tag: (value, tolerance)}`` from a ``value;tolerance;tag`` CSV."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    # rows without a value (features the IBSI left undefined for the phantom) are skipped
    return {row[2]: (float(row[0]), float(row[1] or 0)) for row in rows[1:] if len(row) == 3 and row[0].strip()}


def rounding_tolerance(reference: float, tolerance: float) -> float:
    """The published tolerance plus half a unit of the reference's third significant digit."""
    if reference == 0:
        return tolerance + 5e-4
    return tolerance + 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2)


def compare_to_reference(features: dict[str, float], reference: dict[str, tuple[float, float]]) -> list[ReferenceCheck]:
    """Every mapped feature that has a reference value, with whether it matches within tolerance."""
    checks = []
    for name in sorted(features):
        for tag, value in ibsi_values({name: features[name]}).items():
            if tag in reference:
                ref, tol = reference[tag]
                ok = abs(value - ref) <= rounding_tolerance(ref, tol)
                checks.append(ReferenceCheck(name, tag, value, ref, tol, ok, KNOWN_DEVIATIONS.get(tag)))
    return checks
