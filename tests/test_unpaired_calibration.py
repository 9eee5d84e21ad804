"""Kernel windows from unpaired sets: the sets' noise levels fitted apart from the kernels, spread over patients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffusionct.cli import main
from diffusionct.kernels.profiles import read_profiles, transfer_gain
from diffusionct.kernels.unpaired import log_windows, measure_unpaired, profiles_from_unpaired, uncertain_transfers
from tests.reliability.helpers import assert_clean_error, run_cli

PIXEL_MM = 0.8
INNER = slice(3, 13)  # bins the fit and the disc's edge leave alone


def _gaussian(half_gain: float):
    return lambda f: np.exp(-np.log(2.0) * (f / half_gain) ** 2)


def _patient(window, noise_sd: float, seed: int, size: int = 128, pixel_mm: float = PIXEL_MM) -> np.ndarray:
    """A 40 HU disc whose noise has filtered back-projection's spectrum, |f| W(f)^2, at the patient's own level."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    body = np.hypot(y, x) < 0.47 * size
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size, pixel_mm), np.fft.fftfreq(size, pixel_mm), indexing="ij"))
    noise = np.fft.ifft2(np.fft.fft2(rng.normal(0, 1, (4, size, size))) * np.sqrt(f) * window(f)).real
    noise *= noise_sd / noise.std()
    return np.where(body, 40.0 + noise, -1000.0)


def _set(window, levels, first_seed: int) -> list:
    return [(f"p{first_seed + i}", _patient(window, sd, first_seed + i), PIXEL_MM) for i, sd in enumerate(levels)]


def test_windows_and_transfer_are_recovered_from_patients_of_any_noise_level():
    soft, sharp = _gaussian(0.25), _gaussian(0.45)
    m = measure_unpaired({"SOFT": _set(soft, [8.0, 20.0, 45.0], 0), "SHARP": _set(sharp, [60.0, 25.0], 10)})
    f = m.frequencies[INNER]
    windows = log_windows(m)
    np.testing.assert_allclose(np.exp(windows["SOFT"])[INNER], soft(f), rtol=0.12)
    np.testing.assert_allclose(np.exp(windows["SHARP"])[INNER], sharp(f), rtol=0.12)
    profiles = {p.name: p for p in profiles_from_unpaired(m, "Acme", "test")}
    np.testing.assert_allclose(transfer_gain(profiles["SOFT"], profiles["SHARP"], f), sharp(f) / soft(f), rtol=0.15)
    assert uncertain_transfers(m) == []  # three and two patients, alike within each kernel: the kernels stand out


def test_a_sets_noise_level_never_enters_the_window():
    """The same patients at four times the dose, or a set of loud and quiet patients: the same kernel window."""
    soft = _gaussian(0.3)
    quiet = measure_unpaired({"SOFT": _set(soft, [10.0, 10.0], 0)})
    loud = measure_unpaired({"SOFT": _set(soft, [40.0, 40.0], 0)})
    np.testing.assert_allclose(log_windows(loud)["SOFT"], log_windows(quiet)["SOFT"], atol=1e-9)
    mixed = measure_unpaired({"SOFT": _set(soft, [10.0, 80.0], 0)})
    assert mixed.patients("SOFT") == 2
    f = mixed.frequencies[INNER]
    np.testing.assert_allclose(np.exp(log_windows(mixed)["SOFT"])[INNER], soft(f), rtol=0.1)
    levels = [s.level for s in mixed.series["SOFT"]]
    assert levels[1] - levels[0] == pytest.approx(np.log(8.0), abs=0.05)  # each series keeps its own level
    louder_target = measure_unpaired({"SOFT": _set(soft, [10.0, 10.0], 0), "SHARP": _set(_gaussian(0.45), [90.0], 5)})
    quieter_target = measure_unpaired({"SOFT": _set(soft, [10.0, 10.0], 0), "SHARP": _set(_gaussian(0.45), [3.0], 5)})
    louder, quieter = (m.fit_transfer("SOFT", "SHARP") for m in (louder_target, quieter_target))
    np.testing.assert_allclose(louder.per_bin, quieter.per_bin, atol=1e-9)  # the sets' level is the offset alone
    assert louder.offset - quieter.offset == pytest.approx(np.log(30.0), abs=0.01)


