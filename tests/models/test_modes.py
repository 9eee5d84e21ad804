"""The diffusion modes: refine (stochastic refinement), paper (with x0 clipping), residual, sdedit."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusionct.config import RunConfig
from diffusionct.diffusion import ConditionalDiffusion, NoiseSchedule
from diffusionct.errors import DiffusionCTError
from diffusionct.io import read_dicom_series
from diffusionct.methods.diffusionct import DiffusionCTMethod
from diffusionct.methods.registry import load_method
from diffusionct.models.diffusionct_model import DiffusionCTModel
from diffusionct.train.recipe import train
from tests.model_fixtures import tiny_config


# an exact (space-to-depth) encoder-decoder and a tiny U-Net: what goes in comes back unless a network changes it
EXACT_TINY = ["autoencoder.space_to_depth=true", "autoencoder.base_channels=8", "autoencoder.latent_channels=16",
              "autoencoder.decoder_channels=16", "unet.channels=[16,16]", "unet.attention_levels=[false,false]",
              "unet.norm_num_groups=8", "unet.num_head_channels=8"]


@pytest.mark.parametrize("mode", ["refine", "paper", "residual", "sdedit"])
def test_mode_trains_saves_and_standardizes(tiny_data, tmp_path, mode):
    config = tiny_config(f"diffusion.mode={mode}", "diffusion.predictor.channels=8", "diffusion.predictor.layers=3")
    model = train(tiny_data, tmp_path / "run", config, phase="all")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["config"]["diffusion"]["mode"] == mode
    assert (tmp_path / "run" / "predictor.safetensors").exists() == (mode == "refine")
    if mode == "paper":  # the clip is set from the training latents, and saved
        assert meta["config"]["diffusion"]["x0_clip"] > 0
    assert meta["config"]["diffusion"]["x0_scale"] > 0  # the diffusion's data scaled to unit variance
    volume = read_dicom_series(tiny_data.parent / "case_000" / "2mm" / "sim_b30")
    method = load_method(tmp_path / "run")
    out = method.convert_slices(volume.hu, steps=3, seed=0, pixel_mm=volume.pixel_mm)
    assert out.shape == volume.hu.shape and np.isfinite(out).all()
    if mode == "refine":  # the loaded predictor is the trained one (the EMA average), not a fresh zero one
        trained = load_file(str(tmp_path / "run" / "predictor.safetensors"))
        assert any(v.abs().sum() > 0 for k, v in trained.items() if k.startswith("net.") and k.endswith("weight"))
        for key, value in model.predictor.state_dict().items():
            assert torch.equal(value, method.model.predictor.state_dict()[key])


def test_refine_phase_two_on_its_own_encoder_decoder(tiny_data, tmp_path):
    """Phase 2 alone (a shared phase-1 run copied in) builds and saves the predictor too."""
    modes = ("diffusion.mode=refine", "diffusion.predictor.channels=8", "diffusion.predictor.layers=3")
    train(tiny_data, tmp_path / "run", tiny_config(*modes), phase="autoencoder")
    model = train(tiny_data, tmp_path / "run", tiny_config(*modes), phase="diffusion")
    assert model.predictor is not None and (tmp_path / "run" / "predictor.safetensors").exists()
    assert load_method(tmp_path / "run").model.predictor is not None


def test_refine_resumes_to_the_same_weights(tiny_data, tmp_path):
    modes = ("diffusion.mode=refine", "diffusion.predictor.channels=8", "diffusion.predictor.layers=3")
    train(tiny_data, tmp_path / "straight", tiny_config(*modes), phase="all")
    train(tiny_data, tmp_path / "resumed", tiny_config(*modes, "phase2.steps=3"), phase="all")
    train(tiny_data, tmp_path / "resumed", tiny_config(*modes), phase="all", resume=True)
    for name in ("unet.safetensors", "predictor.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "resumed" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


class _ZeroResidual(torch.nn.Module):
    """A denoiser whose x0 estimate is exactly zero at every step (v = a/s x_t)."""

    def __init__(self, schedule: NoiseSchedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x_t, t, cond):
        a, s = self.schedule.coefficients(t, x_t)
        return a / s * x_t


def test_zero_residual_model_returns_its_input():
    """An exact encoder-decoder, a zero predictor and a diffusion that samples a zero residual: A' = A."""
    config = RunConfig.load(overrides=[*EXACT_TINY, "diffusion.mode=refine", "diffusion.predictor.space=latent"])
    model = DiffusionCTModel.build(config).eval()  # zero-initialised learned branches and predictor
    model.unet = _ZeroResidual(NoiseSchedule.from_config(config.diffusion))
    hu = np.random.default_rng(0).normal(0, 300, size=(2, 64, 64)).clip(-1000, 2000).astype(np.float32)
    out = DiffusionCTMethod(config, model=model).convert_slices(hu, steps=5, seed=0)
    np.testing.assert_allclose(out, hu, atol=0.05)  # float32 round trip of HU -> [-1, 1] -> HU
    # and a model that is not zero changes it: the test can fail
    with torch.no_grad():
        model.predictor.net[-1].bias.fill_(0.1)
    assert np.abs(DiffusionCTMethod(config, model=model).convert_slices(hu, steps=5, seed=0) - hu).max() > 1.0


