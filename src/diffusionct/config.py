"""Typed configuration: dataclasses, YAML files and ``--set a.b=value`` overrides.

Every model and training setting lives in one :class:`RunConfig`; it is saved as JSON beside the
weights so that a checkpoint always carries the settings that made it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffusionct.errors import DiffusionCTError
from diffusionct.methods import AUTOENCODER, CYCLEGAN, DDPM, PIX2PIX, RESIDUAL_CNN
from diffusionct.units import HU_MAX, HU_MIN

FEATURE_PRESETS = tuple(f"ibsi-{c}" for c in "abcde")  # IBSI 1 configurations A-E: diffusionct/data/ibsi/*.yaml
DIFFUSION_MODES = ("paper", "residual", "refine", "sdedit")
KERNEL_FILTER_SOURCES = ("pairs", "profiles")  # PredictorConfig.kernel_filter_from
PREDICTOR_SPACES = ("latent", "image")
LR_SCHEDULES = ("constant", "cosine")
CONFIG_FORMAT = 2  # the layout of RunConfig.to_dict(); a saved config of format 1 is read through migrate_format1


MAX_SEED = 2**63 - 1


def check_seed(seed: int, option: str = "--seed") -> int:
    """A seed every generator of the project accepts (numpy, torch, UIDs): an integer in 0..2^63-1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise DiffusionCTError(f"{option} must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return seed


@dataclass
class AutoencoderConfig:
    """Encoder-decoder (the paper's section 3.1).

    Attributes:
        base_channels: channels of the ResNet-18-style stem and first stage.
        latent_channels: channels of the spatial latent Z.
        downsample: spatial reduction of the latent: 2, 4 or 8.
        blocks_per_stage: BasicBlocks per encoder stage (ResNet-18 has 2).
        decoder_channels: width of the up-sampling decoder.
        hu_min, hu_max: HU clipping window mapped linearly to [-1, 1] for the networks.
        space_to_depth: add a fixed space-to-depth path to the learned encoder (and depth-to-space
            to the decoder), with the learned branches' last layers initialised to zero: the
            encoder-decoder starts as an exact round trip and learns on top of it. Needs
            ``latent_channels >= downsample ** 2`` (see docs/model.md for why).
    """

    base_channels: int = 32
    latent_channels: int = 16
    downsample: int = 4
    blocks_per_stage: int = 2
    decoder_channels: int = 64
    hu_min: float = HU_MIN
    hu_max: float = HU_MAX
    space_to_depth: bool = False


@dataclass
class UNetConfig:
    """Latent diffusion U-Net (MONAI ``DiffusionModelUNet``).

    ``condition_skip`` (the ``paper`` mode only): a learned linear path from the U-Net's inputs to its noise
    estimate, per channel and timestep, that starts as the map "Z_B = Z_A" (``models.latent_unet.ConditionSkip``).
    Without it the paper's U-Net must learn to copy Z_A through its normalised layers to a precision that x_0 =
    (x_t - s eps) / a multiplies by up to 150 near t = T, and sampled from pure noise it did not find the image.
    ``condition_skip_size`` > 1 (odd): that path also filters Z_A with a learned ``size`` x ``size`` convolution
    across channels with no response to a constant (a linear kernel change; 3 in ``configs/paper-mode.yaml``).
    Measured: docs/history/results-analytic-library.md, seventh run.
    """

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    attention_levels: list[bool] = field(default_factory=lambda: [False, False, True])
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 16
    condition_skip: bool = False
    condition_skip_size: int = 1


@dataclass
class PhaseConfig:
    """Optimisation of one training phase.

    ``lr_schedule``: ``constant`` or ``cosine`` (the rate falls from ``lr`` to 0 along half a cosine over the
    steps, so that the last weights are not those of one noisy step; used by the predictor's regime).
    """

    steps: int = 2000
    batch_size: int = 8
    crop: int = 96
    lr: float = 1e-4
    validate_every: int = 250
    checkpoint_every: int = 250
    lr_schedule: str = "constant"


@dataclass
class PredictorConfig:
    """A network that predicts the residual B - A: the ``refine`` mode's estimate of the conditional mean
    (``diffusion.predictor``) and the residual CNN baseline (``baselines.residual_cnn``), one description for both.

    Attributes:
        space: ``image`` (a full-resolution residual CNN on the HU image A, as Whang et al.'s image-space predictor,
            trained first with its own ``training`` settings and then frozen, so that the diffusion and ``x0_scale``
            see only what it leaves; measured better, docs/model.md) or ``latent`` (a stack of 3x3 convolutions on
            Z_A, trained jointly with the diffusion; ``diffusion.predictor`` only).
        channels, layers: width and depth (3x3 convolutions).
        pixel_spacing: the network is told each slice's pixel size (FiLM; kernels are filters in cycles/mm, so one
            kernel change is another filter at another field of view; docs/model.md, "Pixel size").
        kernel_filter: the network starts with a learned isotropic filter in cycles/mm and its convolutions correct
            what that filter misses (``models.baselines.RadialKernelFilter``).
        kernel_filter_size: how that filter is applied: 0 in the Fourier domain on each whole slice or crop,
            exactly; an odd size as a convolution kernel cropped to that size (whose crop cuts the tails of a
            sharpening kernel; docs/model.md).
        kernel_filter_pixel_anchors: pixel sizes (mm, ascending) at which that filter has its own gain, interpolated
            in between: aliasing makes one kernel change a different filter in cycles/mm at each pixel size. Empty:
            one gain for every pixel size.
        kernel_filter_from: where that filter comes from: ``pairs`` (least squares on the training pairs, then
            trained with the convolutions) or ``profiles`` (``diffusion.predictor`` only): the calibrated filter
            W_target / W_source of the gap's two measured kernel profiles (``diffusionct.kernels``), held fixed,
            with the convolutions starting at zero, so the predictor starts as the physics baseline
            (``--method kernel-filter``) and learns only what that filter misses. Simulated pairs cannot pull the
            linear part away from the real scanners'.
        training: its optimisation (L2 on the HU residual B - A); a latent predictor trains with phase 2 instead.
    """

    space: str = "image"
    channels: int = 64
    layers: int = 6
    pixel_spacing: bool = True
    kernel_filter: bool = True
    kernel_filter_size: int = 0
    kernel_filter_pixel_anchors: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    kernel_filter_from: str = "pairs"
    training: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=1000, batch_size=8, crop=96, lr=1e-3,
                                                                      lr_schedule="cosine"))


