import csv
import json
import re
from collections import Counter

import numpy as np
import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.io import read_dicom_series, write_nifti
from diffusionct.io.image import read_mask
from diffusionct.radiomics import FEATURE_CLASSES, FeatureSettings, extract_features
from diffusionct.radiomics.features import gradient_orientation_features, intensity_histogram_features, discretise

TINY = FeatureSettings(setting={"binWidth": 25, "padDistance": 2}, image_types={"original": {}}, dimensions=["3D"])


def _blob(seed=0, shape=(6, 20, 20)):
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 30, size=shape)
    z, y, x = np.indices(shape)
    mask = ((z - 3) / 3) ** 2 + ((y - 10) / 7) ** 2 + ((x - 10) / 7) ** 2 < 1
    return image, mask


@pytest.mark.parametrize("angle_deg", [0, 45, 90, 180, -90])
def test_goh_of_a_ramp_has_one_orientation(angle_deg):
    angle = np.deg2rad(angle_deg)
    z, y, x = np.indices((3, 24, 24)).astype(float)
    image = np.cos(angle) * x + np.sin(angle) * y  # gradient points along angle
    mask = np.zeros(image.shape, bool)
    mask[:, 4:20, 4:20] = True
    feats = gradient_orientation_features(image, mask, (1.0, 1.0, 1.0), bins_2d=8)
    expected_bin = int(round(angle_deg / 45)) % 8 + 4  # bins centred on multiples of 45 degrees, -180 first
    expected_bin %= 8
    assert feats[f"bin{expected_bin:02d}"] == pytest.approx(1.0)
    assert feats["ResultantLength"] == pytest.approx(1.0)
    assert feats["MeanMagnitude"] == pytest.approx(1.0)
    assert feats["Entropy"] == pytest.approx(0.0)


def test_goh_of_a_radial_cone_is_uniform():
    y, x = np.indices((64, 64)) - 31.5
    image = np.repeat(np.sqrt(x**2 + y**2)[None], 3, axis=0)
    mask = np.repeat(((x**2 + y**2) < 24**2)[None], 3, axis=0)  # a disc: every direction equally often
    feats = gradient_orientation_features(image, mask, (1.0, 1.0, 1.0), bins_2d=8)
    freqs = [feats[f"bin{k:02d}"] for k in range(8)]
    assert max(freqs) - min(freqs) < 0.03
    assert feats["ResultantLength"] < 0.05


def test_intensity_histogram_by_hand():
    levels = np.array([1, 1, 2, 4])
    f = intensity_histogram_features(levels)
    assert f["Mean"] == 2.0 and f["Mode"] == 1.0 and f["Range"] == 3.0
    assert f["Uniformity"] == pytest.approx(0.5**2 + 0.25**2 + 0.25**2)
    assert f["Entropy"] == pytest.approx(1.5)
    assert discretise(np.array([-1000.0, -990.0, -975.0, 20.0]), 25).tolist() == [1, 1, 2, 41]


def test_all_six_classes_on_a_blob():
    image, mask = _blob()
    features = extract_features(image, mask, (1.0, 1.0, 2.0), TINY)
    assert set(Counter(n.split("_")[0] for n in features)) == set(FEATURE_CLASSES)
    assert features["ID_3D_original_Mean"] == pytest.approx(image[mask].mean())


def test_real_tumour_default_features(sts_case):
    root = sts_case("STS_019")
    volume = read_dicom_series(root / "dicom" / "image")
    mask = read_mask(root / "dicom" / "mask" / "RS.dcm", volume, "GTV_Mass_CT")
    features = extract_features(volume.hu, mask, volume.spacing)
    classes = Counter(n.split("_")[0] for n in features)
    assert len(features) >= 1000
    assert set(classes) == set(FEATURE_CLASSES)
    assert features["ID_3D_original_Mean"] == pytest.approx(float(volume.hu[mask].mean()), rel=1e-6)
    assert sum(1 for v in features.values() if not np.isfinite(v)) < 0.01 * len(features)


@pytest.mark.parametrize("case", ["empty", "one_voxel", "nan_inside", "other_grid"])
def test_bad_inputs_give_clear_errors(case):
    image, mask = _blob()
    if case == "empty":
        mask[:] = False
        match = "empty"
    elif case == "one_voxel":
        mask[:] = False
        mask[3, 10, 10] = True
        match = "1 voxel"
    elif case == "nan_inside":
        image[3, 10, 10] = np.nan
        match = "NaN"
    else:
        mask = mask[:, :-1]
        match = "differs"
    with pytest.raises(DiffusionCTError, match=match):
        extract_features(image, mask, (1.0, 1.0, 1.0), TINY)


