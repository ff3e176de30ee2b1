"""N:M structured-sparse GEMM: ``y = x @ W^T + b`` with a compressed N:M weight.

A weight ``W [rows, K]`` keeping ``n`` of every ``m`` consecutive entries along K (the input
dimension) is held as an :class:`spikeops.nm.NMTensor`: ``values [rows, K/m*n]`` plus the
bit-packed mask ``meta`` uint8 ``[rows, ceil(K/8)]`` (see :mod:`spikeops.ref.nm`). ``m`` is
a power of two from 2 to 32 and ``1 <= n < m``; fp32, bf16 and fp16, accumulation in fp32.

The wrappers call ``torch.ops.spikeops.<op>.default``; their fake implementations and autograd
formulas are registered below, so they run inside ``torch.compile(fullgraph=True)``.
Gradients: ``dx = dy @ W`` (sparse kernel), ``d values = (dy^T x)`` at the kept positions
(a dense matmul, then a gather), ``d bias = sum(dy)``.
"""
from __future__ import annotations

import warnings

import torch

from .. import _extension
from ..ref import nm as ref

__all__ = ["nm_linear", "nm_compress", "nm_linear_grad_input", "nm_masked_linear"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


# ---- argument checks shared by the fake implementations (trace-time errors) -------------

def _check_nm(n, m):
    if not (2 <= m <= 32 and m & (m - 1) == 0):
        raise ValueError(f"m: expected a power of two between 2 and 32, got {m}")
    if not 1 <= n < m:
        raise ValueError(f"n: expected 1 <= n < m = {m}, got {n}")


def _check_float(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32, bfloat16 or float16, got {t.dtype}")


def _check_compressed(values, meta, n, m, x, x_name):
    """Checks (values, meta) against the activation ``x``; returns K."""
    _check_nm(n, m)
    _check_float(values, "values")
    if values.dim() != 2 or values.shape[1] == 0 or values.shape[1] % n:
        raise ValueError(f"values: expected [rows, K/m*n] with a positive multiple of n = {n} "
                         f"columns, got shape {tuple(values.shape)}")
    k = values.shape[1] // n * m
    if not isinstance(meta, torch.Tensor) or meta.dtype != torch.uint8:
        raise TypeError(f"meta: expected a uint8 tensor, got "
                        f"{getattr(meta, 'dtype', type(meta).__name__)}")
    if tuple(meta.shape) != (values.shape[0], (k + 7) // 8):
        raise ValueError(f"meta: expected shape {(values.shape[0], (k + 7) // 8)} "
                         f"(rows, ceil(K/8)), got {tuple(meta.shape)}")
    for t, name in ((values, "values"), (meta, "meta")):
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (that of {x_name}), got "
                             f"{t.device}")
    if values.dtype != x.dtype:
        raise TypeError(f"values: dtype {values.dtype} differs from {x_name}'s {x.dtype}")
    return k


def _check_bias(bias, x, rows):
    if bias is None:
        return
    _check_float(bias, "bias")
    if tuple(bias.shape) != (rows,):
        raise ValueError(f"bias: expected shape ({rows},), got {tuple(bias.shape)}")
    if bias.device != x.device:
        raise ValueError(f"bias: expected device {x.device} (that of x), got {bias.device}")
    if bias.dtype != x.dtype:
        raise TypeError(f"bias: dtype {bias.dtype} differs from x's {x.dtype}")


def _check_linear(x, values, meta, n, m, bias):
    _check_float(x, "x")
    if x.dim() < 1:
        raise ValueError("x: expected a tensor [*, in_features], got a scalar")
    k = _check_compressed(values, meta, n, m, x, "x")
    if x.shape[-1] != k:
        raise ValueError(f"x: expected in_features = x.shape[-1] = {k} (the weight's), got "
                         f"{x.shape[-1]}")
    _check_bias(bias, x, values.shape[0])
    return k


def _check_weight(weight, n, m):
    _check_nm(n, m)
    _check_float(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-D tensor [rows, K], got {weight.dim()}-D")
    k = weight.shape[1]
    if k < m or k % m:
        raise ValueError(f"weight: K = weight.shape[1] = {k} must be a positive multiple of "
                         f"m = {m}")
    return k


# ---- public functions -------------------------------------------------------------------

def nm_compress(weight, n, m, meta=None):
    """Compress a dense ``weight [rows, K]`` to ``(values, meta)``.

    With ``meta=None`` the ``n`` largest ``|w|`` of each group of ``m`` are kept (ties: the
    lower column; NaN counts as largest); else the entries ``meta`` marks are gathered
    (``meta`` must keep exactly n per group). Not differentiable.
    """
    n, m = int(n), int(m)
    if not _native():
        _check_weight(weight, n, m)
        mask = None if meta is None else ref.unpack_meta(meta, weight.shape[1])
        return ref.compress(weight, n, m, mask)
    return torch.ops.spikeops.nm_compress.default(weight, meta, n, m)


_CUDA_GEMV_MAX_BATCH = 16   # csrc/cuda/nm/nm_common.cuh kGemvMaxBatch
_warned_no_tensor_cores = False


def _warn_if_no_sparse_tensor_cores(x, values, meta, n, m):
    """Warn once when a CUDA 2:4 half-precision product must take the SIMT kernel.

    The conditions mirror csrc/cuda/nm/nm.cu (mma24_sms): the warning is raised here
    because a TORCH_WARN from inside the custom op does not reach Python's warnings.
    """
    global _warned_no_tensor_cores
    if (_warned_no_tensor_cores or not x.is_cuda or (n, m) != (2, 4)
            or x.dtype not in (torch.float16, torch.bfloat16) or torch.compiler.is_compiling()):
        return
    k = x.shape[-1]
    if x.numel() // max(k, 1) <= _CUDA_GEMV_MAX_BATCH:
        return                                   # the GEMV kernel: no tensor cores needed
    aligned = (x.is_contiguous() and x.data_ptr() % 16 == 0 and values.data_ptr() % 16 == 0
               and meta.data_ptr() % 8 == 0)
    if k >= 64 and k % 64 == 0 and aligned and torch.cuda.get_device_capability(x.device)[0] >= 8:
        return
    _warned_no_tensor_cores = True
    warnings.warn(f"nm_linear: this 2:4 {'bf16' if x.dtype == torch.bfloat16 else 'fp16'} call "
                  "cannot use the sparse tensor cores (they need in_features a multiple of 64, "
                  "16-byte aligned x and values, 8-byte aligned meta, and an sm_80+ GPU); it "
                  "runs on the slower SIMT kernel (same result)", UserWarning, stacklevel=3)


def nm_linear(x, w_nm, bias=None):
    """``x @ W^T + bias`` for ``x [*, K]`` and an N:M weight ``w_nm`` (:class:`~spikeops.nm.NMTensor`
    of dense shape ``[out_features, K]``); returns ``[*, out_features]`` in x's dtype.

    Differentiable in x, ``w_nm.values`` and bias. On the CPU, batches of up to 4 rows take
    a GEMV-shaped kernel that reads W once (AVX-512); larger batches a register-tiled one.
    """
    values, meta, n, m = w_nm.values, w_nm.meta, w_nm.n, w_nm.m
    if not _native():
        _check_linear(x, values, meta, n, m, bias)
        return ref.nm_linear(x, values, meta, n, m, bias)
    _warn_if_no_sparse_tensor_cores(x, values, meta, n, m)
    return torch.ops.spikeops.nm_linear.default(x, values, meta, n, m, bias)


def nm_linear_grad_input(grad_out, values, meta, n, m):
    """``grad_out @ W`` for ``grad_out [*, rows]``: the input gradient of :func:`nm_linear`."""
    if not _native():
        return ref.nm_linear_grad_input(grad_out, values, meta, n, m)
    return torch.ops.spikeops.nm_linear_grad_input.default(grad_out, values, meta, int(n), int(m))


def nm_masked_linear(x, weight, meta, n, m, bias=None, *, decay=2e-4, dense_grad=True):
    """Training form: ``x @ (weight * mask)^T + bias`` with a dense ``weight [rows, K]``; the
    product runs on the sparse kernel.

    ``meta`` is the packed N:M mask, or None for the top-n magnitudes of ``weight`` now
    (SR-STE recomputes it every step). The weight gradient is dense:
    ``dy^T x + decay * (1 - mask) * weight`` (SR-STE, Zhou et al. 2021) when ``dense_grad``,
    else ``(dy^T x) * mask`` (fine-tuning a fixed mask). The weight is compressed once per
    call, and the kept values are reused by the backward.
    """
    decay, n, m = float(decay), int(n), int(m)
    if not _native():
        _check_weight(weight, n, m)
        if meta is None:
            meta = ref.pack_mask(ref.prune_mask(weight, n, m))
        return ref.nm_masked_linear(x, weight, meta, n, m, bias, decay, dense_grad)
    values, meta = torch.ops.spikeops.nm_compress.default(weight.detach(), meta, n, m)
    return torch.ops.spikeops.nm_masked_linear.default(x, weight, values, meta, n, m, bias,
                                                       decay, bool(dense_grad))


# ---- fake implementations and autograd --------------------------------------------------

def _flat(t, cols):
    return t.reshape(-1, cols)


def _dense_weight_grad(grad, x, rows, k):
    """``grad^T @ x`` as ``[rows, K]`` (fp32 accumulation by the BLAS)."""
    return _flat(grad, rows).t().mm(_flat(x, k))


if _extension.AVAILABLE:
    @torch.library.register_fake("spikeops::nm_compress")
    def _(weight, meta, n, m):
        k = _check_weight(weight, n, m)
        rows = weight.shape[0]
        if meta is not None and (meta.dtype != torch.uint8 or
                                 tuple(meta.shape) != (rows, (k + 7) // 8)):
            raise ValueError(f"meta: expected uint8 of shape {(rows, (k + 7) // 8)}, got "
                             f"{meta.dtype} {tuple(meta.shape)}")
        return (weight.new_empty(rows, k // m * n),
                weight.new_empty(rows, (k + 7) // 8, dtype=torch.uint8))

    @torch.library.register_fake("spikeops::nm_linear")
    def _(x, values, meta, n, m, bias):
        _check_linear(x, values, meta, n, m, bias)
        return x.new_empty(*x.shape[:-1], values.shape[0])

    @torch.library.register_fake("spikeops::nm_linear_grad_input")
    def _(grad_out, values, meta, n, m):
        _check_float(grad_out, "grad_out")
        k = _check_compressed(values, meta, n, m, grad_out, "grad_out")
        if grad_out.dim() < 1 or grad_out.shape[-1] != values.shape[0]:
            raise ValueError(f"grad_out: expected out_features = grad_out.shape[-1] = "
                             f"{values.shape[0]}, got shape {tuple(grad_out.shape)}")
        return grad_out.new_empty(*grad_out.shape[:-1], k)

    @torch.library.register_fake("spikeops::nm_masked_linear")
    def _(x, weight, values, meta, n, m, bias, decay, dense_grad):
        k = _check_weight(weight, n, m)
        if weight.dtype != x.dtype:
            raise TypeError(f"weight: dtype {weight.dtype} differs from x's {x.dtype}")
        _check_linear(x, values, meta, n, m, bias)
        if tuple(weight.shape) != (values.shape[0], k) or values.shape[1] != k // m * n:
            raise ValueError(f"weight: expected shape [rows, K] matching values "
                             f"{tuple(values.shape)}, got {tuple(weight.shape)}")
        return x.new_empty(*x.shape[:-1], weight.shape[0])

    # nm_linear: d x = dy @ W, d values = (dy^T x) at the kept positions, d bias = sum dy.
    def _linear_setup(ctx, inputs, output):
        x, values, meta, n, m, bias = inputs
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, values, meta)
        ctx.n, ctx.m, ctx.k = n, m, x.shape[-1]

    def _linear_backward(ctx, grad):
        x, values, meta = ctx.saved_tensors
        n, m, rows = ctx.n, ctx.m, values.shape[0]
        gx = gv = gb = None
        if ctx.needs_input_grad[0]:
            gx = nm_linear_grad_input(grad, values, meta, n, m)
        if ctx.needs_input_grad[1]:
            gv = nm_compress(_dense_weight_grad(grad, x, rows, ctx.k), n, m, meta)[0]
        if ctx.needs_input_grad[5]:
            gb = _flat(grad, rows).sum(0)
        return gx, gv, None, None, None, gb

    torch.library.register_autograd("spikeops::nm_linear", _linear_backward,
                                    setup_context=_linear_setup)

    # nm_linear_grad_input is linear in grad_out and in values (double backward).
    def _grad_input_setup(ctx, inputs, output):
        grad_out, values, meta, n, m = inputs
        ctx.save_for_backward(grad_out if ctx.needs_input_grad[1] else None, values, meta)
        ctx.n, ctx.m = n, m

    def _grad_input_backward(ctx, gg):
        grad_out, values, meta = ctx.saved_tensors
        n, m, rows = ctx.n, ctx.m, values.shape[0]
        g_out = g_values = None
        if ctx.needs_input_grad[0]:
            g_out = torch.ops.spikeops.nm_linear.default(gg, values, meta, n, m, None)
        if ctx.needs_input_grad[1]:
            g_values = nm_compress(_dense_weight_grad(grad_out, gg, rows, gg.shape[-1]), n, m,
                                   meta)[0]
        return g_out, g_values, None, None, None

    torch.library.register_autograd("spikeops::nm_linear_grad_input", _grad_input_backward,
                                    setup_context=_grad_input_setup)

    # nm_masked_linear: dense (SR-STE) or masked weight gradient.
    def _masked_setup(ctx, inputs, output):
        x, weight, values, meta, n, m, bias, decay, dense_grad = inputs
        ctx.save_for_backward(x, weight, values, meta)
        ctx.n, ctx.m, ctx.decay, ctx.dense_grad = n, m, decay, dense_grad

    def _masked_backward(ctx, grad):
        x, weight, values, meta = ctx.saved_tensors
        n, m = ctx.n, ctx.m
        rows, k = weight.shape
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = nm_linear_grad_input(grad, values, meta, n, m)
        if ctx.needs_input_grad[1]:
            gw = _dense_weight_grad(grad, x, rows, k)
            mask = ref.unpack_meta(meta, k)
            if ctx.dense_grad:  # in place: gw is ours, and a 2nd pass would cost as much
                gw = gw.add_(weight.detach().masked_fill(mask, 0), alpha=ctx.decay)
            else:
                gw = gw.masked_fill_(~mask, 0)
        if ctx.needs_input_grad[6]:
            gb = _flat(grad, rows).sum(0)
        return gx, gw, None, None, None, None, gb, None, None

    torch.library.register_autograd("spikeops::nm_masked_linear", _masked_backward,
                                    setup_context=_masked_setup)
