"""The kernel transfer measured between unpaired sets: known filters are recovered, pairs are synthesized."""

import numpy as np
import pytest

from diffusionct.errors import DiffusionCTError
from diffusionct.kernels.transfer import KernelTransfer, estimate_transfer

PIXEL_MM = 0.7


def _window(half_gain: float):
    return lambda f: np.exp(-np.log(2.0) * (f / half_gain) ** 2)


def _phantom_set(window, seed: int, noise_sd: float, cases: int = 2, size: int = 160) -> list[tuple[np.ndarray, float]]:
    """Water disks in air whose noise went through a kernel window: other 'patients' (seeds) per set."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = np.hypot(yy - size / 2, xx - size / 2) < size * 0.45
    f = np.hypot(np.fft.fftfreq(size, PIXEL_MM)[:, None], np.fft.fftfreq(size, PIXEL_MM)[None, :])
    volumes = []
    for _ in range(cases):
        noise = np.fft.ifft2(np.fft.fft2(rng.normal(0, noise_sd, (6, size, size))) * window(f)).real
        volumes.append((np.where(body, 40.0, -1000.0) + noise * body, PIXEL_MM))
    return volumes


@pytest.mark.parametrize("source_half,target_half", [(0.25, 0.45), (0.45, 0.25), (0.35, 0.35)])
def test_known_transfer_is_recovered_from_other_patients(source_half, target_half):
    source = _phantom_set(_window(source_half), seed=1, noise_sd=30.0)
    target = _phantom_set(_window(target_half), seed=2, noise_sd=45.0)  # another dose: c absorbs it
    transfer = estimate_transfer(source, target)
    f = np.array([0.1, 0.2, 0.3, 0.4])
    truth = _window(source_half)(f) / _window(target_half)(f)
    np.testing.assert_allclose(transfer.gain(f), truth, rtol=0.15)
    assert transfer.gain(np.array([0.0]))[0] == pytest.approx(1.0)  # a kernel keeps the mean HU
    assert transfer.noise_ratio == pytest.approx((30.0 / 45.0) ** 2, rel=0.3)


def test_apply_keeps_the_mean_and_filters_like_the_gain():
    transfer = KernelTransfer(coefficients=(-2.0,), f_norm=0.5, f_max=0.7)
    rng = np.random.default_rng(0)
    image = 40.0 + rng.normal(0, 20, (1, 128, 128))
    out = transfer.apply(image, PIXEL_MM)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.mean() == pytest.approx(image.mean(), abs=0.5)
    assert out.std() < 0.7 * image.std()  # a smoothing transfer removes noise power
    same = KernelTransfer(coefficients=(0.0,), f_norm=0.5, f_max=0.7).apply(image, PIXEL_MM)
    np.testing.assert_allclose(same, image, atol=1e-3)  # H = 1: the image itself


def test_round_trip_and_scaling():
    transfer = estimate_transfer(_phantom_set(_window(0.25), 1, 30.0), _phantom_set(_window(0.45), 2, 30.0))
    again = KernelTransfer.from_dict(transfer.to_dict())
    np.testing.assert_allclose(again.gain(np.array([0.2, 0.3])), transfer.gain(np.array([0.2, 0.3])))
    stronger = transfer.scaled(1.25)
    assert stronger.gain(np.array([0.3]))[0] < transfer.gain(np.array([0.3]))[0] < 1.0


def test_too_little_soft_tissue_is_a_clear_error():
    air = [(np.full((2, 64, 64), -1000.0), PIXEL_MM)]
    with pytest.raises(DiffusionCTError, match="too little uniform soft tissue"):
        estimate_transfer(air, air)
