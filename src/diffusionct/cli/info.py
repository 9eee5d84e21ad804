"""`diffusionct info`: versions, the compute device that --device auto picks, and the shipped models."""

from __future__ import annotations

import argparse

from diffusionct import __version__
from diffusionct.errors import DiffusionCTError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, the compute device that --device auto picks, and the shipped models")
    p.add_argument("--card", metavar="NAME", help="print the model card of this shipped model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import platform

    import numpy
    import torch

    from diffusionct.devices import resolve_device
    from diffusionct.methods.library import DEFAULT_MODEL, library_models, shipped_library

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
