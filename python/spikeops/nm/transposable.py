"""Transposable 2:4 masks: 2:4 along rows and along columns, so both W and W^T are 2:4.

For ``W [rows, K]`` (both multiples of 4) each 4x4 tile independently gets, among the 90 binary
4x4 patterns with exactly two ones in every row and every column, the one that keeps the
largest sum of ``|w|``. All tiles are scored at once as ``|tiles| [T, 16] @ patterns [16, 90]``
followed by an argmax.

Ties go to the pattern that comes first when the patterns are ordered lexicographically by
their 16 entries read row-major (0 < 1); e.g. an all-zero tile gets
``[[0,0,1,1],[0,0,1,1],[1,1,0,0],[1,1,0,0]]``. Scores are summed in float64: exact for every
float16 input, and for other dtypes whenever a tile's largest |w| is below 2^49 times the finest
ulp among its entries, so ties are decided by this rule, not by summation-order rounding.
"""
from __future__ import annotations

import itertools

import torch

__all__ = ["transposable_mask", "transposable_patterns"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TILES_PER_CHUNK = 1 << 16   # bounds the float64 score matrix to 45 MiB


def _build_patterns() -> torch.Tensor:
    # Rows with two ones, in increasing lexicographic order; the product then enumerates the
    # 4-row patterns in lexicographic order of their row-major flattening.
    row_choices = sorted(r for r in itertools.product((0, 1), repeat=4) if sum(r) == 2)
    tiles = [rows for rows in itertools.product(row_choices, repeat=4)
             if all(sum(col) == 2 for col in zip(*rows))]
    return torch.tensor(tiles, dtype=torch.bool)     # [90, 4, 4]


_PATTERNS = _build_patterns()


def transposable_patterns() -> torch.Tensor:
    """The 90 candidate patterns, bool ``[90, 4, 4]``, in tie-breaking (lexicographic) order."""
    return _PATTERNS.clone()


def transposable_mask(w: torch.Tensor) -> torch.Tensor:
    """Bool mask ``[rows, K]`` of the best transposable 2:4 pattern of each 4x4 tile of ``w``.

    ``w``: floating point ``[rows, K]``, rows and K multiples of 4, finite. The mask has exactly
    two True in every aligned group of 4 along a row and along a column; within each tile it
    maximises the sum of ``|w|`` over kept entries (ties: see the module docstring). Same
    device as ``w``; ``w``'s autograd graph is not touched.
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2:
        raise ValueError(f"w: expected a 2-D tensor [rows, K], got shape {tuple(w.shape)}")
    if w.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"w: expected a floating point tensor, got {w.dtype}")
    rows, k = w.shape
    if rows % 4 or k % 4:
        raise ValueError(f"w: rows and K must be multiples of 4 for 4x4 tiles, got {(rows, k)}")
    w = w.detach()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w: contains NaN or inf; the best pattern of such a tile is undefined")

    # [rows, K] -> [T, 16]: tile (a, b) holds rows 4a..4a+3, columns 4b..4b+3, row-major.
    tiles = w.reshape(rows // 4, 4, k // 4, 4).transpose(1, 2).reshape(-1, 16)
    patterns = _PATTERNS.to(w.device)
    weights = patterns.reshape(-1, 16).t().to(torch.float64)      # [16, 90]
    best = torch.empty(tiles.shape[0], dtype=torch.int64, device=w.device)
    for start in range(0, tiles.shape[0], _TILES_PER_CHUNK):
        chunk = tiles[start:start + _TILES_PER_CHUNK].abs().to(torch.float64)
        best[start:start + _TILES_PER_CHUNK] = (chunk @ weights).argmax(dim=1)  # first max
    mask = patterns[best]                                          # [T, 4, 4]
    return mask.reshape(rows // 4, k // 4, 4, 4).transpose(1, 2).reshape(rows, k)
