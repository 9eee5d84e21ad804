"""Write each gap's model card into its config.json (``model_card``; ``diffusionct info --card NAME`` prints it): the
kernels and their vendor, the method, the training data and its licence, the measured numbers, the intended use.

The numbers come from the benchmarks' JSON: ``--real-pairs`` (``benchmarks/real_pairs.py --heldout ... --json``: the
same recipe trained on one Canon region's profiles and tested on the other region's real pairs) and ``--simulated``
(``diffusionct evaluate`` results.json files of gaps on the simulated test set). A gap without a measurement says so.

    .venv/bin/python benchmarks/model_cards.py LIBRARY --real-pairs benchmarks/results/real_pairs.json \\
        [--simulated REPORT/results.json ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusionct.kernels.names import kernel_family
from diffusionct.kernels.profiles import KERNEL_PROFILES_KEY
from diffusionct.methods.library import MODEL_CARD, library_models
from diffusionct.methods.store import CONFIG_NAME, read_model_meta, write_model_config

METHOD = ("DiffusionCT refine mode: the calibrated linear filter W_target / W_source of the two kernels' measured profiles, "
          "held fixed, plus a convolution stack trained for what that filter misses, then the library's shared latent "
          "diffusion (encoder-decoder and U-Net)")
INTENDED_USE = ("research: making radiomic features of CT comparable across reconstruction kernels; not for diagnosis "
                "or treatment decisions")
LICENCE = ("weights: Apache-2.0, as this project; trained on simulated images only (no patient data); profiles: {profiles}")


def training_data(meta: dict) -> str:
    manifest = Path(meta.get("manifest", ""))
    try:
        generated = json.loads((manifest / "manifest.json").read_text())["config"]
    except (OSError, KeyError, ValueError):
        return f"simulated pairs ({manifest})"
    randomize = generated.get("randomize", {})
    return (f"simulated: {generated['cases']} random chest phantoms x {generated['slices']} slices at "
            f"{', '.join(f'{t:g}' for t in generated['thicknesses_mm'])} mm, {randomize.get('mas', ['?'])[0]:g}-"
            f"{randomize.get('mas', ['?', '?'])[1]:g} mAs, {randomize.get('pixel_mm', [0, 0])[0]:g}-"
            f"{randomize.get('pixel_mm', [0, 0])[1]:g} mm pixels, kernel jitter {randomize.get('kernel_jitter', 0):g}, "
            f"seed {generated['seed']}; reconstructed with the measured profiles of {', '.join(generated['kernels'])}")


def real_pairs_text(rows: list[dict], source: str, target: str) -> str:
    gap = f"{source} -> {target}"
    mine = [r for r in rows if r["gap"] == gap and r["method"] == "DiffusionCT (held-out)"]
    if not mine:
        return ("not measured in this repository (no real same-scan pairs of these kernels here); the same recipe on real "
                "Canon pairs it had not seen: docs/results.md, 'Real kernels'")
    filters = {r["calibrated_on"]: r for r in rows if r["gap"] == gap and r["method"] == "kernel-filter"}
    parts = [f"{r['reproducible']:.2f} (noise ratio {r['noise_ratio']:.2f}; calibrated linear filter "
             f"{filters[r['calibrated_on']]['reproducible']:.2f}) trained on {r['calibrated_on']}'s profiles, tested on "
             f"{r['tested_on']}" for r in mine]
    return ("share of soft-tissue texture features within RE < 0.15 against the real target slices, the recipe trained "
            "on one region and tested on the other: " + "; ".join(parts) + ". The shipped gap uses both regions' profiles")


def summary(rows: list[dict], reports: list[dict], folder: Path, source: str, target: str) -> str:
    """One line for `diffusionct info`: the held-out real-pairs shares beside the filter's, and the simulated share."""
    gap = f"{source} -> {target}"
    mine = [r for r in rows if r["gap"] == gap and r["method"] == "DiffusionCT (held-out)"]
    filters = {r["calibrated_on"]: r["reproducible"] for r in rows if r["gap"] == gap and r["method"] == "kernel-filter"}
    if mine:
        shares = ", ".join(f"{r['reproducible']:.2f}" for r in mine)
        baseline = ", ".join(f"{filters[r['calibrated_on']]:.2f}" for r in mine)
        line = f"held-out real pairs {shares} (calibrated filter {baseline})"
    else:
        line = "no real pairs of these kernels here"
    simulated = simulated_shares(reports, folder)
    if simulated:
        line += f"; simulated test set {simulated[0]:.3f} (calibrated filter {simulated[1]:.3f})"
    return line


