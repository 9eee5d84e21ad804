import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.io import read_dicom_series, read_image, write_nifti
from diffusionct.methods.library import default_model_dir
from diffusionct.standardize import Standardizer
from diffusionct.standardize_runs import run_standardize
from tests.conftest import dciodvfy_errors


def _series(tiny_data: Path, kernel: str = "b30", case: int = 0) -> Path:
    return tiny_data.parent / f"case_{case:03d}" / "2mm" / f"sim_{kernel}"


def test_dicom_in_dicom_out(tiny_data, tiny_model, tmp_path):
    source = _series(tiny_data)
    out = tmp_path / "out"
    assert main(["standardize", "-i", str(source), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]) == 0
    before, after = read_dicom_series(source), read_dicom_series(out)
    assert after.same_grid(before) and after.kernel == "SIM_B70"
    a, b = before.headers[0], after.headers[0]
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "KVP", "SliceThickness"):
        assert a.get(keyword) == b.get(keyword), keyword
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert "Standardized from SIM_B30 to SIM_B70" in b.DerivationDescription
    assert list(b.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert after.hu.max() <= 3071 and after.hu.min() >= min(-1024, before.hu.min())
    for path in sorted(out.glob("*.dcm"))[:2]:
        assert dciodvfy_errors(path) == []


def test_same_input_model_seed_same_bytes(tiny_data, tiny_model, tmp_path):
    source = _series(tiny_data)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_standardize(source, tmp_path / name, model_dir=tiny_model, seed=seed, device="cpu")
    files = {n: {p.name: p.read_bytes() for p in (tmp_path / n).glob("*.dcm")} for n in "abc"}
    assert files["a"] == files["b"]
    assert files["a"] != files["c"]


def test_tree_resumes_and_skips_finished(tiny_data, tiny_model, tmp_path):
    tree = tmp_path / "tree"
    for case in (0, 1):
        shutil.copytree(_series(tiny_data, case=case), tree / f"case{case}" / "b30")
    results = run_standardize(tree, tmp_path / "out", model_dir=tiny_model, device="cpu")
    assert [r.skipped for r in results] == [False, False]
    shutil.rmtree(results[1].output)  # as if the run had stopped before the second series
    again = run_standardize(tree, tmp_path / "out", model_dir=tiny_model, device="cpu")
    assert [r.skipped for r in again] == [True, False]
    assert read_dicom_series(again[1].output).shape == read_dicom_series(_series(tiny_data, case=1)).shape


def test_kernel_mismatch_warns_and_strict_refuses(tiny_data, tiny_model, tmp_path, caplog):
    sharp = _series(tiny_data, "b70")
    run_standardize(sharp, tmp_path / "out", model_dir=tiny_model, device="cpu")
    assert any("input kernel is SIM_B70" in r.message for r in caplog.records)
    with pytest.raises(DiffusionCTError, match="--strict"):
        run_standardize(sharp, tmp_path / "strict", model_dir=tiny_model, device="cpu", strict=True)
    assert not (tmp_path / "strict").exists()


def test_nifti_in_nifti_out(tiny_data, tiny_model, tmp_path):
    volume = read_dicom_series(_series(tiny_data))
    write_nifti(volume, tmp_path / "in.nii.gz")
    assert main(["standardize", "-i", str(tmp_path / "in.nii.gz"), "-o", str(tmp_path / "out.nii.gz"),
                 "--model", str(tiny_model), "--device", "cpu"]) == 0
    out = read_image(tmp_path / "out.nii.gz")
    assert out.same_grid(volume)
    with pytest.raises(DiffusionCTError, match="DICOM output needs a DICOM input"):
        run_standardize(tmp_path / "in.nii.gz", tmp_path / "x", model_dir=tiny_model, output_format="dicom")


def test_air_stays_air(tiny_data, tiny_model):
    volume = read_dicom_series(_series(tiny_data))
    out = Standardizer.load(tiny_model, "cpu").standardize(volume)
    outside = read_dicom_series(_series(tiny_data)).hu < -990
    corner = np.zeros_like(outside)
    corner[:, :4, :4] = True
    assert (corner & outside).any()  # the comparison below is over a non-empty region
    assert np.array_equal(out.hu[corner & outside], volume.hu[corner & outside])


def test_too_small_image_and_bad_model(tiny_model, tmp_path, capsys):
    standardizer = Standardizer.load(tiny_model, "cpu")
    with pytest.raises(DiffusionCTError, match="smaller than"):
        standardizer.standardize_slices(np.zeros((1, 4, 4), np.float32), pixel_mm=0.7)
    assert main(["standardize", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope")]) == 2
    assert "error:" in capsys.readouterr().err


def test_shipped_model_standardizes_a_tiny_series(tiny_data, tmp_path):
    assert (default_model_dir() / "config.json").is_file(), "the default model must ship with the package"
    meta = json.loads((default_model_dir() / "config.json").read_text())
    assert meta["phases"] == ["autoencoder", "diffusion"]
    size = sum(p.stat().st_size for p in default_model_dir().glob("*"))
    assert size <= 20 * 2**20
    out = run_standardize(_series(tiny_data), tmp_path / "out", device="cpu", steps=2)
    assert read_dicom_series(out[0].output).kernel == meta["config"]["data"]["target_kernel"]


def test_output_inside_or_equal_to_the_input_is_refused(tiny_data, tiny_model, tmp_path):
    source = tmp_path / "series"
    shutil.copytree(_series(tiny_data), source)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    for output in (source, source / "std", tmp_path):
        with pytest.raises(DiffusionCTError, match="must not be the input"):
            run_standardize(source, output, model_dir=tiny_model, device="cpu", overwrite=True)
    one_file = next(source.iterdir())
    with pytest.raises(DiffusionCTError, match="must not be the input"):
        run_standardize(one_file, source / "out", model_dir=tiny_model, device="cpu")
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # the input is untouched


@pytest.mark.parametrize("steps", [0, 1001])
def test_steps_outside_the_schedule_are_refused(tiny_data, tiny_model, tmp_path, steps):
    with pytest.raises(DiffusionCTError, match="--steps must be in 1..1000"):
        run_standardize(_series(tiny_data), tmp_path / "out", model_dir=tiny_model, device="cpu", steps=steps)
    assert not (tmp_path / "out").exists()


def test_output_uids_follow_the_model_content_not_its_folder_name(tiny_data, tiny_model, tmp_path):
    import pydicom

    copies = [tmp_path / "a" / "default", tmp_path / "b" / "default"]
    for copy in copies:
        shutil.copytree(tiny_model, copy)
    weights = copies[1] / "unet.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 0.01  # another model in a folder of the same name
    save_file(tensors, str(weights))
    from diffusionct.methods.store import write_model_config

    write_model_config(copies[1], json.loads((copies[1] / "config.json").read_text()))  # as its training would
    uids = []
    for index, copy in enumerate(copies + copies[:1]):
        out = tmp_path / f"out{index}"
        run_standardize(_series(tiny_data), out, model_dir=copy, device="cpu")
        uids.append(pydicom.dcmread(sorted(out.glob("*.dcm"))[0]).SeriesInstanceUID)
    assert uids[0] != uids[1]  # different weights: different UIDs
    assert uids[0] == uids[2]  # the same model and input: the same UIDs


def test_temperature_option_sets_the_start_noise(tiny_data, tiny_model, tmp_path, capsys):
    """--temperature overrides the model's (0 here): at 1 the seed picks the sample, at 0 it has no effect; the
    derivation says which; outside [0, 1] it is refused before anything is written."""
    source = _series(tiny_data)
    pixels = {}
    for temperature, seed in (("1", 1), ("1", 2), ("0", 1), ("0", 2)):
        out = tmp_path / f"t{temperature}-s{seed}"
        assert main(["standardize", "-i", str(source), "-o", str(out), "--model", str(tiny_model), "--device", "cpu",
                     "--temperature", temperature, "--seed", str(seed)]) == 0
        pixels[temperature, seed] = read_dicom_series(out).hu
        assert f"temperature {temperature}, seed {seed}" in read_dicom_series(out).headers[0].DerivationDescription
    assert not np.array_equal(pixels["1", 1], pixels["1", 2])
    assert np.array_equal(pixels["0", 1], pixels["0", 2]) and not np.array_equal(pixels["0", 1], pixels["1", 1])
    default = tmp_path / "default"
    run_standardize(source, default, model_dir=tiny_model, device="cpu", seed=2)
    assert np.array_equal(read_dicom_series(default).hu, pixels["0", 1])  # the tiny model's own temperature is 0
    assert main(["standardize", "-i", str(source), "-o", str(tmp_path / "hot"), "--model", str(tiny_model),
                 "--temperature", "1.5"]) == 2
    assert "--temperature must be in [0, 1]" in capsys.readouterr().err and not (tmp_path / "hot").exists()


def test_image_ddpm_output_states_the_temperature_it_sampled_at(tiny_data, tmp_path):
    """The record and derivation give the temperature the method samples at: the image DDPM's 1, not the run
    config's default of 0."""
    import torch

    from diffusionct.train.methods import train_method
    from tests.model_fixtures import tiny_config

    train_method("ddpm", tiny_data, tmp_path / "ddpm", tiny_config(), torch.device("cpu"))
    run_standardize(_series(tiny_data), tmp_path / "out", model_dir=tmp_path / "ddpm", device="cpu")
    assert "temperature 1, seed 0" in read_dicom_series(tmp_path / "out").headers[0].DerivationDescription
