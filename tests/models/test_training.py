import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.io import read_dicom_series
from diffusionct.methods.registry import load_method
from diffusionct.train.methods import train_method
from diffusionct.methods.store import load_model
from diffusionct.standardize import Standardizer
from diffusionct.train.recipe import train
from tests.model_fixtures import tiny_config


def _weights(folder: Path) -> dict:
    return {**load_file(str(folder / "autoencoder.safetensors")), **load_file(str(folder / "unet.safetensors"))}


def test_train_all_then_checkpoint_round_trip(tiny_data, tmp_path):
    config = tiny_config()
    model = train(tiny_data, tmp_path / "run", config, phase="all")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["phases"] == ["autoencoder", "diffusion"] and meta["config"] == model.config.to_dict()
    measured = {**config.to_dict()["diffusion"], "x0_scale": meta["config"]["diffusion"]["x0_scale"]}
    assert meta["config"]["diffusion"] == measured and {**meta["config"], "diffusion": None} == {**config.to_dict(), "diffusion": None}
    assert config.diffusion.x0_scale == 0  # the caller's config is not changed
    loaded = load_model(tmp_path / "run")
    hu = torch.randn(1, 1, 32, 32) * 100
    with torch.no_grad():
        assert torch.equal(model.autoencoder.encode(hu), loaded.autoencoder.encode(hu))
        z = loaded.autoencoder.encode(hu)
        assert torch.equal(model.unet(z, torch.tensor([3]), z), loaded.unet(z, torch.tensor([3]), z))
    assert float(loaded.autoencoder.latent_scale) != 1.0  # set from the training latents


