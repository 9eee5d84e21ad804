"""Completion records: how a re-run knows an existing output is its own finished work.

A finished output carries a small JSON record of what made it (input, model fingerprint, steps, seed).
A DICOM series folder holds it as the hidden file ``.diffusionct-output.json`` (hidden files are not
read as slices), written in the same rename as the slices; a single-file output (NIfTI) has it beside
it as ``.NAME.diffusionct-output.json``, written after the file. An output without a matching record
(an empty folder, unrelated files, another model's or seed's output, a file cut short by a crash
before its record) is never taken as done.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusionct.io.files import atomic_output_file

RECORD_NAME = ".diffusionct-output.json"


def record_path(output: Path) -> Path:
    """Where the record of ``output`` lives: inside a folder, beside a file."""
    output = Path(output)
    return output / RECORD_NAME if output.is_dir() else output.with_name(f".{output.name}{RECORD_NAME}")


def write_record(output: Path, record: dict) -> None:
    with atomic_output_file(record_path(output)) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))


def read_record(output: Path) -> dict | None:
    """The record of ``output``, or None when it has none (or an unreadable one)."""
    path = record_path(output)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def remove_record(output: Path) -> None:
    record_path(output).unlink(missing_ok=True)
