import math

import numpy as np
import pytest

from diffusionct.radiomics.compare import compare_features
from diffusionct.radiomics.metrics import ccc, class_ccc, mean_std, relative_error, reproducible_counts, reproducible_mask


def test_relative_error_by_hand():
    re = relative_error([10.0, -4.0, 2.0, 0.0, 0.0, np.nan, 5.0], [11.0, -5.0, 2.0, 0.0, 3.0, 1.0, np.inf])
    assert re[0] == pytest.approx(0.1)
    assert re[1] == pytest.approx(0.25)  # |f_t| in the denominator
    assert re[2] == 0.0
    assert re[3] == 0.0  # both zero
    assert math.isinf(re[4])  # f_t = 0, f_s != 0
    assert math.isnan(re[5]) and math.isnan(re[6])  # undefined


def test_reproducible_counts_and_mask():
    re = np.array([0.0, 0.1, 0.149, 0.15, 0.5, np.inf, np.nan])
    counts = reproducible_counts(re, thresholds=[0.0, 0.15, 1.0])
    assert counts.tolist() == [1, 4, 5]  # RE <= threshold; inf and NaN never count
    assert reproducible_mask(re).tolist() == [True, True, True, False, False, False, False]  # strictly below 0.15


def test_ccc_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, x)[0] == pytest.approx(1.0)
    assert ccc(x - 2.5, 2.5 - x)[0] == pytest.approx(-1.0)
    assert ccc(x, -x)[0] == pytest.approx(2 * -1.25 / (1.25 + 1.25 + 25))
    # y = x + 1: cov = var = 1.25, (mu diff)^2 = 1 -> 2*1.25 / (1.25 + 1.25 + 1)
    assert ccc(x, x + 1)[0] == pytest.approx(2.5 / 3.5)
    # y = 2x: cov = 2.5, var_y = 5, mu diff 2.5 -> 5 / (1.25 + 5 + 6.25)
    assert ccc(x, 2 * x)[0] == pytest.approx(5 / 12.5)


def test_ccc_nan_policy():
    value, dropped = ccc([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, np.inf])
    assert dropped == 2 and value == pytest.approx(1.0)
    assert math.isnan(ccc([1.0, np.nan], [1.0, 2.0])[0])
    assert ccc([3.0, 3.0], [3.0, 3.0])[0] == 1.0


def test_class_ccc_groups_by_prefix():
    standard = {"GLCM_3D_original_A": 1.0, "GLCM_3D_original_B": 2.0, "ID_3D_original_Mean": 5.0, "ID_3D_original_Max": 9.0}
    test = {"GLCM_3D_original_A": 1.0, "GLCM_3D_original_B": 2.0, "ID_3D_original_Mean": 9.0, "ID_3D_original_Max": 5.0}
    result = class_ccc(standard, test, classes=("GLCM", "ID"))
    assert result["GLCM"].ccc == pytest.approx(1.0) and result["GLCM"].features == 2
    assert result["ID"].ccc == pytest.approx(-1.0)


def test_mean_std_counts_undefined():
    assert mean_std([0.5, 1.0, np.nan]) == (pytest.approx(0.75), pytest.approx(0.25), 1)


def test_compare_features_table_and_curve():
    rng = np.random.default_rng(0)
    names = [f"{c}_3D_original_f{i}" for c in ("ID", "IH", "GLCM", "GLRLM", "NID", "GOH") for i in range(5)]
    standard = {f"t{k}": {n: float(v) for n, v in zip(names, rng.uniform(1, 10, len(names)))} for k in range(4)}
    test = {t: {n: v * 1.1 for n, v in f.items()} for t, f in standard.items()}  # every RE = 0.1
    result = compare_features(standard, test)
    assert result.reproducible_share == 1.0
    assert result.curve[list(result.thresholds).index(0.05)] == 0 and result.curve[-1] == len(names)
    assert all(0.9 < row["mean"] <= 1.0 for row in result.ccc_table.values())
    worse = compare_features(standard, {t: {n: v * 2 for n, v in f.items()} for t, f in standard.items()})
    assert worse.reproducible_share == 0.0
    assert all(worse.ccc_table[c]["mean"] < result.ccc_table[c]["mean"] for c in result.ccc_table)


def test_comparison_files_hold_plain_numbers(tmp_path):
    """Every number in the CSVs parses as a float in full precision (numpy 2's repr writes ``np.float64(x)``)."""
    import csv

    from diffusionct.radiomics.compare import features_csv, write_comparison

    names = [f"{c}_3D_original_f" for c in ("ID", "IH", "GLCM")]
    standard = {f"t{k}": {n: np.float64(1 / 3 + k + i) for i, n in enumerate(names)} for k in range(3)}
    test = {t: {n: v * np.float64(1.05) for n, v in f.items()} for t, f in standard.items()}
    folder = write_comparison(compare_features(standard, test), tmp_path / "cmp")
    rows = list(csv.DictReader((folder / "relative_error.csv").open()))
    assert len(rows) == 9
    for row in rows:
        assert float(row["standard"]) == standard[row["tumour"]][row["feature"]]
        assert abs(float(row["re"]) - 0.05) < 1e-12
    line = features_csv(standard).splitlines()[1].split(",")
    assert [float(v) for v in line[1:]] == [float(standard["t0"][n]) for n in sorted(names)]
    # per-tumour CCCs in full: class means over a subset of tumours are recomputed from them (benchmarks/gap_table.py)
    rng = np.random.default_rng(1)
    names = [f"{c}_3D_original_f{i}" for c in ("ID", "IH", "GLCM") for i in range(4)]
    standard = {f"t{k}": {n: float(v) for n, v in zip(names, rng.uniform(1, 10, len(names)))} for k in range(3)}
    test = {t: {n: v * rng.uniform(0.9, 1.1) for n, v in f.items()} for t, f in standard.items()}
    result = compare_features(standard, test)
    folder = write_comparison(result, tmp_path / "ccc")
    for row in csv.DictReader((folder / "ccc_per_tumour.csv").open()):
        assert [float(row[c]) for c in ("ID", "IH", "GLCM")] == [result.ccc_per_tumour[row["tumour"]][c]
                                                               for c in ("ID", "IH", "GLCM")]