def _paper_skip_config(size: int = 1):
    return RunConfig.load(overrides=[*EXACT_TINY, "unet.condition_skip=true", f"unet.condition_skip_size={size}",
                                     "diffusion.mode=paper", "diffusion.x0_shift=-2.5", "diffusion.x0_scale=1.3",
                                     "diffusion.x0_clip=4", "diffusion.temperature=1", "diffusion.steps=5"])


@pytest.mark.parametrize("sampler,size", [("ddim", 1), ("ddpm", 1), ("ddim", 3)])
def test_paper_mode_with_condition_skip_starts_as_its_input(sampler, size):
    """The paper mode's U-Net with its condition skip set to "Z_B = Z_A" (and the U-Net's own zero-initialised
    output) samples Z_A from pure noise, with the DDIM and the DDPM samplers (the DDPM runs every one of the T steps:
    T = 100 here, with a schedule that still ends in pure noise, alpha_bar_T ~ e^-10): A' = A."""
    config = _paper_skip_config(size)
    config.diffusion.sampler = sampler
    if sampler == "ddpm":
        config.diffusion.timesteps, config.diffusion.beta_end = 100, 0.2
        config.validate()
    model = DiffusionCTModel.build(config).eval()
    model.unet.skip.start_as_condition(config.diffusion.x0_shift, config.diffusion.x0_factor)
    hu = np.random.default_rng(0).normal(0, 300, size=(1, 32, 32)).clip(-1000, 2000).astype(np.float32)
    out = DiffusionCTMethod(config, model=model).convert_slices(hu, seed=0)
    np.testing.assert_allclose(out, hu, atol=0.5)
    model.unet.skip.weight.data.zero_()  # the plain paper U-Net (untrained) does not: the test can fail
    assert np.abs(DiffusionCTMethod(config, model=model).convert_slices(hu, seed=0) - hu).max() > 100


def test_paper_mode_trains_its_condition_skip_from_the_identity(tiny_data, tmp_path):
    config = tiny_config("diffusion.mode=paper", "unet.condition_skip=true", "unet.condition_skip_size=3")
    train(tiny_data, tmp_path / "run", config, phase="all")
    weights = load_file(str(tmp_path / "run" / "unet.safetensors"))
    skip = weights["skip.weight"]
    assert weights["skip.filter.weight"].shape[-2:] == (3, 3) and weights["skip.filter.weight"].abs().sum() > 0
    meta = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert meta["unet"]["condition_skip"] is True
    # started at (1 on x_t's 1/s, -x0_scale on Z_A's a/s) and moved by training, not from zero
    assert torch.allclose(skip[0, :, 2], torch.ones_like(skip[0, :, 2]), atol=0.1)
    assert torch.allclose(skip[1, :, 1], torch.full_like(skip[1, :, 1], -meta["diffusion"]["x0_scale"]), atol=0.1)
    method = load_method(tmp_path / "run")
    assert torch.equal(method.model.unet.skip.weight, skip)
    assert torch.equal(method.model.unet.skip.filter.weight, weights["skip.filter.weight"])


