"""The kernel package: names, profiles as data, paired measurement, the kernel-filter method and calibrate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusionct.cli import main
from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.io.manifest import SeriesEntry
from diffusionct.kernels.family import get_kernel
from diffusionct.kernels.measure import measure_pairs, profiles_from_measurement
from diffusionct.kernels.names import KernelSet, kernel_family
from diffusionct.kernels.profiles import (KernelProfile, apply_transfer, find_profile, profiles_document, read_profiles,
                                          shipped_profiles, transfer_gain)
from diffusionct.methods.classical import KernelFilterMethod
from diffusionct.methods.registry import load_method
from diffusionct.train.methods import train_method
from tests.reliability.helpers import assert_clean_error, run_cli


@pytest.mark.parametrize("name", ["B30f", "B30F", "B30", "SIM_B30", "SIM_B30F", "Siemens:B30f", "b30f\\3"])
def test_one_parser_for_kernel_names(name):
    assert kernel_family(name) == "B30"


def test_vendor_names_are_their_own_family():
    assert kernel_family("FC13") == "FC13" and kernel_family("GE:STANDARD") == "STANDARD"
    assert kernel_family("FC13") != kernel_family("FC51")


def test_train_and_standardize_select_the_same_series():
    """`--from B30F` selects a B30f, a B30 and a simulated SIM_B30 series alike (train used to compare exact names)."""
    wanted = KernelSet.parse("B30F")
    assert all(wanted.matches(SeriesEntry("x", kernel)) for kernel in ("B30f", "B30", "SIM_B30"))
    assert not wanted.matches(SeriesEntry("x", "B50f"))


def test_shipped_profiles_answer_to_their_names():
    names = {p.label for p in shipped_profiles()}
    assert {"Siemens B10f", "Siemens B30f", "Siemens B50f", "Siemens B70f", "Canon FC13", "Canon FC51"} <= names
    assert find_profile("SIM_B70F").name == "B70f"
    assert find_profile("Canon:FC51").name == "FC51"
    with pytest.raises(DiffusionCTError, match="no kernel profile for 'GE:LUNG'"):
        find_profile("GE:LUNG")


def test_siemens_profiles_reproduce_the_real_transfer():
    """B70f / B30f of the shipped profiles is the real curve where it was measured (the README's table)."""
    f = np.array([0.225, 0.406, 0.586])
    gain = transfer_gain(find_profile("B30f"), find_profile("B70f"), f)
    np.testing.assert_allclose(gain, [1.67, 4.36, 14.4], rtol=0.03)


def test_a_profile_read_back_reproduces_its_curve(tmp_path):
    profile = KernelProfile("K1", "Acme", (0.0, 0.2, 0.5, 1.0), (1.0, 0.8, 0.3, 0.05), 0.7, 0.5, "test",
                            aliases=("K1X",), spread=(0.0, 0.01, 0.02, 0.02), noise_floor_hu2_mm2=0.3)
    path = tmp_path / "p.json"
    path.write_text(profiles_document([profile]))
    (back,) = read_profiles(path)
    f = np.linspace(0, 1.2, 50)
    np.testing.assert_array_equal(back.window_at(f), profile.window_at(f))
    assert back == profile and back.answers_to("Acme:K1X") and not back.answers_to("Other:K1")


@pytest.mark.parametrize("change,words", [({"window": [2.0, 1.0, 0.5, 0.1]}, r"W\(0\) = 1"),
                                          ({"frequencies": [0.0, 0.5, 0.2, 1.0]}, "ascending"),
                                          ({"pixel_mm": -1}, "pixel_mm"), ({"colour": 1}, "unknown keys"),
                                          ({"window": ["a", 1, 1, 1]}, "not a number")])
def test_a_damaged_profile_is_refused_with_one_line(tmp_path, change, words):
    data = {"name": "K", "vendor": "V", "frequencies": [0.0, 0.2, 0.5, 1.0], "window": [1.0, 0.8, 0.3, 0.05],
            "pixel_mm": 0.7, "measured_up_to": 0.5, "provenance": "test", **change}
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "diffusionct-kernel-profiles", "version": 1, "profiles": [data]}))
    with pytest.raises(DiffusionCTError, match=words):
        read_profiles(path)


