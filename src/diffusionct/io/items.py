"""Named items of a folder: NIfTI/NRRD/MHA files and DICOM series sub-folders, matched across folders."""

from __future__ import annotations

from pathlib import Path

from diffusionct.errors import InputError
from diffusionct.io.image import ITK_SUFFIXES


def item_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(ITK_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_items(folder: str | Path) -> dict[str, Path]:
    """``{name: path}`` of the image files and sub-folders directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    items = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or path.name.lower().endswith(ITK_SUFFIXES):
            items[item_name(path)] = path
    if not items:
        raise InputError(folder, "holds no NIfTI/NRRD/MHA file and no series sub-folder")
    return items


def match_items(**folders: str | Path) -> dict[str, dict[str, Path]]:
    """Items present under the same name in every folder: ``{name: {folder label: path}}``.

    Raises when a name of the first folder is missing from another one, listing the names.
    """
    listings = {label: list_items(path) for label, path in folders.items()}
    first_label, first = next(iter(listings.items()))
    for label, items in listings.items():
        missing = sorted(set(first) - set(items))
        if missing:
            raise InputError(folders[label], f"has no item for {', '.join(missing)} (present in the {first_label} folder)")
    return {name: {label: listings[label][name] for label in listings} for name in first}


def read_batch_csv(path: str | Path) -> list[tuple[Path, Path, int | None]]:
    """The rows of a pyradiomics batch file: ``Image`` and ``Mask`` paths (relative to the file's folder, or absolute)
    and an optional ``Label`` (empty: every label of the mask); other columns are ignored."""
    from diffusionct.io.files import read_csv_rows

    path = Path(path)
    header, *body = read_csv_rows(path, "batch file") or [[]]
    rows = [dict(zip(header, row)) for row in body]
    if not rows or not {"Image", "Mask"} <= set(header):
        raise InputError(path, "a batch file needs the columns Image and Mask (and optionally Label), as pyradiomics' does")
    out = []
    for number, row in enumerate(rows, 2):
        image, mask, label = ((row.get(column) or "").strip() for column in ("Image", "Mask", "Label"))
        if not image or not mask:
            raise InputError(path, f"row {number}: Image and Mask are both needed")
        if label and not label.isdigit():
            raise InputError(path, f"row {number}: Label '{label}' is not a whole number")
        image_path, mask_path = (p if p.is_absolute() else path.parent / p for p in (Path(image), Path(mask)))
        out.append((image_path, mask_path, int(label) if label else None))
    return out
