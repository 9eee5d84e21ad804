import numpy as np
import pytest

from diffusionct.errors import DiffusionCTError
from diffusionct.simulate.calibration import calibrate, disk_phantom
from diffusionct.kernels.family import KERNELS, get_kernel
from diffusionct.simulate.projector import HAVE_NUMBA, ParallelBeamGeometry, Projector
from diffusionct.simulate.scanner import MU_WATER_PER_MM, Scanner, ScannerSettings, hu_to_mu


def _gaussian(n, sigma):
    axis = np.arange(n) - (n - 1) / 2.0
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return np.exp(-(x**2 + y**2) / (2 * sigma**2))


@pytest.mark.parametrize("oversampling", [1, 2])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_projection_of_a_gaussian_is_analytic(backend, oversampling):
    if backend == "numba" and not HAVE_NUMBA:
        pytest.skip("numba not installed")
    geometry = ParallelBeamGeometry(size=64, pixel_mm=0.5, n_views=24, detector_oversampling=oversampling)
    sino = Projector(geometry, backend=backend).project(_gaussian(64, 6.0)[None])[0]
    t = (np.arange(geometry.n_detectors) - (geometry.n_detectors - 1) / 2.0) / oversampling
    expected = 0.5 * 6.0 * np.sqrt(2 * np.pi) * np.exp(-(t**2) / (2 * 6.0**2))  # in mm: pixel 0.5 mm
    for view in sino:
        np.testing.assert_allclose(view, expected, atol=0.02 * expected.max())


@pytest.mark.parametrize("oversampling", [1, 2])
def test_backends_agree(oversampling):
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    geometry = ParallelBeamGeometry(size=32, pixel_mm=1.0, n_views=16, detector_oversampling=oversampling)
    image = np.random.default_rng(0).normal(size=(1, 32, 32))
    a, b = Projector(geometry, backend="numba"), Projector(geometry, backend="torch")
    np.testing.assert_allclose(a.project(image), b.project(image), rtol=1e-4, atol=1e-3)
    sino = a.project(image)
    np.testing.assert_allclose(a.backproject(sino), b.backproject(sino), rtol=1e-4, atol=1e-2)


def test_noise_free_fbp_keeps_hu():
    settings = ScannerSettings(size=160, n_views=256)
    image, regions = disk_phantom(settings, body_hu=0.0, body_radius_frac=0.3)
    scanner = Scanner(settings)
    sino = scanner.sinograms(image[None])
    for kernel in KERNELS.values():
        recon = scanner.reconstruct(sino, kernel)[0]
        assert abs(recon[regions["uniform"]].mean()) < 2.0, kernel.name  # water 0 HU
        assert abs(recon[regions["air"]].mean() + 1000) < 10.0, kernel.name


def test_kernels_order_noise_and_resolution():
    cal = calibrate(ScannerSettings(size=96, n_views=160), body_hu=40.0)
    b10, b30, b50, b70 = cal["b10"], cal["b30"], cal["b50"], cal["b70"]
    assert b10.noise_sd < b30.noise_sd < b50.noise_sd < b70.noise_sd
    assert b10.mtf50 < b30.mtf50 < b50.mtf50 < b70.mtf50
    assert 2.5 <= b70.noise_sd / b30.noise_sd <= 7.0
    assert b70.mtf50 >= 1.8 * b30.mtf50
    assert abs(b70.uniform_mean - b30.uniform_mean) < 5.0


def test_sharpest_kernel_resolves_beyond_0_7_cycles_per_mm():
    """The calibration target of the B70f-like kernel at the default pixel (0.7 mm): MTF50 >= 0.7 c/mm."""
    cal = calibrate(ScannerSettings(size=256, n_views=360), kernels=("b30", "b70"))
    assert cal["b70"].mtf50 >= 0.7
    assert 0.3 <= cal["b30"].mtf50 <= 0.45


