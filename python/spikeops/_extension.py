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
