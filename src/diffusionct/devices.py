"""Compute device selection shared by training and inference."""

from __future__ import annotations

import time

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


def training_device(name: str = "auto", distributed: bool = False) -> torch.device:
    """The device of this training process: under torchrun on GPUs, the GPU of this process's LOCAL_RANK."""
    device = resolve_device(name)
    if distributed and device.type == "cuda":
        import os

        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def matmul_gflops(device: torch.device = torch.device("cpu"), n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul speed (GFLOP/s): the one speed probe of the demo's planner and the
    benchmarks, so timings on different machines can be compared as ratios to it."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9