@dataclass
class DiffusionConfig:
    """The conditional latent DDPM (section 3.2) and its sampling.

    Attributes:
        mode: ``paper`` (epsilon prediction, L1 on the noise, the target latent Z_B sampled from pure
            noise, x0 estimates clipped to the latent range as in Ho et al.'s code), ``residual`` (v of
            the residual Z_B - Z_A, L2 loss) or ``refine`` (stochastic refinement after Whang et al. 2022:
            a latent predictor estimates the conditional mean of Z_B - Z_A, the diffusion samples what
            is left, conditioned on Z_A plus that estimate; v, L2). ``sdedit`` (Meng et al. 2022, an unpaired
            candidate measured in docs/history/results-analytic-library.md): a model of the target latents alone (no condition; v, L2);
            inference noises Z_A to ``sdedit_strength`` x T and denoises it with that model. See ``docs/model.md``.
        timesteps: T, the number of forward diffusion steps.
        beta_start, beta_end: linear beta schedule (Ho et al. 2020).
        ema_decay: decay of the exponential moving average of the weights used for sampling.
        sampler: ``ddim`` (deterministic with eta = 0) or ``ddpm``.
        steps: reverse steps at inference (DDIM sub-sequence of the T steps); 5, or 2 when a config is loaded
            for ``data.pairing=unpaired`` without steps of its own (measured, docs/history/results-analytic-library.md).
        eta: DDIM stochasticity (0 = deterministic).
        temperature: the start x_T is ``temperature`` x the Gaussian noise (1: the model's distribution; below 1 the
            sample moves toward the conditional mean, as reduced-temperature sampling of Kingma and Dhariwal 2018).
            Default 0, the deterministic DDIM path from the zero start: on all four simulated gaps it kept more
            features within RE 0.15 than 0.5 or 1 (docs/history/results-analytic-library.md, "Sampling temperature").
            Not used by the sdedit mode, which starts from Z_A noised. The ``paper`` mode is
            the paper's sampler (from pure noise) at 1 only: set it with that mode (``configs/paper-mode.yaml`` does). The
            image-space DDPM baseline always samples at 1 (``image_ddpm_diffusion_config``).
        x0_clip: clip the sampler's x0 estimates to [-x0_clip, x0_clip]; 0: no clipping. The paper
            mode sets it at training from the largest target latent (the latent range).
        x0_scale: the diffusion runs on x0 * x0_scale, so that its data has unit variance as the
            noise does (the residual of two close kernels is ~50x smaller than the noise, and the
            network's error would then dominate it). 0: set at the start of phase 2 to 1 / SD of the
            training x0.
        x0_shift: subtracted from x0 before scaling: set at the start of phase 2 to the mean of the training x0
            in the modes whose x0 is the target latent itself (paper, sdedit), as the shift factor of Stable
            Diffusion 3's autoencoder (the space-to-depth latent is the HU image: its mean is far from 0, and
            the forward process would keep it for hundreds of steps). The residual modes' x0 is centred: 0.
        predictor: the ``refine`` mode's predictor of the conditional mean (:class:`PredictorConfig`).
        sdedit_strength: the ``sdedit`` mode's starting point, as a share of T: lower keeps more of the source
            image, higher gives more of the target model's texture (and loses anatomy).
    """

    mode: str = "refine"
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    ema_decay: float = 0.999
    sampler: str = "ddim"
    steps: int = 5
    eta: float = 0.0
    temperature: float = 0.0
    x0_clip: float = 0.0
    x0_scale: float = 0.0
    x0_shift: float = 0.0
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    sdedit_strength: float = 0.3

    @property
    def prediction(self) -> str:
        return {"paper": "epsilon", "residual": "v", "refine": "v", "sdedit": "v"}[self.mode]

    @property
    def target(self) -> str:
        return {"paper": "latent", "residual": "residual", "refine": "refine", "sdedit": "latent"}[self.mode]

    @property
    def loss(self) -> str:
        return {"paper": "l1", "residual": "l2", "refine": "l2", "sdedit": "l2"}[self.mode]

    @property
    def x0_factor(self) -> float:
        return self.x0_scale or 1.0


