"""Standard vs test feature sets of the same tumours: RE curve, reproducible share, CCC tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_dir, csv_text, write_text_atomic
from diffusionct.radiomics.features import FEATURE_CLASSES, feature_class
from diffusionct.radiomics.metrics import (
    CONCORDANT_CCC, DEFAULT_THRESHOLDS, REPRODUCIBLE_RE, class_ccc, mean_std, per_feature_ccc, relative_error, reproducible_counts,
    reproducible_mask,
)


@dataclass
class Comparison:
    """All numbers of one standard-vs-test comparison over a set of tumours."""

    tumours: list[str]
    feature_names: list[str]
    standard: np.ndarray  # (tumours, features)
    test: np.ndarray
    re: np.ndarray  # (tumours, features)
    thresholds: np.ndarray
    curve: np.ndarray  # mean over tumours of the count of features with RE <= threshold
    reproducible_share: float  # share of (tumour, feature) pairs with RE < 0.15
    ccc_per_tumour: dict[str, dict[str, float]]  # tumour -> class -> CCC
    ccc_table: dict[str, dict[str, float]]  # class -> mean, std, tumours, undefined
    per_feature_ccc: np.ndarray
    undefined: dict[str, int] = field(default_factory=dict)

    def _columns(self, cls: str | None) -> list[int]:
        return [j for j, n in enumerate(self.feature_names) if cls is None or feature_class(n) == cls]

    def concordant_share(self, cls: str | None = None) -> float:
        """Share of the features (of one class, or all) whose CCC across tumours is >= 0.85; NaN with one tumour."""
        columns = self._columns(cls)
        if len(self.tumours) < 2 or not columns:
            return float("nan")
        return float(np.mean(self.per_feature_ccc[columns] >= CONCORDANT_CCC))

    def reproducible_share_of(self, cls: str | None = None) -> float:
        """Share of the (tumour, feature) pairs (of one class, or all) with RE < 0.15."""
        columns = self._columns(cls)
        return float(reproducible_mask(self.re[:, columns]).mean()) if columns else float("nan")

    def summary(self) -> dict:
        return {
            "tumours": len(self.tumours),
            "features_per_tumour": len(self.feature_names),
            "reproducible_share_re_below_0_15": self.reproducible_share,
            "reproducible_features_mean_count": float(self.curve[np.searchsorted(self.thresholds, REPRODUCIBLE_RE)]),
            "ccc_table": self.ccc_table,
            "per_feature_ccc_median": float(np.nanmedian(self.per_feature_ccc)) if len(self.tumours) > 1 else None,
            "concordant_share_ccc_0_85": self.concordant_share(),
            "per_class": {cls: {"reproducible_share": self.reproducible_share_of(cls),
                                "concordant_share": self.concordant_share(cls)} for cls in FEATURE_CLASSES},
            "undefined": self.undefined,
        }


def compare_features(standard: dict[str, dict[str, float]], test: dict[str, dict[str, float]],
                     thresholds=DEFAULT_THRESHOLDS) -> Comparison:
    """Compare feature dicts of the same tumours (keys) computed on standard and test images."""
    tumours = sorted(set(standard) & set(test))
    if not tumours:
        raise DiffusionCTError("no tumour has features in both the standard and the test set")
    names = sorted(set.intersection(*(set(standard[t]) for t in tumours), *(set(test[t]) for t in tumours)))
    if not names:
        raise DiffusionCTError("standard and test feature sets share no feature names")
    s = np.array([[standard[t][n] for n in names] for t in tumours], dtype=np.float64)
    x = np.array([[test[t][n] for n in names] for t in tumours], dtype=np.float64)
    re = relative_error(s, x)
    curve = np.array([reproducible_counts(row, thresholds) for row in re]).mean(axis=0)
    share = float(reproducible_mask(re).mean())
    per_tumour = {}
    undefined_ccc = 0
    for t in tumours:
        result = class_ccc({n: standard[t][n] for n in names}, {n: test[t][n] for n in names})
        per_tumour[t] = {c: r.ccc for c, r in result.items()}
        undefined_ccc += sum(r.undefined for r in result.values())
    table = {}
    for cls in FEATURE_CLASSES:
        mean, std, undefined = mean_std([per_tumour[t][cls] for t in tumours])
        table[cls] = {"mean": mean, "std": std, "tumours": len(tumours), "undefined": undefined,
                      "features": sum(1 for n in names if feature_class(n) == cls)}
    pf = per_feature_ccc(s, x) if len(tumours) > 1 else np.full(len(names), np.nan)
    undefined = {
        "re_undefined": int(np.isnan(re).sum()), "re_infinite": int(np.isinf(re).sum()),
        "standard_nonfinite": int((~np.isfinite(s)).sum()), "test_nonfinite": int((~np.isfinite(x)).sum()),
        "ccc_pairs_left_out": undefined_ccc,
    }
    return Comparison(tumours, names, s, x, re, np.asarray(thresholds), curve, share, per_tumour, table, pf, undefined)


def exact_number(value) -> str:
    """A number in full (round-trip) precision, as any CSV reader parses it: ``nan``, ``inf``, never numpy's
    ``np.float64(...)`` repr."""
    return repr(float(value))


def features_csv(features: dict[str, dict[str, float]]) -> str:
    """One row per tumour, one column per feature (the union of names; empty where absent)."""
    names = sorted(set().union(*(f.keys() for f in features.values()))) if features else []
    return csv_text(["tumour", *names], ([key, *(exact_number(f[n]) if n in f else "" for n in names)]
                                           for key, f in features.items()))


def write_comparison(result: Comparison, out_dir: Path, overwrite: bool = False, extra: dict | None = None) -> Path:
    """CSV files and ``summary.json`` of a comparison, written atomically into ``out_dir``."""
    with atomic_output_dir(Path(out_dir), overwrite=overwrite) as tmp:
        write_comparison_files(result, tmp, extra)
    return Path(out_dir)


def write_comparison_files(result: Comparison, folder: Path, extra: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "re_curve.csv", csv_text(
        ["threshold", "mean_reproducible_features", "share"],
        ([f"{t:.2f}", f"{c:.3f}", f"{c / len(result.feature_names):.4f}"] for t, c in zip(result.thresholds, result.curve))))
    write_text_atomic(folder / "ccc_table.csv", csv_text(
        ["class", "mean", "std", "tumours", "undefined", "features"],
        ([c, f"{v['mean']:.4f}", f"{v['std']:.4f}", v["tumours"], v["undefined"], v["features"]] for c, v in result.ccc_table.items())))
    write_text_atomic(folder / "ccc_per_tumour.csv", csv_text(
        ["tumour", *FEATURE_CLASSES], ([t, *(exact_number(result.ccc_per_tumour[t][c]) for c in FEATURE_CLASSES)] for t in result.tumours)))
    write_text_atomic(folder / "relative_error.csv", csv_text(
        ["tumour", "feature", "standard", "test", "re"],
        ([t, n, exact_number(result.standard[i, j]), exact_number(result.test[i, j]), exact_number(result.re[i, j])]
         for i, t in enumerate(result.tumours) for j, n in enumerate(result.feature_names))))
    write_text_atomic(folder / "per_feature_ccc.csv", csv_text(
        ["feature", "class", "ccc"], ([n, feature_class(n), exact_number(v)] for n, v in zip(result.feature_names, result.per_feature_ccc))))
    write_text_atomic(folder / "summary.json", json.dumps({**result.summary(), **(extra or {})}, indent=2, allow_nan=True))
