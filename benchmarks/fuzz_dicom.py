"""Fuzz what users hand the tool: damage one input at random, run the command that reads it, and count what must
never happen.

    .venv/bin/python benchmarks/fuzz_dicom.py [--cases 200] [--seed 0] [--slices 8] [--targets dicom,rtstruct,...]
                                              [--out benchmarks/results/fuzz.json] [--keep FOLDER]

Targets, one per case in turn:

* ``dicom``: one slice of `--slices` slices of a real CT series (../shared/data/sts-ct/STS_002; a simulated series
  when the shared data is absent); `scan` and `standardize` run on it.
* ``rtstruct`` / ``seg``: the tumour mask of STS_002 as its RTSTRUCT, or as a DICOM-SEG written from it (highdicom);
  `features` runs on the series with it (first-order features: the mask path is what is fuzzed).
* ``model-config``: the model folder's config.json; `standardize --model` runs with it.
* ``params``: the feature settings YAML; `features --params` runs with it.

A DICOM file is damaged by one random mutation (truncate, flip bytes, drop an element or write a bad value into
one, nested ones included); a JSON or YAML file by a hostile value (null, text, a list, NaN, huge, negative, deep
nesting) at a random key, a key dropped, or truncated or flipped bytes. The commands run in this process through
`diffusionct.cli.main` with a histogram-matching model (fast; the reading path is what is fuzzed). It counts:

* tracebacks: any exception that escapes the command instead of its one-line error (goal 0);
* invalid outputs: a written series that `dciodvfy` reports errors for, that does not read back with
  the project's reader, or that holds non-finite values; a features CSV without rows (goal 0);
* inputs changed: any input (the damaged file, the series, the mask, the model) whose bytes differ after the run (goal 0);
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
import warnings
from pathlib import Path

import numpy as np
import pydicom
import yaml
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

REPO = Path(__file__).resolve().parents[1]
SHARED_CASE = REPO.parent / "shared" / "data" / "sts-ct" / "STS_002"
SHARED_SERIES = SHARED_CASE / "dicom" / "image"
TARGETS = ("dicom", "rtstruct", "seg", "model-config", "params")
# tags whose damage matters to a CT reader: geometry, HU conversion, identity, pixel description
TARGET_TAGS = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
               "SliceThickness", "GantryDetectorTilt", "Rows", "Columns", "BitsAllocated", "BitsStored",
               "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "SeriesInstanceUID",
               "SOPInstanceUID", "SOPClassUID", "Modality", "ConvolutionKernel", "PixelData",
               "StudyInstanceUID", "FrameOfReferenceUID", "SpacingBetweenSlices"]
# what a mask reader reads: the ROI and contour structure of an RTSTRUCT, the segments and frames of a SEG
MASK_TAGS = ["ROIContourSequence", "StructureSetROISequence", "ContourSequence", "ContourData", "NumberOfContourPoints",
             "ContourGeometricType", "ReferencedROINumber", "ROINumber", "ROIName", "ReferencedFrameOfReferenceUID",
             "FrameOfReferenceUID", "ReferencedSOPInstanceUID", "PatientID", "StudyInstanceUID", "Modality",
             "SOPClassUID", "SegmentSequence", "SegmentNumber", "SegmentLabel", "ReferencedSegmentNumber",
             "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "PlanePositionSequence",
             "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
             "NumberOfFrames", "BitsAllocated", "BitsStored", "SegmentationType", "PixelData", "MaximumFractionalValue"]
BAD_VALUES = [b"nan", b"inf", b"-inf", b"", b"abcd", b"1e308", b"-1e308", b"0", b"-1", b"0\\0\\0\\0\\0\\0",
              b"1\\2", b"\x00\x01\xff", b"9" * 64, b"1.2.3", b"\\\\\\"]
HOSTILE = [None, "x", "", -1, 0, 1e308, -1e308, float("nan"), float("inf"), [], {}, True, [1, 2, 3], {"a": 1}, "9" * 300,
           "DEEP"]
# fast feature settings for the mask and params targets: the reading path, not the features, is fuzzed
FAST_PARAMS = {"setting": {"binWidth": 25, "minimumROISize": 2, "padDistance": 4}, "imageType": {"original": {}},
               "dimensions": ["3D"], "classes": ["ID", "IH"]}


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _by_position(paths):
    return sorted(paths, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def base_series(workdir: Path, slices: int) -> Path:
    """A short stretch of a real series (or a simulated one when the shared data is absent)."""
    out = workdir / "base"
    out.mkdir()
    if SHARED_SERIES.is_dir():
        files = _by_position(SHARED_SERIES.glob("*.dcm"))
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


def mask_base(workdir: Path) -> tuple[Path, Path, Path]:
    """The slices of STS_002 that its tumour spans (and two more each side), its RTSTRUCT and a SEG of the same mask."""
    import highdicom as hd

    from diffusionct.io import read_dicom_series
    from diffusionct.io.image import read_label_map

    full = read_dicom_series(SHARED_SERIES)
    mask = read_label_map(SHARED_CASE / "dicom" / "mask" / "RS.dcm", full) > 0
    rows = np.flatnonzero(mask.any(axis=(1, 2)))
    keep = range(max(rows[0] - 2, 0), min(rows[-1] + 3, mask.shape[0]))
    series = workdir / "mask-series"
    series.mkdir()
    files = _by_position(SHARED_SERIES.glob("*.dcm"))
    for k in keep:
        shutil.copy(files[k], series / files[k].name)
    rtstruct = workdir / "RS.dcm"
    shutil.copy(SHARED_CASE / "dicom" / "mask" / "RS.dcm", rtstruct)
    sources = [pydicom.dcmread(files[k]) for k in keep]
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="tumour", algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask[list(keep)].astype(np.uint8), segment_descriptions=[description],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, series_instance_uid=hd.UID(), series_number=50,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="fuzz", manufacturer_model_name="fuzz",
        software_versions="0", device_serial_number="1", omit_empty_frames=True)
    seg_path = workdir / "SEG.dcm"
    seg.save_as(seg_path)
    return series, rtstruct, seg_path


def _elements(ds, keywords: set[str]):
    """Every (dataset, tag) of ``ds``, nested ones included, whose keyword is in ``keywords``."""
    found = []
    for element in ds:
        if element.keyword in keywords:
            found.append((ds, element.tag))
        if element.VR == "SQ":
            for item in element.value:
                found.extend(_elements(item, keywords))
    return found


def mutate(path: Path, rng: np.random.Generator, tags: list[str] = TARGET_TAGS) -> str:
    """One random damage to one DICOM file; returns what was done."""
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
    keyword = str(rng.choice(tags))
    places = _elements(ds, {keyword}) or [(ds, Tag(pydicom.datadict.tag_for_keyword(keyword)))]
    parent, tag = places[int(rng.integers(0, len(places)))]
    if kind == "drop":
        if tag in parent:
            del parent[tag]
        ds.save_as(path)
        return f"drop {keyword}"
    vr = pydicom.datadict.dictionary_VR(tag)
    if vr == "SQ":  # a sequence emptied (or added empty)
        parent.add_new(tag, "SQ", [])
        ds.save_as(path)
        return f"empty {keyword}"
    raw = BAD_VALUES[int(rng.integers(0, len(BAD_VALUES)))]
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "OW", "OB"):
        raw = bytes(rng.integers(0, 256, size=int(rng.choice([0, 1, 2, 3, 4, 7]))).astype(np.uint8))
    parent[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    ds.save_as(path)
    return f"set {keyword} = {raw[:12]!r}"


def _leaves(node, path=()):
    """Every key path of a JSON/YAML document (mappings and lists), the document's own sections included."""
    found = [path] if path else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found.extend(_leaves(value, (*path, key)))
    return found