@dataclass
class LossConfig:
    """Autoencoder losses: L2 plus the anatomic structure (gradient) and frequency terms."""

    structure_weight: float = 1.0
    frequency_weight: float = 0.1


PAIRINGS = ("pairs", "unpaired", "mixed")  # how training pairs are found (DataConfig.pairing)


def check_pairing(pairing: str) -> None:
    if pairing not in PAIRINGS:
        raise DiffusionCTError(f"data.pairing must be one of {', '.join(PAIRINGS)}, got '{pairing}'")


@dataclass
class DataConfig:
    """Which kernels are the non-standard source (A) and the standard target (B).

    Attributes:
        source_kernel: the ConvolutionKernel of the source series (``MANUFACTURER:KERNEL`` to pick one vendor's;
            with ``pairing=unpaired`` several, separated by commas: one model from each of them to the target).
        target_kernel: the standard kernel.
        pairing: ``pairs`` (same-scan pairs of the manifest), ``unpaired`` (source and target sets of other
            patients; pairs are synthesized from the target set with the kernel transfer measured between the
            sets, see kernels/transfer.py; any pairs in the manifest are ignored) or ``mixed`` (both: the
            same-scan pairs where they exist plus pairs synthesized from every target image, UDA-CT's setting).
        validation_fraction: share of the cases (studies) held out for validation.
    """

    source_kernel: str = "SIM_B30"
    target_kernel: str = "SIM_B70"
    pairing: str = "pairs"
    validation_fraction: float = 0.15


@dataclass
class HistogramConfig:
    """Quantile (histogram) matching: each HU value mapped through ``quantiles`` quantiles of the source kernel to the
    target kernel's (docs/baselines.md)."""

    quantiles: int = 1024


@dataclass
class Pix2PixConfig:
    """pix2pix (Isola et al. 2017): a U-Net generator of ``channels`` and ``depth`` levels against a PatchGAN, L1
    weighted by ``l1_weight``; ``latent_weight`` > 0 adds STAN-CT's loss in the discriminator's feature space."""

    channels: int = 32
    depth: int = 4
    l1_weight: float = 100.0
    latent_weight: float = 0.0
    training: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=2000, batch_size=8, crop=96, lr=2e-4))