@pytest.mark.parametrize("killed_in", ["autoencoder", "diffusion"])
def test_resume_gives_the_same_weights(tiny_data, tmp_path, killed_in):
    full = tiny_config()
    train(tiny_data, tmp_path / "straight", full, phase="all")
    if killed_in == "autoencoder":  # stopped after phase 1's checkpoint at step 3
        train(tiny_data, tmp_path / "resumed", tiny_config("phase1.steps=3"), phase="autoencoder")
    else:  # stopped after phase 2's checkpoint at step 3
        train(tiny_data, tmp_path / "resumed", tiny_config("phase2.steps=3"), phase="all")
    train(tiny_data, tmp_path / "resumed", full, phase="all", resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_of_an_older_version_resumes(tiny_data, tmp_path):
    """A checkpoint whose config lacks settings added since (they take their defaults) resumes; a changed
    setting is still refused."""
    import json

    from diffusionct.errors import DiffusionCTError
    from tests.model_fixtures import as_format1

    defaults = ("baselines.cyclegan.training.batch_size=4", "baselines.cyclegan.training.crop=96")  # what an older version could not set
    train_method("residual-cnn", tiny_data, tmp_path / "run", tiny_config(*defaults, "baselines.residual_cnn.training.steps=3"),
                 torch.device("cpu"))
    state = tmp_path / "run" / "state" / "residual-cnn.json"
    meta = json.loads(state.read_text())
    assert meta.pop("config_format") == 2
    meta["config"] = as_format1(meta["config"])  # a record of config format 1 (which it did not name) ...
    for key in ("cyclegan", "cyclegan_cycle_weight", "cyclegan_identity_weight"):
        del meta["config"]["baselines"][key]  # ... written before CycleGAN existed
    state.write_text(json.dumps(meta))
    train_method("residual-cnn", tiny_data, tmp_path / "run", tiny_config(*defaults), torch.device("cpu"), resume=True)
    assert json.loads(state.read_text())["step"] == 6
    with pytest.raises(DiffusionCTError, match="another config"):
        train_method("residual-cnn", tiny_data, tmp_path / "run", tiny_config(*defaults, "baselines.residual_cnn.training.lr=0.5",
                     "baselines.residual_cnn.training.steps=9"), torch.device("cpu"), resume=True)


def test_a_loss_that_is_not_finite_stops_training_without_a_model(tiny_data, tmp_path):
    from diffusionct.errors import DiffusionCTError

    with pytest.raises(DiffusionCTError, match="residual-cnn step .*the training loss is (nan|inf)"):
        train_method("residual-cnn", tiny_data, tmp_path / "run", tiny_config("baselines.residual_cnn.training.lr=1e30"),
                     torch.device("cpu"))
    assert not (tmp_path / "run" / "config.json").exists()


def test_standardize_tiny_series_deterministic(tiny_data, tmp_path):
    """The same seed gives the same bytes; at temperature 1 another seed another sample, at 0 (the default) the
    zero start makes the seed irrelevant."""
    train(tiny_data, tmp_path / "run", tiny_config("diffusion.temperature=1.0"), phase="all")
    volume = read_dicom_series(tiny_data.parent / "case_000" / "2mm" / "sim_b30")
    standardizer = Standardizer.load(tmp_path / "run", device="cpu")
    first = standardizer.standardize(volume, seed=3)
    again = standardizer.standardize(volume, seed=3)
    other = standardizer.standardize(volume, seed=4)
    assert np.array_equal(first.hu, again.hu) and not np.array_equal(first.hu, other.hu)
    standardizer.method.diffusion.config.temperature = 0.0
    cold = standardizer.standardize(volume, seed=3)
    assert np.array_equal(cold.hu, standardizer.standardize(volume, seed=4).hu) and not np.array_equal(cold.hu, first.hu)
    assert first.shape == volume.shape and first.kernel == "SIM_B70"
    from diffusionct.standardize import body_mask

    outside = ~body_mask(volume.hu)
    assert outside.any() and np.array_equal(first.hu[outside], volume.hu[outside])


@pytest.mark.parametrize("method", ["identity", "histogram", "autoencoder", "residual-cnn", "pix2pix", "cyclegan", "ddpm"])
def test_baselines_train_and_standardize(tiny_data, tmp_path, method):
    config = tiny_config()
    train_method(method, tiny_data, tmp_path / method, config, torch.device("cpu"))
    torch.randn(3)  # whatever ran before in the process must not change what the same seed trains
    train_method(method, tiny_data, tmp_path / "again", config, torch.device("cpu"))
    weights = sorted(p.name for p in (tmp_path / method).glob("*.safetensors"))
    assert weights == sorted(p.name for p in (tmp_path / "again").glob("*.safetensors"))
    assert all((tmp_path / method / name).read_bytes() == (tmp_path / "again" / name).read_bytes() for name in weights)
    loaded = load_method(tmp_path / method)
    assert loaded.name == method
    volume = read_dicom_series(tiny_data.parent / "case_000" / "2mm" / "sim_b30")
    out = loaded.convert_slices(volume.hu)
    assert out.shape == volume.hu.shape and np.isfinite(out).all()
    if method == "identity":
        assert np.array_equal(out, volume.hu)
    else:  # a method that returned its input would pass the checks above
        assert np.abs(out - volume.hu).max() > 0.5
    state = tmp_path / method / "state" / f"{method}.json"
    if state.is_file():  # every trained network's history holds its validation on fixed held-out crops
        history = json.loads(state.read_text())["history"]
        assert history and all(any(key.startswith("val_") for key in record) for record in history), history
    if method == "histogram":
        sharp = read_dicom_series(tiny_data.parent / "case_000" / "2mm" / "sim_b70").hu
        body = volume.hu > -500
        levels = np.linspace(0.02, 0.98, 25)
        target = np.quantile(sharp[body], levels)
        assert np.abs(np.quantile(out[body], levels) - target).mean() < np.abs(np.quantile(volume.hu[body], levels) - target).mean()


def test_pix2pix_with_stan_ct_latent_loss(tiny_data, tmp_path):
    """The latent-space loss changes what the generator learns (same seed, same crops otherwise)."""
    runs = {}
    for weight in (0.0, 1.0):
        config = tiny_config(f"baselines.pix2pix.latent_weight={weight}")
        train_method("pix2pix", tiny_data, tmp_path / f"p2p{weight}", config, torch.device("cpu"))
        runs[weight] = load_file(str(tmp_path / f"p2p{weight}" / "generator.safetensors"))
    assert load_method(tmp_path / "p2p1.0").config.baselines.pix2pix.latent_weight == 1.0
    assert any(not torch.equal(runs[0.0][k], runs[1.0][k]) for k in runs[0.0])


def test_phase2_without_phase1_is_refused(tiny_data, tmp_path):
    with pytest.raises(DiffusionCTError, match="phase 2 needs a trained encoder-decoder"):
        train(tiny_data, tmp_path / "nothing", tiny_config(), phase="diffusion")


def test_manifest_without_pairs_is_refused(tiny_data, tmp_path):
    config = tiny_config("data.source_kernel=B50F", "data.target_kernel=B70F")  # B30F would match SIM_B30 (one family)
    with pytest.raises(DiffusionCTError, match="no B50F -> B70F pairs"):
        train(tiny_data, tmp_path / "run", config, phase="all")
    assert not (tmp_path / "run").exists()


def test_config_that_does_not_match_the_checkpoint(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "run", tiny_config(), phase="autoencoder")
    with pytest.raises(DiffusionCTError, match="autoencoder settings differ"):
        train(tiny_data, tmp_path / "run", tiny_config("autoencoder.latent_channels=8"), phase="diffusion")
    model_files = {p.name: p.read_bytes() for p in (tmp_path / "run").glob("*.safetensors")}
    with pytest.raises(DiffusionCTError, match="run folder exists"):
        train(tiny_data, tmp_path / "run", tiny_config(), phase="all")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").glob("*.safetensors")} == model_files


def test_unknown_set_key_and_bad_values():
    with pytest.raises(DiffusionCTError, match="unknown key"):
        RunConfig.load(overrides=["phase1.stepz=3"])
    with pytest.raises(DiffusionCTError, match="cannot use"):
        RunConfig.load(overrides=["phase1.steps=many"])
    with pytest.raises(DiffusionCTError, match="mode"):
        RunConfig.load(overrides=["diffusion.mode=magic"])


def test_corrupt_or_foreign_model_folders(tmp_path, tiny_data):
    with pytest.raises(DiffusionCTError, match="not found"):
        Standardizer.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffusionCTError, match="no config.json"):
        Standardizer.load(tmp_path / "empty")
    train(tiny_data, tmp_path / "run", tiny_config(), phase="all")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    (tmp_path / "run" / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DiffusionCTError, match="format 99"):
        Standardizer.load(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps(meta))
    (tmp_path / "run" / "unet.safetensors").write_bytes(b"garbage")
    with pytest.raises(DiffusionCTError, match="does not match the checksum"):
        Standardizer.load(tmp_path / "run")
    from diffusionct.methods.store import file_sha256

    meta["weights_sha256"]["unet.safetensors"] = file_sha256(tmp_path / "run" / "unet.safetensors")
    (tmp_path / "run" / "config.json").write_text(json.dumps(meta))  # garbage under its own checksum: still refused
    with pytest.raises(DiffusionCTError, match="cannot read weights"):
        Standardizer.load(tmp_path / "run")
    del meta["weights_sha256"]  # without checksums nothing could tell damaged weights: refused
    (tmp_path / "run" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(DiffusionCTError, match="records no weights_sha256"):
        Standardizer.load(tmp_path / "run")


def test_kernel_filter_is_fitted_to_the_pairs_before_training(tiny_data, tmp_path):
    """b30 -> b70 is a sharpening: the filter fitted to the tiny pairs keeps the mean (gain 1 at 0 cycles/mm) and
    amplifies mid frequencies; the saved model needs the pixel size and uses it."""
    config = tiny_config("baselines.residual_cnn.kernel_filter=true", "baselines.residual_cnn.training.steps=2")
    train_method("residual-cnn", tiny_data, tmp_path / "cnn", config, torch.device("cpu"))
    method = load_method(tmp_path / "cnn")
    gain = method.network.kernel_filter.gain_at(torch.tensor([0.0, 0.15])).detach()
    assert abs(gain[0] - 1) < 0.1 and gain[1] > 1.1
    volume = read_dicom_series(tiny_data.parent / "case_000" / "2mm" / "sim_b30")
    with pytest.raises(DiffusionCTError, match="pixel size"):
        method.convert_slices(volume.hu)
    out = method.convert_slices(volume.hu, pixel_mm=volume.pixel_mm)
    assert not np.array_equal(out, method.convert_slices(volume.hu, pixel_mm=volume.pixel_mm / 2))


@pytest.mark.parametrize("phase, method, key", [("diffusion", None, "phase2"), ("pix2pix", "pix2pix", "baselines.pix2pix.training")])
def test_every_phase_follows_its_learning_rate_schedule(tiny_data, tmp_path, phase, method, key):
    """A cosine ``lr_schedule`` reaches every optimizer of the phase (the GAN's two as well), not only the predictor's."""
    import math

    config = tiny_config(f"{key}.lr_schedule=cosine", "phase1.steps=2")
    pc = config.phases()[key]
    if method is None:
        train(tiny_data, tmp_path / "run", config, phase="all")
    else:
        train_method(method, tiny_data, tmp_path / "run", config, torch.device("cpu"))
    meta = json.loads((tmp_path / "run" / "state" / f"{phase}.json").read_text())
    optimizers = [value for name, value in meta.items() if name.startswith("optimizer")]
    assert optimizers and meta["step"] == pc.steps
    last = pc.lr * 0.5 * (1 + math.cos(math.pi * (pc.steps - 1) / pc.steps))  # the rate of the final step
    for optimizer in optimizers:
        assert optimizer["param_groups"][0]["lr"] == pytest.approx(last)


def test_train_from_to_names_the_gap(tiny_data, tmp_path):
    from diffusionct.cli import main

    assert main(["train", "--data", str(tiny_data), "-o", str(tmp_path / "run"), "--method", "histogram",
                 "--from", "SIM_B70", "--to", "SIM_B30", "--device", "cpu"]) == 0
    data = json.loads((tmp_path / "run" / "config.json").read_text())["config"]["data"]
    assert (data["source_kernel"], data["target_kernel"]) == ("SIM_B70", "SIM_B30")
