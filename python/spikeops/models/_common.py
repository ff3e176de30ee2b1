"""Building blocks shared by the model definitions (time-major helpers, N:M option)."""
from __future__ import annotations

import torch
from torch import nn

from ..nn.neurons import ILIF, LIF, reset_net

__all__ = ["parse_nm", "apply_nm", "seq", "ConvBN", "LinearBN", "SpikingModel", "lif", "ilif"]


def parse_nm(nm) -> tuple[int, int] | None:
    """``nm=`` of every model: None / False (dense), True (2:4), ``(n, m)`` or ``"n:m"``."""
    from ..ops.nm import _check_nm

    if nm is None or nm is False:
        return None
    if nm is True:
        return (2, 4)
    spec = None
    if isinstance(nm, str):
        parts = nm.split(":")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            spec = int(parts[0]), int(parts[1])
    elif isinstance(nm, (tuple, list)) and len(nm) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in nm):
        spec = int(nm[0]), int(nm[1])
    if spec is not None:
        _check_nm(*spec)                 # n < m, m a power of two up to 32
        return spec
    raise ValueError(f"nm: expected None, True (2:4), an (n, m) pair or an 'n:m' string, "
                     f"got {nm!r}")


def apply_nm(model: nn.Module, nm, skip=()) -> list[str]:
    """Swap the model's ``nn.Linear`` / ``nn.Conv2d`` layers whose input dimension is a
    multiple of m (grouped convs excluded) for ``spikeops.nn.NMLinear`` / ``NMConv2d``,
    except the layers named in ``skip``; the encoding layer, whose input channels rarely
    divide by m, stays dense. Returns the replaced names."""
    from .. import nm as _nm

    spec = parse_nm(nm)
    if spec is None:
        return []
    n, m = spec

    def keep(name, mod):
        if name in skip:
            return False
        if isinstance(mod, nn.Conv2d):
            return mod.groups == 1 and mod.in_channels % m == 0
        return mod.in_features % m == 0

    return _nm.sparsify_(model, n, m, filter_fn=keep)


def seq(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample ``module`` to time-major ``x [T, B, ...]`` (T folded into B)."""
    T, B = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:])


def lif(**kw) -> LIF:
    """The LIF of the spiking transformers: tau 2, threshold 1, hard reset, detach_reset."""
    kw.setdefault("tau", 2.0)
    kw.setdefault("detach_reset", True)
    return LIF(**kw)


def ilif(max_level=4, **kw) -> ILIF:
    """SpikeYOLO's integer LIF (spikes 0..max_level, soft reset)."""
    return ILIF(max_level=max_level, **kw)


class ConvBN(nn.Module):
    """Conv2d + BatchNorm2d on time-major ``[T, B, C, H, W]``."""

    def __init__(self, cin, cout, k=3, stride=1, padding=None, groups=1, bias=False):
        super().__init__()
        padding = k // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return seq(lambda t: self.bn(self.conv(t)), x)


class LinearBN(nn.Module):
    """Linear + BatchNorm over channels on time-major tokens ``[T, B, N, C]``."""

    def __init__(self, cin, cout, bias=False):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=bias)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        T, B, N, _ = x.shape
        y = self.linear(x.flatten(0, 1))                     # [T*B, N, Cout]
        y = self.bn(y.transpose(1, 2)).transpose(1, 2)
        return y.reshape(T, B, N, -1).contiguous()


class SpikingModel(nn.Module):
    """Base of the image models: resets every neuron at the start of each forward (a batch
    is one independent sample set; no membrane carries over between batches) and encodes a
    static image ``[B, C, H, W]`` by repeating it ``T`` times (direct encoding); a
    time-major ``[T, B, C, H, W]`` input is taken as it is."""

    T: int = 4

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        reset_net(self)
        if x.dim() == 4:
            return x.unsqueeze(0).expand(self.T, *x.shape).contiguous()
        if x.dim() == 5:
            return x
        raise ValueError(f"x: expected an image batch [B, C, H, W] or a time-major "
                         f"[T, B, C, H, W] tensor, got shape {tuple(x.shape)}")


def check_tokens(idx: torch.Tensor) -> None:
    """Language models take integer token ids ``[B, L]``."""
    if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx: expected int64 tokens [B, L], got {idx.dtype} "
                         f"{tuple(idx.shape)}")