def _noise_disc(seed: int, size: int = 160) -> np.ndarray:
    """Slices of a 40 HU disc with white noise: every ROI is soft tissue."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    body = np.hypot(y, x) < 0.47 * size
    return np.where(body, 40.0 + rng.normal(0, 20, (3, size, size)), -1000.0)


def test_paired_measurement_recovers_a_known_filter():
    pixel = 0.7
    gain = lambda f: 1 + 3 * (f / 0.7) ** 2  # noqa: E731 - a sharpening kernel change
    source = _noise_disc(0)
    target = apply_transfer(source, gain, pixel).astype(np.float64)
    measurement = measure_pairs("SOFT", [{"SOFT": source, "SHARP": target}], pixel)
    inner = slice(2, 14)  # the procedure's box mean damps bins 1-2; the top bins mix in the disc's edge
    np.testing.assert_allclose(measurement.transfer["SHARP"][inner], gain(measurement.frequencies[inner]), rtol=0.06)
    profiles = {p.name: p for p in profiles_from_measurement(measurement, "Acme", "test")}
    filtered = transfer_gain(profiles["SOFT"], profiles["SHARP"], measurement.frequencies[inner])
    np.testing.assert_allclose(filtered, gain(measurement.frequencies[inner]), rtol=0.06)


def test_a_window_from_a_spectrum_follows_its_high_frequencies():
    """Past the anatomy's bins the window is the spectrum's own, not the two-term fit: a spectrum that keeps 1.6x more
    power at 0.5-0.6 cycles/mm than a Gaussian window gives that back."""
    from diffusionct.kernels.measure import FIRST_NOISE_BIN, bin_frequencies, procedure_response, window_from_nps

    f = bin_frequencies(0.7)
    truth = np.exp(-(f / 0.35) ** 2) * (1 + 0.3 * np.exp(-((f - 0.55) / 0.08) ** 2))
    window = window_from_nps(f, 500 * f * procedure_response() * truth**2)
    join = FIRST_NOISE_BIN
    np.testing.assert_allclose(window[join:-1] / window[join], truth[join:-1] / truth[join], rtol=0.05)


def test_a_kernel_on_the_stored_images_floor_keeps_its_own_share():
    """A smooth kernel's measured transfer includes the images' white floor; its window must not (the simulator adds the
    floor again): measured power = T^2 x reference + floor gives the window T."""
    from diffusionct.kernels.measure import PairedMeasurement, bin_frequencies

    f = bin_frequencies(0.7)
    reference = 2000 * np.exp(-(f / 0.6) ** 2)
    own = np.exp(-(f / 0.2) ** 2)
    floor = 0.4
    smooth = own**2 * reference + floor
    measurement = PairedMeasurement(0.7, f, "SHARP", {"SHARP": reference, "SMOOTH": smooth},
                                    {"SMOOTH": np.sqrt(smooth / reference)}, {"SMOOTH": np.zeros(len(f))}, 30)
    profiles = {p.name: p for p in profiles_from_measurement(measurement, "Acme", "test")}
    assert profiles["SMOOTH"].noise_floor_hu2_mm2 == pytest.approx(floor, rel=0.01)
    inside = f <= profiles["SMOOTH"].measured_up_to + 1e-4  # the band's last bin, where the floor weighs most
    gain = transfer_gain(profiles["SHARP"], profiles["SMOOTH"], f[inside])
    np.testing.assert_allclose(gain, own[inside], rtol=0.01)


def test_kernel_filter_method_saves_loads_and_filters(tmp_path):
    config = RunConfig.from_dict({"data": {"source_kernel": "B30f", "target_kernel": "B70f"}})
    method = train_method("kernel-filter", None, tmp_path / "kf", config, torch.device("cpu"))
    loaded = load_method(tmp_path / "kf")
    assert isinstance(loaded, KernelFilterMethod) and loaded.target.name == "B70f"
    from scipy import ndimage

    hu = ndimage.gaussian_filter(_noise_disc(1, 96)[:2], (0, 0.7, 0.7)).astype(np.float32)  # B30-like noise
    out = loaded.convert_slices(hu, pixel_mm=0.7)
    np.testing.assert_array_equal(out, method.convert_slices(hu, pixel_mm=0.7))
    inner = ndimage.binary_erosion(hu > -500, np.ones((1, 17, 17)))  # away from the disc's edge (B70f overshoots there)
    assert out[inner].std() > 2 * hu[inner].std()  # B30f -> B70f sharpens the noise
    assert abs(float(out[inner].mean() - hu[inner].mean())) < 3.0  # and keeps the mean HU
    with pytest.raises(DiffusionCTError, match="pixel size"):
        loaded.convert_slices(hu)


def test_train_kernel_filter_from_an_unknown_kernel_is_one_line(tmp_path, capsys):
    code, err = run_cli(["train", "--method", "kernel-filter", "--from", "XYZ9", "--to", "B70f", "-o", tmp_path / "kf"], capsys)
    assert_clean_error(code, err, "no kernel profile for 'XYZ9'")
    code, err = run_cli(["train", "--method", "histogram", "--from", "B30f", "--to", "B70f", "-o", tmp_path / "h"], capsys)
    assert_clean_error(code, err, "--data")
    assert not (tmp_path / "kf").exists() and not (tmp_path / "h").exists()
    assert main(["train", "--method", "kernel-filter", "--from", "B30f", "--to", "B70f", "-o", str(tmp_path / "kf")]) == 0
    before = (tmp_path / "kf" / "config.json").read_bytes()
    code, err = run_cli(["train", "--method", "kernel-filter", "--from", "B70f", "--to", "B30f", "-o", tmp_path / "kf"], capsys)
    assert_clean_error(code, err, "run folder exists")
    assert (tmp_path / "kf" / "config.json").read_bytes() == before
    code, err = run_cli(["simulate", "-o", tmp_path / "sim", "--profiles", tmp_path / "kf" / "config.json", "--kernels", "B30f"],
                        capsys)
    assert_clean_error(code, err, "not a kernel profile file")
    assert "unknown kernel" not in err  # the damaged file is the problem, not the kernel's name
    assert not (tmp_path / "sim").exists()


def test_simulator_reconstructs_with_a_profile(tmp_path):
    """Measured profiles simulate like the analytic family: one noisy sinogram, a ConvolutionKernel of the B30 family."""
    from diffusionct.io.image import read_volume

    code = main(["simulate", "-o", str(tmp_path / "sim"), "--kernels", "B30f,B70f,B10f", "--size", "64", "--views", "90",
                 "--slices", "1", "--thickness", "2"])
    assert code == 0
    manifest = json.loads((tmp_path / "sim" / "manifest.json").read_text())
    assert {s["kernel"] for s in manifest["series"]} == {"SIM_B30F", "SIM_B70F", "SIM_B10F"}
    assert len(manifest["pairs"]) == 3
    folder = tmp_path / "sim" / "case_000" / "2mm"
    b30, b70 = (read_volume(folder / f"sim_{k}").hu for k in ("B30f", "B70f"))
    assert np.abs(np.diff(b70, axis=-1)).mean() > 1.5 * np.abs(np.diff(b30, axis=-1)).mean()
    assert get_kernel("B10f").noise_floor_hu2_mm2 > 0 and get_kernel("b10").noise_floor_hu2_mm2 == 0


def test_calibrate_measures_the_real_canon_pairs(shared_data, tmp_path, capsys):
    """The Canon pairs were anonymized apart (other UIDs): calibrate pairs them by acquisition time and geometry."""
    out = tmp_path / "canon.json"
    assert main(["calibrate", "-i", str(shared_data / "canon-phantom-pairs"), "-o", str(out)]) == 0
    profiles = {p.name: p for p in read_profiles(out)}
    assert set(profiles) == {"FC13", "FC51"} and out.with_suffix(".png").stat().st_size > 10_000
    gain = transfer_gain(profiles["FC13"], profiles["FC51"], np.array([0.32, 0.50, 0.69]))
    np.testing.assert_allclose(gain, [2.4, 4.35, 5.95], rtol=0.06)  # the pairs' README: 2.2-2.5, 4.3-4.4, 5.9-6.0
    assert "reference" in json.loads(out.read_text())


def test_shipped_canon_profiles_are_what_their_remake_measures(shared_data):
    """benchmarks/make_kernel_profiles.py remakes the shipped Canon profiles byte for byte, run after run: the remake
    must not anchor on the shipped profile itself (it used to, and drifted in the sixth digit each time)."""
    from diffusionct.kernels.calibrate import calibrate_paired
    from diffusionct.kernels.profiles import SHIPPED

    remade = calibrate_paired([shared_data / "canon-phantom-pairs"], reference="FC13", vendor="Canon", anchor_on_known=False)
    assert profiles_document(remade.profiles) + "\n" == (SHIPPED / "canon.json").read_text()


def test_calibrate_without_pairs_is_one_line(shared_data, tmp_path, capsys):
    code, err = run_cli(["calibrate", "-i", shared_data / "sts-ct" / "STS_002", "-o", tmp_path / "p.json"], capsys)
    assert_clean_error(code, err, "no same-scan kernel pairs")
    code, err = run_cli(["calibrate", "-i", shared_data / "canon-phantom-pairs", "-o", tmp_path / "p.txt"], capsys)
    assert_clean_error(code, err, ".json")
    assert list(tmp_path.iterdir()) == []
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{")
    code, err = run_cli(["calibrate", "-i", shared_data / "canon-phantom-pairs", "-o", tmp_path / "p.json", "--profiles", damaged],
                        capsys)
    assert_clean_error(code, err, "corrupt kernel profile file")  # not silently measured without it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.json"]


def test_a_predictor_held_at_the_calibrated_filter_is_that_filter():
    """Before training, DiffusionCT's predictor with its filter from profiles is the kernel-filter method itself."""
    from diffusionct.models.baselines import ResidualCNN

    source, target = find_profile("B30f"), find_profile("B70f")
    network = ResidualCNN(channels=8, layers=3, pixel_spacing=True, kernel_filter=True,
                          kernel_filter_pixel_anchors=(0.5, 0.75, 1.0))
    network.hold_kernel_filter(lambda f: transfer_gain(source, target, f))
    hu = np.random.default_rng(0).normal(0, 20, (2, 64, 64)).astype(np.float32)
    with torch.no_grad():
        held = network.convert(torch.from_numpy(hu)[:, None], torch.tensor([0.7, 0.7]))[:, 0].numpy()
    physics = apply_transfer(hu, lambda f: transfer_gain(source, target, f), 0.7)
    assert np.abs(physics - hu).std() > 20  # a strong sharpening: the comparison below means something
    assert np.abs(held - physics).std() < 0.03 * np.abs(physics - hu).std()
    assert not network.kernel_filter_trainable


