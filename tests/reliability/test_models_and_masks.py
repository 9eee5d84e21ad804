"""Damaged model folders, wrong masks and bad options: one clean error each, never a traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tests.reliability.helpers import assert_clean_error, run_cli


@pytest.fixture
def series(tiny_data, tmp_path):
    source = tmp_path / "series"
    shutil.copytree(tiny_data.parent / "case_000" / "2mm" / "sim_b30", source)
    return source


def _damage(folder, kind):
    config = folder / "config.json"
    if kind == "config is a list":
        config.write_text("[1, 2]")
    elif kind == "config not utf-8":
        config.write_bytes(b"\xff\xfe\x00garbage")
    elif kind == "config lacks its section":
        meta = json.loads(config.read_text())
        del meta["config"]
        config.write_text(json.dumps(meta))
    elif kind == "flipped bit":
        weights = folder / "unet.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) - 17] ^= 0x10  # a float inside a tensor: still a readable file
        weights.write_bytes(bytes(data))
    elif kind == "missing weights":
        (folder / "unet.safetensors").unlink()
    elif kind in ("checksums removed", "infinite x0_scale"):
        meta = json.loads(config.read_text())
        if kind == "checksums removed":
            del meta["weights_sha256"]
        else:
            meta["config"]["diffusion"]["x0_scale"] = float("inf")
        config.write_text(json.dumps(meta))
    elif kind in META_DAMAGE:
        meta = json.loads(config.read_text())
        META_DAMAGE[kind](meta)
        config.write_text(json.dumps(meta))
    elif kind == "nested 100,000 deep":
        config.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "truncated weights":
        weights = folder / "autoencoder.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])


# config.json values of the wrong type or range, each refused naming its key (they once crashed routing or were ignored)
META_DAMAGE = {
    "pixel range not numbers": lambda m: m.__setitem__("trained_pixel_mm", ["a", "b"]),
    "pixel range reversed": lambda m: m.__setitem__("trained_pixel_mm", [0.9, 0.5]),
    "format version as text": lambda m: m.__setitem__("format_version", "1"),
    "format version missing": lambda m: m.pop("format_version"),
    "method as a list": lambda m: m.__setitem__("method", ["diffusionct"]),
    "phases as text": lambda m: m.__setitem__("phases", "autoencoder"),
    "model card as text": lambda m: m.__setitem__("model_card", "x"),
    "source kernel as a list": lambda m: m["config"]["data"].__setitem__("source_kernel", ["SIM_B30"]),
    "kernel profiles as a list": lambda m: m.__setitem__("kernel_profiles", []),
}
MODEL_DAMAGE = ["config is a list", "config not utf-8", "config lacks its section", "flipped bit", "missing weights",
                "truncated weights", "checksums removed", "infinite x0_scale", "nested 100,000 deep", *META_DAMAGE]


@pytest.mark.parametrize("kind", MODEL_DAMAGE)
def test_damaged_model_folder(series, tiny_model, tmp_path, capsys, kind):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    _damage(model, kind)
    code, err = run_cli(["standardize", "-i", series, "-o", tmp_path / "out", "--model", model, "--device", "cpu"], capsys)
    assert_clean_error(code, err, str(model))
    assert not (tmp_path / "out").exists()


def test_flipped_bit_is_named_as_a_checksum_mismatch(tiny_model, tmp_path):
    from diffusionct.errors import DiffusionCTError
    from diffusionct.standardize import Standardizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    Standardizer.load(model, "cpu")  # the copy loads
    _damage(model, "flipped bit")
    with pytest.raises(DiffusionCTError, match="checksum"):
        Standardizer.load(model, "cpu")


@pytest.mark.parametrize("kind", ["missing", "truncated", "wrong tensors"])
def test_damaged_histogram_model(tiny_data, series, tmp_path, capsys, kind):
    from diffusionct.config import RunConfig
    from diffusionct.train.methods import train_method

    model = tmp_path / "hist"
    train_method("histogram", tiny_data, model, RunConfig(), device=__import__("torch").device("cpu"))
    weights = model / "histogram.safetensors"
    if kind == "missing":
        weights.unlink()
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:50])
    else:
        from safetensors.torch import save_file
        import torch

        save_file({"source_quantiles": torch.tensor([3.0, 1.0])}, str(weights))
    if weights.exists():  # the damage under its own checksum: the loader's own checks must refuse it too
        from diffusionct.methods.store import file_sha256

        meta = json.loads((model / "config.json").read_text())
        meta["weights_sha256"]["histogram.safetensors"] = file_sha256(weights)
        (model / "config.json").write_text(json.dumps(meta))
    code, err = run_cli(["standardize", "-i", series, "-o", tmp_path / "out", "--model", model], capsys)
    assert_clean_error(code, err, "histogram.safetensors")


@pytest.mark.parametrize("seed", ["-1", str(2**64 + 1)])
def test_seed_out_of_range(series, tiny_model, tmp_path, capsys, seed):
    code, err = run_cli(["standardize", "-i", series, "-o", tmp_path / "out", "--model", tiny_model, "--seed", seed], capsys)
    assert_clean_error(code, err, "--seed must be an integer")
    code, err = run_cli(["simulate", "-o", tmp_path / "sim", "--seed", seed], capsys)
    assert_clean_error(code, err, "--seed must be an integer")


@pytest.mark.parametrize("option,value,words", [("--pixel-mm", "nan", "pixel_mm"), ("--thickness", "nan", "finite"),
                                                ("--mas", "inf", "mas")])
def test_non_finite_simulator_settings(tmp_path, capsys, option, value, words):
    code, err = run_cli(["simulate", "-o", tmp_path / "sim", option, value], capsys)
    assert_clean_error(code, err, words)
    assert not (tmp_path / "sim").exists()


@pytest.mark.parametrize("text,words", [("just a sentence", "mapping"), ("- a\n- b\n", "mapping"),
                                        ("setting: [1, 2]\n", "'setting' must be a mapping")])
def test_params_that_are_not_a_settings_mapping(tmp_path, capsys, text, words):
    from diffusionct.errors import DiffusionCTError
    from diffusionct.radiomics.features import FeatureSettings

    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(DiffusionCTError, match=words) as info:
        FeatureSettings.load(params)
    assert "params.yaml" in str(info.value)


def _labels_on(volume, path, array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.flatten()))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("kind,words", [("the CT image", "is this the CT image"), ("label -1", "negative label"),
                                        ("NaN", "non-finite"), ("fractions", "non-integer"), ("empty", "empty")])
def test_masks_that_are_not_label_maps(series, tmp_path, capsys, kind, words):
    from diffusionct.io import read_dicom_series

    volume = read_dicom_series(series)
    labels = np.zeros(volume.shape, np.float32)
    if kind == "the CT image":
        labels = volume.hu
    elif kind == "label -1":
        labels[1:3, 4:9, 4:9] = -1
    elif kind == "NaN":
        labels[1:3, 4:9, 4:9] = np.nan
    elif kind == "fractions":
        labels[1:3, 4:9, 4:9] = 0.5
    mask = _labels_on(volume, tmp_path / "mask.nii.gz", labels)
    code, err = run_cli(["features", "-i", series, "-m", mask, "-o", tmp_path / "f.csv"], capsys)
    assert_clean_error(code, err, "mask.nii.gz", words)
    assert not (tmp_path / "f.csv").exists()


def test_rtstruct_of_another_patient_or_frame_is_refused(sts_case, tmp_path, capsys):
    import pydicom

    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series, read_rtstruct_mask

    image = read_dicom_series(sts_case("STS_003") / "dicom" / "image")
    other = sts_case("STS_002") / "dicom" / "mask" / "RS.dcm"
    with pytest.raises(InputError, match="patient"):
        read_rtstruct_mask(other, image)
    own = sts_case("STS_003") / "dicom" / "mask" / "RS.dcm"
    assert read_rtstruct_mask(own, image).any()
    moved = pydicom.dcmread(own)  # the same patient, contours drawn in another frame of reference
    for item in moved.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = "1.2.3.4"
    moved.save_as(tmp_path / "RS.dcm")
    with pytest.raises(InputError, match="frame of reference"):
        read_rtstruct_mask(tmp_path / "RS.dcm", image)
    code, err = run_cli(["features", "-i", sts_case("STS_003") / "dicom" / "image", "-m", other, "-o", tmp_path / "f.csv"],
                        capsys)
    assert_clean_error(code, err, "RS.dcm", "patient")


def test_damaged_rtstruct_numbers_are_one_error(sts_case, tmp_path):
    """ContourData that is not x, y, z triplets, and an ROI without its number: one error each (were tracebacks)."""
    import pydicom

    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series, read_rtstruct_mask

    image = read_dicom_series(sts_case("STS_003") / "dicom" / "image")
    own = sts_case("STS_003") / "dicom" / "mask" / "RS.dcm"
    short = pydicom.dcmread(own)
    contour = short.ROIContourSequence[0].ContourSequence[0]
    contour.ContourData = list(contour.ContourData)[:-1]
    short.save_as(tmp_path / "short.dcm")
    with pytest.raises(InputError, match="not finite x, y, z triplets"):
        read_rtstruct_mask(tmp_path / "short.dcm", image)
    unnumbered = pydicom.dcmread(own)
    del unnumbered.StructureSetROISequence[0].ROINumber
    unnumbered.save_as(tmp_path / "unnumbered.dcm")
    with pytest.raises(InputError, match="has no ROINumber"):
        read_rtstruct_mask(tmp_path / "unnumbered.dcm", image)


@pytest.mark.parametrize("kind", ["pixel range not numbers", "source kernel as a list", "nested 100,000 deep"])
def test_damaged_model_in_a_library_is_named(series, tiny_model, tmp_path, capsys, kind):
    """A library is routed from its models' config.json without loading weights: the same checks hold there."""
    library = tmp_path / "library"
    shutil.copytree(tiny_model, library / "gap")
    _damage(library / "gap", kind)
    code, err = run_cli(["standardize", "-i", series, "-o", tmp_path / "out", "--model", library, "--device", "cpu"], capsys)
    assert_clean_error(code, err, "gap")
    assert not (tmp_path / "out").exists()


