"""The shipped models give the same output as when this file's reference was recorded: code moves (packages, config
readers, routing) must not change what a user gets. Remake the reference only when a model itself is retrained:

    .venv/bin/python -m tests.test_shipped_outputs
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusionct.methods.library import shipped_library
from diffusionct.standardize import Standardizer

REFERENCE = Path(__file__).parent / "data" / "shipped_outputs.npz"
PIXEL_MM = 0.7
TOLERANCE_HU = 0.01  # the same bytes on one machine; another CPU's float rounding stays far below this


def slices() -> np.ndarray:
    """Two 64 x 64 slices: a soft-tissue body with noise and a lung-like patch, air around it."""
    rng = np.random.default_rng(20261207)
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 32) / 28) ** 2 + ((xx - 32) / 30) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0)[None].repeat(2, 0) + np.where(body, rng.normal(0, 20, (2, 64, 64)), 0)
    hu[:, 20:30, 15:25] = -800 + rng.normal(0, 30, (2, 10, 10))
    return hu.astype(np.float32)


def shipped_models() -> list[Path]:
    return sorted(p for p in shipped_library().iterdir() if p.is_dir())


def outputs() -> dict[str, np.ndarray]:
    return {folder.name: Standardizer.load(folder, "cpu").standardize_slices(slices(), pixel_mm=PIXEL_MM)
            for folder in shipped_models()}


@pytest.mark.parametrize("folder", shipped_models(), ids=lambda p: p.name)
def test_shipped_model_output_is_unchanged(folder):
    with np.load(REFERENCE, allow_pickle=False) as reference:
        expected = reference[folder.name]
    got = Standardizer.load(folder, "cpu").standardize_slices(slices(), pixel_mm=PIXEL_MM)
    assert np.abs(got - slices()).max() > 1.0  # the model changes the image: the check below is not of the input
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE_HU)


def test_shipped_configs_are_format_2_with_every_value_written():
    """Rewritten once from format 1: every setting explicit (no default read in), and the rewrite is the migration of
    the format-1 file (kept in tests/data) with nothing else changed."""
    from diffusionct.config import RunConfig, migrate_format1
    from diffusionct.io.files import read_json
    from tests.model_fixtures import FORMAT1_MODEL_CONFIG

    for folder in shipped_models():
        meta = read_json(folder / "config.json", "model config")
        assert meta["format_version"] == 2
        assert RunConfig.from_saved(meta["config"]).to_dict() == meta["config"], folder.name
    format1 = read_json(FORMAT1_MODEL_CONFIG, "model config")
    rewritten = read_json(shipped_library() / "siemens-b30f-b70f" / "config.json", "model config")
    assert format1["format_version"] == 1 and format1["config"] != rewritten["config"]
    assert migrate_format1(format1["config"]) == rewritten["config"]
    assert {k: v for k, v in format1.items() if k not in ("config", "format_version")} == \
        {k: v for k, v in rewritten.items() if k not in ("config", "format_version")}


def test_a_model_in_format_1_is_the_same_model_as_its_rewrite(tmp_path):
    """Same fingerprint (so the same DICOM UIDs) and the same pixels, whichever format its config.json is in."""
    import shutil

    from diffusionct.standardize_runs import model_fingerprint
    from tests.model_fixtures import FORMAT1_MODEL_CONFIG

    library = tmp_path / "models"
    shutil.copytree(shipped_library(), library)
    shutil.copy(FORMAT1_MODEL_CONFIG, library / "siemens-b30f-b70f" / "config.json")
    old, new = library / "siemens-b30f-b70f", shipped_library() / "siemens-b30f-b70f"
    assert model_fingerprint(old) == model_fingerprint(new)
    outputs = [Standardizer.load(folder, "cpu").standardize_slices(slices(), pixel_mm=PIXEL_MM) for folder in (old, new)]
    assert outputs[0].tobytes() == outputs[1].tobytes()
    shutil.copy(shipped_library() / "siemens-b30f-b50f" / "config.json", old / "config.json")  # another model's config
    assert model_fingerprint(old) != model_fingerprint(new)


if __name__ == "__main__":
    np.savez_compressed(REFERENCE, **outputs())
    print(f"wrote {REFERENCE}")
