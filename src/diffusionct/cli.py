"""The ``diffusionct`` command. The only module that configures logging or prints tracebacks away."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import warnings
from pathlib import Path

from diffusionct import __version__
from diffusionct.errors import DiffusionCTError

log = logging.getLogger("diffusionct")


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numpy
    import torch

    from diffusionct.devices import resolve_device
    from diffusionct.model_library import DEFAULT_MODEL, library_models, shipped_library

    models = library_models(shipped_library())
    if args.card:
        entry = next((m for m in models if m.folder.name == args.card), None)
        if entry is None:
            raise DiffusionCTError(f"--card {args.card}: no such shipped model; they are {', '.join(m.folder.name for m in models)}")
        print(entry.card_text() or f"{entry.folder.name} has no model card")
        return 0
    print(f"diffusionct {__version__}")
    print(f"python {platform.python_version()}  numpy {numpy.__version__}  torch {torch.__version__}")
    print(f"device auto -> {resolve_device('auto')}  (cuda available: {torch.cuda.is_available()})")
    print(f"cpu threads: {torch.get_num_threads()}")
    print(f"shipped models in {shipped_library()} (standardize --to KERNEL picks one per series by its kernel and pixel "
          "size; to add a gap, copy this folder and run `diffusionct train --phase predictor -o COPY/NAME --from K --to K`):")
    default = next(m for m in models if m.folder.name == DEFAULT_MODEL)
    for entry in models:
        card = dict(entry.card)
        print(f"  {entry}{'  [default]' if entry.gap == default.gap else ''}")
        if card:
            print(f"      {card.get('kernels', '')}: {card.get('summary', 'no measured numbers')}")
    print("  each model's card (training data, licence, measured numbers, intended use): diffusionct info --card NAME")
    shared = sorted(path.name for path in shipped_library().glob("*.safetensors"))
    if shared:
        print(f"  shared by these models (each has its own predictor): {', '.join(shared)}")
    from diffusionct.kernels.profiles import shipped_profiles

    vendors: dict[str, list[str]] = {}
    for profile in shipped_profiles():
        vendors.setdefault(profile.vendor, []).append(profile.name)
    print("shipped kernel profiles (the calibrated filter without training: train --method kernel-filter --from K --to K; "
          "measure your own with calibrate; docs/kernels.md): " + "; ".join(f"{v} {', '.join(n)}" for v, n in vendors.items()))
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from diffusionct.io.scan import find_pairs, format_table, scan_folder, write_manifest

    series = scan_folder(args.folder)
    pairs = find_pairs(series)
    print(format_table(series))
    print(f"\n{len(series)} series, {len(pairs)} paired series (same scan, different kernels)")
    for pair in pairs:
        print(f"  pair: {pair.kernel_a} <-> {pair.kernel_b}  ({pair.slices} slices)  {pair.path_a} | {pair.path_b}")
    if args.output:
        write_manifest(args.output, series, pairs)
        print(f"manifest written to {args.output}")
    return 0


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

    p = sub.add_parser("info", help="versions, the compute device that --device auto picks, and the shipped models")
    p.add_argument("--card", metavar="NAME", help="print the model card of this shipped model")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("scan", help="list the DICOM series under a folder and find same-scan kernel pairs")
    p.add_argument("folder", type=Path, help="folder tree to scan")
    p.add_argument("-o", "--output", type=Path, help="write a manifest (.json, or .csv plus .pairs.csv)")
    p.set_defaults(func=_cmd_scan)

    from diffusionct import commands

    commands.register(sub)
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
            check_output_apart(args.output, _input_paths(args), Path(__file__).parent)
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


INPUT_OPTIONS = ("input", "image", "batch", "data", "reference", "test", "masks", "mask", "model", "config", "params",
                 "profiles", "from_ct", "from_mask", "before", "after")  # what commands read (scan may write its manifest into the folder it lists)


def _input_paths(args: argparse.Namespace) -> list[Path]:
    """The paths a command reads, as its options give them (one path or a list)."""
    paths = []
    for name in INPUT_OPTIONS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (str, Path)):
                paths.append(Path(item))
    return paths


class Terminated(BaseException):
    """SIGTERM as an exception, so that every ``with`` block (temporary outputs) cleans up on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
