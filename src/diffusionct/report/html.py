"""The evaluation report: one self-contained HTML page (figures embedded) plus CSV and JSON.

Every number shown in the HTML is formatted by :func:`fmt`, the same function that writes the CSV,
so the two always agree.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from jinja2 import Environment
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from diffusionct import __version__
from diffusionct.io.files import csv_text, write_text_atomic
from diffusionct.methods import DIFFUSIONCT, IDENTITY
from diffusionct.radiomics.compare import write_comparison_files
from diffusionct.radiomics.features import FEATURE_CLASSES
from diffusionct.radiomics.reliability import reliability_csv

WINDOW = (-800, 600)  # the paper's display window (Figure 5)
COLUMNS = ["method", "arm", "source_kernel", "target_kernel", "status", "reproducible_share", "concordant_share",
           "trusted_features", "reliability_auc",
           *[f"ccc_{c}_{s}" for c in FEATURE_CLASSES for s in ("mean", "std")],
           "rmse_hu", "psnr_db", "ssim", "high_pass_ratio", "nps_correlation", "interslice_ratio", "seconds_per_slice",
           "tumours", "features",
           "model", "error"]


def fmt(value) -> str:
    """The one number format of the report and its CSV."""
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def _figure(width: float, height: float) -> Figure:
    """A figure of its own canvas: no pyplot, so the caller's matplotlib backend is left as it was."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def re_curve_figure(results) -> str:
    fig = _figure(6.5, 4)
    ax = fig.add_subplot()
    for r in results:
        if r.comparison is not None:
            ax.plot(r.comparison.thresholds, r.comparison.curve, label=r.name, lw=2.5 if DIFFUSIONCT in r.name else 1.2)
    ax.axvline(0.15, color="grey", linestyle=":", label="RE = 0.15")
    ax.set_xlabel("relative error threshold")
    ax.set_ylabel("reproducible features per tumour (mean)")
    ax.set_title("Reproducible features vs RE threshold (paper Fig. 4)")
    ax.legend(fontsize=8)
    return _png(fig)


def class_shares_figure(results) -> str:
    """Per feature class and result: the share of (tumour, feature) pairs within RE < 0.15 and the share of features
    with CCC >= 0.85 across tumours, side by side (the four arms of a study that pools kernels, when ComBat ran)."""
    ok = [r for r in results if r.comparison is not None]
    fig = _figure(11, 3.6)
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / max(1, len(ok))
    x = np.arange(len(FEATURE_CLASSES))
    for panel, (title, share) in zip(axes, (("RE < 0.15 (per tumour and feature)", lambda c, cls: c.reproducible_share_of(cls)),
                                            ("CCC >= 0.85 (per feature, across tumours)", lambda c, cls: c.concordant_share(cls)))):
        for i, r in enumerate(ok):
            panel.bar(x + (i - (len(ok) - 1) / 2) * width, [share(r.comparison, cls) for cls in FEATURE_CLASSES], width,
                      label=r.name)
        panel.set_xticks(x, FEATURE_CLASSES)
        panel.set_ylim(0, 1)
        panel.set_title(title, fontsize=10)
    axes[0].set_ylabel("share")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", ncol=min(4, max(1, len(ok))), bbox_to_anchor=(0.5, 0.0))
    return _png(fig)


def class_share_rows(results) -> list[dict]:
    """One row per result: its arm, then per class "RE share / CCC share" (what :func:`class_shares_figure` draws)."""
    rows = []
    for r in results:
        row = {"method": r.name, "arm": r.arm}
        for cls in [None, *FEATURE_CLASSES]:
            c = r.comparison
            row[cls or "all"] = "failed" if c is None else f"{fmt(c.reproducible_share_of(cls))} / {fmt(c.concordant_share(cls))}"
        rows.append(row)
    return rows


def reliability_rows(results) -> list[dict]:
    """Per standardization: the features it can be trusted on, and how the flags fare against the target here."""
    rows = []
    for r in results:
        if r.flag_check is None:
            continue
        check = r.flag_check
        rows.append({"method": r.name, "features": check.features, "trusted": check.trusted,
                     "flagged": check.flagged, "miss_share_trusted": check.miss_share_trusted,
                     "miss_share_flagged": check.miss_share_flagged, "auc": check.auc,
                     "trusted_by_class": {cls: [f.feature for f in r.reliability if not f.flagged and f.feature_class == cls]
                                          for cls in FEATURE_CLASSES}})
    return rows


