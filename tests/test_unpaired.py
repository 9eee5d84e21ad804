"""Training without pairs: sets chosen by kernel from a CSV of NIfTI files (or a scan), pairs synthesized with
the kernel transfer measured between the sets, and the trained model used like any other."""

import json

import numpy as np
import pytest
import torch

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.io.image import read_volume, write_nifti
from diffusionct.io.manifest import Manifest, SeriesEntry, write_set_csv
from diffusionct.kernels.names import KernelSet
from diffusionct.io.volume import Volume
from diffusionct.methods.registry import load_method
from diffusionct.train.methods import train_method
from diffusionct.train.data import load_training_data
from tests.model_fixtures import TINY_OVERRIDES, tiny_config

PIXEL_MM = 0.7
SHARP, SMOOTH = 0.45, 0.22  # half-gain frequencies (cycles/mm) of the two 'kernels'


def _patient(seed: int, half_gain: float, size: int = 128, slices: int = 4) -> Volume:
    """A water disk with a bone rod in air, its noise through a Gaussian kernel window."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = np.hypot(yy - size / 2, xx - size / 2) < size * 0.46
    rod = np.hypot(yy - size * 0.3, xx - size * 0.5) < 4
    f = np.hypot(np.fft.fftfreq(size, PIXEL_MM)[:, None], np.fft.fftfreq(size, PIXEL_MM)[None, :])
    window = np.exp(-np.log(2.0) * (f / half_gain) ** 2)
    noise = np.fft.ifft2(np.fft.fft2(rng.normal(0, 40, (slices, size, size))) * window).real
    hu = np.where(body, 40.0, -1000.0) + np.where(rod, 700.0, 0.0) + noise * body
    return Volume(hu.astype(np.float32), (PIXEL_MM, PIXEL_MM, 2.0))


@pytest.fixture(scope="module")
def unpaired_csv(tmp_path_factory):
    """Two 'GE SOFT' patients and three other 'GE STANDARD' patients as NIfTI, listed in a set CSV."""
    root = tmp_path_factory.mktemp("unpaired")
    entries = []
    for index, (kernel, half) in enumerate([("SOFT", SMOOTH)] * 2 + [("STANDARD", SHARP)] * 3):
        name = f"p{index}_{kernel.lower()}.nii.gz"
        write_nifti(_patient(index, half), root / name)
        entries.append(SeriesEntry(name, kernel, "GE MEDICAL SYSTEMS", f"patient{index}"))
    entries.append(SeriesEntry("p9_lung.nii.gz", "LUNG", "Siemens", "patient9"))
    write_nifti(_patient(9, 0.6), root / "p9_lung.nii.gz")
    return write_set_csv(root / "sets.csv", entries)


def test_set_csv_is_read_and_chosen_by_kernel_and_manufacturer(unpaired_csv):
    manifest = Manifest.read(unpaired_csv)
    assert len(manifest.series) == 6 and manifest.pairs == []
    assert [s.path for s in manifest.select("GE:SOFT")] == ["p0_soft.nii.gz", "p1_soft.nii.gz"]
    assert len(manifest.select("standard")) == 3 and manifest.select("Siemens:STANDARD") == []
    assert manifest.kernels() == ["GE MEDICAL SYSTEMS:SOFT", "GE MEDICAL SYSTEMS:STANDARD", "Siemens:LUNG"]
    assert manifest.read_volume("p0_soft.nii.gz").hu.shape == (4, 128, 128)
    assert KernelSet.parse("GE:SOFT") == KernelSet("SOFT", "GE")


@pytest.mark.parametrize("text,message", [
    ("kernel\nSOFT\n", "missing: path"),
    ("path,kernel\n", "no rows"),
    ("path,kernel\n,SOFT\n", "line 2: empty path or kernel"),
])
def test_bad_set_csv_is_a_clear_error(tmp_path, text, message):
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(DiffusionCTError, match=message):
        Manifest.read(tmp_path / "s.csv")


def test_scan_csv_reads_back_with_its_pairs(tiny_data, tmp_path):
    assert main(["scan", str(tiny_data.parent), "-o", str(tmp_path / "scan.csv")]) == 0
    from_csv, from_json = Manifest.read(tmp_path / "scan.csv"), Manifest.read(tiny_data)
    assert len(from_csv.series) == len(from_json.series) > 0
    assert len(from_csv.oriented_pairs("SIM_B30", "SIM_B70")) == len(from_json.oriented_pairs("SIM_B30", "SIM_B70")) > 0


def test_unpaired_data_synthesizes_pairs_from_the_target_set(unpaired_csv):
    data = load_training_data(unpaired_csv, "GE:SOFT", "GE:STANDARD", validation_fraction=0.2, pairing="unpaired")
    transfer = data.notes["kernel_transfer"]["GE:SOFT"]
    from diffusionct.kernels.transfer import KernelTransfer

    gain = KernelTransfer.from_dict(transfer).gain(np.array([0.2, 0.3]))
    truth = np.exp(-np.log(2) * (np.array([0.2, 0.3]) / SMOOTH) ** 2) / np.exp(-np.log(2) * (np.array([0.2, 0.3]) / SHARP) ** 2)
    np.testing.assert_allclose(gain, truth, rtol=0.35)  # two small 'patients' per set
    source, target = data.pairs.source, data.pairs.target
    assert source.shape == target.shape and source.shape[0] > 0
    inside = (slice(None), slice(50, 80), slice(50, 80))  # uniform water, away from edges and the rod
    assert abs(source[inside].mean() - target[inside].mean()) < 2  # the same anatomy, other texture
    assert source[inside].std() < 0.8 * target[inside].std()
    assert data.unpaired_source and data.unpaired_target
    with pytest.raises(DiffusionCTError, match="no CT series of GE:B30.*kernels present"):
        load_training_data(unpaired_csv, "GE:B30", "GE:STANDARD", pairing="unpaired")


@pytest.mark.parametrize("method", ["diffusionct", "residual-cnn", "cyclegan", "histogram"])
def test_train_without_pairs_end_to_end_from_nifti_csv(unpaired_csv, tmp_path, method):
    run = tmp_path / method
    overrides = [*TINY_OVERRIDES, "data.pairing=unpaired", "data.source_kernel=GE:SOFT", "data.target_kernel=GE:STANDARD"]
    args = ["train", "--data", str(unpaired_csv), "-o", str(run), "--device", "cpu"] + (
        [] if method == "diffusionct" else ["--method", method])
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    meta = json.loads((run / "config.json").read_text())
    assert meta["training"]["pairing"] == "unpaired" and "GE:SOFT" in meta["training"]["kernel_transfer"]
    method = load_method(run, torch.device("cpu"))
    source = read_volume(unpaired_csv.parent / "p0_soft.nii.gz")
    out = method.convert_slices(source.hu, steps=2, seed=0, pixel_mm=source.pixel_mm)
    assert out.shape == source.hu.shape and np.isfinite(out).all()
    assert not np.array_equal(out, source.hu)


def test_many_source_kernels_to_one_standard(unpaired_csv):
    """One model from every non-standard kernel: a transfer per source set, pairs synthesized with each."""
    data = load_training_data(unpaired_csv, "GE:SOFT, Siemens:LUNG", "GE:STANDARD", validation_fraction=0.2, pairing="unpaired")
    transfers = data.notes["kernel_transfer"]
    assert set(transfers) == {"GE:SOFT", "Siemens:LUNG"}
    from diffusionct.kernels.transfer import KernelTransfer

    soft, lung = (KernelTransfer.from_dict(transfers[k]).gain(np.array([0.4]))[0] for k in ("GE:SOFT", "Siemens:LUNG"))
    assert soft < 0.8 < 1.1 < lung  # a smoother and a sharper kernel than the standard (truth 0.55 and 1.27)
    assert data.pairs.cases.count("GE:SOFT") == data.pairs.cases.count("Siemens:LUNG") == data.pairs.source.shape[0] // 2 > 0


def test_series_of_other_sizes_are_stacked_mirrored(tmp_path):
    entries = []
    for index, (kernel, size) in enumerate([("SOFT", 128), ("SOFT", 136), ("STANDARD", 128), ("STANDARD", 144), ("STANDARD", 140)]):
        write_nifti(_patient(index, SMOOTH if kernel == "SOFT" else SHARP, size=size), tmp_path / f"{index}.nii.gz")
        entries.append(SeriesEntry(f"{index}.nii.gz", kernel, "GE", f"p{index}"))
    data = load_training_data(write_set_csv(tmp_path / "s.csv", entries), "SOFT", "STANDARD", pairing="unpaired")
    assert data.pairs.source.shape[1:] == (144, 144)  # the largest training series
    small = data.pairs.target[0]  # the 128-px series, mirrored at its far edges
    np.testing.assert_array_equal(small[128:144], small[127:111:-1])


def test_unpaired_histogram_matches_the_real_sets(unpaired_csv, tmp_path):
    method = train_method("histogram", unpaired_csv, tmp_path / "h",
                          tiny_config("data.pairing=unpaired", "data.source_kernel=GE:SOFT", "data.target_kernel=GE:STANDARD"),
                          torch.device("cpu"))
    # the target set's training cases: patient4, the last case, is held out for validation
    target = np.concatenate([read_volume(unpaired_csv.parent / f"p{i}_standard.nii.gz").hu.ravel() for i in (2, 3)])
    levels = np.linspace(0, 1, len(method.target_q))
    np.testing.assert_allclose(method.target_q, np.quantile(target[target > -500], levels), atol=1e-3)
    assert method.source_q[len(levels) // 2] == pytest.approx(40.0, abs=5.0)


def test_many_to_one_model_accepts_each_source_kernel_and_writes_the_standard_one(unpaired_csv, tmp_path):
    from diffusionct.standardize import Standardizer

    config = tiny_config("data.pairing=unpaired", "data.source_kernel=GE:SOFT,Siemens:LUNG", "data.target_kernel=GE:STANDARD")
    train_method("histogram", unpaired_csv, tmp_path / "h", config, torch.device("cpu"))
    standardizer = Standardizer.load(tmp_path / "h", "cpu")
    volume = read_volume(unpaired_csv.parent / "p0_soft.nii.gz")
    for kernel in ("SOFT", "lung"):
        assert standardizer.check_kernel(volume.with_hu(volume.hu, kernel=kernel)) is None
    assert "GE:SOFT,Siemens:LUNG" in standardizer.check_kernel(volume.with_hu(volume.hu, kernel="B30F"))
    assert standardizer.standardize(volume.with_hu(volume.hu, kernel="SOFT")).kernel == "STANDARD"


def test_mixed_pairing_adds_synthesized_pairs_to_the_real_ones(tmp_path):
    """UDA-CT's setting: the same-scan pairs, plus pairs synthesized from every target image at three strengths
    of the measured transfer; validation stays on real pairs."""
    series, pairs = [], []
    for index in range(4):  # four patients, each reconstructed with both kernels from the same noise
        for kernel, half in (("SOFT", SMOOTH), ("STANDARD", SHARP)):
            write_nifti(_patient(index, half), tmp_path / f"p{index}_{kernel}.nii.gz")
            series.append({"path": f"p{index}_{kernel}.nii.gz", "kernel": kernel, "study_uid": f"patient{index}"})
        pairs.append({"path_a": f"p{index}_SOFT.nii.gz", "kernel_a": "SOFT", "path_b": f"p{index}_STANDARD.nii.gz",
                      "kernel_b": "STANDARD"})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"series": series, "pairs": pairs}))
    paired = load_training_data(manifest, "SOFT", "STANDARD", validation_fraction=0.25)
    mixed = load_training_data(manifest, "SOFT", "STANDARD", validation_fraction=0.25, pairing="mixed")
    real = paired.pairs.source.shape[0]
    assert real == 3 * 4 and mixed.pairs.source.shape[0] == real * (1 + 3)
    np.testing.assert_array_equal(mixed.pairs.source[:real], paired.pairs.source)  # the real pairs kept as they were
    np.testing.assert_array_equal(mixed.validation_pairs.target, paired.validation_pairs.target)
    synthesized, targets = mixed.pairs.source[real:], mixed.pairs.target[real:]
    assert {int(t.sum()) for t in targets} == {int(t.sum()) for t in paired.pairs.target}  # from the same targets
    inside = (slice(None), slice(50, 80), slice(50, 80))
    assert synthesized[inside].std() < 0.8 * targets[inside].std()  # smoothed like the source kernel
    assert mixed.notes["pairing"] == "mixed" and "SOFT" in mixed.notes["kernel_transfer"]
    with pytest.raises(DiffusionCTError, match="data.pairing must be one of"):
        load_training_data(manifest, "SOFT", "STANDARD", pairing="both")
    # trains end to end (tiny config) and records how
    args = ["train", "--data", str(manifest), "-o", str(tmp_path / "run"), "--device", "cpu"]
    for override in [*TINY_OVERRIDES, "data.pairing=mixed", "data.source_kernel=SOFT", "data.target_kernel=STANDARD"]:
        args += ["--set", override]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["pairing"] == "mixed"
    volume = read_volume(tmp_path / "p0_SOFT.nii.gz")
    source = volume.hu
    out = load_method(tmp_path / "run", torch.device("cpu")).convert_slices(source, steps=2, seed=0,
                                                                                pixel_mm=volume.pixel_mm)
    assert out.shape == source.shape and np.isfinite(out).all() and not np.array_equal(out, source)


@pytest.mark.parametrize("overrides, steps", [(["data.pairing=unpaired"], 2), (["data.pairing=unpaired", "diffusion.steps=7"], 7),
                                              (["data.pairing=pairs"], 5), (["data.pairing=mixed"], 5)])
def test_sampling_steps_default_by_pairing(overrides, steps):
    from diffusionct.config import RunConfig

    assert RunConfig.load(overrides=overrides).diffusion.steps == steps
