import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from diffusionct.errors import DiffusionCTError, InputError
from diffusionct.io import read_dicom_series, read_image, read_rtstruct_mask, read_volume, write_dicom_series, write_nifti
from diffusionct.io.dicom_writer import SeriesDescription, hu_encoding
from diffusionct.io.image import read_mask
from tests.conftest import STS_CASES, dciodvfy_errors, make_study


# ---------------------------------------------------------------- real GE series


@pytest.mark.parametrize("case", STS_CASES)
def test_real_series_matches_simpleitk(sts_case, case):
    folder = sts_case(case) / "dicom" / "image"
    volume = read_dicom_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    np.testing.assert_array_equal(volume.hu, sitk.GetArrayFromImage(image).astype(np.float32))
    np.testing.assert_allclose(volume.spacing, image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(volume.direction.flatten(), image.GetDirection(), atol=1e-9)
    assert volume.kernel in ("STANDARD", "SOFT")


@pytest.mark.parametrize("case", STS_CASES)
def test_rtstruct_mask_matches_nifti_mask(sts_case, case):
    root = sts_case(case)
    if not (root / "nifti" / "CT_mask.nii.gz").exists():
        pytest.skip(f"{case} has no NIfTI mask")
    volume = read_dicom_series(root / "dicom" / "image")
    mask = read_rtstruct_mask(root / "dicom" / "mask" / "RS.dcm", volume, "GTV_Mass_CT")
    reference = read_mask(root / "nifti" / "CT_mask.nii.gz", volume)
    dice = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
    assert dice >= 0.95, f"Dice {dice:.3f}"


def test_rtstruct_unknown_roi_lists_names(sts_case):
    root = sts_case("STS_002")
    volume = read_dicom_series(root / "dicom" / "image")
    with pytest.raises(InputError, match="GTV_Mass_CT"):
        read_rtstruct_mask(root / "dicom" / "mask" / "RS.dcm", volume, "Lung")


def test_nifti_image_geometry_matches_dicom(sts_case):
    root = sts_case("STS_002")
    if not (root / "nifti" / "CT_image.nii.gz").exists():
        pytest.skip("no NIfTI image")
    dicom = read_dicom_series(root / "dicom" / "image")
    nifti = read_image(root / "nifti" / "CT_image.nii.gz")
    assert dicom.same_grid(nifti, tol=1e-3)
    np.testing.assert_allclose(nifti.hu, dicom.hu, atol=0.5)


def test_real_series_round_trip_is_valid_and_exact(sts_case, tmp_path):
    volume = read_dicom_series(sts_case("STS_008") / "dicom" / "image")
    out = write_dicom_series(volume, tmp_path / "out", SeriesDescription("standardized", "STANDARD", derivation="test"))
    again = read_dicom_series(out)
    np.testing.assert_array_equal(again.hu, volume.hu)
    assert again.origin == volume.origin and again.spacing == volume.spacing
    first = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    src = volume.headers[0]
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "KVP", "Manufacturer"):
        assert first.get(keyword) == src.get(keyword), keyword
    assert first.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert first.ConvolutionKernel == "STANDARD"
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    for path in sorted(out.glob("*.dcm"))[:3]:
        assert dciodvfy_errors(path) == []


# ---------------------------------------------------------------- pydicom's bundled files


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"])
def test_pydicom_bundled_ct(tmp_path, name):
    source = Path(get_testdata_file(name))
    shutil.copy(source, tmp_path / name)
    volume = read_volume(tmp_path / name)
    ds = pydicom.dcmread(source)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert volume.shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_allclose(volume.hu[0], expected)
    assert -1100 < volume.hu.mean() < 3000  # decoded into a plausible HU range


# ---------------------------------------------------------------- generated series


def test_shuffled_file_names_are_ordered_by_position(tiny_series, tmp_path):
    folder, volume = tiny_series()
    files = sorted(folder.glob("*.dcm"))
    names = [f"x{i}.dcm" for i in range(len(files))]
    random.Random(3).shuffle(names)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for file, name in zip(files, names):
        ds = pydicom.dcmread(file)
        ds.InstanceNumber = 100 - ds.InstanceNumber * 7 % 11  # misleading instance numbers
        ds.save_as(shuffled / name)
    again = read_dicom_series(shuffled)
    np.testing.assert_array_equal(again.hu, volume.hu)


def test_round_trip_exact_with_new_unique_uids(tiny_series, tmp_path):
    folder, volume = tiny_series()
    again = read_dicom_series(folder)
    np.testing.assert_array_equal(again.hu, volume.hu)
    np.testing.assert_allclose(again.spacing, volume.spacing, atol=1e-9)
    np.testing.assert_allclose(again.origin, volume.origin, atol=1e-9)
    out = write_dicom_series(again, tmp_path / "derived", SeriesDescription("d", "SHARP", derivation="test"))
    third = read_dicom_series(out)
    np.testing.assert_array_equal(third.hu, volume.hu)
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in out.glob("*.dcm")]
    old = {pydicom.dcmread(p).SOPInstanceUID for p in folder.glob("*.dcm")}
    assert len(set(uids)) == len(uids) and not (set(uids) & old)
    for path in [*folder.glob("*.dcm")][:2] + [*out.glob("*.dcm")][:2]:
        assert dciodvfy_errors(path) == []


