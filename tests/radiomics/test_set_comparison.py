"""Set-against-set judging (no twins): identical sets agree, a shifted or smoothed set does not."""

import numpy as np
import pytest
from scipy import ndimage

from diffusionct.radiomics.features import FeatureSettings
from diffusionct.radiomics.set_comparison import compare_sets, measure_series

SETTINGS = FeatureSettings(setting={"binWidth": 25, "padDistance": 2}, classes=["ID", "GLCM"], dimensions=["3D"])


def _patient(seed: int, smooth: float = 0.0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:6, :128, :128]
    body = np.hypot(yy - 64, xx - 64) < 58
    noise = rng.normal(0, 40, body.shape)
    if smooth:
        noise = ndimage.gaussian_filter(noise, (0, smooth, smooth)) * 2
    hu = np.where(body, 40.0 + shift, -1000.0) + noise * body
    tumour = (np.hypot(yy - 64, xx - 50) < 12) & (zz > 0) & (zz < 5)
    return np.round(hu), tumour


def _set(seeds, **kwargs):
    return [measure_series(*_patient(s, **kwargs), (0.8, 0.8, 2.0), SETTINGS) for s in seeds]


def test_a_set_against_itself_and_against_other_kernels():
    standard = _set([1, 2, 3])
    same = compare_sets(standard, standard)
    assert same["nps_frequency_error"] == 0 and same["feature_means_within_15pct"] == 1.0
    assert same["mean_ks_statistic"] == 0 and same["median_standardized_difference"] == 0
    other_patients = compare_sets(_set([4, 5, 6]), standard)
    smoother = compare_sets(_set([4, 5, 6], smooth=1.5), standard)
    assert other_patients["nps_frequency_error"] < 0.05 < smoother["nps_frequency_error"]
    assert smoother["feature_means_within_15pct"] < other_patients["feature_means_within_15pct"]
    assert smoother["median_standardized_difference"] > other_patients["median_standardized_difference"]
    assert smoother["series_with_noise_rois"] == 3 and smoother["features"] > 20


def test_series_without_soft_tissue_rois_are_left_out_of_the_noise_average():
    hu, tumour = _patient(1)
    air = np.full_like(hu, -1000.0)
    air[tumour] = 40.0
    measured = measure_series(air, tumour, (0.8, 0.8, 2.0), SETTINGS)
    assert np.isnan(measured.nps_mean_frequency) and measured.features
    result = compare_sets([measured, *_set([2])], _set([3]))
    assert result["series_with_noise_rois"] == 1 and np.isfinite(result["nps_mean_frequency"])
    assert result["nps_frequency_error"] == pytest.approx(abs(result["nps_mean_frequency"] - _set([3])[0].nps_mean_frequency)
                                                           / _set([3])[0].nps_mean_frequency)
