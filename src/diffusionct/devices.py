"""Compute device selection shared by training and inference."""

from __future__ import annotations

import torch

from diffusionct.errors import DiffusionCTError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cuda`` without a GPU is a user error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DiffusionCTError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise DiffusionCTError(f"unknown device '{name}'; use auto, cpu or cuda[:N]")
    return torch.device(name)