def test_condition_skip_filter_ignores_a_constant_and_passes_detail():
    """A kernel change keeps the mean: the skip's learned filter has no response to a constant latent (a shifted
    latent gives the same output), whatever its weights, and still responds to detail."""
    from diffusionct.models.latent_unet import ConditionSkip

    skip = ConditionSkip(4, NoiseSchedule.linear().alpha_bar, size=3)
    torch.nn.init.normal_(skip.filter.weight)
    cond = torch.randn(2, 4, 8, 8)
    assert torch.allclose(skip.filtered(cond + 5.0), skip.filtered(cond), atol=1e-4)
    assert torch.allclose(skip.filtered(torch.full((1, 4, 8, 8), -3.0)), torch.zeros(1, 4, 8, 8), atol=1e-4)
    assert skip.filtered(cond).abs().mean() > 0.1


def test_condition_skip_is_refused_outside_the_paper_mode():
    with pytest.raises(DiffusionCTError, match="condition_skip is for diffusion.mode=paper"):
        RunConfig.load(overrides=["unet.condition_skip=true", "diffusion.mode=refine"])
    with pytest.raises(DiffusionCTError, match="condition_skip_size must be an odd number"):
        RunConfig.load(overrides=["unet.condition_skip=true", "diffusion.mode=paper", "unet.condition_skip_size=2"])


def test_x0_clip_bounds_the_estimate_and_keeps_x_t_consistent():
    diffusion = ConditionalDiffusion.from_config(RunConfig.load(overrides=["diffusion.mode=paper", "diffusion.x0_clip=1.5"]).diffusion)
    schedule = diffusion.schedule
    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([999, 10])
    wild = torch.randn(2, 4, 8, 8) * 50  # a poor epsilon estimate
    x0, eps = diffusion.predict_x0_eps(wild, x_t, t)
    assert x0.abs().max() <= 1.5
    a, s = schedule.coefficients(t, x_t)
    torch.testing.assert_close(a * x0 + s * eps, x_t)  # eps recomputed from the clipped x0
    unclipped = ConditionalDiffusion(RunConfig.load(overrides=["diffusion.mode=paper"]).diffusion, schedule)
    assert unclipped.predict_x0_eps(wild, x_t, t)[0].abs().max() > 10


@pytest.mark.parametrize("mode", ["paper", "refine"])  # epsilon and v prediction
def test_the_reverse_step_is_monais_ddim_step(mode):
    """step() against the reference: MONAI's DDIMScheduler.step on the same linear schedule, both predictions."""
    from monai.networks.schedulers import DDIMScheduler

    config = RunConfig.load(overrides=[f"diffusion.mode={mode}", "diffusion.x0_clip=0"]).diffusion
    ours = ConditionalDiffusion.from_config(config)
    monai = DDIMScheduler(num_train_timesteps=config.timesteps, schedule="linear_beta", beta_start=config.beta_start,
                          beta_end=config.beta_end, clip_sample=False,
                          prediction_type="v_prediction" if config.prediction == "v" else "epsilon")
    monai.set_timesteps(10)  # MONAI's steps: 900, 800, ... 0 (t' = t - 100)
    x, output = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for t in (900, 500, 100):
        expected, _ = monai.step(output, t, x, eta=0.0)
        torch.testing.assert_close(ours.step(output, t, t - 100, x), expected, rtol=1e-4, atol=1e-5)  # MONAI keeps its alphas in float32


@pytest.mark.parametrize("mode", ["paper", "refine"])
def test_the_ddpm_sampler_step_is_monais_ddpm_step(mode):
    """The ddpm sampler (DDIM with eta = 1 over consecutive steps) against the reference: MONAI's DDPMScheduler.step,
    the posterior mean plus the posterior ("fixed_small") variance, with the same noise drawn from the same seed."""
    from monai.networks.schedulers import DDPMScheduler

    config = RunConfig.load(overrides=[f"diffusion.mode={mode}", "diffusion.x0_clip=0"]).diffusion
    ours = ConditionalDiffusion.from_config(config)
    monai = DDPMScheduler(num_train_timesteps=config.timesteps, schedule="linear_beta", beta_start=config.beta_start,
                          beta_end=config.beta_end, clip_sample=False, variance_type="fixed_small",
                          prediction_type="v_prediction" if config.prediction == "v" else "epsilon")
    x, output = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for t in (999, 500, 1):
        expected, _ = monai.step(output, t, x, generator=torch.Generator().manual_seed(t))
        got = ours.step(output, t, t - 1, x, eta=1.0, generator=torch.Generator().manual_seed(t))
        assert (got - ours.step(output, t, t - 1, x)).abs().max() > 1e-3  # the noise is there: not the mean alone
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)  # MONAI keeps its alphas in float32


