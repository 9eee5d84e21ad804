"""The simulator's realism options on tiny images: non-stationary noise, kernel texture, anatomy, randomization."""

import json

import numpy as np
import pydicom
import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.io import read_dicom_series
from diffusionct.simulate.calibration import centre_periphery_noise
from diffusionct.kernels.spectra import kernel_texture
from diffusionct.kernels.family import get_kernel
from diffusionct.simulate.phantom import random_phantom
from diffusionct.simulate.scanner import Scanner, ScannerSettings
from diffusionct.simulate.simulator import DomainRandomization, SimulationConfig, Simulator, render_slab

# 4 mm pixels: a 35 cm patient fits a 96-pixel field of view
LARGE_FOV = ScannerSettings(size=96, pixel_mm=4.0, n_views=160)


def test_noise_is_higher_in_the_centre_of_a_large_patient():
    measured = centre_periphery_noise(LARGE_FOV, repeats=16)
    assert measured["ratio"] > 1.15, measured


def test_bowtie_passes_fewer_photons_away_from_the_centre():
    bowtie = ScannerSettings(size=64, pixel_mm=4.0, bowtie_strength=0.5).bowtie_transmission()
    centre = len(bowtie) // 2
    assert bowtie[centre] == pytest.approx(1.0)
    assert bowtie[0] < 0.1 and np.all(np.diff(bowtie[centre:]) <= 0)
    assert np.all(ScannerSettings(size=64, bowtie_strength=0.0).bowtie_transmission() == 1.0)


