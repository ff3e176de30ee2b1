"""SpikingBrain-style hybrid language model (Pan et al., "SpikingBrain Technical Report:
Spiking Brain-inspired Large Models", 2025): layers alternate gated linear attention
(:class:`spikeops.nn.GatedLinearAttention`, a constant-size state) and sliding-window
softmax attention (:class:`spikeops.nn.SlidingWindowAttention`), each with a pre-RMSNorm
residual and an MLP whose hidden activation is integer spike coding: a single-step I-LIF
(``round(h / V_th)`` clamped to 0..D, a count of D virtual binary spikes), so the down
projection is driven by integer spikes.

    lm = SpikingBrain(vocab_size=96, d_model=64, n_layer=2, window=16)
    logits = lm(tokens)                     # [B, L] int64 -> [B, L, vocab]
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.attention import GatedLinearAttention, SlidingWindowAttention
from ..nn.neurons import reset_net
from ._common import apply_nm, check_tokens, ilif

__all__ = ["SpikingBrain", "HybridBlock", "SpikingMLP", "CONFIGS"]

CONFIGS = {
    "tiny": dict(d_model=64, n_layer=2, num_heads=4, window=16, mlp_ratio=2),
    "small": dict(d_model=256, n_layer=6, num_heads=8, window=128, mlp_ratio=4),
}


class SpikingMLP(nn.Module):
    """``W_down ILIF(W_up x)``: the I-LIF runs one step over all tokens (integer spike
    coding of the activation, no state across tokens)."""

    def __init__(self, dim, hidden, max_level=4, v_threshold=0.5):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=True)
        self.act = ilif(max_level, v_threshold=v_threshold)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        h = self.up(x)
        self.act.reset()
        s = self.act(h.reshape(1, -1, h.shape[-1]).contiguous()).reshape(h.shape)
        return self.down(s)


class HybridBlock(nn.Module):
    """``x + mixer(RMSNorm(x))``, ``x + MLP(RMSNorm(x))``; mixer is GLA or SWA."""

    def __init__(self, dim, num_heads, kind, window, mlp_ratio, max_level):
        super().__init__()
        if kind not in ("gla", "swa"):
            raise ValueError(f"kind: expected 'gla' or 'swa', got {kind!r}")
        self.kind = kind
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.mixer = (GatedLinearAttention(dim, num_heads, mode="chunk", gate="key",
                                           chunk_size=32) if kind == "gla"
                      else SlidingWindowAttention(dim, num_heads, window=window))
        self.mlp = SpikingMLP(dim, dim * mlp_ratio, max_level)

    def forward(self, x):
        h = self.mixer(self.norm1(x))
        x = x + (h[0] if isinstance(h, tuple) else h)
        return x + self.mlp(self.norm2(x))


class SpikingBrain(nn.Module):
    """Args: vocab_size, d_model, n_layer (layers alternate GLA, SWA, GLA, ...), num_heads,
    window (SWA), mlp_ratio, max_level (D of the MLP's I-LIF), nm (N:M linear layers:
    None, True, (n, m) or "n:m"; embedding and head stay dense). Tokens ``[B, L]`` ->
    logits ``[B, L, vocab_size]``."""

    def __init__(self, vocab_size=256, d_model=64, n_layer=2, num_heads=4, window=16,
                 mlp_ratio=2, max_level=4, nm=None):
        super().__init__()
        self.vocab_size = vocab_size
        self.emb = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            HybridBlock(d_model, num_heads, "gla" if i % 2 == 0 else "swa", window, mlp_ratio,
                        max_level) for i in range(n_layer))
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.nm_layers = apply_nm(self, nm, skip=("head",))

    def forward(self, idx):
        check_tokens(idx)
        reset_net(self)
        x = self.emb(idx)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))
