"""Markdown tables of the kernel-gap evaluations (docs/results.md) from `diffusionct evaluate` results.

    .venv/bin/python benchmarks/gap_table.py /work/reports/b30-b50 /work/reports/b10-b70 ...

One table per report folder: per method, the share of tumour features with RE < 0.15, the CCC per feature
class (mean over tumours), RMSE, the high-pass noise ratio and the NPS correlation with the target, and
the seconds per slice of standardization.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLASSES = ("ID", "IH", "GLCM", "GLRLM", "NID", "GOH")


def table(report: Path) -> str:
    """One markdown table per kernel gap of a report folder."""
    data = json.loads((report / "results.json").read_text())
    gaps: dict[tuple, list[dict]] = {}
    for row in data["methods"]:  # rows of reports written before several gaps were evaluated together have no kernels
        gaps.setdefault((row.get("source_kernel"), row.get("target_kernel")), []).append(row)
    cases = {(g["source_kernel"], g["target_kernel"]): g["cases"] for g in data.get("gaps", [])}
    return "\n\n".join(_gap_table(report.name if len(gaps) == 1 else f"{report.name} {src} -> {dst}",
                                  rows, cases.get((src, dst), data.get("cases", [])), data.get("steps"))
                       for (src, dst), rows in gaps.items())


def _gap_table(title: str, rows: list[dict], cases: list, steps) -> str:
    head = ("| method | RE < 0.15 | " + " | ".join(f"CCC {c}" for c in CLASSES)
            + " | RMSE HU | high-pass ratio | NPS corr. | s/slice |")
    lines = [f"**{title}** ({len(cases)} test pairs, steps {steps or 'model default'})", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['method']} | failed: {row['error'][:60]} |")
            continue
        cells = [f"{row['reproducible_share']:.3f}", *(f"{row[f'ccc_{c}_mean']:.3f}" for c in CLASSES),
                 f"{row['rmse_hu']:.1f}", f"{row['high_pass_ratio']:.2f}", f"{row.get('nps_correlation', float('nan')):.3f}",
                 f"{row['seconds_per_slice']:.2f}"]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(arg)) for arg in sys.argv[1:]))
