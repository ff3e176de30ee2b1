"""The benchmark op registry.

An :class:`OpEntry` names one measured configuration (op, shape, dtype) and knows how to
build its inputs and the variants to time. Entries live in one module per family
(``neurons.py``, later ``attention.py``, ``nm.py``, ...), which call :func:`register` at
import; :func:`entries` imports every family listed in ``FAMILIES`` on first use.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

# Family modules under spikeops.bench; a new family adds its module name here.
FAMILIES: tuple[str, ...] = ("neurons", "nm", "attention", "recurrent", "swa", "scan",
                             "sparse")

# The variants every row reports, in table order; "spikeops" is the one compared to the rest.
VARIANTS: tuple[str, ...] = ("spikeops", "reference", "reference_compiled", "peer")

Shape = tuple[int, ...]
Thunk = Callable[[], object]


@dataclass
class Prepared:
    """Inputs built for one entry, closed over by zero-argument callables, one per variant.

    A variant that cannot run (peer not installed, compile disabled, ...) is absent from
    ``fns`` and its reason is in ``unavailable``; ``notes`` carries facts worth printing
    (which peer backend ran, ...).
    """

    fns: dict[str, Thunk] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # Called once after timing, e.g. to note which backend a peer picked on its own.
    after: list[Callable[[], None]] = field(default_factory=list)


# build(shape, dtype, device, compile_reference) -> Prepared
Builder = Callable[[Shape, torch.dtype, torch.device, bool], Prepared]
# traffic(shape, dtype) -> bytes or FLOPs the op must do at that shape
Counter = Callable[[Shape, torch.dtype], int]


@dataclass(frozen=True)
class OpEntry:
    name: str
    family: str
    shape: Shape
    quick_shape: Shape  # small enough that --quick finishes in seconds on 2 cores
    dtype: torch.dtype
    build: Builder
    devices: tuple[str, ...] = ("cpu", "cuda")
    bytes: Counter | None = None
    flops: Counter | None = None
    description: str = ""

    def shape_for(self, quick: bool) -> Shape:
        return self.quick_shape if quick else self.shape

    def setup(self, device: torch.device, *, quick: bool = False,
              compile_reference: bool = True) -> Prepared:
        """Make the inputs (at the quick or full shape) and the variant callables."""
        return self.build(self.shape_for(quick), self.dtype, device, compile_reference)


_REGISTRY: dict[str, OpEntry] = {}
_loaded = False


def register(entry: OpEntry) -> OpEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"benchmark entry {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for family in FAMILIES:
            importlib.import_module(f"{__package__}.{family}")


def entries(device: str | None = None, pattern: str | None = None) -> list[OpEntry]:
    """Registered entries in registration order, filtered by device and name substring."""
    _load_families()
    out = list(_REGISTRY.values())
    if device is not None:
        out = [e for e in out if device in e.devices]
    if pattern:
        out = _match(out, pattern)
    return out


def _match(candidates: list[OpEntry], pattern: str) -> list[OpEntry]:
    """Entries whose name contains `pattern`, preferring matches at a word boundary.

    Plain substring matching alone would make ``if`` select every LIF variant too
    (``lif_fwd...``); an exact name selects just that entry.
    """
    exact = [e for e in candidates if e.name == pattern]
    if exact:
        return exact
    anchored = re.compile(r"(?:^|_)" + re.escape(pattern))
    at_boundary = [e for e in candidates if anchored.search(e.name)]
    return at_boundary or [e for e in candidates if pattern in e.name]
