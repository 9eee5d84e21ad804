"""File-system helpers shared by every writer: folder walks and all-or-nothing outputs."""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

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


def check_output_location(path: Path) -> None:
    """Before any work: the output's nearest existing ancestor is a folder this process can write in
    (a probe file is created and removed), so a long run does not fail at its last step."""
    path = Path(path)
    ancestor = path.parent if path.parent != path else path
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(ancestor, f"is a file, not a folder: cannot write {path} below it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".diffusionct-probe-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(ancestor, f"cannot write here ({exc.strerror or exc}); choose another output") from None


def check_output_apart(output: Path, inputs: list[Path], package: Path | None = None) -> None:
    """Before any work: the output is none of the inputs, holds none of them and lies inside none of them (a
    re-run would read its own output, an --overwrite would delete the input), nor inside ``package`` (the installed
    package, for the command line)."""
    target = Path(output).resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source.exists() and (target == source or source in target.parents or target in source.parents):
            raise InputError(output, f"must not be the input {source}, lie inside it or contain it; choose another output")
    if package is not None and Path(package).resolve() in [target, *target.parents]:
        raise InputError(output, "lies inside the installed diffusionct package; choose an output of your own "
                                 "(to add a gap to the shipped models, copy them first: README)")


def check_output_free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(path, "output already exists; choose another path or pass --overwrite")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _partial_prefix(path: Path) -> str:
    """Temporary outputs are named ``.NAME.partial-PID-random``: the PID tells a later run whether the
    writer is still alive, so what a killed run left behind can be removed."""
    return f".{path.name}.partial-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the temporary outputs for ``path`` that a killed writer left (its PID no longer runs)."""
    removed = []
    parent = Path(path).parent
    if not parent.is_dir():
        return removed
    for candidate in parent.glob(f".{glob.escape(Path(path).name)}.partial-*"):
        pid_text = candidate.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _process_alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True) if candidate.is_dir() else candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _follow_umask(path: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; a finished output gets the modes of any other new file,
    so that a lab group can read results as the user's umask allows."""
    mask = _umask()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_output_dir(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    check_output_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=_partial_prefix(path), dir=path.parent))
    try:
        yield tmp
        _follow_umask(tmp)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_output_file(path: Path, *, overwrite: bool = True, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` (same suffixes); renamed onto ``path`` on success.

    ``verify(tmp)`` runs before the rename and raises when the written file is not complete (some
    writers report a full disk only on stderr)."""
    path = Path(path)
    if not overwrite:
        check_output_free(path, overwrite)
    if path.is_dir():
        raise InputError(path, "is a folder; give a file name for this output")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    suffix = "".join(path.suffixes)
    fd, name = tempfile.mkstemp(prefix=_partial_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        _follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replaced_on_success(path: Path) -> Iterator[None]:
    """Replace the folder ``path`` by what the body writes there: the old one is moved aside first, put
    back if the body fails or is interrupted, and deleted only once the body has succeeded."""
    path = Path(path)
    if not path.exists():
        yield
        return
    # not a ".partial" name: if this process is killed outright, the old folder waits there to be recovered
    # by hand instead of being cleaned up as a dead writer's leftover
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.replaced-{os.getpid()}-", dir=path.parent))
    os.replace(path, aside / "old")
    try:
        yield
    except BaseException:
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(aside / "old", path)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_output_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_csv_rows(path: Path, what: str) -> list[list[str]]:
    """A CSV file's rows, the header first, blank rows left out; a clear error names the file and what it should be."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except FileNotFoundError:
        raise InputError(path, f"no such {what}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"corrupt {what}: not a readable CSV ({exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    return [row for row in rows if any(cell.strip() for cell in row)]


def csv_text(header: list[str], rows) -> str:
    """A CSV file's text: the header, then ``rows`` (iterables of cells)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def read_json(path: Path, what: str) -> dict:
    """A JSON file's content; a clear error names the file and what it should have been."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"no such {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"corrupt {what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(path, f"corrupt {what}: nested too deeply to be one") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"corrupt {what}: expected a JSON object, got a {type(data).__name__}")
    return data
