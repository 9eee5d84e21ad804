"""Which features a standardization can be trusted on: the more it had to move a feature, the likelier it misses.

Standardization changes each tumour's features from their source-kernel values towards the standard kernel's. A
feature it moves a little (first-order statistics of a large region, shape) ends close to the target's value; one it
moves a lot (fine texture at a sharp kernel's frequencies) is one whose target value the image had lost, and which a
standardization can only estimate. Measured on the simulated test set (docs/results.md, "Feature reliability"),
the median relative change of a feature across tumours ranks the features that miss RE < 0.15 against the target
far better than the spread of temperature-1 diffusion samples does, which is orders of magnitude smaller than the
errors (the errors are the standardization's bias, not its sampling noise).

The judge's own module: it reads feature tables, never the methods that made them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import csv_text, read_csv_rows
from diffusionct.radiomics.features import feature_class
from diffusionct.radiomics.metrics import relative_error, reproducible_mask

# a feature whose median relative change across tumours exceeds this is flagged; chosen on half of the simulated
# test set's cases (B30f -> B70f, the shipped default gap) and measured on the other half (docs/results.md)
CHANGE_THRESHOLD = 0.15


@dataclass(frozen=True)
class FeatureReliability:
    feature: str
    median_change: float  # median over tumours of |after - before| / |before|
    tumours: int  # tumours whose change is defined (both values finite)
    flagged: bool  # median change above the threshold: do not trust this feature across kernels

    @property
    def feature_class(self) -> str:
        return feature_class(self.feature)


def read_feature_csv(path: str | Path) -> dict[str, dict[str, float]]:
    """A feature table as `diffusionct features` writes it (a tumour column, then one column per feature)."""
    path = Path(path)
    rows = read_csv_rows(path, "feature table")
    if len(rows) < 2 or len(rows[0]) < 2:
        raise DiffusionCTError(f"{path}: not a feature table (a header of tumour and feature names, then one row a tumour)")
    names = rows[0][1:]
    table = {}
    for row in rows[1:]:
        if len(row) != len(rows[0]):
            raise DiffusionCTError(f"{path}: row '{row[0] if row else ''}' has {len(row)} columns, the header {len(rows[0])}")
        try:
            table[row[0]] = {n: float(v) for n, v in zip(names, row[1:]) if v != ""}
        except ValueError:
            raise DiffusionCTError(f"{path}: row '{row[0]}' holds a value that is not a number") from None
    return table


def feature_reliability(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                        threshold: float = CHANGE_THRESHOLD) -> list[FeatureReliability]:
    """Per feature, how much the standardization moved it (``before``: the source images' features, ``after``: the
    standardized images', by tumour) and whether that flags it."""
    if not (math.isfinite(threshold) and threshold > 0):
        raise DiffusionCTError(f"the change threshold must be a positive number, got {threshold}")
    tumours = sorted(set(before) & set(after))
    if len(tumours) < 1:
        raise DiffusionCTError("the two feature tables share no tumour (their first columns must name the same tumours)")
    names = sorted(set.intersection(*(set(before[t]) & set(after[t]) for t in tumours)))
    if not names:
        raise DiffusionCTError("the two feature tables share no feature; compute both with the same params")
    b = np.array([[before[t][n] for n in names] for t in tumours], dtype=np.float64)
    a = np.array([[after[t][n] for n in names] for t in tumours], dtype=np.float64)
    change = relative_error(b, a)  # |after - before| / |before|, with its policy for zeros and non-finite values
    defined = ~np.isnan(change)  # an infinite change (from 0) counts; an undefined one (a NaN feature) does not
    result = []
    for j, name in enumerate(names):
        values = change[defined[:, j], j]
        median = float(np.median(values)) if values.size else math.nan
        result.append(FeatureReliability(name, median, int(values.size), not (median <= threshold)))
    return result


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``positive`` (the Mann-Whitney statistic: the chance that a positive scores above a
    negative, ties counting half), NaN scores left out; NaN when one side is empty."""
    keep = np.isfinite(score)
    positive, score = np.asarray(positive)[keep].astype(bool), np.asarray(score)[keep]
    if positive.all() or not positive.any():
        return float("nan")
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (pos.size * neg.size))


@dataclass(frozen=True)
class FlagCheck:
    """How the flags fare where the target kernel's values are known (a paired test set)."""

    features: int
    flagged: int
    miss_share_flagged: float  # share of the flagged features' (tumour, feature) pairs off the target by RE >= 0.15
    miss_share_trusted: float
    auc: float  # ROC AUC of the median change for "misses on most tumours", per feature

    @property
    def trusted(self) -> int:
        return self.features - self.flagged


def check_flags(rows: list[FeatureReliability], standard: dict[str, dict[str, float]],
                after: dict[str, dict[str, float]]) -> FlagCheck:
    """The flags of ``rows`` judged against the target kernel's features of the same tumours (``standard``)."""
    tumours = sorted(set(standard) & set(after))
    rows = [r for r in rows if all(r.feature in standard[t] and r.feature in after[t] for t in tumours)]
    if not tumours or not rows:
        raise DiffusionCTError("the target's feature table shares no tumour or feature with the flagged ones")
    s = np.array([[standard[t][r.feature] for r in rows] for t in tumours], dtype=np.float64)
    a = np.array([[after[t][r.feature] for r in rows] for t in tumours], dtype=np.float64)
    miss = ~reproducible_mask(relative_error(s, a))  # an undefined RE counts as a miss, as the evaluation counts it
    flagged = np.array([r.flagged for r in rows])

    def share(columns: np.ndarray) -> float:
        return float(miss[:, columns].mean()) if columns.any() else math.nan

    return FlagCheck(len(rows), int(flagged.sum()), share(flagged), share(~flagged),
                     roc_auc(miss.mean(axis=0) > 0.5, np.array([r.median_change for r in rows])))


def reliability_csv(rows: list[FeatureReliability]) -> str:
    return csv_text(["feature", "class", "median_change", "tumours", "trusted"],
                    ([r.feature, r.feature_class, repr(r.median_change), r.tumours, "no" if r.flagged else "yes"] for r in rows))
