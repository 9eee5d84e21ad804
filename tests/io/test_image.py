"""Image files: a 2D slice is a one-slice volume, and a header without a pixel size needs the user's."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from diffusionct.cli import main
from diffusionct.errors import InputError
from diffusionct.io.image import header_has_spacing, read_image, read_volume


def _slice_file(path, spacing: bool) -> np.ndarray:
    hu = np.random.default_rng(0).normal(0, 30, (64, 64)).astype(np.float32)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.7, 0.7))
    sitk.WriteImage(image, str(path))
    if not spacing:  # as the real 2D slices came: no ElementSpacing line at all
        text = path.read_bytes()
        start = text.index(b"ElementSpacing")
        path.write_bytes(text[:start] + text[text.index(b"\n", start) + 1:])
    return hu


def test_a_2d_image_is_a_one_slice_volume(tmp_path):
    hu = _slice_file(tmp_path / "slice.mha", spacing=True)
    volume = read_image(tmp_path / "slice.mha")
    assert volume.hu.shape == (1, 64, 64) and np.array_equal(volume.hu[0], hu)
    assert volume.pixel_mm == pytest.approx(0.7)


def test_an_image_without_pixel_size_is_refused_unless_given(tmp_path):
    _slice_file(tmp_path / "bare.mha", spacing=False)
    assert not header_has_spacing(tmp_path / "bare.mha")
    with pytest.raises(InputError, match="gives no pixel size .* --pixel-mm"):
        read_volume(tmp_path / "bare.mha")
    assert read_volume(tmp_path / "bare.mha", pixel_mm=0.65).pixel_mm == pytest.approx(0.65)
    _slice_file(tmp_path / "stated.mha", spacing=True)
    with pytest.raises(InputError, match="header gives 0.7 mm pixels"):
        read_volume(tmp_path / "stated.mha", pixel_mm=0.5)


def test_standardize_a_bare_2d_slice_with_pixel_mm_writes_a_2d_slice(tmp_path, capsys):
    hu = _slice_file(tmp_path / "bare.mha", spacing=False)
    model = tmp_path / "filter"
    assert main(["train", "--method", "kernel-filter", "--from", "B30f", "--to", "B70f", "-o", str(model)]) == 0
    out = tmp_path / "out.mha"
    assert main(["standardize", "-i", str(tmp_path / "bare.mha"), "-o", str(out), "--model", str(model)]) == 2
    assert "--pixel-mm" in capsys.readouterr().err and not out.exists()
    assert main(["standardize", "-i", str(tmp_path / "bare.mha"), "-o", str(out), "--model", str(model),
                 "--pixel-mm", "0.7", "--device", "cpu"]) == 0
    written = sitk.ReadImage(str(out))
    assert written.GetDimension() == 2 and written.GetSpacing() == pytest.approx((0.7, 0.7))
    sharpened = sitk.GetArrayFromImage(written)
    assert sharpened.shape == hu.shape and sharpened.std() > 1.5 * hu.std()  # B30f -> B70f sharpens the noise
