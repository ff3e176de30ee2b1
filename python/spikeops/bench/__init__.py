"""Microbenchmarks behind ``python -m spikeops bench``.

``registry`` holds the op entries (one module per family registers its own), ``harness``
times them and measures the roofline references, ``cli`` prints and saves the results.
"""
from __future__ import annotations

from .registry import FAMILIES, VARIANTS, OpEntry, Prepared, entries, register

__all__ = ["FAMILIES", "VARIANTS", "OpEntry", "Prepared", "entries", "register", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark CLI (see spikeops.bench.cli)."""
    from .cli import main as _main
    return _main(argv)
