"""Building damaged inputs and checking outcomes: the input untouched, one clean error, nothing half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom

from diffusionct.cli import main


def tree_digest(path: Path) -> str:
    """A hash of every file name, mode and byte under ``path`` (or of the file itself)."""
    digest = hashlib.sha256()
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in paths:
        digest.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of the command run in this process: an exception other than the clean
    one-line error escapes and fails the test, as a traceback would show the user."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and one line that starts with 'error:' and holds every fragment."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def leftovers(folder: Path) -> list[Path]:
    """Hidden partial outputs left in ``folder`` (a killed or failed write)."""
    return sorted(p for p in folder.rglob(".*partial*"))


def edit_slice(path: Path, **values) -> None:
    """Set header attributes of one DICOM file (``None`` deletes the attribute)."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def set_raw_element(path: Path, keyword: str, raw: bytes) -> None:
    """Store ``raw`` as the element's value bytes, unvalidated: a malformed file as some vendors write."""
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.tag import Tag

    ds = pydicom.dcmread(path)
    tag = Tag(tag_for_keyword(keyword))
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)
    ds.save_as(path)
