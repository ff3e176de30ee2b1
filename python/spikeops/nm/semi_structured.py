"""Conversion between spikeops' 2:4 format and PyTorch's semi-structured (CUTLASS) layout.

spikeops stores a 2:4 weight ``W [rows, K]`` as ``values [rows, K/2]`` (the kept entries of
each row, in column order) and ``meta`` uint8 ``[rows, K/8]`` (the kept mask, bit ``c % 8`` of
byte ``c // 8`` set iff ``W[r, c]`` is kept; exactly 2 bits set in every group of 4 columns).
A kept entry may hold the value 0.

PyTorch's CUTLASS layout, as written by
``torch.sparse._semi_structured_conversions.sparse_semi_structured_from_dense_cutlass(dense)``
and consumed by ``torch._sparse_semi_structured_linear`` / ``SparseSemiStructuredTensorCUTLASS``,
for float16 / bfloat16 is:

* ``packed [rows, K/2]`` in the weight's dtype: per group of 4 columns, the entries at two
  positions ``lo < hi`` of the group, in that order.
* ``cutlass_meta`` int16 ``[rows, K/16]``: each group contributes the 4-bit code
  ``lo | hi << 2``; the codes of groups ``4c .. 4c+3`` of a row fill nibbles 0..3 of the int16
  element ``(r, c)``; the ``[rows, K/16]`` matrix is then reordered for the tensor cores (below).
* PyTorch picks ``lo, hi`` from the *nonzero pattern* of the dense group, not from a mask, so a
  group with fewer than two nonzeros is padded with fixed positions (``_POSITIONS``):

  ========================  =========  ==========================================
  nonzeros in the group     lo, hi     note
  ========================  =========  ==========================================
  none                      2, 3
  only position 0           0, 2
  only position 1           1, 2
  only position 2           2, 3
  only position 3           2, 3
  exactly two (i < j)       i, j
  three or four             see table  not reachable from a 2:4 weight
  ========================  =========  ==========================================

  Because of this, :func:`to_semi_structured_cutlass` encodes, by default, the positions PyTorch
  would pick for the equivalent dense matrix (``W`` with zeros where not kept): the result is
  bit-for-bit PyTorch's. Where a kept entry holds 0, that may differ from our mask, and
  :func:`from_semi_structured_cutlass` then returns the *canonical* mask (PyTorch's positions):
  same dense matrix, different ``meta``. ``preserve_mask=True`` encodes our mask instead (equally
  valid for the CUTLASS kernels, and an exact round trip for any mask).

Shape constraints (float16 / bfloat16): ``rows`` a multiple of 32 (the reorder works on blocks
of 32 rows) and ``K`` a multiple of 32 (PyTorch's code checks ``K % 16`` but its reorder
scatters out of bounds unless the ``K/16`` int16 columns come in pairs). The sparse matmul of
``SparseSemiStructuredTensorCUTLASS`` further needs ``K`` a multiple of 64.

float32 is not accepted: PyTorch's float32 CUTLASS layout is 1:2 (one of every pair kept, for
TF32 tensor cores), not 2:4. int8 (int32 metadata) is not supported here.

Everything is pure, vectorised torch (views, permutes, elementwise ops), on any device.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "to_semi_structured_cutlass",
    "from_semi_structured_cutlass",
    "to_sparse_semi_structured",
]

_DTYPES = (torch.float16, torch.bfloat16)
_ROW_BLOCK = 32   # the metadata reorder permutes rows within blocks of 32
_K_BLOCK = 32     # 16 columns per int16 metadata element, and those elements go in pairs

# For each 4-bit nonzero pattern of a group (bit i = position i nonzero): the two positions
# (lo, hi) PyTorch's encoder stores. Exactly-two patterns store their own positions; the rest
# are PyTorch's fixed choices (its comment lists them; tests/test_nm_layout.py checks all 16).
_POSITIONS = {
    **{p: tuple(i for i in range(4) if p >> i & 1) for p in range(16) if bin(p).count("1") == 2},
    0b0000: (2, 3), 0b0001: (0, 2), 0b0010: (1, 2), 0b0100: (2, 3), 0b1000: (2, 3),
    0b0111: (0, 1), 0b1011: (0, 1), 0b1101: (0, 3), 0b1110: (1, 3), 0b1111: (0, 1),
}
_LO_HI = torch.tensor([_POSITIONS[p] for p in range(16)], dtype=torch.int64)  # [16, 2]
_POPCOUNT = torch.tensor([bin(p).count("1") for p in range(16)], dtype=torch.int64)


# ---- argument checks ----

def _check_float_2d(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D tensor, got shape {tuple(t.shape)}")
    if t.dtype not in _DTYPES:
        extra = (" (PyTorch's float32 CUTLASS layout is 1:2, not 2:4)"
                 if t.dtype == torch.float32 else "")
        raise ValueError(f"{name}: expected float16 or bfloat16, got {t.dtype}{extra}")


def _check_dims(name: str, rows: int, k: int) -> None:
    if rows % _ROW_BLOCK or k % _K_BLOCK:
        raise ValueError(
            f"{name}: the CUTLASS 2:4 layout needs rows a multiple of {_ROW_BLOCK} and K a "
            f"multiple of {_K_BLOCK}, got rows={rows}, K={k}")


def _check_same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name}: expected a tensor on {ref_name}'s device {ref.device}, "
                         f"got {t.device}")


def _parse_shape(shape) -> tuple[int, int]:
    if not isinstance(shape, Sequence) or len(shape) != 2 or not all(
            isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"shape: expected two non-negative ints (rows, K), got {shape!r}")
    return int(shape[0]), int(shape[1])


# ---- the two layouts' pieces ----

def _mask_codes(meta: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """uint8 [rows, K/8] packed mask -> int64 [rows, K/4] 4-bit code of each group."""
    m = meta.to(torch.int64)
    # a byte holds two groups: bits 0-3 and bits 4-7
    return torch.stack((m & 0xF, m >> 4), dim=-1).reshape(rows, k // 4)


def _pack_codes(codes: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """int64 [rows, K/4] group codes -> uint8 [rows, K/8] packed mask."""
    pairs = codes.reshape(rows, k // 8, 2)
    return (pairs[..., 0] | pairs[..., 1] << 4).to(torch.uint8)


def _reorder(meta16: torch.Tensor) -> torch.Tensor:
    """Logical [rows, C] int16 metadata -> CUTLASS order (ColumnMajorInterleaved<2>).

    Element (r, c) lands at flat offset ``(c//2)*2*rows + (R//2)*4 + (c%2)*2 + R%2``, where
    within each block of 32 rows, row ``8i + j`` (i < 4, j < 8) becomes ``R = 4j + i``. So: a
    [4, 8] -> [8, 4] transpose of each row block, then the array read as [R/2, 2, C/2, 2] and
    stored as [C/2, R/2, 2(c%2), 2(R%2)].
    """
    rows, cols = meta16.shape
    m = meta16.reshape(rows // 32, 4, 8, cols).transpose(1, 2)
    m = m.reshape(rows // 2, 2, cols // 2, 2).permute(2, 0, 3, 1)
    return m.reshape(rows, cols)


def _unreorder(cmeta: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_reorder`."""
    rows, cols = cmeta.shape
    m = cmeta.reshape(cols // 2, rows // 2, 2, 2).permute(1, 3, 0, 2)
    m = m.reshape(rows // 32, 8, 4, cols).transpose(1, 2)
    return m.reshape(rows, cols)


# ---- public API ----

def to_semi_structured_cutlass(values: torch.Tensor, meta: torch.Tensor, shape,
                               *, preserve_mask: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """spikeops 2:4 ``(values [rows, K/2], meta uint8 [rows, K/8])`` -> CUTLASS layout.

    Returns ``(packed [rows, K/2] in values' dtype, cutlass_meta int16 [rows, K/16])``, equal
    bit for bit to ``sparse_semi_structured_from_dense_cutlass(W)`` for the dense ``W`` the
    input describes (zeros where not kept). ``preserve_mask=True`` encodes the kept positions
    of ``meta`` instead of PyTorch's choice for kept zeros (same dense matrix; see the module
    docstring). ``shape = (rows, K)``: rows and K multiples of 32; values float16 or bfloat16;
    every group of 4 columns must have exactly 2 kept entries. Same device as the inputs.
    """
    _check_float_2d("values", values)
    rows, k = _parse_shape(shape)
    _check_dims("shape", rows, k)
    if tuple(values.shape) != (rows, k // 2):
        raise ValueError(f"values: expected shape {(rows, k // 2)} for a 2:4 weight of shape "
                         f"{(rows, k)}, got {tuple(values.shape)}")
    if not isinstance(meta, torch.Tensor) or meta.dtype != torch.uint8 or \
            tuple(meta.shape) != (rows, k // 8):
        got = (f"{meta.dtype} {tuple(meta.shape)}" if isinstance(meta, torch.Tensor)
               else type(meta).__name__)
        raise ValueError(f"meta: expected a uint8 tensor of shape {(rows, k // 8)}, got {got}")
    _check_same_device("meta", meta, "values", values)

    codes = _mask_codes(meta, rows, k)                       # [rows, G], G = K/4
    lohi = _LO_HI.to(values.device)
    if bool((_POPCOUNT.to(values.device)[codes] != 2).any()):
        raise ValueError("meta: not a 2:4 mask (every group of 4 columns must have exactly "
                         "2 kept entries)")
    kept = lohi[codes]                                       # [rows, G, 2]: kept positions
    v = values.reshape(rows, k // 4, 2)
    if preserve_mask:
        chosen = kept
    else:
        nonzero = (v != 0).to(torch.int64)                  # NaN counts as nonzero, -0.0 not
        nz_codes = (nonzero << kept).sum(-1)               # nonzero pattern of each group
        chosen = lohi[nz_codes]                              # PyTorch's (lo, hi)
    # The value at a chosen position: ours if that position is kept, else the dense zero.
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    packed = torch.where(chosen == kept[..., 1:], v[..., 1:], zero)
    packed = torch.where(chosen == kept[..., :1], v[..., :1], packed)
    packed = packed.reshape(rows, k // 2)

    nibbles = (chosen[..., 0] | chosen[..., 1] << 2).reshape(rows, k // 16, 4)
    word = (nibbles << torch.tensor([0, 4, 8, 12], device=values.device)).sum(-1)
    word = (word ^ 0x8000) - 0x8000                          # as a signed 16-bit value
    return packed, _reorder(word.to(torch.int16)).contiguous()


def from_semi_structured_cutlass(packed: torch.Tensor, cutlass_meta: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """CUTLASS layout ``(packed [rows, K/2], cutlass_meta int16 [rows, K/16])`` -> spikeops.

    Returns ``(values [rows, K/2], meta uint8 [rows, K/8])``; the mask keeps the two encoded
    positions of each group, so where PyTorch padded a group with zeros, those zeros are kept
    entries. ``values`` is a copy of ``packed`` (both store the kept entries in column order).
    Raises ValueError when a group's code is not two distinct ascending positions.
    """
    _check_float_2d("packed", packed)
    rows, k = packed.shape[0], packed.shape[1] * 2
    _check_dims("packed", rows, k)
    if not isinstance(cutlass_meta, torch.Tensor) or cutlass_meta.dtype != torch.int16 or \
            tuple(cutlass_meta.shape) != (rows, k // 16):
        got = (f"{cutlass_meta.dtype} {tuple(cutlass_meta.shape)}"
               if isinstance(cutlass_meta, torch.Tensor) else type(cutlass_meta).__name__)
        raise ValueError(f"cutlass_meta: expected an int16 tensor of shape {(rows, k // 16)} "
                         f"for packed of shape {tuple(packed.shape)}, got {got}")
    _check_same_device("cutlass_meta", cutlass_meta, "packed", packed)

    word = _unreorder(cutlass_meta).to(torch.int64) & 0xFFFF          # [rows, K/16]
    shifts = torch.tensor([0, 4, 8, 12], device=packed.device)
    nibbles = (word.unsqueeze(-1) >> shifts & 0xF).reshape(rows, k // 4)
    lo, hi = nibbles & 3, nibbles >> 2
    if bool((lo >= hi).any()):
        raise ValueError("cutlass_meta: invalid 2:4 metadata (each 4-bit group code must name "
                         "two positions lo < hi)")
    codes = (1 << lo) | (1 << hi)
    return packed.clone(memory_format=torch.contiguous_format), _pack_codes(codes, rows, k)


def to_sparse_semi_structured(values: torch.Tensor, meta: torch.Tensor, shape,
                              *, requires_grad: bool = False):
    """A ``torch.sparse.SparseSemiStructuredTensorCUTLASS`` holding the spikeops 2:4 weight.

    Built straight from the packed tensors (no dense round trip, no GPU-only call), so it can
    be constructed on any device and ``.to_dense()`` works on CPU; its matmuls (``W @ x``,
    ``F.linear``) run only on CUDA with sm80+ (PyTorch's CUTLASS kernels). Needs rows a
    multiple of 32 and K a multiple of 64 (the subclass's shape constraints for 16-bit types).
    """
    from torch.sparse import SparseSemiStructuredTensorCUTLASS as cutlass_cls

    _check_float_2d("values", values)
    rows, k = _parse_shape(shape)
    cfg = getattr(cutlass_cls, "_DTYPE_SHAPE_CONSTRAINTS", {}).get(values.dtype)
    min_rows, min_cols = (cfg.sparse_min_rows, cfg.sparse_min_cols) if cfg else (32, 64)
    if rows < min_rows or rows % min_rows or k < min_cols or k % min_cols:
        raise ValueError(f"shape: SparseSemiStructuredTensorCUTLASS needs rows and K positive "
                         f"multiples of ({min_rows}, {min_cols}), got {(rows, k)}")
    packed, cutlass_meta = to_semi_structured_cutlass(values, meta, (rows, k))
    return cutlass_cls(torch.Size((rows, k)), packed=packed, meta=cutlass_meta, packed_t=None,
                       meta_t=None, compressed_swizzled_bitmask=None,
                       requires_grad=requires_grad)