@dataclass
class CycleGANConfig:
    """CycleGAN (Zhu et al. 2017): generators as pix2pix's (``baselines.pix2pix.channels`` and ``depth``),
    single-image PatchGANs, LSGAN loss; the loss weights of the paper."""

    cycle_weight: float = 10.0
    identity_weight: float = 5.0
    training: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=2000, batch_size=4, crop=96, lr=2e-4))


@dataclass
class ImageDDPMConfig:
    """The conditional DDPM on the HU image / ``hu_scale`` (SR3, Palette). Four levels by default: MONAI's
    mid-block self-attention then runs at 1/8 resolution (4,096 tokens for 512 x 512)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])
    hu_scale: float = 100.0
    training: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=2000, batch_size=8, crop=96, lr=1e-4))


def _residual_cnn_baseline() -> PredictorConfig:
    """Choe et al.'s residual CNN: pixels only, no kernel filter (True: as DiffusionCT's predictor)."""
    return PredictorConfig(pixel_spacing=False, kernel_filter=False, kernel_filter_pixel_anchors=[],
                           training=PhaseConfig(steps=2000, batch_size=8, crop=96, lr=1e-3))


@dataclass
class BaselineConfig:
    """Settings of the baseline methods (``--method``), one section each; sources in ``docs/baselines.md``."""

    residual_cnn: PredictorConfig = field(default_factory=_residual_cnn_baseline)
    histogram: HistogramConfig = field(default_factory=HistogramConfig)
    pix2pix: Pix2PixConfig = field(default_factory=Pix2PixConfig)
    cyclegan: CycleGANConfig = field(default_factory=CycleGANConfig)
    ddpm: ImageDDPMConfig = field(default_factory=ImageDDPMConfig)


@dataclass
class RunConfig:
    """Everything a training run and its model need."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    phase1: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=4000, batch_size=8, crop=96, lr=3e-4))
    phase2: PhaseConfig = field(default_factory=lambda: PhaseConfig(steps=4000, batch_size=8, crop=128, lr=1e-4))
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    seed: int = 0

    def validate(self) -> None:
        check_seed(self.seed, "seed")
        self._check_ranges()
        if self.autoencoder.downsample not in (2, 4, 8):
            raise DiffusionCTError(f"autoencoder.downsample must be 2, 4 or 8, got {self.autoencoder.downsample}")
        if self.autoencoder.space_to_depth and self.autoencoder.latent_channels < self.autoencoder.downsample**2:
            raise DiffusionCTError(f"autoencoder.space_to_depth needs latent_channels >= downsample^2 "
                                   f"({self.autoencoder.downsample**2}), got {self.autoencoder.latent_channels}")
        if self.diffusion.mode not in DIFFUSION_MODES:
            raise DiffusionCTError(f"diffusion.mode must be one of {', '.join(DIFFUSION_MODES)}, got '{self.diffusion.mode}'")
        if not 0 <= self.diffusion.temperature <= 1:
            raise DiffusionCTError(f"diffusion.temperature must be in [0, 1], got {self.diffusion.temperature}")
        if not 0 < self.diffusion.sdedit_strength <= 1:
            raise DiffusionCTError(f"diffusion.sdedit_strength must be in (0, 1], got {self.diffusion.sdedit_strength}")
        if self.diffusion.x0_clip < 0 or self.diffusion.x0_scale < 0:
            raise DiffusionCTError("diffusion.x0_clip and diffusion.x0_scale must be >= 0")
        _check_predictor("diffusion.predictor", self.diffusion.predictor)
        _check_predictor("baselines.residual_cnn", self.baselines.residual_cnn)
        if self.baselines.residual_cnn.space != "image":
            raise DiffusionCTError(f"baselines.residual_cnn.space must be image (the baseline works on the HU image), "
                                   f"got '{self.baselines.residual_cnn.space}'")
        check_pairing(self.data.pairing)
        for name, phase in self.phases().items():
            if phase.lr_schedule not in LR_SCHEDULES:
                raise DiffusionCTError(f"{name}.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got '{phase.lr_schedule}'")
        if self.diffusion.sampler not in ("ddim", "ddpm"):
            raise DiffusionCTError(f"diffusion.sampler must be 'ddim' or 'ddpm', got '{self.diffusion.sampler}'")
        if not 1 <= self.diffusion.steps <= self.diffusion.timesteps:
            raise DiffusionCTError(f"diffusion.steps must be in 1..{self.diffusion.timesteps}, got {self.diffusion.steps}")
        if self.unet.condition_skip and self.diffusion.mode != "paper":
            raise DiffusionCTError(f"unet.condition_skip is for diffusion.mode=paper (epsilon prediction of the target latent); "
                                   f"the {self.diffusion.mode} mode starts from its input without it: remove the setting")
        if self.unet.condition_skip_size < 1 or self.unet.condition_skip_size % 2 == 0:
            raise DiffusionCTError(f"unet.condition_skip_size must be an odd number >= 1, got {self.unet.condition_skip_size}")
        if len(self.unet.channels) != len(self.unet.attention_levels):
            raise DiffusionCTError("unet.channels and unet.attention_levels must have the same length")
        for name in ("phase1", "phase2"):
            phase = getattr(self, name)
            if phase.crop % (self.autoencoder.downsample * 2 ** (len(self.unet.channels) - 1)):
                raise DiffusionCTError(
                    f"{name}.crop {phase.crop} must be a multiple of {self.autoencoder.downsample * 2 ** (len(self.unet.channels) - 1)}"
                    " (latent down-sampling times the U-Net's)")

    def _check_ranges(self) -> None:
        """Every number finite and in its range, named by its key (a NaN rate or a zero batch would train nothing)."""
        for key, value in _numbers(self.to_dict()):
            if isinstance(value, float) and not math.isfinite(value):
                raise DiffusionCTError(f"{key} must be a finite number, got {value}")
            leaf = key.rsplit(".", 1)[-1].split("[")[0]
            if leaf in POSITIVE and not value > 0:
                raise DiffusionCTError(f"{key} must be > 0, got {value}")
            if leaf in NON_NEGATIVE and value < 0:
                raise DiffusionCTError(f"{key} must be >= 0, got {value}")
        d, a = self.diffusion, self.autoencoder
        if not 0 < d.beta_start < d.beta_end < 1:
            raise DiffusionCTError(f"diffusion.beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1, "
                                   f"got {d.beta_start} and {d.beta_end}")
        for key, value in (("diffusion.ema_decay", d.ema_decay), ("data.validation_fraction", self.data.validation_fraction)):
            if not 0 <= value < 1:
                raise DiffusionCTError(f"{key} must be in [0, 1), got {value}")
        if not a.hu_min < a.hu_max:
            raise DiffusionCTError(f"autoencoder.hu_min must be below autoencoder.hu_max, got {a.hu_min} and {a.hu_max}")
        if not self.unet.channels or not self.baselines.ddpm.channels:
            raise DiffusionCTError("unet.channels and baselines.ddpm.channels must list one or more widths")

    def phases(self) -> dict[str, PhaseConfig]:
        """Every phase's optimisation settings by their config key."""
        b = self.baselines
        return {"phase1": self.phase1, "phase2": self.phase2, "diffusion.predictor.training": self.diffusion.predictor.training,
                "baselines.residual_cnn.training": b.residual_cnn.training, "baselines.pix2pix.training": b.pix2pix.training,
                "baselines.cyclegan.training": b.cyclegan.training, "baselines.ddpm.training": b.ddpm.training}

    def check_training_steps(self, what: str) -> None:
        """Refuse to train ``what`` (a DiffusionCT phase or a baseline method) with 0 steps: it would write an
        untrained model as if trained (a saved config may hold 0 for a phase it did not train itself)."""
        for key in TRAINING_STEPS_KEYS.get(what, ()):
            if self.phases()[key].steps < 1:
                raise DiffusionCTError(f"{key}.steps is {self.phases()[key].steps}: training {what} needs at least 1 step "
                                       "(0 would write an untrained model)")

    @property
    def size_multiple(self) -> int:
        """Images are padded to a multiple of this for the networks."""
        return self.autoencoder.downsample * 2 ** (len(self.unet.channels) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, data: dict, source: str = "config", format_version: int = CONFIG_FORMAT) -> "RunConfig":
        """The config of a saved model or checkpoint, written in ``format_version`` (an earlier one is migrated)."""
        if format_version not in (1, CONFIG_FORMAT):
            raise DiffusionCTError(f"{source}: config format {format_version} is not one this version reads "
                                   f"(1-{CONFIG_FORMAT}); use a matching diffusionct version or retrain")
        if format_version == 1:
            data = migrate_format1(data)
        try:
            return cls.from_dict(data, source)
        except DiffusionCTError as exc:
            if str(exc).startswith(source):
                raise
            raise DiffusionCTError(f"{source}: {exc}; re-copy or retrain the model") from None

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "RunConfig":
        config = _build(cls, data, source)
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "RunConfig":
        """Defaults, then a YAML (or JSON) file, then ``key.sub=value`` overrides."""
        data: dict = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise DiffusionCTError(f"{path}: config file not found")
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except UnicodeDecodeError:
                raise DiffusionCTError(f"{path}: not a text (YAML) file") from None
            except (yaml.YAMLError, RecursionError) as exc:
                raise DiffusionCTError(f"{path}: not valid YAML ({exc})") from None
            if not isinstance(data, dict):
                raise DiffusionCTError(f"{path}: expected a YAML mapping of settings (phase1:, unet:, ...), "
                                       f"got a {type(data).__name__}")
        for item in overrides or []:
            apply_override(data, item)
        _default_sampling_steps(data)
        return cls.from_dict(data, str(path or "--set"))


