"""Sliding-window causal softmax attention (SpikingBrain's SWA layers), flash-style.

``sliding_window_attn(q, k, v, window, scale=None)`` takes q, k ``[B, T, H, D]`` and v
``[B, T, H, Dv]`` (float32, bfloat16 or float16, one dtype) and returns o ``[B, T, H, Dv]``
in that dtype: query t attends to keys j with ``t - window < j <= t`` (``window >= 1`` keys,
itself included), ``o[t] = softmax_j(scale * q[t] . k[j]) @ v[j]``, scale None meaning
``D ** -0.5``. The kernels (CPU: AVX-512 / AVX2 / scalar; CUDA) tile queries and keys,
visit only the key tiles inside each query tile's window, keep the online-softmax state in
fp32 and never build a T x T matrix. The forward saves o and the per-row log-sum-exp
(fp32 ``[B, H, T]``); the backward recomputes the probabilities per tile from it
(``delta = rowsum(dO * o)``, ``dS = P * (dO v^T - delta)``) and is deterministic.

The wrapper calls ``torch.ops.spikeops.swa_fwd.default``; its fake implementation and
autograd formula (itself the custom op ``swa_bwd``) are registered below, so it runs inside
``torch.compile(fullgraph=True)``. Arithmetic is fp32 for every input dtype.
"""
from __future__ import annotations

import math

import torch

from .. import _extension
from ..ref import attention as ref

__all__ = ["sliding_window_attn"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


def _check_qkv(q, k, v, window, scale):
    """The checks swa_fwd does in C++, at trace time (fake) and for the fallback."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name}: expected float32, bfloat16 or float16, got {t.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [B, T, H, D], got {tuple(t.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v: expected shape [B, T, H, Dv] with B, T, H as in q "
                         f"{tuple(q.shape)}, got {tuple(v.shape)}")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise ValueError(f"window: expected an int >= 1, got {window!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (that of q), got {t.device}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")


def _check_like(name, t, shape, q, dtype):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {list(shape)}, got {tuple(t.shape)}")
    if t.device != q.device:
        raise ValueError(f"{name}: expected device {q.device} (that of q), got {t.device}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")


def _default_scale(q, scale):
    if scale is None:
        d = q.shape[-1] if isinstance(q, torch.Tensor) and q.dim() == 4 else 1
        return d ** -0.5 if d > 0 else 1.0
    return float(scale)


def sliding_window_attn(q, k, v, window, scale=None):
    """Causal softmax attention over a sliding window of ``window`` keys.

    q, k ``[B, T, H, D]``, v ``[B, T, H, Dv]`` (float32 / bfloat16 / float16, one dtype, one
    device); query t attends to keys ``t - window < j <= t``. ``scale`` None means
    ``D ** -0.5``. Returns o ``[B, T, H, Dv]`` in q's dtype (fp32 arithmetic inside).
    Differentiable in q, k and v. Raises ValueError / TypeError naming the bad argument.
    """
    if isinstance(window, bool) or not isinstance(window, int):
        raise ValueError(f"window: expected an int >= 1, got {window!r}")
    scale = _default_scale(q, scale)
    if not _native():
        _check_qkv(q, k, v, window, scale)
        return ref.sliding_window_attn_ref(q, k, v, window, scale)
    _extension.check_cuda_validated("sliding_window_attn", q)
    o, _ = torch.ops.spikeops.swa_fwd.default(q, k, v, window, scale)
    return o


# ---- fake implementations and autograd --------------------------------------------------

if _extension.AVAILABLE:
    @torch.library.register_fake("spikeops::swa_fwd")
    def _(q, k, v, window, scale):
        _check_qkv(q, k, v, window, scale)
        B, T, H, _ = q.shape
        o = q.new_empty(B, T, H, v.shape[3])
        lse = q.new_empty(B, H, T, dtype=torch.float32)
        return o, lse

    @torch.library.register_fake("spikeops::swa_bwd")
    def _(grad_o, grad_lse, q, k, v, o, lse, window, scale):
        _check_qkv(q, k, v, window, scale)
        B, T, H, _ = q.shape
        Dv = v.shape[3]
        _check_like("o", o, (B, T, H, Dv), q, q.dtype)
        _check_like("grad_o", grad_o, (B, T, H, Dv), q, q.dtype)
        _check_like("lse", lse, (B, H, T), q, torch.float32)
        if grad_lse is not None:
            _check_like("grad_lse", grad_lse, (B, H, T), q, torch.float32)
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def _swa_setup(ctx, inputs, output):
        q, k, v, window, scale = inputs
        o, lse = output
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.window, ctx.scale = window, scale

    def _swa_backward(ctx, grad_o, grad_lse):
        q, k, v, o, lse = ctx.saved_tensors
        if grad_o is None:
            grad_o = torch.zeros_like(o)
        dq, dk, dv = torch.ops.spikeops.swa_bwd.default(
            grad_o.contiguous(), grad_lse, q, k, v, o, lse, ctx.window, ctx.scale)
        return dq, dk, dv, None, None

    torch.library.register_autograd("spikeops::swa_fwd", _swa_backward,
                                    setup_context=_swa_setup)
