"""E-3DSNN for point clouds (Qiu et al., "Efficient 3D Recognition with Event-driven Spike
Sparse Convolution", AAAI 2025): points are voxelised into a :class:`~spikeops.sparse.SparseTensor`
(spike voxel coding), then spike sparse convolution stages: submanifold convs on integer
I-LIF spikes with membrane-shortcut residual blocks, strided sparse convs between stages,
I-LIF spikes averaged over each cloud's sites and a small classifier (whose Linear layers take the ``nm=`` option: the
sparse convolutions have no N:M form).

    x = points_to_sparse([pts0, pts1], grid=16)     # list of [P_i, 3] in [-1, 1]^3
    logits = E3DSNN(num_classes=5)(x)               # [B, classes]
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.neurons import reset_net
from ..nn.sparse_conv import (SparseBatchNorm, SparseConv3d, SparseGlobalAvgPool,
                              SubMConv3d)
from ..sparse.tensor import SparseTensor, voxelize
from ._common import apply_nm, ilif

__all__ = ["E3DSNN", "points_to_sparse", "CONFIGS"]

CONFIGS = {
    "tiny": dict(widths=(16, 32, 64), depths=(1, 1, 1), max_level=4),
    "small": dict(widths=(32, 64, 128, 256), depths=(1, 2, 2, 2), max_level=4),
}


def points_to_sparse(points: list[torch.Tensor], grid: int = 16,
                     bound: float = 1.0) -> SparseTensor:
    """Voxelise a batch of point clouds (each ``[P_i, 3]`` inside ``[-bound, bound]^3``)
    on a ``grid^3`` lattice. Features per voxel (4): occupancy 1 and the mean offset of its
    points from the voxel centre in voxel units (in ``[-0.5, 0.5]``)."""
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError("points: expected a non-empty list of [P, 3] tensors")
    voxel = 2 * bound / grid
    feats, idx = [], []
    for b, p in enumerate(points):
        if p.dim() != 2 or p.shape[1] != 3:
            raise ValueError(f"points[{b}]: expected [P, 3], got {tuple(p.shape)}")
        p = p.float()
        cell = ((p + bound) / voxel).floor()
        offset = (p + bound) / voxel - cell - 0.5
        f = torch.cat([torch.ones(p.shape[0], 1), offset], dim=1)
        st, _ = voxelize(p, f, (voxel,) * 3, (-bound,) * 3 + (bound,) * 3, batch_index=b)
        feats.append(st.features)
        idx.append(st.indices)
    return SparseTensor(torch.cat(feats), torch.cat(idx), (grid,) * 3, len(points))


class SparseILIF(nn.Module):
    """I-LIF on a SparseTensor's features (one time step: integer spikes 0..D)."""

    def __init__(self, max_level):
        super().__init__()
        self.n = ilif(max_level)

    def forward(self, x: SparseTensor) -> SparseTensor:
        self.n.reset()                    # site sets differ between calls
        return x.replace_feature(self.n(x.features.unsqueeze(0).contiguous())[0])


class SSCBlock(nn.Module):
    """``x + BN(SubM(ILIF(BN(SubM(ILIF(x))))))`` on the sites of x (membrane shortcut)."""

    def __init__(self, dim, key, max_level):
        super().__init__()
        self.n1, self.c1, self.b1 = SparseILIF(max_level), SubMConv3d(dim, dim, 3, bias=False, indice_key=key), SparseBatchNorm(dim)
        self.n2, self.c2, self.b2 = SparseILIF(max_level), SubMConv3d(dim, dim, 3, bias=False, indice_key=key), SparseBatchNorm(dim)

    def forward(self, x):
        y = self.b2(self.c2(self.n2(self.b1(self.c1(self.n1(x))))))
        return x.replace_feature(x.features + y.features)


class E3DSNN(nn.Module):
    """Args: in_channels (voxel features, 4 from :func:`points_to_sparse`), num_classes,
    widths (stem width then one per later stage), depths (SSC blocks per stage), max_level
    (D of the I-LIF), hidden (classifier width), nm (N:M classifier layers). Input: a
    SparseTensor with 3 spatial dims; returns logits ``[batch_size, num_classes]``."""

    def __init__(self, in_channels=4, num_classes=5, widths=(16, 32, 64), depths=(1, 1, 1),
                 max_level=4, hidden=64, nm=None):
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"depths: expected {len(widths)} entries (one per width), got "
                             f"{len(depths)}")
        self.in_channels = in_channels
        self.stem = SubMConv3d(in_channels, widths[0], 3, bias=False, indice_key="subm0")
        self.stem_bn = SparseBatchNorm(widths[0])
        self.stages = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, (w, d) in enumerate(zip(widths, depths)):
            if i > 0:
                self.downs.append(nn.ModuleList([
                    SparseILIF(max_level),
                    SparseConv3d(widths[i - 1], w, 3, stride=2, padding=1, bias=False,
                                 indice_key=f"down{i}"),
                    SparseBatchNorm(w)]))
            self.stages.append(nn.ModuleList(SSCBlock(w, f"subm{i}", max_level)
                                             for _ in range(d)))
        self.pool = SparseGlobalAvgPool()
        self.head_n = SparseILIF(max_level)
        self.fc1 = nn.Linear(widths[-1], hidden, bias=False)   # BN follows
        self.bn = nn.BatchNorm1d(hidden)
        self.fc_n = ilif(max_level)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.nm_layers = apply_nm(self, nm)

    def forward(self, x: SparseTensor) -> torch.Tensor:
        if not isinstance(x, SparseTensor) or x.ndim != 3:
            raise ValueError(f"x: expected a SparseTensor with 3 spatial dims, got {x!r}")
        if x.features.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} feature channels, got "
                             f"{x.features.shape[1]}")
        reset_net(self)
        x = SparseTensor(x.features, x.indices, x.spatial_shape, x.batch_size, check=False)
        x = self.stem_bn(self.stem(x))
        for i, blocks in enumerate(self.stages):
            if i > 0:
                n, conv, bn = self.downs[i - 1]
                x = bn(conv(n(x)))
            for blk in blocks:
                x = blk(x)
        rates = self.pool(self.head_n(x))                          # [B, C] spike counts / site
        h = self.bn(self.fc1(rates))
        return self.fc2(self.fc_n(h.unsqueeze(0).contiguous())[0])