# format 1's keys and where format 2 keeps them: the predictor's settings, flat with a ``predictor_`` prefix in
# ``diffusion`` and again with ``residual_cnn_`` in ``baselines``, became one PredictorConfig; each baseline's
# prefixed keys became its own section, whose optimisation settings (format 1: the section itself) are ``training``
FORMAT1_KEYS = {
    "diffusion.predictor": "diffusion.predictor.space",
    **{f"diffusion.predictor_{key}": f"diffusion.predictor.{key}" for key in (
        "channels", "layers", "pixel_spacing", "kernel_filter", "kernel_filter_size", "kernel_filter_pixel_anchors",
        "kernel_filter_from", "training")},
    "baselines.residual_cnn": "baselines.residual_cnn.training",
    **{f"baselines.residual_cnn_{key}": f"baselines.residual_cnn.{key}" for key in (
        "channels", "layers", "pixel_spacing", "kernel_filter", "kernel_filter_size", "kernel_filter_pixel_anchors")},
    "baselines.histogram_quantiles": "baselines.histogram.quantiles",
    "baselines.pix2pix": "baselines.pix2pix.training",
    **{f"baselines.pix2pix_{key}": f"baselines.pix2pix.{key}" for key in ("channels", "depth", "l1_weight", "latent_weight")},
    "baselines.cyclegan": "baselines.cyclegan.training",
    "baselines.cyclegan_cycle_weight": "baselines.cyclegan.cycle_weight",
    "baselines.cyclegan_identity_weight": "baselines.cyclegan.identity_weight",
    "baselines.ddpm": "baselines.ddpm.training",
    "baselines.ddpm_channels": "baselines.ddpm.channels",
    "baselines.ddpm_hu_scale": "baselines.ddpm.hu_scale",
}
# settings added while format 1 was written, with the value that reproduces a model saved before each existed
# (format 2 configs are saved complete)
FORMAT1_ABSENT = {
    "diffusion.predictor": "latent",
    "diffusion.predictor_pixel_spacing": False,
    "diffusion.predictor_kernel_filter": False,
    "diffusion.predictor_kernel_filter_size": 25,  # the filter cropped to 25 x 25 before its Fourier form
    "diffusion.predictor_kernel_filter_pixel_anchors": [],
    "diffusion.predictor_training.lr_schedule": "constant",
    "diffusion.temperature": 1.0,
    "baselines.residual_cnn_kernel_filter_size": 25,
    "baselines.residual_cnn_kernel_filter_pixel_anchors": [],
}