def test_paper_mode_sampling_stays_in_range_with_clip():
    config = RunConfig.load(overrides=["diffusion.mode=paper", "diffusion.x0_clip=2.0", "diffusion.steps=10"]).diffusion
    out = ConditionalDiffusion.from_config(config).sample(lambda x, t, c: torch.randn_like(x) * 10, torch.zeros(1, 4, 8, 8),
                                                          generator=torch.Generator().manual_seed(0))
    assert out.abs().max() <= 2.0


def test_unknown_mode_is_refused():
    from diffusionct.errors import DiffusionCTError

    with pytest.raises(DiffusionCTError, match="refine"):
        RunConfig.load(overrides=["diffusion.mode=bridge"])


@pytest.mark.parametrize("mode", ["residual", "paper", "sdedit"])
def test_x0_scale_gives_the_diffusion_unit_variance_data(tiny_data, tmp_path, mode):
    """x0 scaled to unit variance, and centred where it is the latent itself (paper, sdedit: the HU image's
    latent has a mean far from 0, which the forward process would carry for hundreds of steps)."""
    from diffusionct.train.data import load_training_data, sample_pair_crops
    from diffusionct.train.loop import TrainingRun
    from diffusionct.train.recipe import set_x0_range

    config = tiny_config(f"diffusion.mode={mode}")
    data = load_training_data(tiny_data, config.data.source_kernel, config.data.target_kernel)
    model = DiffusionCTModel.build(config)
    set_x0_range(TrainingRun(config, tmp_path / "run", data, torch.device("cpu")), model,
                 ConditionalDiffusion.from_config(config.diffusion))
    d = config.diffusion
    a, b, _ = sample_pair_crops(data.pairs, 32, config.phase2.crop, np.random.default_rng([config.seed, 11]))
    with torch.no_grad():
        z_a, z_b = model.autoencoder.encode(torch.from_numpy(a)), model.autoencoder.encode(torch.from_numpy(b))
    diffusion = ConditionalDiffusion.from_config(d)
    x0 = diffusion.from_pair(z_a, z_b)
    assert float(x0.std()) == pytest.approx(1.0, rel=0.01) and d.x0_scale != 1.0
    assert abs(float(x0.mean())) < 0.05 and (d.x0_shift != 0) == (mode != "residual")
    if mode == "paper":
        assert float(x0.abs().max()) <= d.x0_clip
    torch.testing.assert_close(diffusion.to_target_latent(x0, z_a), z_b)  # the round trip undoes shift and scale


IMAGE_PREDICTOR = ("diffusion.mode=refine", "diffusion.predictor.space=image", "diffusion.predictor.channels=8",
                   "diffusion.predictor.layers=3", "diffusion.predictor.training.steps=4",
                   "diffusion.predictor.training.crop=32", "diffusion.predictor.training.batch_size=2",
                   "diffusion.predictor.training.checkpoint_every=2")


def test_image_predictor_is_trained_first_and_frozen(tiny_data, tmp_path):
    """The image-space predictor is a residual CNN trained before the diffusion; x0_scale is measured on what
    it leaves, and the saved model's predictor is the trained one."""
    from diffusionct.models.baselines import ResidualCNN

    model = train(tiny_data, tmp_path / "run", tiny_config(*IMAGE_PREDICTOR), phase="all")
    assert isinstance(model.predictor, ResidualCNN)
    state = json.loads((tmp_path / "run" / "state" / "predictor.json").read_text())
    assert state["step"] == 4  # its own stage, checkpointed
    method = load_method(tmp_path / "run")
    for key, value in model.predictor.state_dict().items():
        assert torch.equal(value, method.model.predictor.state_dict()[key])
    assert any(v.abs().sum() > 0 for k, v in model.predictor.state_dict().items() if k.endswith("weight"))
    volume = read_dicom_series(tiny_data.parent / "case_000" / "2mm" / "sim_b30")
    out = method.convert_slices(volume.hu, steps=3, seed=0, pixel_mm=volume.pixel_mm)
    assert out.shape == volume.hu.shape and np.isfinite(out).all()
    assert np.abs(out - volume.hu).max() > 1.0  # the model changes the image


