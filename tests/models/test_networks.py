import dataclasses
from pathlib import Path

import pytest
import torch

from diffusionct.config import AutoencoderConfig, RunConfig, UNetConfig, image_predictor_baseline_config
from diffusionct.diffusion import ConditionalDiffusion
from diffusionct.errors import DiffusionCTError
from diffusionct.models.autoencoder import Autoencoder
from diffusionct.models.latent_unet import ConditionalUNet
from diffusionct.train.recipe import autoencoder_loss
from tests.model_fixtures import format1_config, tiny_config


@pytest.mark.parametrize("downsample,latent", [(2, 4), (4, 8), (8, 16)])
def test_autoencoder_shapes(downsample, latent):
    ae = Autoencoder(AutoencoderConfig(base_channels=8, latent_channels=latent, downsample=downsample, decoder_channels=16))
    hu = torch.randn(2, 1, 64, 48) * 200
    z = ae.encode(hu)
    assert z.shape == (2, latent, 64 // downsample, 48 // downsample)
    assert ae.decode(z).shape == hu.shape


def test_unet_shapes():
    unet = ConditionalUNet(UNetConfig(channels=[16, 16], attention_levels=[False, True], num_head_channels=8, norm_num_groups=8), 4)
    z = torch.randn(3, 4, 16, 16)
    assert unet(z, torch.tensor([0, 10, 999]), z).shape == z.shape


def test_hu_mapping_round_trip():
    ae = Autoencoder(AutoencoderConfig(base_channels=8, latent_channels=4, decoder_channels=16))
    hu = torch.tensor([-1024.0, 0.0, 40.0, 3071.0])
    assert torch.allclose(ae.denormalize(ae.normalize(hu)), hu, atol=1e-3)
    assert ae.normalize(torch.tensor([-5000.0])).item() == -1.0  # clipped to the window


def test_autoencoder_steps_lower_the_loss():
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(base_channels=8, latent_channels=8, decoder_channels=16))
    hu = torch.randn(4, 1, 32, 32) * 100 + 40
    optimizer = torch.optim.Adam(ae.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss, _ = autoencoder_loss(ae(hu), ae.normalize(hu), 1.0, 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("mode", ["paper", "residual"])
def test_diffusion_steps_lower_the_loss(mode):
    from diffusionct.config import DiffusionConfig
    torch.manual_seed(0)
    diffusion = ConditionalDiffusion.from_config(DiffusionConfig(mode=mode))
    unet = ConditionalUNet(UNetConfig(channels=[16, 16], attention_levels=[False, False], num_head_channels=8, norm_num_groups=8), 4)
    z_a = torch.randn(4, 4, 8, 8)
    x0 = torch.randn(4, 4, 8, 8)
    noise = torch.randn(4, 4, 8, 8)
    t = torch.tensor([10, 200, 500, 900])
    x_t = diffusion.add_noise(x0, noise, t)
    target = diffusion.training_target(x0, noise, t)
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = diffusion.loss(unet(x_t, t, z_a), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


@pytest.mark.parametrize("mode", ["paper", "residual"])
def test_parameterisations_recover_x0(mode):
    from diffusionct.config import DiffusionConfig

    diffusion = ConditionalDiffusion.from_config(DiffusionConfig(mode=mode))
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([5, 700])
    x_t = diffusion.add_noise(x0, noise, t)
    perfect = diffusion.training_target(x0, noise, t)  # what an ideal network outputs
    x0_hat, eps_hat = diffusion.predict_x0_eps(perfect, x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, noise, atol=1e-4)


def test_ddim_is_deterministic_and_seeded():
    from diffusionct.config import DiffusionConfig

    diffusion = ConditionalDiffusion.from_config(DiffusionConfig(steps=4, temperature=1.0))  # 0 ignores the seed
    unet = ConditionalUNet(UNetConfig(channels=[16, 16], attention_levels=[False, False], num_head_channels=8, norm_num_groups=8), 4).eval()
    cond = torch.randn(2, 4, 8, 8)
    runs = [diffusion.sample(unet, cond, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    calls = []
    diffusion.sample(lambda x, t, c: (calls.append(int(t[0])) or torch.zeros_like(x)), cond,
                     generator=torch.Generator().manual_seed(0))
    assert calls == [999, 666, 333, 0]  # 4 DDIM steps from T-1 down to 0


def test_ddpm_sampler_runs_all_steps():
    from diffusionct.config import DiffusionConfig

    diffusion = ConditionalDiffusion.from_config(DiffusionConfig(timesteps=10, sampler="ddpm"))
    calls = []
    diffusion.sample(lambda x, t, c: (calls.append(int(t[0])) or torch.zeros_like(x)), torch.zeros(1, 2, 4, 4),
                     generator=torch.Generator().manual_seed(0))
    assert calls == list(range(9, -1, -1))  # every timestep, T-1 down to 0 (each step: test_the_ddpm_sampler_step_is_monais)


def test_set_keeps_the_other_keys_of_a_section():
    config = RunConfig.load(overrides=["baselines.residual_cnn.training.steps=5", "phase1.steps=3"])
    assert config.baselines.residual_cnn.training.steps == 5 and config.baselines.residual_cnn.training.lr == 1e-3
    assert config.phase1.steps == 3 and config.phase1.lr == 3e-4 and config.phase1.crop == 96


def test_format_1_configs_migrate_to_format_2_and_back_nothing_lost():
    """Every key of format 1 has its place in format 2: a full config written as format 1 reads back equal, and a
    config of format 1 (the shipped file, kept) reads as format 2 with its values."""
    from diffusionct.config import migrate_format1
    from tests.model_fixtures import as_format1

    for config in (RunConfig(), tiny_config("diffusion.predictor.space=latent", "baselines.histogram.quantiles=64")):
        written = as_format1(config.to_dict())
        assert "predictor_channels" in written["diffusion"] and "pix2pix_depth" in written["baselines"]
        assert RunConfig.from_saved(written, format_version=1) == config
        assert migrate_format1(written) == config.to_dict()
    old = format1_config()
    read = RunConfig.from_saved(old, format_version=1)
    assert read.diffusion.predictor.channels == old["diffusion"]["predictor_channels"] == 32
    assert read.diffusion.predictor.kernel_filter_from == old["diffusion"]["predictor_kernel_filter_from"] == "profiles"
    assert read.baselines.pix2pix.training.lr == old["baselines"]["pix2pix"]["lr"]
    with pytest.raises(DiffusionCTError, match="config format 7"):
        RunConfig.from_saved(old, format_version=7)


@pytest.mark.parametrize("old_key, new_key", [("diffusion.predictor_channels=8", "diffusion.predictor.channels"),
                                              ("diffusion.predictor=latent", "diffusion.predictor.space"),
                                              ("baselines.pix2pix.steps=3", "baselines.pix2pix.training.steps"),
                                              ("baselines.ddpm_hu_scale=50", "baselines.ddpm.hu_scale")])
def test_a_users_format_1_key_is_refused_naming_its_new_place(tmp_path, old_key, new_key):
    with pytest.raises(DiffusionCTError, match=f"is {new_key} since config format 2") as refused:
        RunConfig.load(overrides=[old_key])
    assert "\n" not in str(refused.value)
    recipe = tmp_path / "old.yaml"
    recipe.write_text("diffusion:\n  predictor_layers: 4\n")
    with pytest.raises(DiffusionCTError, match="is diffusion.predictor.layers since config format 2"):
        RunConfig.load(recipe)


def test_pixel_size_film_starts_as_the_plain_cnn_and_then_depends_on_the_pixel_size():
    """Zero-initialised FiLM: the conditioned network equals Choe et al.'s CNN with the same conv weights until
    trained; once its FiLM is not zero, two pixel sizes give two outputs; without a pixel size it refuses."""
    from diffusionct.models.baselines import ResidualCNN

    torch.manual_seed(0)
    conditioned, plain = ResidualCNN(8, 4, pixel_spacing=True), ResidualCNN(8, 4)
    plain.load_state_dict({k: v for k, v in conditioned.state_dict().items() if k.startswith("net.")})
    hu = torch.randn(2, 1, 24, 24) * 200
    sizes = torch.tensor([0.6, 0.9])
    assert torch.allclose(conditioned(hu, sizes), plain(hu))
    with torch.no_grad():
        conditioned.film[-1].weight.normal_(0, 0.1)
    same_image = hu[:1].expand(2, -1, -1, -1)
    out = conditioned(same_image, sizes)
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert torch.allclose(conditioned(same_image, torch.tensor([0.6, 0.6]))[1], out[0], atol=1e-5)
    with pytest.raises(ValueError, match="pixel"):
        conditioned(hu)


def test_saved_configs_without_the_pixel_size_setting_read_unconditioned():
    """Models saved before the predictor's pixel_spacing existed have a plain predictor; new configs default
    to the conditioned one."""
    saved = format1_config()
    del saved["diffusion"]["predictor_pixel_spacing"]
    del saved["diffusion"]["predictor_kernel_filter"]
    del saved["diffusion"]["predictor_kernel_filter_from"]
    del saved["diffusion"]["predictor_training"]["lr_schedule"]
    del saved["diffusion"]["temperature"]
    old = RunConfig.from_saved(saved, format_version=1).diffusion
    assert old.temperature == 1.0 and RunConfig().diffusion.temperature == 0.0
    assert old.predictor.pixel_spacing is False and old.predictor.kernel_filter is False
    assert old.predictor.training.lr_schedule == "constant"
    assert RunConfig.load().diffusion.predictor.pixel_spacing is True
    assert RunConfig.load().diffusion.predictor.kernel_filter is True


def test_saved_configs_without_pixel_anchors_keep_one_gain_and_new_ones_take_the_anchors():
    """Models saved before the anchors had one gain for every pixel size (their weights hold one row of knots);
    new ones default to the anchors; the exported predictor keeps them; bad anchors are refused with the key."""
    from diffusionct.methods.networks import ResidualCNNMethod
    from diffusionct.models.diffusionct_model import DiffusionCTModel

    saved = format1_config()
    del saved["diffusion"]["predictor_kernel_filter_pixel_anchors"]
    del saved["baselines"]["residual_cnn_kernel_filter_pixel_anchors"]
    old = RunConfig.from_saved(saved, format_version=1)
    assert old.diffusion.predictor.kernel_filter_pixel_anchors == []
    assert DiffusionCTModel.build(old).predictor.kernel_filter.gain.ndim == 1
    new = RunConfig.load()
    assert DiffusionCTModel.build(new).predictor.kernel_filter.pixel_anchors == (0.5, 0.75, 1.0)
    exported = dataclasses.replace(new, baselines=image_predictor_baseline_config(new))
    assert ResidualCNNMethod(exported).network.kernel_filter.gain.shape[0] == 3
    for bad in ("diffusion.predictor.kernel_filter_pixel_anchors=[0.7]",
                "baselines.residual_cnn.kernel_filter_pixel_anchors=[1.0,0.5]"):
        with pytest.raises(DiffusionCTError, match=bad.split("=")[0]):
            RunConfig.load(overrides=[bad])


def test_saved_configs_without_the_filter_size_read_the_cropped_kernel_and_new_ones_the_fourier_form():
    """Models saved before the Fourier form were trained with the 25 x 25 kernel and must run with it; the exported
    predictor (a residual-cnn model) alike. Sizes other than 0 or odd 3-63 are refused with the key's name."""
    from diffusionct.methods.networks import ResidualCNNMethod
    from diffusionct.models.diffusionct_model import DiffusionCTModel

    saved = format1_config()
    del saved["diffusion"]["predictor_kernel_filter_size"]
    del saved["baselines"]["residual_cnn_kernel_filter_size"]
    old = RunConfig.from_saved(saved, format_version=1)
    assert old.diffusion.predictor.kernel_filter_size == 25 and old.baselines.residual_cnn.kernel_filter_size == 25
    assert DiffusionCTModel.build(old).predictor.kernel_filter.size == 25
    new = RunConfig.load()
    assert DiffusionCTModel.build(new).predictor.kernel_filter.size == 0
    exported = dataclasses.replace(old, baselines=image_predictor_baseline_config(old))
    assert ResidualCNNMethod(exported).network.kernel_filter.size == 25
    for bad in ("diffusion.predictor.kernel_filter_size=24", "baselines.residual_cnn.kernel_filter_size=65"):
        with pytest.raises(DiffusionCTError, match=bad.split("=")[0]):
            RunConfig.load(overrides=[bad])


def _gaussian_gain(filter_, width_cycles_per_mm: float) -> None:
    frequencies = torch.linspace(0, filter_.max_cycles_per_mm, len(filter_.gain))
    with torch.no_grad():
        filter_.gain.copy_(torch.exp(-(frequencies / width_cycles_per_mm) ** 2))


def test_kernel_filter_starts_as_the_identity_and_scales_with_the_pixel_size():
    """Gain 1 is the identity at every pixel size; one gain in cycles/mm smooths a 0.5 mm slice over more pixels
    than a 1 mm one (the kernel's spread in pixels is inversely proportional to the pixel size)."""
    from diffusionct.models.baselines import RadialKernelFilter

    filter_ = RadialKernelFilter(size=15, grid=32)
    x = torch.randn(2, 1, 40, 40)
    torch.testing.assert_close(filter_(x, torch.tensor([0.5, 1.0])), x)
    _gaussian_gain(filter_, 0.2)  # negligible gain at the 1 mm slice's Nyquist frequency: no aliasing
    kernels = filter_.kernels(torch.tensor([0.5, 1.0]))[:, 0].detach()
    offsets = torch.arange(15.0) - 7
    spread = [(k.sum(0) * offsets**2).sum() / k.sum() for k in kernels]  # second moment along x, pixels^2
    assert spread[0] / spread[1] == pytest.approx(4.0, rel=0.1)


def test_kernel_filter_fit_recovers_a_known_filter_across_pixel_sizes():
    from diffusionct.models.baselines import RadialKernelFilter

    torch.manual_seed(0)
    truth, fitted = RadialKernelFilter(), RadialKernelFilter()
    _gaussian_gain(truth, 0.4)
    source = torch.randn(6, 1, 96, 96)
    sizes = torch.tensor([0.6, 0.7, 0.8, 0.9, 0.65, 0.75])
    target = truth(source, sizes).detach()
    fitted.fit_(source[:, 0], target[:, 0], sizes)
    covered = torch.linspace(0, fitted.max_cycles_per_mm, len(fitted.gain)) < 0.5 / 0.9  # below every Nyquist
    torch.testing.assert_close(fitted.gain[covered], truth.gain[covered], atol=0.02, rtol=0)
    error = (fitted(source, sizes) - target).pow(2).mean().sqrt()
    assert error < 0.02 * target.std()


def test_kernel_filter_with_pixel_anchors_fits_a_gain_that_changes_with_the_pixel_size():
    """Slices at 0.5 mm filtered by one gain and at 1.0 mm by another (as aliasing makes a kernel change): with pixel
    anchors the fit recovers both and interpolates between them; one gain for every size cannot fit both."""
    from diffusionct.models.baselines import RadialKernelFilter

    torch.manual_seed(0)
    small, large = RadialKernelFilter(), RadialKernelFilter()
    _gaussian_gain(small, 0.5), _gaussian_gain(large, 0.3)
    source = torch.randn(8, 1, 96, 96)
    sizes = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    target = torch.cat([small(source[:4], sizes[:4]), large(source[4:], sizes[4:])]).detach()
    anchored, single = RadialKernelFilter(pixel_anchors=(0.5, 1.0)), RadialKernelFilter()
    anchored.fit_(source[:, 0], target[:, 0], sizes)
    single.fit_(source[:, 0], target[:, 0], sizes)
    covered = torch.linspace(0, anchored.max_cycles_per_mm, anchored.gain.shape[-1]) < 0.5 / 1.0  # below both Nyquists
    for row, truth in zip(anchored.gain, (small, large)):
        torch.testing.assert_close(row[covered], truth.gain[covered], atol=0.02, rtol=0)
    error = (anchored(source, sizes) - target).pow(2).mean().sqrt()
    assert error < 0.02 * target.std() < (single(source, sizes) - target).pow(2).mean().sqrt()
    # between the anchors the gain is interpolated; beyond them it is the nearest anchor's
    f = torch.tensor([[0.3]] * 4)
    gains = anchored.gain_at(f, torch.tensor([0.5, 0.75, 1.0, 1.4])).detach().flatten()
    assert gains[1] == pytest.approx(float((gains[0] + gains[2]) / 2)) and gains[3] == gains[2]
    with pytest.raises(ValueError, match="pass pixel_mm"):
        anchored.gain_at(f)
    with pytest.raises(ValueError, match="ascending"):
        RadialKernelFilter(pixel_anchors=(1.0, 0.5))


def test_kernel_filter_fit_recovers_a_steep_sharpening_gain():
    """A CT-like pair: anatomy of large uniform regions (its power at the lowest frequencies, 10^5 above the
    noise's near Nyquist) smoothed by a kernel, and the sharp original. The fit finds the gain of ~10 near Nyquist
    where the source has little power; a ridge relative to the mean power pulled it to under half (on the
    simulator's gaps 2-4 where the kernels' ratio is 7-40)."""
    from diffusionct.models.baselines import RadialKernelFilter

    torch.manual_seed(0)
    smoothing, fitted = RadialKernelFilter(), RadialKernelFilter()
    _gaussian_gain(smoothing, 0.35)
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    anatomy = ((x - 64) ** 2 + (y - 64) ** 2 < 50**2).float() - 0.8 * ((x - 50) ** 2 + (y - 60) ** 2 < 15**2).float()
    target = anatomy + 0.01 * torch.randn(6, 1, 128, 128)
    sizes = torch.tensor([0.6, 0.7, 0.8, 0.9, 0.65, 0.75])
    source = smoothing(target, sizes).detach()
    fitted.fit_(source[:, 0], target[:, 0], sizes)
    frequencies = torch.linspace(0, fitted.max_cycles_per_mm, len(fitted.gain))
    covered = (frequencies > 0) & (frequencies < 0.5 / 0.9)  # below every Nyquist
    expected = 1 / smoothing.gain.detach()[covered]
    assert expected.max() > 8
    torch.testing.assert_close(fitted.gain.detach()[covered], expected, rtol=0.05, atol=0)


def test_residual_cnn_with_kernel_filter_adds_its_stack_to_the_filtered_image():
    """With a zero output layer the network is exactly its linear filter; it needs the pixel size."""
    from diffusionct.models.baselines import ResidualCNN

    network = ResidualCNN(8, 3, pixel_spacing=True, kernel_filter=True)
    _gaussian_gain(network.kernel_filter, 0.3)
    with torch.no_grad():
        network.net[-1].weight.zero_()
        network.net[-1].bias.zero_()
    hu = torch.randn(2, 1, 48, 48) * 100
    sizes = torch.tensor([0.6, 0.8])
    expected = network.kernel_filter(hu / 1000, sizes) * 1000
    torch.testing.assert_close(network.convert(hu, sizes), expected, atol=1e-3, rtol=1e-4)
    assert (expected - hu).abs().mean() > 10  # the filter did something
    with pytest.raises(ValueError, match="pixel"):
        network(hu)
    only_filter = ResidualCNN(8, 3, kernel_filter=True)
    assert only_filter.uses_pixel_spacing and only_filter.film is None


def test_cosine_learning_rate_falls_from_lr_to_zero_and_constant_stays():
    from diffusionct.config import PhaseConfig
    from diffusionct.train.loop import set_learning_rate

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = PhaseConfig(steps=100, lr=1e-3, lr_schedule="cosine")
    rates = []
    for step in (0, 50, 99):
        set_learning_rate(optimizer, cosine, step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(1e-3) and rates[1] == pytest.approx(5e-4) and 0 < rates[2] < 1e-6
    set_learning_rate(optimizer, PhaseConfig(steps=100, lr=1e-3), 99)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(Exception, match="lr_schedule"):
        RunConfig.load(overrides=["baselines.pix2pix.training.lr_schedule=linear"])


@pytest.mark.parametrize("pixel_mm", [0.55, 0.7, 0.89])
def test_kernel_filter_keeps_its_gain_at_zero_frequency_after_cropping(pixel_mm):
    """A sharpening gain whose kernel has long tails: the cropped kernel still sums to 1, so a uniform region keeps its
    HU (without the correction the sum was off by 1.7 % at 0.7 mm), whatever the first knot holds."""
    from diffusionct.models.baselines import RadialKernelFilter

    filter_ = RadialKernelFilter(size=25)
    _sharpening_gain(filter_)
    kernel = filter_.kernels(torch.tensor([pixel_mm])).detach()
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-5)
    flat = torch.full((1, 1, 40, 40), -0.8)
    torch.testing.assert_close(filter_(flat, torch.tensor([pixel_mm])).detach(), flat)
    fourier = RadialKernelFilter()
    fourier.load_state_dict(filter_.state_dict())
    torch.testing.assert_close(fourier(flat, torch.tensor([pixel_mm])).detach(), flat)


def _sharpening_gain(filter_) -> None:
    """A b30 -> b50-like gain: 1 at low frequencies, up to ~4.5 around 0.55 cycles/mm."""
    frequencies = torch.linspace(0, filter_.max_cycles_per_mm, len(filter_.gain))
    with torch.no_grad():
        filter_.gain.copy_(1.02 + 3.5 * torch.exp(-((frequencies - 0.55) / 0.15) ** 2))


def test_kernel_filter_in_the_fourier_domain_is_exact_where_the_cropped_kernel_is_not():
    """The filter applied to a pattern far from the slice's edges, against the same gain applied on a large zero-padded
    grid (the exact filtering): the Fourier form matches it; the 25 x 25 kernel of models saved before it cuts a
    sharpening kernel's tails (test RMSE b30 -> b50 4.26 vs 3.90 HU, docs/history/results-analytic-library.md, eighth run)."""
    from diffusionct.models.baselines import RadialKernelFilter

    torch.manual_seed(0)
    image = torch.zeros(1, 1, 128, 128)
    image[..., 40:88, 40:88] = torch.randn(1, 1, 48, 48)
    pixel_mm = torch.tensor([0.7])
    fourier, cropped = RadialKernelFilter(), RadialKernelFilter(size=25)
    _sharpening_gain(fourier)
    cropped.load_state_dict(fourier.state_dict())
    big = torch.nn.functional.pad(image, [192] * 4)  # 512 x 512, zeros around: no wrap-around reaches the pattern
    radius = torch.sqrt(torch.fft.fftfreq(512)[:, None] ** 2 + torch.fft.fftfreq(512)[None] ** 2)
    exact = torch.fft.ifft2(torch.fft.fft2(big) * fourier.gain_at(radius / 0.7)).real[..., 192:320, 192:320].detach()
    error = {name: (f(image, pixel_mm).detach() - exact).pow(2).mean().sqrt() / exact.std()
             for name, f in (("fourier", fourier), ("cropped", cropped))}
    assert error["fourier"] < 2e-3
    assert error["cropped"] > 5 * error["fourier"]
    with pytest.raises(ValueError, match="Fourier"):
        fourier.kernels(pixel_mm)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).parents[2] / "configs").glob("*.yaml")))
def test_every_recipe_in_configs_loads(recipe):
    """The recipes that docs/results.md names (`--config configs/NAME.yaml`) are valid configs."""
    config = RunConfig.load(Path(__file__).parents[2] / "configs" / recipe)
    if recipe == "paper-mode.yaml":  # the paper's objective and sampler, with the condition skip
        d = config.diffusion
        assert (d.mode, d.prediction, d.loss, d.temperature) == ("paper", "epsilon", "l1", 1.0)
        assert config.unet.condition_skip and config.unet.condition_skip_size == 3
