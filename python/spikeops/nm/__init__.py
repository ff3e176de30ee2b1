"""N:M structured sparsity: masks, the compressed :class:`NMTensor`, and model conversion.

    mask = spikeops.nm.prune(w, 2, 4)               # bool, 2 of every 4 along the input dim
    w_nm = spikeops.nm.compress(w, 2, 4)            # NMTensor: values + bit-packed mask
    y = spikeops.ops.nm_linear(x, w_nm, bias)       # x @ W^T + b on the sparse kernels
    spikeops.nm.sparsify_(model, 2, 4)              # nn.Linear / nn.Conv2d -> NMLinear / NMConv2d

Groups of ``m`` run along the input dimension: the last dim of a linear weight
``[out, in]``; the input channels of a conv weight ``[out, in, kh, kw]`` (as SR-STE does).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops import nm as _ops
from ..ref import nm as _ref
from .semi_structured import (from_semi_structured_cutlass, to_semi_structured_cutlass,
                              to_sparse_semi_structured)
from .transposable import transposable_mask, transposable_patterns

__all__ = ["NMTensor", "prune", "compress", "sparsify_", "to_semi_structured_cutlass",
           "from_semi_structured_cutlass", "to_sparse_semi_structured", "transposable_mask",
           "transposable_patterns", "conv_weight_to_rows", "rows_to_conv_weight"]

_CRITERIA = ("magnitude",)


def conv_weight_to_rows(w: torch.Tensor) -> torch.Tensor:
    """``[out, in, *k]`` -> ``[out, prod(k) * in]`` with ``in`` fastest, so groups of m run
    along the input channels."""
    return w.movedim(1, -1).reshape(w.shape[0], -1)


def rows_to_conv_weight(rows: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`conv_weight_to_rows` for a conv weight of ``shape``."""
    out, cin, *k = shape
    return rows.reshape(out, *k, cin).movedim(-1, 1)


def _as_rows(w: torch.Tensor, name: str = "w") -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {w.dtype}")
    if w.dim() == 2:
        return w
    if w.dim() >= 3:
        return conv_weight_to_rows(w)
    raise ValueError(f"{name}: expected a 2-D linear weight or a conv weight [out, in, *k], "
                     f"got shape {tuple(w.shape)}")


def prune(w: torch.Tensor, n: int, m: int, *, criterion: str = "magnitude",
          transposable: bool = False) -> torch.Tensor:
    """The N:M mask of ``w`` (bool, w's shape): the ``n`` largest ``|w|`` of every ``m``
    consecutive entries along the input dimension (ties: the lower index; NaN counts as
    largest).

    ``transposable=True`` (2:4 only) picks, in each 4x4 tile, the mask with 2 kept in every
    row *and* column of the tile that keeps the most magnitude, so ``W^T`` is 2:4 too and
    the backward ``dy @ W`` can use the same sparse kernels.
    """
    n, m = int(n), int(m)
    _ops._check_nm(n, m)
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion: expected one of {_CRITERIA}, got {criterion!r}")
    rows = _as_rows(w)
    k = rows.shape[1]
    if k < m or k % m:
        raise ValueError(f"w: the input dimension ({k}) must be a positive multiple of m = {m}")
    if transposable:
        if (n, m) != (2, 4):
            raise ValueError(f"transposable: only 2:4 masks can be transposable, got {n}:{m}")
        mask = transposable_mask(rows.detach())
    elif _ops._native() and rows.dtype in _ops._FLOAT_DTYPES:
        mask = _ref.unpack_meta(_ops.nm_compress(rows.detach(), n, m)[1], k)
    else:
        mask = _ref.prune_mask(rows.detach(), n, m)
    return mask if w.dim() == 2 else rows_to_conv_weight(mask, w.shape)


