"""DICOM-SEG masks: the same voxels, and so the same features, as the equivalent label map or RTSTRUCT."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from diffusionct.errors import InputError
from diffusionct.io import read_dicom_series
from diffusionct.io.image import read_label_map

MORPHOLOGY = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
NEOPLASM = hd.sr.CodedConcept("108369006", "SCT", "Neoplasm")


def _write_seg(series_folder, mask_by_label: dict[str, np.ndarray], out, fractional=False, patient=None):
    """A SEG over the series' slices (highdicom), one segment per label; slices without the segment are left out."""
    volume = read_dicom_series(series_folder)
    sources = [pydicom.dcmread(p) for p in sorted(series_folder.glob("*.dcm"))]
    by_uid = {ds.SOPInstanceUID: ds for ds in sources}
    sources = [by_uid[h.SOPInstanceUID] for h in volume.headers]  # the reader's (spatial) order
    stack = np.stack([mask_by_label[k] for k in mask_by_label], axis=-1)
    descriptions = [hd.seg.SegmentDescription(segment_number=i + 1, segment_label=label,
                                              segmented_property_category=MORPHOLOGY, segmented_property_type=NEOPLASM,
                                              algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                    for i, label in enumerate(mask_by_label)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=stack.astype(np.float32 if fractional else np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=50, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="1", omit_empty_frames=True)
    if patient:
        seg.PatientID = patient
    seg.save_as(out)
    return volume


@pytest.mark.parametrize("fractional", [False, True])
def test_seg_segments_match_the_label_map(tiny_series, tmp_path, fractional):
    folder, _ = tiny_series(shape=(6, 24, 28))
    volume = read_dicom_series(folder)
    tumour = np.zeros(volume.shape, bool)
    tumour[1:4, 5:12, 6:15] = True
    other = np.zeros(volume.shape, bool)
    other[3:6, 14:20, 2:9] = True
    _write_seg(folder, {"GTV": tumour, "node": other}, tmp_path / "seg.dcm", fractional=fractional)
    assert np.array_equal(read_label_map(tmp_path / "seg.dcm", volume, roi="gtv") > 0, tumour)
    assert np.array_equal(read_label_map(tmp_path / "seg.dcm", volume, roi="node") > 0, other)
    with pytest.raises(InputError, match="holds 2 segments; choose one with --roi: GTV, node"):
        read_label_map(tmp_path / "seg.dcm", volume)
    with pytest.raises(InputError, match="no segment named 'liver'"):
        read_label_map(tmp_path / "seg.dcm", volume, roi="liver")


def test_seg_of_another_patient_is_refused(tiny_series, tmp_path):
    folder, _ = tiny_series()
    volume = read_dicom_series(folder)
    mask = np.zeros(volume.shape, bool)
    mask[1:3, 4:8, 4:8] = True
    _write_seg(folder, {"GTV": mask}, tmp_path / "seg.dcm", patient="SOMEONE_ELSE")
    with pytest.raises(InputError, match="belongs to another patient than the image") as refused:
        read_label_map(tmp_path / "seg.dcm", volume)
    assert "SOMEONE_ELSE" not in str(refused.value) and str(volume.metadata["patient_id"]) not in str(refused.value)


def test_seg_gives_the_features_of_the_rtstruct_and_nifti_masks(sts_case, tmp_path, capsys):
    from diffusionct.cli import main
    from diffusionct.io.image import read_image

    case = sts_case("STS_002")
    image = case / "dicom" / "image"
    volume = read_dicom_series(image)
    rtstruct = read_label_map(case / "dicom" / "mask" / "RS.dcm", volume, roi="GTV_Mass_CT") > 0
    _write_seg(image, {"GTV_Mass_CT": rtstruct}, tmp_path / "seg.dcm")
    assert np.array_equal(read_label_map(tmp_path / "seg.dcm", volume, roi="GTV_Mass_CT") > 0, rtstruct)
    nifti = read_image(case / "nifti" / "CT_mask.nii.gz").hu > 0.5
    assert np.array_equal(rtstruct, nifti)
    params = tmp_path / "params.yaml"
    params.write_text("setting: {binWidth: 25}\nimageType: {original: {}}\ndimensions: [3D]\n")
    outputs = {}
    for name, mask in (("seg", tmp_path / "seg.dcm"), ("rtstruct", case / "dicom" / "mask" / "RS.dcm")):
        outputs[name] = tmp_path / f"{name}.csv"
        assert main(["features", "-i", str(image), "-m", str(mask), "--roi", "GTV_Mass_CT", "-o", str(outputs[name]),
                     "--params", str(params), "--workers", "1"]) == 0
    seg_rows = outputs["seg"].read_text().splitlines()
    assert len(seg_rows) == 2 and seg_rows == outputs["rtstruct"].read_text().splitlines()


def _box_seg(tiny_series, tmp_path):
    """A tiny series, a box tumour and its SEG, read back to be damaged: (volume, mask, dataset)."""
    folder, _ = tiny_series()
    volume = read_dicom_series(folder)
    mask = np.zeros(volume.shape, bool)
    mask[1:3, 4:8, 4:8] = True
    _write_seg(folder, {"GTV": mask}, tmp_path / "seg.dcm")
    return volume, mask, pydicom.dcmread(tmp_path / "seg.dcm")


@pytest.mark.parametrize("damage, words", [("segment", r"has no \(readable\) SegmentNumber"),
                                           ("frame", r"has no \(readable\) ReferencedSegmentNumber")])
def test_a_seg_without_its_numbers_is_one_error(tiny_series, tmp_path, damage, words):
    volume, mask, ds = _box_seg(tiny_series, tmp_path)
    if damage == "segment":
        del ds.SegmentSequence[0].SegmentNumber
    else:
        groups = [*ds.get("PerFrameFunctionalGroupsSequence", []), *ds.get("SharedFunctionalGroupsSequence", [])]
        for group in groups:  # wherever the SEG keeps it (one segment: often the shared group)
            if "SegmentIdentificationSequence" in group:
                del group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
    ds.save_as(tmp_path / "damaged.dcm")
    with pytest.raises(InputError, match=words):
        read_label_map(tmp_path / "damaged.dcm", volume)


def _drop_everywhere(ds, keyword):
    for item in ds:
        if item.keyword == keyword:
            del ds[item.tag]
        elif item.VR == "SQ":
            for nested in item.value:
                _drop_everywhere(nested, keyword)


@pytest.mark.parametrize("damage, words", [
    ("empty shared groups", "overlap"), ("empty plane positions", "no PlanePositionSequence"),
    ("no ImagePositionPatient", "no ImagePositionPatient"), ("no ImageOrientationPatient", None)])
def test_a_seg_with_empty_or_missing_geometry_is_one_error(tiny_series, tmp_path, damage, words):
    """Found by benchmarks/fuzz_dicom.py: these were IndexError / TypeError tracebacks."""
    volume, mask, ds = _box_seg(tiny_series, tmp_path)
    if damage == "empty shared groups":
        ds.SharedFunctionalGroupsSequence = []
        for group in ds.PerFrameFunctionalGroupsSequence:
            group.SegmentIdentificationSequence = []
    elif damage == "empty plane positions":
        for group in ds.PerFrameFunctionalGroupsSequence:
            group.PlanePositionSequence = []
    else:
        _drop_everywhere(ds, damage.split()[1])
    ds.save_as(tmp_path / "damaged.dcm")
    if words is None:  # without its orientation the frames are placed as the image's own: the same voxels
        assert np.array_equal(read_label_map(tmp_path / "damaged.dcm", volume), mask)
        return
    with pytest.raises(InputError, match=words):
        read_label_map(tmp_path / "damaged.dcm", volume)


def test_a_segment_number_of_the_wrong_length_is_one_error(tiny_series, tmp_path):
    """Found by benchmarks/fuzz_dicom.py: a SegmentNumber (US) of 1 or 3 bytes was a pydicom exception."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    volume, mask, ds = _box_seg(tiny_series, tmp_path)
    tag = Tag("SegmentNumber")
    ds.SegmentSequence[0][tag] = RawDataElement(tag, "US", 3, b":\x92\xbf", 0, False, True)
    ds.save_as(tmp_path / "damaged.dcm")
    with pytest.raises(InputError, match="SegmentNumber"):
        read_label_map(tmp_path / "damaged.dcm", volume)
