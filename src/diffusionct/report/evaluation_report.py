"""Evaluation to a report folder: the numbers (evaluate.py) and the pages (report/)."""

from __future__ import annotations

from pathlib import Path

from diffusionct.evaluate import evaluate, results_table, save_results_json
from diffusionct.report.html import write_report


def evaluate_to_report(manifest: Path, models: list[Path], out: Path, names: list[str] | None = None, steps: int | None = None,
                       seed: int = 0, device: str = "auto", workers: int | None = None, max_cases: int | None = None,
                       title: str = "DiffusionCT evaluation", notes: list[str] | None = None,
                       params: Path | None = None, temperature: float | None = None,
                       paths_under: Path | None = None, combat_train: Path | None = None) -> Path:
    """Evaluate ``models`` on a test manifest and write report.html, methods.csv, results.json into ``out``
    (one section per kernel gap when the models serve several). Paths under ``paths_under`` are written relative to
    it (the demo's folder, written under a temporary name and renamed when done)."""
    from diffusionct.radiomics.features import FeatureSettings

    gaps = evaluate(manifest, models, steps=steps, seed=seed, device=device, workers=workers, max_cases=max_cases,
                    names=names, settings=FeatureSettings.load(params), temperature=temperature,
                    combat_train=combat_train)
    rows = {gap.name: results_table(gap) for gap in gaps}
    for row in (row for gap_rows in rows.values() for row in gap_rows):
        row["model"] = _shown_path(row["model"], paths_under)
    report = write_report(Path(out), gaps, rows, title, notes or [])
    save_results_json(Path(out) / "results.json", [row for gap in gaps for row in rows[gap.name]], {
        "test_manifest": _shown_path(manifest, paths_under),
        "combat_train_manifest": None if combat_train is None else _shown_path(combat_train, paths_under),
        "steps": steps, "temperature": temperature, "seed": seed,
        "cases": [c.name for c in gaps[0].cases],  # the first gap's, as before several gaps were reported together
        "gaps": [{"source_kernel": g.source_kernel, "target_kernel": g.target_kernel, "cases": [c.name for c in g.cases]}
                 for g in gaps]})
    return report


def _shown_path(path: str | Path, under: Path | None) -> str:
    if under is not None and Path(path).is_relative_to(under):
        return str(Path(path).relative_to(under))
    return str(path)