def migrate_format1(config: dict) -> dict:
    """A format-1 config dict in format 2: absent settings given the values its model was made with, keys moved."""
    config = json.loads(json.dumps(config))
    for key, value in FORMAT1_ABSENT.items():
        section, name = section_of(config, key)
        if section is not None:  # in a section the config has
            section.setdefault(name, value)
    moved = {}
    for old, new in FORMAT1_KEYS.items():
        section, name = section_of(config, old)
        if section is not None and name in section:
            moved[new] = section.pop(name)
    if isinstance(config.get("baselines"), dict):  # the residual CNN's settings format 1 did not have for it
        moved.update({"baselines.residual_cnn.space": "image", "baselines.residual_cnn.kernel_filter_from": "pairs"})
    for key, value in moved.items():
        section, name = section_of(config, key, create=True)
        if section is not None:
            section[name] = value
    return config


def section_of(config: dict, key: str, create: bool = False) -> tuple[dict | None, str]:
    """The section of a nested config dict that holds the dotted ``key``, and the key's last part; None where a
    section is missing (``create``: made empty) or is not a mapping."""
    *sections, name = key.split(".")
    node = config
    for part in sections:
        node = node.setdefault(part, {}) if create else node.get(part)
        if not isinstance(node, dict):
            return None, name
    return node, name


