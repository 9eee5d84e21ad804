import json
from pathlib import Path

import numpy as np
import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.io import read_dicom_series, read_image
from diffusionct.io.scan import find_pairs, scan_folder
from diffusionct.simulate.phantom import random_phantom
from diffusionct.simulate.scanner import ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator, render_slab
from tests.conftest import dciodvfy_errors

TINY = ScannerSettings(size=96, pixel_mm=3.0, n_views=120)


def _simulate(out: Path, seed=1, **kwargs) -> dict:
    cfg = SimulationConfig(cases=kwargs.pop("cases", 1), thicknesses_mm=kwargs.pop("thicknesses_mm", [3.0]),
                           slices=kwargs.pop("slices", 3), seed=seed, scanner=kwargs.pop("scanner", TINY), n_tumours=1, **kwargs)
    manifest = Simulator(cfg).run_phantoms(out)
    return json.loads(manifest.read_text())


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    _simulate(tmp_path / "a", seed=4)
    _simulate(tmp_path / "b", seed=4)
    _simulate(tmp_path / "c", seed=5)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_rescan_is_the_same_patient_with_new_noise(tmp_path):
    first = _simulate(tmp_path / "scan", seed=4, kernels=["b30", "b50"])
    again = _simulate(tmp_path / "rescan", seed=4, kernels=["b30", "b50"], rescan=1)
    assert again["config"]["rescan"] == 1 and first["config"]["rescan"] == 0
    path = first["pairs"][0]["path_a"]
    a, b = read_dicom_series(tmp_path / "scan" / path), read_dicom_series(tmp_path / "rescan" / path)
    noise = a.hu - b.hu
    body = (a.hu > -500) & (b.hu > -500)
    assert np.abs(noise[body]).mean() > 1.0  # new photon noise
    assert abs(noise[body].mean()) < 0.2 * noise[body].std()  # the same anatomy and dose: the difference is noise
    assert np.corrcoef(a.hu[body], b.hu[body])[0, 1] > 0.9
    mask = first["acquisitions"][0]["mask"]
    assert (tmp_path / "scan" / mask).read_bytes() == (tmp_path / "rescan" / mask).read_bytes()
    header_a, header_b = a.headers[0], b.headers[0]
    assert header_a.StudyInstanceUID == header_b.StudyInstanceUID and header_a.PatientID == header_b.PatientID
    assert header_a.SeriesInstanceUID != header_b.SeriesInstanceUID and header_a.SOPInstanceUID != header_b.SOPInstanceUID
    assert "rescan 1" in header_b.SeriesDescription
    with pytest.raises(DiffusionCTError, match="--rescan"):
        _simulate(tmp_path / "bad", rescan=-1)


def test_pairs_are_aligned_and_found_by_scan(tmp_path):
    manifest = _simulate(tmp_path / "sim", thicknesses_mm=[3.0, 6.0])
    assert len(manifest["pairs"]) == 2
    assert len(find_pairs(scan_folder(tmp_path / "sim"))) == 2
    pair = manifest["pairs"][0]
    a = read_dicom_series(tmp_path / "sim" / pair["path_a"])
    b = read_dicom_series(tmp_path / "sim" / pair["path_b"])
    assert a.same_grid(b)
    assert {a.kernel, b.kernel} == {"SIM_B30", "SIM_B70"}
    body = (a.hu > -500) & (b.hu > -500)
    assert np.corrcoef(a.hu[body], b.hu[body])[0, 1] > 0.9  # same anatomy, pixel for pixel
    header = a.headers[0]
    assert float(header.SliceThickness) in (3.0, 6.0) and header.Manufacturer.startswith("DiffusionCT")
    assert dciodvfy_errors(next((tmp_path / "sim" / pair["path_a"]).glob("*.dcm"))) == []


def test_masks_cover_tumours():
    settings = ScannerSettings(size=128, pixel_mm=2.5, n_views=64)
    phantom = random_phantom(11, n_tumours=2)
    hu, labels, _ = render_slab(phantom, settings, 2.5, slices=int(60 / 2.5))
    for label, tumour in enumerate(phantom.tumours, start=1):
        voxels = (labels == label).sum()
        expected = 4 / 3 * np.pi * tumour.radius**3 / (2.5**3)
        assert voxels > 0.3 * expected, (label, voxels, expected)
        # the mask lies on tumour tissue, not on air or aerated lung
        assert np.median(hu[labels == label]) > -750


