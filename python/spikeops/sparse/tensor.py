"""SparseTensor, its kernel-map cache, voxelisation and event binning."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..ops import sparse as sc
from ..ref import sparse_conv as ref

__all__ = ["SparseTensor", "IndiceData", "voxelize", "events_to_sparse"]


@dataclass
class IndiceData:
    """One cached kernel map: the conv that built it (input -> output sites) and its table."""
    in_indices: torch.Tensor
    in_spatial_shape: tuple
    out_indices: torch.Tensor
    out_spatial_shape: tuple
    nbmap: torch.Tensor           # [M, K] output-major
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    subm: bool

    nbmap_t: torch.Tensor | None = None  # [N, K] input-major, built on first use

    def transposed(self) -> torch.Tensor:
        """The input-major table (cached): for a submanifold map with odd kernel sizes it is
        the map with its offsets reversed, otherwise :func:`map_transpose`."""
        if self.nbmap_t is None:
            if self.subm and all(k % 2 == 1 for k in self.kernel_size):
                self.nbmap_t = self.nbmap.flip(1).contiguous()
            else:
                self.nbmap_t = sc.map_transpose(self.nbmap, self.in_indices.shape[0])
        return self.nbmap_t

    def params(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, subm=self.subm)


class SparseTensor:
    """Active sites and their features (spconv's ``SparseConvTensor``).

    Args:
        features: ``[N, C]`` float tensor, one row per row of ``indices``.
        indices: int32 ``[N, ndim + 1]``, ``(batch, c_0, ..., c_{ndim-1})`` per row; every
            row must be inside ``spatial_shape`` / ``batch_size`` and appear once (duplicates
            are rejected: merge them first, e.g. with :func:`voxelize`).
        spatial_shape: ``ndim`` ints, the grid.
        batch_size: int.
        indice_dict: kernel-map cache to share (default: a new empty one).
        check: validate ``indices`` now (the kernel-map op validates again anyway).
    """

    def __init__(self, features: torch.Tensor, indices: torch.Tensor,
                 spatial_shape: Sequence[int], batch_size: int,
                 indice_dict: dict | None = None, check: bool = True):
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if check:
            ref.check_indices(indices, spatial_shape, int(batch_size))
            if not isinstance(features, torch.Tensor) or features.dim() != 2 \
                    or features.shape[0] != indices.shape[0]:
                raise ValueError(f"features must be [N={indices.shape[0]}, C], got "
                                 f"{tuple(getattr(features, 'shape', ()))}")
            if features.device != indices.device:
                raise ValueError(f"features: expected device {indices.device} (that of "
                                 f"indices), got {features.device}")
        self.features = features
        self.indices = indices
        self.spatial_shape = spatial_shape
        self.batch_size = int(batch_size)
        self.indice_dict = {} if indice_dict is None else indice_dict

    @property
    def ndim(self) -> int:
        return len(self.spatial_shape)

    def replace_feature(self, features: torch.Tensor) -> "SparseTensor":
        """A tensor with the same sites (and the same kernel-map cache), new features."""
        if features.dim() != 2 or features.shape[0] != self.indices.shape[0]:
            raise ValueError(f"features must be [N={self.indices.shape[0]}, C], got "
                             f"{tuple(features.shape)}")
        return SparseTensor(features, self.indices, self.spatial_shape, self.batch_size,
                            self.indice_dict, check=False)

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """The zero-filled grid: ``[B, C, *spatial]`` (or ``[B, *spatial, C]``)."""
        out = ref.to_dense(self.features, self.indices, self.spatial_shape, self.batch_size)
        return out if channels_first else out.movedim(1, -1)

    @classmethod
    def from_dense(cls, x: torch.Tensor) -> "SparseTensor":
        """The sites of a **channels-last** dense ``x [B, *spatial, C]`` (spconv's
        convention) where any channel is non-zero, sorted batch-major then by coordinates."""
        if x.dim() < 3:
            raise ValueError(f"x must be [B, *spatial, C] (channels last), got {tuple(x.shape)}")
        features, indices = ref.from_dense(x.movedim(-1, 1))
        return cls(features, indices, x.shape[1:-1], x.shape[0], check=False)

    def find_indice_pair(self, key):
        return self.indice_dict.get(key)

    def __repr__(self):
        return (f"SparseTensor(N={self.indices.shape[0]}, C={self.features.shape[1]}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size})")


# ----------------------------------------------------------------------------- input coding

def voxelize(points: torch.Tensor, features: torch.Tensor, voxel_size, point_range,
             batch_index: int = 0) -> tuple[SparseTensor, torch.Tensor]:
    """Spike Voxel Coding input: hash points into voxels, average each voxel's features.

    ``points [P, 3]`` ``(x, y, z)``, ``features [P, C]``, ``voxel_size`` 3 floats,
    ``point_range`` ``(x_min, y_min, z_min, x_max, y_max, z_max)`` (half-open; points outside
    are dropped). Returns ``(SparseTensor, counts [V])`` with indices ``(batch, z, y, x)``,
    spatial_shape ``(nz, ny, nx)`` (spconv's order) and the points per voxel. De-duplication
    is by hashing the voxel coordinate (``torch.unique`` on the linear key).
    """
    feats, idx, shape, counts = ref.voxelize(points, features, voxel_size, point_range,
                                             batch_index)
    return SparseTensor(feats, idx, shape, int(batch_index) + 1, check=False), counts


def events_to_sparse(events: torch.Tensor, sensor_size: Sequence[int], num_frames: int,
                     t_range: tuple[float, float] | None = None, batch_index: int = 0,
                     batch_size: int | None = None, time_as_dim: bool = False) -> SparseTensor:
    """Bin an event-camera stream into ``num_frames`` sparse frames of event counts.

    Args:
        events: ``[E, 4]`` rows ``(t, x, y, polarity)`` (polarity 0/1 or -1/+1; any
            value > 0 counts as ON).
        sensor_size: ``(width, height)``.
        num_frames: T; time ``[t0, t1]`` (``t_range``, default the events' min/max) is cut into
            T equal bins (the last bin closed).
        batch_index / batch_size: the batch index written into the rows (``batch_size``
            defaults to ``batch_index + 1``).
        time_as_dim: False -> 2-D sites ``(b * T + frame, y, x)`` with spatial_shape
            ``(height, width)`` and batch size ``batch_size * T`` (frames batched, for
            SubMConv2d run per time step); True -> 3-D sites ``(b, frame, y, x)`` with
            spatial_shape ``(T, height, width)``.

    Returns:
        SparseTensor with 2 float32 channels (OFF count, ON count) per active site; sites
        sorted batch-major then by coordinates. Events outside the sensor are dropped.
    """
    if events.dim() != 2 or events.shape[1] != 4:
        raise ValueError(f"events must be [E, 4] (t, x, y, polarity), got {tuple(events.shape)}")
    w, h = (int(s) for s in sensor_size)
    if w < 1 or h < 1:
        raise ValueError(f"sensor_size must be positive (width, height), got {sensor_size}")
    T = int(num_frames)
    if T < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    bs = int(batch_index) + 1 if batch_size is None else int(batch_size)
    if not 0 <= int(batch_index) < bs:
        raise ValueError(f"batch_index must be in [0, batch_size={bs}), got {batch_index}")
    ev = events.to(torch.float64)
    t, x, y, pol = ev.unbind(1)
    x, y = x.floor().long(), y.floor().long()
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    t, x, y, pol = t[keep], x[keep], y[keep], pol[keep]
    if t_range is None:
        t0 = float(t.min()) if t.numel() else 0.0
        t1 = float(t.max()) if t.numel() else 1.0
    else:
        t0, t1 = (float(v) for v in t_range)
    if not t1 >= t0:
        raise ValueError(f"t_range must have t1 >= t0, got {(t0, t1)}")
    span = max(t1 - t0, 1e-12)
    frame = ((t - t0) / span * T).floor().long().clamp(max=T - 1)
    inside = (frame >= 0) & (t <= t1)
    frame, x, y, pol = frame[inside], x[inside], y[inside], pol[inside]
    on = (pol > 0).long()
    b = int(batch_index)
    if time_as_dim:
        shape, bsz = (T, h, w), bs
        key = (((b * T + frame) * h + y) * w + x)
    else:
        shape, bsz = (h, w), bs * T
        key = ((b * T + frame) * h + y) * w + x
    uniq, inv = torch.unique(key, return_inverse=True)
    counts = torch.zeros(uniq.numel(), 2, dtype=torch.float32)
    counts.index_put_((inv, on), torch.ones_like(inv, dtype=torch.float32), accumulate=True)
    idx = ref._unkeys(uniq, shape)
    return SparseTensor(counts, idx, shape, bsz, check=False)
