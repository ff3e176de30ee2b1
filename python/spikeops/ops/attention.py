"""Spiking self-attention (Spikformer SSA) on binary spikes: ``q @ k^T @ v * scale``.

``ssa(q, k, v)`` takes q, k ``[..., N, D]`` and v ``[..., N, Dv]`` (usually spikes
``[T, B, H, N, D]``; the leading dims are independent heads) whose entries are exactly 0 or
1, in float32, bfloat16 or float16 (all three the same dtype), and returns
``[..., N, Dv]`` in that dtype. The CPU kernel bit-packs k and v along N, computes
``k^T v`` with popcounts (exact integer counts) and adds the rows q selects, so the result
is the exact product rounded once to the output dtype — for both orders, bit for bit.

**Binary inputs only:** any entry that is not exactly 0 or 1 (including NaN) raises a
``ValueError`` naming the tensor; nothing silently computes a wrong answer. Use
:func:`spikeops.ref.attention.ssa_ref` for general values.

The wrapper calls ``torch.ops.spikeops.ssa_fwd.default``; its fake implementation and
autograd formula are registered below, so it runs inside ``torch.compile(fullgraph=True)``.
Gradients (float, in the input dtype) are those of the reference's autograd for the chosen
order, computed with torch matmuls: with ``A = k^T v`` (kv_first) ``dq = s g A^T``,
``dA = s q^T g``, ``dk = v dA^T``, ``dv = k dA``; with ``S = q k^T`` (qk_first)
``dS = s g v^T``, ``dv = S^T (s g)``, ``dq = dS k``, ``dk = dS^T q``.
"""
from __future__ import annotations

import math

import torch

from .. import _extension
from ..ref import attention as ref
from ..ref.surrogate import check_surrogate

