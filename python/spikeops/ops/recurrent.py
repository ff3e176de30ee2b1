"""Recurrent attention ops: the RWKV-4 WKV recurrence and spike-driven self-attention.

``rwkv4_wkv(time_decay, time_first, k, v)`` — RWKV-4's WKV (as SpikeGPT uses it): k, v
``[B, T, C]`` (float32, bfloat16 or float16, one dtype), time_decay / time_first ``[C]``
float32; returns ``[B, T, C]`` in v's dtype. The kernels run the reference's numerically
stable running-maximum scan in float32 (no limit on T, no overflow for large k); the
backward recomputes the forward (checkpoints every few steps) and returns gradients for all
four inputs, the parameter gradients summed over B and T in a fixed order (deterministic).

``sdsa(q, k, v, v_threshold=0.5, tau=2.0, detach_reset=True, surrogate="sigmoid",
alpha=None)`` — Spike-driven Transformer V1 SDSA: q, k, v ``[T, B, H, N, D]``;
``out = q * LIF_T(sum_N(k * v))`` with a hard reset to 0 and ``decay_input``. One fused
pass computes the token sums, the LIF over T and ``q * S``; only the membrane
``[T, B, H, 1, D]`` (float32) is kept for the backward, which gives ``dq = g S`` and
``dk = d(kv) v``, ``dv = d(kv) k`` with ``d(kv)`` the BPTT of the LIF driven by
``dS = sum_N(g q)``. Sums are float32 whatever the input dtype (the bfloat16 / float16
reference rounds ``sum_N(k v)`` to its dtype first, so it can fire differently near the
threshold).

The wrappers call ``torch.ops.spikeops.<op>.default``; their fake implementations and
autograd formulas are registered below, so they run inside ``torch.compile(fullgraph=True)``.
"""
from __future__ import annotations

import math
import struct

import torch

from .. import _extension
from ..ref import attention as ref
from ..ref.surrogate import check_surrogate


