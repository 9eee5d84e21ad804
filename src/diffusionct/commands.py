"""Subcommands beyond ``info`` and ``scan``, each importing its heavy modules only when run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add every further subcommand to the ``diffusionct`` parser."""
