"""Modules built on spikeops ops."""
from .neurons import (  # noqa: F401
    ALIF, IF, ILIF, LIF, PLIF, IFNode, LIFNode, MemoryModule, MultiStepLIFNode,
    MultiStepParametricLIFNode,
    ParametricLIFNode, reset_net, surrogate_spec)
from .nm import NMConv2d, NMConv2dInference, NMLinear, NMLinearInference  # noqa: F401
from .attention import (  # noqa: F401
    GatedLinearAttention, LinearAttention, SlidingWindowAttention, SpikeDrivenSelfAttention,
    SpikingSelfAttention)
