"""The reliability flag: how much standardization moved each feature, from two feature tables."""

from __future__ import annotations

import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.radiomics.compare import features_csv
from diffusionct.radiomics.reliability import feature_reliability, read_feature_csv

BEFORE = {"t1": {"ID_mean": 40.0, "GLCM_contrast": 2.0, "IH_entropy": 0.0},
          "t2": {"ID_mean": 50.0, "GLCM_contrast": 4.0, "IH_entropy": 0.0},
          "t3": {"ID_mean": 60.0, "GLCM_contrast": 1.0, "IH_entropy": 0.0}}
AFTER = {"t1": {"ID_mean": 41.0, "GLCM_contrast": 6.0, "IH_entropy": 0.0},
         "t2": {"ID_mean": 49.0, "GLCM_contrast": 4.4, "IH_entropy": 1.0},
         "t3": {"ID_mean": 60.0, "GLCM_contrast": 3.0, "IH_entropy": 0.0}}


def test_median_change_flags_what_standardization_moved():
    rows = {r.feature: r for r in feature_reliability(BEFORE, AFTER, threshold=0.15)}
    assert rows["ID_mean"].median_change == pytest.approx(0.02) and not rows["ID_mean"].flagged  # 1/50, 1/40, 0
    assert rows["GLCM_contrast"].median_change == pytest.approx(2.0) and rows["GLCM_contrast"].flagged  # 2, 0.1, 2
    # 0 -> 0 is no change; 0 -> 1 is an infinite one (RE's policy): the median of (0, inf, 0) is 0
    assert rows["IH_entropy"].median_change == 0.0 and rows["IH_entropy"].tumours == 3
    assert rows["GLCM_contrast"].feature_class == "GLCM"
    assert {r.feature for r in feature_reliability(BEFORE, AFTER, threshold=5.0) if r.flagged} == set()


def test_tables_without_common_tumours_or_features_are_refused():
    with pytest.raises(DiffusionCTError, match="no tumour"):
        feature_reliability(BEFORE, {"other": AFTER["t1"]})
    with pytest.raises(DiffusionCTError, match="no feature"):
        feature_reliability(BEFORE, {t: {"X_other": 1.0} for t in AFTER})
    with pytest.raises(DiffusionCTError, match="positive"):
        feature_reliability(BEFORE, AFTER, threshold=float("nan"))


def test_command_reads_feature_tables_and_writes_the_flags(tmp_path, capsys):
    before, after, out = tmp_path / "before.csv", tmp_path / "after.csv", tmp_path / "flags.csv"
    before.write_text(features_csv(BEFORE))
    after.write_text(features_csv(AFTER))
    assert read_feature_csv(before) == BEFORE
    assert main(["reliability", "--before", str(before), "--after", str(after), "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "feature,class,median_change,tumours,trusted"
    trusted = {line.split(",")[0]: line.split(",")[-1] for line in lines[1:]}
    assert trusted == {"GLCM_contrast": "no", "ID_mean": "yes", "IH_entropy": "yes"}
    assert "2 of 3 features trusted" in capsys.readouterr().out
    before.write_text("tumour,ID_mean\nt1,abc\n")
    assert main(["reliability", "--before", str(before), "--after", str(after), "-o", str(tmp_path / "x.csv")]) == 2
    assert "not a number" in capsys.readouterr().err


def test_flags_are_checked_against_the_target():
    """With the target known: the flagged feature misses on every tumour, the trusted ones on none; the AUC ranks
    the one that misses above the others."""
    from diffusionct.radiomics.reliability import check_flags

    standard = {t: {**BEFORE[t], "GLCM_contrast": BEFORE[t]["GLCM_contrast"]} for t in BEFORE}
    standard["t2"]["IH_entropy"] = 1.0  # t2's entropy: 0 -> 1 is a hit for the standardization
    for t in standard:
        standard[t]["ID_mean"] = AFTER[t]["ID_mean"]
    rows = feature_reliability(BEFORE, AFTER)
    check = check_flags(rows, standard, AFTER)
    assert (check.features, check.flagged) == (3, 1)
    # GLCM_contrast (flagged) is off its source value, which the target keeps, on t1 and t3 (RE 2) and on t2 (0.1):
    assert check.miss_share_flagged == pytest.approx(2 / 3)
    assert check.miss_share_trusted == pytest.approx(0.0)  # ID_mean equals the target; entropy 0 = 0 and 1 = 1
    assert check.auc == 1.0
    with pytest.raises(DiffusionCTError, match="shares no tumour"):
        check_flags(rows, {"other": standard["t1"]}, AFTER)


def test_roc_auc_is_the_mann_whitney_statistic():
    import numpy as np
    from scipy.stats import mannwhitneyu

    from diffusionct.radiomics.reliability import roc_auc

    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.3
    score = np.round(rng.normal(size=300) + positive, 1)  # rounded: ties count half
    expected = mannwhitneyu(score[positive], score[~positive]).statistic / (positive.sum() * (~positive).sum())
    assert roc_auc(positive, score) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(roc_auc(np.ones(4, bool), np.arange(4.0)))
