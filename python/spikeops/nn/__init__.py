"""Modules built on spikeops ops."""
from .neurons import (  # noqa: F401
    ALIF, IF, ILIF, LIF, PLIF, IFNode, LIFNode, MemoryModule, MultiStepLIFNode,
    MultiStepParametricLIFNode,
    ParametricLIFNode, reset_net, surrogate_spec)
from .nm import NMConv2d, NMConv2dInference, NMLinear, NMLinearInference  # noqa: F401
from .attention import (  # noqa: F401
    GatedLinearAttention, LinearAttention, SlidingWindowAttention, SpikeDrivenSelfAttention,
    SpikingSelfAttention)
from .sparse_conv import (  # noqa: F401
    SparseAvgPool2d, SparseAvgPool3d, SparseBatchNorm, SparseConv1d, SparseConv2d, SparseConv3d,
    SparseConvolution, SparseGlobalAvgPool, SparseGlobalMaxPool, SparseInverseConv1d,
    SparseInverseConv2d, SparseInverseConv3d, SparseMaxPool2d, SparseMaxPool3d,
    SparseSequential, SubMConv1d, SubMConv2d, SubMConv3d)
