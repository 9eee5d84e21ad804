"""The ``diffusionct`` command: one module per subcommand, each a thin layer over one library function (its heavy
imports inside ``run``, so that ``--help`` and the argument checks are quick). The only package that configures
logging or prints tracebacks away; the library never imports it."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import warnings
from pathlib import Path

from diffusionct import __version__
from diffusionct.cli import (calibrate, compare, demo, evaluate, features, harmonize, info, reliability, scan, simulate,
                             standardize, train)
from diffusionct.errors import DiffusionCTError

log = logging.getLogger("diffusionct")
# in the order `diffusionct --help` lists them
COMMANDS = (info, scan, simulate, features, compare, train, calibrate, harmonize, reliability, standardize, evaluate, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffusionct",
        description="Standardize CT images across reconstruction kernels so radiomic features become reproducible.",
    )
    parser.add_argument("--version", action="version", version=f"diffusionct {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    for noisy in ("radiomics", "pydicom", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING) if noisy != "radiomics" else logging.ERROR)
    pydicom_log = logging.getLogger("pydicom")
    if not any(isinstance(f, _OncePerMessage) for f in pydicom_log.filters):  # main() may run many times in a process
        pydicom_log.addFilter(_OncePerMessage())
    warnings.filterwarnings("ignore", module="pydicom")  # pydicom logs the same warnings through logging


class _OncePerMessage(logging.Filter):
    """pydicom warns about a vendor's header once per slice read; say each distinct message once."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        if getattr(args, "output", None) is not None:
            from diffusionct.io.files import check_output_apart, check_output_location

            check_output_location(args.output)
            check_output_apart(args.output, _input_paths(args), Path(__file__).parents[1])  # not into the package
        code = args.func(args)
    except DiffusionCTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no: unwritable, full, not a folder, ...
        where = exc.filename or getattr(args, "output", None) or ""
        print(f"error: {where}{': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {args.command} ran out of memory; use smaller inputs or settings (fewer grey levels, a smaller "
              "batch or crop) or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated (SIGTERM); partial outputs were removed", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    log.debug("%s finished in %.1f s", args.command, time.perf_counter() - start)
    return code


NOT_INPUTS = ("output", "folder")  # what a command writes (scan may write its manifest into the folder it lists)


def _input_paths(args: argparse.Namespace) -> list[Path]:
    """The paths a command reads: every path option but those it writes (one path or a list each), so that an option
    added later is kept from being overwritten without being listed anywhere."""
    paths = []
    for name, value in vars(args).items():
        if name not in NOT_INPUTS:
            paths += [item for item in (value if isinstance(value, list) else [value]) if isinstance(item, Path)]
    return paths


class Terminated(BaseException):
    """SIGTERM as an exception, so that every ``with`` block (temporary outputs) cleans up on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

