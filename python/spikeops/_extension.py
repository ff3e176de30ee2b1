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
