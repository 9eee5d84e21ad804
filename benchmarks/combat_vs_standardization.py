"""Four arms on one simulated multi-site study: unchanged, image standardization, ComBat, and both.

Tumours scanned with several source kernels are judged against the same tumours' features in the standard (target)
kernel. ComBat (onto the target kernel as its reference batch, `diffusionct harmonize fit --reference`) is fitted on
the training patients' tumours and applied to the test patients' (disjoint phantoms); "both" fits ComBat on the
training tumours' *standardized* features. Image standardization is the shipped library's gap of each source kernel.
Per arm: the share of (tumour, feature) pairs within RE < 0.15 of the target's value and the share of features whose
CCC across the test tumours is >= 0.85 (Choe et al. 2019), pooled over the source kernels and per feature class.

    .venv/bin/python benchmarks/combat_vs_standardization.py --train TRAIN --test TEST \
        [--library src/diffusionct/data/models] [--sources B10f,B30f,B50f] [--target B70f] [--json OUT]

TRAIN and TEST are simulated sets (`diffusionct simulate`, their manifests record tumour masks), of different phantoms.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from diffusionct.evaluate import load_test_cases, tumour_features
from diffusionct.harmonization import ComBat, harmonizable_columns
from diffusionct.radiomics.features import FEATURE_CLASSES, FeatureSettings, feature_class
from diffusionct.radiomics.metrics import CONCORDANT_CCC, REPRODUCIBLE_RE, per_feature_ccc, relative_error
from diffusionct.standardize import Standardizer

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("unchanged", "standardized", "ComBat", "both")


def kernel_features(manifest: Path, source: str, target: str, model: Standardizer, settings: FeatureSettings, seed: int):
    """(source features, standardized features, target features) of every tumour of the source -> target pairs, keyed
    by source kernel and tumour."""
    cases = load_test_cases(manifest, f"SIM_{source.upper()}", f"SIM_{target.upper()}")
    unchanged = tumour_features(cases, {c.name: c.source.hu for c in cases}, settings, None)
    standardized = {c.name: model.standardize_slices(c.source.hu, seed=seed, pixel_mm=c.source.pixel_mm) for c in cases}
    return (unchanged, tumour_features(cases, standardized, settings, None),
            tumour_features(cases, {c.name: c.target.hu for c in cases}, settings, None))


def table(features: dict[str, dict[str, float]], keys: list[str], names: list[str]) -> np.ndarray:
    return np.array([[features[k][n] for n in names] for k in keys], dtype=np.float64)


def scores(test: np.ndarray, standard: np.ndarray, names: list[str]) -> dict:
    re = relative_error(standard, test)
    ccc = per_feature_ccc(standard, test)
    out = {"re_share": float((re < REPRODUCIBLE_RE).mean()), "ccc_share": float(np.mean(ccc >= CONCORDANT_CCC))}
    for cls in FEATURE_CLASSES:
        columns = [j for j, n in enumerate(names) if feature_class(n) == cls]
        if columns:
            out[cls] = {"re_share": float((re[:, columns] < REPRODUCIBLE_RE).mean()),
                        "ccc_share": float(np.mean(ccc[columns] >= CONCORDANT_CCC)), "features": len(columns)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--library", type=Path, default=ROOT / "src" / "diffusionct" / "data" / "models")
    parser.add_argument("--sources", default="B10f,B30f,B50f")
    parser.add_argument("--target", default="B70f")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = FeatureSettings.load()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    sets = {}
    for source in sources:
        model = Standardizer.load(args.library / f"siemens-{source.lower()}-{args.target.lower()}", "cpu")
        for split in ("train", "test"):
            logging.info("%s -> %s, %s patients: features of the source, standardized and target images", source, args.target, split)
            sets[source, split] = kernel_features(getattr(args, split), source, args.target, model, settings, args.seed)
    names = sorted(set.intersection(*(set(f) for s in sets.values() for part in s for f in part.values())))
    tables = {}
    for split in ("train", "test"):
        keys = {s: sorted(set(sets[s, split][0]) & set(sets[s, split][1]) & set(sets[s, split][2])) for s in sources}
        tables[split] = {arm: np.vstack([table(sets[s, split][i], keys[s], names) for s in sources])
                         for arm, i in (("unchanged", 0), ("standardized", 1), ("target", 2))}
        tables[split]["batch"] = [s for s in sources for _ in keys[s]]
    columns = harmonizable_columns([tables[split][arm] for split in tables for arm in ("unchanged", "standardized", "target")])
    names = [names[j] for j in columns]
    for split in tables:
        for arm in ("unchanged", "standardized", "target"):
            tables[split][arm] = tables[split][arm][:, columns]
    train, test = tables["train"], tables["test"]
    target_batch = [args.target] * len(train["batch"])

    def combat(arm: str) -> ComBat:  # fitted on the training tumours: the arm's features beside the target kernel's
        return ComBat.fit(np.vstack([train[arm], train["target"]]), train["batch"] + target_batch, names, reference=args.target)

    arms = {"unchanged": test["unchanged"], "standardized": test["standardized"],
            "ComBat": combat("unchanged").apply(test["unchanged"], test["batch"]),
            "both": combat("standardized").apply(test["standardized"], test["batch"])}
    results = {"sources": sources, "target": args.target, "features": len(names),
               "train_tumours": len(train["batch"]), "test_tumours": len(test["batch"]), "arms": {}}
    for arm, values in arms.items():
        results["arms"][arm] = {"pooled": scores(values, test["target"], names)}
        for source in sources:
            rows = [i for i, b in enumerate(test["batch"]) if b == source]
            results["arms"][arm][source] = scores(values[rows], test["target"][rows], names)
    print(f"{len(names)} features; {results['train_tumours']} training and {results['test_tumours']} test tumour scans "
          f"({', '.join(sources)} -> {args.target})")
    print(f"{'arm':14s} {'RE<0.15':>8s} {'CCC>=0.85':>10s}   per source kernel (RE / CCC)")
    for arm in ARMS:
        pooled = results["arms"][arm]["pooled"]
        per = "  ".join(f"{s} {results['arms'][arm][s]['re_share']:.3f}/{results['arms'][arm][s]['ccc_share']:.3f}" for s in sources)
        print(f"{arm:14s} {pooled['re_share']:8.3f} {pooled['ccc_share']:10.3f}   {per}")
    for cls in FEATURE_CLASSES:
        print(f"  {cls:5s} " + "  ".join(f"{arm} {results['arms'][arm]['pooled'][cls]['re_share']:.3f}/"
                                         f"{results['arms'][arm]['pooled'][cls]['ccc_share']:.3f}" for arm in ARMS))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