__all__ = ["ssa", "ssa_lif"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ORDERS = ("kv_first", "qk_first")


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


def _check_ssa(q, k, v, scale, order):
    """The checks ssa_fwd does in C++, at trace time (fake) and for the fallback."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32, bfloat16 or float16 (binary 0/1 "
                            f"spikes), got {t.dtype}")
    if order not in _ORDERS:
        raise ValueError(f"order: expected 'kv_first' or 'qk_first', got {order!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() < 2:
            raise ValueError(f"{name}: expected at least 2 dims [..., N, D], got shape "
                             f"{tuple(t.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != q.dim() or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v: expected shape [..., N, Dv] with [...] and N as in q "
                         f"{tuple(q.shape)}, got {tuple(v.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (that of q), got {t.device}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")


def _check_binary(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if ((t != 0) & (t != 1)).any():
            raise ValueError(f"{name}: expected binary spikes (every entry exactly 0 or 1), "
                             f"found another value (or NaN)")


def ssa(q, k, v, scale=0.125, order="kv_first"):
    """Spiking self-attention without softmax: ``q @ k^T @ v * scale``.

    q, k ``[..., N, D]``, v ``[..., N, Dv]``, binary (0/1) float32 / bfloat16 / float16 of
    one dtype; returns ``[..., N, Dv]`` in that dtype. ``order`` is ``"kv_first"``
    (``q @ (k^T @ v)``) or ``"qk_first"`` (``(q @ k^T) @ v``): the same exact result; it
    only selects which reference autograd graph the gradients follow. Raises ValueError
    naming the tensor when an entry is not 0 or 1. Differentiable in q, k and v.
    """
    scale = float(scale)
    if not _native():
        _check_ssa(q, k, v, scale, order)
        _check_binary(q, k, v)
        return ref.ssa_ref(q, k, v, scale, order)
    return torch.ops.spikeops.ssa_fwd.default(q, k, v, scale, order)


def _check_lif(q, tau, v_threshold, v_reset):
    if q.dim() < 3:
        raise ValueError(f"q: expected at least 3 dims [T, ..., N, D] (the LIF runs over dim 0), "
                         f"got shape {tuple(q.shape)}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau: expected a finite value > 0, got {tau}")
    for name, x in (("v_threshold", v_threshold), ("v_reset", v_reset)):
        if not math.isfinite(x):
            raise ValueError(f"{name}: expected a finite float32 value, got {x}")


def ssa_lif(q, k, v, scale=0.125, order="kv_first", *, tau=2.0, v_threshold=0.5, v_reset=0.0,
            surrogate="sigmoid", alpha=None, detach_reset=True):
    """:func:`ssa` fused with Spikformer's attention LIF: the spikes of a multi-step LIF
    over dim 0 (T) of the attention values, which never go through memory.

    q, k ``[T, ..., N, D]``, v ``[T, ..., N, Dv]``, binary, one float dtype. The LIF is
    :func:`spikeops.ref.neurons.lif` with ``decay_input=True``, a hard reset to ``v_reset``
    and ``v0 = v_reset``, run on each attention value as rounded to the dtype (what an
    unfused ``lif(ssa(q, k, v))`` sees): the same spikes, bit for bit. Defaults are
    Spikformer's ``MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True)``.
    Differentiable in q, k, v: the backward recomputes the attention (exact), runs the
    LIF's surrogate-gradient backward kernel, then the SSA gradients of :func:`ssa`.
    Non-binary input: an error on the CPU; on CUDA the float fallback of :func:`ssa`.
    """
    scale, tau, v_threshold, v_reset = float(scale), float(tau), float(v_threshold), float(v_reset)
    alpha = check_surrogate(surrogate, alpha)
    if not _native():
        _check_ssa(q, k, v, scale, order)
        _check_lif(q, tau, v_threshold, v_reset)
        _check_binary(q, k, v)
        return ref.ssa_lif_ref(q, k, v, scale, order, tau, v_threshold, v_reset, surrogate,
                               alpha, detach_reset)
    return torch.ops.spikeops.ssa_lif_fwd.default(q, k, v, scale, order, tau, v_threshold,
                                                  v_reset, surrogate, alpha, bool(detach_reset))


# ---- fake implementation and autograd ---------------------------------------------------

if _extension.AVAILABLE:
    @torch.library.register_fake("spikeops::ssa_fwd")
    def _(q, k, v, scale, order):
        _check_ssa(q, k, v, scale, order)
        return q.new_empty(*v.shape)

    def _ssa_setup(ctx, inputs, output):
        q, k, v, scale, order = inputs
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.order = scale, order

    def _ssa_grads(q, k, v, grad, scale, order):
        gs = grad * scale                           # the reference's (... ) * scale
        kt = k.transpose(-2, -1)
        if order == "kv_first":                     # out = (q @ A) * s, A = k^T @ v
            a = kt @ v
            dq = gs @ a.transpose(-2, -1)
            da = q.transpose(-2, -1) @ gs
            dk = v @ da.transpose(-2, -1)
            dv = k @ da
        else:                                       # out = (S @ v) * s, S = q @ k^T
            s = q @ kt
            ds = gs @ v.transpose(-2, -1)
            dv = s.transpose(-2, -1) @ gs
            dq = ds @ k
            dk = ds.transpose(-2, -1) @ q
        return dq, dk, dv

    def _ssa_backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        return (*_ssa_grads(q, k, v, grad, ctx.scale, ctx.order), None, None)

    torch.library.register_autograd("spikeops::ssa_fwd", _ssa_backward,
                                    setup_context=_ssa_setup)

    @torch.library.register_fake("spikeops::ssa_lif_fwd")
    def _(q, k, v, scale, order, tau, v_threshold, v_reset, surrogate, alpha, detach_reset):
        _check_ssa(q, k, v, scale, order)
        _check_lif(q, tau, v_threshold, v_reset)
        check_surrogate(surrogate, alpha)
        return q.new_empty(*v.shape)

    def _ssa_lif_setup(ctx, inputs, output):
        q, k, v, scale, order, tau, v_threshold, v_reset, surrogate, alpha, detach = inputs
        ctx.save_for_backward(q, k, v)
        ctx.args = (scale, order, tau, v_threshold, v_reset, surrogate, alpha, detach)

    def _ssa_lif_backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        scale, order, tau, v_threshold, v_reset, surrogate, alpha, detach = ctx.args
        attn = torch.ops.spikeops.ssa_fwd.default(q, k, v, scale, order)   # exact recompute
        grad_attn, _ = torch.ops.spikeops.lif_bwd.default(
            grad.contiguous(), None, attn, None, tau, True, v_threshold, v_reset, surrogate,
            alpha, detach)
        return (*_ssa_grads(q, k, v, grad_attn, scale, order),) + (None,) * 8

    torch.library.register_autograd("spikeops::ssa_lif_fwd", _ssa_lif_backward,
                                    setup_context=_ssa_lif_setup)
