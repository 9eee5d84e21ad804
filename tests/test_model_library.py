"""Choosing a model per series from a folder of models (``standardize --to/--from``)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffusionct.cli import main
from diffusionct.errors import DiffusionCTError
from diffusionct.io.dicom import read_dicom_series
from diffusionct.io import read_image, write_nifti
from diffusionct.kernels.names import kernel_family
from diffusionct.methods.library import choose_model, for_pixel_size, library_models, share_weights, shipped_library
from diffusionct.methods.store import FORMAT_VERSION, weights_path
from diffusionct.standardize import Standardizer
from diffusionct.standardize_runs import SeriesInput, _model_per_series, run_standardize



@pytest.mark.parametrize("name, family", [("B30f", "B30"), ("SIM_B30", "B30"), ("b30", "B30"), ("Br40d", "BR40"),
                                          ("B30f\\3", "B30"), ("GE:SOFT", "SOFT"), ("STANDARD", "STANDARD"),
                                          ("FC13", "FC13"), ("B70s", "B70")])
def test_kernel_family(name, family):
    assert kernel_family(name) == family


def _library(root: Path, gaps: dict[str, tuple], weights_from: Path | None = None) -> Path:
    """A folder of models, one per gap: config.json only, or copies of a real model relabelled; a third item of a
    gap is the pixel-size range its model records having been trained on."""
    for name, (source, target, *trained) in gaps.items():
        folder = root / name
        if weights_from is not None:
            shutil.copytree(weights_from, folder, ignore=shutil.ignore_patterns("state"))
            meta = json.loads((folder / "config.json").read_text())
        else:
            folder.mkdir(parents=True)
            meta = {"format_version": FORMAT_VERSION, "config": {"data": {}}}  # what routing reads, and no weights
        meta["config"]["data"].update(source_kernel=source, target_kernel=target)
        meta.pop("trained_pixel_mm", None)
        meta.update({"trained_pixel_mm": trained[0]} if trained else {})
        (folder / "config.json").write_text(json.dumps(meta))
    return root


GAPS = {"b30-b70": ("SIM_B30", "SIM_B70"), "b30-b50": ("SIM_B30", "SIM_B50"), "b70-b30": ("SIM_B70", "SIM_B30"),
        "b10-b70": ("SIM_B10", "SIM_B70")}


@pytest.mark.parametrize("source, target, chosen", [
    ("B30f", "B50", "b30-b50"), ("B30f", "B70", "b30-b70"), ("B10f", "B70f", "b10-b70"), ("SIM_B70", None, "b70-b30"),
    (None, "B50", "b30-b50"),      # one model targets B50: the unknown source does not matter
    ("STANDARD", "B30", "b70-b30"),  # the one model for the target, though not of the series' kernel (warned later)
])
def test_the_model_for_source_and_target(tmp_path, source, target, chosen):
    models = library_models(_library(tmp_path, GAPS))
    assert choose_model(models, source, target, "series").folder.name == chosen


@pytest.mark.parametrize("source, target, message", [
    ("B30f", None, "choose the target with --to"),       # B30 -> B70 and B30 -> B50 both exist
    ("B30f", "B40", "no model targets kernel B40"),
    (None, "B70", "give --from"),                        # B10 -> B70 and B30 -> B70: the source decides
    ("STANDARD", "B70", "no single model fits"),
])
def test_ambiguous_or_missing_model_is_refused(tmp_path, source, target, message):
    models = library_models(_library(tmp_path, GAPS))
    with pytest.raises(DiffusionCTError, match=message):
        choose_model(models, source, target, "series")


PIXEL_GAPS = {"b30-b70": ("SIM_B30", "SIM_B70", [0.63, 0.89]), "b30-b70-wide": ("SIM_B30", "SIM_B70", [0.55, 0.98]),
              "b30-b70-large": ("SIM_B30", "SIM_B70", [0.87, 0.98]), "b70-b30": ("SIM_B70", "SIM_B30")}


@pytest.mark.parametrize("pixel_mm, chosen", [
    (0.7, "b30-b70"),         # inside two ranges: the narrower one
    (0.89, "b30-b70-large"),  # inside all three: the narrowest
    (0.6, "b30-b70-wide"),    # inside one
    (0.4, "b30-b70-wide"),    # outside all: the nearest range (0.55 against 0.63)
    (1.2, "b30-b70-large"),   # outside all, as near to two: the narrower
    (None, "b30-b70"),        # pixel size unknown: the first by name, as before
])
def test_a_gap_with_several_models_takes_the_one_trained_on_the_series_pixel_size(tmp_path, pixel_mm, chosen):
    models = library_models(_library(tmp_path, PIXEL_GAPS))
    assert choose_model(models, "B30f", "B70", "series", pixel_mm).folder.name == chosen
    assert for_pixel_size([m for m in models if m.target == "SIM_B70"], pixel_mm).folder.name == chosen
    # a model that records no range serves every pixel size, after those trained on it
    unrecorded = library_models(_library(tmp_path / "old", {"a": ("SIM_B30", "SIM_B70"), "b": PIXEL_GAPS["b30-b70"]}))
    assert choose_model(unrecorded, "B30f", "B70", "series", pixel_mm).folder.name == ("a" if pixel_mm in (None, 0.4, 0.6, 1.2) else "b")


def test_standardize_routes_a_series_by_its_pixel_size_and_warns_outside_the_training_range(tiny_data, tiny_model,
                                                                                           tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diffusionct.standardize_runs")
    series = tiny_data.parent / "case_000" / "2mm" / "sim_b30"  # 2 mm pixels
    assert read_dicom_series(series).pixel_mm == pytest.approx(2.0)
    library = _library(tmp_path / "lib", {"near": ("SIM_B30", "SIM_B70", [1.5, 2.5]), "far": ("SIM_B30", "SIM_B70", [0.5, 1.0])},
                       weights_from=tiny_model)
    run_standardize(series, tmp_path / "out", model_dir=library, target_kernel="B70", device="cpu", steps=1)
    assert "model near (SIM_B30 -> SIM_B70, pixels 1.50-2.50 mm)" in caplog.text and "outside" not in caplog.text
    shutil.rmtree(library / "near")
    caplog.clear()
    run_standardize(series, tmp_path / "out2", model_dir=library, target_kernel="B70", device="cpu", steps=1)
    assert "pixels of 2.000 mm, outside the 0.50-1.00 mm that model far was trained on" in caplog.text


def test_a_trained_model_records_the_pixel_sizes_of_its_training_pairs(tiny_model):
    meta = json.loads((tiny_model / "config.json").read_text())
    assert meta["trained_pixel_mm"] == [2.0, 2.0]  # the tiny data's one pixel size


def test_a_folder_without_models_is_refused(tmp_path):
    with pytest.raises(DiffusionCTError, match="neither a model folder"):
        library_models(tmp_path)


def test_standardize_to_picks_each_series_model(tiny_data, tiny_model, tmp_path, capsys):
    library = _library(tmp_path / "lib", {"to-b70": ("SIM_B30", "SIM_B70"), "to-b50": ("SIM_B30", "SIM_B50"),
                                          "from-b70": ("SIM_B70", "SIM_B30")}, weights_from=tiny_model)
    series = tiny_data.parent / "case_000" / "2mm" / "sim_b30"
    for target, kernel in (("B50", "SIM_B50"), ("B70f", "SIM_B70")):
        out = run_standardize(series, tmp_path / target, model_dir=library, target_kernel=target, device="cpu", steps=2)
        assert read_dicom_series(out[0].output).kernel == kernel
    # the source kernel read from DICOM: the B70 series goes to the one model from B70
    sharp = tiny_data.parent / "case_000" / "2mm" / "sim_b70"
    out = run_standardize(sharp, tmp_path / "from70", model_dir=library, device="cpu", steps=2)
    assert read_dicom_series(out[0].output).kernel == "SIM_B30"
    # a NIfTI has no kernel: --from names it
    nifti = write_nifti(read_dicom_series(sharp), tmp_path / "sharp.nii.gz")
    out = run_standardize(nifti, tmp_path / "n.nii.gz", model_dir=library, source_kernel="B70f", device="cpu", steps=2)
    assert read_image(out[0].output).shape == read_dicom_series(sharp).shape
    assert main(["standardize", "-i", str(series), "-o", str(tmp_path / "x"), "--model", str(library), "--device", "cpu"]) == 2
    assert "choose the target with --to" in capsys.readouterr().err
    assert main(["standardize", "-i", str(series), "-o", str(tmp_path / "y"), "--model", str(library), "--to", "B40"]) == 2
    assert "no model targets kernel B40" in capsys.readouterr().err


SIEMENS_GAPS = ("b10f-b30f", "b10f-b50f", "b10f-b70f", "b30f-b50f", "b30f-b70f", "b50f-b30f", "b50f-b70f", "b70f-b30f",
                "b70f-b50f")


def test_shipped_models(tiny_data, tmp_path, capsys):
    models = library_models(shipped_library())
    assert sorted(m.folder.name for m in models) == sorted([*(f"siemens-{gap}" for gap in SIEMENS_GAPS),
                                                            "canon-fc13-fc51", "canon-fc51-fc13"])
    assert main(["info"]) == 0
    listed = capsys.readouterr().out
    assert all(m.folder.name in listed for m in models)
    assert "siemens-b30f-b70f (SIM_B30F -> SIM_B70F, pixels 0.5" in listed and listed.count("[default]") == 1
    assert "GE SOFT, STANDARD" in listed and "Canon FC13, FC51" in listed  # the shipped kernel profiles
    # the target B30 from two kernels: each series gets the model from its own kernel, Siemens or Canon
    for source, target in (("B50f", "B30"), ("B70f", "B30"), ("B50f", "B70"), ("B70f", "B50"), ("B10f", "B30"), ("B10f", "B50")):
        chosen = choose_model(models, source, target, "series").folder.name
        assert chosen == f"siemens-{source.lower()}-{target.lower()}f"
    assert choose_model(models, "FC51", "FC13", "series").folder.name == "canon-fc51-fc13"
    assert sum(p.stat().st_size for p in shipped_library().rglob("*") if p.is_file()) <= 20 * 2**20
    # one encoder-decoder and one U-Net serve every gap, stored once; each gap has its own predictor
    assert sorted(p.name for p in shipped_library().glob("*.safetensors")) == ["autoencoder.safetensors", "unet.safetensors"]
    assert all((m.folder / "predictor.safetensors").is_file() and not (m.folder / "unet.safetensors").exists() for m in models)
    for entry in models:  # every gap stands on its kernels' measured profiles, says so, and has a card
        meta = json.loads((entry.folder / "config.json").read_text())
        assert meta["config"]["diffusion"]["predictor"]["kernel_filter_from"] == "profiles"
        assert kernel_family(meta["kernel_profiles"]["target"]["name"]) == kernel_family(entry.target)
        assert dict(entry.card).keys() >= {"kernels", "training_data", "licence", "real_pairs", "intended_use"}
    assert main(["info", "--card", "canon-fc13-fc51"]) == 0
    assert "intended use: research" in capsys.readouterr().out
    assert main(["info", "--card", "sim-b30-b70"]) == 2 and "no such shipped model" in capsys.readouterr().err
    # the default gap, with and without --to: one model for every pixel size
    for pixel_mm in (0.7, 0.977, None):
        job = SeriesInput(tmp_path, tmp_path / "out", None, "SIM_B30", pixel_mm)
        assert [f.name for f in _model_per_series([job], None, None, None)] == ["siemens-b30f-b70f"]
        assert [f.name for f in _model_per_series([job], None, None, "B70")] == ["siemens-b30f-b70f"]
    for series, target in (("sim_b30", "B50"), ("sim_b70", "B30")):
        out = run_standardize(tiny_data.parent / "case_000" / "2mm" / series, tmp_path / target, target_kernel=target,
                              device="cpu", steps=1)
        assert read_dicom_series(out[0].output).kernel == f"SIM_{target}F"


def test_models_of_a_library_share_weights_stored_once(tiny_data, tiny_model, tmp_path):
    """share_weights stores the files every model holds alike once, in the library; the models load them from there,
    give the same output, and refuse to load when the shared file is missing or changed."""
    library = _library(tmp_path / "lib", {"to-b70": ("SIM_B30", "SIM_B70"), "to-b50": ("SIM_B30", "SIM_B50")},
                       weights_from=tiny_model)
    series = tiny_data.parent / "case_000" / "2mm" / "sim_b30"
    model = library / "to-b50"
    before = read_dicom_series(run_standardize(series, tmp_path / "before", model_dir=model, device="cpu", steps=2)[0].output)
    shared = share_weights(library)
    assert {"autoencoder.safetensors", "unet.safetensors"} <= set(shared)
    assert all((library / name).is_file() and not (model / name).exists() for name in shared)
    after = read_dicom_series(run_standardize(series, tmp_path / "after", model_dir=model, device="cpu", steps=2)[0].output)
    assert np.array_equal(before.hu, after.hu)
    assert share_weights(library) == []  # nothing left to share
    alone = shutil.copytree(model, tmp_path / "alone")  # a model copied out of its library lacks the shared files
    with pytest.raises(DiffusionCTError, match="copy the whole library"):
        Standardizer.load(alone, device="cpu")
    unet = library / "unet.safetensors"
    unet.write_bytes(unet.read_bytes()[:-1] + b"\0")
    with pytest.raises(DiffusionCTError, match="does not match the checksum"):
        Standardizer.load(model, device="cpu")


def test_a_model_takes_only_shared_files_its_config_records(tiny_model, tmp_path):
    library = _library(tmp_path / "lib", {"a": ("SIM_B30", "SIM_B70"), "b": ("SIM_B30", "SIM_B50")}, weights_from=tiny_model)
    (library / "b" / "unet.safetensors").write_bytes((library / "a" / "unet.safetensors").read_bytes()[:-1] + b"\0")
    assert "unet.safetensors" not in share_weights(library)  # the copies differ: each model keeps its own
    assert (library / "a" / "unet.safetensors").is_file()
    meta = json.loads((library / "a" / "config.json").read_text())
    assert weights_path(library / "a", "unet.safetensors", meta) == library / "a" / "unet.safetensors"
    del meta["weights_sha256"]["autoencoder.safetensors"]
    assert weights_path(library / "a", "autoencoder.safetensors", meta) == library / "a" / "autoencoder.safetensors"
    with pytest.raises(DiffusionCTError, match="not a folder of model folders"):
        share_weights(library / "a")


def _shared_library(root: Path, tiny_model: Path, gaps: dict[str, tuple[str, str]] | None = None) -> Path:
    """A library of the tiny model relabelled per gap, its encoder-decoder and U-Net stored once (as shipped)."""
    library = _library(root, gaps or {"a": ("SIM_B30", "SIM_B70"), "b": ("SIM_B30", "SIM_B50")}, weights_from=tiny_model)
    share_weights(library)
    return library


def test_a_new_gap_trains_its_predictor_beside_the_shared_networks(tiny_data, tiny_model, tmp_path, capsys):
    library = _shared_library(tmp_path / "lib", tiny_model, {"to-b70": ("SIM_B30", "SIM_B70"), "to-b50": ("SIM_B30", "SIM_B50")})
    for folder in library.glob("to-*"):  # as in the shipped library, where every gap says where its U-Net was trained
        meta = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**meta, "unet_trained_on": "SIM_B30 -> SIM_B70"}))
    shared = {p.name: p.read_bytes() for p in library.glob("*.safetensors")}
    gap = library / "from-b70"
    args = ["train", "--data", str(tiny_data), "-o", str(gap), "--phase", "predictor", "--from", "SIM_B70", "--to", "SIM_B30",
            "--set", "diffusion.predictor.training.steps=2", "--device", "cpu"]
    assert main(args) == 0
    assert sorted(p.name for p in gap.iterdir()) == ["config.json", "predictor.safetensors"]
    assert {p.name: p.read_bytes() for p in library.glob("*.safetensors")} == shared  # the library's networks unchanged
    assert not list(tmp_path.glob(".lib.*"))  # the staging folder is gone
    assert json.loads((gap / "config.json").read_text())["unet_trained_on"] == "SIM_B30 -> SIM_B70"
    meta, donor = (json.loads((folder / "config.json").read_text())["config"] for folder in (gap, library / "to-b50"))
    assert (meta["data"]["source_kernel"], meta["data"]["target_kernel"]) == ("SIM_B70", "SIM_B30")
    assert meta["unet"] == donor["unet"] and meta["autoencoder"] == donor["autoencoder"]
    assert 0 < meta["diffusion"]["x0_scale"] != donor["diffusion"]["x0_scale"]  # measured on the gap's own pairs
    # the library now serves a B70 series to B30 with the new gap, which changes it
    sharp = tiny_data.parent / "case_000" / "2mm" / "sim_b70"
    out = read_dicom_series(run_standardize(sharp, tmp_path / "out", model_dir=library, target_kernel="B30", device="cpu",
                                            steps=2)[0].output)
    assert out.kernel == "SIM_B30" and np.abs(out.hu - read_dicom_series(sharp).hu).max() > 0.5
    # the same seed gives the same predictor; an existing gap is replaced only when asked
    predictor = (gap / "predictor.safetensors").read_bytes()
    assert main(args) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0 and (gap / "predictor.safetensors").read_bytes() == predictor
    assert not list(tmp_path.glob(".lib.*"))  # nor the replaced gap


@pytest.mark.parametrize("change, message", [
    (["--set", "unet.channels=[8,8]"], "takes its networks and diffusion from the library"),
    (["--method", "residual-cnn"], "drop --method and --config"),
    (["-o", "{tmp}/alone/gap"], "not a model library"),
    ([], "needs its kernels: give --from KERNEL and --to KERNEL"),
])
def test_a_new_gap_is_refused_with_the_reason(tiny_data, tiny_model, tmp_path, capsys, change, message):
    library = _shared_library(tmp_path / "lib", tiny_model)
    (tmp_path / "alone").mkdir()
    args = ["train", "--data", str(tiny_data), "-o", str(library / "new"), "--phase", "predictor", "--device", "cpu",
            *(["--from", "SIM_B70", "--to", "SIM_B30"] if change else []), *(c.format(tmp=tmp_path) for c in change)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (library / "new").exists()


def test_a_stopped_gap_resumes_to_the_same_predictor(tiny_data, tiny_model, tmp_path, monkeypatch):
    from diffusionct.train import single_network
    from diffusionct.train.library_gap import train_library_gap
    from diffusionct.train.loop import TrainingRun

    library = _shared_library(tmp_path / "lib", tiny_model)
    gap = ["data.source_kernel=SIM_B70", "data.target_kernel=SIM_B30", "diffusion.predictor.training.steps=4",
           "diffusion.predictor.training.checkpoint_every=2"]
    train_library_gap(tiny_data, library / "straight", gap, "cpu")
    save_state = TrainingRun._save_state

    def save_then_stop(self, phase, step, *args):
        save_state(self, phase, step, *args)
        if phase == "predictor" and step == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # stopped after the predictor's checkpoint at step 2 of 4
        patch.setattr(TrainingRun, "_save_state", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train_library_gap(tiny_data, library / "resumed", gap, "cpu")
    assert not (library / "resumed").exists() and (tmp_path / ".lib.resumed.partial").is_dir()
    steps = []
    optimize = single_network.optimize
    monkeypatch.setattr(single_network, "optimize", lambda *args: (steps.append(1), optimize(*args)))
    train_library_gap(tiny_data, library / "resumed", gap, "cpu", resume=True)
    assert len(steps) == 2  # steps 3 and 4: it went on from the checkpoint
    assert (library / "resumed" / "predictor.safetensors").read_bytes() == (library / "straight" / "predictor.safetensors").read_bytes()


def test_a_new_gap_keeps_its_own_predictor_settings(tiny_data, tiny_model, tmp_path):
    """A gap's predictor (its kernel filter's pixel anchors, its training) is its own: the gap's config records what
    its weights were trained with, not the donor's settings, and the gap loads and runs."""
    library = _shared_library(tmp_path / "lib", tiny_model)
    gap = library / "from-b70"
    assert main(["train", "--data", str(tiny_data), "-o", str(gap), "--phase", "predictor", "--from", "SIM_B70",
                 "--to", "SIM_B30", "--set", "diffusion.predictor.training.steps=2",
                 "--set", "diffusion.predictor.kernel_filter_pixel_anchors=[0.6,2.0]", "--device", "cpu"]) == 0
    meta, donor = (json.loads((folder / "config.json").read_text())["config"] for folder in (gap, library / "a"))
    predictor, donor_predictor = meta["diffusion"]["predictor"], donor["diffusion"]["predictor"]
    assert predictor["kernel_filter_pixel_anchors"] == [0.6, 2.0] != donor_predictor["kernel_filter_pixel_anchors"]
    assert predictor["training"]["steps"] == 2 != donor_predictor["training"]["steps"]
    model = Standardizer.load(gap, "cpu")
    assert tuple(model.method.model.predictor.kernel_filter.pixel_anchors) == (0.6, 2.0)


