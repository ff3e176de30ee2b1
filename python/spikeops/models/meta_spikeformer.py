"""Meta-SpikeFormer (Spike-driven Transformer V2; Yao et al., "Spike-driven Transformer V2:
Meta Spiking Neural Network Architecture Inspiring the Design of Next-generation Neuromorphic
Chips", ICLR 2024): convolutional stages of separable-conv and channel-conv blocks, then
transformer stages of spike-driven self-attention and a channel MLP. Every branch starts
with a LIF and ends with BN, and is added to the membrane-level residual stream (the
"membrane shortcut"), so each layer's compute sees spikes only.

    model = MetaSpikeFormer(in_channels=1, num_classes=10, dims=(16, 32, 64),
                            depths=(1, 1, 2), strides=(1, 2, 1))
    logits = model(images)                  # [B, C, H, W] (repeated T times) -> [B, classes]

The attention is :class:`spikeops.nn.SpikeDrivenSelfAttention` (``q * LIF(sum_N k * v)``,
the linear spike-driven form, :func:`spikeops.ops.sdsa`).
"""
from __future__ import annotations

from torch import nn

from ..nn.attention import SpikeDrivenSelfAttention
from ._common import ConvBN, LinearBN, SpikingModel, apply_nm, lif

__all__ = ["MetaSpikeFormer", "SepConvBlock", "ChannelConvBlock", "SpikeTransformerBlock",
           "CONFIGS"]

CONFIGS = {
    # for small images (8x8 digits): one stride-2 stage, 16 tokens in the transformer stage
    "tiny": dict(dims=(16, 32, 64), depths=(1, 1, 1), strides=(1, 2, 1), num_heads=4,
                 mlp_ratio=2.0),
    "small": dict(dims=(32, 64, 128, 256), depths=(1, 1, 2, 2), strides=(2, 2, 2, 1),
                  num_heads=8, mlp_ratio=4.0),
}


class SepConvBlock(nn.Module):
    """MobileNet-style inverted separable conv: LIF, pw Conv-BN, LIF, dw 7x7 Conv-BN, LIF,
    pw Conv-BN (V2's SepConv with the spikes in front of every conv)."""

    def __init__(self, dim, expansion=2, kernel=7):
        super().__init__()
        hidden = dim * expansion
        self.body = nn.Sequential(
            lif(), ConvBN(dim, hidden, 1), lif(),
            ConvBN(hidden, hidden, kernel, groups=hidden), lif(), ConvBN(hidden, dim, 1))

    def forward(self, x):
        return self.body(x)


class ChannelConvBlock(nn.Module):
    """LIF, Conv3x3-BN, LIF, Conv3x3-BN (the conv block's channel mixer)."""

    def __init__(self, dim, ratio=4):
        super().__init__()
        hidden = dim * ratio
        self.body = nn.Sequential(lif(), ConvBN(dim, hidden), lif(), ConvBN(hidden, dim))

    def forward(self, x):
        return self.body(x)


class ConvStageBlock(nn.Module):
    def __init__(self, dim, mlp_ratio):
        super().__init__()
        self.sep = SepConvBlock(dim)
        self.channel = ChannelConvBlock(dim, int(mlp_ratio))

    def forward(self, x):
        x = x + self.sep(x)
        return x + self.channel(x)


class ChannelMLP(nn.Module):
    """LIF, Linear-BN, LIF, Linear-BN on tokens ``[T, B, N, D]``."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.lif1, self.fc1 = lif(), LinearBN(dim, hidden)
        self.lif2, self.fc2 = lif(), LinearBN(hidden, dim)

    def forward(self, x):
        return self.fc2(self.lif2(self.fc1(self.lif1(x))))


class SpikeTransformerBlock(nn.Module):
    """``x + SDSA(LIF(x))``, then ``x + MLP(x)``, on membrane-level tokens ``[T, B, N, D]``."""

    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.lif = lif()
        self.attn = SpikeDrivenSelfAttention(dim, num_heads)
        self.mlp = ChannelMLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.lif(x))
        return x + self.mlp(x)


class Downsample(nn.Module):
    """(LIF,) Conv-BN with a stride: the first one takes the real-valued image."""

    def __init__(self, cin, cout, stride, first):
        super().__init__()
        self.lif = None if first else lif()
        self.conv = ConvBN(cin, cout, 3, stride)

    def forward(self, x):
        return self.conv(x if self.lif is None else self.lif(x))


class MetaSpikeFormer(SpikingModel):
    """Args: in_channels, num_classes, dims (channels per stage), depths (blocks per stage),
    strides (of each stage's downsampling conv), conv_stages (how many leading stages are
    convolutional; default all but the last), num_heads, mlp_ratio, T, nm (N:M linear and
    conv layers: None, True, (n, m) or "n:m")."""

    def __init__(self, in_channels=3, num_classes=10, dims=(16, 32, 64), depths=(1, 1, 1),
                 strides=(1, 2, 1), conv_stages=None, num_heads=4, mlp_ratio=2.0, T=4, nm=None):
        super().__init__()
        if not len(dims) == len(depths) == len(strides):
            raise ValueError(f"dims, depths, strides: expected equal lengths, got {len(dims)}, "
                             f"{len(depths)}, {len(strides)}")
        conv_stages = len(dims) - 1 if conv_stages is None else conv_stages
        if not 0 <= conv_stages <= len(dims):
            raise ValueError(f"conv_stages: expected 0..{len(dims)}, got {conv_stages}")
        self.T, self.in_channels = int(T), in_channels
        self.conv_stages = conv_stages
        self.downsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        cin = in_channels
        for i, (d, n, s) in enumerate(zip(dims, depths, strides)):
            self.downsample.append(Downsample(cin, d, s, first=i == 0))
            blk = ((lambda: ConvStageBlock(d, mlp_ratio)) if i < conv_stages
                   else (lambda: SpikeTransformerBlock(d, num_heads, mlp_ratio)))
            self.stages.append(nn.Sequential(*(blk() for _ in range(n))))
            cin = d
        self.head_lif = lif()
        self.head = nn.Linear(dims[-1], num_classes)
        self.nm_layers = apply_nm(self, nm)

    def forward_features(self, x):
        """``[B, C, H, W]`` -> membrane-level maps ``[T, B, D, H', W']``."""
        x = self.encode(x)                                         # [T, B, C, H, W]
        for i, (down, stage) in enumerate(zip(self.downsample, self.stages)):
            x = down(x)
            if i < self.conv_stages:
                x = stage(x)
            else:                                                  # tokens [T, B, N, D]
                T, B, D, H, W = x.shape
                t = stage(x.flatten(3).transpose(2, 3).contiguous())
                x = t.transpose(2, 3).reshape(T, B, D, H, W)
        return x

    def forward(self, x):
        s = self.head_lif(self.forward_features(x).contiguous())
        return self.head(s.flatten(3).mean(3)).mean(0)             # [T, B, D] -> [B, classes]