@pytest.mark.parametrize("source, target, learns", [("B30", "B70", True), ("B70", "B30", False)])
def test_a_gap_trained_on_profiles_keeps_the_calibrated_filter(tiny_data, tiny_model, tmp_path, source, target, learns):
    """Training moves the convolutions only, and only towards a sharper target (towards a smoother one the calibrated
    filter is the whole map); the gap records the two profiles its filter came from."""
    from tests.test_model_library import _shared_library

    library = _shared_library(tmp_path / "lib", tiny_model)
    gap = library / "new"
    assert main(["train", "--data", str(tiny_data), "-o", str(gap), "--phase", "predictor", "--from", f"SIM_{source}",
                 "--to", f"SIM_{target}", "--set", "diffusion.predictor.training.steps=3",
                 "--set", "diffusion.predictor.kernel_filter_from=profiles", "--device", "cpu"]) == 0
    meta = json.loads((gap / "config.json").read_text())
    assert [meta["kernel_profiles"][k]["name"] for k in ("source", "target")] == [f"{source}f", f"{target}f"]
    predictor = load_method(gap, "cpu").model.predictor
    knots = np.linspace(0, predictor.kernel_filter.max_cycles_per_mm, predictor.kernel_filter.gain.shape[-1])
    expected = transfer_gain(find_profile(f"{source}f"), find_profile(f"{target}f"), knots)
    assert np.allclose(predictor.kernel_filter.gain.detach().numpy(), expected[None], rtol=1e-6)
    learned = np.abs(predictor.net[-1].weight.detach().numpy()).max() > 0
    if learns:  # trained, then kept only where it beats the calibrated filter on the held-out crops
        verdict = meta["training"]["predictor"]["learned_part"]
        assert verdict["kept"] == learned == (verdict["validation_rmse_hu"] < 0.99 * verdict["calibrated_filter_rmse_hu"])
    else:
        assert not learned and "learned_part" not in meta["training"]["predictor"]