def _dense(x):
    """An uninitialised contiguous tensor like x: what the kernels return for any input
    layout (they compute on x.contiguous()), so fake and real strides agree."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


__all__ = ["rwkv4_wkv", "sdsa"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


def _finite_f32(value: float) -> bool:
    try:
        return math.isfinite(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return False


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")


# ---- RWKV-4 WKV -------------------------------------------------------------------------

def _check_rwkv(time_decay, time_first, k, v):
    """The checks rwkv4_wkv_fwd does in C++, at trace time (fake) and for the fallback."""
    for name, t in (("time_decay", time_decay), ("time_first", time_first), ("k", k), ("v", v)):
        _check_tensor(name, t)
    for name, t in (("k", k), ("v", v)):
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32, bfloat16 or float16, got {t.dtype}")
    for name, t in (("time_decay", time_decay), ("time_first", time_first)):
        if t.dtype != torch.float32:
            raise TypeError(f"{name}: expected float32 (a per-channel parameter [C]), got "
                            f"{t.dtype}")
    if k.dim() != 3:
        raise ValueError(f"k: expected 3 dims [B, T, C], got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    C = k.shape[2]
    for name, t in (("time_decay", time_decay), ("time_first", time_first)):
        if tuple(t.shape) != (C,):
            raise ValueError(f"{name}: expected shape [{C}], got {tuple(t.shape)}")
    if v.dtype != k.dtype:
        raise TypeError(f"v: dtype {v.dtype} differs from k's {k.dtype}")
    for name, t in (("v", v), ("time_decay", time_decay), ("time_first", time_first)):
        if t.device != k.device:
            raise ValueError(f"{name}: expected device {k.device} (that of k), got {t.device}")


def rwkv4_wkv(time_decay, time_first, k, v):
    """RWKV-4 WKV: ``y_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) /
    (sum_{i<t} e^{(t-1-i) w + k_i} + e^{u + k_t})`` with ``w = -exp(time_decay)``,
    ``u = time_first``.

    Args:
        time_decay, time_first: ``[C]`` float32. k, v: ``[B, T, C]``, float32 / bfloat16 /
        float16 (the same dtype).
    Returns:
        ``y [B, T, C]`` in v's dtype. Differentiable in all four inputs.
    """
    _check_rwkv(time_decay, time_first, k, v)
    if not _native():
        return ref.rwkv4_wkv_ref(time_decay, time_first, k, v)
    return torch.ops.spikeops.rwkv4_wkv_fwd.default(time_decay, time_first, k, v)


# ---- SDSA -------------------------------------------------------------------------------

def _check_sdsa(q, k, v, v_threshold, tau):
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32, bfloat16 or float16, got {t.dtype}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape != q.shape:
        raise ValueError(f"v: expected the shape of q {tuple(q.shape)}, got {tuple(v.shape)}")
    if q.dim() != 5:
        raise ValueError(f"q: expected 5 dims [T, B, H, N, D], got {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (that of q), got {t.device}")
    if not (_finite_f32(tau) and tau > 1.0):
        raise ValueError(f"tau: expected a finite value > 1, got {tau}")
    if not _finite_f32(v_threshold):
        raise ValueError(f"v_threshold: expected a finite float32 value, got {v_threshold}")


def sdsa(q, k, v, v_threshold=0.5, tau=2.0, detach_reset=True, surrogate="sigmoid",
         alpha=None):
    """Spike-driven self-attention (SDSA-1): ``out = q * LIF(sum_N(k * v))``.

    Args:
        q, k, v: ``[T, B, H, N, D]`` (time first), float32 / bfloat16 / float16, one dtype;
        usually spikes. v_threshold, tau, detach_reset: the LIF (hard reset to 0,
        ``decay_input=True``; the paper's ``MultiStepLIFNode(tau=2.0, v_threshold=0.5,
        detach_reset=True)``). surrogate / alpha: its surrogate gradient (see
        ``spikeops.ref.surrogate.SURROGATES``; alpha None means the surrogate's default).
    Returns:
        ``[T, B, H, N, D]`` in q's dtype. Differentiable in q, k and v.
    """
    alpha = check_surrogate(surrogate, alpha)
    v_threshold, tau = float(v_threshold), float(tau)
    _check_sdsa(q, k, v, v_threshold, tau)
    if not _native():
        return ref.sdsa_ref(q, k, v, v_threshold, tau, detach_reset, surrogate, alpha)
    out, _h = torch.ops.spikeops.sdsa_fwd.default(q, k, v, v_threshold, tau,
                                                  bool(detach_reset), surrogate, alpha)
    return out


# ---- fake implementations and autograd --------------------------------------------------

def _register():
    lib = "spikeops::"
    reg_fake = torch.library.register_fake
    reg_ag = torch.library.register_autograd

    @reg_fake(lib + "rwkv4_wkv_fwd")
    def _(time_decay, time_first, k, v):
        _check_rwkv(time_decay, time_first, k, v)
        return _dense(v)

    @reg_fake(lib + "rwkv4_wkv_bwd")
    def _(grad_y, time_decay, time_first, k, v):
        _check_rwkv(time_decay, time_first, k, v)
        if grad_y.shape != k.shape:
            raise ValueError(f"grad_y: expected shape {tuple(k.shape)}, got "
                             f"{tuple(grad_y.shape)}")
        return (_dense(time_decay), _dense(time_first),
                _dense(k), _dense(v))

    def rwkv_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def rwkv_backward(ctx, grad):
        td, tf, k, v = ctx.saved_tensors
        return torch.ops.spikeops.rwkv4_wkv_bwd.default(grad, td, tf, k, v)

    reg_ag(lib + "rwkv4_wkv_fwd", rwkv_backward, setup_context=rwkv_setup)

    def _h_like(q):
        return q.new_empty((q.shape[0], q.shape[1], q.shape[2], 1, q.shape[4]),
                           dtype=torch.float32)

    @reg_fake(lib + "sdsa_fwd")
    def _(q, k, v, v_threshold, tau, detach_reset, surrogate, alpha):
        check_surrogate(surrogate, alpha)
        _check_sdsa(q, k, v, v_threshold, tau)
        return _dense(q), _h_like(q)

    @reg_fake(lib + "sdsa_bwd")
    def _(grad_out, q, k, v, h_seq, v_threshold, tau, detach_reset, surrogate, alpha):
        check_surrogate(surrogate, alpha)
        _check_sdsa(q, k, v, v_threshold, tau)
        return _dense(q), _dense(k), _dense(v)

    def sdsa_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # h_seq's gradient: None, not a zeros tensor
        q, k, v = inputs[:3]
        ctx.save_for_backward(q, k, v, output[1])
        ctx.args = inputs[3:]
        ctx.mark_non_differentiable(output[1])

    def sdsa_backward(ctx, grad_out, _grad_h):
        q, k, v, h = ctx.saved_tensors
        if grad_out is None:  # only h_seq was used: nothing flows back
            return (None,) * 8
        gq, gk, gv = torch.ops.spikeops.sdsa_bwd.default(grad_out, q, k, v, h, *ctx.args)
        return (gq, gk, gv) + (None,) * 5

    reg_ag(lib + "sdsa_fwd", sdsa_backward, setup_context=sdsa_setup)

    def refuse(ctx, *grads):
        raise RuntimeError("spikeops recurrent ops: double backward (a gradient of the "
                           "gradient, create_graph=True) is not supported; use "
                           "spikeops.ref.attention")

    for name in ("rwkv4_wkv_bwd", "sdsa_bwd"):
        reg_ag(lib + name, refuse, setup_context=lambda ctx, inputs, output: None)


if _extension.AVAILABLE:
    _register()
