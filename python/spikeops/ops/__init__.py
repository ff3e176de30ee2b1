"""Public op functions: thin wrappers over torch.ops.spikeops.* (see each module)."""
from .neurons import alif, if_, ilif, lif, plif  # noqa: F401
from .attention import ssa, ssa_lif  # noqa: F401
from .recurrent import rwkv4_wkv, sdsa  # noqa: F401
from .swa import sliding_window_attn  # noqa: F401
from .scan import (chunk_gla, chunk_linear_attn, chunk_simple_gla,  # noqa: F401
                   fused_recurrent_gla, fused_recurrent_linear_attn,
                   fused_recurrent_simple_gla)
from .sparse import conv_map, map_transpose, sparse_conv  # noqa: F401
from .nm import nm_compress, nm_linear, nm_linear_grad_input, nm_masked_linear  # noqa: F401

__all__ = ["lif", "if_", "plif", "ilif", "alif", "nm_linear", "nm_compress",
           "nm_linear_grad_input", "nm_masked_linear", "ssa", "ssa_lif", "rwkv4_wkv", "sdsa",
           "sliding_window_attn", "chunk_simple_gla", "fused_recurrent_simple_gla",
           "chunk_linear_attn", "fused_recurrent_linear_attn", "chunk_gla",
           "fused_recurrent_gla", "conv_map", "map_transpose", "sparse_conv"]
