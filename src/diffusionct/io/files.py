"""File-system helpers shared by every writer: folder walks and all-or-nothing outputs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from diffusionct.errors import InputError

IGNORED_NAMES = {".DS_Store", "Thumbs.db", "DICOMDIR"}


def iter_files(folder: Path) -> Iterator[Path]:
    """Every regular file under ``folder`` in a stable (sorted) order, hidden files and DICOMDIR left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name in IGNORED_NAMES:
                continue
            yield Path(root) / name


def check_output_free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(path, "output already exists; choose another path or pass --overwrite")


@contextlib.contextmanager
def atomic_output_dir(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    check_output_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_output_file(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` (same suffixes); renamed onto ``path`` on success."""
    path = Path(path)
    if not overwrite:
        check_output_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_output_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: Path, what: str) -> dict:
    """A JSON file's content; a clear error names the file and what it should have been."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"corrupt {what}: not valid JSON ({exc})") from None
