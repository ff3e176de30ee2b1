"""Pure-PyTorch reference of spike sparse convolution (the test oracle and fallback).

Coordinates follow spconv's ``SparseConvTensor``: ``indices`` is int32 ``[N, ndim + 1]``, one
row per active site, the batch index first and then the ``ndim`` spatial coordinates;
``spatial_shape`` is a tuple of ``ndim`` ints and ``batch_size`` an int. ``features [N, C]`` has
one row per row of ``indices``. Duplicate sites are rejected (a later ``dedup`` may merge them).

Weights use spconv's layout ``[Cout, k0, k1, ..., Cin]``. A *kernel map* is a list with one entry
per kernel offset, the offsets enumerated in row-major order over the kernel dims (the order of
``weight.reshape(Cout, K, Cin)[:, j]``); entry ``j`` is an int64 ``[P, 2]`` tensor of
``(input row, output row)`` pairs. A convolution is then gather -> GEMM -> scatter (index_add)
over those pairs, offset by offset in that order.

Site matching uses a hash: coordinates are linearised batch-major into int64 keys
(``((b * s0 + c0) * s1 + c1) ...``) and looked up with ``torch.searchsorted`` on sorted keys.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_indices", "kernel_map", "sparse_conv", "to_dense", "from_dense",
           "sparse_max_pool", "sparse_avg_pool", "voxelize"]


# ----------------------------------------------------------------------------- helpers

def _tuple(v, ndim: int, name: str) -> tuple[int, ...]:
    """``v`` (an int or a sequence of ``ndim`` ints) as a tuple of ``ndim`` ints."""
    if isinstance(v, int):
        return (v,) * ndim
    t = tuple(int(x) for x in v)
    if len(t) != ndim:
        raise ValueError(f"{name} must be an int or {ndim} ints, got {v!r}")
    return t


def check_indices(indices: torch.Tensor, spatial_shape: Sequence[int], batch_size: int) -> None:
    """Raise ``TypeError``/``ValueError`` (naming the argument) unless ``indices`` is a valid
    int32 ``[N, ndim + 1]`` coordinate table: batch index in ``[0, batch_size)``, coordinate
    ``d`` in ``[0, spatial_shape[d])``, no site listed twice (duplicates are rejected here)."""
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype != torch.int32:
        raise TypeError(f"indices must be int32, got {indices.dtype}")
    ndim = len(spatial_shape)
    if ndim < 1 or any(int(s) < 1 for s in spatial_shape):
        raise ValueError(f"spatial_shape must be positive ints, got {tuple(spatial_shape)}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if indices.dim() != 2 or indices.shape[1] != ndim + 1:
        raise ValueError(f"indices must have shape [N, {ndim + 1}] (batch index + {ndim} "
                         f"coordinates for spatial_shape {tuple(spatial_shape)}), "
                         f"got {tuple(indices.shape)}")
    if indices.numel() == 0:
        return
    if (indices < 0).any():
        raise ValueError("indices must be non-negative (batch index and coordinates)")
    if (indices[:, 0] >= batch_size).any():
        raise ValueError(f"indices has a batch index >= batch_size ({batch_size})")
    limit = torch.tensor(list(spatial_shape), dtype=torch.int64, device=indices.device)
    if (indices[:, 1:].to(torch.int64) >= limit).any():
        raise ValueError(f"indices has a coordinate outside spatial_shape {tuple(spatial_shape)}")
    keys = _keys(indices, spatial_shape)
    if torch.unique(keys).numel() != keys.numel():
        raise ValueError("indices has duplicate coordinates (merge them first)")


def _keys(indices: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Batch-major linear int64 key of each row of ``indices [N, ndim + 1]`` -> ``[N]``."""
    idx = indices.to(torch.int64)
    key = idx[:, 0].clone()
    for d, s in enumerate(spatial_shape):
        key = key * int(s) + idx[:, d + 1]
    return key


