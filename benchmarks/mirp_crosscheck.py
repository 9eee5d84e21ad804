"""The feature engine against mirp, the IBSI reference implementation, on real tumours in every IBSI 1 configuration.

For each case (``IMAGE MASK`` NIfTI pairs; by default the IBSI digital phantom and the six sarcoma CTs of
``../shared/data/sts-ct``) and each preset ``ibsi-a`` .. ``ibsi-e``, both engines compute every IBSI feature under
the configuration's own settings; every feature both write (by IBSI tag) is compared. Agreement: within 1 % of
mirp's value or half a unit of its third significant digit (the rounding of IBSI's reference tables), whichever is
larger. Requires ``pip install mirp==2.7.0`` (the test extra installs it).

    .venv/bin/python benchmarks/mirp_crosscheck.py [--cases DIR ...] [--presets ibsi-a ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path

from diffusionct.radiomics.ibsi import rounding_tolerance

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PRESETS = ("ibsi-a", "ibsi-b", "ibsi-c", "ibsi-d", "ibsi-e")
RELATIVE = 0.01

_TEXTURE_2D = {"glcm_spatial_method": ["2d_average", "2d_slice_merge", "2.5d_direction_merge", "2.5d_volume_merge"],
               "glrlm_spatial_method": ["2d_average", "2d_slice_merge", "2.5d_direction_merge", "2.5d_volume_merge"],
               **{f"{family}_spatial_method": ["2d", "2.5d"] for family in ("glszm", "gldzm", "ngtdm", "ngldm")}}
_TEXTURE_3D = {"glcm_spatial_method": ["3d_average", "3d_volume_merge"], "glrlm_spatial_method": ["3d_average", "3d_volume_merge"],
               **{f"{family}_spatial_method": ["3d"] for family in ("glszm", "gldzm", "ngtdm", "ngldm")}}
_COMMON = {"image_modality": "CT", "base_feature_families": "all",
           "anti_aliasing": False, "roi_spline_order": 1, "roi_interpolation_mask_inclusion_threshold": 0.5}
# each IBSI 1 configuration in mirp's terms, as the presets in src/diffusionct/data/ibsi/ set it
MIRP_SETTINGS = {
    "ibsi-a": {**_TEXTURE_2D, "ivh_discretisation_method": "none", "by_slice": True, "resegmentation_intensity_range": [-500.0, 400.0],
               "base_discretisation_method": "fixed_bin_size", "base_discretisation_bin_width": 25.0},
    "ibsi-b": {**_TEXTURE_2D, "ivh_discretisation_method": "none", "by_slice": True, "new_spacing": 2.0, "spline_order": 1,
               "resegmentation_intensity_range": [-500.0, 400.0],
               "base_discretisation_method": "fixed_bin_number", "base_discretisation_n_bins": 32},
    "ibsi-c": {**_TEXTURE_3D, "new_spacing": 2.0, "spline_order": 1, "resegmentation_intensity_range": [-1000.0, 400.0],
               "base_discretisation_method": "fixed_bin_size", "base_discretisation_bin_width": 25.0,
               "ivh_discretisation_method": "fixed_bin_size", "ivh_discretisation_bin_width": 2.5},
    "ibsi-d": {**_TEXTURE_3D, "new_spacing": 2.0, "spline_order": 1, "resegmentation_sigma": 3.0,
               "base_discretisation_method": "fixed_bin_number", "base_discretisation_n_bins": 32,
               "ivh_discretisation_method": "fixed_bin_number", "ivh_discretisation_n_bins": 1000},
    "ibsi-e": {**_TEXTURE_3D, "new_spacing": 2.0, "spline_order": 3, "resegmentation_intensity_range": [-1000.0, 400.0],
               "resegmentation_sigma": 3.0, "base_discretisation_method": "fixed_bin_number", "base_discretisation_n_bins": 32,
               "ivh_discretisation_method": "fixed_bin_number", "ivh_discretisation_n_bins": 1000},
}
_AGGREGATION = {"2d_avg": "2D_avg", "2d_s_mrg": "2D_comb", "2.5d_d_mrg": "2_5D_avg", "2.5d_v_mrg": "2_5D_comb",
                "3d_avg": "3D_avg", "3d_v_mrg": "3D_comb", "2d": "2D", "2.5d": "2_5D", "3d": "3D"}
_FAMILIES = ("morph_", "loc_", "stat_", "ih_", "ivh_", "cm_", "rlm_", "szm_", "dzm_", "ngt_", "ngl_")


def default_cases() -> list[tuple[str, Path, Path]]:
    cases = [("ibsi-digital-phantom", SHARED / "ibsi-digital-phantom" / "phantom.nii.gz",
              SHARED / "ibsi-digital-phantom" / "mask.nii.gz")]
    for case in sorted((SHARED / "sts-ct").glob("STS_*")):
        cases.append((case.name, case / "nifti" / "CT_image.nii.gz", case / "nifti" / "CT_mask.nii.gz"))
    return [c for c in cases if c[1].is_file() and c[2].is_file()]


def mirp_tag(column: str) -> str | None:
    """mirp's column name as the IBSI tag (``cm_contrast_d1_2d_s_mrg`` -> ``cm_contrast_2D_comb``), or None."""
    if not column.startswith(_FAMILIES):
        return None
    name = re.sub(r"_fbs_w[0-9.]+$|_fbn_n[0-9]+$", "", column)  # the discretisation, which the preset fixes
    name = re.sub(r"_d1(?=_)|_a0\.0(?=_)|_d1\.0(?=_)", "", name)
    for suffix, tag in sorted(_AGGREGATION.items(), key=lambda kv: -len(kv[0])):
        if name.endswith("_" + suffix):
            return name[: -len(suffix)] + tag
    return name


