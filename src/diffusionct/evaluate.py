"""Evaluation as in the paper: standardize held-out source-kernel series with every method and judge
the tumours' radiomic features against the real target-kernel series of the same scan.

For every method: the CCC table per feature class (Table 1), the reproducible-feature curve over RE
thresholds (Figure 4), image metrics in HU (RMSE, PSNR, SSIM, high-pass noise ratio, NPS) and a panel
per tumour (Figure 5). The unchanged input is always evaluated as ``input``; a method that fails is
reported as failed and the others go on.

Beside each method: which features it can be trusted on (``radiomics.reliability``: the features it moved by more
than 0.15, checked against the target on these very cases), and, given a training set of other patients, ComBat
(feature-level harmonization onto the target kernel, fitted on the training set's tumours) alone and on top of each
method: the four arms of a study that pools kernels (unchanged, image standardization, ComBat, both).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffusionct.errors import DiffusionCTError
from diffusionct.harmonization import combat_onto_reference
from diffusionct.io.image import read_label_map
from diffusionct.io.manifest import Manifest, gap_slug
from diffusionct.io.volume import Volume
from diffusionct.radiomics import image_metrics
from diffusionct.radiomics.batch import extract_many, tumour_jobs
from diffusionct.radiomics.compare import Comparison, compare_features
from diffusionct.radiomics.features import FeatureSettings
from diffusionct.radiomics.reliability import FeatureReliability, FlagCheck, check_flags, feature_reliability
from diffusionct.standardize import Standardizer, body_mask

log = logging.getLogger(__name__)
INPUT = "input"
COMBAT = "ComBat"
ARMS = ("unchanged", "image standardization", "ComBat", "both")  # what each result is, in a study pooling kernels


@dataclass
class TestCase:
    name: str
    source: Volume
    target: Volume
    labels: np.ndarray


@dataclass
class MethodResult:
    name: str
    model: str
    arm: str = ARMS[1]
    comparison: Comparison | None = None
    image: dict = field(default_factory=dict)
    nps: dict = field(default_factory=dict)
    seconds_per_slice: float = float("nan")
    error: str | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # standardized images by case (none for ComBat)
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # by tumour
    reliability: list[FeatureReliability] = field(default_factory=list)  # per feature: trusted or flagged
    flag_check: FlagCheck | None = None
    notes: list[str] = field(default_factory=list)


def load_test_cases(manifest_path: Path, source_kernel: str, target_kernel: str, max_cases: int | None = None) -> list[TestCase]:
    """Paired test series with tumour masks (the simulator's manifest records them)."""
    manifest = Manifest.read(manifest_path)
    cases = []
    for src, tgt in manifest.oriented_pairs(source_kernel, target_kernel):
        mask_path = manifest.mask_of(tgt) or manifest.mask_of(src)
        if mask_path is None:
            log.warning("pair %s has no tumour mask; skipped", tgt)
            continue
        source, target = manifest.read_volume(src), manifest.read_volume(tgt)
        labels = read_label_map(manifest.resolve(mask_path), target)
        cases.append(TestCase(str(Path(src).parent), source, target, labels))
        if max_cases and len(cases) >= max_cases:
            break
    if not cases:
        raise DiffusionCTError(f"{manifest_path}: no {source_kernel} -> {target_kernel} test pairs with tumour masks; "
                               "make a test set with `diffusionct simulate`")
    return cases


def tumour_features(cases: list[TestCase], images: dict[str, np.ndarray], settings: FeatureSettings, workers: int | None):
    jobs = [job for case in cases for job in tumour_jobs(case.name, images[case.name], case.labels, case.target.spacing, settings)]
    features, errors = extract_many(jobs, settings, workers=workers, progress=False)
    for key, message in errors.items():
        log.warning("features of %s: %s", key, message)
    return features


def _mean_nps(cases: list[TestCase], images: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Radial NPS of the high-passed images in the target's soft tissue, averaged over cases (NaN where undefined)."""
    curves = []
    for case in cases:
        soft = body_mask(case.target.hu) & (case.target.hu > -900) & (np.abs(case.target.hu) < 200)
        freqs, nps = image_metrics.radial_nps(images[case.name], soft, case.target.spacing[0], patch=16)
        curves.append(nps)
    stacked = np.stack(curves)
    defined = np.isfinite(stacked).any(axis=0)  # frequencies with at least one patch inside soft tissue
    mean = np.full(stacked.shape[1], np.nan)
    mean[defined] = np.nanmean(stacked[:, defined], axis=0)
    return freqs, mean


def target_nps_curve(cases: list[TestCase]) -> dict:
    """The target kernel's mean NPS over the cases (the curve every method's is compared with)."""
    freqs, nps = _mean_nps(cases, {c.name: c.target.hu for c in cases})
    return {"frequency": freqs.tolist(), "nps": nps.tolist()}


def image_metrics_summary(cases: list[TestCase], images: dict[str, np.ndarray]) -> tuple[dict, dict]:
    values = {"rmse_hu": [], "psnr_db": [], "ssim": [], "high_pass_ratio": [], "interslice_ratio": []}
    for case in cases:
        body = body_mask(case.target.hu) & (case.target.hu > -900)
        out = images[case.name]
        values["rmse_hu"].append(image_metrics.rmse(out, case.target.hu, body))
        values["psnr_db"].append(image_metrics.psnr(np.where(body, out, 0), np.where(body, case.target.hu, 0)))
        values["ssim"].append(image_metrics.ssim(out, case.target.hu))
        soft = body & (np.abs(case.target.hu) < 200)
        values["high_pass_ratio"].append(image_metrics.high_pass_ratio(out, case.target.hu, soft))
        values["interslice_ratio"].append(image_metrics.interslice_ratio(out, case.target.hu, body))
    summary = {k: float(np.mean(v)) for k, v in values.items()}
    freqs, mean_nps = _mean_nps(cases, images)
    _, target_nps = _mean_nps(cases, {c.name: c.target.hu for c in cases})
    both = np.isfinite(mean_nps) & np.isfinite(target_nps)
    # the shape of the noise spectrum against the target's (1: the same texture up to a scale)
    summary["nps_correlation"] = float(np.corrcoef(mean_nps[both], target_nps[both])[0, 1]) if both.sum() > 2 else float("nan")
    return summary, {"frequency": freqs.tolist(), "nps": mean_nps.tolist()}


@dataclass
class GapEvaluation:
    """One kernel gap of an evaluation: its test pairs, the target kernel's features and every method's result."""

    source_kernel: str
    target_kernel: str
    cases: list[TestCase]
    standard: dict
    results: list[MethodResult]

    @property
    def name(self) -> str:
        return f"{self.source_kernel} -> {self.target_kernel}"

    @property
    def slug(self) -> str:
        return gap_slug(self.source_kernel, self.target_kernel)


def _load_standardizers(model_dirs: list[Path], names: list[str] | None, device: str):
    loaded: list[tuple[str, Path, Standardizer | Exception]] = []
    for index, folder in enumerate(model_dirs):
        name = names[index] if names else Path(folder).name
        try:
            loaded.append((name, Path(folder), Standardizer.load(folder, device)))
        except DiffusionCTError as exc:
            loaded.append((name, Path(folder), exc))
    if not any(isinstance(s, Standardizer) for _, _, s in loaded):
        raise DiffusionCTError("no model could be loaded: " + "; ".join(str(s) for _, _, s in loaded))
    return loaded


def evaluate(manifest: Path, model_dirs: list[Path], steps: int | None = None, seed: int = 0, device: str = "auto",
             workers: int | None = None, settings: FeatureSettings | None = None, max_cases: int | None = None,
             names: list[str] | None = None, temperature: float | None = None,
             combat_train: Path | None = None) -> list[GapEvaluation]:
    """Standardize every test case with every model and compare tumour features with the target kernel's.

    Models of different kernel gaps are evaluated each on its own gap's test pairs (one GapEvaluation per
    gap, in the order the models were given); a model that cannot be loaded is reported with the first gap.
    ``combat_train``: a paired set of other patients (its manifest) to fit ComBat on; adds the ComBat arms."""
    settings = settings or FeatureSettings.load()
    standardizers = _load_standardizers(model_dirs, names, device)
    by_gap: dict[tuple[str, str], list] = {}
    for entry in standardizers:
        if isinstance(entry[2], Standardizer):
            by_gap.setdefault((entry[2].source_kernel, entry[2].target_kernel), []).append(entry)
    failed = [entry for entry in standardizers if not isinstance(entry[2], Standardizer)]
    gaps = []
    for index, ((source_kernel, target_kernel), members) in enumerate(by_gap.items()):
        cases = load_test_cases(manifest, source_kernel, target_kernel, max_cases)
        log.info("%s -> %s: %d test cases; the target kernel's tumour features first, then the input and %d method(s)",
                 source_kernel, target_kernel, len(cases), len(members))
        standard = tumour_features(cases, {c.name: c.target.hu for c in cases}, settings, workers)
        entries = [(INPUT, Path("-"), None), *members, *(failed if index == 0 else [])]
        results = [_evaluate_method(name, folder, standardizer, cases, standard, settings, steps, seed, workers, temperature)
                   for name, folder, standardizer in entries]
        for result in results[1:]:
            _judge_reliability(result, results[0], standard)
        if combat_train is not None:
            results += combat_arms(Path(combat_train), manifest, cases, source_kernel, target_kernel, results, entries, standard,
                                   settings, steps, seed, workers, temperature)
        gaps.append(GapEvaluation(source_kernel, target_kernel, cases, standard, results))
    return gaps


def _evaluate_method(name: str, folder: Path, standardizer: Standardizer | Exception | None, cases: list[TestCase],
                     standard: dict, settings: FeatureSettings, steps: int | None, seed: int, workers: int | None,
                     temperature: float | None = None) -> MethodResult:
    """One method on one gap (``standardizer`` None: the unchanged input; an exception: a model that failed to load)."""
    result = MethodResult(name, str(folder), ARMS[0] if standardizer is None else ARMS[1])
    try:
        if isinstance(standardizer, Exception):
            raise standardizer
        start = time.perf_counter()
        if standardizer is None:
            outputs = {c.name: c.source.hu for c in cases}
        else:
            outputs = {c.name: standardizer.standardize_slices(c.source.hu, steps=steps, seed=seed, pixel_mm=c.source.pixel_mm,
                                                               temperature=temperature)
                       for c in cases}
        slices = sum(c.source.shape[0] for c in cases)
        result.seconds_per_slice = (time.perf_counter() - start) / slices if standardizer else 0.0
        result.outputs = outputs
        result.image, result.nps = image_metrics_summary(cases, outputs)
        result.features = tumour_features(cases, outputs, settings, workers)
        result.comparison = compare_features(standard, result.features)
        log.info("%s: %d slices standardized and compared, %.1f %% of the tumour features within RE 0.15 (%.0f s)",
                 name, slices, 100 * result.comparison.reproducible_share, time.perf_counter() - start)
    except Exception as exc:  # a failing method is reported, the others still run
        result.error = f"{exc.__class__.__name__}: {exc}"
        log.error("method %s failed: %s", name, result.error)
        log.debug("%s", traceback.format_exc())
    return result


def _judge_reliability(result: MethodResult, unchanged: MethodResult, standard: dict) -> None:
    """Which features ``result``'s method moved too far to be trusted, and how that fares against the target here."""
    if result.comparison is None or unchanged.comparison is None:
        return
    try:
        result.reliability = feature_reliability(unchanged.features, result.features)
        result.flag_check = check_flags(result.reliability, standard, result.features)
    except DiffusionCTError as exc:
        result.notes.append(f"feature reliability not judged: {exc}")


def combat_arms(train_manifest: Path, test_manifest: Path, cases: list[TestCase], source_kernel: str, target_kernel: str,
                results: list[MethodResult], entries: list, standard: dict, settings: FeatureSettings, steps: int | None,
                seed: int, workers: int | None, temperature: float | None) -> list[MethodResult]:
    """ComBat onto the target kernel, fitted on the training set's tumours (their ``source_kernel`` features beside
    their ``target_kernel`` ones) and applied to the test tumours: on the unchanged input (``ComBat``) and on each
    method's features (``METHOD + ComBat``, fitted on the training tumours standardized by that method)."""
    train_cases = load_test_cases(train_manifest, source_kernel, target_kernel)
    _check_disjoint(train_manifest, test_manifest, train_cases, cases)
    log.info("ComBat: the %d training cases' tumour features (target kernel, then the input and each method)", len(train_cases))
    train_target = tumour_features(train_cases, {c.name: c.target.hu for c in train_cases}, settings, workers)
    standardizers = {name: standardizer for name, _, standardizer in entries}
    arms = []
    for result in (r for r in results if r.comparison is not None):
        standardizer = standardizers.get(result.name)  # None: the unchanged input
        arm = MethodResult(COMBAT if standardizer is None else f"{result.name} + {COMBAT}", f"ComBat fitted on {train_manifest}",
                           ARMS[2] if standardizer is None else ARMS[3])
        try:
            images = {c.name: c.source.hu if standardizer is None else
                      standardizer.standardize_slices(c.source.hu, steps=steps, seed=seed, pixel_mm=c.source.pixel_mm,
                                                      temperature=temperature) for c in train_cases}
            train = {source_kernel: tumour_features(train_cases, images, settings, workers), target_kernel: train_target}
            arm.features, passed = combat_onto_reference(train, target_kernel, result.features, source_kernel)
            arm.comparison = compare_features(standard, arm.features)
            arm.seconds_per_slice = 0.0 if standardizer is None else result.seconds_per_slice
            arm.notes.append(f"{arm.name}: fitted on {len(train[source_kernel])} + {len(train_target)} training tumours; "
                             f"{passed} feature(s) ComBat cannot scale (constant or not finite) left as they were")
            log.info("%s: %.1f %% of the tumour features within RE 0.15", arm.name, 100 * arm.comparison.reproducible_share)
        except Exception as exc:  # reported like a failing method
            arm.error = f"{exc.__class__.__name__}: {exc}"
            log.error("%s failed: %s", arm.name, arm.error)
        arms.append(arm)
    return arms


def _check_disjoint(train_manifest: Path, test_manifest: Path, train: list[TestCase], test: list[TestCase]) -> None:
    """ComBat measured on the tumours it was fitted on would flatter it: the two sets must share no series."""
    if Path(train_manifest).resolve() == Path(test_manifest).resolve():
        raise DiffusionCTError("the ComBat training set is the test set: give a paired set of other patients "
                               "(e.g. another `diffusionct simulate` run) with --combat-train")
    def digest(case: TestCase) -> str:
        return hashlib.sha256(np.ascontiguousarray(case.source.hu).tobytes()).hexdigest()

    tested = {digest(c): c.name for c in test}
    shared = [f"{c.name} (test: {tested[digest(c)]})" for c in train if digest(c) in tested]
    if shared:
        raise DiffusionCTError(f"the ComBat training set holds test series ({', '.join(shared[:3])}): fit ComBat on "
                               "other patients than the test set's")


def results_table(gap: GapEvaluation) -> list[dict]:
    """One row per method of a gap with every headline number (what the report, CSV and JSON show)."""
    rows = []
    for r in gap.results:
        row: dict = {"method": r.name, "arm": r.arm, "source_kernel": gap.source_kernel, "target_kernel": gap.target_kernel,
                     "model": r.model, "status": "failed" if r.error else "ok", "error": r.error or ""}
        if r.comparison is not None:
            summary = r.comparison.summary()
            row["reproducible_share"] = summary["reproducible_share_re_below_0_15"]
            row["concordant_share"] = summary["concordant_share_ccc_0_85"]
            if r.flag_check is not None:
                row["trusted_features"] = r.flag_check.trusted
                row["reliability_auc"] = r.flag_check.auc
            row["tumours"] = summary["tumours"]
            row["features"] = summary["features_per_tumour"]
            for cls, values in summary["ccc_table"].items():
                row[f"ccc_{cls}_mean"] = values["mean"]
                row[f"ccc_{cls}_std"] = values["std"]
            row.update(r.image)
            row["seconds_per_slice"] = r.seconds_per_slice
        rows.append(row)
    return rows


def save_results_json(path: Path, rows: list[dict], extra: dict) -> None:
    from diffusionct.io.files import write_text_atomic

    write_text_atomic(path, json.dumps({"methods": rows, **extra}, indent=2, default=float))