def mutate_document(path: Path, rng: np.random.Generator) -> str:
    """One random damage to a JSON or YAML settings file; returns what was done."""
    text = path.read_bytes()
    kind = rng.choice(["value", "value", "drop", "truncate", "flip"])
    if kind in ("truncate", "flip"):
        data = bytearray(text)
        if kind == "truncate":
            cut = int(rng.integers(0, len(data)))
            path.write_bytes(bytes(data[:cut]))
            return f"truncate at {cut}/{len(data)}"
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 6))):
            data[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        return "flip bytes"
    is_json = path.suffix == ".json"
    document = json.loads(text) if is_json else yaml.safe_load(text)
    paths = _leaves(document)
    where = paths[int(rng.integers(0, len(paths)))]
    parent = document
    for key in where[:-1]:
        parent = parent[key]
    if kind == "drop":
        del parent[where[-1]]
        what = "drop"
    else:
        value = HOSTILE[int(rng.integers(0, len(HOSTILE)))]
        parent[where[-1]] = {"a": 1} if value == "DEEP" else value
        what = f"set {value!r:.20}"
    out = json.dumps(document) if is_json else yaml.safe_dump(document)
    if what.startswith("set 'DEEP'"):  # 100,000 levels of nesting where the one-level mapping was put
        out = out.replace('{"a": 1}' if is_json else "a: 1", "[" * 100_000 + "]" * 100_000, 1)
    path.write_text(out)
    return f"{what} at {'.'.join(map(str, where))}"


def dciodvfy_errors(path: Path) -> int | None:
    if shutil.which("dciodvfy") is None:
        return None
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("Error") for line in (result.stdout + result.stderr).splitlines())


def check_output(output: Path) -> str | None:
    """Why a written output is invalid, or None (a damaged series UID makes two series: each is checked)."""
    from diffusionct.io import read_dicom_series

    if output.suffix == ".csv":
        rows = output.read_text().splitlines() if output.is_file() else []
        return None if len(rows) >= 2 else "a features CSV without rows"
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


