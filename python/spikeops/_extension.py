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


# CUDA kernels that crashed (segfault) in their first GPU test run (H100, 2026-11-23) and
# are not yet fixed: the ops refuse CUDA tensors unless SPIKEOPS_UNVALIDATED_CUDA=1 (the
# CUDA tests set it, to debug them on the next GPU). See README "Status".
UNVALIDATED_CUDA_OPS = frozenset({"sliding_window_attn", "linear_scan"})


def check_cuda_validated(op: str, t) -> None:
    import os

    if (op in UNVALIDATED_CUDA_OPS and getattr(t, "is_cuda", False)
            and os.environ.get("SPIKEOPS_UNVALIDATED_CUDA") != "1"):
        raise NotImplementedError(
            f"{op}: the CUDA kernels crashed in their first GPU test run and are disabled "
            "until fixed (run on the CPU, or set SPIKEOPS_UNVALIDATED_CUDA=1 to try them)")