def test_nan_outside_mask_is_treated_as_air():
    image, mask = _blob()
    image[0, 0, 0] = np.nan
    features = extract_features(image, mask, (1.0, 1.0, 1.0), TINY)
    assert np.isfinite(features["ID_3D_original_Mean"])


def test_params_file_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("setting: {binWidth: 25}\nclasses: [GLCM, SHAPE]\n")
    with pytest.raises(DiffusionCTError, match="SHAPE"):
        FeatureSettings.load(bad)
    bad.write_text("imagetype: {}\n")
    with pytest.raises(DiffusionCTError, match="unknown keys"):
        FeatureSettings.load(bad)
    with pytest.raises(DiffusionCTError, match="not found"):
        FeatureSettings.load(tmp_path / "missing.yaml")


def test_features_and_compare_cli(tmp_path, capsys):
    from tests.conftest import make_volume

    params = tmp_path / "params.yaml"
    params.write_text("setting: {binWidth: 25, padDistance: 2}\nimageType: {original: {}}\ndimensions: [3D]\n")
    for folder in ("ref", "test", "masks"):
        (tmp_path / folder).mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        image, mask = _blob(seed)
        volume = make_volume(shape=image.shape).with_hu(image)
        labels = mask.astype(np.uint8)
        labels[:, :, :3] = 0
        write_nifti(volume, tmp_path / "ref" / f"{name}.nii.gz")
        write_nifti(volume.with_hu(image * 1.05), tmp_path / "test" / f"{name}.nii.gz")
        write_nifti(volume, tmp_path / "masks" / f"{name}.nii.gz", array=labels)
    out = tmp_path / "features.csv"
    assert main(["features", "-i", str(tmp_path / "ref" / "a.nii.gz"), "-m", str(tmp_path / "masks" / "a.nii.gz"),
                 "-o", str(out), "--params", str(params), "--workers", "1"]) == 0
    assert out.read_text().count("\n") == 2
    report = tmp_path / "cmp"
    assert main(["compare", "--reference", str(tmp_path / "ref"), "--test", str(tmp_path / "test"), "--masks",
                 str(tmp_path / "masks"), "-o", str(report), "--params", str(params), "--workers", "1"]) == 0
    summary = json.loads((report / "summary.json").read_text())
    assert summary["tumours"] == 2 and set(summary["ccc_table"]) == set(FEATURE_CLASSES)
    assert (report / "re_curve.csv").read_text().count("\n") == 102
    (tmp_path / "test" / "b.nii.gz").unlink()
    assert main(["compare", "--reference", str(tmp_path / "ref"), "--test", str(tmp_path / "test"), "--masks",
                 str(tmp_path / "masks"), "-o", str(tmp_path / "cmp2")]) == 2
    assert "no item for b" in capsys.readouterr().err
    assert not (tmp_path / "cmp2").exists()


