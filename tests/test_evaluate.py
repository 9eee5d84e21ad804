import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from diffusionct.cli import main
from diffusionct.train.methods import train_method
from diffusionct.radiomics import FEATURE_CLASSES
from tests.model_fixtures import tiny_config

PARAMS = "setting: {binWidth: 25, padDistance: 2}\nimageType: {original: {}}\ndimensions: [3D]\n"


class _Cells(HTMLParser):
    """Collects table cells and images of a page (and fails on nothing: html.parser is lenient)."""

    def __init__(self):
        super().__init__()
        self.cells, self.images, self._in_cell, self.tags = [], [], False, []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "td":
            self._in_cell = True
            self.cells.append("")
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_report(tiny_data, tiny_model, tmp_path_factory) -> Path:
    """An evaluation report of the tiny model, histogram matching and a missing model (reported as failed)."""
    tmp_path = tmp_path_factory.mktemp("report")
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    histogram = tmp_path / "histogram"
    train_method("histogram", tiny_data, histogram, tiny_config(), torch.device("cpu"))
    report = tmp_path / "report"
    code = main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--model", str(histogram),
                 "--model", str(tmp_path / "missing"), "-o", str(report), "--device", "cpu", "--workers", "1", "--params", str(params),
                 "--temperature", "0.5"])
    assert code == 0
    return report


def test_evaluate_report(tiny_report):
    report = tiny_report
    rows = {r["method"]: r for r in _read_csv(report / "methods.csv")}
    assert set(rows) == {"input", "run", "histogram", "missing"}
    assert rows["missing"]["status"] == "failed" and "not found" in rows["missing"]["error"]
    for name in ("input", "run", "histogram"):
        assert rows[name]["status"] == "ok"
        for cls in FEATURE_CLASSES:
            assert rows[name][f"ccc_{cls}_mean"] not in ("", "nan"), (name, cls)
    page = _Cells()
    page.feed((report / "report.html").read_text())
    assert page.tags[0] == "html" and len(page.images) >= 3
    assert all(src.startswith("data:image/png;base64,") for src in page.images)  # self-contained
    for row in rows.values():  # every CSV number appears verbatim in the page
        for key in ("reproducible_share", "rmse_hu", "ccc_GLCM_mean"):
            if row.get(key):
                assert row[key] in page.cells, (row["method"], key, row[key])
    results = json.loads((report / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == ["input", "run", "histogram", "missing"]
    assert results["temperature"] == 0.5
    assert [rows[n]["arm"] for n in ("input", "run")] == ["unchanged", "image standardization"]
    for name in ("run", "histogram"):  # which features each standardization can be trusted on, with the check
        flags = _read_csv(report / "methods" / name / "reliability.csv")
        assert int(rows[name]["trusted_features"]) == sum(f["trusted"] == "yes" for f in flags) and flags
        assert 0.0 <= float(rows[name]["concordant_share"]) <= 1.0
    assert rows["input"]["trusted_features"] == "" and "Features a study can trust" in (report / "report.html").read_text()


def test_models_of_two_gaps_get_a_section_each(tiny_data, tiny_model, tmp_path):
    """A model of the reverse gap is evaluated on its own pairs (source and target swapped), in its own section."""
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    reverse = tmp_path / "reverse"
    train_method("histogram", tiny_data, reverse, tiny_config("data.source_kernel=SIM_B70", "data.target_kernel=SIM_B30"),
                 torch.device("cpu"))
    report = tmp_path / "report"
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--model", str(reverse), "-o", str(report),
                 "--device", "cpu", "--workers", "1", "--params", str(params), "--max-cases", "1"]) == 0
    rows = _read_csv(report / "methods.csv")
    gaps = [(r["method"], r["source_kernel"], r["target_kernel"]) for r in rows]
    assert gaps == [("input", "SIM_B30", "SIM_B70"), ("run", "SIM_B30", "SIM_B70"),
                    ("input", "SIM_B70", "SIM_B30"), ("reverse", "SIM_B70", "SIM_B30")]
    inputs = [r for r in rows if r["method"] == "input"]
    assert inputs[0]["tumours"] == inputs[1]["tumours"] != ""  # the same pairs, swapped
    assert float(inputs[0]["high_pass_ratio"]) < 1 < float(inputs[1]["high_pass_ratio"])  # smooth->sharp, sharp->smooth
    page = (report / "report.html").read_text()
    assert "Kernel gap SIM_B30 -&gt; SIM_B70" in page and "Kernel gap SIM_B70 -&gt; SIM_B30" in page
    assert page.index("SIM_B30 -&gt; SIM_B70") < page.index("SIM_B70 -&gt; SIM_B30")
    assert (report / "sim_b70-sim_b30-ccc_table.csv").is_file() and (report / "methods" / "sim_b70-sim_b30" / "reverse").is_dir()
    results = json.loads((report / "results.json").read_text())
    assert [(g["source_kernel"], len(g["cases"])) for g in results["gaps"]] == [("SIM_B30", 1), ("SIM_B70", 1)]