def format1_hint(key: str) -> str:
    """For an unknown key of a user's config: where format 2 keeps it, when it is a format-1 key."""
    for old, new in FORMAT1_KEYS.items():
        phase_key = new.endswith(".training") and key.startswith(old + ".")  # e.g. baselines.pix2pix.steps
        if key == old or phase_key:
            return f" ({key} is {new}{key[len(old):]} since config format 2)"
    return ""


UNPAIRED_SAMPLING_STEPS = 2  # measured: docs/history/results-analytic-library.md, "Sampling steps without pairs"


def _default_sampling_steps(data: dict) -> None:
    """Without pairs the diffusion learns the synthesized pairs' texture, and fewer steps keep more features
    (three simulated gaps and the real GE sets): ``diffusion.steps`` defaults to 2 there unless given."""
    if not isinstance(data.get("data"), dict) or data["data"].get("pairing") != "unpaired":
        return
    diffusion = data.setdefault("diffusion", {})
    if isinstance(diffusion, dict) and "steps" not in diffusion:
        diffusion["steps"] = UNPAIRED_SAMPLING_STEPS


def apply_override(data: dict, item: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested dict; keys are checked when building."""
    if "=" not in item:
        raise DiffusionCTError(f"--set expects key=value, got '{item}'")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DiffusionCTError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(text)


def image_ddpm_diffusion_config(config: RunConfig) -> DiffusionConfig:
    """The image-space DDPM's diffusion: the run's, without the latent predictor of the refine mode
    (it diffuses the residual B - A of the HU image, the ``residual`` mode), sampled from pure noise
    (temperature 1) as SR3 and Palette sample: the baseline as published, whatever DiffusionCT's own temperature."""
    d = config.diffusion
    return dataclasses.replace(d, mode="residual" if d.mode == "refine" else d.mode, temperature=1.0)


def image_predictor_baseline_config(config: RunConfig) -> BaselineConfig:
    """The run's baseline settings with the residual CNN made the refine mode's image-space predictor: the predictor
    exported as a ``residual-cnn`` model."""
    return dataclasses.replace(config.baselines, residual_cnn=copy.deepcopy(config.diffusion.predictor))


# DiffusionCT's training phases (train --phase): the encoder-decoder (phase 1, itself the autoencoder method), the
# latent diffusion (phase 2), the refine mode's predictor alone, or all of them
DIFFUSION_PHASE, PREDICTOR_PHASE, ALL_PHASES = "diffusion", "predictor", "all"
TRAINING_PHASES = (AUTOENCODER, DIFFUSION_PHASE, PREDICTOR_PHASE, ALL_PHASES)
# the phase settings whose steps train each DiffusionCT phase (train --phase) or baseline method (train --method)
TRAINING_STEPS_KEYS = {ALL_PHASES: ("phase1", "phase2"), AUTOENCODER: ("phase1",), DIFFUSION_PHASE: ("phase2",),
                       PREDICTOR_PHASE: ("diffusion.predictor.training",), RESIDUAL_CNN: ("baselines.residual_cnn.training",),
                       PIX2PIX: ("baselines.pix2pix.training",), CYCLEGAN: ("baselines.cyclegan.training",),
                       DDPM: ("baselines.ddpm.training",)}
POSITIVE = {"base_channels", "latent_channels", "blocks_per_stage", "decoder_channels", "channels", "num_res_blocks",
            "num_head_channels", "norm_num_groups", "batch_size", "crop", "lr", "validate_every", "checkpoint_every",
            "timesteps", "layers", "quantiles", "depth", "hu_scale"}
NON_NEGATIVE = {"steps", "eta", "structure_weight", "frequency_weight", "l1_weight", "latent_weight", "cycle_weight",
                "identity_weight"}


def _check_predictor(key: str, predictor: PredictorConfig) -> None:
    if predictor.space not in PREDICTOR_SPACES:
        raise DiffusionCTError(f"{key}.space must be one of {', '.join(PREDICTOR_SPACES)}, got '{predictor.space}'")
    if predictor.layers < 2:
        raise DiffusionCTError(f"{key}.layers must be >= 2, got {predictor.layers}")
    size = predictor.kernel_filter_size
    if size != 0 and not (size % 2 == 1 and 3 <= size <= 63):
        raise DiffusionCTError(f"{key}.kernel_filter_size must be 0 (the filter in the Fourier domain) or an odd kernel "
                               f"size 3-63, got {size}")
    anchors = predictor.kernel_filter_pixel_anchors
    if len(anchors) == 1 or not all(0 < a < b for a, b in zip(anchors, anchors[1:])):  # positive and ascending
        raise DiffusionCTError(f"{key}.kernel_filter_pixel_anchors must be empty or two or more ascending pixel sizes "
                               f"in mm, e.g. [0.5, 0.75, 1.0]; got {anchors}")
    if predictor.kernel_filter_from not in KERNEL_FILTER_SOURCES:
        raise DiffusionCTError(f"{key}.kernel_filter_from must be one of {', '.join(KERNEL_FILTER_SOURCES)}, "
                               f"got '{predictor.kernel_filter_from}'")
    if predictor.kernel_filter_from == "profiles" and not predictor.kernel_filter:
        raise DiffusionCTError(f"{key}.kernel_filter_from=profiles needs {key}.kernel_filter=true")


def _numbers(data: dict, prefix: str = ""):
    """(key, number) of every number in a nested config dict, list items as ``key[i]``."""
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _numbers(value, key + ".")
        elif isinstance(value, list):
            yield from ((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, (int, float)) and not isinstance(v, bool))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield key, value


def image_ddpm_unet_config(config: RunConfig) -> UNetConfig:
    """The image-space DDPM's U-Net: the latent U-Net's settings with the baseline's widths, no attention."""
    channels = config.baselines.ddpm.channels
    return UNetConfig(channels=list(channels), attention_levels=[False] * len(channels),
                      num_res_blocks=config.unet.num_res_blocks, num_head_channels=config.unet.num_head_channels,
                      norm_num_groups=config.unet.norm_num_groups)


def _build(cls, data: Any, where: str, base=None, path: str = ""):
    """``base`` (default: ``cls()``) with the keys of ``data`` replaced, nested sections merged key by key
    (``path``: the section's dotted key, ``where``: the same with its source, for messages)."""
    if not isinstance(data, dict):
        raise DiffusionCTError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}{format1_hint(path.rstrip('.'))}")
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        moved = "".join(format1_hint(f"{path}{name}") for name in unknown)
        raise DiffusionCTError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}{moved}")
    changes = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            changes[name] = _build(hint, value, f"{where}.{name}", getattr(base, name), f"{path}{name}.")
        else:
            changes[name] = _coerce(hint, value, f"{where}.{name}")
    return dataclasses.replace(base, **changes)


def _coerce(hint, value, where):
    origin = typing.get_origin(hint)
    try:
        if hint is float:
            return float(value)
        if hint is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            return int(value)
        if hint is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint is str:
            if isinstance(value, bool) or not isinstance(value, (str, int)):  # YAML may read a name such as 30 as a number
                raise ValueError
            return str(value)
        if origin is list:
            (inner,) = typing.get_args(hint)
            return [_coerce(inner, v, where) for v in value]
    except (TypeError, ValueError, OverflowError):
        raise DiffusionCTError(f"{where}: cannot use {value!r} as {getattr(hint, '__name__', hint)}") from None
    return value