def test_two_series_in_one_folder(tiny_series, tmp_path):
    study = make_study()
    a, _ = tiny_series("a", kernel="SMOOTH", study=study)
    b, vol_b = tiny_series("b", kernel="SHARP", study=study, seed=5)
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    for f in b.glob("*.dcm"):
        shutil.copy(f, mixed / f"b_{f.name}")
    with pytest.raises(InputError, match="holds 2 series"):
        read_dicom_series(mixed)
    uid = pydicom.dcmread(next(b.glob("*.dcm"))).SeriesInstanceUID
    np.testing.assert_array_equal(read_dicom_series(mixed, uid).hu, vol_b.hu)


def test_folder_tree_is_searched(tiny_series, tmp_path):
    folder, volume = tiny_series()
    nested = tmp_path / "tree" / "patient" / "study"
    shutil.copytree(folder, nested)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "tree").hu, volume.hu)


def test_non_dicom_file_is_skipped_with_warning(tiny_series, caplog):
    folder, volume = tiny_series()
    (folder / "notes.bin").write_bytes(b"not dicom at all")
    np.testing.assert_array_equal(read_dicom_series(folder).hu, volume.hu)
    assert any("notes.bin" in r.message for r in caplog.records)


def _rewrite(folder: Path, change) -> None:
    for i, path in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        change(i, ds)
        ds.save_as(path)


def test_gantry_tilt_is_refused(tiny_series):
    folder, _ = tiny_series()
    _rewrite(folder, lambda i, ds: setattr(ds, "ImagePositionPatient", [-10.0, -20.0 + 0.8 * i, 30.0 + 2.5 * i]))
    with pytest.raises(InputError, match="tilt|not stacked"):
        read_dicom_series(folder)


def test_gantry_tilt_tag_is_refused(tiny_series):
    folder, _ = tiny_series()
    _rewrite(folder, lambda i, ds: setattr(ds, "GantryDetectorTilt", 15))
    with pytest.raises(InputError, match="gantry tilt"):
        read_dicom_series(folder)


def test_uneven_spacing_is_refused(tiny_series):
    folder, _ = tiny_series()
    sorted(folder.glob("*.dcm"))[2].unlink()
    with pytest.raises(InputError, match="uneven slice spacing"):
        read_dicom_series(folder)


def test_mixed_slice_sizes_are_refused(tiny_series, tmp_path):
    folder, _ = tiny_series()
    other, _ = tiny_series("other", shape=(1, 10, 10))
    ds = pydicom.dcmread(next(other.glob("*.dcm")))
    ref = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
    for keyword in ("SeriesInstanceUID", "ImageOrientationPatient"):
        setattr(ds, keyword, ref.get(keyword))
    ds.ImagePositionPatient = [-10.0, -20.0, 30.0 + 2.5 * 5]
    ds.save_as(folder / "odd.dcm")
    with pytest.raises(InputError, match="slice size"):
        read_dicom_series(folder)


def test_missing_rescale_is_refused(tiny_series):
    folder, _ = tiny_series()
    _rewrite(folder, lambda i, ds: delattr(ds, "RescaleIntercept") if i == 1 else None)
    with pytest.raises(InputError, match="RescaleIntercept"):
        read_dicom_series(folder)


def test_non_ct_modality_is_refused(tiny_series):
    folder, _ = tiny_series()
    _rewrite(folder, lambda i, ds: setattr(ds, "Modality", "MR"))
    with pytest.raises(InputError, match="modality is MR"):
        read_dicom_series(folder)


def test_corrupt_pixel_data_names_the_file(tiny_series):
    folder, _ = tiny_series()
    path = sorted(folder.glob("*.dcm"))[1]
    path.write_bytes(path.read_bytes()[:-200])  # truncated pixel data
    with pytest.raises(InputError) as info:
        read_dicom_series(folder)
    assert path.name in str(info.value)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_dicom_series(tmp_path / "empty")


def test_existing_output_is_refused_and_input_untouched(tiny_series, tmp_path):
    folder, volume = tiny_series()
    before = {p.name: p.read_bytes() for p in folder.glob("*.dcm")}
    again = read_dicom_series(folder)
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(InputError, match="already exists"):
        write_dicom_series(again, target, SeriesDescription("d", "SHARP", derivation="x"))
    assert list(target.iterdir()) == []
    write_dicom_series(again, target, SeriesDescription("d", "SHARP", derivation="x"), overwrite=True)
    assert len(list(target.glob("*.dcm"))) == volume.shape[0]
    assert {p.name: p.read_bytes() for p in folder.glob("*.dcm")} == before


