"""Spikformer (Zhou et al., "Spikformer: When Spiking Neural Network Meets Transformer",
ICLR 2023): a spiking patch splitting (SPS) stem of Conv-BN-LIF layers with max pooling and
a relative position embedding, then blocks of spiking self-attention (SSA) and a spiking MLP,
each added to the residual stream; a linear head on the token and time average.

    model = Spikformer(in_channels=1, num_classes=10, img_size=8, embed_dim=64, depth=2)
    logits = model(images)                  # [B, C, H, W] (repeated T times) -> [B, classes]
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.attention import SpikingSelfAttention
from ._common import ConvBN, LinearBN, SpikingModel, apply_nm, lif, seq

__all__ = ["Spikformer", "SpikingPatchSplitting", "SpikformerBlock", "CONFIGS"]

CONFIGS = {
    "tiny": dict(embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0),
    "small": dict(embed_dim=256, depth=4, num_heads=8, mlp_ratio=4.0),
}


class SpikingPatchSplitting(nn.Module):
    """SPS: ``len(channels)`` Conv3x3-BN-LIF layers (the last ``pools`` followed by a 3x3
    stride-2 max pool), then the relative position embedding ``x + LIF(BN(Conv(x)))``.
    ``[T, B, C, H, W]`` -> tokens ``[T, B, N, D]``."""

    def __init__(self, in_channels, embed_dim, pools=1, convs=3):
        super().__init__()
        if not 0 <= pools <= convs:
            raise ValueError(f"pools: expected 0..{convs}, got {pools}")
        dims = [max(embed_dim >> (convs - 1 - i), 1) for i in range(convs)]
        layers, cin = [], in_channels
        for i, d in enumerate(dims):
            layers += [ConvBN(cin, d), lif()]
            if i >= convs - pools:
                layers.append(_Pool())
            cin = d
        self.stem = nn.Sequential(*layers)
        self.rpe = nn.Sequential(ConvBN(embed_dim, embed_dim), lif())

    def forward(self, x):
        x = self.stem(x)
        x = x + self.rpe(x)
        return x.flatten(3).transpose(2, 3).contiguous()          # [T, B, H*W, D]


class _Pool(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x):
        return seq(self.pool, x)


class SpikingMLP(nn.Module):
    """Linear-BN-LIF, Linear-BN-LIF on ``[T, B, N, D]``."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.lif1 = LinearBN(dim, hidden), lif()
        self.fc2, self.lif2 = LinearBN(hidden, dim), lif()

    def forward(self, x):
        return self.lif2(self.fc2(self.lif1(self.fc1(x))))


class SpikformerBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, attn_scale=0.125):
        super().__init__()
        self.attn = SpikingSelfAttention(dim, num_heads, attn_scale)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class Spikformer(SpikingModel):
    """Args: in_channels, num_classes, img_size (used only to check the input), embed_dim,
    depth, num_heads, mlp_ratio, pools (max pools in the stem: tokens = (img/2^pools)^2),
    T (time steps of the direct encoding), attn_scale (SSA's scale, 0.125 in the paper; with
    few tokens and low firing rates q k^T v stays below the attention threshold at
    initialisation, a larger scale wakes it), nm (None, True, (n, m) or "n:m": N:M linear and
    conv layers, see :func:`spikeops.models.apply_nm`)."""

    def __init__(self, in_channels=3, num_classes=10, img_size=32, embed_dim=64, depth=2,
                 num_heads=4, mlp_ratio=2.0, pools=None, T=4, attn_scale=0.125, nm=None):
        super().__init__()
        if pools is None:
            pools = 1 if img_size <= 16 else 2
        self.T, self.img_size, self.in_channels = int(T), img_size, in_channels
        self.patch = SpikingPatchSplitting(in_channels, embed_dim, pools)
        self.blocks = nn.ModuleList(SpikformerBlock(embed_dim, num_heads, mlp_ratio, attn_scale)
                                    for _ in range(depth))
        self.head = nn.Linear(embed_dim, num_classes)
        self.nm_layers = apply_nm(self, nm)

    def forward_features(self, x):
        x = self.patch(self.encode(x))
        for blk in self.blocks:
            x = blk(x)
        return x                                                   # [T, B, N, D]

    def forward(self, x):
        x = self.forward_features(x)
        return self.head(x.mean(2)).mean(0)