def prepare_case(target: str, case: Path, bases: dict, rng: np.random.Generator) -> tuple[Path, str, list, Path]:
    """Copy the target's inputs into ``case``, damage one; returns the damaged file, what was done, the commands
    (name, arguments) and the output whose validity is checked."""
    inputs = case / "inputs"
    model = inputs / "model"
    shutil.copytree(bases["model"], model)
    params = inputs / "params.yaml"
    params.write_text(yaml.safe_dump(FAST_PARAMS))
    out = case / ("out" if target in ("dicom", "model-config") else "features.csv")
    if target in ("dicom", "model-config"):
        series = inputs / "series"
        shutil.copytree(bases["series"], series)
        slices = sorted(series.glob("*.dcm"))
        victim = model / "config.json" if target == "model-config" else slices[int(rng.integers(0, len(slices)))]
        what = mutate_document(victim, rng) if target == "model-config" else mutate(victim, rng)
        standardize = ["standardize", "-i", series, "-o", out, "--model", model, "--device", "cpu"]
        commands = [("standardize", standardize)] if target == "model-config" else [("scan", ["scan", series]),
                                                                                    ("standardize", standardize)]
        return victim, what, commands, out
    series = inputs / "series"
    shutil.copytree(bases["mask-series"], series)
    mask = inputs / ("SEG.dcm" if target == "seg" else "RS.dcm")
    shutil.copy(bases["seg" if target == "seg" else "rtstruct"], mask)
    victim = params if target == "params" else mask
    what = mutate_document(victim, rng) if target == "params" else mutate(victim, rng, MASK_TAGS)
    return victim, what, [("features", ["features", "-i", series, "-m", mask, "-o", out, "--params", params])], out


def run_case(index: int, target: str, bases: dict, workdir: Path, rng: np.random.Generator, keep: Path | None) -> dict:
    from diffusionct.cli import main

    case = workdir / f"case{index:04d}"
    victim, what, commands, output = prepare_case(target, case, bases, rng)
    before = digest(case / "inputs")
    result = {"case": index, "target": target, "mutation": what, "file": victim.name}
    codes = {}
    for name, args in commands:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                codes[name] = main(["-q", *map(str, args)])
        except BaseException:  # noqa: BLE001 - counting every escape is the point
            codes[name] = "traceback"
            result.setdefault("traceback", traceback.format_exc(limit=3)[-600:])
        if codes[name] == 2 and not stderr.getvalue().startswith("error:"):
            result.setdefault("unclear", stderr.getvalue()[-300:])
    last = commands[-1][0]
    result["codes"] = codes
    result["input_changed"] = digest(case / "inputs") != before
    result["leftovers"] = [p.name for p in case.rglob(".*partial*")]
    if codes[last] == 0:
        result["invalid_output"] = check_output(output)
    if keep is not None and (result.get("invalid_output") or "traceback" in codes.values() or result["input_changed"]):
        shutil.copytree(case, keep / case.name, dirs_exist_ok=True)
    shutil.rmtree(case)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.json")
    parser.add_argument("--keep", type=Path, help="copy each failing case (damaged input, output) into this folder")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if not set(targets) <= set(TARGETS):
        parser.error(f"--targets: choose from {', '.join(TARGETS)}")
    if not SHARED_SERIES.is_dir():
        targets = [t for t in targets if t not in ("rtstruct", "seg", "params")]  # they need the real tumour mask
    logging.disable(logging.WARNING)  # the commands' warnings about the damage are expected
    warnings.filterwarnings("ignore")  # and pydicom's about the values this script writes
    from diffusionct.config import RunConfig
    from diffusionct.methods.classical import HistogramMethod

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bases = {"series": base_series(workdir, args.slices)}
        if SHARED_SERIES.is_dir():
            bases["mask-series"], bases["rtstruct"], bases["seg"] = mask_base(workdir)
        from diffusionct.io import read_dicom_series

        volume = read_dicom_series(bases["series"])  # a histogram model of the undamaged series onto itself
        bases["model"] = workdir / "model"
        config = RunConfig.from_dict({"data": {"source_kernel": volume.kernel, "target_kernel": volume.kernel}})
        method = HistogramMethod(config)
        method.fit(volume.hu, volume.hu)
        method.save(bases["model"])
        results = []
        for i in range(args.cases):
            results.append(run_case(i, targets[i % len(targets)], bases, workdir, rng, args.keep))
            if (i + 1) % 50 == 0:
                print(f"{i + 1}/{args.cases} cases", file=sys.stderr, flush=True)

    def count(rows):
        last = {r["target"]: list(r["codes"])[-1] for r in rows}
        return {
            "cases": len(rows),
            "tracebacks": sum("traceback" in r["codes"].values() for r in rows),
            "unclear_errors": sum("unclear" in r for r in rows),
            "invalid_outputs": sum(bool(r.get("invalid_output")) for r in rows),
            "inputs_changed": sum(r["input_changed"] for r in rows),
            "leftovers": sum(bool(r["leftovers"]) for r in rows),
            "clean_errors": sum(r["codes"][last[r["target"]]] == 2 for r in rows),
            "valid_outputs": sum(r["codes"][last[r["target"]]] == 0 and not r.get("invalid_output") for r in rows),
        }

    summary = {**count(results), "series": SHARED_SERIES.relative_to(REPO.parent).as_posix() if SHARED_SERIES.is_dir() else "simulated",
               "dciodvfy": shutil.which("dciodvfy") is not None,
               "by_target": {t: count([r for r in results if r["target"] == t]) for t in targets}}
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