def test_a_gap_takes_the_donors_predictor_settings_and_sets_its_own_but_not_the_librarys():
    """A new gap's predictor starts from the library's settings (its width, its filter's anchors), which --set may
    change; the predictor's space, the networks and the diffusion are the library's and are refused."""
    from diffusionct.config import RunConfig
    from diffusionct.train.library_gap import gap_config

    donor = RunConfig.load(overrides=["diffusion.predictor.channels=16"]).to_dict()
    kernels = ["data.source_kernel=SIM_B70", "data.target_kernel=SIM_B30"]
    gap = gap_config(donor, kernels)
    assert gap.diffusion.predictor.channels == 16 and gap.diffusion.predictor.kernel_filter_pixel_anchors == [0.5, 0.75, 1.0]
    none = gap_config(donor, [*kernels, "diffusion.predictor.kernel_filter_pixel_anchors=[]"])
    assert none.diffusion.predictor.kernel_filter_pixel_anchors == []
    for library_key in ("diffusion.predictor.space=latent", "unet.channels=[8,8]", "diffusion.steps=3"):
        with pytest.raises(DiffusionCTError, match=library_key.split("=")[0]):
            gap_config(donor, [*kernels, library_key])


def test_without_to_a_series_goes_to_the_gap_from_its_own_kernel(tmp_path):
    """No --to: the default target (B70), from the series' own kernel; a series already at B70 is refused, not
    sharpened again; a series of unknown kernel gets the default gap."""
    def chosen(kernel, target=None):
        job = SeriesInput(tmp_path, tmp_path / "out", None, kernel, 0.7)
        return [f.name for f in _model_per_series([job], None, None, target)]

    assert chosen("B50f") == ["siemens-b50f-b70f"]
    assert chosen("SIM_B10") == ["siemens-b10f-b70f"]
    assert chosen(None) == ["siemens-b30f-b70f"]
    for kernel, target in (("B70f", None), ("FC51", "FC51")):
        with pytest.raises(DiffusionCTError, match="already the target kernel"):
            chosen(kernel, target)
    with pytest.raises(DiffusionCTError, match="no single model fits"):
        chosen("FC13")  # no shipped gap from FC13 to B70: named, not guessed


def test_a_gap_that_fails_before_its_first_checkpoint_leaves_nothing_beside_the_library(tiny_data, tiny_model, tmp_path):
    from diffusionct.errors import DiffusionCTError
    from diffusionct.train.library_gap import train_library_gap

    library = _shared_library(tmp_path / "lib", tiny_model)
    gap = ["data.source_kernel=NO_SUCH_KERNEL", "data.target_kernel=SIM_B30", "diffusion.predictor.training.steps=2"]
    with pytest.raises(DiffusionCTError):  # the manifest holds no pairs of that kernel
        train_library_gap(tiny_data, library / "failed", gap, "cpu")
    assert not (library / "failed").exists()
    assert not list(tmp_path.glob(".lib.*")), list(tmp_path.glob(".lib.*"))
