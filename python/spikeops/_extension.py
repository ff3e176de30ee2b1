"""Loads the native extension once; without it every op runs its pure-PyTorch reference."""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libtorch before the extension links against it)

try:
    from . import _C  # type: ignore[attr-defined]
    LOAD_ERROR: str | None = None
except ImportError as err:  # pragma: no cover - exercised only on broken installs
    _C = None
    LOAD_ERROR = str(err)
    warnings.warn(
        "spikeops: the native extension spikeops._C could not be loaded "
        f"({err}); every op falls back to its slow pure-PyTorch reference. "
        "Rebuild with `scripts/setup.sh` (see README).",
        RuntimeWarning,
        stacklevel=2,
    )

AVAILABLE = _C is not None


def has_cuda_kernels() -> bool:
    return AVAILABLE and bool(_C.build_info()["cuda"])


# CUDA kernels not yet validated on a GPU: the ops refuse CUDA tensors unless
# SPIKEOPS_UNVALIDATED_CUDA=1 (the CUDA tests set it). See README "Status".
_CRASHED = "crashed in their first GPU test run and are disabled until fixed"
UNVALIDATED_CUDA_OPS = {
    # segfaulted in their first GPU test run (H100, 2026-11-23), not yet fixed
    "sliding_window_attn": _CRASHED,
    "linear_scan": _CRASHED,
    # written without a GPU: compiled by nvcc and run in the host emulation only
    "sparse_conv": ("have not run on a GPU yet (only compiled by nvcc and run in a host "
                    "emulation) and are disabled until a GPU test run passes"),
}


def check_cuda_validated(op: str, t) -> None:
    import os

    if (op in UNVALIDATED_CUDA_OPS and getattr(t, "is_cuda", False)
            and os.environ.get("SPIKEOPS_UNVALIDATED_CUDA") != "1"):
        raise NotImplementedError(
            f"{op}: the CUDA kernels {UNVALIDATED_CUDA_OPS[op]} (run on the CPU, or set "
            "SPIKEOPS_UNVALIDATED_CUDA=1 to try them)")


# ---- the reference switch ------------------------------------------------------------------
#
# One process-wide flag, read by every ``ops/*.py`` wrapper through :func:`use_native` (the
# single predicate that picks ``torch.ops.spikeops.*`` or the pure-PyTorch reference). It is a
# plain module global, not a thread-local or ContextVar: torch.compile (Dynamo) reads it like
# any other global and guards on its value, so compiled kernel-path code keeps its full graph
# and recompiles if the flag changes. Consequence: the switch is global to the process; one
# thread entering ``use_reference()`` switches every thread, so do not flip it while another
# thread runs spikeops ops you want on the kernels. Flip it outside compiled regions.

_REFERENCE = False


def use_native() -> bool:
    """True when ops run their native kernels: the extension is loaded and the reference
    switch is off. The one predicate every ``ops/*.py`` wrapper consults."""
    return AVAILABLE and not _REFERENCE


def reference_enabled() -> bool:
    """Whether :func:`use_reference` / :func:`set_reference` forces the pure-PyTorch
    references (does not report a missing extension: see ``spikeops.info()``)."""
    return _REFERENCE


def set_reference(enabled: bool) -> bool:
    """Force (``True``) or release (``False``) the pure-PyTorch references for every spikeops
    op and module in this process; returns the previous setting."""
    global _REFERENCE
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
    previous, _REFERENCE = _REFERENCE, enabled
    return previous


class use_reference:
    """Context manager (and decorator) under which every ``spikeops.ops`` function and every
    ``spikeops.nn`` module runs its pure-PyTorch reference (``spikeops.ref``) instead of the
    native kernels; backward then runs through the reference's autograd::

        with spikeops.use_reference():
            loss_ref = model(x).sum()      # same model, same weights, reference path

    ``use_reference(False)`` forces the kernels back on inside an outer ``use_reference()``.
    Nesting and exceptions restore the previous setting on exit. The setting is process-wide
    (see :func:`set_reference`); it is read when an op is called, so a graph built under it
    keeps its reference backward after the block ends.
    """

    def __init__(self, enabled: bool = True):
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled: expected a bool, got {type(enabled).__name__}")
        self.enabled = enabled
        self._previous: list[bool] = []

    def __enter__(self):
        self._previous.append(set_reference(self.enabled))
        return self

    def __exit__(self, *exc):
        set_reference(self._previous.pop())
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with use_reference(self.enabled):
                return fn(*args, **kwargs)
        return wrapper