def test_combat_arms_beside_the_standardization(tiny_data, tiny_model, tmp_path, capsys):
    """--combat-train: ComBat onto the target kernel fitted on other patients' tumours, alone and on top of the model;
    the test set itself as training set is refused."""
    from diffusionct.simulate.scanner import ScannerSettings
    from diffusionct.simulate.simulator import SimulationConfig, Simulator

    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    training = Simulator(SimulationConfig(cases=2, thicknesses_mm=[2.0], slices=4, seed=11, n_tumours=2,
                                          scanner=ScannerSettings(size=96, pixel_mm=2.0, n_views=128))).run_phantoms(tmp_path / "train")
    report = tmp_path / "report"
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "-o", str(report), "--device", "cpu",
                 "--workers", "1", "--params", str(params), "--combat-train", str(training)]) == 0
    rows = {r["method"]: r for r in _read_csv(report / "methods.csv")}
    assert [(name, rows[name]["arm"], rows[name]["status"]) for name in rows] == [
        ("input", "unchanged", "ok"), ("run", "image standardization", "ok"), ("ComBat", "ComBat", "ok"),
        ("run + ComBat", "both", "ok")]
    input_errors = {(r["tumour"], r["feature"]): r for r in _read_csv(report / "methods" / "input" / "relative_error.csv")}
    combat_errors = _read_csv(report / "methods" / "ComBat" / "relative_error.csv")
    moved = [r for r in combat_errors if r["test"] != input_errors[r["tumour"], r["feature"]]["test"]]
    assert len(moved) > len(combat_errors) // 2  # ComBat changed most features (the rest: constant in training)
    assert all(r["standard"] == input_errors[r["tumour"], r["feature"]]["standard"] for r in combat_errors)
    page = (report / "report.html").read_text()
    assert "fitted on" in page and "run + ComBat" in page
    capsys.readouterr()
    code = main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "-o", str(tmp_path / "same"),
                 "--device", "cpu", "--workers", "1", "--params", str(params), "--combat-train", str(tiny_data)])
    assert code == 2 and "is the test set" in capsys.readouterr().err and not (tmp_path / "same").exists()
    copy = shutil.copytree(tiny_data.parent, tmp_path / "copy")  # the same series under another manifest
    code = main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "-o", str(tmp_path / "copied"),
                 "--device", "cpu", "--workers", "1", "--params", str(params), "--combat-train", str(copy / tiny_data.name)])
    assert code == 2 and "holds test series" in capsys.readouterr().err and not (tmp_path / "copied").exists()
    before = sorted(p.relative_to(training.parent) for p in training.parent.rglob("*"))
    code = main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "-o", str(training.parent), "--overwrite",
                 "--device", "cpu", "--workers", "1", "--params", str(params), "--combat-train", str(training)])
    assert code == 2 and "error:" in capsys.readouterr().err  # the report would have replaced the training set
    assert sorted(p.relative_to(training.parent) for p in training.parent.rglob("*")) == before


def test_evaluate_empty_test_set(tiny_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.json").write_text(json.dumps({"series": [], "pairs": []}))
    assert main(["evaluate", "--data", str(tmp_path / "empty"), "--model", str(tiny_model), "-o", str(tmp_path / "r")]) == 2
    assert "no SIM_B30 -> SIM_B70 test pairs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_demo_quick(tmp_path):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--quick"]) == 0
    rows = _read_csv(tmp_path / "demo" / "report" / "methods.csv")
    names = {r["method"] for r in rows}
    assert {"input", "diffusionct-shipped", "identity", "histogram", "residual-cnn", "pix2pix", "ddpm", "autoencoder",
            "diffusionct-brief"} <= names
    for row in rows:
        assert row["status"] == "ok", row
        recorded = Path(row["model"])  # the demo's own models relative to its folder, renamed when done
        assert row["method"] == "input" or (recorded if recorded.is_absolute() else tmp_path / "demo" / recorded).exists(), row
        for cls in FEATURE_CLASSES:
            assert row[f"ccc_{cls}_mean"] != "", (row["method"], cls)
    page = _Cells()
    page.feed((tmp_path / "demo" / "report" / "report.html").read_text())
    for row in rows:
        assert row["reproducible_share"] in page.cells


def test_nps_correlation_tells_texture_apart():
    import numpy as np
    from scipy import ndimage

    from diffusionct.evaluate import TestCase, image_metrics_summary
    from diffusionct.io.volume import Volume

    rng = np.random.default_rng(0)
    target = 40 + 30 * rng.normal(size=(3, 96, 96))  # white (sharp-kernel-like) noise in soft tissue
    target[:, :, :8] = -1000  # some air
    smooth = np.where(target > -500, 40 + 4 * ndimage.gaussian_filter(target - 40, (0, 2, 2)), -1000)
    grid = (0.7, 0.7, 3.0)
    case = TestCase("c", Volume(hu=smooth, spacing=grid), Volume(hu=target, spacing=grid), np.zeros(target.shape, np.uint8))
    same, _ = image_metrics_summary([case], {"c": target})
    blurred, _ = image_metrics_summary([case], {"c": smooth})
    assert same["nps_correlation"] == pytest.approx(1.0)
    assert blurred["nps_correlation"] < 0.9