def test_tube_current_follows_the_attenuation_of_each_view():
    settings = ScannerSettings(size=64, pixel_mm=4.0, n_views=32)
    n = settings.size
    axis = (np.arange(n) - (n - 1) / 2) * settings.pixel_mm
    y, x = np.meshgrid(axis, axis, indexing="ij")
    ellipse = np.where((x / 110) ** 2 + (y / 60) ** 2 < 1, 0.0, -1000.0)  # wide: lateral views see more water
    sino = Scanner(settings).sinograms(ellipse[None])[0]
    current = settings.tube_current_profile(sino)
    assert current.mean() == pytest.approx(1.0)
    lateral, frontal = current[0], current[len(current) // 2]  # view 0: rays along y ... the short axis
    assert max(lateral, frontal) / min(lateral, frontal) > 1.5
    assert np.all(ScannerSettings(size=64, tcm_strength=0.0).tube_current_profile(sino) == 1.0)


def test_kernel_texture_orders_the_family():
    settings = ScannerSettings(size=128, pixel_mm=0.69, n_views=256)
    hu = np.full((1, 128, 128), 40.0)  # a soft-tissue block filling the field of view
    scanner = Scanner(settings)
    kernels = [get_kernel(k) for k in ("b10", "b30", "b50", "b70")]
    images = scanner.scan(hu, kernels, 1.0, [np.random.default_rng(0)])
    texture = kernel_texture(images["b30"], images, settings.pixel_mm)
    ratios = [texture[k.name].noise_ratio for k in kernels]
    freqs = [texture[k.name].nps_mean_frequency for k in kernels]
    assert ratios == sorted(ratios) and ratios[1] == pytest.approx(1.0)
    assert freqs == sorted(freqs)


def test_kernel_texture_needs_soft_tissue():
    air = np.full((1, 64, 64), -1000.0)
    with pytest.raises(ValueError, match="no soft-tissue ROI"):
        kernel_texture(air, {"x": air}, 0.7)


def test_stretched_kernel_keeps_its_name_and_scales_frequency():
    b50 = get_kernel("b50")
    sharper = b50.stretched(1.1)
    f = np.linspace(0, 1, 11)
    np.testing.assert_allclose(sharper.window(f), b50.window(f / 1.1))
    assert sharper.dicom_name == b50.dicom_name and sharper.name == b50.name


def test_phantoms_vary_from_case_to_case():
    axis = np.arange(-200, 200, 4.0) + 2.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    areas, lungs = [], []
    for seed in range(8):
        phantom = random_phantom(seed)
        hu, labels = phantom.render(x, y, phantom.z_centre)
        areas.append((hu > -500).sum())
        # parenchyma: lung, not tumour, vessel (> -700 HU) or airway lumen (-1000 HU)
        lung = hu[phantom.lung_masks(x, y, phantom.z_centre) & (labels == 0) & (hu < -699) & (hu > -990)]
        lungs.append(lung.mean())
        assert lung.min() >= -950 and lung.size > 200  # parenchyma in the inflated-lung range
    assert np.std(areas) / np.mean(areas) > 0.1  # body size differs
    assert np.ptp(lungs) > 20  # lung density differs


def _randomized(out, seed=3):
    cfg = SimulationConfig(cases=2, slices=2, thicknesses_mm=[4.0], seed=seed, n_tumours=1,
                           scanner=ScannerSettings(size=64, pixel_mm=3.0, n_views=96),
                           randomize=DomainRandomization(mas=(40, 300), pixel_mm=(2.5, 3.5), kernel_jitter=0.1))
    return json.loads(Simulator(cfg).run_phantoms(out).read_text())


def test_domain_randomization_draws_per_case_and_is_reproducible(tmp_path):
    manifest = _randomized(tmp_path / "a")
    drawn = [entry["acquisition"] for entry in manifest["acquisitions"]]
    assert len({d["mas"] for d in drawn}) == 2 and all(40 <= d["mas"] <= 300 for d in drawn)
    assert all(2.5 <= d["pixel_mm"] <= 3.5 for d in drawn)
    assert all(0.9 <= f <= 1.1 for d in drawn for f in d["kernel_stretch"].values())
    entry = manifest["acquisitions"][0]
    series = read_dicom_series(tmp_path / "a" / entry["series"]["b30"])
    assert series.spacing[0] == pytest.approx(entry["acquisition"]["pixel_mm"], abs=1e-4)
    assert series.kernel == "SIM_B30"
    _randomized(tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


@pytest.mark.parametrize("bad", [dict(mas=(300, 40)), dict(pixel_mm=(0.0, 1.0)), dict(pixel_mm=(float("nan"), 1.0)),
                                 dict(kernel_jitter=0.7), dict(kernel_jitter=float("nan"))])
def test_bad_randomization_is_refused(bad, tmp_path):
    cfg = SimulationConfig(scanner=ScannerSettings(size=32, pixel_mm=4.0, n_views=32), thicknesses_mm=[5.0],
                           randomize=DomainRandomization(**bad))
    with pytest.raises(DiffusionCTError):
        Simulator(cfg).run_phantoms(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_randomization_and_resimulation_of_a_folder_tree(tmp_path, capsys):
    sim = tmp_path / "sim"
    assert main(["simulate", "-o", str(sim), "--size", "48", "--pixel-mm", "4", "--views", "48", "--slices", "2",
                 "--thickness", "4", "--cases", "2", "--dose-range", "50,200", "--kernel-jitter", "0.05"]) == 0
    # the simulated b30 series of two cases stand in for a tree of real CT series
    tree = tmp_path / "tree"
    for case in ("case_000", "case_001"):
        (tree / case).mkdir(parents=True)
        for f in (sim / case / "4mm" / "sim_b30").iterdir():
            (tree / case / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "re"
    assert main(["simulate", "-o", str(out), "--from-ct", str(tree), "--kernels", "b10,b70", "--thickness", "4"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["cases"]) == 2 and len(manifest["pairs"]) == 2
    # the re-simulated series get new identities: the sources' PatientIDs appear nowhere in the output
    sources = {str(pydicom.dcmread(next((tree / c).iterdir()), stop_before_pixels=True).PatientID) for c in ("case_000", "case_001")}
    written = [pydicom.dcmread(p, stop_before_pixels=True) for p in out.rglob("*.dcm")]
    assert written and not {str(d.PatientID) for d in written} & sources
    assert not any(identity in (out / "manifest.json").read_text() for identity in sources)
    assert main(["simulate", "-o", str(tmp_path / "x"), "--from-ct", str(tree), "--from-mask", str(tree)]) == 2
    assert "several series" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path / "x"), "--dose-range", "50"]) == 2
    assert "LOW,HIGH" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_large_patient_is_shrunk_not_truncated():
    settings = ScannerSettings(size=64, pixel_mm=4.0)  # 256 mm field of view
    for seed in range(4):
        hu, _, _ = render_slab(random_phantom(seed), settings, 4.0, slices=1)
        border = np.concatenate([hu[0, 0], hu[0, -1], hu[0, :, 0], hu[0, :, -1]])
        assert np.all(border == -1000.0)