DIVERGED_FACTOR = 10.0  # a method whose noise power is this far from the target's is drawn apart, not on the axis


def nps_outliers(results, target_nps: dict | None) -> dict[str, str]:
    """Methods whose NPS cannot share a readable linear axis with the target's: method -> why."""
    if not target_nps:
        return {}
    reference = np.nanmax(np.asarray(target_nps["nps"], float))
    out = {}
    for r in results:
        if not r.nps:
            continue
        values = np.asarray(r.nps["nps"], float)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            out[r.name] = "no finite NPS"
        elif finite.max() > DIVERGED_FACTOR * reference:
            out[r.name] = f"peak {finite.max() / reference:.3g}x the target's"
        elif finite.max() < reference / DIVERGED_FACTOR:
            out[r.name] = f"peak {finite.max() / reference:.2g}x the target's"
    return out


def nps_figure(results, target_nps: dict | None) -> str:
    """NPS on a linear axis from 0 cycles/mm, the target bold; methods off the target's scale are named in the
    title instead of flattening every other curve."""
    fig = _figure(6.5, 4)
    ax = fig.add_subplot()
    apart = nps_outliers(results, target_nps)
    for r in results:
        if r.nps and r.name not in apart:
            ax.plot(r.nps["frequency"], r.nps["nps"], label=r.name, lw=2.0 if DIFFUSIONCT in r.name else 1.2)
    if target_nps:
        ax.plot(target_nps["frequency"], target_nps["nps"], color="black", lw=3, label="standard (target)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("NPS of the high-pass image (HU$^2$ mm$^2$)")
    title = "Noise power spectra in soft tissue"
    if apart:
        title += "\noff the scale (not drawn): " + "; ".join(f"{k} ({v})" for k, v in apart.items())
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


def tumour_panels(cases, results, max_tumours: int = 6) -> list[tuple[str, str]]:
    """Per tumour: standard, input and each method in [-800, 600] HU, the tumour magnified, GLCM CCC below."""
    panels = []
    ok = [r for r in results if r.comparison is not None and r.outputs]  # ComBat changes features, not images
    for case in cases:
        for label in np.unique(case.labels[case.labels > 0]):
            if len(panels) >= max_tumours:
                return panels
            mask = case.labels == label
            z = int(np.argmax(mask.sum(axis=(1, 2))))
            rows, cols = np.nonzero(mask[z])
            cy, cx = int(rows.mean()), int(cols.mean())
            half = max(12, int(max(np.ptp(rows), np.ptp(cols))))
            key = f"{case.name}:{label}"
            images = [("standard", case.target.hu[z], None)] + [
                (r.name, r.outputs[case.name][z], r.comparison.ccc_per_tumour.get(key, {}).get("GLCM")) for r in ok]
            fig = _figure(2.3 * len(images), 4.8)
            axes = np.atleast_2d(fig.subplots(2, len(images))).reshape(2, len(images))
            for i, (name, image, glcm) in enumerate(images):
                axes[0, i].imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
                axes[0, i].add_patch(Circle((cx, cy), half, color="red", fill=False, lw=1))
                axes[0, i].set_title(name, fontsize=9)
                r0, c0 = max(0, cy - half), max(0, cx - half)
                axes[1, i].imshow(image[r0:cy + half, c0:cx + half], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
                for spine in axes[1, i].spines.values():
                    spine.set_color("green")
                axes[1, i].set_xlabel("" if glcm is None else f"GLCM CCC {fmt(glcm)}", fontsize=9)
                for ax in axes[:, i]:
                    ax.set_xticks([])
                    ax.set_yticks([])
            fig.suptitle(f"{key} (slice {z})", fontsize=10)
            panels.append((key, _png(fig)))
    return panels


def _table(rows: list[dict], columns: list[str]) -> dict:
    """A table for the page template: its header and its cells, each formatted by :func:`fmt`."""
    return {"columns": columns, "rows": [[fmt(row.get(c)) for c in columns] for row in rows]}


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    write_text_atomic(path, csv_text(columns, ([fmt(row.get(c)) for c in columns] for row in rows)))


def ccc_rows(results) -> list[dict]:
    rows = []
    for r in results:
        row = {"method": r.name}
        for cls in FEATURE_CLASSES:
            if r.comparison is not None:
                values = r.comparison.ccc_table[cls]
                row[cls] = f"{fmt(values['mean'])} ± {fmt(values['std'])}"
            else:
                row[cls] = "failed"
        rows.append(row)
    return rows


def summary_lines(rows: list[dict], results) -> list[str]:
    """A few sentences at the top: who wins on what, in the run's own numbers."""
    ok = [row for row in rows if row.get("status") == "ok" and np.isfinite(row.get("reproducible_share", np.nan))]
    if not ok:
        return ["No method produced results."]
    best = max(ok, key=lambda row: row["reproducible_share"])
    lines = [f"Most reproducible features (RE < 0.15): {best['method']} ({100 * best['reproducible_share']:.1f} %)."]
    baseline = next((row for row in ok if row["method"] in ("input", IDENTITY)), None)
    ours = next((row for row in ok if DIFFUSIONCT in row["method"]), None)
    if ours is not None and ours is not best:
        lines.append(f"DiffusionCT: {100 * ours['reproducible_share']:.1f} %, "
                     f"{100 * (best['reproducible_share'] - ours['reproducible_share']):.1f} points behind {best['method']}.")
    if baseline is not None:
        lines.append(f"Unchanged input: {100 * baseline['reproducible_share']:.1f} %.")
    from diffusionct.evaluate import ARMS

    combat = [row for row in ok if row.get("arm") in ARMS[2:]]  # ComBat, alone or on top of a method
    if combat:
        lines.append("With ComBat (fitted on other patients): " + ", ".join(
            f"{row['method']} {100 * row['reproducible_share']:.1f} %" for row in combat) + ".")
    trusted = [r for r in results if r.flag_check is not None]
    if trusted:
        lines.append("Features to trust (moved by at most 0.15): " + ", ".join(
            f"{r.name} {r.flag_check.trusted} of {r.flag_check.features}" for r in trusted) + ".")
    winners = []
    for cls in FEATURE_CLASSES:
        values = [(row.get(f"ccc_{cls}_mean", np.nan), row["method"]) for row in ok]
        values = [v for v in values if np.isfinite(v[0])]
        if values:
            top = max(values)
            winners.append(f"{cls} {top[1]} ({top[0]:.3f})")
    lines.append("Highest CCC per class: " + ", ".join(winners) + ".")
    failed = [r.name for r in results if r.comparison is None]
    if failed:
        lines.append("Failed: " + ", ".join(failed) + " (see the table).")
    return lines


def _gap_section(out: Path, gap, rows: list[dict], many: bool) -> dict:
    """The tables, figures and tumour panels of one kernel gap, for the page template."""
    from diffusionct.evaluate import target_nps_curve

    ccc = ccc_rows(gap.results)
    prefix = f"{gap.slug}-" if many else ""
    write_csv(out / f"{prefix}ccc_table.csv", ccc, ["method", *FEATURE_CLASSES])
    for r in gap.results:
        if r.comparison is not None:
            folder = out / "methods" / (f"{gap.slug}/{r.name}" if many else r.name)
            write_comparison_files(r.comparison, folder)
            if r.reliability:
                write_text_atomic(folder / "reliability.csv", reliability_csv(r.reliability))
    reliability = reliability_rows(gap.results)
    reliability_columns = ["method", "features", "trusted", "flagged", "miss_share_trusted", "miss_share_flagged", "auc"]
    image_columns = ["method", "status", "rmse_hu", "psnr_db", "ssim", "high_pass_ratio", "nps_correlation",
                     "interslice_ratio", "seconds_per_slice"]
    return {"name": gap.name, "slug": gap.slug, "count": len(gap.cases), "summary": summary_lines(rows, gap.results),
            "ccc": _table(ccc, ["method", *FEATURE_CLASSES]),
            "headline": _table(rows, [c for c in COLUMNS if c not in ("model", "source_kernel", "target_kernel")]),
            "re_curve": re_curve_figure(gap.results), "images": _table(rows, image_columns),
            "nps": nps_figure(gap.results, target_nps_curve(gap.cases)), "panels": tumour_panels(gap.cases, gap.results),
            "shares": _table(class_share_rows(gap.results), ["method", "arm", "all", *FEATURE_CLASSES]),
            "shares_figure": class_shares_figure(gap.results),
            "reliability": _table(reliability, reliability_columns),
            "trusted": [(row["method"], {cls: ", ".join(names) or "none" for cls, names in row["trusted_by_class"].items()})
                        for row in reliability],
            "notes": [note for r in gap.results for note in r.notes]}


# Every value reaches the page through this template, which escapes it (kernel names, series descriptions, paths and
# notes come from the user's files); the figures are data URIs of PNGs made here.
_PAGE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string("""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ title }}</title><style>{{ style }}</style></head><body>
<h1>{{ title }}</h1>
<p>diffusionct {{ version }};
{%- for gap in gaps %} {{ gap.name }}: {{ gap.count }} test series{{ "," if not loop.last }}{% endfor -%}
; tumours and features per method in the tables below.</p>
<div class="summary">
{% for gap in gaps %}{% if many %}<p><b>{{ gap.name }}</b> ({{ gap.count }} test series)</p>{% endif %}
{% for line in gap.summary %}<p>{{ line }}</p>{% endfor %}
{% endfor %}</div>
{% for note in notes %}<p class="note">{{ note }}</p>{% endfor %}
{% macro table(t) %}<table><thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in t.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>{% endmacro %}
{% set h = "h3" if many else "h2" %}{% set h_panel = "h4" if many else "h3" %}
{% for gap in gaps %}
{% if many %}<h2 id="{{ gap.slug }}">Kernel gap {{ gap.name }}</h2>{% endif %}
<{{ h }}>CCC per feature class (mean ± SD over tumours; paper Table 1)</{{ h }}>{{ table(gap.ccc) }}
<{{ h }}>Reproducible features (RE &lt; 0.15) and all headline numbers</{{ h }}>{{ table(gap.headline) }}
{% for note in gap.notes %}<p class="note">{{ note }}</p>{% endfor %}
<{{ h }}>Shares per feature class: RE &lt; 0.15 / CCC &ge; 0.85</{{ h }}>
<p class="note">RE: share of (tumour, feature) pairs within 0.15 of the target kernel's value. CCC: share of features
whose concordance across tumours with the target kernel's values is at least 0.85 (Choe et al. 2019). ComBat rows,
when present, are fitted on the training set's tumours (other patients) and applied to these.</p>
{{ table(gap.shares) }}<img src="{{ gap.shares_figure }}">
{% if gap.reliability.rows %}<{{ h }}>Features a study can trust</{{ h }}>
<p class="note">A feature is flagged when the standardization moved it by more than 0.15 of its source value (median
over the tumours; decided from the source and standardized images alone, as on a study without target images). Here
the target is known, so the flags are checked: the share of (tumour, feature) pairs off the target by RE &ge; 0.15
among trusted and flagged features, and the ROC AUC of the median change for a feature that misses on most tumours.</p>
{{ table(gap.reliability) }}
{% for method, classes in gap.trusted %}<details><summary>{{ method }}: trusted features by class</summary>
{% for cls, names in classes.items() %}<p class="note"><b>{{ cls }}</b>: {{ names }}</p>{% endfor %}</details>
{% endfor %}{% endif %}
<{{ h }}>Reproducible features over RE thresholds</{{ h }}><img src="{{ gap.re_curve }}">
<{{ h }}>Image metrics in HU (body; high-pass ratio and NPS in soft tissue)</{{ h }}>{{ table(gap.images) }}
<img src="{{ gap.nps }}">
<{{ h }}>Tumours (window [-800, 600] HU; paper Fig. 5)</{{ h }}>
{% for name, src in gap.panels %}<{{ h_panel }}>{{ name }}</{{ h_panel }}><img src="{{ src }}">{% endfor %}
{% endfor %}
</body></html>
""")
STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
         "font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
         "th{background:#eee}.note{color:#444}img{max-width:100%}"
         ".summary{background:#f4f8ff;border-left:4px solid #36c;padding:0.3em 1em}")


def write_report(out: Path, gaps, rows: dict[str, list[dict]], title: str, notes: list[str]) -> Path:
    """Write ``report.html``, ``methods.csv``, the CCC table(s) and per-method comparison files into ``out``:
    one section per kernel gap, each with its summary at the top of the page."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "methods.csv", [row for gap in gaps for row in rows[gap.name]], COLUMNS)
    many = len(gaps) > 1
    sections = [_gap_section(out, gap, rows[gap.name], many) for gap in gaps]
    page = _PAGE.render(title=title, style=STYLE, version=__version__, gaps=sections, many=many, notes=notes)
    write_text_atomic(out / "report.html", page)
    return out / "report.html"