def mirp_values(image: Path, mask: Path, preset: str) -> dict[str, float]:
    from mirp import extract_features  # noqa: PLC0415 - the reference is an optional test dependency

    logging.getLogger("mirp").setLevel(logging.WARNING)
    table = extract_features(image=str(image), mask=str(mask), **_COMMON, **MIRP_SETTINGS[preset])[0]
    out = {}
    for column in table.columns:
        tag = mirp_tag(column)
        try:
            value = float(table[column].iloc[0])  # mirp writes most features as numpy float32
        except (TypeError, ValueError):
            continue
        if tag is not None and math.isfinite(value):
            out[tag] = value
    return out


def our_values(image: Path, mask: Path, preset: str) -> dict[str, float]:
    from diffusionct.io import read_image
    from diffusionct.radiomics import FeatureSettings, extract_features
    from diffusionct.radiomics.ibsi import ibsi_values

    volume, roi = read_image(image), read_image(mask)
    return ibsi_values(extract_features(volume.hu, roi.hu > 0, volume.spacing, FeatureSettings.load(preset)))


def agrees(ours: float, reference: float) -> bool:
    return abs(ours - reference) <= max(RELATIVE * abs(reference), rounding_tolerance(reference, 0.0))


def compare(ours: dict[str, float], reference: dict[str, float]) -> list[dict]:
    rows = []
    for tag in sorted(set(ours) & set(reference)):
        if math.isfinite(ours[tag]):
            rows.append({"tag": tag, "ours": ours[tag], "mirp": reference[tag], "agrees": agrees(ours[tag], reference[tag])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", type=Path, help="case folders with nifti/CT_image.nii.gz and CT_mask.nii.gz")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = ([(c.name, c / "nifti" / "CT_image.nii.gz", c / "nifti" / "CT_mask.nii.gz") for c in args.cases]
             if args.cases else default_cases())
    if not cases:
        sys.exit("no cases: the shared data is absent (pass --cases)")
    results = []
    for preset in args.presets:
        for name, image, mask in cases:
            rows = compare(our_values(image, mask, preset), mirp_values(image, mask, preset))
            results.append({"preset": preset, "case": name, "rows": rows})
            agree = sum(r["agrees"] for r in rows)
            print(f"{preset} {name}: {agree} / {len(rows)} agree ({100 * agree / max(len(rows), 1):.1f} %)", flush=True)
    for preset in args.presets:
        rows = [r for res in results if res["preset"] == preset for r in res["rows"]]
        agree = sum(r["agrees"] for r in rows)
        print(f"{preset}: {agree} / {len(rows)} ({100 * agree / max(len(rows), 1):.1f} %)")
        by_tag: dict[str, int] = {}
        for r in rows:
            if not r["agrees"]:
                by_tag[r["tag"]] = by_tag.get(r["tag"], 0) + 1
        if by_tag:
            print("   disagree: " + ", ".join(f"{t} ({n})" for t, n in sorted(by_tag.items(), key=lambda kv: -kv[1])))
    if args.json:
        args.json.write_text(json.dumps(summary(results), indent=1) + "\n")


def summary(results: list[dict]) -> dict:
    """Per preset and case the counts, and every feature that disagrees with both values (the agreeing ones are many)."""
    return {"cases": [{"preset": r["preset"], "case": r["case"], "compared": len(r["rows"]),
                       "agree": sum(x["agrees"] for x in r["rows"])} for r in results],
            "disagree": [{"preset": r["preset"], "case": r["case"], **{k: x[k] for k in ("tag", "ours", "mirp")}}
                         for r in results for x in r["rows"] if not x["agrees"]]}


if __name__ == "__main__":
    main()
