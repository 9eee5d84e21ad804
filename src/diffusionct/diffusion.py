"""The conditional latent DDPM: noise schedule, training target and the DDPM / DDIM samplers.

Separate from the network (as in diffusers): ``ConditionalDiffusion`` takes a ``denoiser(x_t, t, cond)``
callable and tensors. Notation follows Ho et al. 2020 (DDPM) and Song et al. 2021 (DDIM):

* forward process, eq. (4) of Ho et al.: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``
* v-parameterisation (Salimans & Ho 2022): ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``
* the paper's loss (section 3.2): ``E_t |eps - p_theta(Z_A, Z_B_t)|`` (L1 on the noise)

``x_0`` is the target latent Z_B in the paper's mode, the residual Z_B - Z_A in the ``residual``
mode, and in the ``refine`` mode (stochastic refinement, Whang et al. CVPR 2022) what is left of
Z_B - Z_A after a predictor's estimate m(Z_A) of its conditional mean: x_0 = Z_B - Z_A - m. The
condition, concatenated with x_t along the channels, is Z_A, or Z_A + m in the refine mode.
The diffusion runs on x_0 times ``x0_scale`` (unit variance, as the noise), and the sample is divided
back before it is added to the latent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from diffusionct.config import DiffusionConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class NoiseSchedule:
    """Linear beta schedule and its cumulative products (``alpha_bar``), on the CPU in float64."""

    betas: torch.Tensor
    alpha_bar: torch.Tensor

    @classmethod
    def linear(cls, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        return cls(betas, torch.cumprod(1 - betas, dim=0))

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "NoiseSchedule":
        return cls.linear(cfg.timesteps, cfg.beta_start, cfg.beta_end)

    @property
    def timesteps(self) -> int:
        return self.betas.numel()

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) shaped to broadcast over ``like``."""
        abar = self.alpha_bar.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))
        return abar.sqrt(), (1 - abar).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0), Ho et al. eq. (4)."""
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise


@dataclass
class ConditionalDiffusion:
    """The conditional diffusion of one model, built once from its config: the noise schedule, the training
    target and loss, the x_0 of a training pair, and the DDPM / DDIM sampler (one object, as diffusers' scheduler)."""

    config: DiffusionConfig
    schedule: NoiseSchedule

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> "ConditionalDiffusion":
        return cls(config, NoiseSchedule.from_config(config))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.schedule.add_noise(x0, noise, t)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output at x_t: the noise (paper) or v (residual mode)."""
        if self.config.prediction == "epsilon":
            return noise
        a, s = self.schedule.coefficients(t, x0)
        return a * noise - s * x0

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The paper's L1 on the noise (section 3.2), or L2."""
        if self.config.loss == "l1":
            return (prediction - target).abs().mean()
        return ((prediction - target) ** 2).mean()

    def predict_x0_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's estimate of (x_0, eps) at step t from its raw output.

        With ``x0_clip`` the x_0 estimate is clipped to the data range and eps recomputed from it (Ho et
        al.'s reference code; diffusers' ``clip_sample``): near t = T, x_0 = (x_t - s eps) / a divides by
        a small ``a`` and would otherwise amplify the network's error ~100x.
        """
        a, s = self.schedule.coefficients(t, x_t)
        if self.config.prediction == "epsilon":
            eps = output
            x0 = (x_t - s * eps) / a
        else:  # v: x_0 = a x_t - s v ; eps = s x_t + a v
            x0 = a * x_t - s * output
            eps = s * x_t + a * output
        if self.config.x0_clip > 0:
            x0 = x0.clamp(-self.config.x0_clip, self.config.x0_clip)
            eps = (x_t - a * x0) / s
        return x0, eps

    def first_timestep(self) -> int:
        """Where the reverse process starts: T-1, or in the sdedit mode ``sdedit_strength`` x T."""
        total = self.schedule.timesteps
        if self.config.mode == "sdedit":
            return max(1, round(self.config.sdedit_strength * total)) - 1
        return total - 1

    def sampling_timesteps(self, steps: int) -> list[int]:
        """The DDIM sub-sequence of ``steps`` timesteps, from the first (T-1) down to 0 (evenly spaced)."""
        ts = torch.linspace(self.first_timestep(), 0, steps).round().long().tolist()
        return sorted(set(ts), reverse=True)

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, cond: torch.Tensor, generator: torch.Generator | None = None,
               steps: int | None = None, sampler: str | None = None, progress: Callable[[int], None] | None = None,
               initial_noise: torch.Tensor | None = None, source: torch.Tensor | None = None,
               temperature: float | None = None) -> torch.Tensor:
        """Run the reverse process conditioned on ``cond`` (= Z_A) and return x_0.

        In the sdedit mode ``source`` (Z_A) is noised to the first timestep (eq. 4 of Ho et al.:
        x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the noise being ``initial_noise``) and denoised from there.

        DDIM (Song et al. eq. 12), with ``eta`` = 0 deterministic:
            x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z
        DDPM ancestral sampling (Ho et al. Algorithm 2) is DDIM over all T steps with eta = 1.
        The start x_T is ``initial_noise`` when given, else Gaussian noise from ``generator`` (the same
        seed gives the same output), times ``temperature`` (default: the config's; not in the sdedit mode, where the
        noise is added to Z_A).
        """
        cfg = self.config
        sampler = sampler or cfg.sampler
        steps = self.first_timestep() + 1 if sampler == "ddpm" else (steps or cfg.steps)
        eta = 1.0 if sampler == "ddpm" else cfg.eta
        if initial_noise is not None:
            x = initial_noise.to(device=cond.device, dtype=cond.dtype)
        else:
            x = torch.randn(cond.shape, generator=generator, device=cond.device if generator is None else generator.device,
                            dtype=cond.dtype).to(cond.device)
        timesteps = self.sampling_timesteps(steps)
        if cfg.mode != "sdedit":
            x = x * (cfg.temperature if temperature is None else temperature)
        if cfg.mode == "sdedit":
            if source is None:
                raise ValueError("the sdedit mode samples from the noised source latent: pass source=Z_A")
            first = torch.full((cond.shape[0],), timesteps[0], device=cond.device, dtype=torch.long)
            x = self.add_noise(self.scaled(source), x, first)
        for i, t in enumerate(timesteps):
            t_batch = torch.full((cond.shape[0],), t, device=cond.device, dtype=torch.long)
            output = denoiser(x, t_batch, cond)
            if i + 1 == len(timesteps):
                return self.predict_x0_eps(output, x, t_batch)[0]
            x = self.step(output, t, timesteps[i + 1], x, eta, generator)
            if progress is not None:
                progress(i + 1)
        return x

    def step(self, output: torch.Tensor, t: int, t_next: int, x: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step from x_t to x_{t'} (t' = ``t_next`` < t) given the network's ``output`` at t; DDIM (Song et
        al. eq. 12):
            sigma  = eta sqrt((1 - abar_t') / (1 - abar_t) (1 - abar_t / abar_t'))
            x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z
        with (x0_hat, eps_hat) from :meth:`predict_x0_eps`. It is MONAI's ``DDIMScheduler.step`` (diffusers' too) for
        the same schedule and prediction, and with eta = 1 over consecutive steps its ``DDPMScheduler.step``
        (tests/models/test_modes.py)."""
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0, eps = self.predict_x0_eps(output, x, t_batch)
        abar_t = self.schedule.alpha_bar[t].item()
        abar_next = self.schedule.alpha_bar[t_next].item()
        sigma = eta * ((1 - abar_next) / (1 - abar_t) * (1 - abar_t / abar_next)) ** 0.5
        x = abar_next**0.5 * x0 + max(1 - abar_next - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device,
                            dtype=x.dtype).to(x.device)
            x = x + sigma * z
        return x

    def condition(self, z_source: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """What the U-Net is conditioned on: Z_A, or in the refine mode the predicted target Z_A + m; nothing (zeros)
        in the sdedit mode, whose model knows the target domain only."""
        if self.config.mode == "sdedit":
            return torch.zeros_like(z_source)
        return z_source + mean if self.config.target == "refine" else z_source

    def to_target_latent(self, x0: torch.Tensor, z_source: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """The standardized latent Z_A' from the sampled x_0 (the residual modes add Z_A, and m, back)."""
        x0 = self.unscaled(x0)
        if self.config.target == "refine":
            return x0 + z_source + mean
        return x0 + z_source if self.config.target == "residual" else x0

    def from_pair(self, z_source: torch.Tensor, z_target: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """The diffusion's x_0 for a training pair (Z_A, Z_B), shifted by ``x0_shift`` and scaled by ``x0_scale``."""
        if self.config.target == "refine":
            x0 = z_target - z_source - mean
        else:
            x0 = z_target - z_source if self.config.target == "residual" else z_target
        return self.scaled(x0)

    def scaled(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 as the diffusion sees it: shifted by ``x0_shift``, scaled by ``x0_scale``."""
        return (x0 - self.config.x0_shift) * self.config.x0_factor

    def unscaled(self, x0: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`scaled`."""
        return x0 / self.config.x0_factor + self.config.x0_shift