def test_training_a_phase_with_zero_steps_is_refused(tiny_data, tmp_path, capsys):
    code, err = run_cli(["train", "--data", tiny_data, "-o", tmp_path / "run", "--set", "phase1.steps=0"], capsys)
    assert_clean_error(code, err, "phase1.steps")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["- a list\n", "5\n", "[" * 5000 + "]" * 5000])
def test_training_config_that_is_not_a_mapping(tiny_data, tmp_path, capsys, text):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    code, err = run_cli(["train", "--data", tiny_data, "-o", tmp_path / "run", "--config", config], capsys)
    assert_clean_error(code, err, str(config))


@pytest.mark.parametrize("text,words", [
    ("setting: {binWidth: x}", "binWidth"), ("setting: {binWidth: 1.0e+308}", "binWidth"),
    ("setting: {binWidth: [1, 2]}", "binWidth"), ("setting: {minimumROISize: .nan}", "minimumROISize"),
    ("setting: {padDistance: null}", "padDistance"), ("setting: {padDistance: {a: 1}}", "padDistance"),
    ("setting: {distances: []}", "distances"), ("setting: {weightingNorm: cosine}", "weightingNorm"),
    ("setting: {symmetricalGLCM: 1}", "symmetricalGLCM"), ("imageType: {original: -1}", "imageType original"),
    ("imageType: {LoG: {sigma: [0, 1]}}", "sigma"), ("goh: {bins_2D: 0}", "bins_2D")])
def test_params_with_a_wrong_value_name_the_key(tmp_path, text, words):
    """Found by benchmarks/fuzz_dicom.py: each was a traceback deep in the extraction."""
    from diffusionct.errors import DiffusionCTError
    from diffusionct.radiomics.features import FeatureSettings

    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(DiffusionCTError, match=words):
        FeatureSettings.load(params)


def test_an_infinite_integer_setting_in_a_model_config_is_named(tiny_model, tmp_path, series, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    meta = json.loads((model / "config.json").read_text())
    meta["config"]["phase1"]["validate_every"] = float("inf")
    (model / "config.json").write_text(json.dumps(meta))
    code, err = run_cli(["standardize", "-i", series, "-o", tmp_path / "out", "--model", model, "--device", "cpu"], capsys)
    assert_clean_error(code, err, "phase1.validate_every")