def simulated_shares(reports: list[dict], folder: Path) -> tuple[float, float] | None:
    """(this model's, the kernel filter's) share of tumour features within RE < 0.15 in the evaluate report holding it."""
    for report in reports:
        methods = [m for m in report.get("methods", []) if m.get("status") == "ok"]
        mine = [m for m in methods if Path(str(m.get("model", ""))).name == folder.name]
        filters = [m for m in methods if m.get("method") == "kernel-filter"]
        if mine and filters:
            return mine[0]["reproducible_share"], filters[0]["reproducible_share"]
    return None


def simulated_text(reports: list[dict], folder: Path) -> str:
    """Every method's share in the evaluate report that holds this model (the baselines trained on the same pairs)."""
    for report in reports:
        methods = [m for m in report.get("methods", []) if m.get("status") == "ok"]
        if any(Path(str(m.get("model", ""))).name == folder.name for m in methods):
            shares = ", ".join(f"{m['method']} {m['reproducible_share']:.3f}" for m in methods)
            return f"share of tumour features within RE < 0.15 on the simulated 5 mm test set (docs/results.md): {shares}"
    return "not measured on the simulated test set in this run"


def learned_part_text(meta: dict) -> str:
    verdict = meta.get("training", {}).get("predictor", {}).get("learned_part")
    if verdict is None:
        return "Learned part: none (a smoother target: the calibrated filter is the whole map)"
    return (f"Learned part: {'kept' if verdict['kept'] else 'dropped'} (held-out RMSE {verdict['validation_rmse_hu']:.2f} HU "
            f"against the calibrated filter's {verdict['calibrated_filter_rmse_hu']:.2f} HU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("library", type=Path)
    parser.add_argument("--real-pairs", type=Path, help="benchmarks/real_pairs.py --json output")
    parser.add_argument("--simulated", type=Path, nargs="*", default=[], help="evaluate results.json files")
    args = parser.parse_args()
    rows = json.loads(args.real_pairs.read_text())["rows"] if args.real_pairs else []
    reports = [json.loads(p.read_text()) for p in args.simulated]
    for entry in library_models(args.library):
        meta = read_model_meta(entry.folder)
        profiles = meta.get(KERNEL_PROFILES_KEY)
        if not profiles:
            print(f"{entry.folder.name}: no kernel profiles recorded (not trained on measured kernels); no card written")
            continue
        source, target = profiles["source"], profiles["target"]
        card = {
            "kernels": f"{source['vendor']} {source['name']} -> {target['vendor']} {target['name']}",
            "summary": summary(rows, reports, entry.folder, source["name"], target["name"]),
            "method": f"{METHOD}. {learned_part_text(meta)}",
            "training_data": training_data(meta),
            "licence": LICENCE.format(profiles="; ".join(f"{p['name']}: {p['provenance']}" for p in (source, target))),
            "simulated": simulated_text(reports, entry.folder),
            "real_pairs": real_pairs_text(rows, source["name"], target["name"]),
            "intended_use": INTENDED_USE,
            "remake": f"benchmarks/remake_library.sh OUT {source['name']}:{target['name']}",
        }
        assert kernel_family(entry.target) == kernel_family(target["name"]), entry
        meta[MODEL_CARD] = card
        write_model_config(entry.folder, meta)
        print(f"{entry.folder / CONFIG_NAME}: card written")


if __name__ == "__main__":
    main()