def test_nps_of_sharp_peaks_higher():
    cal = calibrate(ScannerSettings(size=160, n_views=256), kernels=("b30", "b70"))
    assert cal["b70"].nps_peak > cal["b30"].nps_peak


def test_aliases_name_the_family():
    assert get_kernel("smooth") is KERNELS["b30"] and get_kernel("SHARP") is KERNELS["b70"]
    assert get_kernel("medium").dicom_name == "SIM_B50"


def test_more_dose_less_noise():
    low = calibrate(ScannerSettings(size=64, n_views=96, mas=25), kernels=("b30",))["b30"].noise_sd
    high = calibrate(ScannerSettings(size=64, n_views=96, mas=400), kernels=("b30",))["b30"].noise_sd
    assert high < low / 2.5  # noise ~ 1/sqrt(dose): 4x less at 16x dose


def test_hu_to_mu():
    assert hu_to_mu(np.array(0.0)) == pytest.approx(MU_WATER_PER_MM)
    assert hu_to_mu(np.array(-1000.0)) == pytest.approx(0.0)


@pytest.mark.parametrize("bad", [dict(mas=-1), dict(size=4), dict(pixel_mm=0), dict(n_views=2), dict(electronic_noise=-1),
                                 dict(pixel_mm=float("nan")), dict(mas=float("inf")), dict(detector_oversampling=0),
                                 dict(bowtie_strength=1.5), dict(bowtie_radius_mm=-1), dict(tcm_strength=-0.1)])
def test_bad_scanner_settings(bad):
    with pytest.raises(DiffusionCTError):
        ScannerSettings(**bad)


def test_unknown_kernel_lists_known():
    with pytest.raises(DiffusionCTError, match="b10, b30, b50, b70.*Siemens B70f"):
        get_kernel("b99")
    # a vendor name is a measured profile, not the analytic family member of its name
    assert get_kernel("b70f").dicom_name == "SIM_B70F" and get_kernel("b70f") is not KERNELS["b70"]


def _noise_response(kernel, settings):
    """The simulated images' noise power over |f| W(f)^2 in 0.05 cycles/mm rings from 0.1 to 0.6, relative to its median."""
    scanner, g = Scanner(settings), settings.geometry
    sinos = np.random.default_rng(0).normal(0, 1e-3, (24, g.n_views, g.n_detectors))
    crop = scanner.reconstruct(sinos, kernel)[:, 32:96, 32:96]
    power = (np.abs(np.fft.fft2(crop - crop.mean(axis=(1, 2), keepdims=True))) ** 2).mean(0)
    axis = np.fft.fftfreq(64, d=settings.pixel_mm)
    radius = np.hypot(*np.meshgrid(axis, axis, indexing="ij"))
    ratios = []
    for low in np.arange(0.1, 0.6, 0.05):
        ring = (radius >= low) & (radius < low + 0.05)
        f = radius[ring].mean()
        ratios.append(power[ring].mean() / (f * kernel.window(f) ** 2))
    return np.array(ratios) / np.median(ratios)


def test_a_measured_window_is_the_simulated_images_own():
    """A profile's window is measured on a scanner's images, so the simulated noise must follow |f| W^2 itself: the
    back-projection's interpolation loss is divided out for it (and kept for the analytic family)."""
    from diffusionct.kernels.family import Kernel, gaussian_window

    settings = ScannerSettings(size=128, pixel_mm=0.7, n_views=360)
    measured = _noise_response(Kernel("m", "M", "m", gaussian_window(0.5), of_images=True), settings)
    analytic = _noise_response(Kernel("a", "A", "a", gaussian_window(0.5)), settings)
    np.testing.assert_allclose(measured, 1.0, atol=0.1)  # rings of few pixels at low frequencies scatter
    np.testing.assert_allclose(measured[-5:], 1.0, atol=0.05)  # 0.35-0.6 cycles/mm
    assert analytic[-3:].max() < 0.95 * analytic[:3].min()  # 0.45-0.6 against 0.1-0.25 cycles/mm: the interpolation's loss