def test_image_predictor_mean_is_the_encoded_residual():
    """m = E(A + r(A)) - Z_A: with the exact space-to-depth encoder and a zero diffusion residual the output
    is the predictor's converted image."""
    config = RunConfig.load(overrides=[*EXACT_TINY, "diffusion.mode=refine", "diffusion.predictor.space=image",
                                       "diffusion.predictor.channels=8", "diffusion.predictor.layers=3"])
    model = DiffusionCTModel.build(config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.predictor.parameters():
            p.normal_(0, 0.05)
    model.unet = _ZeroResidual(NoiseSchedule.from_config(config.diffusion))
    hu = np.random.default_rng(1).normal(0, 300, size=(2, 64, 64)).clip(-1000, 2000).astype(np.float32)
    out = DiffusionCTMethod(config, model=model).convert_slices(hu, steps=5, seed=0, pixel_mm=0.7)
    with torch.no_grad():
        expected = model.predictor.convert(torch.from_numpy(hu)[:, None], torch.full((2,), 0.7))[:, 0].numpy()
    assert np.abs(expected - hu).max() > 1.0
    np.testing.assert_allclose(out, expected, atol=0.05)


def test_unknown_predictor_is_refused():
    from diffusionct.errors import DiffusionCTError

    with pytest.raises(DiffusionCTError, match="diffusion.predictor.space must be one of latent, image"):
        RunConfig.load(overrides=["diffusion.predictor.space=pixel"])


def test_models_saved_before_the_predictor_setting_load_as_latent(tiny_data, tmp_path):
    """A refine model whose config.json (format 1) has no diffusion.predictor (saved before it existed) is a latent one."""
    from diffusionct.methods.store import write_model_config
    from tests.model_fixtures import as_format1

    train(tiny_data, tmp_path / "run", tiny_config("diffusion.predictor.space=latent"), phase="all")
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    meta["config"], meta["format_version"] = as_format1(meta["config"]), 1
    del meta["config"]["diffusion"]["predictor"]
    write_model_config(tmp_path / "run", meta)
    method = load_method(tmp_path / "run")
    assert method.config.diffusion.predictor.space == "latent"
    from diffusionct.models.latent_unet import LatentPredictor

    assert isinstance(method.model.predictor, LatentPredictor)
    assert RunConfig().diffusion.predictor.space == "image"  # while new runs get the measured better one


class _Identity(torch.nn.Module):
    """A denoiser whose x0 estimate is x_t itself (v = 0 would give a x_t; this returns x0 = x_t exactly)."""

    def __init__(self, schedule: NoiseSchedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x_t, t, cond):
        assert not cond.any(), "the sdedit model is unconditional"
        a, s = self.schedule.coefficients(t, x_t)
        return (a - 1) / s * x_t  # x0 = a x_t - s v = x_t


@pytest.mark.parametrize("strength, first", [(0.001, 0), (0.3, 299), (1.0, 999)])
def test_sdedit_starts_from_the_noised_source(strength, first):
    """SDEdit: Z_A noised to strength x T (x_t = sqrt(abar) Z_A + sqrt(1 - abar) eps), then denoised; a weak
    edit keeps the source, a full one keeps only what the noise left of it."""
    config = RunConfig().diffusion
    config.mode, config.sdedit_strength, config.x0_scale = "sdedit", strength, 1.0
    diffusion = ConditionalDiffusion.from_config(config)
    assert diffusion.first_timestep() == first and diffusion.sampling_timesteps(4)[0] == first
    source = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = diffusion.sample(_Identity(diffusion.schedule), diffusion.condition(source), steps=1, initial_noise=noise, source=source)
    abar = diffusion.schedule.alpha_bar[first].item()
    torch.testing.assert_close(out, abar ** 0.5 * source + (1 - abar) ** 0.5 * noise)  # one step: x0 = x_t
    with pytest.raises(ValueError, match="pass source"):
        diffusion.sample(_Identity(diffusion.schedule), source, steps=1, initial_noise=noise)


def test_pixel_size_reaches_the_predictor_in_training_and_inference(tiny_data):
    """Each crop carries the pixel size of its series; a model conditioned on it refuses slices without one."""
    from diffusionct.io.manifest import Manifest
    from diffusionct.train.data import load_training_data, sample_pair_crops

    config = tiny_config("diffusion.mode=refine")
    data = load_training_data(tiny_data, config.data.source_kernel, config.data.target_kernel)
    manifest = Manifest.read(tiny_data)
    sizes = {round(manifest.read_volume(a).pixel_mm, 5) for a, _ in manifest.oriented_pairs(
        config.data.source_kernel, config.data.target_kernel)}
    crops = sample_pair_crops(data.pairs, 6, 32, np.random.default_rng(0))
    assert crops.pixel_mm.shape == (6,) and {round(float(v), 5) for v in crops.pixel_mm} <= sizes
    method = DiffusionCTMethod(config, model=DiffusionCTModel.build(config).eval())
    assert method.needs_pixel_mm
    hu = np.zeros((1, 64, 64), np.float32)
    with pytest.raises(DiffusionCTError, match="pixel size"):
        method.convert_slices(hu, steps=2)
    with pytest.raises(DiffusionCTError, match="pixel size"):
        method.convert_slices(hu, steps=2, pixel_mm=-1.0)


class _Linear(torch.nn.Module):
    """v = 0.5 x_t: a denoiser linear in x_t, so that the sample is linear in the start noise."""

    def forward(self, x_t, t, cond):
        return 0.5 * x_t


@pytest.mark.parametrize("temperature", [0.0, 0.5])
def test_temperature_scales_the_start_noise(temperature):
    """The sample at temperature tau equals the sample at 1 started from tau x the noise; 0 gives the zero start."""
    config = RunConfig().diffusion
    config.x0_scale, config.temperature = 1.0, 1.0
    cond = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = ConditionalDiffusion.from_config(config).sample(_Linear(), cond, steps=3, initial_noise=temperature * noise)
    config.temperature = temperature
    cooled = ConditionalDiffusion.from_config(config).sample(_Linear(), cond, steps=3, initial_noise=noise)
    torch.testing.assert_close(cooled, reference)
    assert (cooled.abs().max() == 0) == (temperature == 0)
    with pytest.raises(DiffusionCTError, match="temperature"):
        RunConfig.load(overrides=["diffusion.temperature=1.5"])


@pytest.mark.parametrize("kernel_filter", [False, True])
def test_image_predictor_is_the_residual_cnn_of_its_baseline_settings(tmp_path, kernel_filter):
    """The refine mode's image predictor and the residual-cnn model built from ``image_predictor_baseline_config``
    are one network: the predictor's weights load into it strictly and it converts alike after a save and load."""
    import dataclasses

    from diffusionct.config import image_predictor_baseline_config
    from diffusionct.methods.networks import ResidualCNNMethod

    config = tiny_config("diffusion.mode=refine", "diffusion.predictor.channels=8", "diffusion.predictor.layers=3",
                         f"diffusion.predictor.kernel_filter={str(kernel_filter).lower()}")
    model = DiffusionCTModel.build(config)
    torch.manual_seed(0)
    for p in model.predictor.parameters():
        torch.nn.init.normal_(p, std=0.05)
    baselines = image_predictor_baseline_config(config)
    assert (baselines.residual_cnn.channels, baselines.residual_cnn.layers) == (8, 3)
    assert baselines.residual_cnn == config.diffusion.predictor
    exported = ResidualCNNMethod(dataclasses.replace(config, baselines=baselines), network=model.predictor)
    exported.save(tmp_path / "predictor")
    loaded = load_method(tmp_path / "predictor")
    hu = (torch.randn(2, 32, 32) * 200).numpy()
    with torch.no_grad():
        direct = model.predictor.convert(torch.from_numpy(hu)[:, None], torch.full((2,), 0.8))[:, 0].numpy()
    assert np.allclose(loaded.convert_slices(hu, pixel_mm=0.8), direct, atol=1e-3)
    assert loaded.needs_pixel_mm


def test_image_ddpm_baseline_samples_from_pure_noise():
    """The image-space DDPM baseline samples as SR3/Palette do (temperature 1) even when DiffusionCT's own default is
    0: with another seed it gives another sample, and the run's config is left as it was."""
    from diffusionct.methods.networks import ImageDDPMMethod

    config = tiny_config("diffusion.temperature=0.0")
    method = ImageDDPMMethod(config)
    assert method.diffusion.config.temperature == 1.0 and config.diffusion.temperature == 0.0
    hu = np.random.default_rng(0).normal(0, 100, (1, 32, 32)).astype(np.float32)
    first, again, other = (method.convert_slices(hu, steps=2, seed=s) for s in (1, 1, 2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