@dataclass(frozen=True, eq=False)
class NMTensor:
    """A compressed N:M weight of dense ``shape (rows, K)``.

    ``values [rows, K/m*n]``: the kept entries of each row in column order (w's dtype);
    ``meta`` uint8 ``[rows, ceil(K/8)]``: the kept mask bit-packed along K (bit ``c % 8`` of
    byte ``c // 8``). Built by :func:`compress` (or :meth:`from_parts`, which checks that
    ``meta`` keeps exactly n per group). Use :meth:`to_dense` for the masked dense weight.
    """

    values: torch.Tensor
    meta: torch.Tensor
    n: int
    m: int
    shape: tuple

    @classmethod
    def from_parts(cls, values, meta, n, m, shape=None) -> "NMTensor":
        """Wrap ``(values, meta)`` after checking them (shapes, dtypes and that every group of
        ``m`` columns keeps exactly ``n``: "indices consistent with values")."""
        n, m = int(n), int(m)
        _ops._check_nm(n, m)
        _ops._check_float(values, "values")
        k = _ops._check_compressed(values, meta, n, m, values, "values")
        if shape is not None and tuple(shape) != (values.shape[0], k):
            raise ValueError(f"shape: expected {(values.shape[0], k)} for values of shape "
                             f"{tuple(values.shape)} and {n}:{m}, got {tuple(shape)}")
        mask = _ref.unpack_meta(meta, k)
        counts = mask.reshape(values.shape[0], k // m, m).sum(-1)
        padding_ok = _ref.pack_mask(mask).equal(meta)
        if not bool((counts == n).all()) or not padding_ok:
            raise ValueError(f"meta: every group of m = {m} columns must keep exactly n = {n} "
                             "entries (and padding bits past K must be 0): meta is inconsistent "
                             "with values")
        return cls(values, meta, n, m, (values.shape[0], k))

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def device(self):
        return self.values.device

    def mask(self) -> torch.Tensor:
        """The bool mask ``[rows, K]``."""
        return _ref.unpack_meta(self.meta, self.shape[1])

    def to_dense(self) -> torch.Tensor:
        """The dense ``[rows, K]`` weight with zeros where not kept."""
        return _ref.decompress(self.values, self.meta, self.n, self.m)

    def to(self, *args, **kwargs) -> "NMTensor":
        """Move/cast the values (``meta`` moves with them, stays uint8)."""
        values = self.values.to(*args, **kwargs)
        return NMTensor(values, self.meta.to(values.device), self.n, self.m, self.shape)

    def to_semi_structured_cutlass(self, *, preserve_mask: bool = False):
        """PyTorch's CUTLASS 2:4 layout ``(packed, meta int16)`` (fp16/bf16, 2:4 only)."""
        self._require_24()
        return to_semi_structured_cutlass(self.values, self.meta, self.shape,
                                          preserve_mask=preserve_mask)

    def to_sparse_semi_structured(self):
        """A ``torch.sparse.SparseSemiStructuredTensorCUTLASS`` (its matmul needs CUDA)."""
        self._require_24()
        return to_sparse_semi_structured(self.values, self.meta, self.shape)

    @classmethod
    def from_semi_structured_cutlass(cls, packed, cutlass_meta) -> "NMTensor":
        values, meta = from_semi_structured_cutlass(packed, cutlass_meta)
        return cls(values, meta, 2, 4, (values.shape[0], values.shape[1] * 2))

    def _require_24(self):
        if (self.n, self.m) != (2, 4):
            raise ValueError(f"PyTorch's semi-structured layout is 2:4 only; this is "
                             f"{self.n}:{self.m}")

    def __repr__(self):
        return (f"NMTensor({self.n}:{self.m}, shape={self.shape}, dtype={self.dtype}, "
                f"device={self.device})")


def compress(w: torch.Tensor, n: int, m: int, *, mask: torch.Tensor | None = None,
             transposable: bool = False) -> NMTensor:
    """Compress ``w`` (``[out, in]``, or a conv weight, flattened by
    :func:`conv_weight_to_rows`) to an :class:`NMTensor`, keeping ``mask`` (default:
    :func:`prune`)."""
    n, m = int(n), int(m)
    rows = _as_rows(w)
    if mask is None:
        if transposable:
            mask = prune(rows, n, m, transposable=True)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask: expected a bool tensor")
        if tuple(mask.shape) != tuple(w.shape):
            raise ValueError(f"mask: expected shape {tuple(w.shape)} (w's), got "
                             f"{tuple(mask.shape)}")
        mask = conv_weight_to_rows(mask) if w.dim() != 2 else mask
    meta = None if mask is None else _ref.pack_mask(mask.to(rows.device))
    values, meta = _ops.nm_compress(rows.detach(), n, m, meta)
    return NMTensor(values, meta, n, m, tuple(rows.shape))


def sparsify_(model: torch.nn.Module, n: int = 2, m: int = 4, filter_fn=None, *,
              decay: float = 2e-4, mode: str = "srste") -> list[str]:
    """Replace, in place, the ``nn.Linear`` and ``nn.Conv2d`` layers of ``model`` with
    :class:`spikeops.nn.NMLinear` / :class:`spikeops.nn.NMConv2d` (weights and biases
    copied; ``mode`` "srste" or "fixed"; ``decay`` the SR-STE lambda).

    ``filter_fn(name, module) -> bool`` chooses layers (default: all whose input dimension is
    a multiple of m; grouped convolutions are skipped). A layer the filter selects that cannot
    be made N:M raises ValueError. Returns the names of the replaced layers.
    """
    from ..nn.nm import NMConv2d, NMLinear

    n, m = int(n), int(m)
    _ops._check_nm(n, m)
    replaced = []
    for name, module in list(model.named_modules()):
        if not name:  # the model itself cannot be replaced in place
            continue
        if type(module) is torch.nn.Linear:
            fits, in_dim = module.in_features % m == 0, module.in_features
        elif type(module) is torch.nn.Conv2d:
            fits, in_dim = module.in_channels % m == 0 and module.groups == 1, module.in_channels
        else:
            continue
        if filter_fn is None:
            if not fits:
                continue
        elif not filter_fn(name, module):
            continue
        elif not fits:
            raise ValueError(f"filter_fn: layer {name!r} ({type(module).__name__}, input "
                             f"dimension {in_dim}, groups {getattr(module, 'groups', 1)}) "
                             f"cannot be made {n}:{m}")
        new = (NMLinear if isinstance(module, torch.nn.Linear) else NMConv2d).from_dense(
            module, n, m, decay=decay, mode=mode)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        replaced.append(name)
    return replaced
