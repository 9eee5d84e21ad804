"""Damaged inputs give one clean error naming the file and the problem, never a wrong volume or a traceback."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tests.reliability.helpers import assert_clean_error, edit_slice, run_cli, set_raw_element, tree_digest


def _first(folder):
    return sorted(folder.glob("*.dcm"))[0]


def _middle(folder):
    files = sorted(folder.glob("*.dcm"))
    return files[len(files) // 2]


# header values that make a stack of slices no volume, each with the words the error must say
BAD_HEADERS = [
    ("nan position", "_middle", {"ImagePositionPatient": ["nan", "0", "0"]}, "ImagePositionPatient"),
    ("inf position", "_first", {"ImagePositionPatient": ["0", "inf", "0"]}, "ImagePositionPatient"),
    ("nan spacing", "_first", {"PixelSpacing": ["nan", "0.7"]}, "PixelSpacing"),
    ("zero spacing", "_first", {"PixelSpacing": ["0", "0.7"]}, "PixelSpacing"),
    ("negative spacing", "_middle", {"PixelSpacing": ["-0.7", "0.7"]}, "PixelSpacing"),
    ("nan slope", "_middle", {"RescaleSlope": "nan"}, "RescaleSlope"),
    ("zero slope", "_first", {"RescaleSlope": "0"}, "RescaleSlope"),
    ("negative slope", "_first", {"RescaleSlope": "-1"}, "RescaleSlope"),
    ("huge slope", "_first", {"RescaleSlope": "1e30"}, "RescaleSlope"),
    ("inf intercept", "_middle", {"RescaleIntercept": "inf"}, "RescaleIntercept"),
    ("zero orientation", "_first", {"ImageOrientationPatient": ["0", "0", "0", "0", "0", "0"]}, "ImageOrientationPatient"),
    ("nan orientation", "_middle", {"ImageOrientationPatient": ["1", "0", "0", "0", "nan", "0"]}, "ImageOrientationPatient"),
    ("parallel orientation", "_first", {"ImageOrientationPatient": ["1", "0", "0", "1", "0", "0"]}, "ImageOrientationPatient"),
]


@pytest.mark.parametrize("name,which,values,words", BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
def test_bad_geometry_or_rescale_is_refused_by_every_command(tiny_series, tmp_path, capsys, name, which, values, words):
    folder, volume = tiny_series()
    target = globals()[which](folder)
    with _no_validation():
        edit_slice(target, **values)
    mask = tmp_path / "mask.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones(volume.shape, np.uint8)), str(mask))
    before = tree_digest(folder)
    code, err = run_cli(["scan", folder], capsys)  # scan reads headers only: it lists, and must not crash
    assert code == 0, err
    for command in (["standardize", "-i", folder, "-o", tmp_path / "out", "--from", "B30f"],  # its kernel: SMOOTH
                    ["features", "-i", folder, "-m", mask, "-o", tmp_path / "f.csv"]):
        code, err = run_cli(command, capsys)
        assert_clean_error(code, err, target.name, words)
    assert not (tmp_path / "out").exists() and not (tmp_path / "f.csv").exists()
    assert tree_digest(folder) == before


class _no_validation:
    """pydicom refuses to set some of these values; write them the way a broken exporter does."""

    def __enter__(self):
        from pydicom import config

        self.saved = config.settings.writing_validation_mode
        config.settings.writing_validation_mode = config.IGNORE

    def __exit__(self, *exc):
        from pydicom import config

        config.settings.writing_validation_mode = self.saved


def test_read_volume_refuses_each_bad_header(tiny_series):
    """The reader itself (the library API) refuses them, naming the file and the attribute."""
    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series

    for name, which, values, words in BAD_HEADERS:
        folder, _ = tiny_series(name.replace(" ", "_"))
        target = globals()[which](folder)
        with _no_validation():
            edit_slice(target, **values)
        with pytest.raises(InputError, match=words) as info:
            read_dicom_series(folder)
        assert target.name in str(info.value), name


def test_malformed_decimal_string_is_a_clean_error(tiny_series):
    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series

    folder, _ = tiny_series()
    set_raw_element(_middle(folder), "GantryDetectorTilt", b"abcd")
    with pytest.raises(InputError, match="GantryDetectorTilt"):
        read_dicom_series(folder)


def test_truncated_slice_is_named_as_truncated_not_as_a_spacing_gap(tiny_series):
    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series

    folder, _ = tiny_series()
    target = _middle(folder)
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError) as info:
        read_dicom_series(folder)
    message = str(info.value)
    assert target.name in message and "spacing" not in message
    assert "truncated" in message or "corrupt" in message


def test_unreadable_slice_is_named(tiny_series):
    import os

    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series

    if os.geteuid() == 0:
        pytest.skip("root reads files without read permission")
    folder, _ = tiny_series()
    target = _middle(folder)
    target.chmod(0)
    with pytest.raises(InputError, match=target.name):
        read_dicom_series(folder)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_non_finite_voxels_are_refused(tmp_path, bad, suffix):
    from diffusionct.errors import InputError
    from diffusionct.io import read_image

    array = np.zeros((4, 8, 8), np.float32)
    array[2, 3, 3] = bad
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="non-finite"):
        read_image(path)


def test_truncated_nifti_is_refused(tmp_path):
    from diffusionct.errors import InputError
    from diffusionct.io import read_image

    array = np.random.default_rng(0).normal(0, 300, (8, 32, 32)).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|corrupt"):
        read_image(path)
    raw = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(raw))
    raw.write_bytes(raw.read_bytes()[:-1000])
    with pytest.raises(InputError, match="truncated|corrupt|cannot read"):
        read_image(raw)


def test_text_file_named_nifti_is_refused(tmp_path):
    from diffusionct.errors import InputError
    from diffusionct.io import read_image

    path = tmp_path / "x.nii.gz"
    path.write_text("not an image\n")
    with pytest.raises(InputError, match="x.nii.gz"):
        read_image(path)
    with gzip.open(tmp_path / "y.nii.gz", "wb") as f:
        f.write(b"\0" * 10)
    with pytest.raises(InputError, match="y.nii.gz"):
        read_image(tmp_path / "y.nii.gz")


def test_copied_series_still_reads(tiny_series, tmp_path):
    """The checks refuse only what is wrong: an untouched series reads to its own values."""
    from diffusionct.io import read_dicom_series

    folder, volume = tiny_series()
    shutil.copytree(folder, tmp_path / "copy")
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "copy").hu, volume.hu)


def _compress_series(folder, syntax):
    import pydicom

    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)


def _cut_frame(path, keep):
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:int(len(frame) * keep)]])
    ds.save_as(path)


def test_jpeg2000_series_reads_as_the_uncompressed_one_and_a_slice_cut_short_is_refused(tiny_series, tmp_path, capsys):
    """OpenJPEG decodes a JPEG 2000 codestream cut short without a word (its missing detail left out)."""
    from pydicom.uid import JPEG2000Lossless

    from diffusionct.io import read_dicom_series

    folder, volume = tiny_series(shape=(4, 32, 32))
    _compress_series(folder, JPEG2000Lossless)
    np.testing.assert_array_equal(read_dicom_series(folder).hu, volume.hu)  # lossless: the same numbers
    target = _middle(folder)
    _cut_frame(target, 0.6)
    code, err = run_cli(["features", "-i", folder, "-m", tmp_path / "absent.nii.gz", "-o", tmp_path / "f.csv"], capsys)
    assert_clean_error(code, err, target.name, "cut short")


@pytest.mark.parametrize("damage,words", [("cut", "cut short"), ("marker", "marker code inside"),
                                          ("tile length", "tile-part"), ("no start", "start-of-codestream")])
def test_jpeg2000_codestream_damage_is_named(damage, words):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    from diffusionct.io.codestream import codestream_problem

    ds = pydicom.dcmread(get_testdata_file("693_J2KI.dcm"))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    code = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    assert codestream_problem(bytes(code), syntax) is None
    sot = code.index(b"\xff\x90")
    if damage == "cut":
        code = code[: len(code) // 2]
    elif damage == "marker":
        middle = (sot + len(code)) // 2
        code[middle:middle + 2] = b"\xff\xa0"
    elif damage == "tile length":
        code[sot + 6:sot + 10] = (len(code) * 2).to_bytes(4, "big")
    else:
        code[:2] = b"\x00\x00"
    assert words in codestream_problem(bytes(code), syntax)


def test_every_compressed_test_file_of_pydicom_passes_the_codestream_checks():
    """No false alarm on real writers' files (GDCM, DCMTK, vendors): JPEG, JPEG-LS, JPEG 2000, a JP2 wrapper."""
    import warnings
    from pathlib import Path

    import pydicom
    import pydicom.data
    from pydicom.encaps import generate_frames

    from diffusionct.io.codestream import codestream_problem

    checked = {}  # the files installed with pydicom (get_testdata_files would try to download more)
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
            except Exception:
                continue
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or not syntax.is_compressed or "PixelData" not in ds or syntax.name.startswith("RLE"):
            continue
        try:
            frames = list(generate_frames(ds.PixelData, number_of_frames=int(getattr(ds, "NumberOfFrames", 1) or 1)))
        except Exception:
            continue
        for frame in frames:
            assert codestream_problem(frame, str(syntax)) is None, path
        checked[syntax.name] = checked.get(syntax.name, 0) + 1
    assert len(checked) >= 3 and sum(checked.values()) >= 20, checked
