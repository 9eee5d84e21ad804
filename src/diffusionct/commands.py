"""Subcommands beyond ``info`` and ``scan``, each importing its heavy modules only when run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusionct.config import FEATURE_PRESETS, METHODS
from diffusionct.errors import DiffusionCTError


def _csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _pair(values: list[float] | None, option: str) -> tuple[float, float] | None:
    if values is None:
        return None
    if len(values) != 2:
        raise DiffusionCTError(f"{option} takes two numbers LOW,HIGH; got {len(values)}")
    return values[0], values[1]


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from diffusionct.devices import resolve_device
    from diffusionct.io.image import read_mask, read_volume
    from diffusionct.io.scan import scan_folder
    from diffusionct.simulate.scanner import ScannerSettings
    from diffusionct.simulate.simulator import DomainRandomization, SimulationConfig, Simulator

    overrides = {"size": args.size, "pixel_mm": args.pixel_mm, "n_views": args.views, "mas": args.mas,
                 "bowtie_strength": args.bowtie, "tcm_strength": args.tcm}
    scanner = replace(ScannerSettings(), **{k: v for k, v in overrides.items() if v is not None})
    randomize = DomainRandomization(mas=_pair(args.dose_range, "--dose-range"), pixel_mm=_pair(args.pixel_range, "--pixel-range"),
                                    kernel_jitter=args.kernel_jitter)
    config = SimulationConfig(cases=args.cases, kernels=args.kernels, thicknesses_mm=args.thickness, slices=args.slices,
                              seed=args.seed, scanner=scanner, n_tumours=args.tumours, randomize=randomize,
                              rescan=args.rescan, profiles=[str(p) for p in args.profiles])
    simulator = Simulator(config, device=str(resolve_device(args.device)))
    if args.from_ct:
        found = scan_folder(args.from_ct) if args.from_ct.is_dir() and not args.series else []
        if len(found) > 1 and args.from_mask:
            raise DiffusionCTError(f"{args.from_ct} holds several series: --from-mask needs one, chosen with --series UID")
        if len(found) > 1:  # a folder tree: every series is a case
            sources = [(read_volume(info.path, info.series_uid), None) for info in found]
        else:
            volume = read_volume(args.from_ct, args.series)
            sources = [(volume, read_mask(args.from_mask, volume, args.roi) if args.from_mask else None)]
        manifest = simulator.run_from_cts(sources, args.output, overwrite=args.overwrite)
    else:
        manifest = simulator.run_phantoms(args.output, overwrite=args.overwrite)
    print(f"simulated series written to {args.output}; manifest: {manifest}")
    return 0


def _case_jobs(name: str, image_path: Path, mask_path: Path, roi: str | None, settings, series: str | None = None,
               label: int | None = None):
    from diffusionct.io.image import read_label_map, read_volume
    from diffusionct.radiomics.batch import tumour_jobs

    volume = read_volume(image_path, series)
    labels = read_label_map(mask_path, volume, roi)
    if label is not None:
        if not (labels == label).any():
            raise DiffusionCTError(f"{mask_path}: no voxel of label {label} (labels: {sorted(set(labels[labels > 0].tolist()))})")
        labels = labels * (labels == label)
    if not labels.any():
        raise DiffusionCTError(f"{mask_path}: the mask is empty")
    return tumour_jobs(name, volume.hu, labels, volume.spacing, settings)


def _feature_jobs(args: argparse.Namespace, settings) -> list:
    """The tumours of ``-i/-m``, or of every row of a pyradiomics batch file (a row that cannot be read is a
    warning, as in pyradiomics' batch mode, unless every row fails)."""
    single = args.image is not None or args.mask is not None
    if (args.batch is not None and single) or (args.batch is None and (args.image is None or args.mask is None)):
        raise DiffusionCTError("give -i IMAGE -m MASK, or --batch CASES.csv (pyradiomics' Image,Mask[,Label] file), not both")
    if args.batch is None:
        return _case_jobs(args.image.name, args.image, args.mask, args.roi, settings, args.series)
    from diffusionct.io.items import read_batch_csv

    rows = read_batch_csv(args.batch)
    names = [image.name for image, _, _ in rows]
    jobs, failures = [], []
    for number, (image, mask, label) in enumerate(rows, 1):
        name = image.name if names.count(image.name) == 1 else f"{number}:{image.name}"
        try:
            jobs += _case_jobs(name, image, mask, args.roi, settings, args.series, label)
        except DiffusionCTError as exc:
            failures.append(f"row {number + 1}: {exc}")
            print(f"warning: {args.batch}: {failures[-1]}")
    if not jobs:
        why = failures[0] if failures else "every labelled region is smaller than the minimum ROI size"
        raise DiffusionCTError(f"{args.batch}: no tumour to describe ({why})")
    return jobs


def _cmd_features(args: argparse.Namespace) -> int:
    from diffusionct.io.files import write_text_atomic
    from diffusionct.radiomics.batch import extract_many
    from diffusionct.radiomics.compare import features_csv
    from diffusionct.radiomics.features import FeatureSettings, check_pyradiomics_names, pyradiomics_names
    from diffusionct.radiomics.ibsi import ibsi_values

    if args.output.is_dir():
        raise DiffusionCTError(f"{args.output}: is a folder; give a CSV file name for the features")
    settings = FeatureSettings.load(args.params)
    if args.names == "pyradiomics":  # before the work, not after
        check_pyradiomics_names(settings.dimensions)
    jobs = _feature_jobs(args, settings)
    if not jobs:
        raise DiffusionCTError(f"{args.mask}: every labelled region is smaller than the minimum ROI size")
    features, errors = extract_many(jobs, settings, workers=args.workers, scheduler=args.scheduler)
    for key, message in errors.items():
        print(f"warning: {key}: {message}")
    if not features:
        raise DiffusionCTError(f"{args.image or args.batch}: no features computed: {'; '.join(errors.values())}")
    if args.names == "pyradiomics":
        written = {key: pyradiomics_names(values) for key, values in features.items()}
    else:
        written = features
    write_text_atomic(args.output, features_csv(written))
    ibsi = args.output.with_name(args.output.stem + ".ibsi.csv")  # the same tumours, IBSI tags and definitions
    write_text_atomic(ibsi, features_csv({key: ibsi_values(values) for key, values in features.items()}))
    print(f"{len(features)} tumour(s) x {len(next(iter(features.values())))} features written to {args.output} "
          f"(IBSI-tagged ones also in {ibsi.name})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from diffusionct.io.files import check_output_free
    from diffusionct.io.items import match_items
    from diffusionct.radiomics.batch import extract_many
    from diffusionct.radiomics.compare import compare_features, write_comparison
    from diffusionct.radiomics.features import FeatureSettings

    check_output_free(args.output, args.overwrite)
    settings = FeatureSettings.load(args.params)
    matched = match_items(reference=args.reference, test=args.test, masks=args.masks)
    feature_sets = {}
    for role in ("reference", "test"):
        jobs = [job for name, paths in matched.items() for job in _case_jobs(name, paths[role], paths["masks"], args.roi, settings)]
        feature_sets[role], errors = extract_many(jobs, settings, workers=args.workers)
        for key, message in errors.items():
            print(f"warning: {role} {key}: {message}")
    result = compare_features(feature_sets["reference"], feature_sets["test"])
    write_comparison(result, args.output, overwrite=args.overwrite)
    print(f"{len(result.tumours)} tumours, {len(result.feature_names)} features; "
          f"RE < 0.15: {100 * result.reproducible_share:.1f} %")
    for cls, row in result.ccc_table.items():
        print(f"  CCC {cls:6s} {row['mean']:.3f} +/- {row['std']:.3f}  ({row['features']} features)")
    print(f"written to {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from diffusionct.config import RunConfig
    from diffusionct.devices import training_device
    from diffusionct.train.methods import train_method
    from diffusionct.train.trainer import init_distributed

    overrides = [*args.set, *(f"data.{key}_kernel={kernel}" for key, kernel in (("source", args.source), ("target", args.target))
                              if kernel)]
    device = training_device(args.device, distributed=init_distributed())
    if args.phase == "predictor":
        return _train_library_gap(args, overrides, device)
    if args.profiles and args.method not in ("kernel-filter", "diffusionct"):
        raise DiffusionCTError("--profiles goes with --method kernel-filter or diffusionct (simulate takes profiles too)")
    if args.data is None and args.method != "kernel-filter":
        raise DiffusionCTError(f"--method {args.method} trains on data: give --data MANIFEST")
    config = RunConfig.load(args.config, overrides)
    train_method(args.method, args.data, args.output, config, device, resume=args.resume, overwrite=args.overwrite,
                 phase=args.phase, profiles=tuple(args.profiles))
    print(f"{args.method} model written to {args.output}")
    return 0


def _train_library_gap(args: argparse.Namespace, overrides: list[str], device) -> int:
    from diffusionct.train.library_gap import train_library_gap

    if args.method != "diffusionct" or args.config is not None:
        raise DiffusionCTError("--phase predictor trains a DiffusionCT gap with the library's own settings: "
                               "drop --method and --config (--set may change the seed and diffusion.predictor_training)")
    folder = train_library_gap(args.data, args.output, overrides, device, resume=args.resume, overwrite=args.overwrite,
                               profiles=tuple(args.profiles))
    print(f"gap written to {folder}; standardize with --model {folder.parent} --to KERNEL")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from diffusionct.io.files import check_output_free, write_text_atomic
    from diffusionct.kernels.profiles import profiles_document

    if args.output.suffix.lower() != ".json":
        raise DiffusionCTError(f"{args.output}: give a .json file name for the kernel profiles")
    if args.unpaired and args.reference:
        raise DiffusionCTError("--reference names the kernel same-scan pairs are measured against; --unpaired measures "
                               "every kernel on its own: drop one of them")
    picture = args.output.with_suffix(".png")
    for path in (args.output, picture):  # the output apart from the inputs: the command line's guard (cli.main)
        check_output_free(path, args.overwrite)
    if args.unpaired:
        return _calibrate_unpaired(args, picture)
    from diffusionct.kernels.calibrate import calibrate_paired, plot_calibration

    calibration = calibrate_paired(args.input, reference=args.reference, vendor=args.vendor,
                                   profile_files=tuple(args.profiles), seed=args.seed)
    m = calibration.measurement
    plot_calibration(calibration, picture)
    write_text_atomic(args.output, profiles_document(calibration.profiles, reference=m.reference))
    print(f"{calibration.scans} scan(s), {m.rois} soft-tissue ROIs at {m.pixel_mm:.3f} mm; transfer to {m.reference}:")
    _print_table(m.frequencies, m.transfer)
    _print_profile_use(args.output, picture)
    return 0


def _calibrate_unpaired(args: argparse.Namespace, picture: Path) -> int:
    from tqdm import tqdm

    from diffusionct.io.files import write_text_atomic
    from diffusionct.kernels.calibrate import calibrate_unpaired, plot_unpaired
    from diffusionct.kernels.profiles import profiles_document

    with tqdm(desc="series", unit="series", disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(1)

        calibration = calibrate_unpaired(args.input, vendor=args.vendor, seed=args.seed, force=args.force, progress=progress)
    m = calibration.measurement
    plot_unpaired(calibration, picture)
    write_text_atomic(args.output, profiles_document(calibration.profiles, pairing="unpaired"))
    print(", ".join(f"{k}: {m.patients(k)} patient(s), {m.rois(k)} ROIs" for k in sorted(m.series)) + "; windows:")
    _print_table(m.frequencies, {p.name: p.window_at(m.frequencies) for p in calibration.profiles})
    _print_profile_use(args.output, picture)
    return 0


def _print_table(frequencies, curves: dict) -> None:
    print("  f (c/mm) " + " ".join(f"{k:>9s}" for k in curves))
    for i, f in enumerate(frequencies):
        print(f"  {f:8.3f} " + " ".join(f"{c[i]:9.3f}" for c in curves.values()))


def _print_profile_use(output: Path, picture: Path) -> None:
    print(f"profiles written to {output} (curves: {picture.name}); use them with "
          f"`diffusionct train --method kernel-filter --profiles {output} --from K --to K` or "
          f"`diffusionct simulate --profiles {output} --kernels K,K`")


def _cmd_reliability(args: argparse.Namespace) -> int:
    from diffusionct.io.files import check_output_free, write_text_atomic
    from diffusionct.radiomics.reliability import CHANGE_THRESHOLD, feature_reliability, read_feature_csv, reliability_csv

    check_output_free(args.output, args.overwrite)
    threshold = CHANGE_THRESHOLD if args.threshold is None else args.threshold
    rows = feature_reliability(read_feature_csv(args.before), read_feature_csv(args.after), threshold)
    write_text_atomic(args.output, reliability_csv(rows))
    flagged = sum(r.flagged for r in rows)
    print(f"{len(rows) - flagged} of {len(rows)} features trusted, {flagged} flagged (the standardization moved them by "
          f"more than {threshold:g} of their value, median over the tumours); written to {args.output}")
    return 0


def _cmd_harmonize(args: argparse.Namespace) -> int:
    from diffusionct.harmonization import ComBat, FeatureTable
    from diffusionct.io.files import check_output_free

    check_output_free(args.output, args.overwrite)
    covariates = [c.strip() for c in args.covariates.split(",") if c.strip()] if args.covariates else []
    if args.action == "fit":
        if args.model:
            raise DiffusionCTError("--model is what `harmonize apply` reads; `harmonize fit` writes its model to -o")
        table = FeatureTable.read(args.input, args.batch, covariates)
        combat = ComBat.fit(table.values, table.batches, table.features, table.covariates, covariates, args.reference)
        combat.save(args.output)
        print(f"ComBat fitted on {len(table.ids)} samples of {len(combat.batches)} batches ({', '.join(combat.batches)}), "
              f"{len(combat.features)} features; written to {args.output}; apply it with `diffusionct harmonize apply "
              f"-i TABLE --batch {args.batch} --model {args.output} -o OUT.csv`")
        return 0
    if not args.model:
        raise DiffusionCTError("harmonize apply needs --model, the file `harmonize fit` wrote")
    if covariates or args.reference:
        raise DiffusionCTError("--covariates and --reference are fixed when fitting; harmonize apply reads the fitted model's")
    combat = ComBat.load(args.model)
    table = FeatureTable.read(args.input, args.batch, combat.covariates, combat.features)
    table.write(args.output, combat.apply(table.values, table.batches, table.covariates))
    print(f"{len(table.ids)} samples x {len(combat.features)} features harmonized to {args.output}")
    return 0


def _cmd_standardize(args: argparse.Namespace) -> int:
    from diffusionct.standardize_runs import run_standardize

    results = run_standardize(args.input, args.output, model_dir=args.model, steps=args.steps, seed=args.seed,
                              device=args.device, batch_size=args.batch_size, output_format=args.format,
                              strict=args.strict, overwrite=args.overwrite, series_uid=args.series,
                              scheduler=args.scheduler, target_kernel=args.target_kernel,
                              source_kernel=args.source_kernel, temperature=args.temperature, pixel_mm=args.pixel_mm)
    for result in results:
        status = "skipped (already done)" if result.skipped else f"{result.seconds:.1f} s, {result.seconds_per_slice:.2f} s/slice"
        print(f"{result.input} -> {result.output}: {result.slices} slices, {status}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from diffusionct.io.files import atomic_output_dir
    from diffusionct.report.evaluation_report import evaluate_to_report

    if args.max_cases is not None and args.max_cases < 1:
        raise DiffusionCTError(f"--max-cases must be at least 1, got {args.max_cases} (leave it out for every test pair)")
    with atomic_output_dir(args.output, overwrite=args.overwrite) as tmp:
        report = evaluate_to_report(args.data, args.model, tmp, steps=args.steps, seed=args.seed, device=args.device,
                                    workers=args.workers, max_cases=args.max_cases, params=args.params,
                                    temperature=args.temperature, combat_train=args.combat_train)
        models = [m for m in json.loads((tmp / "results.json").read_text())["methods"] if m["arm"] == "image standardization"]
        if models and all(m["status"] != "ok" for m in models):  # a report of nothing is no result
            raise DiffusionCTError(f"every model failed ({models[0]['method']}: {models[0]['error']}); nothing was written")
    print(f"report: {args.output / report.name}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from diffusionct.demo import run_demo

    report = run_demo(args.output, quick=args.quick, overwrite=args.overwrite, device=args.device,
                      budget_s=None if args.budget_minutes is None else 60 * args.budget_minutes)
    print(f"report: {report}")
    return 0


TEMPERATURE_HELP = ("scale of the sampler's start noise, 0-1 (default: the model's): 0 is the deterministic path "
                    "(the seed has no effect), 1 samples the model's distribution")


def register(sub: argparse._SubParsersAction) -> None:
    """Add every further subcommand to the ``diffusionct`` parser."""
    p = sub.add_parser(
        "simulate",
        help="simulate paired-kernel CT series (same noisy sinogram, several kernels)",
        description="Simulate CT acquisitions of random chest phantoms (or of a real CT with --from-ct) and "
                    "reconstruct every kernel from the same noisy sinogram.",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (refused if it exists)")
    p.add_argument("--cases", type=int, default=1, help="number of random phantoms (default 1)")
    p.add_argument("--kernels", type=_csv_list, default=["b30", "b70"],
                   help="comma-separated kernels: the analytic family b10, b30, b50, b70 (the shipped models' training "
                        "kernels; aliases smooth=b30, medium=b50, sharp=b70), or measured profiles by name: B10f, B30f, B50f, "
                        "B70f (Siemens), FC13, FC51 (Canon), or those of --profiles; default b30,b70")
    p.add_argument("--profiles", type=Path, action="append", default=[], metavar="FILE",
                   help="kernel profile file from `diffusionct calibrate` (repeat for several)")
    p.add_argument("--thickness", type=_float_list, default=[1.0], help="comma-separated slice thicknesses in mm")
    p.add_argument("--slices", type=int, default=8, help="slices per series (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    p.add_argument("--size", type=int, help="matrix size (default 512)")
    p.add_argument("--pixel-mm", type=float, help="pixel size in mm (default 0.7)")
    p.add_argument("--views", type=int, help="projections over 180 degrees (default 720)")
    p.add_argument("--mas", type=float, help="dose in mAs (default 100)")
    p.add_argument("--bowtie", type=float, help="bowtie filter strength 0..1 (default 0.5; 0: none)")
    p.add_argument("--tcm", type=float, help="angular tube-current modulation strength 0..1 (default 0.5; 0: constant)")
    p.add_argument("--dose-range", type=_float_list, metavar="LOW,HIGH",
                   help="domain randomization: dose drawn per case, log-uniform in mAs (e.g. 40,300)")
    p.add_argument("--pixel-range", type=_float_list, metavar="LOW,HIGH",
                   help="domain randomization: pixel size (field of view) drawn per case in mm (e.g. 0.6,0.9)")
    p.add_argument("--kernel-jitter", type=float, default=0.0,
                   help="domain randomization: each kernel's frequency axis scaled by 1 +/- this per case (e.g. 0.08)")
    p.add_argument("--tumours", type=int, help="tumours per phantom (default 1-3 at random)")
    p.add_argument("--rescan", type=int, default=0, metavar="K",
                   help="the K-th rescan of the same data set (same --seed and options): same phantoms, doses and "
                        "pixel sizes, new photon noise and series UIDs, for test-retest studies (default 0: the first scan)")
    p.add_argument("--from-ct", type=Path,
                   help="re-simulate this CT (DICOM series, a folder tree of series: one case each, or NIfTI) instead of phantoms")
    p.add_argument("--series", help="series UID when --from-ct holds several")
    p.add_argument("--from-mask", type=Path, help="tumour mask of --from-ct (NIfTI or RTSTRUCT)")
    p.add_argument("--roi", help="RTSTRUCT ROI name for --from-mask")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("features", help="radiomic features (six classes) of the tumours in a mask",
                       description="Features of every labelled tumour (NIfTI label map) or of one RTSTRUCT ROI. --params takes "
                                   "this tool's params YAML or pyradiomics' own (featureClass, imageType, setting).")
    p.add_argument("-i", "--image", type=Path, help="CT: DICOM series folder or NIfTI/NRRD/MHA")
    p.add_argument("-m", "--mask", type=Path, help="label map on the image grid, or an RTSTRUCT file")
    p.add_argument("--batch", type=Path, metavar="CASES.csv",
                   help="instead of -i/-m: pyradiomics' batch file, columns Image, Mask and optionally Label (paths relative "
                        "to the file); a row that cannot be read is a warning")
    p.add_argument("-o", "--output", type=Path, required=True, help="CSV: one row per tumour")
    p.add_argument("--roi", help="RTSTRUCT ROI name")
    p.add_argument("--series", help="series UID when the image folder holds several")
    p.add_argument("--params", type=Path, help="feature settings YAML (default: the shipped params), or a preset name")
    p.add_argument("--preset", dest="params", choices=FEATURE_PRESETS,
                   help="IBSI 1 configuration A-E (interpolation, re-segmentation, discretisation; docs/radiomics.md)")
    p.add_argument("--workers", "--jobs", "-j", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--scheduler", help="one task per tumour on Dask: tcp://HOST:PORT (a running cluster) or local:N "
                                       "(N worker processes here); workers must see the input paths")
    p.add_argument("--names", choices=("diffusionct", "pyradiomics"), default="diffusionct",
                   help="column names: this tool's (GLCM_3D_original_Contrast) or pyradiomics' (original_glcm_Contrast) where "
                        "pyradiomics computes the feature")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("compare", help="feature reproducibility of test images against standard ones (RE, CCC)",
                       description="Items of the same name in --reference, --test and --masks (NIfTI files or DICOM "
                                   "series folders; masks as label maps or RTSTRUCT folders) are compared tumour by tumour.")
    p.add_argument("--reference", type=Path, required=True, help="folder of standard-kernel images")
    p.add_argument("--test", type=Path, required=True, help="folder of test images (same names)")
    p.add_argument("--masks", type=Path, required=True, help="folder of tumour masks (same names)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder for CSV and JSON")
    p.add_argument("--roi", help="RTSTRUCT ROI name")
    p.add_argument("--params", type=Path, help="feature settings YAML, or a preset name (ibsi-a .. ibsi-e)")
    p.add_argument("--workers", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("train", help="train the encoder-decoder (phase 1) and the latent DDPM (phase 2)",
                       description="Phase 1 trains the encoder-decoder on every image of the manifest; phase 2 the "
                                   "conditional latent DDPM on its source->target kernel pairs. Multi-GPU/multi-node: "
                                   "launch with torchrun.")
    p.add_argument("--data", type=Path, help="manifest.json from `diffusionct scan` or `simulate`, the CSV of `scan -o x.csv`, or a "
                   "CSV of images with columns path,kernel,manufacturer[,case] (NIfTI/MHA/DICOM folders); kernel-filter: its "
                   "same-scan pairs calibrate the filter (without --data: the kernels' profiles)")
    p.add_argument("--profiles", type=Path, action="append", default=[], metavar="FILE",
                   help="kernel profile file(s) from `diffusionct calibrate` for kernel-filter, and for a DiffusionCT "
                        "predictor with diffusion.predictor_kernel_filter_from=profiles (default: the shipped profiles)")
    p.add_argument("-o", "--output", type=Path, required=True, help="run folder (the trained model)")
    p.add_argument("--method", default="diffusionct", choices=METHODS,
                   help="what to train: diffusionct (default) or a baseline: identity (no change), histogram "
                        "(histogram matching), kernel-filter (the calibrated linear filter of two kernel profiles, instant), "
                        "autoencoder (encoder-decoder alone), residual-cnn (Choe et al. 2019), "
                        "pix2pix (conditional GAN, GANai/STAN-CT family), cyclegan (unpaired GAN, CVH-CT/UDA-CT family), "
                        "ddpm (image-space conditional DDPM)")
    p.add_argument("--phase", default="all", choices=["autoencoder", "diffusion", "predictor", "all"],
                   help="diffusionct phases; predictor: a new kernel gap for a model library, its predictor trained "
                        "beside the library's shared encoder-decoder and U-Net (-o LIBRARY/NAME inside a copy of the "
                        "shipped library, with --from and --to; about 7 min on a 2-core CPU)")
    p.add_argument("--from", dest="source", metavar="KERNEL", help="source kernel (data.source_kernel)")
    p.add_argument("--to", dest="target", metavar="KERNEL", help="target kernel (data.target_kernel)")
    p.add_argument("--config", type=Path, help="YAML config (see docs/model.md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. phase1.steps=500")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing run folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("calibrate", help="measure kernel profiles from your own reconstructions (same-scan pairs, or --unpaired sets)",
                       description="Finds same-scan kernel pairs under the folders (as `scan` does, also when anonymization "
                                   "broke the UIDs), measures each kernel's transfer to a reference kernel on soft tissue, and "
                                   "writes a kernel profile file (JSON) and a picture of the curves with their spread (PNG). "
                                   "With --unpaired, series of different patients: each kernel's window from its series' own "
                                   "noise spectra, each series' noise level removed, spread by a bootstrap over patients.")
    p.add_argument("-i", "--input", type=Path, action="append", required=True, help="folder tree of DICOM series (repeat for several)")
    p.add_argument("-o", "--output", type=Path, required=True, help="profile file (.json); the picture is written beside it (.png)")
    p.add_argument("--reference", metavar="KERNEL", help="the kernel the others are measured against (default: the smoothest)")
    p.add_argument("--vendor", help="manufacturer recorded in the profiles (default: the series' Manufacturer)")
    p.add_argument("--profiles", type=Path, action="append", default=[], metavar="FILE",
                   help="profile file(s) that may know the reference kernel's own window (default: the shipped profiles)")
    p.add_argument("--unpaired", action="store_true",
                   help="no same-scan pairs: measure each kernel on its own series (different patients; docs/unpaired.md)")
    p.add_argument("--force", action="store_true",
                   help="with --unpaired: write the profiles even when the patients differ as much as the kernels")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap that gives the spread")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("harmonize", help="ComBat on feature tables: fit on one, apply to others (docs/harmonization.md)",
                       description="Feature-level harmonization (ComBat, empirical Bayes), beside image standardization. "
                                   "`fit` estimates each batch's (scanner's, kernel's) location and scale per feature on a "
                                   "training table and writes them as JSON; `apply` harmonizes new tables of those batches.")
    p.add_argument("action", choices=["fit", "apply"])
    p.add_argument("-i", "--input", type=Path, required=True, help="feature CSV: an id column first, a batch column, features")
    p.add_argument("-o", "--output", type=Path, required=True, help="fit: the ComBat file (.json); apply: the harmonized CSV")
    p.add_argument("--batch", required=True, metavar="COLUMN", help="the column naming each sample's batch (e.g. kernel)")
    p.add_argument("--covariates", metavar="A,B", help="fit: numeric columns whose effects ComBat keeps (e.g. age)")
    p.add_argument("--model", type=Path, help="apply: the file `harmonize fit` wrote")
    p.add_argument("--reference", metavar="BATCH", help="fit: bring every batch onto this one (e.g. the standard kernel), "
                                                      "which stays as it is; default: the pooled mean and variance")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_harmonize)

    p = sub.add_parser("reliability", help="which features to trust after standardization (how much it moved each)",
                       description="Per feature, the median over tumours of how much the standardization changed it "
                                   "(|after - before| / |before|), from two tables of `diffusionct features`: the source "
                                   "images' and the standardized images'. A feature moved by more than the threshold is "
                                   "flagged: on the simulated test set such features miss the target kernel's values "
                                   "(RE >= 0.15) far more often (docs/results.md, 'Feature reliability').")
    p.add_argument("--before", type=Path, required=True, help="features of the source images (CSV of `features`)")
    p.add_argument("--after", type=Path, required=True, help="features of the same tumours in the standardized images")
    p.add_argument("-o", "--output", type=Path, required=True, help="CSV: feature, class, median change, trusted")
    p.add_argument("--threshold", type=float, default=None, help="the median change above which a feature is flagged "
                                                                 "(default: the measured one, docs/results.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_reliability)

    p = sub.add_parser("standardize", help="standardize CT series to the model's target kernel",
                       description="Standardize a DICOM series folder, a folder tree of series (the model is loaded "
                                   "once; finished outputs are skipped, so a stopped batch resumes) or a NIfTI file.")
    p.add_argument("-i", "--input", type=Path, required=True, help="DICOM series folder, folder tree, or image file (NIfTI, NRRD, MHA; 2D or 3D)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output series folder (or tree, or .nii.gz)")
    p.add_argument("--model", type=Path, help="model folder, or a folder of model folders (one per kernel gap; each "
                                              "series gets the one for its kernel); default: the shipped model(s)")
    p.add_argument("--to", dest="target_kernel", metavar="KERNEL",
                   help="target kernel (e.g. B50): use the model that standardizes to it (shipped: B70 from B30 or B10, B50, B30)")
    p.add_argument("--from", dest="source_kernel", metavar="KERNEL",
                   help="the input's kernel, when its header has none (NIfTI) or is wrong (default: ConvolutionKernel)")
    p.add_argument("--pixel-mm", type=float, metavar="MM",
                   help="pixel size of an image file whose header has none (a 2D .mha, a bare .nrrd); refused otherwise")
    p.add_argument("--steps", type=int, help="reverse diffusion steps (default: the model's)")
    p.add_argument("--temperature", type=float, help=TEMPERATURE_HELP)
    p.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives identical output")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=4, help="slices per forward pass")
    p.add_argument("--format", default=None, choices=["dicom", "nifti"], help="output format (default: the input's)")
    p.add_argument("--series", help="series UID when the input folder holds several and only one is wanted")
    p.add_argument("--strict", action="store_true", help="refuse inputs whose kernel is not the model's source kernel")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    p.add_argument("--scheduler", help="run one task per series on Dask: tcp://HOST:PORT (a running cluster) or "
                                       "local:N (N worker processes here); default: this process")
    p.set_defaults(func=_cmd_standardize)

    p = sub.add_parser("evaluate", help="standardize a paired test set with each model and report feature reproducibility",
                       description="The paper's evaluation: CCC per feature class, reproducible features over RE "
                                   "thresholds, image metrics and tumour panels, as one HTML report plus CSV and JSON.")
    p.add_argument("--data", type=Path, required=True, help="test manifest with paired series and tumour masks")
    p.add_argument("--model", type=Path, action="append", required=True, help="model folder (repeat for several)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    p.add_argument("--steps", type=int, help="diffusion steps (default: each model's)")
    p.add_argument("--temperature", type=float, help=TEMPERATURE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="feature extraction processes")
    p.add_argument("--max-cases", type=int, help="evaluate at most this many test pairs")
    p.add_argument("--params", type=Path, help="feature settings YAML (default: the shipped params)")
    p.add_argument("--combat-train", type=Path, metavar="MANIFEST",
                   help="a paired set of other patients: fit ComBat on its tumours (onto the target kernel) and add "
                        "the arms ComBat and METHOD + ComBat beside the unchanged input and each method")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="the end-to-end demo on the built-in default (what `make demo` runs)")
    p.add_argument("-o", "--output", type=Path, default=Path("demo-output"), help="demo folder")
    p.add_argument("--quick", action="store_true", help="a small version (its time budget 2.5 minutes, see --budget-minutes)")
    p.add_argument("--budget-minutes", type=float, help="time to fit the demo into on this machine (default 8, --quick 2.5): "
                   "the machine's speed is measured first and the demo scaled down when it would not fit")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_demo)
