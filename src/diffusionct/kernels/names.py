"""Kernel names, one parser for every command: a series' ConvolutionKernel, ``--from`` / ``--to``, a manifest's
kernels and a profile's names all go through :func:`kernel_family`, so ``train --from B30F`` and
``standardize --from B30F`` select the same series."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from diffusionct.errors import DiffusionCTError


class Labelled(Protocol):
    """What a kernel set is matched against: a series' kernel and manufacturer (a manifest entry, a scan's series)."""

    kernel: str
    manufacturer: str


def kernel_family(name: str) -> str:
    """A kernel's name as a user means it, for matching a series to a model or a profile: case-insensitive, the first
    value of a multi-valued ConvolutionKernel (``B30f\\3``), without a manufacturer (``GE:SOFT``), the simulator's
    ``SIM_`` prefix and Siemens' one-letter variant suffix (``B30f``, ``Br40d``): ``B30f``, ``B30F``, ``B30`` and
    ``SIM_B30`` are one family; vendor names (``FC13``, ``STANDARD``, ``LUNG``) are their own."""
    kernel = name.split("\\")[0].rpartition(":")[2].strip().upper()
    kernel = kernel.removeprefix("SIM_")
    match = re.fullmatch(r"([A-Z]{1,3}\d{2})[A-Z]", kernel)
    return match.group(1) if match else kernel


def kernel_among(kernel: str, kernels: Iterable[str]) -> bool:
    """Whether ``kernel`` is of the family of one of ``kernels`` (a model's source kernels)."""
    return any(kernel_family(kernel) == kernel_family(k) for k in kernels)


@dataclass(frozen=True)
class KernelSet:
    """A kernel of a manufacturer, as a user names it: ``KERNEL`` or ``MANUFACTURER:KERNEL``
    (case-insensitive; the manufacturer matches by its beginning, e.g. ``GE:STANDARD``)."""

    kernel: str
    manufacturer: str = ""

    @classmethod
    def parse(cls, text: str) -> "KernelSet":
        manufacturer, _, kernel = text.rpartition(":")
        if not kernel.strip():
            raise DiffusionCTError(f"'{text}' names no kernel; write KERNEL or MANUFACTURER:KERNEL, e.g. GE:STANDARD")
        return cls(kernel.strip(), manufacturer.strip())

    @classmethod
    def parse_list(cls, text: str) -> list["KernelSet"]:
        """Several sets separated by commas (``GE:SOFT,GE:LUNG``: a many-to-one model's sources)."""
        return [cls.parse(part) for part in text.split(",") if part.strip()]

    def matches(self, entry: Labelled) -> bool:
        return (kernel_family(entry.kernel) == kernel_family(self.kernel)
                and entry.manufacturer.upper().startswith(self.manufacturer.upper()))

    def __str__(self) -> str:
        return f"{self.manufacturer}:{self.kernel}" if self.manufacturer else self.kernel
