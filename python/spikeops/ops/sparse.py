"""Spike sparse convolution ops: kernel maps and gather-GEMM-scatter.

A kernel map is an output-major neighbour table ``nbmap`` int32 ``[M, K]``: ``nbmap[m, k]``
is the input row that feeds output row ``m`` through kernel offset ``k`` (offsets row-major
over the kernel dims, the order of ``weight.reshape(Cout, K, Cin)[:, k]``), or -1. It holds
the same pairs as :func:`spikeops.ref.sparse_conv.kernel_map` (``nbmap_to_pairs`` converts).

* :func:`conv_map` builds it with a multithreaded hash table (``sparse_conv_map``).
* :func:`map_transpose` gives the input-major table ``[N, K]`` (``sparse_map_transpose``):
  the map of the input gradient, and of an inverse conv from a cached strided map.
* :func:`sparse_conv` runs ``out = bias + sum_k features[nbmap[:, k]] @ W_k^T``
  (``sparse_conv_fwd``), fp32 accumulation, for fp32 / bf16 / fp16 features; gradients for
  features (the same op on the transposed map), weight (``sparse_conv_wgrad``) and bias.

CPU tensors run the CPU kernels (csrc/cpu/sparse_conv.cpp); CUDA tensors the CUDA kernels
(csrc/cuda/sparse_conv: a device hash table, an implicit-GEMM forward, a deterministic
weight gradient), which have not run on a GPU yet: they refuse CUDA tensors unless
``SPIKEOPS_UNVALIDATED_CUDA=1`` (``_extension.check_cuda_validated``).

The wrappers call ``torch.ops.spikeops.*.default`` with fake implementations and autograd
registered below, so a network of sparse convs compiles with ``torch.compile(fullgraph=True)``
once its maps are built (build them outside the compiled region; a regular conv's map has a
data-dependent size).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import _extension
from ..ref import sparse_conv as ref

__all__ = ["conv_map", "map_transpose", "sparse_conv", "nbmap_to_pairs", "conv_out_shape"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


def conv_out_shape(spatial_shape, kernel_size, stride, padding, dilation) -> tuple[int, ...]:
    """Output grid of a regular conv (dense-conv formula); ValueError when empty."""
    return ref._conv_out_shape(tuple(spatial_shape), kernel_size, stride, padding, dilation)


def _spikes_code(spikes) -> int:
    if spikes is None:
        return -1
    if isinstance(spikes, bool):
        return int(spikes)
    raise TypeError(f"spikes must be None (auto), True or False, got {spikes!r}")


def conv_map(indices: torch.Tensor, spatial_shape: Sequence[int], batch_size: int, kernel_size,
             stride=1, padding=0, dilation=1, subm: bool = False):
    """Kernel map of a submanifold (``subm=True``) or regular sparse conv.

    Args:
        indices: int32 ``[N, ndim + 1]``, batch index first; duplicates are rejected.
        spatial_shape: ``ndim`` ints; ``batch_size``: int.
        kernel_size, stride, padding, dilation: an int or ``ndim`` ints (dense-conv meaning;
            a submanifold conv needs stride 1 and ignores padding).

    Returns:
        ``(out_indices int32 [M, ndim + 1], out_spatial_shape, nbmap int32 [M, K])``. Subm:
        the outputs are the input sites in input order; regular: every reached site, sorted
        batch-major then by coordinates (as the reference).
    """
    ndim = len(spatial_shape)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    k = ref._tuple(kernel_size, ndim, "kernel_size")
    s = ref._tuple(stride, ndim, "stride")
    p = ref._tuple(padding, ndim, "padding")
    d = ref._tuple(dilation, ndim, "dilation")
    out_shape = spatial_shape if subm else conv_out_shape(spatial_shape, k, s, p, d)
    _extension.check_cuda_validated("sparse_conv", indices)
    if not _native():
        out_idx, out_shape, pairs = ref.kernel_map(indices, spatial_shape, batch_size, k, s, p,
                                                   d, subm)
        return out_idx, out_shape, _pairs_to_nbmap(pairs, out_idx.shape[0])
    out_idx, nbmap = torch.ops.spikeops.sparse_conv_map.default(
        indices, list(spatial_shape), int(batch_size), list(k), list(s), list(p), list(d),
        bool(subm))
    return out_idx, tuple(out_shape), nbmap


def map_transpose(nbmap: torch.Tensor, num_in: int) -> torch.Tensor:
    """Input-major table ``[num_in, K]`` of ``nbmap [M, K]``: entry ``[i, k]`` is the output
    row that input ``i`` feeds through offset ``k``, or -1."""
    _extension.check_cuda_validated("sparse_conv", nbmap)
    if not _native():
        inv = torch.full((num_in, nbmap.shape[1]), -1, dtype=torch.int32, device=nbmap.device)
        m, k = (nbmap >= 0).nonzero(as_tuple=True)
        inv[nbmap[m, k].long(), k] = m.to(torch.int32)
        return inv
    return torch.ops.spikeops.sparse_map_transpose.default(nbmap, int(num_in))


def nbmap_to_pairs(nbmap: torch.Tensor) -> list[torch.Tensor]:
    """Per offset, the int64 ``[P, 2]`` ``(input row, output row)`` pairs of a table, by
    output row (the reference's ``kernel_map`` format)."""
    out = []
    for k in range(nbmap.shape[1]):
        m = (nbmap[:, k] >= 0).nonzero().flatten()
        out.append(torch.stack([nbmap[m, k].long(), m], dim=1))
    return out


def _pairs_to_nbmap(pairs, num_out):
    dev = pairs[0].device if pairs else None
    nb = torch.full((num_out, len(pairs)), -1, dtype=torch.int32, device=dev)
    for k, pr in enumerate(pairs):
        nb[pr[:, 1], k] = pr[:, 0].to(torch.int32)
    return nb


def _torch_conv(features, nbmap, w3, bias):
    """Gather-GEMM-scatter on the table in plain PyTorch (the fallback)."""
    out = features.new_zeros(nbmap.shape[0], w3.shape[0])
    for k in range(nbmap.shape[1]):
        m = (nbmap[:, k] >= 0).nonzero().flatten()
        if m.numel():
            out = out.index_add(0, m, features[nbmap[m, k].long()] @ w3[:, k, :].t())
    return out if bias is None else out + bias


def _check_conv(features, nbmap, w3, bias):
    if not isinstance(features, torch.Tensor) or features.dtype not in _FLOAT_DTYPES:
        raise TypeError("features: expected a float32, bfloat16 or float16 tensor")
    if features.dim() != 2:
        raise ValueError(f"features must be [N, Cin], got shape {tuple(features.shape)}")
    if nbmap.dtype != torch.int32 or nbmap.dim() != 2:
        raise TypeError(f"nbmap must be int32 [M, K], got {nbmap.dtype} {tuple(nbmap.shape)}")
    if w3.dim() != 3 or w3.shape[1] != nbmap.shape[1]:
        raise ValueError(f"weight must be [Cout, K={nbmap.shape[1]}, Cin], got shape "
                         f"{tuple(w3.shape)}")
    if w3.shape[2] != features.shape[1]:
        raise ValueError(f"features has {features.shape[1]} channels but weight expects "
                         f"Cin={w3.shape[2]}")
    if w3.dtype != features.dtype:
        raise TypeError(f"weight: dtype {w3.dtype} differs from features' {features.dtype}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != w3.shape[0]):
        raise ValueError(f"bias must be [Cout={w3.shape[0]}], got shape {tuple(bias.shape)}")


def sparse_conv(features: torch.Tensor, nbmap: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None, spikes: bool | None = None,
                nbmap_t: torch.Tensor | None = None) -> torch.Tensor:
    """``out [M, Cout] = bias + sum_k features[nbmap[:, k]] @ weight_k^T``.

    Args:
        features: ``[N, Cin]`` float32 / bfloat16 / float16 (float64 runs the plain PyTorch
            gather / index_add path, for checking).
        nbmap: int32 ``[M, K]`` from :func:`conv_map` (or :func:`map_transpose` of one, for
            an inverse conv).
        weight: ``[Cout, k..., Cin]`` (spconv layout, ``prod(k) == K``) or ``[Cout, K, Cin]``,
            the dtype of ``features``.
        bias: ``[Cout]`` or None.
        spikes: ``True`` runs the zero-skipping path (only the non-zero entries of each
            input row are accumulated: binary spikes or integer counts); ``False`` the dense
            GEMM; ``None`` picks the skipping path when at most 1/4 of the entries are
            non-zero. Both give identical results for finite weights (same terms, same
            order, fp32 FMA each), so this is a speed choice only. On CUDA every value
            runs the dense kernel (same results; no zero-skipping kernel there yet).
        nbmap_t: ``map_transpose(nbmap, N)`` if cached (the input gradient runs on it; the
            backward builds it when not given). Layers cache it per ``indice_key``.

    Returns:
        ``[M, Cout]`` in the dtype of ``features``; differentiable in features, weight, bias.
    """
    code = _spikes_code(spikes)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 3:
        raise ValueError("weight must be [Cout, k..., Cin]")
    w3 = weight.reshape(weight.shape[0], math.prod(weight.shape[1:-1]), weight.shape[-1])
    if not _native() or (isinstance(features, torch.Tensor)
                         and features.dtype == torch.float64):
        if features.dtype != torch.float64:
            _check_conv(features, nbmap, w3, bias)
        return _torch_conv(features, nbmap, w3, bias)
    for t in (features, nbmap, w3):
        _extension.check_cuda_validated("sparse_conv", t)
    return torch.ops.spikeops.sparse_conv_fwd.default(features, nbmap, w3, bias, code, nbmap_t)


# ---- fake implementations and autograd --------------------------------------------------

if _extension.AVAILABLE:
    @torch.library.register_fake("spikeops::sparse_conv_map")
    def _(indices, spatial_shape, batch_size, kernel_size, stride, padding, dilation, subm):
        k = 1
        for x in (kernel_size if len(kernel_size) > 1 else
                  list(kernel_size) * len(spatial_shape)):
            k *= x
        if subm:
            n = indices.shape[0]
        else:
            n = torch.library.get_ctx().new_dynamic_size()
        return (indices.new_empty(n, len(spatial_shape) + 1),
                indices.new_empty(n, k))

    @torch.library.register_fake("spikeops::sparse_map_transpose")
    def _(nbmap, num_in):
        return nbmap.new_empty(num_in, nbmap.shape[1])

    @torch.library.register_fake("spikeops::sparse_conv_fwd")
    def _(features, nbmap, weight, bias, spikes, nbmap_t=None):
        _check_conv(features, nbmap, weight, bias)
        return features.new_empty(nbmap.shape[0], weight.shape[0])

    @torch.library.register_fake("spikeops::sparse_conv_wgrad")
    def _(grad_out, features, nbmap, spikes):
        return grad_out.new_empty(grad_out.shape[1], nbmap.shape[1], features.shape[1])

    def _conv_setup(ctx, inputs, output):
        features, nbmap, w3, bias, spikes, nbmap_t = inputs
        ctx.save_for_backward(features, nbmap, w3, nbmap_t)
        ctx.has_bias = bias is not None
        ctx.spikes = spikes

    def _conv_backward(ctx, grad):
        features, nbmap, w3, inv = ctx.saved_tensors
        grad = grad.contiguous()
        gf = gw = gb = None
        if ctx.needs_input_grad[0]:
            if inv is None:
                inv = torch.ops.spikeops.sparse_map_transpose.default(nbmap, features.shape[0])
            gf = torch.ops.spikeops.sparse_conv_fwd.default(grad, inv, w3.permute(2, 1, 0),
                                                            None, 0, None)
        if ctx.needs_input_grad[2]:
            gw = torch.ops.spikeops.sparse_conv_wgrad.default(grad, features, nbmap,
                                                               ctx.spikes)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            gb = grad.float().sum(0).to(grad.dtype)
        return gf, None, gw, gb, None, None

    torch.library.register_autograd("spikeops::sparse_conv_fwd", _conv_backward,
                                    setup_context=_conv_setup)
