"""Pure-PyTorch reference of the N:M structured-sparse ops (the test oracle and fallback).

Format: a weight ``W [rows, K]`` that keeps ``n`` of every ``m`` consecutive entries along K
is stored as ``values [rows, K/m*n]`` (the kept entries of each row, in column order) and
``meta`` uint8 ``[rows, ceil(K/8)]``, the kept mask bit-packed along K (bit ``c % 8`` of byte
``c // 8`` is set iff ``W[r, c]`` is kept; padding bits are zero). A kept entry may be 0.
"""
from __future__ import annotations

import torch

__all__ = ["pack_mask", "unpack_meta", "prune_mask", "compress", "decompress", "nm_linear",
           "nm_linear_grad_input", "nm_masked_linear"]


def _bits(device):
    return 1 << torch.arange(8, device=device)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bit-pack a bool mask ``[rows, K]`` along K into uint8 ``[rows, ceil(K/8)]``."""
    rows, k = mask.shape
    pad = (-k) % 8
    bits = torch.nn.functional.pad(mask.to(torch.int64), (0, pad)).reshape(rows, -1, 8)
    return (bits * _bits(mask.device)).sum(-1).to(torch.uint8)


def unpack_meta(meta: torch.Tensor, k: int) -> torch.Tensor:
    """The bool mask ``[rows, k]`` that ``meta`` packs."""
    shifts = torch.arange(8, dtype=torch.uint8, device=meta.device)
    bits = (meta.unsqueeze(-1) >> shifts) & 1           # uint8 0/1: one byte per column
    return bits.view(torch.bool).reshape(meta.shape[0], -1)[:, :k]


def prune_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest ``|w|`` of each group of ``m`` along the last dim of a 2-D
    ``w``; ties keep the lower column, NaN counts as the largest."""
    rows, k = w.shape
    g = w.detach().reshape(rows, k // m, m).to(torch.float64).abs()
    nan = torch.isnan(g)
    # rank[i] = #(j ranked above i): NaN above everything else, then larger |w|, then the
    # lower column among equals; keep rank < n.
    a, b, nan_a, nan_b = g.unsqueeze(-1), g.unsqueeze(-2), nan.unsqueeze(-1), nan.unsqueeze(-2)
    idx = torch.arange(m, device=w.device)
    before = idx.unsqueeze(0) < idx.unsqueeze(1)        # [i, j]: j < i
    greater = (nan_b & ~nan_a) | (~nan_a & ~nan_b & (b > a))
    equal = (nan_a & nan_b) | (~nan_a & ~nan_b & (b == a))
    rank = (greater | (equal & before)).sum(-1)
    return (rank < n).reshape(rows, k)


def compress(w: torch.Tensor, n: int, m: int, mask: torch.Tensor | None = None):
    """``(values, meta)`` of ``w [rows, K]`` under ``mask`` (default: :func:`prune_mask`)."""
    if mask is None:
        mask = prune_mask(w, n, m)
    values = w[mask].reshape(w.shape[0], w.shape[1] // m * n)
    return values, pack_mask(mask)


def decompress(values: torch.Tensor, meta: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The dense ``W [rows, K]`` (zeros where not kept)."""
    rows = values.shape[0]
    k = values.shape[1] // n * m
    mask = unpack_meta(meta, k)
    dense = torch.zeros(rows, k, dtype=values.dtype, device=values.device)
    return dense.masked_scatter(mask, values)


def nm_linear(x, values, meta, n, m, bias=None):
    """``x @ W^T + bias`` with the dense equivalent of the compressed W."""
    w = decompress(values, meta, n, m)
    return torch.nn.functional.linear(x, w, bias)


def nm_linear_grad_input(grad_out, values, meta, n, m):
    """``grad_out @ W``."""
    return grad_out @ decompress(values, meta, n, m)


class _SRSTEWeight(torch.autograd.Function):
    """``weight * mask`` forward; backward: the dense gradient plus ``decay (1-mask) weight``
    (SR-STE) when ``dense_grad``, else the masked gradient."""

    @staticmethod
    def forward(weight, mask, decay, dense_grad):
        return weight * mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight, mask, decay, dense_grad = inputs
        ctx.save_for_backward(weight, mask)
        ctx.decay, ctx.dense_grad = decay, dense_grad

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        if ctx.dense_grad:
            return grad + ctx.decay * (~mask) * weight, None, None, None
        return grad * mask, None, None, None


def srste_weight(weight, mask, decay=2e-4, dense_grad=True):
    """The masked weight whose gradient follows SR-STE (see :class:`_SRSTEWeight`)."""
    return _SRSTEWeight.apply(weight, mask, float(decay), bool(dense_grad))


def nm_masked_linear(x, weight, meta, n, m, bias=None, decay=2e-4, dense_grad=True):
    """Training form: ``x @ (weight * mask)^T + bias`` with the SR-STE weight gradient."""
    mask = unpack_meta(meta, weight.shape[1])
    return torch.nn.functional.linear(x, srste_weight(weight, mask, decay, dense_grad), bias)
