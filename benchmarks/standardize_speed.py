"""Seconds per 512 x 512 slice of `standardize` at the default settings, with the floating-point work.

    .venv/bin/python benchmarks/standardize_speed.py [--model DIR] [--slices 8] [--device cpu]

Reports per stage (encode, diffusion, decode) the measured time and the FLOPs counted by
torch.utils.flop_counter, and the matrix throughput of this machine (a large float32 matmul), so the
measured time can be compared with what the hardware allows.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusionct.devices import matmul_gflops
from diffusionct.standardize import Standardizer


PIXEL_MM = 0.7  # the random slices' pixel size (a chest field of view), for models conditioned on it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/standardize_speed.json"))
    args = parser.parse_args()
    standardizer = Standardizer.load(args.model, args.device)
    method = standardizer.method
    device = torch.device(args.device)
    steps = args.steps or standardizer.config.diffusion.steps
    rng = np.random.default_rng(0)
    hu = (rng.normal(40, 60, size=(args.slices, 512, 512))).astype(np.float32)
    standardizer.standardize_slices(hu[:1], steps=steps, pixel_mm=PIXEL_MM)  # warm-up
    for key in method.stage_seconds:
        method.stage_seconds[key] = 0.0
    start = time.perf_counter()
    standardizer.standardize_slices(hu, steps=steps, batch_size=args.batch_size, pixel_mm=PIXEL_MM)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    ae, unet, diffusion = method.model.autoencoder, method.model.unet, method.diffusion
    x = torch.from_numpy(hu[:1, None]).to(device)
    flops = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            z = ae.encode(x)
        flops["encode"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:  # the refine mode's predictor counts here, as in its timing
            mean = method.model.predicted_mean(x, z, torch.full((1,), PIXEL_MM, device=device))
            x0 = diffusion.sample(unet, diffusion.condition(z, mean), steps=steps, generator=torch.Generator().manual_seed(0))
        flops["diffusion"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            ae.decode(diffusion.to_target_latent(x0, z, mean))
        flops["decode"] = counter.get_total_flops()
    gflops = matmul_gflops(device)
    per_slice = total / args.slices
    result = {
        "device": args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "steps": steps, "batch_size": args.batch_size, "slices": args.slices,
        "seconds_per_slice": per_slice,
        "stage_seconds_per_slice": {k: v / args.slices for k, v in method.stage_seconds.items()},
        "gflop_per_slice": {k: v / 1e9 for k, v in flops.items()},
        "matmul_gflops_per_second": gflops,
    }
    result["seconds_at_matmul_peak"] = sum(result["gflop_per_slice"].values()) / gflops
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
