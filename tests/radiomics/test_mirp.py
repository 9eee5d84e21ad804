"""The feature engine against mirp, the IBSI reference implementation, on a real sarcoma CT in every IBSI 1
configuration (benchmarks/mirp_crosscheck.py runs all six cases and the digital phantom; docs/radiomics.md)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mirp", reason="mirp (the IBSI reference implementation) is in the test extra: pip install -e .[test]")

_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mirp_crosscheck.py"


@pytest.fixture(scope="module")
def crosscheck():
    spec = importlib.util.spec_from_file_location("mirp_crosscheck", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mirp_columns_map_to_ibsi_tags(crosscheck):
    assert crosscheck.mirp_tag("cm_contrast_d1_2d_s_mrg_fbs_w25.0") == "cm_contrast_2D_comb"
    assert crosscheck.mirp_tag("rlm_sre_2.5d_d_mrg_fbn_n32") == "rlm_sre_2_5D_avg"
    assert crosscheck.mirp_tag("ngl_lde_d1_a0.0_3d_fbn_n32") == "ngl_lde_3D"
    assert crosscheck.mirp_tag("stat_mean") == "stat_mean" and crosscheck.mirp_tag("image_voxel_size_x") is None


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ibsi-a", "ibsi-b", "ibsi-c", "ibsi-d", "ibsi-e"])
def test_engine_agrees_with_mirp_on_a_real_tumour(crosscheck, sts_case, preset):
    case = sts_case("STS_002") / "nifti"
    image, mask = case / "CT_image.nii.gz", case / "CT_mask.nii.gz"
    rows = crosscheck.compare(crosscheck.our_values(image, mask, preset), crosscheck.mirp_values(image, mask, preset))
    assert len(rows) >= 150  # every family of the configuration is compared, not a few features
    disagree = [(r["tag"], r["ours"], r["mirp"]) for r in rows if not r["agrees"]]
    assert len(disagree) <= 0.02 * len(rows), disagree
