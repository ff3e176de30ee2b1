"""N:M sparse layers: SR-STE training and compressed inference.

``NMLinear`` / ``NMConv2d`` keep a dense weight and an N:M mask along the input dimension:

* ``mode="srste"`` (default): the mask is recomputed every forward from the top-n
  magnitudes of each group of m; the weight gets the dense straight-through gradient plus
  ``decay * (1 - mask) * W`` (SR-STE, Zhou et al. 2021, lambda = 2e-4 by default);
* ``mode="fixed"``: the mask is a buffer (set at construction or by :meth:`fix_mask`); the
  gradient is masked (fine-tuning a pruned network).

``NMLinear`` runs its product on the sparse kernel (``spikeops.ops.nm_masked_linear``);
``NMConv2d`` trains with a dense convolution of the masked weight. ``.to_inference()``
compresses once and returns a module that runs on the sparse kernels only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import nm as _nm
from ..ops import nm as _ops
from ..ref import nm as _ref

__all__ = ["NMLinear", "NMConv2d", "NMLinearInference", "NMConv2dInference"]

_MODES = ("srste", "fixed")


def _check_mode(mode):
    if mode not in _MODES:
        raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
    return mode


def _check_decay(decay):
    decay = float(decay)
    if not (math.isfinite(decay) and decay >= 0):
        raise ValueError(f"decay: expected a finite value >= 0, got {decay}")
    return decay


class _NMMixin:
    """Mask handling shared by NMLinear and NMConv2d (weights as rows ``[out, in_dim]``)."""

    def _init_nm(self, n, m, decay, mode):
        self.n, self.m = int(n), int(m)
        _ops._check_nm(self.n, self.m)
        self.decay = _check_decay(decay)
        self.mode = _check_mode(mode)
        in_dim = self._weight_rows().shape[1]
        if in_dim % self.m:
            raise ValueError(f"in_features: the input dimension ({in_dim}) must be a multiple "
                             f"of m = {self.m}")
        self.register_buffer("fixed_meta", None)
        if self.mode == "fixed":
            self.fix_mask()

    def _weight_rows(self):
        return self.weight if self.weight.dim() == 2 else _nm.conv_weight_to_rows(self.weight)

    def _meta(self):
        if self.mode == "fixed":
            return self.fixed_meta
        with torch.no_grad():
            return _ops.nm_compress(self._weight_rows().detach(), self.n, self.m)[1]

    def mask(self) -> torch.Tensor:
        """The current bool mask, in the weight's shape."""
        mask = _ref.unpack_meta(self._meta(), self._weight_rows().shape[1])
        return mask if self.weight.dim() == 2 else _nm.rows_to_conv_weight(mask, self.weight.shape)

    @torch.no_grad()
    def fix_mask(self, mask: torch.Tensor | None = None):
        """Switch to ``mode="fixed"`` with ``mask`` (default: the current top-n mask)."""
        rows = self._weight_rows()
        if mask is None:
            meta = _ops.nm_compress(rows.detach(), self.n, self.m)[1]
        else:
            meta = _nm.compress(self.weight, self.n, self.m, mask=mask).meta
        self.fixed_meta = meta
        self.mode = "fixed"
        return self

    @torch.no_grad()
    def _load_dense(self, dense: nn.Module, mode: str):
        """Copy a dense layer's weight and bias, then apply ``mode`` (see from_dense)."""
        self.weight.copy_(dense.weight)
        if dense.bias is not None:
            self.bias.copy_(dense.bias)
        if _check_mode(mode) == "fixed":
            self.fix_mask()
        return self

    def extra_repr(self):
        return f"{super().extra_repr()}, n={self.n}, m={self.m}, mode={self.mode}, decay={self.decay}"


