"""Shared fixtures: the real data folder, tiny generated series and the DICOM validator."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# Test workers share the cores (make test runs two): one thread each, and in the processes they start. OpenMP's
# waiting threads otherwise oversubscribe the cores, and the small torch operations of the tests ran up to 8x slower
# inside the suite than alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

from diffusionct.io.dicom_writer import SeriesDescription, StudyContext, write_dicom_series  # noqa: E402
from diffusionct.io.volume import Volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
STS_CASES = ["STS_002", "STS_003", "STS_008", "STS_019", "STS_024", "STS_025"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (only present beside the project checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sts_case(shared_data):
    def case(name: str = "STS_002") -> Path:
        path = shared_data / "sts-ct" / name
        if not path.is_dir():
            pytest.skip(f"{path} is absent")
        return path

    return case


def make_volume(shape=(5, 16, 20), spacing=(0.7, 0.8, 2.5), seed=0, origin=(-10.0, -20.0, 30.0)) -> Volume:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 2000, size=shape).astype(np.float32)
    return Volume(hu=hu, spacing=spacing, origin=origin, metadata={"slice_thickness": spacing[2]})


def make_study(patient: str = "TEST01") -> StudyContext:
    from pydicom.uid import generate_uid

    return StudyContext(patient_id=patient, patient_name=f"Test^{patient}", study_uid=generate_uid(),
                        frame_of_reference_uid=generate_uid())


@pytest.fixture
def tiny_series(tmp_path):
    """Write a small synthetic CT series from nothing; returns (folder, volume)."""

    def write(name="series", kernel="SMOOTH", study=None, **volume_args):
        volume = make_volume(**volume_args)
        folder = tmp_path / name
        write_dicom_series(volume, folder, SeriesDescription(f"tiny {kernel}", kernel), study=study or make_study())
        return folder, volume

    return write


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines that dciodvfy prints for one DICOM file (skips when the validator is absent outside CI)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is missing in CI: .ci/run must install dicom3tools")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


from tests.model_fixtures import tiny_data, tiny_model  # noqa: E402,F401  (session fixtures for every test folder)
