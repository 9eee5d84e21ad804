"""How well a trained DiffusionCT model knows the target at each timestep: the true x_0 of a test pair is noised to
t (Ho et al. eq. 4), the U-Net is called once, and its x_0 estimate (with the model's clipping) is decoded and
compared with the target image. A sampler can only be as good as these estimates along its path; the paper mode's
failure (docs/history/results-analytic-library.md) is read here. ``--sample-steps 5,25`` then samples from pure noise with those DDIM step
counts (at temperature 1, the paper's start) for the same slices. RMSE over the whole slice and in the body
(target HU > -500), where the air around it does not dilute it.

    .venv/bin/python benchmarks/x0_error_by_timestep.py MODEL TEST_MANIFEST [--timesteps 0,20,100,400,800,999]
        [--sample-steps 5,25]
"""

from __future__ import annotations

import argparse

import torch

from diffusionct.io.manifest import Manifest
from diffusionct.methods.registry import load_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("manifest")
    parser.add_argument("--timesteps", default="0,5,20,50,100,200,400,600,800,950,999")
    parser.add_argument("--slices", default="4,6", help="slice range of the first test pair")
    parser.add_argument("--sample-steps", default="", help="DDIM step counts to sample from pure noise, e.g. 5,25")
    args = parser.parse_args()
    method = load_method(args.model)
    manifest = Manifest.read(args.manifest)
    path_a, path_b = manifest.oriented_pairs(method.source_kernel, method.target_kernel)[0]
    first, last = (int(v) for v in args.slices.split(","))
    source = manifest.read_volume(path_a)
    a = torch.from_numpy(source.hu[first:last].copy())[:, None]
    b = torch.from_numpy(manifest.read_volume(path_b).hu[first:last].copy())[:, None]
    model, diffusion = method.model, method.diffusion
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z_a, z_b = model.autoencoder.encode(a), model.autoencoder.encode(b)
        mean = model.predicted_mean(a, z_a, torch.full((a.shape[0],), source.pixel_mm))
        x0, cond = diffusion.from_pair(z_a, z_b, mean), diffusion.condition(z_a, mean)
        body = b > -500

        def rmse(image: torch.Tensor) -> str:
            return f"{(image - b).pow(2).mean().sqrt():8.1f} {(image - b)[body].pow(2).mean().sqrt():8.1f}"

        print(f"input: RMSE (slice, body) {rmse(a)} HU; {method.config.diffusion.mode} mode, "
              f"{method.config.diffusion.prediction} prediction")
        print("     t   x0 estimate RMSE (slice, body; HU)   noise estimate L1")
        for t in (int(v) for v in args.timesteps.split(",")):
            t_batch = torch.full((a.shape[0],), t, dtype=torch.long)
            noise = torch.randn(x0.shape, generator=generator)
            x_t = diffusion.add_noise(x0, noise, t_batch)
            x0_hat, eps_hat = diffusion.predict_x0_eps(model.unet(x_t, t_batch, cond), x_t, t_batch)
            image = model.autoencoder.decode(diffusion.to_target_latent(x0_hat, z_a, mean))
            print(f"{t:6d}   {rmse(image):>35}   {(eps_hat - noise).abs().mean():17.3f}")
        for steps in (int(v) for v in args.sample_steps.split(",") if v):
            sample = diffusion.sample(model.unet, cond, generator=torch.Generator().manual_seed(0), steps=steps,
                                      temperature=1.0)
            image = model.autoencoder.decode(diffusion.to_target_latent(sample, z_a, mean))
            print(f"sampled from pure noise, {steps} DDIM steps: RMSE (slice, body) {rmse(image)} HU")


if __name__ == "__main__":
    main()
