"""Option types and help texts the commands share."""

from __future__ import annotations

import argparse

from diffusionct.errors import DiffusionCTError

TEMPERATURE_HELP = ("scale of the sampler's start noise, 0-1 (default: the model's): 0 is the deterministic path "
                    "(the seed has no effect), 1 samples the model's distribution")


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def pair(values: list[float] | None, option: str) -> tuple[float, float] | None:
    if values is None:
        return None
    if len(values) != 2:
        raise DiffusionCTError(f"{option} takes two numbers LOW,HIGH; got {len(values)}")
    return values[0], values[1]