class NMLinear(_NMMixin, nn.Linear):
    """``nn.Linear`` with an N:M weight (groups of m along ``in_features``), SR-STE trained.

    Args: as ``nn.Linear``, plus ``n``, ``m`` (default 2:4), ``decay`` (SR-STE lambda,
    2e-4) and ``mode`` ("srste" or "fixed").
    """

    def __init__(self, in_features, out_features, bias=True, n=2, m=4, *, decay=2e-4,
                 mode="srste", device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_nm(n, m, decay, mode)

    def forward(self, x):
        meta = self.fixed_meta if self.mode == "fixed" else None  # None: top-n of W now
        return _ops.nm_masked_linear(x, self.weight, meta, self.n, self.m, self.bias,
                                     decay=self.decay, dense_grad=self.mode == "srste")

    @classmethod
    def from_dense(cls, linear: nn.Linear, n=2, m=4, *, decay=2e-4, mode="srste"):
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, n, m,
                  decay=decay, mode="srste", device=linear.weight.device,
                  dtype=linear.weight.dtype)
        return new._load_dense(linear, mode)

    @torch.no_grad()
    def to_inference(self) -> "NMLinearInference":
        """Compress once: a module holding only (values, meta, bias)."""
        w = _nm.compress(self.weight, self.n, self.m, mask=self.mask())
        return NMLinearInference(w, None if self.bias is None else self.bias.detach().clone())


class NMLinearInference(nn.Module):
    """``y = x @ W^T + b`` with a compressed N:M weight (buffers ``values``, ``meta``)."""

    def __init__(self, weight: "_nm.NMTensor", bias: torch.Tensor | None = None):
        super().__init__()
        self.n, self.m = weight.n, weight.m
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("values", weight.values)
        self.register_buffer("meta", weight.meta)
        self.register_buffer("bias", bias)

    def weight_nm(self) -> "_nm.NMTensor":
        return _nm.NMTensor(self.values, self.meta, self.n, self.m,
                            (self.out_features, self.in_features))

    def forward(self, x):
        return _ops.nm_linear(x, self.weight_nm(), self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, n={self.n}, m={self.m}")


class NMConv2d(_NMMixin, nn.Conv2d):
    """``nn.Conv2d`` (groups=1) whose weight keeps n of every m input channels at each kernel
    position, SR-STE trained (a dense convolution of the masked weight)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", n=2, m=4, *,
                 decay=2e-4, mode="srste", device=None, dtype=None):
        if groups != 1:
            raise ValueError(f"groups: NMConv2d supports groups=1 only, got {groups}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device=device, dtype=dtype)
        self._init_nm(n, m, decay, mode)

    def forward(self, x):
        mask = self.mask()
        weight = _ref.srste_weight(self.weight, mask, self.decay, self.mode == "srste")
        return self._conv_forward(x, weight, self.bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, n=2, m=4, *, decay=2e-4, mode="srste"):
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, n, m, decay=decay, mode="srste",
                  device=conv.weight.device, dtype=conv.weight.dtype)
        return new._load_dense(conv, mode)

    @torch.no_grad()
    def to_inference(self) -> "NMConv2dInference":
        if isinstance(self.padding, str):
            raise ValueError(f"padding: to_inference needs explicit padding, got {self.padding!r}")
        w = _nm.compress(self.weight, self.n, self.m, mask=self.mask())
        return NMConv2dInference(w, None if self.bias is None else self.bias.detach().clone(),
                                 self.in_channels, self.kernel_size, self.stride, self.padding,
                                 self.dilation, self.padding_mode)


class NMConv2dInference(nn.Module):
    """A compressed N:M convolution: im2col (``F.unfold``) then the sparse GEMM."""

    def __init__(self, weight, bias, in_channels, kernel_size, stride, padding, dilation,
                 padding_mode="zeros"):
        super().__init__()
        self.n, self.m = weight.n, weight.m
        self.in_channels, self.out_channels = in_channels, weight.shape[0]
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding, self.dilation = tuple(padding), tuple(dilation)
        self.padding_mode = padding_mode
        self.register_buffer("values", weight.values)
        self.register_buffer("meta", weight.meta)
        self.register_buffer("bias", bias)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        padding = self.padding
        if self.padding_mode != "zeros":
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode)
            padding = (0, 0)
        b, c, h, w = x.shape
        kh, kw = self.kernel_size
        cols = F.unfold(x, self.kernel_size, self.dilation, padding, self.stride)  # [B, C*kh*kw, L]
        length = cols.shape[-1]
        # [B, C, kh*kw, L] -> [B, L, kh*kw, C]: K ordered with input channels fastest.
        cols = cols.reshape(b, c, kh * kw, length).permute(0, 3, 2, 1).reshape(b * length, -1)
        w_nm = _nm.NMTensor(self.values, self.meta, self.n, self.m,
                            (self.out_channels, c * kh * kw))
        y = _ops.nm_linear(cols, w_nm, self.bias)  # [B*L, out]
        ho = (h + 2 * padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return y.reshape(b, ho, wo, self.out_channels).permute(0, 3, 1, 2)
