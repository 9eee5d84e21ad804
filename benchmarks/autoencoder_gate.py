"""The autoencoder gate (issue 5): does the encoder-decoder round trip keep the sharp kernel's texture?

    .venv/bin/python benchmarks/autoencoder_gate.py --model RUN --data TEST_MANIFEST [--out FILE]

Held-out target-kernel (sharp) series of the test manifest are encoded and decoded; reported: the
high-pass noise ratio in soft tissue (gate: >= 0.9), RMSE in the body, and the share of tumour
radiomic features with RE < 0.15 between the round trip and the original (gate: >= 90 %).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffusionct.evaluate import tumour_features, image_metrics_summary, load_test_cases
from diffusionct.methods.networks import AutoencoderMethod
from diffusionct.methods.store import load_model
from diffusionct.radiomics.compare import compare_features
from diffusionct.radiomics.features import FeatureSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/autoencoder_gate.json"))
    parser.add_argument("--max-cases", type=int)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model, need_diffusion=False)
    method = AutoencoderMethod(model.config, torch.device("cpu"), model)
    cases = load_test_cases(args.data, model.config.data.source_kernel, model.config.data.target_kernel, args.max_cases)
    settings = FeatureSettings.load()
    originals = {c.name: c.target.hu for c in cases}
    start = time.perf_counter()
    recon = {c.name: method.convert_slices(c.target.hu, pixel_mm=c.target.pixel_mm) for c in cases}
    seconds = time.perf_counter() - start
    image, _ = image_metrics_summary(cases, recon)
    comparison = compare_features(tumour_features(cases, originals, settings, 2), tumour_features(cases, recon, settings, 2))
    result = {
        "model": str(args.model), "cases": len(cases), "tumours": len(comparison.tumours),
        "high_pass_ratio": image["high_pass_ratio"], "rmse_hu": image["rmse_hu"], "ssim": image["ssim"],
        "features_re_below_0_15": comparison.reproducible_share,
        "ccc": {k: v["mean"] for k, v in comparison.ccc_table.items()},
        "gate_passed": image["high_pass_ratio"] >= 0.9 and comparison.reproducible_share >= 0.9,
        "seconds_per_slice": seconds / sum(c.target.shape[0] for c in cases),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
