"""Evaluation to a report folder: the numbers (evaluate.py) and the pages (report/)."""

from __future__ import annotations

from pathlib import Path

from diffusionct.evaluate import image_metrics_summary, evaluate, results_table, save_results_json
from diffusionct.report.html import write_report


def evaluate_to_report(manifest: Path, models: list[Path], out: Path, names: list[str] | None = None, steps: int | None = None,
                       seed: int = 0, device: str = "auto", workers: int | None = None, max_cases: int | None = None,
                       title: str = "DiffusionCT evaluation", notes: list[str] | None = None,
                       params: Path | None = None) -> Path:
    """Evaluate ``models`` on a test manifest and write report.html, methods.csv, results.json into ``out``."""
    from diffusionct.radiomics.features import FeatureSettings

    cases, _, results = evaluate(manifest, models, steps=steps, seed=seed, device=device, workers=workers,
                                 max_cases=max_cases, names=names, settings=FeatureSettings.load(params))
    rows = results_table(results)
    _, target_nps = image_metrics_summary(cases, {c.name: c.target.hu for c in cases})
    report = write_report(Path(out), cases, results, rows, title, notes or [], target_nps)
    save_results_json(Path(out) / "results.json", rows, {"test_manifest": str(manifest), "cases": [c.name for c in cases],
                                                         "steps": steps, "seed": seed})
    return report