def test_failed_write_leaves_nothing(tiny_series, tmp_path):
    folder, _ = tiny_series()
    volume = read_dicom_series(folder)
    volume.headers = volume.headers[:-1]  # mismatch makes the writer fail
    with pytest.raises(DiffusionCTError):
        write_dicom_series(volume, tmp_path / "bad", SeriesDescription("d", "SHARP", derivation="x"))
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("lo,hi,exact", [(-1024, 3071, True), (-2048, 3000, True), (-3000, 30000, True), (-40000, 40000, False)])
def test_hu_encoding_fits_range(lo, hi, exact):
    from diffusionct.io.dicom_writer import encode_hu

    hu = np.array([lo, -7, 0, 13, hi], dtype=np.float32)
    representation, slope, intercept = hu_encoding(hu)
    stored = encode_hu(hu, representation, slope, intercept)
    decoded = stored.astype(np.float64) * slope + intercept
    if exact:
        assert slope == 1.0
        np.testing.assert_array_equal(decoded, hu)
    else:
        assert np.abs(decoded - hu).max() <= slope / 2 + 1e-6


def test_nifti_round_trip(tmp_path):
    from tests.conftest import make_volume

    volume = make_volume()
    path = write_nifti(volume, tmp_path / "v.nii.gz")
    again = read_image(path)
    np.testing.assert_array_equal(again.hu, volume.hu)
    assert again.same_grid(volume)
    with pytest.raises(InputError, match="already exists"):
        write_nifti(volume, path)


def test_a_17_character_position_is_written_as_valid_ds(tiny_series, tmp_path):
    """Scanners write 17-character decimal strings; the output's geometry is written anew, within DS's 16."""
    folder, volume = tiny_series()
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds["ImagePositionPatient"].value = [f"{float(v):.14f}".ljust(17, "0")[:17] for v in ds.ImagePositionPatient]
        ds.save_as(path, enforce_file_format=True)
    assert len(str(pydicom.dcmread(path).ImagePositionPatient[0].original_string)) == 17
    out = write_dicom_series(read_dicom_series(folder), tmp_path / "out", SeriesDescription("d", "SHARP", derivation="t"))
    for path in out.glob("*.dcm"):
        position = pydicom.dcmread(path).ImagePositionPatient
        assert len(position) == 3 and all(len(str(v.original_string or v)) <= 16 for v in position)
    assert dciodvfy_errors(next(out.glob("*.dcm"))) == []


def test_a_series_without_pixel_spacing_is_refused(tiny_series, tmp_path):
    folder, _ = tiny_series()
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.PixelSpacing
        ds.save_as(path)
    with pytest.raises(InputError, match="no PixelSpacing"):
        read_dicom_series(folder)


def test_a_derived_slice_keeps_what_the_allow_list_names_and_nothing_else(tiny_series, tmp_path):
    """Patient, study, equipment and acquisition come through; vendor attributes, overlays, annotation flags and
    other modules' attributes of the source pixels stay behind."""
    folder, _ = tiny_series()
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientWeight, ds.InstitutionName, ds.ExposureTime, ds.ContrastBolusAgent = "71.5", "Hospital", 500, "IOHEXOL"
        ds.ImageComments, ds.BurnedInAnnotation, ds.LossyImageCompression = "the source's own note", "YES", "01"
        ds.add_new(0x60003000, "OW", b"\0" * (ds.Rows * ds.Columns // 8))  # an overlay plane's data
        ds.add_new(0x60000010, "US", ds.Rows)
        ds.add_new(0x00091010, "LO", "vendor secret")
        ds.OtherPatientIDsSequence = [pydicom.Dataset()]
        ds.OtherPatientIDsSequence[0].PatientID, ds.OtherPatientIDsSequence[0].TypeOfPatientID = "OLD-7", "TEXT"
        ds.OtherPatientIDsSequence[0].add_new(0x00111010, "LO", "private inside a kept sequence")
        ds.save_as(path, enforce_file_format=True)
    out = write_dicom_series(read_dicom_series(folder), tmp_path / "out", SeriesDescription("d", "SHARP", derivation="t"))
    written = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    assert (written.PatientWeight, written.InstitutionName, written.ExposureTime, written.ContrastBolusAgent) == (
        71.5, "Hospital", 500, "IOHEXOL")
    assert written.OtherPatientIDsSequence[0].PatientID == "OLD-7"
    for keyword in ("ImageComments", "BurnedInAnnotation", "LossyImageCompression"):
        assert keyword not in written, keyword
    assert 0x60003000 not in written and 0x60000010 not in written and 0x00091010 not in written
    assert 0x00111010 not in written.OtherPatientIDsSequence[0]
    assert dciodvfy_errors(sorted(out.glob("*.dcm"))[0]) == []
