"""Reproducibility metrics exactly as the paper's section 4.2, with one policy for undefined values.

* Relative error, eq. (1): ``RE(s, t) = |f_t - f_s| / |f_t|`` (the absolute value of ``f_t`` in the
  denominator, so that negative features get a non-negative error; the paper's features are
  positive). A feature is reproducible when ``RE < 0.15``.
* CCC, eq. (2): ``2 rho s_s s_t / (s_s^2 + s_t^2 + (mu_s - mu_t)^2)`` with population moments, which
  equals ``2 cov(s, t) / (var_s + var_t + (mu_s - mu_t)^2)``.

Undefined-value policy (counted and reported, never silently dropped):

* ``f_t == 0``: RE is 0 when ``f_s == 0`` too, else infinite (not reproducible).
* NaN or infinite ``f_t`` or ``f_s``: RE is NaN ("undefined"), counted as not reproducible, and
  reported in ``undefined``.
* CCC leaves out the feature pairs where either value is NaN or infinite, and reports how many; with
  fewer than 2 defined pairs, or both vectors constant and different, CCC is NaN; two identical
  constant vectors have CCC 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusionct.radiomics.features import FEATURE_CLASSES, feature_class

REPRODUCIBLE_RE = 0.15
CONCORDANT_CCC = 0.85  # a feature agrees across tumours when its CCC reaches this (Choe et al. 2019)
DEFAULT_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)


def relative_error(standard, test) -> np.ndarray:
    """Element-wise RE of ``test`` (synthesised, f_s) against ``standard`` (f_t), with the policy above."""
    f_t = np.asarray(standard, dtype=np.float64)
    f_s = np.asarray(test, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        re = np.abs(f_t - f_s) / np.abs(f_t)
    both_zero = (f_t == 0) & (f_s == 0)
    re = np.where(both_zero, 0.0, re)
    re = np.where((f_t == 0) & (f_s != 0) & np.isfinite(f_s), np.inf, re)
    undefined = ~np.isfinite(f_t) | ~np.isfinite(f_s)
    return np.where(undefined, np.nan, re)


def reproducible_counts(re: np.ndarray, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """Number of features with RE <= each threshold (the paper's Figure 4); undefined RE never counts."""
    re = np.asarray(re, dtype=np.float64).ravel()
    finite = re[np.isfinite(re)]
    return np.array([(finite <= t).sum() for t in thresholds], dtype=np.int64)


def reproducible_mask(re: np.ndarray) -> np.ndarray:
    """Which features are reproducible (RE < 0.15); an undefined RE is not."""
    return np.nan_to_num(np.asarray(re, dtype=np.float64), nan=np.inf) < REPRODUCIBLE_RE


def ccc(standard, test) -> tuple[float, int]:
    """Concordance correlation coefficient (eq. 2) of two vectors; returns (CCC, pairs left out as undefined)."""
    x = np.asarray(standard, dtype=np.float64).ravel()
    y = np.asarray(test, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    dropped = int((~keep).sum())
    x, y = x[keep], y[keep]
    if x.size < 2:
        return float("nan"), dropped
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(), y.var()
    cov = ((x - mx) * (y - my)).mean()
    denominator = vx + vy + (mx - my) ** 2
    if denominator == 0:
        return 1.0, dropped  # identical constant vectors
    return float(2 * cov / denominator), dropped


@dataclass
class ClassCCC:
    feature_class: str
    ccc: float
    features: int
    undefined: int


def class_ccc(standard: dict[str, float], test: dict[str, float], classes=FEATURE_CLASSES) -> dict[str, ClassCCC]:
    """CCC per feature class between the standard and test feature vectors of one tumour (Table 1)."""
    missing = sorted(set(standard) ^ set(test))
    if missing:
        raise ValueError(f"standard and test features differ in {len(missing)} names, e.g. {missing[:3]}")
    out = {}
    for cls in classes:
        names = sorted(n for n in standard if feature_class(n) == cls)
        value, undefined = ccc([standard[n] for n in names], [test[n] for n in names])
        out[cls] = ClassCCC(cls, value, len(names), undefined)
    return out


def mean_std(values) -> tuple[float, float, int]:
    """Mean and population SD over tumours of the defined values, and how many were undefined."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if not finite.size:
        return float("nan"), float("nan"), int(v.size)
    return float(finite.mean()), float(finite.std()), int(v.size - finite.size)


def per_feature_ccc(standard: np.ndarray, test: np.ndarray) -> np.ndarray:
    """CCC of each feature across tumours (columns of ``(tumours, features)`` arrays), as in radiomics papers."""
    standard = np.asarray(standard, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    return np.array([ccc(standard[:, j], test[:, j])[0] for j in range(standard.shape[1])])
