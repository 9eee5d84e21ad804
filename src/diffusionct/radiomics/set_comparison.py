"""Judging standardization without twins: a standardized set against a standard-kernel set of other patients.

With unpaired real data there is no same-scan target image, so distributions are compared (issue 12):
noise texture by the project's fixed procedure (spectra.kernel_texture, each series its own ROIs) and
tumour features set against set. Per feature: the means over the two sets' tumours (share of features
whose means differ by less than 15 %, the RE threshold applied to set means), the two-sample KS
statistic (a p-value needs more tumours than a small study has), and |mean difference| / the standard
set's SD (median over features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from diffusionct.radiomics.features import FeatureSettings, extract_features
from diffusionct.kernels.spectra import kernel_texture


@dataclass
class SeriesMeasurement:
    """What the comparison needs of one series: its noise texture and its tumour's features."""

    nps_mean_frequency: float  # cycles/mm; NaN when the fixed procedure finds no soft-tissue ROI
    noise_sd: float  # HU
    features: dict[str, float]


def measure_series(hu: np.ndarray, tumour: np.ndarray, spacing, settings: FeatureSettings | None = None) -> SeriesMeasurement:
    try:
        texture = kernel_texture(hu, {"series": hu}, float(spacing[0]))["series"]
        frequency, noise = texture.nps_mean_frequency, texture.noise_sd
    except ValueError:  # no soft-tissue ROI 10 px inside the body (e.g. a crop around the tumour)
        frequency = noise = float("nan")
    return SeriesMeasurement(frequency, noise, extract_features(hu, tumour > 0, spacing, settings))


def compare_sets(test: list[SeriesMeasurement], standard: list[SeriesMeasurement]) -> dict[str, float]:
    """How close the ``test`` set's noise texture and tumour-feature distributions are to the ``standard`` set's."""
    names = sorted(set.intersection(*(set(m.features) for m in test + standard)))
    ours = np.array([[m.features[n] for n in names] for m in test], float)
    theirs = np.array([[m.features[n] for n in names] for m in standard], float)
    finite = np.isfinite(ours).all(0) & np.isfinite(theirs).all(0)
    ours, theirs = ours[:, finite], theirs[:, finite]
    mean_ours, mean_theirs = ours.mean(0), theirs.mean(0)
    relative = np.abs(mean_ours - mean_theirs) / np.maximum(np.abs(mean_theirs), 1e-12)
    ks = [stats.ks_2samp(ours[:, i], theirs[:, i]).statistic for i in range(ours.shape[1])]
    frequency = float(np.nanmean([m.nps_mean_frequency for m in test]))
    target_frequency = float(np.nanmean([m.nps_mean_frequency for m in standard]))
    return {"nps_mean_frequency": frequency, "nps_frequency_error": abs(frequency - target_frequency) / target_frequency,
            "noise_sd": float(np.nanmean([m.noise_sd for m in test])),
            "series_with_noise_rois": int(np.isfinite([m.noise_sd for m in test]).sum()),
            "feature_means_within_15pct": float(np.mean(relative < 0.15)), "mean_ks_statistic": float(np.mean(ks)),
            "median_standardized_difference": float(np.median(np.abs(mean_ours - mean_theirs) / (theirs.std(0) + 1e-12))),
            "features": int(finite.sum())}
