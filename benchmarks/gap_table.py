"""Markdown tables of the kernel-gap evaluations (docs/history/results-analytic-library.md) from `diffusionct evaluate` results.

    .venv/bin/python benchmarks/gap_table.py REPORTS/b30-b50 REPORTS/b10-b70 ...
    .venv/bin/python benchmarks/gap_table.py --merge --digits 5 REPORT REPORT ...  [--cases case_000,case_001]

One table per report folder: per method, the share of tumour features with RE < 0.15, the CCC per feature
class (mean over tumours), RMSE, the high-pass noise ratio and the NPS correlation with the target, and
the seconds per slice of standardization. ``--merge``: the rows of several reports of one test set (methods
evaluated in separate runs) in one table per gap, the unchanged input once, a method name that recurs labelled with
its report's folder. ``--cases``: the share and the CCCs again over the tumours of
these cases only, from each method's per-tumour tables (the image metrics are left out: they are kept per report).
``--bootstrap METHOD``: below each table, every method's share with a 95 % interval and METHOD's paired difference
to each other method, resampling the tumours (10,000 resamples, seed 0): how far a test set of this many tumours
decides between them (docs/history/results-analytic-library.md, ninth run). Several methods separated by commas: per gap the first that its
table holds (a report of several gaps evaluated together, one model each).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from diffusionct.io.manifest import gap_slug
from diffusionct.radiomics.metrics import REPRODUCIBLE_RE

CLASSES = ("ID", "IH", "GLCM", "GLRLM", "NID", "GOH")


def table(reports: list[Path], cases: list[str] | None = None, digits: int = 3, bootstrap: str | None = None) -> str:
    """One markdown table per kernel gap of these report folders (of one test set)."""
    manifests, steps = set(), set()
    gaps: dict[tuple, list[dict]] = {}
    gap_cases: dict[tuple, list] = {}
    for report in reports:
        data = json.loads((report / "results.json").read_text())
        manifests.add(data.get("test_manifest"))
        steps.add(data.get("steps"))
        for row in data["methods"]:  # rows of reports written before several gaps were evaluated together have no kernels
            gap = (row.get("source_kernel"), row.get("target_kernel"))
            seen = [r["label"] for r in gaps.get(gap, [])]
            if row["method"] in seen and row.get("model") == "-":
                continue  # the unchanged input of each merged report: the same row
            label = row["method"] if row["method"] not in seen else f"{row['method']} ({report.name})"
            row = {**row, "report": report, "label": label}
            if (cases or bootstrap) and row["status"] == "ok":  # read once, for the subset's share and the resampling
                row["per_tumour"] = _reproducible_per_tumour(row, cases)
            gaps.setdefault(gap, []).append(_on_cases(row, cases) if cases else row)
            gap_cases[gap] = next((g["cases"] for g in data.get("gaps", []) if (g["source_kernel"], g["target_kernel"]) == gap),
                                  data.get("cases", []))
    if len(manifests) > 1:
        raise SystemExit(f"the reports were evaluated on different test sets: {sorted(map(str, manifests))}")
    name = "+".join(report.name for report in reports)
    shown_steps = next(iter(steps)) if len(steps) == 1 else "per report"
    return "\n\n".join(_gap_table(name if len(gaps) == 1 else f"{name} {src} -> {dst}",
                                  rows, [c for c in gap_cases[(src, dst)] if _selected(c, cases)],
                                  shown_steps, digits)
                       + (bootstrap_lines(rows, bootstrap) if bootstrap else "")
                       for (src, dst), rows in gaps.items())


def _selected(name: str, cases: list[str] | None) -> bool:
    """Whether a tumour (``case/series:label``) or test pair (``case/series``) is of one of ``cases``."""
    return cases is None or name.split("/")[0] in cases


def _reproducible_per_tumour(row: dict, cases: list[str] | None) -> dict[str, tuple[int, int]]:
    """Per tumour of ``cases``: (features with RE < 0.15, features), from the method's relative_error.csv (a NaN RE
    is not reproducible, as in the report)."""
    counts: dict[str, tuple[int, int]] = {}
    with open(_per_tumour_table(row, "relative_error.csv")) as f:
        for r in csv.DictReader(f):
            if _selected(r["tumour"], cases):
                good, total = counts.get(r["tumour"], (0, 0))
                counts[r["tumour"]] = (good + (float(r["re"]) < REPRODUCIBLE_RE), total + 1)
    return counts


def _per_tumour_table(row: dict, name: str) -> Path:
    methods = row["report"] / "methods"
    gap = gap_slug(str(row.get("source_kernel")), str(row.get("target_kernel")))  # a report of several gaps: one folder each
    path = (methods / gap if (methods / gap).is_dir() else methods) / row["method"] / name
    if not path.is_file():
        raise SystemExit(f"{path} is missing: --cases and --bootstrap read the report's per-method tables (methods/), "
                         "which the copies in docs/reports leave out; run `diffusionct evaluate` again to remake them")
    return path


def _on_cases(row: dict, cases: list[str]) -> dict:
    """``row`` with its share and class CCCs over the tumours of ``cases`` (its per-tumour tables); image metrics left out."""
    if row["status"] != "ok":
        return row
    with open(_per_tumour_table(row, "ccc_per_tumour.csv")) as f:
        ccc = [r for r in csv.DictReader(f) if _selected(r["tumour"], cases)]
    subset = {key: float("nan") for key in ("rmse_hu", "high_pass_ratio", "nps_correlation", "seconds_per_slice")}
    good, total = np.array(list(row["per_tumour"].values())).sum(axis=0)
    subset["reproducible_share"] = good / total
    for c in CLASSES:
        values = [float(r[c]) for r in ccc if r[c] not in ("", "nan")]
        subset[f"ccc_{c}_mean"] = sum(values) / len(values)
    return {**row, **subset}


def bootstrap_lines(rows: list[dict], references: str, resamples: int = 10_000) -> str:
    """Shares with 95 % intervals and the reference's paired differences, the tumours resampled with replacement.
    ``references``: method names separated by commas; the first one in this gap's table is the reference (a report of
    several gaps has one model per gap)."""
    counts = {row["label"]: row["per_tumour"] for row in rows if row["status"] == "ok"}
    reference = next((m for m in references.split(",") if m in counts), None)
    if reference is None:
        raise SystemExit(f"--bootstrap {references}: no such method in the table; methods: {', '.join(counts)}")
    tumours = sorted(counts[reference])
    draws = np.random.default_rng(0).integers(0, len(tumours), (resamples, len(tumours)))

    def good_total(method: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = np.array([counts[method][t] for t in tumours], dtype=float)
        return pairs[:, 0], pairs[:, 1]

    lines = ["", "", f"Tumours resampled ({len(tumours)}, {resamples:,} times): share, 95 % interval; {reference} minus the method "
             "(paired), 95 % interval, tumours where it keeps more / fewer features", ""]
    ref_good, total = good_total(reference)
    for method in counts:
        good, _ = good_total(method)
        share = np.percentile(good[draws].sum(1) / total[draws].sum(1), [2.5, 97.5])
        line = f"- {method}: {good.sum() / total.sum():.4f} ({share[0]:.4f}-{share[1]:.4f})"
        if method != reference:
            diff = (ref_good - good)[draws].sum(1) / total[draws].sum(1)
            low, high = np.percentile(diff, [2.5, 97.5])
            line += (f"; {reference} {(ref_good - good).sum() / total.sum():+.4f} ({low:+.4f} to {high:+.4f}), "
                     f"{int((ref_good > good).sum())} / {int((ref_good < good).sum())}")
        lines.append(line)
    return "\n".join(lines)


def _gap_table(title: str, rows: list[dict], cases: list, steps, digits: int) -> str:
    head = ("| method | RE < 0.15 | " + " | ".join(f"CCC {c}" for c in CLASSES)
            + " | RMSE HU | high-pass ratio | NPS corr. | s/slice |")
    lines = [f"**{title}** ({len(cases)} test pairs, steps {steps or 'model default'})", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['label']} | failed: {row['error'][:60]} |")
            continue
        cells = [f"{row['reproducible_share']:.{digits}f}", *(f"{row[f'ccc_{c}_mean']:.{digits}f}" for c in CLASSES),
                 f"{row['rmse_hu']:.1f}", f"{row['high_pass_ratio']:.2f}", f"{row.get('nps_correlation', float('nan')):.3f}",
                 f"{row['seconds_per_slice']:.2f}"]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--merge", action="store_true", help="one table per gap over all the reports")
    parser.add_argument("--cases", help="comma-separated case names: the share and CCCs over their tumours only")
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--bootstrap", metavar="METHOD", help="shares' intervals and METHOD's paired differences "
                        "(several separated by commas: per gap the first in its table)")
    args = parser.parse_args()
    cases = args.cases.split(",") if args.cases else None
    groups = [args.reports] if args.merge else [[report] for report in args.reports]
    print("\n\n".join(table(group, cases, args.digits, args.bootstrap) for group in groups))


if __name__ == "__main__":
    main()
