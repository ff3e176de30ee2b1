"""SpikeYOLO-style backbone (Luo et al., "Integer-Valued Training and Spike-Driven Inference
Spiking Neural Network for High-performance and Energy-efficient Object Detection", ECCV
2024): integer-valued I-LIF neurons (spikes 0..D during training, expanded to D binary
virtual steps at inference) in front of every convolution; MS-Blocks with membrane
shortcuts; a SpikeSPPF at the end. Returns the feature maps of the last three stages (the
neck's inputs), or class logits with ``num_classes``.

    backbone = SpikeYOLOBackbone(in_channels=3, widths=(16, 32, 64, 128), depths=(1, 1, 1))
    p3, p4, p5 = backbone(images)           # each [T, B, C_i, H_i, W_i], membrane level
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import ConvBN, SpikingModel, apply_nm, ilif, seq

__all__ = ["SpikeYOLOBackbone", "MSBlock", "SpikeSPPF", "CONFIGS"]

CONFIGS = {
    "tiny": dict(widths=(8, 16, 32, 64), depths=(1, 1, 1), T=1, max_level=4),
    "small": dict(widths=(32, 64, 128, 256), depths=(1, 2, 2), T=1, max_level=4),
}


class MSBlock(nn.Module):
    """``h = x + BN(DWConv3x3(ILIF(x)))``; ``h + BN(Conv1x1(ILIF(BN(Conv1x1(ILIF(h))))))``
    with an expansion of ``ratio`` (SpikeYOLO's MS-Block, re-parameterised convs folded)."""

    def __init__(self, dim, ratio=2, max_level=4):
        super().__init__()
        self.n1, self.dw = ilif(max_level), ConvBN(dim, dim, 3, groups=dim)
        self.n2, self.pw1 = ilif(max_level), ConvBN(dim, dim * ratio, 1)
        self.n3, self.pw2 = ilif(max_level), ConvBN(dim * ratio, dim, 1)

    def forward(self, x):
        x = x + self.dw(self.n1(x))
        return x + self.pw2(self.n3(self.pw1(self.n2(x))))


class SpikeSPPF(nn.Module):
    """Spiking SPPF: ILIF, Conv1x1-BN to dim/2, three chained 5x5 max pools concatenated,
    ILIF, Conv1x1-BN back to dim."""

    def __init__(self, dim, max_level=4):
        super().__init__()
        hidden = dim // 2
        self.n1, self.cv1 = ilif(max_level), ConvBN(dim, hidden, 1)
        self.n2, self.cv2 = ilif(max_level), ConvBN(hidden * 4, dim, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = self.cv1(self.n1(x))
        outs = [y]
        for _ in range(3):
            outs.append(seq(self.pool, outs[-1]))
        return self.cv2(self.n2(torch.cat(outs, dim=2)))


class Down(nn.Module):
    """ILIF then a stride-2 Conv3x3-BN (SpikeYOLO's MS-DownSampling)."""

    def __init__(self, cin, cout, max_level):
        super().__init__()
        self.n, self.conv = ilif(max_level), ConvBN(cin, cout, 3, 2)

    def forward(self, x):
        return self.conv(self.n(x))


class SpikeYOLOBackbone(SpikingModel):
    """Args: in_channels, widths (stem width then one per stage), depths (MS-Blocks per
    stage; ``len(widths) - 1`` entries), T (time steps; SpikeYOLO trains with T = 1 and
    integer spikes), max_level (D of the I-LIF), num_classes (None: return the features of
    the last three stages; an int: a pooled linear head's logits), nm (N:M conv / linear
    layers: None, True, (n, m) or "n:m")."""

    def __init__(self, in_channels=3, widths=(8, 16, 32, 64), depths=(1, 1, 1), T=1,
                 max_level=4, num_classes=None, nm=None):
        super().__init__()
        if len(depths) != len(widths) - 1:
            raise ValueError(f"depths: expected {len(widths) - 1} entries (one per stage after "
                             f"the stem), got {len(depths)}")
        self.T, self.in_channels = int(T), in_channels
        self.stem = ConvBN(in_channels, widths[0], 3, 2)           # real-valued input: MACs
        self.stages = nn.ModuleList()
        for i, n in enumerate(depths):
            blocks = [Down(widths[i], widths[i + 1], max_level)]
            blocks += [MSBlock(widths[i + 1], max_level=max_level) for _ in range(n)]
            self.stages.append(nn.Sequential(*blocks))
        self.sppf = SpikeSPPF(widths[-1], max_level)
        self.head = None
        if num_classes is not None:
            self.head_n = ilif(max_level)
            self.head = nn.Linear(widths[-1], num_classes)
        self.nm_layers = apply_nm(self, nm)

    def forward(self, x):
        x = self.stem(self.encode(x))
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == len(self.stages) - 1:
                x = x + self.sppf(x)
            feats.append(x)
        if self.head is None:
            return tuple(feats[-3:])
        s = self.head_n(x.contiguous())
        return self.head(s.flatten(3).mean(3)).mean(0)
