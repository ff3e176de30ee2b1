"""Sparse voxel / event tensors for spike sparse convolution (spconv-compatible).

``SparseTensor(features [N, C], indices int32 [N, ndim + 1], spatial_shape, batch_size)``
holds the active sites (batch index first, then the ``ndim`` coordinates) and their
features, plus ``indice_dict``: the kernel maps built so far, keyed by ``indice_key`` and
shared by every tensor derived with :meth:`SparseTensor.replace_feature` or by a sparse layer
(spconv's ``SparseConvTensor.indice_dict``).
"""
from .tensor import IndiceData, SparseTensor, events_to_sparse, voxelize  # noqa: F401

__all__ = ["SparseTensor", "IndiceData", "voxelize", "events_to_sparse"]