def _unkeys(keys: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`_keys`: int64 ``[N]`` -> int32 ``[N, ndim + 1]``."""
    cols = []
    rest = keys
    for s in reversed(spatial_shape):
        cols.append(rest % int(s))
        rest = rest // int(s)
    cols.append(rest)
    return torch.stack(cols[::-1], dim=1).to(torch.int32)


def _lookup(table_keys: torch.Tensor, query_keys: torch.Tensor) -> torch.Tensor:
    """Row of each query key in ``table_keys`` (unsorted, unique), or -1 where absent."""
    if table_keys.numel() == 0:
        return torch.full_like(query_keys, -1)
    sorted_keys, order = torch.sort(table_keys)
    pos = torch.searchsorted(sorted_keys, query_keys).clamp(max=sorted_keys.numel() - 1)
    hit = sorted_keys[pos] == query_keys
    return torch.where(hit, order[pos], torch.full_like(pos, -1))


def _offsets(kernel_size: tuple[int, ...], device) -> torch.Tensor:
    """All kernel offsets, row-major over the kernel dims -> int64 ``[K, ndim]``."""
    grids = torch.meshgrid(*[torch.arange(k, device=device) for k in kernel_size], indexing="ij")
    return torch.stack(grids, dim=-1).reshape(-1, len(kernel_size))


def _conv_out_shape(shape, k, s, p, d) -> tuple[int, ...]:
    out = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                for n, kk, ss, pp, dd in zip(shape, k, s, p, d))
    if any(o < 1 for o in out):
        raise ValueError(f"kernel_size/stride/padding/dilation give an empty output for "
                         f"spatial_shape {tuple(shape)}")
    return out


def _strided_candidates(in_indices, out_shape, off, s, p, d):
    """For one offset ``off [ndim]``: the output coordinate ``o`` that input ``i`` feeds,
    ``o * s - p + off * d == i``, and whether it exists -> (``[N, ndim+1]`` int64, ``[N]`` bool)."""
    idx = in_indices.to(torch.int64)
    s_t = torch.tensor(s, device=idx.device)
    num = idx[:, 1:] + torch.tensor(p, device=idx.device) - off * torch.tensor(d, device=idx.device)
    o = torch.div(num, s_t, rounding_mode="floor")
    ok = ((num % s_t) == 0) & (o >= 0) & (o < torch.tensor(out_shape, device=idx.device))
    return torch.cat([idx[:, :1], o], dim=1), ok.all(dim=1)


def _strided_pairs(in_indices, in_shape, out_indices, out_shape, k, s, p, d):
    """Pairs of the strided conv from ``in_indices`` to the given ``out_indices``."""
    out_keys = _keys(out_indices, out_shape)
    n_in = in_indices.shape[0]
    rows = torch.arange(n_in, device=in_indices.device)
    pairs = []
    for off in _offsets(k, in_indices.device):
        o, ok = _strided_candidates(in_indices, out_shape, off, s, p, d)
        o_row = torch.full((n_in,), -1, dtype=torch.int64, device=in_indices.device)
        if ok.any():
            o_row[ok] = _lookup(out_keys, _keys(o[ok], out_shape))
        keep = o_row >= 0
        pairs.append(torch.stack([rows[keep], o_row[keep]], dim=1))
    return pairs


# ----------------------------------------------------------------------------- kernel map

def kernel_map(in_indices: torch.Tensor, spatial_shape: Sequence[int], batch_size: int,
               kernel_size, stride=1, padding=0, dilation=1, subm: bool = False,
               transposed: bool = False, out_indices: torch.Tensor | None = None,
               out_spatial_shape: Sequence[int] | None = None):
    """The kernel map of a sparse convolution.

    Args:
        in_indices: int32 ``[N, ndim + 1]`` input sites (batch index first).
        spatial_shape: ``ndim`` ints, the input grid.
        kernel_size, stride, padding, dilation: an int or ``ndim`` ints (dense-conv meaning).
        subm: submanifold conv: the outputs are exactly the input sites, in input order;
            output ``p`` takes input ``q = p + (offset - centre) * dilation`` with
            ``centre = kernel_size // 2`` per dim (odd kernels: the true centre; even kernels:
            the centre is the upper of the two middle taps, like dense conv with padding
            ``dilation * (k // 2)`` cropped to the input grid). Needs ``stride == 1``;
            ``padding`` is ignored.
        transposed: inverse conv (spconv ``SparseInverseConv`` with an ``indice_key``):
            ``in_indices`` are the coarse sites (output of a strided conv), ``out_indices``
            (required) the fine sites it came from, and ``out_spatial_shape`` the fine grid
            (default: the transposed-conv size ``(s-1)*stride - 2p + d(k-1) + 1``). The pairs
            are those of the forward strided conv fine -> coarse (``kernel_size``, ``stride``,
            ... are the forward conv's), roles swapped.

    Returns:
        ``(out_indices, out_spatial_shape, pairs)``: int32 ``[M, ndim + 1]``, a tuple of
        ``ndim`` ints, and a list of ``prod(kernel_size)`` int64 ``[P_j, 2]`` tensors of
        ``(input row, output row)``, one per offset in row-major order over the kernel dims.
        A regular conv's outputs are every site some input reaches, sorted batch-major then by
        coordinates; its pairs are ordered by input row (subm: by output row).
    """
    ndim = len(spatial_shape)
    spatial_shape = tuple(int(x) for x in spatial_shape)
    check_indices(in_indices, spatial_shape, batch_size)
    k = _tuple(kernel_size, ndim, "kernel_size")
    s = _tuple(stride, ndim, "stride")
    p = _tuple(padding, ndim, "padding")
    d = _tuple(dilation, ndim, "dilation")
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError("kernel_size, stride, dilation must be >= 1 and padding >= 0")
    dev = in_indices.device

    if subm:
        if transposed:
            raise ValueError("subm and transposed are exclusive")
        if any(x != 1 for x in s):
            raise ValueError(f"stride must be 1 for a submanifold conv, got {s}")
        in_keys = _keys(in_indices, spatial_shape)
        idx = in_indices.to(torch.int64)
        rows = torch.arange(idx.shape[0], device=dev)
        centre = torch.tensor([kk // 2 for kk in k], device=dev)
        limit = torch.tensor(spatial_shape, device=dev)
        d_t = torch.tensor(d, device=dev)
        pairs = []
        for off in _offsets(k, dev):
            q = idx[:, 1:] + (off - centre) * d_t
            ok = ((q >= 0) & (q < limit)).all(dim=1)
            q_row = torch.full_like(rows, -1)
            if ok.any():
                q_row[ok] = _lookup(in_keys, _keys(torch.cat([idx[ok, :1], q[ok]], 1),
                                                   spatial_shape))
            keep = q_row >= 0
            pairs.append(torch.stack([q_row[keep], rows[keep]], dim=1))
        return in_indices, spatial_shape, pairs

    if transposed:
        if out_indices is None:
            raise ValueError("out_indices (the fine sites) is required when transposed=True")
        if out_spatial_shape is None:
            out_spatial_shape = tuple((n - 1) * ss - 2 * pp + dd * (kk - 1) + 1
                                      for n, kk, ss, pp, dd in zip(spatial_shape, k, s, p, d))
        out_spatial_shape = tuple(int(x) for x in out_spatial_shape)
        check_indices(out_indices, out_spatial_shape, batch_size)
        if _conv_out_shape(out_spatial_shape, k, s, p, d) != spatial_shape:
            raise ValueError(f"out_spatial_shape {out_spatial_shape} does not conv down to "
                             f"spatial_shape {spatial_shape}")
        fwd = _strided_pairs(out_indices, out_spatial_shape, in_indices, spatial_shape,
                             k, s, p, d)
        return out_indices, out_spatial_shape, [pr.flip(1) for pr in fwd]

    out_shape = _conv_out_shape(spatial_shape, k, s, p, d)
    cand = []
    for off in _offsets(k, dev):
        o, ok = _strided_candidates(in_indices, out_shape, off, s, p, d)
        cand.append(_keys(o[ok], out_shape))
    out_keys = (torch.unique(torch.cat(cand)) if cand
                else torch.zeros(0, dtype=torch.int64, device=dev))
    out_idx = _unkeys(out_keys, out_shape)
    pairs = _strided_pairs(in_indices, spatial_shape, out_idx, out_shape, k, s, p, d)
    return out_idx, out_shape, pairs


# ----------------------------------------------------------------------------- convolution

def sparse_conv(features: torch.Tensor, in_indices: torch.Tensor, spatial_shape, batch_size: int,
                weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                dilation=1, subm: bool = False, transposed: bool = False,
                out_indices: torch.Tensor | None = None, out_spatial_shape=None):
    """Sparse convolution as gather -> GEMM -> scatter over :func:`kernel_map`.

    Args:
        features: ``[N, Cin]``, one row per row of ``in_indices``.
        in_indices: int32 ``[N, ndim + 1]``.
        weight: ``[Cout, k0, ..., k_{ndim-1}, Cin]`` (spconv layout). Equals a dense
            ``conv{ndim}d`` with ``weight.movedim(-1, 1)``; for ``transposed=True`` a dense
            ``conv_transpose{ndim}d`` with ``weight.movedim(-1, 0)``.
        bias: ``[Cout]`` or None, added at every output site.
        stride, padding, dilation, subm, transposed, out_indices, out_spatial_shape: as in
            :func:`kernel_map` (the kernel size is read from ``weight``).

    Returns:
        ``(out_features [M, Cout], out_indices [M, ndim + 1] int32, out_spatial_shape)``.
        Differentiable w.r.t. ``features``, ``weight`` and ``bias``.
    """
    ndim = len(spatial_shape)
    if weight.dim() != ndim + 2:
        raise ValueError(f"weight must be [Cout, *kernel({ndim}), Cin], got {tuple(weight.shape)}")
    c_out, c_in = weight.shape[0], weight.shape[-1]
    if features.dim() != 2 or features.shape[0] != in_indices.shape[0] \
            or features.shape[1] != c_in:
        raise ValueError(f"features must be [N={in_indices.shape[0]}, Cin={c_in}], "
                         f"got {tuple(features.shape)}")
    kernel_size = tuple(weight.shape[1:-1])
    out_idx, out_shape, pairs = kernel_map(in_indices, spatial_shape, batch_size, kernel_size,
                                           stride, padding, dilation, subm, transposed,
                                           out_indices, out_spatial_shape)
    w = weight.reshape(c_out, -1, c_in)                        # [Cout, K, Cin]
    out = features.new_zeros(out_idx.shape[0], c_out)
    for j, pr in enumerate(pairs):
        if pr.shape[0] == 0:
            continue
        contrib = features.index_select(0, pr[:, 0]) @ w[:, j, :].t()   # [P, Cout]
        out = out.index_add(0, pr[:, 1], contrib)
    if bias is not None:
        out = out + bias
    return out, out_idx, out_shape


# ----------------------------------------------------------------------------- dense <-> sparse

def to_dense(features: torch.Tensor, indices: torch.Tensor, spatial_shape, batch_size: int):
    """Scatter ``features [N, C]`` at ``indices`` into a zero grid ``[B, C, *spatial_shape]``
    (channels first, like spconv's ``.dense()``). Differentiable w.r.t. ``features``."""
    check_indices(indices, spatial_shape, batch_size)
    dense = features.new_zeros((batch_size, *[int(s) for s in spatial_shape], features.shape[1]))
    idx = tuple(indices.to(torch.int64).unbind(1))
    dense = dense.index_put(idx, features)
    return dense.movedim(-1, 1)


def from_dense(x: torch.Tensor):
    """The non-zero sites of a dense ``x [B, C, *spatial]`` (a site is active when any channel
    is non-zero) -> ``(features [N, C], indices int32 [N, ndim + 1])``, sorted batch-major
    then by coordinates."""
    active = (x != 0).any(dim=1)
    indices = active.nonzero().to(torch.int32)
    features = x.movedim(1, -1)[active]
    return features, indices


# ----------------------------------------------------------------------------- pooling

def _pool_map(in_indices, spatial_shape, batch_size, kernel_size, stride, padding,
              dilation):
    ndim = len(spatial_shape)
    k = _tuple(kernel_size, ndim, "kernel_size")
    stride = k if stride is None else stride
    out_idx, out_shape, pairs = kernel_map(in_indices, spatial_shape, batch_size, k, stride,
                                           padding, dilation)
    pr = (torch.cat(pairs) if pairs
          else torch.zeros(0, 2, dtype=torch.int64, device=in_indices.device))
    return out_idx, out_shape, pr


def sparse_max_pool(features: torch.Tensor, in_indices: torch.Tensor, spatial_shape,
                    batch_size: int, kernel_size, stride=None, padding=0, dilation=1):
    """Max pooling over the *existing* inputs of each window (missing sites are not zeros).
    Output sites as a regular conv (``stride`` defaults to ``kernel_size``).
    Returns ``(out_features [M, C], out_indices, out_spatial_shape)``."""
    out_idx, out_shape, pr = _pool_map(in_indices, spatial_shape, batch_size,
                                       kernel_size, stride, padding, dilation)
    c = features.shape[1]
    out = features.new_zeros(out_idx.shape[0], c)
    src = features.index_select(0, pr[:, 0])
    out = out.scatter_reduce(0, pr[:, 1:2].expand(-1, c), src, reduce="amax", include_self=False)
    return out, out_idx, out_shape


def sparse_avg_pool(features: torch.Tensor, in_indices: torch.Tensor, spatial_shape,
                    batch_size: int, kernel_size, stride=None, padding=0, dilation=1):
    """Mean over the *existing* inputs of each window (divides by their count, not by the
    window size). Output sites as a regular conv (``stride`` defaults to ``kernel_size``).
    Returns ``(out_features [M, C], out_indices, out_spatial_shape)``."""
    out_idx, out_shape, pr = _pool_map(in_indices, spatial_shape, batch_size,
                                       kernel_size, stride, padding, dilation)
    m = out_idx.shape[0]
    total = features.new_zeros(m, features.shape[1]).index_add(
        0, pr[:, 1], features.index_select(0, pr[:, 0]))
    count = torch.zeros(m, dtype=features.dtype, device=features.device).index_add(
        0, pr[:, 1], torch.ones(pr.shape[0], dtype=features.dtype, device=features.device))
    return total / count.unsqueeze(1), out_idx, out_shape


# ----------------------------------------------------------------------------- voxelization

def voxelize(points: torch.Tensor, features: torch.Tensor, voxel_size, point_range,
             batch_index: int = 0):
    """Hash points into voxels and average the features of the points in each voxel.

    Args:
        points: ``[P, 3]`` float ``(x, y, z)``.
        features: ``[P, C]``.
        voxel_size: 3 floats ``(vx, vy, vz)``.
        point_range: 6 floats ``(x_min, y_min, z_min, x_max, y_max, z_max)``; the range is
            half-open, points outside it are dropped.
        batch_index: written into the batch column of every output row.

    Returns:
        ``(voxel_features [V, C], indices int32 [V, 4], spatial_shape, counts int64 [V])``.
        As in spconv, ``indices`` rows are ``(batch, z, y, x)`` and ``spatial_shape`` is
        ``(nz, ny, nx)`` with ``n = round((max - min) / voxel_size)``; voxel ``(iz, iy, ix)``
        holds the points with ``floor((p - min) / voxel_size) == (ix, iy, iz)``. Rows are sorted
        by ``(z, y, x)``; ``counts`` is the number of points per voxel. Differentiable
        w.r.t. ``features``.
    """
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [P, 3], got {tuple(points.shape)}")
    if features.dim() != 2 or features.shape[0] != points.shape[0]:
        raise ValueError(f"features must be [P={points.shape[0]}, C], got {tuple(features.shape)}")
    vs = torch.as_tensor(voxel_size, dtype=torch.float64, device=points.device).reshape(3)
    rng = torch.as_tensor(point_range, dtype=torch.float64, device=points.device).reshape(6)
    lo, hi = rng[:3], rng[3:]
    grid = torch.round((hi - lo) / vs).to(torch.int64)                  # (nx, ny, nz)
    if (grid < 1).any():
        raise ValueError(f"point_range {tuple(rng.tolist())} is empty for voxel_size "
                         f"{tuple(vs.tolist())}")
    cell = torch.floor((points.to(torch.float64) - lo) / vs).to(torch.int64)  # (ix, iy, iz)
    inside = ((cell >= 0) & (cell < grid)).all(dim=1)
    cell, feats = cell[inside], features[inside]
    spatial_shape = tuple(int(n) for n in grid.flip(0).tolist())         # (nz, ny, nx)
    zyx = torch.cat([torch.full_like(cell[:, :1], int(batch_index)), cell.flip(1)], dim=1)
    keys = _keys(zyx, spatial_shape)
    uniq, inverse = torch.unique(keys, return_inverse=True)              # sorted keys
    v = uniq.numel()
    counts = torch.zeros(v, dtype=torch.int64, device=points.device).index_add(
        0, inverse, torch.ones_like(inverse))
    total = feats.new_zeros(v, feats.shape[1]).index_add(0, inverse, feats)
    return total / counts.unsqueeze(1).to(feats.dtype), _unkeys(uniq, spatial_shape), \
        spatial_shape, counts