def test_features_from_a_pyradiomics_batch_file(tmp_path, capsys):
    """pyradiomics' batch CSV as it is (Image, Mask, optional Label, other columns ignored): one row per tumour, a row
    naming a missing image is a warning, the same tumours as -i/-m give."""
    from tests.conftest import make_volume

    params = tmp_path / "params.yaml"
    params.write_text("setting: {binWidth: 25, padDistance: 2}\nimageType: {original: {}}\ndimensions: [3D]\n")
    image, mask = _blob(0)
    volume = make_volume(shape=image.shape).with_hu(image)
    labels = mask.astype(np.uint8)
    labels[:, :, :10] *= 2  # two tumours: labels 1 and 2
    write_nifti(volume, tmp_path / "ct.nii.gz")
    write_nifti(volume, tmp_path / "seg.nii.gz", array=labels)
    batch = tmp_path / "cases.csv"
    batch.write_text("ID,Image,Mask,Label\np1,ct.nii.gz,seg.nii.gz,2\np2,ct.nii.gz,seg.nii.gz,\np3,gone.nii.gz,seg.nii.gz,1\n")
    out = tmp_path / "batch.csv"
    assert main(["features", "--batch", str(batch), "-o", str(out), "--params", str(params), "--jobs", "1"]) == 0
    assert "row 4" in capsys.readouterr().out  # the missing image, warned about
    rows = out.read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1:ct.nii.gz:2", "2:ct.nii.gz:1", "2:ct.nii.gz:2"]
    single = tmp_path / "single.csv"
    assert main(["features", "-i", str(tmp_path / "ct.nii.gz"), "-m", str(tmp_path / "seg.nii.gz"), "-o", str(single),
                 "--params", str(params), "--workers", "1"]) == 0
    assert single.read_text().splitlines()[2].split(",")[1:] == rows[1].split(",")[1:]  # label 2, the same values
    code = main(["features", "--batch", str(batch), "-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "x.csv")])
    assert code == 2 and "not both" in capsys.readouterr().err
    pytest.importorskip("distributed")
    cluster = tmp_path / "cluster.csv"  # one task per tumour on Dask: the same file, byte for byte
    assert main(["features", "--batch", str(batch), "-o", str(cluster), "--params", str(params), "--scheduler", "local:1"]) == 0
    assert cluster.read_bytes() == out.read_bytes()


def test_intensity_histogram_follows_bin_count_as_the_texture_classes_do():
    """With binCount the IH class is discretised into that many bins (IBSI fixed bin number), as pyradiomics
    discretises the texture classes of the same run; binWidth then plays no part."""
    from radiomics import imageoperations

    image, mask = _blob(seed=3)
    runs = {}
    for width in (5, 50):
        settings = FeatureSettings(setting={"binCount": 32, "binWidth": width, "padDistance": 2},
                                   image_types={"original": {}}, dimensions=["3D"], classes=["IH", "GLCM"])
        runs[width] = extract_features(image, mask, (1.0, 1.0, 1.0), settings)
    assert runs[5]["IH_3D_original_Maximum"] == 32 and runs[5]["IH_3D_original_Minimum"] == 1
    assert runs[5] == runs[50]
    values = image[mask]
    ours = discretise(values, bin_count=32)
    theirs, _ = imageoperations.binImage(values, binCount=32)  # pyradiomics' own discretisation
    assert np.array_equal(ours, theirs)
    assert runs[5]["IH_3D_original_Mean"] == pytest.approx(ours.mean())


@pytest.mark.parametrize("key,words", [("resegmentMode", "not applied by this engine"),
                                       ("normalize", "not applied by this engine"),
                                       ("binwidth", "unknown setting(s) binwidth"),
                                       ("resegmentRange", "low 2.0 is above high 1.0"),
                                       ("resampledPixelSpacing", "three non-negative numbers"),
                                       ("outlierFilter", "positive number of SDs")])
def test_settings_that_would_be_ignored_are_refused(tmp_path, key, words):
    params = tmp_path / "p.yaml"
    value = {"resegmentRange": "[2, 1]", "outlierFilter": "-1"}.get(key, "[1, 2]")
    params.write_text(f"setting: {{binWidth: 25, {key}: {value}}}\n")
    with pytest.raises(DiffusionCTError, match=words.replace("(", r"\(").replace(")", r"\)")):
        FeatureSettings.load(params)


def _ibsi_like_tumour(seed: int = 0):
    """A 3D blob of soft tissue with some fat and air voxels inside its mask (what re-segmentation removes)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:12, :40, :40]
    mask = ((zz - 6) / 5) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 20) / 12) ** 2 < 1
    image = rng.normal(40, 30, mask.shape)
    image[mask & (rng.random(mask.shape) < 0.05)] = -939.0  # air inside the contour
    image[mask & (rng.random(mask.shape) < 0.02)] = 1500.0  # bone-like outliers
    return np.round(image), mask


def _settings(**setting) -> FeatureSettings:
    return FeatureSettings(setting={"binWidth": 25, "padDistance": 2, **setting}, classes=["ID", "IH", "GLCM"], dimensions=["3D"])


def test_range_resegmentation_and_ibsi_grey_level_numbering():
    image, mask = _ibsi_like_tumour()
    plain = extract_features(image, mask, (1, 1, 2), _settings())
    reseg = extract_features(image, mask, (1, 1, 2), _settings(resegmentRange=[-500, 400]))
    assert plain["ID_3D_original_Minimum"] == -939 and reseg["ID_3D_original_Minimum"] >= -500
    assert reseg["ID_3D_original_Maximum"] <= 400
    wide = extract_features(image, mask, (1, 1, 2), _settings(resegmentRange=[-1000, 400]))
    # IBSI numbers fixed-size bins from the lower bound: -939 HU is level floor(61 / 25) + 1 = 3 (pyradiomics: 1)
    assert wide["IH_3D_original_Minimum"] == 3
    no_bound = extract_features(image, mask, (1, 1, 2), _settings(resegmentRange=[None, 400]))
    assert no_bound["IH_3D_original_Minimum"] == 1
    # the texture classes use the same numbering: every grey level two higher, so the joint average too
    assert wide["GLCM_3D_original_JointAverage"] - no_bound["GLCM_3D_original_JointAverage"] == pytest.approx(2.0)
    assert wide["GLCM_3D_original_Contrast"] == pytest.approx(no_bound["GLCM_3D_original_Contrast"])
    # that numbering is ours alone: pyradiomics' own binning is in its module again for anyone else's calls
    from radiomics import imageoperations

    from diffusionct.radiomics import pyradiomics_classes

    assert imageoperations.getBinEdges is pyradiomics_classes._pyradiomics_bin_edges


def test_outlier_filter_removes_voxels_beyond_n_sd():
    image, mask = _ibsi_like_tumour()
    filtered = extract_features(image, mask, (1, 1, 2), _settings(resegmentRange=[-1000, 400], outlierFilter=3))
    values = image[mask]  # IBSI 2.5 (and mirp): the outlier bounds come from the ROI before re-segmentation
    low, high = values.mean() - 3 * values.std(), values.mean() + 3 * values.std()
    assert filtered["ID_3D_original_Minimum"] >= low and filtered["ID_3D_original_Maximum"] <= min(high, 400)
    kept = values[(values >= max(low, -1000)) & (values <= min(high, 400))]
    assert filtered["ID_3D_original_Mean"] == pytest.approx(kept.mean())  # the two criteria intersected, not chained
    assert filtered["ID_3D_original_Minimum"] > -939  # the air voxels were outliers of the soft tissue


def test_ibsi_grid_alignment_and_interpolation():
    from diffusionct.radiomics.preprocess import new_grid, resample

    axes = new_grid((5, 4), (2.0, 0.8), (2.0, 2.0))
    assert np.allclose(axes[0], np.arange(5))  # unchanged axis
    assert len(axes[1]) == 2 and np.isclose(axes[1].mean(), 1.5)  # ceil(4 x 0.8 / 2) voxels, centres aligned
    assert np.isclose(np.diff(axes[1])[0], 2.0 / 0.8)
    image, mask = _ibsi_like_tumour()
    same, same_mask, spacing = resample(image, mask, (1, 1, 2), (1, 1, 2))
    assert np.array_equal(same, image) and np.array_equal(same_mask, mask) and spacing == (1, 1, 2)
    coarse, coarse_mask, spacing = resample(image, mask, (1, 1, 2), (2, 2, 2))
    assert spacing == (2, 2, 2) and coarse.shape == (12, 20, 20)
    assert coarse_mask.sum() * 8 == pytest.approx(mask.sum() * 2, rel=0.1)  # the tumour keeps its volume in mm^3
    assert np.array_equal(coarse, np.round(coarse))  # CT intensities rounded after interpolation
    slicewise, _, spacing = resample(image, mask, (1, 1, 2), (2, 2, 0))
    assert slicewise.shape[0] == image.shape[0] and spacing == (2, 2, 2)
    near, near_mask, _ = resample(image, mask, (1, 1, 2), (2, 2, 2), margin=3)  # only around the tumour
    assert near_mask.sum() == coarse_mask.sum()


def test_resampled_features_use_the_new_grid():
    image, mask = _ibsi_like_tumour()
    native = extract_features(image, mask, (1, 1, 2), _settings())
    resampled = extract_features(image, mask, (1, 1, 2), _settings(resampledPixelSpacing=[2, 2, 2], interpolator="sitkBSpline"))
    assert resampled["ID_3D_original_Energy"] < 0.5 * native["ID_3D_original_Energy"]  # about a quarter of the voxels
    assert resampled != native


@pytest.mark.parametrize("preset", ["ibsi-a", "ibsi-b", "ibsi-c", "ibsi-d", "ibsi-e"])
def test_ibsi_presets_apply_their_processing(preset):
    image, mask = _ibsi_like_tumour()
    settings = FeatureSettings.load(preset)
    features = extract_features(image, mask, (0.8, 0.8, 2.0), settings)
    low = -500 if preset in ("ibsi-a", "ibsi-b") else -1000
    if preset != "ibsi-d":  # D re-segments by outliers alone, no range (IBSI 1)
        assert features["ID_3D_original_Minimum"] >= low and features["ID_3D_original_Maximum"] <= 400
    assert any(name.startswith("GLCM_2D") for name in features) == (preset in ("ibsi-a", "ibsi-b"))
    if "binCount" in settings.setting:
        assert features["IH_3D_original_Maximum"] == 32
    if preset in ("ibsi-d", "ibsi-e"):  # outliers beyond 3 SD of the ROI are gone: the air voxels
        assert features["ID_3D_original_Minimum"] > -939 and features["ID_3D_original_Maximum"] < 1500
    for name in ("GLSZM_3D_original_ZoneEntropy", "NGLDM_3D_original_dc_entr", "GLDZM_3D_original_sde",
                 "MORPH_3D_original_MeshVolume", "MORPH_3D_original_moran_i", "LI_3D_original_peak_glob", "IVH_3D_original_v10"):
        assert np.isfinite(features[name]), name
    # the morphological mask (before re-segmentation) gives the volume: about the blob's (12 x 2 mm slices, 0.8 mm pixels)
    assert features["MORPH_3D_original_MeshVolume"] == pytest.approx(_ibsi_like_tumour()[1].sum() * 0.8 * 0.8 * 2.0, rel=0.15)
    _check_aggregations_and_diagnostics(features, preset, image, mask)


def _check_aggregations_and_diagnostics(features, preset, image, mask):
    """Every IBSI aggregation of the configuration is written; the diagnostics trace each processing step."""
    two_d = preset in ("ibsi-a", "ibsi-b")
    dims = ("2D", "2Dmerged", "2Dslice", "2Dslicemerged") if two_d else ("3D", "3Dmerged")
    for dim in dims:
        assert np.isfinite(features[f"GLCM_{dim}_original_Contrast"]) and np.isfinite(features[f"GLRLM_{dim}_original_RunEntropy"])
    if two_d:  # per slice: every class without directions too
        for name in ("NID_2Dslice_original_Coarseness", "GLSZM_2Dslice_original_ZoneEntropy", "NGLDM_2Dslice_original_dc_entr",
                     "GLDZM_2Dslice_original_sde"):
            assert np.isfinite(features[name]), name
        assert features["GLCM_2Dslice_original_Contrast"] != features["GLCM_2D_original_Contrast"]
    assert features["GLCM_3Dmerged_original_Contrast"] != features["GLCM_3D_original_Contrast"]
    diag = {k.split("_", 3)[3]: v for k, v in features.items() if k.startswith("DIAG_")}
    assert [diag[f"img_dim_{a}_init_img"] for a in "xyz"] == [40, 40, 12] and diag["int_mask_vox_count_init_roi"] == mask.sum()
    assert diag["mean_int_init_img"] == pytest.approx(image.mean()) and diag["int_mask_min_int_init_roi"] == -939
    new = {"ibsi-a": (0.8, 0.8, 2.0), "ibsi-b": (2, 2, 2.0)}.get(preset, (2, 2, 2))
    assert [diag[f"vox_dim_{a}_interp_img"] for a in "xyz"] == list(new)
    assert diag["img_dim_x_interp_img"] == np.ceil(40 * 0.8 / new[0])
    assert diag["morph_mask_vox_count_reseg_roi"] == diag["int_mask_vox_count_interp_roi"] >= diag["int_mask_vox_count_reseg_roi"]
    if preset != "ibsi-d":
        assert diag["int_mask_min_int_reseg_roi"] >= (-500 if two_d else -1000) and diag["int_mask_max_int_reseg_roi"] <= 400


def test_features_cli_preset(tmp_path, capsys):
    image, mask = _ibsi_like_tumour()
    from diffusionct.io.volume import Volume

    volume = Volume(image.astype(np.float32), (0.8, 0.8, 2.0))
    write_nifti(volume, tmp_path / "ct.nii.gz")
    write_nifti(volume, tmp_path / "mask.nii.gz", array=mask.astype(np.uint8))
    assert main(["features", "-i", str(tmp_path / "ct.nii.gz"), "-m", str(tmp_path / "mask.nii.gz"), "-o", str(tmp_path / "f.csv"),
                 "--preset", "ibsi-c", "--workers", "1"]) == 0
    assert "ID_3D_original_Minimum" in (tmp_path / "f.csv").read_text()

    ours = next(csv.DictReader(open(tmp_path / "f.csv")))
    ibsi = next(csv.DictReader(open(tmp_path / "f.ibsi.csv")))
    assert float(ibsi["stat_kurt"]) == pytest.approx(float(ours["ID_3D_original_Kurtosis"]) - 3)
    assert float(ibsi["cm_contrast_3D_avg"]) == pytest.approx(float(ours["GLCM_3D_original_Contrast"]))
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'ibsi-z' (choose from 'ibsi-a', ...)"
        main(["features", "-i", str(tmp_path / "ct.nii.gz"), "-m", str(tmp_path / "mask.nii.gz"), "-o", str(tmp_path / "g.csv"),
              "--preset", "ibsi-z"])
    assert "invalid choice: 'ibsi-z'" in capsys.readouterr().err


def test_intensity_volume_histogram_discretisations():
    """IBSI 3.5's three grids: integer intensities, fixed-size bins (their centres, numbered from the range's lower
    bound) and a fixed number of bins (grey levels 1..N)."""
    from diffusionct.radiomics.families import intensity_volume_features

    values = np.arange(-100, 100, dtype=float)  # 200 voxels, one per HU
    plain = intensity_volume_features(values)
    assert plain["v10"] == pytest.approx(0.9, abs=0.01) and plain["i10"] == 80  # 10 % of the volume at >= 80 HU
    sized = intensity_volume_features(values, bin_width=2.5, value_range=[-1000, 400])
    assert (sized["i10"] + 1000) % 2.5 == pytest.approx(1.25)  # a bin centre
    assert sized["v10"] == pytest.approx(1.0)  # 10 % of [-1000, 400] is -860 HU: every voxel lies above
    counted = intensity_volume_features(values, bin_count=1000)
    assert counted["i10"] == int(counted["i10"]) and 1 <= counted["i90"] < counted["i10"] <= 1000
    assert counted["v10"] == pytest.approx(0.9, abs=0.01)


PYRADIOMICS_PARAMS = """\
# pyradiomics' own params format, as its users write it
imageType:
  Original: {}
featureClass:
  shape:
  firstorder:
  glcm: [Contrast, Correlation, JointEntropy]
  glrlm:
  glszm:
  gldm:
  ngtdm:
setting:
  binWidth: 25
  label: 1
"""


def test_a_pyradiomics_params_file_runs_unchanged_with_pyradiomics_values(sts_case, tmp_path):
    """A pyradiomics params file and pyradiomics' column names: every value equals pyradiomics' own extractor's on the
    same file, and a featureClass list keeps only the features it names."""
    from radiomics import featureextractor

    params = tmp_path / "params.yaml"
    params.write_text(PYRADIOMICS_PARAMS)
    case = sts_case() / "nifti"
    image, mask, out = case / "CT_image.nii.gz", case / "CT_mask.nii.gz", tmp_path / "f.csv"
    assert main(["features", "-i", str(image), "-m", str(mask), "-o", str(out), "--params", str(params),
                 "--names", "pyradiomics", "--workers", "1"]) == 0
    ours = {k: float(v) for k, v in next(csv.DictReader(open(out))).items() if k != "tumour" and v}
    theirs = {k: float(v) for k, v in featureextractor.RadiomicsFeatureExtractor(str(params)).execute(str(image), str(mask)).items()
              if not k.startswith("diagnostics_")}
    assert len(theirs) > 80 and set(theirs) <= set(ours)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert {k for k in ours if "_glcm_" in k} == {"original_glcm_Contrast", "original_glcm_Correlation", "original_glcm_JointEntropy"}


def test_pyradiomics_params_that_this_engine_does_not_compute_are_one_line(tmp_path):
    params = tmp_path / "p.yaml"
    for text, words in (("imageType: {Square: {}}", "image types ['Square'] are not computed"),
                        ("featureClass: {shape2D: }", "featureClass ['shape2D'] is not computed"),
                        ("featureClass: {glcm: }\nclasses: [GLCM]", "either 'featureClass' (pyradiomics) or 'classes'"),
                        ("featureClass: {glcm: Contrast}", "lists of feature names"),
                        ("setting: {force2D: true, force2Ddimension: x}", "force2Ddimension must be 0"),
                        ("selected: {GLCM: [Contrast]}", "unknown keys ['selected']")):
        params.write_text(text)
        with pytest.raises(DiffusionCTError, match=re.escape(words)):
            FeatureSettings.load(params)


def test_a_bin_width_that_makes_millions_of_grey_levels_is_one_line(tmp_path, capsys, monkeypatch):
    """binWidth 1e-6 used to end in a MemoryError deep in pyradiomics; any MemoryError is one line too."""
    with pytest.raises(DiffusionCTError, match="grey levels over this ROI"):
        discretise(np.array([-100.0, 250.0]), bin_width=1e-6)
    assert discretise(np.array([-100.0, 250.0]), bin_width=1.0).max() == 351  # 1 HU bins over 350 HU are fine
    from tests.conftest import make_volume

    image, mask = _ibsi_like_tumour()
    volume = make_volume(shape=image.shape).with_hu(image.astype(np.float32))
    write_nifti(volume, tmp_path / "i.nii.gz")
    write_nifti(volume, tmp_path / "m.nii.gz", array=mask.astype(np.uint8))
    import diffusionct.radiomics.batch as batch

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(batch, "extract_many", exhausted)
    assert main(["features", "-i", str(tmp_path / "i.nii.gz"), "-m", str(tmp_path / "m.nii.gz"), "-o", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: features ran out of memory") and err.count("\n") == 1 and not (tmp_path / "f.csv").exists()


def test_a_slice_counts_as_often_as_it_has_paired_directions():
    """IBSI's 2D average runs over every slice's every directional GLCM that holds a pair: a one-row slice has one."""
    from diffusionct.radiomics.features import _paired_directions

    row = np.zeros((4, 4), bool)
    row[1, :3] = True
    square = np.zeros((4, 4), bool)
    square[1:3, 1:3] = True
    single = np.zeros((4, 4), bool)
    single[2, 2] = True
    assert (_paired_directions(row), _paired_directions(square), _paired_directions(single)) == (1, 4, 0)


@pytest.mark.parametrize("preset", ["ibsi-b", "ibsi-c"])
def test_a_cropped_tumour_gives_the_whole_image_features(preset):
    """`features` crops each tumour before the work; IBSI's interpolation grid is the whole image's, so the crop must
    give the values of the uncropped image (it differed in 176 of 313 features under ibsi-c on a sarcoma CT)."""
    from diffusionct.radiomics.batch import extract_many, tumour_jobs

    blob, mask = _ibsi_like_tumour()
    image = np.random.default_rng(1).normal(40, 30, (20, 70, 64))
    labels = np.zeros(image.shape, np.uint8)
    image[3:15, 21:61, 5:45], labels[3:15, 21:61, 5:45] = blob, mask  # off the image's centre
    settings = FeatureSettings.load(preset)
    whole = extract_features(image, labels > 0, (0.8, 0.8, 2.0), settings)
    cropped, errors = extract_many(tumour_jobs("t", image, labels, (0.8, 0.8, 2.0), settings), settings, workers=1, progress=False)
    assert not errors and cropped["t:1"].keys() == whole.keys()
    differ = [k for k in whole if not np.isclose(cropped["t:1"][k], whole[k], rtol=1e-9, atol=1e-12, equal_nan=True)]
    assert not differ, differ[:10]


def test_pyradiomics_names_for_2d_and_3d_are_refused_before_the_work(tmp_path, capsys):
    from tests.conftest import make_volume

    image, mask = _blob(0)
    volume = make_volume(shape=image.shape).with_hu(image)
    write_nifti(volume, tmp_path / "ct.nii.gz")
    write_nifti(volume, tmp_path / "seg.nii.gz", array=mask.astype(np.uint8))
    code = main(["features", "-i", str(tmp_path / "ct.nii.gz"), "-m", str(tmp_path / "seg.nii.gz"), "-o", str(tmp_path / "f.csv"),
                 "--names", "pyradiomics"])  # the shipped settings compute 2D and 3D texture
    assert code == 2 and "do not say 2D or 3D" in capsys.readouterr().err and not (tmp_path / "f.csv").exists()