def test_phantom_has_the_anatomy():
    settings = ScannerSettings(size=128, pixel_mm=2.8)
    hu, _, _ = render_slab(random_phantom(2), settings, 1.0, slices=1)
    values = hu[0]
    assert (values < -950).mean() > 0.2  # air around the body
    assert ((values > -900) & (values < -700)).mean() > 0.05  # lungs
    assert (values > 700).sum() > 10  # bone: spine and ribs
    assert ((values > -150) & (values < -50)).mean() > 0.02  # fat


def test_resimulate_real_ct(sts_case, tmp_path):
    from diffusionct.io.image import read_mask

    root = sts_case("STS_003")
    full = read_dicom_series(root / "dicom" / "image")
    full_mask = read_mask(root / "dicom" / "mask" / "RS.dcm", full, "GTV_Mass_CT")
    middle = int(np.flatnonzero(full_mask.any(axis=(1, 2))).mean())
    volume, mask = full.slab(middle - 3, middle + 3), full_mask[middle - 3:middle + 3]
    np.testing.assert_array_equal(read_mask(root / "dicom" / "mask" / "RS.dcm", volume, "GTV_Mass_CT"), mask)
    cfg = SimulationConfig(kernels=["b30", "b70"], thicknesses_mm=[volume.spacing[2]], seed=0)
    manifest = json.loads(Simulator(cfg).run_from_cts([(volume, mask)], tmp_path / "re").read_text())
    assert len(manifest["pairs"]) == 1 and len(manifest["masks"]) == 2
    pair = manifest["pairs"][0]
    sim_mask = read_image(tmp_path / "re" / next(iter(manifest["masks"].values()))).hu > 0
    np.testing.assert_array_equal(sim_mask, mask)
    smooth = read_dicom_series(tmp_path / "re" / (pair["path_a"] if "b30" in pair["path_a"] else pair["path_b"]))
    assert smooth.same_grid(volume, tol=1e-3)
    inside = np.abs(volume.hu) < 200  # soft tissue keeps its HU through re-simulation
    assert abs(float(np.median(smooth.hu[inside] - volume.hu[inside]))) < 15
    # the crop ends in tissue: its border is no edge, so the two kernels differ there about as much as inside
    sharp = read_dicom_series(tmp_path / "re" / (pair["path_b"] if "b30" in pair["path_a"] else pair["path_a"]))
    difference = sharp.hu - smooth.hu
    border = np.ones(difference.shape[1:], bool)
    border[2:-2, 2:-2] = False
    rms = lambda values: float(np.sqrt(np.mean(values ** 2)))  # noqa: E731
    assert rms(difference[:, border]) < 2 * rms(difference[:, 8:-8, 8:-8])


def test_bad_parameters_write_nothing(tmp_path):
    for bad in (dict(kernels=["smooth", "nope"]), dict(kernels=["smooth", "b30"]), dict(cases=0), dict(thicknesses_mm=[0.1]),
                dict(thicknesses_mm=[float("nan")]), dict(slices=0)):
        cfg = SimulationConfig(scanner=TINY, **{"cases": 1, **bad})
        with pytest.raises(DiffusionCTError):
            Simulator(cfg).run_phantoms(tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_cli_simulate_and_errors(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "-o", str(out), "--size", "64", "--pixel-mm", "4", "--views", "64", "--slices", "2",
                 "--thickness", "4", "--kernels", "smooth,medium,sharp"]) == 0
    assert len(json.loads((out / "manifest.json").read_text())["pairs"]) == 3
    assert main(["simulate", "-o", str(out)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["simulate", "-o", str(tmp_path / "x"), "--mas", "-5"]) == 2
    assert main(["simulate", "-o", str(tmp_path / "x"), "--kernels", "b99"]) == 2
    err = capsys.readouterr().err
    assert "analytic family b10, b30, b50, b70" in err
    assert not (tmp_path / "x").exists()
