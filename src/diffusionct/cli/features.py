"""`diffusionct features`: radiomic features (six classes) of the tumours in a mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusionct.config import FEATURE_PRESETS
from diffusionct.errors import DiffusionCTError


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def case_jobs(name: str, image_path: Path, mask_path: Path, roi: str | None, settings, series: str | None = None,
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
        return case_jobs(args.image.name, args.image, args.mask, args.roi, settings, args.series)
    from diffusionct.io.items import read_batch_csv

    rows = read_batch_csv(args.batch)
    names = [image.name for image, _, _ in rows]
    jobs, failures = [], []
    for number, (image, mask, label) in enumerate(rows, 1):
        name = image.name if names.count(image.name) == 1 else f"{number}:{image.name}"
        try:
            jobs += case_jobs(name, image, mask, args.roi, settings, args.series, label)
        except DiffusionCTError as exc:
            failures.append(f"row {number + 1}: {exc}")
            print(f"warning: {args.batch}: {failures[-1]}")
    if not jobs:
        why = failures[0] if failures else "every labelled region is smaller than the minimum ROI size"
        raise DiffusionCTError(f"{args.batch}: no tumour to describe ({why})")
    return jobs


def run(args: argparse.Namespace) -> int:
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
