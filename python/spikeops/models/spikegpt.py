"""SpikeGPT-style language model (Zhu et al., "SpikeGPT: Generative Pre-trained Language
Model with Spiking Neural Networks", TMLR 2024): an RWKV-4 token mixer (token shift, the
WKV recurrence, a sigmoid receptance gate) and a receptance feed-forward network, whose
projections are driven by binary spikes: each sub-layer's input is ``LIF(LayerNorm(x))``
with the LIF running along the token axis (the sequence is the spiking time axis, as in
SpikeGPT), and the feed-forward's hidden layer fires through a LIF too.

``mixer="linear"`` swaps the RWKV time mixing for :class:`spikeops.nn.LinearAttention`.

    lm = SpikeGPT(vocab_size=96, d_model=128, n_layer=2)
    logits = lm(tokens)                     # [B, L] int64 -> [B, L, vocab]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..nn.attention import LinearAttention
from ..nn.neurons import reset_net
from ._common import apply_nm, check_tokens, lif

__all__ = ["SpikeGPT", "SpikingRWKV", "SpikingRFFN", "CONFIGS"]

CONFIGS = {
    "tiny": dict(d_model=64, n_layer=2, ffn_ratio=2),
    "small": dict(d_model=256, n_layer=6, ffn_ratio=4),
}


class SeqLIF(nn.Module):
    """LIF along the sequence of ``[B, L, C]`` (time-major ``[L, B, C]`` for the kernel);
    threshold 0.5, its inputs being normalised (unit variance)."""

    def __init__(self, v_threshold=0.5):
        super().__init__()
        self.lif = lif(v_threshold=v_threshold)

    def forward(self, x):
        return self.lif(x.transpose(0, 1).contiguous()).transpose(0, 1)


def _shift(x):
    """RWKV's token shift: x_{t-1} (zeros at t = 0)."""
    return F.pad(x, (0, 0, 1, -1))


class SpikingRWKV(nn.Module):
    """RWKV-4 time mixing on spikes ``s [B, L, C]``: ``o = W_o (sigmoid(r) * wkv(k, v))``."""

    def __init__(self, dim, layer_id=0, n_layer=1):
        super().__init__()
        ratio = layer_id / max(n_layer - 1, 1)
        ramp = torch.arange(dim) / dim
        # RWKV-4's initialisation: decays spread over channels, mixes ramping with depth
        self.time_decay = nn.Parameter(-5 + 8 * ramp ** (0.7 + 1.3 * ratio))
        self.time_first = nn.Parameter(torch.full((dim,), 0.5) + 0.3 * ((torch.arange(dim) + 1) % 3 - 1))
        self.mix_k = nn.Parameter(ramp ** (1 - ratio))
        self.mix_v = nn.Parameter(ramp ** (1 - ratio) + 0.3 * ratio)
        self.mix_r = nn.Parameter(ramp ** (0.5 * (1 - ratio)))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)

    def forward(self, s):
        xx = _shift(s)
        k = self.key(s * self.mix_k + xx * (1 - self.mix_k))
        v = self.value(s * self.mix_v + xx * (1 - self.mix_v))
        r = self.receptance(s * self.mix_r + xx * (1 - self.mix_r))
        wkv = ops.rwkv4_wkv(self.time_decay, self.time_first, k.contiguous(), v.contiguous())
        return self.output(torch.sigmoid(r) * wkv)


class LinearMixer(nn.Module):
    """:class:`spikeops.nn.LinearAttention` returning only its output."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.attn = LinearAttention(dim, num_heads, mode="chunk", chunk_size=32)

    def forward(self, s):
        return self.attn(s)[0]


class SpikingRFFN(nn.Module):
    """Receptance FFN on spikes: ``sigmoid(W_r s) * W_v LIF(LN(W_k shift_mix(s))))``: the
    hidden layer fires (a LIF in place of RWKV's squared ReLU; the LayerNorm keeps its
    input at unit scale so it fires at initialisation)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.key = nn.Linear(dim, hidden, bias=False)
        self.norm = nn.LayerNorm(hidden)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)
        self.lif = SeqLIF()

    def forward(self, s):
        k = self.key(0.5 * (s + _shift(s)))
        return torch.sigmoid(self.receptance(s)) * self.value(self.lif(self.norm(k)))


class SpikeGPTBlock(nn.Module):
    def __init__(self, dim, ffn_ratio, layer_id, n_layer, mixer, num_heads):
        super().__init__()
        self.ln1, self.lif1 = nn.LayerNorm(dim), SeqLIF()
        self.ln2, self.lif2 = nn.LayerNorm(dim), SeqLIF()
        self.att = (SpikingRWKV(dim, layer_id, n_layer) if mixer == "rwkv"
                    else LinearMixer(dim, num_heads))
        self.ffn = SpikingRFFN(dim, dim * ffn_ratio)

    def forward(self, x):
        x = x + self.att(self.lif1(self.ln1(x)))
        return x + self.ffn(self.lif2(self.ln2(x)))


class SpikeGPT(nn.Module):
    """Args: vocab_size, d_model, n_layer, ffn_ratio, mixer ("rwkv" or "linear"),
    num_heads (linear mixer), nm (N:M linear layers: None, True, (n, m) or "n:m"; the
    embedding and the output head stay dense). Input tokens ``[B, L]`` int64; returns
    logits ``[B, L, vocab_size]``. Neurons are reset at the start of every forward."""

    def __init__(self, vocab_size=256, d_model=64, n_layer=2, ffn_ratio=2, mixer="rwkv",
                 num_heads=4, nm=None):
        super().__init__()
        if mixer not in ("rwkv", "linear"):
            raise ValueError(f"mixer: expected 'rwkv' or 'linear', got {mixer!r}")
        self.vocab_size, self.mixer = vocab_size, mixer
        self.emb = nn.Embedding(vocab_size, d_model)
        self.ln0 = nn.LayerNorm(d_model)
        self.blocks = nn.ModuleList(SpikeGPTBlock(d_model, ffn_ratio, i, n_layer, mixer,
                                                  num_heads) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.nm_layers = apply_nm(self, nm, skip=("head",))

    def forward(self, idx):
        check_tokens(idx)
        reset_net(self)
        x = self.ln0(self.emb(idx))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_out(x))
