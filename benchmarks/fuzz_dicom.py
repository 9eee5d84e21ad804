"""Fuzz the DICOM path: damage one file of a real series at random, run `scan` and `standardize`, and count
what must never happen.

    .venv/bin/python benchmarks/fuzz_dicom.py [--cases 200] [--seed 0] [--slices 8] [--out benchmarks/results/fuzz.json]
                                              [--keep FOLDER]

Each case copies `--slices` slices of a real CT series (../shared/data/sts-ct/STS_002; a simulated series
when the shared data is absent), applies one random mutation to one file (truncate, flip bytes, drop a
tag, or write a bad value into a tag), and runs the commands in this process through `diffusionct.cli.main`
with a histogram-matching model (fast; the I/O path is what is fuzzed). It counts:

* tracebacks: any exception that escapes the command instead of its one-line error (goal 0);
* invalid outputs: a written series that `dciodvfy` reports errors for, that does not read back with
  the project's reader, or that holds non-finite values (goal 0);
* inputs changed: a damaged input folder whose bytes differ after the run (goal 0);
* leftovers: temporary `.partial` outputs left behind (goal 0);
and how many cases ended in a clean error and how many in a valid output.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

REPO = Path(__file__).resolve().parents[1]
SHARED_SERIES = REPO.parent / "shared" / "data" / "sts-ct" / "STS_002" / "dicom" / "image"
# tags whose damage matters to a CT reader: geometry, HU conversion, identity, pixel description
TARGET_TAGS = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
               "SliceThickness", "GantryDetectorTilt", "Rows", "Columns", "BitsAllocated", "BitsStored",
               "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "SeriesInstanceUID",
               "SOPInstanceUID", "SOPClassUID", "Modality", "ConvolutionKernel", "PixelData",
               "StudyInstanceUID", "FrameOfReferenceUID", "SpacingBetweenSlices"]
BAD_VALUES = [b"nan", b"inf", b"-inf", b"", b"abcd", b"1e308", b"-1e308", b"0", b"-1", b"0\\0\\0\\0\\0\\0",
              b"1\\2", b"\x00\x01\xff", b"9" * 64, b"1.2.3", b"\\\\\\"]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def base_series(workdir: Path, slices: int) -> Path:
    """A short stretch of a real series (or a simulated one when the shared data is absent)."""
    out = workdir / "base"
    out.mkdir()
    if SHARED_SERIES.is_dir():
        files = sorted(SHARED_SERIES.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                                          .ImagePositionPatient[2]))
        start = (len(files) - slices) // 2
        for path in files[start:start + slices]:
            shutil.copy(path, out / path.name)
        return out
    from diffusionct.simulate.scanner import ScannerSettings
    from diffusionct.simulate.simulator import SimulationConfig, Simulator

    cfg = SimulationConfig(cases=1, thicknesses_mm=[2.0], slices=slices, seed=3,
                           scanner=ScannerSettings(size=96, pixel_mm=2.0, n_views=128))
    Simulator(cfg).run_phantoms(workdir / "sim")
    shutil.rmtree(out)
    shutil.copytree(next((workdir / "sim").rglob("sim_b30")), out)
    return out


def mutate(path: Path, rng: np.random.Generator) -> str:
    """One random damage to one file; returns what was done."""
    kind = rng.choice(["truncate", "flip", "drop", "value"])
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        path.write_bytes(bytes(data[:cut]))
        return f"truncate at {cut}/{len(data)}"
    if kind == "flip":
        count = int(rng.integers(1, 20))
        for position in rng.integers(0, len(data), size=count):
            data[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        return f"flip {count} bytes"
    ds = pydicom.dcmread(path)
    keyword = str(rng.choice(TARGET_TAGS))
    tag = Tag(pydicom.datadict.tag_for_keyword(keyword))
    if kind == "drop":
        if tag in ds:
            del ds[tag]
        ds.save_as(path)
        return f"drop {keyword}"
    raw = BAD_VALUES[int(rng.integers(0, len(BAD_VALUES)))]
    vr = pydicom.datadict.dictionary_VR(tag)
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "OW", "OB"):
        raw = bytes(rng.integers(0, 256, size=int(rng.choice([0, 1, 2, 3, 4, 7]))).astype(np.uint8))
    ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    ds.save_as(path)
    return f"set {keyword} = {raw[:12]!r}"


def dciodvfy_errors(path: Path) -> int | None:
    if shutil.which("dciodvfy") is None:
        return None
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("Error") for line in (result.stdout + result.stderr).splitlines())


def check_output(output: Path) -> str | None:
    """Why a written output is invalid, or None (a damaged series UID makes two series: each is checked)."""
    from diffusionct.io import read_dicom_series

    folders = sorted({p.parent for p in output.rglob("*.dcm")})
    if not folders:
        return "no DICOM file written"
    for folder in folders:
        try:
            volume = read_dicom_series(folder)
        except Exception as exc:  # noqa: BLE001 - any failure to read back is an invalid output
            return f"does not read back: {exc}"
        if not np.isfinite(volume.hu).all():
            return "non-finite values"
        files = sorted(folder.glob("*.dcm"))
        for path in {files[0], files[-1]}:
            errors = dciodvfy_errors(path)
            if errors:
                return f"dciodvfy: {errors} errors in {path.relative_to(output)}"
    return None


def run_case(index: int, base: Path, model: Path, workdir: Path, rng: np.random.Generator, keep: Path | None) -> dict:
    from diffusionct.cli import main

    case = workdir / f"case{index:04d}"
    series = case / "in"
    shutil.copytree(base, series)
    victim = sorted(series.glob("*.dcm"))[int(rng.integers(0, len(list(series.glob("*.dcm")))))]
    what = mutate(victim, rng)
    before = digest(series)
    result = {"case": index, "mutation": what, "file": victim.name}
    codes = {}
    for name, args in (("scan", ["scan", str(series)]),
                       ("standardize", ["standardize", "-i", str(series), "-o", str(case / "out"), "--model", str(model),
                                        "--device", "cpu"])):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                codes[name] = main(["-q", *args])
        except BaseException:  # noqa: BLE001 - counting every escape is the point
            codes[name] = "traceback"
            result.setdefault("traceback", traceback.format_exc(limit=3)[-600:])
        if codes[name] == 2 and not stderr.getvalue().startswith("error:"):
            result.setdefault("unclear", stderr.getvalue()[-300:])
    result["codes"] = codes
    result["input_changed"] = digest(series) != before
    result["leftovers"] = [p.name for p in case.rglob(".*partial*")]
    if codes["standardize"] == 0:
        result["invalid_output"] = check_output(case / "out")
    if keep is not None and (result.get("invalid_output") or "traceback" in codes.values() or result["input_changed"]):
        shutil.copytree(case, keep / case.name, dirs_exist_ok=True)
        shutil.copy(base / victim.name, keep / case.name / f"original-{victim.name}")
    shutil.rmtree(case)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.json")
    parser.add_argument("--keep", type=Path, help="copy each failing case (damaged input, output) into this folder")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the commands' warnings about the damage are expected
    from diffusionct.config import RunConfig
    from diffusionct.methods import HistogramMethod

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base = base_series(workdir, args.slices)
        from diffusionct.io import read_dicom_series

        volume = read_dicom_series(base)  # a histogram model of the undamaged series onto itself
        model = workdir / "model"
        config = RunConfig.from_dict({"data": {"source_kernel": volume.kernel, "target_kernel": volume.kernel}})
        method = HistogramMethod(config)
        method.fit(volume.hu, volume.hu)
        method.save(model)
        results = [run_case(i, base, model, workdir, rng, args.keep) for i in range(args.cases)]
    summary = {
        "cases": len(results),
        "series": str(SHARED_SERIES) if SHARED_SERIES.is_dir() else "simulated",
        "tracebacks": sum("traceback" in r["codes"].values() for r in results),
        "unclear_errors": sum("unclear" in r for r in results),
        "invalid_outputs": sum(bool(r.get("invalid_output")) for r in results),
        "inputs_changed": sum(r["input_changed"] for r in results),
        "leftovers": sum(bool(r["leftovers"]) for r in results),
        "clean_errors": sum(r["codes"]["standardize"] == 2 for r in results),
        "valid_outputs": sum(r["codes"]["standardize"] == 0 and not r.get("invalid_output") for r in results),
        "dciodvfy": shutil.which("dciodvfy") is not None,
    }
    bad = [r for r in results if "traceback" in r["codes"].values() or r.get("invalid_output") or r["input_changed"]
           or r["leftovers"] or "unclear" in r]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "failures": bad}, indent=1))
    print(json.dumps(summary, indent=1))
    for r in bad[:10]:
        print(json.dumps(r)[:800])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
