"""Outputs: the input never touched, nothing half-written under a final name, a re-run recognising only its
own finished work, file modes that follow the umask, and no leftovers after a kill."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_dir, atomic_output_file, remove_stale_partials
from tests.reliability.helpers import assert_clean_error, leftovers, run_cli, tree_digest


@pytest.fixture
def series(tiny_data, tmp_path):
    source = tmp_path / "input" / "series"
    shutil.copytree(tiny_data.parent / "case_000" / "2mm" / "sim_b30", source)
    return source


def _standardize(source, output, model, *extra):
    return ["standardize", "-i", source, "-o", output, "--model", model, "--device", "cpu", *extra]


def test_overwrite_onto_the_input_is_refused_and_the_input_kept(series, tiny_model, capsys):
    before = tree_digest(series)
    for output in (series, series / "std", series.parent):
        code, err = run_cli(_standardize(series, output, tiny_model, "--overwrite"), capsys)
        assert_clean_error(code, err, "must not be the input")
    assert tree_digest(series) == before


def test_no_command_writes_onto_what_it_reads_or_into_the_package(series, tiny_data, tiny_model, tmp_path, capsys):
    """One guard for every command: an output that is, holds or lies inside an input (images, masks, references,
    manifests, models) or the installed package is refused before any work."""
    import diffusionct

    mask = tmp_path / "mask.nii.gz"
    shutil.copy(tiny_data.parent / "case_000" / "2mm" / "tumours.nii.gz", mask)
    model = shutil.copytree(tiny_model, tmp_path / "model")
    before = {path: tree_digest(path) if path.is_dir() else path.read_bytes() for path in (series, mask, model)}
    package = diffusionct.__path__[0]
    for command in (["compare", "--reference", series, "--test", series, "--masks", mask, "-o", series, "--overwrite"],
                    ["features", "-i", series, "-m", mask, "-o", mask],
                    ["calibrate", "-i", series, "-o", series / "profiles.json"],
                    ["train", "--method", "kernel-filter", "--from", "B30f", "--to", "B70f", "-o", f"{package}/data/mine"],
                    ["evaluate", "--data", tiny_data, "--model", model, "-o", model, "--overwrite"]):
        code, err = run_cli(command, capsys)
        assert code == 2 and ("must not be the input" in err or "inside the installed diffusionct package" in err), err
    assert before == {path: tree_digest(path) if path.is_dir() else path.read_bytes() for path in (series, mask, model)}
    assert not os.path.exists(f"{package}/data/mine")


@pytest.mark.parametrize("kind", ["empty folder", "unrelated files", "regular file", "other seed"])
def test_existing_output_is_not_taken_as_done(series, tiny_model, tmp_path, capsys, kind):
    output = tmp_path / "out"
    if kind == "empty folder":
        output.mkdir()
    elif kind == "unrelated files":
        output.mkdir()
        (output / "notes.txt").write_text("mine")
    elif kind == "regular file":
        output.write_text("mine")
    else:
        assert run_cli(_standardize(series, output, tiny_model, "--seed", "1"), capsys)[0] == 0
    before = tree_digest(output)
    code, err = run_cli(_standardize(series, output, tiny_model), capsys)
    assert_clean_error(code, err, str(output), "--overwrite")
    assert tree_digest(output) == before  # nothing replaced without --overwrite
    assert run_cli(_standardize(series, output, tiny_model, "--overwrite"), capsys)[0] == 0
    from diffusionct.io import read_dicom_series

    assert read_dicom_series(output).shape == read_dicom_series(series).shape


def test_text_file_named_like_the_nifti_output_is_not_done(series, tiny_model, tmp_path, capsys):
    from diffusionct.io import read_dicom_series, write_nifti

    nifti = tmp_path / "in.nii.gz"
    write_nifti(read_dicom_series(series), nifti)
    output = tmp_path / "x.nii.gz"
    output.write_text("not an image")
    code, err = run_cli(_standardize(nifti, output, tiny_model), capsys)
    assert_clean_error(code, err, "x.nii.gz", "--overwrite")
    assert run_cli(_standardize(nifti, output, tiny_model, "--overwrite"), capsys)[0] == 0
    from diffusionct.cli import main

    assert main([str(a) for a in _standardize(nifti, output, tiny_model)]) == 0
    assert "skipped (already done)" in capsys.readouterr().out  # its own finished output


def test_finished_output_is_skipped_and_a_crash_before_its_record_is_not(series, tiny_model, tmp_path, capsys):
    from diffusionct.io.records import record_path
    from diffusionct.standardize_runs import run_standardize

    output = tmp_path / "out"
    first = run_standardize(series, output, model_dir=tiny_model, device="cpu")
    assert not first[0].skipped and record_path(output).is_file()
    assert run_standardize(series, output, model_dir=tiny_model, device="cpu")[0].skipped
    record_path(output).unlink()  # as if the run had died between the slices and the record
    with pytest.raises(DiffusionCTError, match="not a finished output"):
        run_standardize(series, output, model_dir=tiny_model, device="cpu")


def test_full_disk_during_a_dicom_write_leaves_nothing(series, tiny_model, tmp_path, capsys, monkeypatch):
    import diffusionct.io.dicom_writer as dicom

    calls = {"n": 0}
    real_save = dicom._save

    def failing_save(ds, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(ds, path)

    monkeypatch.setattr(dicom, "_save", failing_save)
    before = tree_digest(series)
    code, err = run_cli(_standardize(series, tmp_path / "out", tiny_model), capsys)
    assert_clean_error(code, err, "No space left on device")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert tree_digest(series) == before


def test_short_dicom_file_is_caught_before_the_rename(series, tiny_model, tmp_path, monkeypatch):
    import diffusionct.io.dicom_writer as dicom

    real_save = dicom._save

    def short_save(ds, path):  # a file system that cut the file without an error
        real_save(ds, path)
        if path.name.endswith("00002.dcm"):
            path.write_bytes(path.read_bytes()[:-100])

    monkeypatch.setattr(dicom, "_save", short_save)
    from diffusionct.standardize_runs import run_standardize

    with pytest.raises(DiffusionCTError, match="incomplete"):
        run_standardize(series, tmp_path / "out", model_dir=tiny_model, device="cpu")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_truncated_nifti_write_is_not_renamed_onto_the_target(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from diffusionct.io import image
    from tests.conftest import make_volume

    real_write = sitk.WriteImage

    def truncating_write(img, name, *args, **kwargs):  # ITK on a full disk: a message on stderr, no exception
        real_write(img, name, *args, **kwargs)
        data = open(name, "rb").read()
        open(name, "wb").write(data[: len(data) // 2])

    monkeypatch.setattr(image.sitk, "WriteImage", truncating_write)
    with pytest.raises(DiffusionCTError, match="incomplete"):
        image.write_nifti(make_volume(shape=(6, 40, 40)), tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists() and leftovers(tmp_path) == []


def test_features_csv_on_a_full_disk(tmp_path, capsys, monkeypatch):
    from diffusionct.io import files

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.Path, "write_text", full)
    with pytest.raises(OSError):
        files.write_text_atomic(tmp_path / "f.csv", "a,b\n")
    assert not (tmp_path / "f.csv").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("output", ["/proc/diffusionct-out", "FILE/below"])
def test_unwritable_output_is_refused_before_any_work(series, tiny_model, tmp_path, capsys, output):
    if output.startswith("FILE"):
        (tmp_path / "FILE").write_text("x")
        output = str(tmp_path / output)
    code, err = run_cli(_standardize(series, output, tiny_model), capsys)
    assert_clean_error(code, err)
    assert ".partial" not in err  # the user's path, not a temporary name


def test_features_output_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    code, err = run_cli(["features", "-i", tmp_path / "in", "-m", tmp_path / "in", "-o", tmp_path / "out"], capsys)
    assert_clean_error(code, err, "is a folder")


def test_outputs_follow_the_umask(series, tiny_model, tmp_path):
    from diffusionct.standardize_runs import run_standardize

    old = os.umask(0o022)
    try:
        run_standardize(series, tmp_path / "out", model_dir=tiny_model, device="cpu")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o644}


def test_model_with_nan_weights_writes_nothing(series, tiny_model, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from diffusionct.methods.store import write_model_config

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    tensors = load_file(str(broken / "autoencoder.safetensors"))
    name = next(k for k in sorted(tensors) if tensors[k].is_floating_point() and tensors[k].numel() > 1)
    tensors[name] = tensors[name] * float("nan")
    save_file(tensors, str(broken / "autoencoder.safetensors"))
    write_model_config(broken, json.loads((broken / "config.json").read_text()))  # a consistent, diverged model
    code, err = run_cli(_standardize(series, tmp_path / "out", broken), capsys)
    assert_clean_error(code, err, "non-finite")
    assert not (tmp_path / "out").exists()


def test_train_overwrite_keeps_the_old_run_when_the_new_one_fails(tiny_data, tmp_path, capsys):
    from tests.model_fixtures import TINY_OVERRIDES

    run = tmp_path / "run"
    args = ["train", "--method", "residual-cnn", "--data", tiny_data, "-o", run, "--device", "cpu"]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    assert run_cli(args, capsys)[0] == 0
    before = tree_digest(run)
    code, err = run_cli([*args, "--overwrite", "--set", "data.source_kernel=NOPE"], capsys)
    assert_clean_error(code, err)
    assert tree_digest(run) == before and leftovers(tmp_path) == []
    assert run_cli([*args, "--overwrite", "--set", "seed=3"], capsys)[0] == 0
    assert tree_digest(run) != before


def test_stale_partials_of_a_dead_writer_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale_dir = tmp_path / f".out.partial-{pid}-abc"
    stale_dir.mkdir()
    (stale_dir / "CT00001.dcm").write_bytes(b"half")
    alive = tmp_path / f".out.partial-{os.getppid()}-def"  # a running process's: kept
    alive.mkdir()
    with atomic_output_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("done")
    assert not stale_dir.exists() and alive.exists()
    assert remove_stale_partials(tmp_path / "out") == []


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_sigterm_during_a_write_leaves_no_partial(tmp_path, kind):
    """The command turns SIGTERM into an exception, so the temporary output is removed on the way out."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from diffusionct import cli
        from diffusionct.io.files import atomic_output_dir, atomic_output_file

        def command(args):
            manager = atomic_output_dir if "{kind}" == "dir" else atomic_output_file
            with manager(Path(r"{tmp_path}") / "out") as tmp:
                if "{kind}" == "dir":
                    (tmp / "half").write_text("x")
                else:
                    tmp.write_text("x")
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()
            return 0

        parser = cli.build_parser
        def build():
            p = parser()
            p._subparsers._group_actions[0].choices["info"].set_defaults(func=command)
            return p
        cli.build_parser = build
        sys.exit(cli.main(["info"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 143, result.stderr
    assert "terminated" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_refuses_a_folder_target(tmp_path):
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(DiffusionCTError, match="is a folder"):
        with atomic_output_file(tmp_path / "x.csv") as tmp:
            tmp.write_text("a")


def test_written_dicom_is_finite_and_refuses_nan(tmp_path):
    from diffusionct.io.dicom_writer import SeriesDescription, write_dicom_series
    from tests.conftest import make_study, make_volume

    volume = make_volume()
    volume.hu[1, 2, 3] = np.nan
    with pytest.raises(DiffusionCTError, match="non-finite"):
        write_dicom_series(volume, tmp_path / "s", SeriesDescription("x", "K"), study=make_study())
    assert list(tmp_path.iterdir()) == []


def test_damaged_source_values_are_not_copied_into_the_output(tiny_series, tmp_path):
    """A garbled date, an unknown tag inside a sequence, a lost StudyID on one slice: the derived series is
    still valid DICOM and one study."""
    import pydicom
    from pydicom.dataset import Dataset

    from diffusionct.io import read_dicom_series
    from diffusionct.io.dicom_writer import SeriesDescription, write_dicom_series
    from tests.conftest import dciodvfy_errors
    from tests.reliability.helpers import set_raw_element

    folder, _ = tiny_series()
    files = sorted(folder.glob("*.dcm"))
    set_raw_element(files[1], "SeriesDate", b"20p60128")
    ds = pydicom.dcmread(files[2])
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "DCM", "x"
    item.add_new(0x01080102, "SH", "garbage")  # a public tag no dictionary knows (a flipped bit)
    ds.ProcedureCodeSequence = [item]
    del ds.StudyID
    ds.save_as(files[2])
    volume = read_dicom_series(folder)
    out = write_dicom_series(volume, tmp_path / "out", SeriesDescription("x", "K", derivation="test"))
    written = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert {w.StudyID for w in written} == {volume.headers[0].StudyID}
    assert all(0x01080102 not in w.ProcedureCodeSequence[0] for w in written if "ProcedureCodeSequence" in w)
    assert all(w.get("SeriesDate", "") != "20p60128" for w in written)
    for path in sorted(out.glob("*.dcm")):
        assert dciodvfy_errors(path) == []


def test_slices_of_other_studies_in_one_series_are_refused(tiny_series):
    import pydicom

    from diffusionct.errors import InputError
    from diffusionct.io import read_dicom_series

    folder, _ = tiny_series()
    odd = sorted(folder.glob("*.dcm"))[3]
    ds = pydicom.dcmread(odd)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(odd)
    with pytest.raises(InputError, match="StudyInstanceUID differs"):
        read_dicom_series(folder)


def test_overwrite_writes_a_finished_output_again(series, tiny_model, tmp_path):
    from diffusionct.standardize_runs import run_standardize

    output = tmp_path / "out"
    run_standardize(series, output, model_dir=tiny_model, device="cpu")
    (output / "CT00001.dcm").write_bytes(b"damaged by hand")
    assert run_standardize(series, output, model_dir=tiny_model, device="cpu")[0].skipped  # the record matches
    again = run_standardize(series, output, model_dir=tiny_model, device="cpu", overwrite=True)
    assert not again[0].skipped and (output / "CT00001.dcm").read_bytes() != b"damaged by hand"


@pytest.mark.parametrize("method", ["diffusionct", "residual-cnn"])
def test_train_on_a_full_disk_leaves_no_run_folder(tiny_data, tmp_path, capsys, monkeypatch, method):
    import diffusionct.methods.store as store
    import diffusionct.train.loop as loop
    from tests.model_fixtures import TINY_OVERRIDES

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "save_file", full_disk)  # every safetensors write: the model's and the checkpoints'
    monkeypatch.setattr(loop, "save_file", full_disk)
    run = tmp_path / "run"
    args = ["train", "--method", method, "--data", tiny_data, "-o", run, "--device", "cpu"]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    code, err = run_cli(args, capsys)
    assert_clean_error(code, err, "No space left on device")
    assert "Traceback" not in err
    assert not run.exists() and leftovers(tmp_path) == []