def test_series_of_other_pixel_sizes_measure_one_window():
    """A kernel's window is in cycles/mm: series at 0.6 and 0.8 mm pixels give it on the common grid."""
    window = _gaussian(0.3)
    fine = ("fine", _patient(window, 20.0, 1, pixel_mm=0.6), 0.6)
    m = measure_unpaired({"K": [fine, ("coarse", _patient(window, 20.0, 2), PIXEL_MM)]})
    assert m.frequencies[-1] == pytest.approx(0.5 / PIXEL_MM)  # the coarsest pixel's grid
    f = m.frequencies[INNER]
    np.testing.assert_allclose(np.exp(log_windows(m)["K"])[INNER], window(f), rtol=0.1)


def test_patients_that_differ_more_than_the_kernels_are_named():
    """Two sets of nearly one kernel whose patients' textures scatter widely: the transfer is within its spread."""
    wide = [_gaussian(h) for h in (0.2, 0.5)]
    sets = {"A": [(f"a{i}", _patient(w, 20.0, i), PIXEL_MM) for i, w in enumerate(wide)],
            "B": [(f"b{i}", _patient(w, 20.0, 10 + i), PIXEL_MM) for i, w in enumerate(wide[::-1])]}
    problems = uncertain_transfers(measure_unpaired(sets))
    assert len(problems) == 1 and "patients differ as much as the kernels" in problems[0]
    single = measure_unpaired({"A": sets["A"][:1], "B": sets["B"]})
    assert "one patient" in uncertain_transfers(single)[0]


def test_series_without_soft_tissue_are_left_out_and_a_kernel_without_any_is_refused():
    air = np.full((2, 96, 96), -1000.0)
    m = measure_unpaired({"K": [("p0", _patient(_gaussian(0.3), 20.0, 0), PIXEL_MM), ("air", air, PIXEL_MM)]})
    assert m.patients("K") == 1 and "air" in m.skipped[0]
    from diffusionct.errors import DiffusionCTError

    with pytest.raises(DiffusionCTError, match="too little uniform soft tissue.*K"):
        measure_unpaired({"K": [("air", air, PIXEL_MM)]})


def test_calibrate_unpaired_on_the_real_ge_sets(shared_data, tmp_path, capsys):
    """Six real GE series of six patients: SOFT and STANDARD profiles, STANDARD the sharper, with a spread."""
    out = tmp_path / "ge.json"
    assert main(["calibrate", "--unpaired", "-i", str(shared_data / "sts-ct"), "-o", str(out), "--vendor", "GE"]) == 0
    profiles = {p.name: p for p in read_profiles(out)}
    assert set(profiles) == {"SOFT", "STANDARD"} and out.with_suffix(".png").stat().st_size > 10_000
    gain = transfer_gain(profiles["SOFT"], profiles["STANDARD"], np.array([0.05, 0.2, 0.4]))
    assert abs(gain[0] - 1) < 0.05 and 1.05 < gain[1] < gain[2] < 4  # what the kernels change, from low to high f
    assert max(profiles["STANDARD"].spread) > 0.05  # three patients: a spread, kept in the profile
    assert json.loads(out.read_text())["pairing"] == "unpaired"
    one_each = [shared_data / "sts-ct" / case for case in ("STS_002", "STS_008")]
    code, err = run_cli(["calibrate", "--unpaired", *[a for c in one_each for a in ("-i", c)], "-o", tmp_path / "one.json"],
                        capsys)
    assert_clean_error(code, err, "one patient", "--force")
    assert not (tmp_path / "one.json").exists()
    assert main(["calibrate", "--unpaired", "--force", *[a for c in one_each for a in ("-i", str(c))], "-o",
                 str(tmp_path / "one.json")]) == 0
    code, err = run_cli(["calibrate", "--unpaired", "--reference", "SOFT", "-i", shared_data / "sts-ct", "-o",
                         tmp_path / "r.json"], capsys)
    assert_clean_error(code, err, "--reference")


def test_shipped_ge_profiles_are_what_their_remake_measures(shared_data):
    """benchmarks/make_kernel_profiles.py remakes the shipped GE profiles byte for byte from the six GE series."""
    from diffusionct.kernels.calibrate import calibrate_unpaired
    from diffusionct.kernels.profiles import SHIPPED, profiles_document

    remade = calibrate_unpaired([shared_data / "sts-ct"], vendor="GE")
    assert profiles_document(remade.profiles, pairing="unpaired") + "\n" == (SHIPPED / "ge.json").read_text()
