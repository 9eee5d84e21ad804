import json


from diffusionct.cli import main
from diffusionct.io.scan import find_pairs, scan_folder
from tests.conftest import make_study


def test_scan_finds_kernel_pairs(tiny_series, tmp_path):
    study = make_study("P1")
    tiny_series("root/smooth", kernel="SMOOTH", study=study)
    tiny_series("root/sharp", kernel="SHARP", study=study, seed=4)
    tiny_series("root/other", kernel="SHARP", shape=(4, 16, 20))  # another study: no pair
    series = scan_folder(tmp_path / "root")
    assert len(series) == 3
    pairs = find_pairs(series)
    assert len(pairs) == 1
    assert {pairs[0].kernel_a, pairs[0].kernel_b} == {"SMOOTH", "SHARP"}


def test_scan_cli_writes_manifest(tiny_series, tmp_path, capsys):
    study = make_study("P2")
    tiny_series("root/a", kernel="B30F", study=study)
    tiny_series("root/b", kernel="B70F", study=study, seed=1)
    out = tmp_path / "manifest.json"
    assert main(["scan", str(tmp_path / "root"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "B30F" in text and "B70F" in text and "1 paired" in text
    header, first = text.splitlines()[:2]
    assert "pixel mm" in header and " 0.75 " in first  # 0.7 x 0.8 mm pixels: the mean, which chooses a model
    manifest = json.loads(out.read_text())
    assert len(manifest["series"]) == 2 and len(manifest["pairs"]) == 1
    assert [s["pixel_mm"] for s in manifest["series"]] == [0.75, 0.75]


def test_scan_real_data(shared_data):
    series = scan_folder(shared_data / "sts-ct")
    assert len(series) == 6
    assert {s.kernel for s in series} == {"STANDARD", "SOFT"}
    assert find_pairs(series) == []  # different patients: no same-scan pairs


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["scan", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "empty" in err and "\n" not in err


def test_scan_to_csv_writes_both_files_or_neither(tmp_path, tiny_data, capsys):
    out = tmp_path / "scan.csv"
    out.with_suffix(".pairs.csv").mkdir()  # the pairs file cannot be written: nothing may be left
    assert main(["scan", str(tiny_data.parent), "-o", str(out)]) == 2
    assert not out.exists()
    out.with_suffix(".pairs.csv").rmdir()
    assert main(["scan", str(tiny_data.parent), "-o", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".pairs.csv").is_file()


def test_two_reconstructions_under_one_series_uid_are_listed_apart_and_not_read_as_one(tiny_series, tmp_path):
    """An export that gave two kernels one SeriesInstanceUID: scan lists each kernel from its own folder; reading both
    as one series is refused, each folder alone reads."""
    import pydicom

    import pytest

    from diffusionct.errors import InputError
    from diffusionct.io.dicom import read_dicom_series

    study = make_study("P3")
    smooth, _ = tiny_series("root/smooth", kernel="B30F", study=study)
    sharp, _ = tiny_series("root/sharp", kernel="B70F", study=study, seed=2)
    uid = pydicom.dcmread(next(smooth.iterdir())).SeriesInstanceUID
    for path in sharp.iterdir():
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.save_as(path)
    series = scan_folder(tmp_path / "root")
    assert sorted((s.kernel, s.path.rsplit("/", 1)[-1]) for s in series) == [("B30F", "smooth"), ("B70F", "sharp")]
    assert read_dicom_series(sharp).kernel == "B70F"
    with pytest.raises(InputError, match="2 reconstructions under one SeriesInstanceUID"):
        read_dicom_series(tmp_path / "root")


def test_a_slice_whose_size_cannot_be_parsed_is_listed_apart_not_a_traceback(tiny_series, caplog):
    """Found by benchmarks/fuzz_dicom.py: Rows of one byte (US needs two) was a pydicom exception out of `scan`."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from diffusionct.io.scan import scan_folder

    folder, _ = tiny_series()
    victim = sorted(folder.glob("*.dcm"))[1]
    ds = pydicom.dcmread(victim)
    tag = Tag("Rows")
    ds[tag] = RawDataElement(tag, "US", 1, b"R", 0, False, True)
    ds.save_as(victim)
    listed = scan_folder(folder)
    assert sorted(s.slices for s in listed) == [1, len(list(folder.glob("*.dcm"))) - 1]