def test_report_figures_keep_a_diverged_method_off_the_nps_axis():
    from types import SimpleNamespace

    import numpy as np

    from diffusionct.report.html import nps_figure, nps_outliers, summary_lines

    freq = np.linspace(0, 0.7, 20)
    target = {"frequency": freq.tolist(), "nps": (100 * np.exp(-((freq - 0.3) ** 2) / 0.02)).tolist()}
    close = SimpleNamespace(name="diffusionct", nps={"frequency": freq.tolist(), "nps": (np.array(target["nps"]) * 1.1).tolist()},
                            comparison=None, flag_check=None)
    wild = SimpleNamespace(name="paper", nps={"frequency": freq.tolist(), "nps": (np.array(target["nps"]) * 1e6).tolist()},
                           comparison=None)
    assert nps_outliers([close, wild], target) == {"paper": "peak 1e+06x the target's"}
    assert nps_figure([close, wild], target).startswith("data:image/png;base64,")
    rows = [{"method": "input", "status": "ok", "reproducible_share": 0.5, **{f"ccc_{c}_mean": 0.9 for c in FEATURE_CLASSES}},
            {"method": "diffusionct", "status": "ok", "reproducible_share": 0.7,
             **{f"ccc_{c}_mean": 0.95 for c in FEATURE_CLASSES}},
            {"method": "residual-cnn", "status": "ok", "reproducible_share": 0.8,
             **{f"ccc_{c}_mean": 0.99 for c in FEATURE_CLASSES}}]
    lines = summary_lines(rows, [close])
    assert lines[0] == "Most reproducible features (RE < 0.15): residual-cnn (80.0 %)."
    assert lines[1].startswith("DiffusionCT: 70.0 %, 10.0 points behind residual-cnn")
    assert "GLCM residual-cnn (0.990)" in lines[3]


def test_report_module_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import diffusionct.report.html as h; "
            "h.re_curve_figure([]); print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "svg", result.stderr


def _browser():
    """A headless Chromium driven by selenium, or a skip (a failure in CI, whose .ci/run installs it)."""
    import os
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if not (browser and driver and webdriver):
        if os.environ.get("CI"):
            pytest.fail("chromium, chromedriver or selenium is missing in CI: .ci/run must install them")
        pytest.skip("no headless browser (apt-get install chromium chromium-driver; pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def test_report_in_a_real_browser_offline(tiny_report):
    """Every figure decodes, the console is clean, nothing is fetched from the network, the summary shows."""
    driver = _browser()
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        driver.get((tiny_report / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.src.slice(0, 22)])")
        assert len(images) >= 3
        for complete, width, height, source in images:
            assert complete and width > 100 and height > 100 and source == "data:image/png;base64,"
        requests = driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert requests == []  # self-contained: no request besides the page itself
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        summary = driver.find_element("css selector", ".summary").text
        assert "Most reproducible features" in summary
        headers = [h.text for h in driver.find_elements("css selector", "h2")]
        assert any("CCC per feature class" in h for h in headers)
    finally:
        driver.quit()


def test_untrusted_text_is_escaped_in_the_report():
    """Kernel names, notes and titles come from the user's files: the page template escapes every one of them."""
    from diffusionct.report.html import _PAGE

    hostile = "<img src=x onerror=alert(1)>"
    table = {"columns": ["method", hostile], "rows": [[hostile, "0.5"]]}
    gap = {"name": f"{hostile} -> B70", "slug": hostile, "count": 1, "summary": [hostile], "ccc": table, "headline": table,
           "re_curve": "data:image/png;base64,AAAA", "images": table, "nps": "data:image/png;base64,AAAA",
           "panels": [(hostile, "data:image/png;base64,AAAA")], "shares": table, "shares_figure": "data:image/png;base64,AAAA",
           "reliability": table, "trusted": [(hostile, {"GLCM": hostile})], "notes": [hostile]}
    page = _PAGE.render(title=hostile, style="", version="0", gaps=[gap, gap], many=True, notes=[hostile])
    assert "onerror" in page and "<img src=x" not in page and page.count("&lt;img src=x onerror=alert(1)&gt;") >= 20


def test_evaluate_whose_every_model_failed_exits_2_and_writes_nothing(tiny_data, tiny_model, tmp_path, capsys,
                                                                      monkeypatch):
    """A model that loads and then fails on the test set is reported beside the others; when it is the only one,
    there is no result: exit 2 and no report."""
    from diffusionct.standardize import Standardizer

    def fail(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Standardizer, "standardize_slices", fail)
    report = tmp_path / "report"
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "-o", str(report), "--device", "cpu",
                 "--workers", "1", "--max-cases", "1"]) == 2
    err = capsys.readouterr().err
    assert "every model failed (run: RuntimeError: out of memory)" in err and not report.exists()


@pytest.mark.parametrize("count", ["0", "-1"])
def test_evaluate_refuses_a_max_cases_below_one(tiny_data, tiny_model, tmp_path, capsys, count):
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "-o", str(tmp_path / "r"),
                 "--max-cases", count]) == 2
    assert "--max-cases must be at least 1" in capsys.readouterr().err and not (tmp_path / "r").exists()
