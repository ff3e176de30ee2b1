"""Attention modules of spiking transformers and linear / hybrid LLMs, on spikeops ops.

- :class:`SpikingSelfAttention`: Spikformer / Meta-SpikeFormer SSA block (linear + BN + LIF
  projections, ``ssa_lif`` fused with the attention LIF, output projection).
- :class:`SpikeDrivenSelfAttention`: Spike-driven Transformer V1 SDSA (``ops.sdsa``).
- :class:`LinearAttention`, :class:`GatedLinearAttention`: fla-style token mixers over
  ``[B, T, C]`` with ``mode="chunk"`` (training, long sequences) or ``"fused_recurrent"``
  (decoding); the chunk and recurrent kernels compute the same function.
- :class:`SlidingWindowAttention`: causal softmax attention over a window (SpikingBrain's
  SWA layers), ``ops.sliding_window_attn``.

The spiking modules take time-major spikes ``[T, B, N, C]`` and return spikes of that shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .neurons import LIF

__all__ = ["SpikingSelfAttention", "SpikeDrivenSelfAttention", "LinearAttention",
           "GatedLinearAttention", "SlidingWindowAttention"]


def _heads(dim, num_heads):
    if num_heads < 1 or dim % num_heads != 0:
        raise ValueError(f"num_heads: must divide dim ({dim}), got {num_heads}")
    return dim // num_heads


class _SpikingProjection(nn.Module):
    """Linear -> BatchNorm over channels -> LIF, on time-major ``[T, B, N, C]``."""

    def __init__(self, dim_in, dim_out, *, tau=2.0, v_threshold=1.0, lif=True):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out, bias=False)
        self.bn = nn.BatchNorm1d(dim_out)
        self.lif = LIF(tau=tau, v_threshold=v_threshold, detach_reset=True) if lif else None

    def forward(self, x):
        T, B, N, _ = x.shape
        y = self.linear(x.flatten(0, 1))                         # [T*B, N, Cout]
        y = self.bn(y.transpose(1, 2)).transpose(1, 2).reshape(T, B, N, -1)
        return self.lif(y.contiguous()) if self.lif is not None else y


def _check_tbnc(x, dim, name):
    if x.dim() != 4 or x.shape[-1] != dim:
        raise ValueError(f"{name}: expected spikes [T, B, N, {dim}], got shape {tuple(x.shape)}")


class SpikingSelfAttention(nn.Module):
    """Spikformer's spiking self-attention (SSA) on spikes ``x [T, B, N, dim]``.

    q, k, v = LIF(BN(Linear(x))) (tau 2, threshold 1, detach_reset), split into
    ``num_heads``; ``LIF_attn(q @ k^T @ v * scale)`` (threshold 0.5) by the fused
    :func:`spikeops.ops.ssa_lif` (``fused=False``: :func:`~spikeops.ops.ssa` then a LIF
    module, the same spikes); then LIF(BN(Linear(.))) back to ``dim``. The heads' LIF states
    are per call (multi-step), so no reset is needed between batches.
    """

    def __init__(self, dim, num_heads=8, scale=0.125, *, tau=2.0, attn_threshold=0.5,
                 order="kv_first", fused=True):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = _heads(dim, num_heads)
        self.scale, self.tau, self.attn_threshold = float(scale), float(tau), float(attn_threshold)
        self.order, self.fused = order, bool(fused)
        self.q = _SpikingProjection(dim, dim, tau=tau)
        self.k = _SpikingProjection(dim, dim, tau=tau)
        self.v = _SpikingProjection(dim, dim, tau=tau)
        self.attn_lif = LIF(tau=tau, v_threshold=attn_threshold, detach_reset=True)
        self.proj = _SpikingProjection(dim, dim, tau=tau)

    def _split(self, x):
        T, B, N, _ = x.shape
        return x.reshape(T, B, N, self.num_heads, self.head_dim).permute(0, 1, 3, 2, 4)

    def forward(self, x):
        _check_tbnc(x, self.dim, "x")
        T, B, N, _ = x.shape
        q, k, v = (self._split(p(x)) for p in (self.q, self.k, self.v))   # [T, B, H, N, d]
        if self.fused:
            a = ops.ssa_lif(q, k, v, self.scale, self.order, tau=self.tau,
                            v_threshold=self.attn_threshold)
        else:
            self.attn_lif.reset()
            a = self.attn_lif(ops.ssa(q, k, v, self.scale, self.order).contiguous())
        a = a.permute(0, 1, 3, 2, 4).reshape(T, B, N, self.dim)
        return self.proj(a)

    def extra_repr(self):
        return (f"dim={self.dim}, num_heads={self.num_heads}, scale={self.scale}, "
                f"fused={self.fused}")


class SpikeDrivenSelfAttention(nn.Module):
    """Spike-driven Transformer V1's SDSA on spikes ``x [T, B, N, dim]``:
    ``q * LIF(sum_N(k * v))`` per head (:func:`spikeops.ops.sdsa`, threshold 0.5), with
    q, k, v = LIF(BN(Linear(x))) and an output Linear + BN (no neuron: the block's residual
    adds membrane-level values, as in the paper)."""

    def __init__(self, dim, num_heads=8, *, tau=2.0, kv_threshold=0.5):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = _heads(dim, num_heads)
        self.tau, self.kv_threshold = float(tau), float(kv_threshold)
        self.q = _SpikingProjection(dim, dim, tau=tau)
        self.k = _SpikingProjection(dim, dim, tau=tau)
        self.v = _SpikingProjection(dim, dim, tau=tau)
        self.proj = _SpikingProjection(dim, dim, lif=False)

    def forward(self, x):
        _check_tbnc(x, self.dim, "x")
        T, B, N, _ = x.shape
        split = lambda t: t.reshape(T, B, N, self.num_heads, self.head_dim).permute(0, 1, 3, 2, 4)
        q, k, v = (split(p(x)) for p in (self.q, self.k, self.v))
        a = ops.sdsa(q.contiguous(), k.contiguous(), v.contiguous(),
                     v_threshold=self.kv_threshold, tau=self.tau)
        return self.proj(a.permute(0, 1, 3, 2, 4).reshape(T, B, N, self.dim))


_MODES = ("chunk", "fused_recurrent")


def _check_mode(mode):
    if mode not in _MODES:
        raise ValueError(f"mode: expected 'chunk' or 'fused_recurrent', got {mode!r}")
    return mode


class LinearAttention(nn.Module):
    """Causal linear attention token mixer over ``x [B, T, hidden_size]`` (fla's
    ``LinearAttention`` layout): q, k, v projections, an elementwise feature map on q and k
    (``"elu1"``: elu + 1, ``"identity"``), :func:`spikeops.ops.chunk_linear_attn` or its
    recurrent form, a per-head RMSNorm and the output projection. ``num_kv_heads`` below
    ``num_heads`` gives grouped-query attention (k, v never repeated in memory).
    Returns ``(o, final_state)``; pass ``initial_state`` to continue a sequence."""

    def __init__(self, hidden_size, num_heads=4, num_kv_heads=None, *, mode="chunk",
                 feature_map="elu1", chunk_size=64):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.num_kv_heads < 1 or num_heads % self.num_kv_heads != 0:
            raise ValueError(f"num_kv_heads: must divide num_heads ({num_heads}), got "
                             f"{self.num_kv_heads}")
        self.head_dim = _heads(hidden_size, num_heads)
        self.mode = _check_mode(mode)
        if feature_map not in ("elu1", "identity"):
            raise ValueError(f"feature_map: expected 'elu1' or 'identity', got {feature_map!r}")
        self.feature_map, self.chunk_size = feature_map, chunk_size
        kv_dim = self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, kv_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, kv_dim, bias=False)
        self.o_norm = nn.RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def _phi(self, x):
        return F.elu(x) + 1.0 if self.feature_map == "elu1" else x

    def _scan(self, q, k, v, initial_state):
        kw = dict(initial_state=initial_state, output_final_state=True)
        if self.mode == "chunk":
            return ops.chunk_linear_attn(q, k, v, chunk_size=self.chunk_size, **kw)
        return ops.fused_recurrent_linear_attn(q, k, v, **kw)

    def _split(self, x, heads):
        return x.reshape(*x.shape[:2], heads, self.head_dim)

    def forward(self, x, initial_state=None):
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x: expected [B, T, {self.hidden_size}], got {tuple(x.shape)}")
        q = self._phi(self._split(self.q_proj(x), self.num_heads))
        k = self._phi(self._split(self.k_proj(x), self.num_kv_heads))
        v = self._split(self.v_proj(x), self.num_kv_heads)
        o, state = self._scan(q.contiguous(), k.contiguous(), v.contiguous(), initial_state)
        o = self.o_norm(o).reshape(*x.shape[:2], -1)
        return self.o_proj(o), state


class GatedLinearAttention(LinearAttention):
    """Gated linear attention (GLA, Yang et al. 2024; SpikingBrain's linear layers) over
    ``x [B, T, hidden_size]``: per-key log-decay ``g = logsigmoid(W_g x) / gate_normalizer``
    (:func:`spikeops.ops.chunk_gla` / ``fused_recurrent_gla``), or one decay per head with
    ``gate="scalar"`` (:func:`~spikeops.ops.chunk_simple_gla`), an output gate
    ``swish(W_o' x)`` on the normed heads, and the output projection."""

    def __init__(self, hidden_size, num_heads=4, num_kv_heads=None, *, mode="chunk",
                 gate="key", gate_normalizer=16.0, chunk_size=64):
        super().__init__(hidden_size, num_heads, num_kv_heads, mode=mode,
                         feature_map="identity", chunk_size=chunk_size)
        if gate not in ("key", "scalar"):
            raise ValueError(f"gate: expected 'key' or 'scalar', got {gate!r}")
        self.gate, self.gate_normalizer = gate, float(gate_normalizer)
        g_dim = hidden_size if gate == "key" else num_heads
        self.g_proj = nn.Linear(hidden_size, g_dim, bias=True)
        self.out_gate = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, initial_state=None):
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x: expected [B, T, {self.hidden_size}], got {tuple(x.shape)}")
        B, T, _ = x.shape
        q = self._split(self.q_proj(x), self.num_heads).contiguous()
        k = self._split(self.k_proj(x), self.num_kv_heads).contiguous()
        v = self._split(self.v_proj(x), self.num_kv_heads).contiguous()
        g = F.logsigmoid(self.g_proj(x).float()) / self.gate_normalizer
        kw = dict(initial_state=initial_state, output_final_state=True)
        if self.gate == "key":
            g = g.reshape(B, T, self.num_heads, self.head_dim).contiguous()
            o, state = (ops.chunk_gla(q, k, v, g, chunk_size=self.chunk_size, **kw)
                        if self.mode == "chunk" else ops.fused_recurrent_gla(q, k, v, g, **kw))
        else:
            g = g.contiguous()
            o, state = (ops.chunk_simple_gla(q, k, v, g, chunk_size=self.chunk_size, **kw)
                        if self.mode == "chunk"
                        else ops.fused_recurrent_simple_gla(q, k, v, g, **kw))
        o = self.o_norm(o).reshape(B, T, -1) * F.silu(self.out_gate(x))
        return self.o_proj(o), state


class SlidingWindowAttention(nn.Module):
    """Causal softmax attention over the last ``window`` positions (itself included) over
    ``x [B, T, hidden_size]``: q, k, v projections, :func:`spikeops.ops.sliding_window_attn`
    (flash-style tiles, no T x T matrix), output projection."""

    def __init__(self, hidden_size, num_heads=4, window=512):
        super().__init__()
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window: expected an int >= 1, got {window!r}")
        self.hidden_size, self.num_heads, self.window = hidden_size, num_heads, window
        self.head_dim = _heads(hidden_size, num_heads)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x):
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x: expected [B, T, {self.hidden_size}], got {tuple(x.shape)}")
        B, T, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).unbind(2)
        o = ops.sliding_window_attn(q.contiguous(), k.contiguous(), v.contiguous(), self.window)
        return self.o_proj(o.reshape(B, T, -1))
