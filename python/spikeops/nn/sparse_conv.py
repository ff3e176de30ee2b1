"""Sparse convolution layers with spconv's names and arguments.

``SubMConv3d / SparseConv3d / SparseInverseConv3d`` (and the 1-D / 2-D ones) take and return
:class:`spikeops.sparse.SparseTensor`. Weights are ``[Cout, k..., Cin]`` (spconv's layout), so a
spconv ``state_dict`` (``weight``, ``bias``) loads as it is. Kernel maps are cached in the
tensor's ``indice_dict`` under ``indice_key``: later layers with the same key reuse them, an
inverse conv looks up the strided conv that made its input, and reusing a key with different
conv parameters raises ``ValueError``.

``spikes=`` (None / True / False) picks the zero-skipping path for spike features; see
:func:`spikeops.ops.sparse.sparse_conv`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import sparse as sc
from ..ref import sparse_conv as ref
from ..sparse.tensor import IndiceData, SparseTensor

__all__ = ["SparseConvolution", "SubMConv1d", "SubMConv2d", "SubMConv3d", "SparseConv1d",
           "SparseConv2d", "SparseConv3d", "SparseInverseConv1d", "SparseInverseConv2d",
           "SparseInverseConv3d", "SparseMaxPool2d", "SparseMaxPool3d", "SparseAvgPool2d",
           "SparseAvgPool3d", "SparseGlobalAvgPool", "SparseGlobalMaxPool", "SparseBatchNorm",
           "SparseSequential", "get_kernel_map"]


def get_kernel_map(x: SparseTensor, kernel_size, stride=1, padding=0, dilation=1,
                   subm=False, indice_key=None) -> IndiceData:
    """The kernel map of a conv on ``x``, from ``x.indice_dict[indice_key]`` when cached
    (and built and cached otherwise). A cached map built with other parameters, or for other
    input sites, raises ValueError naming ``indice_key``."""
    nd = x.ndim
    k = ref._tuple(kernel_size, nd, "kernel_size")
    s = (1,) * nd if subm else ref._tuple(stride, nd, "stride")
    p = (0,) * nd if subm else ref._tuple(padding, nd, "padding")
    d = ref._tuple(dilation, nd, "dilation")
    want = dict(kernel_size=k, stride=s, padding=p, dilation=d, subm=bool(subm))
    if indice_key is not None and indice_key in x.indice_dict:
        data = x.indice_dict[indice_key]
        if data.params() != want:
            raise ValueError(f"indice_key {indice_key!r} was built with {data.params()}, "
                             f"reused with {want}")
        if data.in_indices is not x.indices and (
                data.in_indices.shape != x.indices.shape
                or not torch.equal(data.in_indices, x.indices)):
            raise ValueError(f"indice_key {indice_key!r} was built for other input sites "
                             f"({data.in_indices.shape[0]} rows; got {x.indices.shape[0]})")
        return data
    out_idx, out_shape, nbmap = sc.conv_map(x.indices, x.spatial_shape, x.batch_size, k, s, p,
                                            d, subm)
    if subm:
        out_idx = x.indices                       # same sites: keep the very tensor
    data = IndiceData(x.indices, x.spatial_shape, out_idx, tuple(out_shape), nbmap, k, s, p,
                      d, bool(subm))
    if indice_key is not None:
        x.indice_dict[indice_key] = data
    return data


class SparseConvolution(nn.Module):
    """A sparse convolution of ``ndim`` spatial dims (spconv's ``SparseConvolution``).

    Args:
        ndim, in_channels, out_channels, kernel_size, stride, padding, dilation: as spconv.
        groups: only 1.
        bias: learnable ``[Cout]`` bias.
        subm: submanifold (outputs at the input sites; stride 1, padding ignored).
        inverse: inverse conv: back to the sites the strided conv with ``indice_key`` came
            from (its kernel_size must match; stride/padding/dilation come from the cache).
        indice_key: kernel-map cache key.
        spikes: None / True / False, passed to :func:`~spikeops.ops.sparse.sparse_conv`.
    """

    def __init__(self, ndim, in_channels, out_channels, kernel_size=3, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, subm=False, inverse=False, indice_key=None,
                 spikes=None, algo=None):
        super().__init__()
        if groups != 1:
            raise ValueError(f"groups must be 1, got {groups}")
        if inverse and indice_key is None:
            raise ValueError("an inverse conv needs the indice_key of the strided conv it inverts")
        self.ndim = ndim
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = ref._tuple(kernel_size, ndim, "kernel_size")
        self.stride = ref._tuple(stride, ndim, "stride")
        self.padding = ref._tuple(padding, ndim, "padding")
        self.dilation = ref._tuple(dilation, ndim, "dilation")
        self.subm, self.inverse, self.indice_key = bool(subm), bool(inverse), indice_key
        self.spikes = spikes
        self.weight = nn.Parameter(torch.empty(out_channels, *self.kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # kaiming_uniform(a=sqrt(5)) with fan_in = Cin * prod(k), like torch's ConvNd.
        fan_in = self.in_channels * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"subm={self.subm}, inverse={self.inverse}, indice_key={self.indice_key!r}")

    def _map(self, x: SparseTensor):
        if not self.inverse:
            d = get_kernel_map(x, self.kernel_size, self.stride, self.padding, self.dilation,
                               self.subm, self.indice_key)
            return d.out_indices, d.out_spatial_shape, d.nbmap, d.transposed
        data = x.indice_dict.get(self.indice_key)
        if data is None:
            raise ValueError(f"indice_key {self.indice_key!r}: no cached strided conv to invert")
        if data.subm:
            raise ValueError(f"indice_key {self.indice_key!r} holds a submanifold map; an "
                             f"inverse conv needs a strided conv's")
        if data.kernel_size != self.kernel_size:
            raise ValueError(f"indice_key {self.indice_key!r} was built with kernel_size "
                             f"{data.kernel_size}, inverse conv has {self.kernel_size}")
        if data.out_indices is not x.indices and not torch.equal(data.out_indices, x.indices):
            raise ValueError(f"indice_key {self.indice_key!r}: the input is not at the sites "
                             f"that strided conv produced")
        # the inverse conv runs on the transposed table; its own transpose is the forward map
        return data.in_indices, data.in_spatial_shape, data.transposed(), lambda: data.nbmap

    def forward(self, x: SparseTensor) -> SparseTensor:
        if not isinstance(x, SparseTensor):
            raise TypeError(f"input must be a SparseTensor, got {type(x).__name__}")
        if x.ndim != self.ndim:
            raise ValueError(f"input has {x.ndim} spatial dims, layer expects {self.ndim}")
        if x.features.shape[1] != self.in_channels:
            raise ValueError(f"features has {x.features.shape[1]} channels but the layer "
                             f"expects in_channels={self.in_channels}")
        out_idx, out_shape, nbmap, transposed = self._map(x)
        w, b = self.weight, self.bias
        if w.dtype != x.features.dtype:
            w = w.to(x.features.dtype)
            b = None if b is None else b.to(x.features.dtype)
        # the input gradient's table, cached per indice_key (only when a backward can run)
        nbmap_t = transposed() if torch.is_grad_enabled() and x.features.requires_grad else None
        out = sc.sparse_conv(x.features, nbmap, w, b, self.spikes, nbmap_t)
        return SparseTensor(out, out_idx, out_shape, x.batch_size, x.indice_dict, check=False)


def _make(name, ndim, subm=False, inverse=False):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, indice_key=None, spikes=None, algo=None):
        SparseConvolution.__init__(self, ndim, in_channels, out_channels, kernel_size, stride,
                                   padding, dilation, groups, bias, subm=subm, inverse=inverse,
                                   indice_key=indice_key, spikes=spikes)
    return type(name, (SparseConvolution,), {"__init__": __init__,
                                              "__doc__": f"spconv's ``{name}``."})


SubMConv1d = _make("SubMConv1d", 1, subm=True)
SubMConv2d = _make("SubMConv2d", 2, subm=True)
SubMConv3d = _make("SubMConv3d", 3, subm=True)
SparseConv1d = _make("SparseConv1d", 1)
SparseConv2d = _make("SparseConv2d", 2)
SparseConv3d = _make("SparseConv3d", 3)
SparseInverseConv1d = _make("SparseInverseConv1d", 1, inverse=True)
SparseInverseConv2d = _make("SparseInverseConv2d", 2, inverse=True)
SparseInverseConv3d = _make("SparseInverseConv3d", 3, inverse=True)


class _SparsePool(nn.Module):
    """Pooling over the existing inputs of each window (missing sites are not zeros);
    output sites as a regular conv, ``stride`` defaults to ``kernel_size``."""

    def __init__(self, ndim, kernel_size, stride=None, padding=0, dilation=1, indice_key=None,
                 mode="max"):
        super().__init__()
        self.ndim = ndim
        self.kernel_size = ref._tuple(kernel_size, ndim, "kernel_size")
        self.stride = self.kernel_size if stride is None else ref._tuple(stride, ndim, "stride")
        self.padding = ref._tuple(padding, ndim, "padding")
        self.dilation = ref._tuple(dilation, ndim, "dilation")
        self.indice_key, self.mode = indice_key, mode

    def forward(self, x: SparseTensor) -> SparseTensor:
        d = get_kernel_map(x, self.kernel_size, self.stride, self.padding, self.dilation,
                           False, self.indice_key)
        nb = d.nbmap.long()
        valid = (nb >= 0).unsqueeze(-1)                          # [M, K, 1]
        gathered = x.features[nb.clamp(min=0)]                   # [M, K, C]
        if self.mode == "max":
            low = torch.finfo(x.features.dtype).min
            out = gathered.masked_fill(~valid, low).amax(dim=1)
        else:
            total = (gathered * valid).sum(dim=1)
            out = total / valid.sum(dim=1).to(x.features.dtype)
        return SparseTensor(out, d.out_indices, d.out_spatial_shape, x.batch_size,
                            x.indice_dict, check=False)


def _make_pool(name, ndim, mode):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, indice_key=None):
        _SparsePool.__init__(self, ndim, kernel_size, stride, padding, dilation, indice_key,
                             mode)
    return type(name, (_SparsePool,), {"__init__": __init__,
                                       "__doc__": f"spconv's ``{name}``: " + (_SparsePool.__doc__ or "")})


SparseMaxPool2d = _make_pool("SparseMaxPool2d", 2, "max")
SparseMaxPool3d = _make_pool("SparseMaxPool3d", 3, "max")
SparseAvgPool2d = _make_pool("SparseAvgPool2d", 2, "avg")
SparseAvgPool3d = _make_pool("SparseAvgPool3d", 3, "avg")


class SparseGlobalAvgPool(nn.Module):
    """Mean of each batch element's active features -> dense ``[batch_size, C]`` (an
    element with no active site gives zeros)."""

    def forward(self, x: SparseTensor) -> torch.Tensor:
        b = x.indices[:, 0].long()
        c = x.features.shape[1]
        total = x.features.new_zeros(x.batch_size, c).index_add(0, b, x.features)
        count = torch.bincount(b, minlength=x.batch_size).clamp(min=1).to(x.features.dtype)
        return total / count.unsqueeze(1)


class SparseGlobalMaxPool(nn.Module):
    """Max of each batch element's active features -> dense ``[batch_size, C]`` (an element
    with no active site gives zeros)."""

    def forward(self, x: SparseTensor) -> torch.Tensor:
        b = x.indices[:, 0].long()
        c = x.features.shape[1]
        out = x.features.new_zeros(x.batch_size, c)
        return out.scatter_reduce(0, b.unsqueeze(1).expand(-1, c), x.features, reduce="amax",
                                  include_self=False)


class SparseBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the active sites' features (statistics over the N rows)."""

    def forward(self, x):
        if isinstance(x, SparseTensor):
            return x.replace_feature(super().forward(x.features))
        return super().forward(x)


class SparseSequential(nn.Sequential):
    """``nn.Sequential`` for SparseTensors: sparse layers get the tensor; any other module
    (``nn.ReLU``, ``nn.BatchNorm1d``, a spiking neuron, ...) is applied to its features."""

    def forward(self, x):
        for module in self:
            if isinstance(x, SparseTensor) and not _is_sparse_module(module):
                x = x.replace_feature(module(x.features))
            else:
                x = module(x)
        return x


def _is_sparse_module(m) -> bool:
    return isinstance(m, (SparseConvolution, _SparsePool, SparseGlobalAvgPool,
                          SparseGlobalMaxPool, SparseBatchNorm, SparseSequential))
