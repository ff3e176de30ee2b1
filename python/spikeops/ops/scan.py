"""Linear-attention scans with fla's API: linear attention, simple GLA and GLA.

Per sequence and query head (see :mod:`spikeops.ref.attention`)::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        S: [K, V] fp32, g_t <= 0 a log-decay
    o_t = scale * q_t S_t

q ``[B, T, Hq, K]``, k ``[B, T, Hkv, K]``, v ``[B, T, Hkv, V]`` with ``Hq % Hkv == 0``
(grouped-query attention: q head h reads kv head ``h // (Hq // Hkv)``; k and v are never
repeated in memory), all of one dtype (float32, bfloat16 or float16; the arithmetic and the
state are float32, o is returned in q's dtype). ``initial_state [N, Hq, K, V]`` (float32 or
float64) with N = B, or ``len(cu_seqlens) - 1`` for packed variable-length sequences
(``cu_seqlens`` int ``[N + 1]``, B == 1). Every function returns ``(o, final_state)``,
``final_state [N, Hq, K, V]`` float32 when ``output_final_state`` else None.

``chunk_*`` run the chunked algorithm (intra-chunk masked attention + inter-chunk state
passing; ``chunk_size`` a power of two, values above 256 run as 256: the result is the same
up to rounding). ``fused_recurrent_*`` run the step-by-step recurrence (chunks of one step),
meant for decoding with small T; their backward is the chunked one (chunk 64), which
computes the same gradients. All are differentiable in q, k, v, g / g_gamma and
initial_state through ``torch.ops.spikeops.linear_scan_bwd``, and visible to torch.compile.

float64 inputs (and a build without the native extension) run the pure-PyTorch reference
of :mod:`spikeops.ref.attention`, which computes in float64.
"""
from __future__ import annotations

import torch

from .. import _extension
from ..ref import attention as ref

__all__ = ["chunk_simple_gla", "fused_recurrent_simple_gla", "chunk_linear_attn",
           "fused_recurrent_linear_attn", "chunk_gla", "fused_recurrent_gla"]

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


def _check_chunk_size(chunk_size):
    if (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
            or chunk_size & (chunk_size - 1)):
        raise ValueError(f"chunk_size: expected a power of two >= 1, got {chunk_size!r}")


def _check_op(q, k, v, g, g_gamma, gk, scale, h0, cu, chunk_size):
    """The checks linear_scan_fwd / _bwd do in C++ (same messages), for the fake
    implementations: everything but the values of cu_seqlens. Returns (B, T, Hq, Hkv, K,
    V, N)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"{name}: expected float32, bfloat16 or float16, got {t.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [B, T, H, D], got shape {tuple(t.shape)}")
    B, T, Hq, K = q.shape
    if k.shape[0] != B or k.shape[1] != T or k.shape[3] != K:
        raise ValueError(f"k: expected shape [{B}, {T}, Hkv, {K}] to match q "
                         f"{tuple(q.shape)}, got {tuple(k.shape)}")
    Hkv = k.shape[2]
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"k: q heads ({Hq}) must be a multiple of k/v heads ({Hkv})")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v: expected shape [{B}, {T}, {Hkv}, V] to match k "
                         f"{tuple(k.shape)}, got {tuple(v.shape)}")
    V = v.shape[3]
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (that of q), got {t.device}")
    if sum(x is not None for x in (g, g_gamma, gk)) > 1:
        raise ValueError("g, g_gamma: give at most one of them")
    for name, d, want in (("g", g, (B, T, Hq)), ("g_gamma", g_gamma, (Hq,)),
                          ("g", gk, (B, T, Hq, K))):
        if d is None:
            continue
        if not d.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {d.dtype}")
        if d.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (that of q), got {d.device}")
        if tuple(d.shape) != want:
            raise ValueError(f"{name}: expected shape {list(want)}, got {tuple(d.shape)}")
    if chunk_size < 0 or chunk_size & (chunk_size - 1):
        raise ValueError("chunk_size: expected a power of two >= 1 (or 0: the recurrent "
                         f"form), got {chunk_size}")
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    if cu is None:
        N = B
    else:
        if cu.is_floating_point() or cu.is_complex() or cu.dtype == torch.bool:
            raise TypeError(f"cu_seqlens: expected an integer tensor, got {cu.dtype}")
        if cu.dim() != 1 or cu.numel() < 2:
            raise ValueError(f"cu_seqlens: expected 1 dim [N + 1] with N >= 1, got shape "
                             f"{tuple(cu.shape)}")
        if B != 1:
            raise ValueError(f"cu_seqlens: packed sequences need batch size 1, got B = {B}")
        N = cu.shape[0] - 1
    if h0 is not None:
        if h0.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"initial_state: expected float32 or float64, got {h0.dtype}")
        if tuple(h0.shape) != (N, Hq, K, V):
            raise ValueError(f"initial_state: expected shape [N, H, K, V] = "
                             f"{[N, Hq, K, V]}, got {tuple(h0.shape)}")
    return B, T, Hq, Hkv, K, V, N


def _scan(q, k, v, g, g_gamma, gk, scale, initial_state, output_final_state, cu_seqlens,
          chunk_size, reference):
    if g is not None and g_gamma is not None:
        raise ValueError("g, g_gamma: give at most one of them")
    if chunk_size is not None:
        _check_chunk_size(chunk_size)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not _native() or torch.float64 in (q.dtype, k.dtype, v.dtype):
        return reference()
    _extension.check_cuda_validated("linear_scan", q)
    if q.dim() != 4:
        raise ValueError(f"q: expected 4 dims [B, T, H, D], got shape {tuple(q.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    o, ht = torch.ops.spikeops.linear_scan_fwd.default(
        q, k, v, g, g_gamma, gk, scale, initial_state, cu_seqlens,
        0 if chunk_size is None else chunk_size, bool(output_final_state))
    return o, (ht if output_final_state else None)


def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                     output_final_state=False, cu_seqlens=None, chunk_size=64):
    """Simple GLA (one scalar log-decay per head), chunked.

    q [B, T, Hq, K], k [B, T, Hkv, K], v [B, T, Hkv, V]; g [B, T, Hq] log-decay (<= 0) or
    g_gamma [Hq] (the same decay at every step), at most one; neither: no decay. scale None
    means K ** -0.5. Returns (o [B, T, Hq, V], final_state [N, Hq, K, V] or None).
    """
    return _scan(q, k, v, g, g_gamma, None, scale, initial_state, output_final_state,
                 cu_seqlens, chunk_size,
                 lambda: ref.chunk_simple_gla_ref(q, k, v, g, g_gamma, scale, initial_state,
                                                  output_final_state, cu_seqlens, chunk_size))


def fused_recurrent_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, cu_seqlens=None):
    """Simple GLA, step by step (for decoding); arguments as :func:`chunk_simple_gla`."""
    return _scan(q, k, v, g, g_gamma, None, scale, initial_state, output_final_state,
                 cu_seqlens, None,
                 lambda: ref.fused_recurrent_simple_gla_ref(q, k, v, g, g_gamma, scale,
                                                            initial_state, output_final_state,
                                                            cu_seqlens))


def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                      cu_seqlens=None, chunk_size=64):
    """Causal linear attention (no decay), chunked: S_t = S_{t-1} + k_t^T v_t."""
    return _scan(q, k, v, None, None, None, scale, initial_state, output_final_state,
                 cu_seqlens, chunk_size,
                 lambda: ref.chunk_linear_attn_ref(q, k, v, scale, initial_state,
                                                   output_final_state, cu_seqlens, chunk_size))


def fused_recurrent_linear_attn(q, k, v, scale=None, initial_state=None,
                                output_final_state=False, cu_seqlens=None):
    """Causal linear attention, step by step (for decoding)."""
    return _scan(q, k, v, None, None, None, scale, initial_state, output_final_state,
                 cu_seqlens, None,
                 lambda: ref.fused_recurrent_linear_attn_ref(q, k, v, scale, initial_state,
                                                             output_final_state, cu_seqlens))


def _need_gk(g):
    if g is None:
        raise ValueError("g: required for GLA (shape [B, T, H, K])")


def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
              cu_seqlens=None, chunk_size=64):
    """GLA with a per-key log-decay g [B, T, Hq, K] (<= 0), chunked. The intra-chunk part
    takes one exponential per (i, j, key) pair: correct, several times slower than
    simple GLA."""
    _need_gk(g)
    return _scan(q, k, v, None, None, g, scale, initial_state, output_final_state,
                 cu_seqlens, chunk_size,
                 lambda: ref.chunk_gla_ref(q, k, v, g, scale, initial_state,
                                           output_final_state, cu_seqlens, chunk_size))


def fused_recurrent_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
                        cu_seqlens=None):
    """GLA, step by step (for decoding); arguments as :func:`chunk_gla`."""
    _need_gk(g)
    return _scan(q, k, v, None, None, g, scale, initial_state, output_final_state,
                 cu_seqlens, None,
                 lambda: ref.fused_recurrent_gla_ref(q, k, v, g, scale, initial_state,
                                                     output_final_state, cu_seqlens))


# ---- fake implementations and autograd ---------------------------------------------------

if _extension.AVAILABLE:
    @torch.library.register_fake("spikeops::linear_scan_fwd")
    def _(q, k, v, g, g_gamma, gk, scale, initial_state, cu_seqlens, chunk_size,
          output_final_state):
        B, T, Hq, _Hkv, K, V, N = _check_op(q, k, v, g, g_gamma, gk, scale, initial_state,
                                            cu_seqlens, chunk_size)
        o = q.new_empty(B, T, Hq, V)
        ht = (q.new_empty(N, Hq, K, V, dtype=torch.float32) if output_final_state
              else q.new_empty(0, dtype=torch.float32))
        return o, ht

    @torch.library.register_fake("spikeops::linear_scan_bwd")
    def _(grad_o, grad_final_state, q, k, v, g, g_gamma, gk, scale, initial_state,
          cu_seqlens, chunk_size):
        _check_op(q, k, v, g, g_gamma, gk, scale, initial_state, cu_seqlens, chunk_size)
        decay = next((d for d in (g, g_gamma, gk) if d is not None), None)
        dg = (torch.empty_like(decay, memory_format=torch.contiguous_format)
              if decay is not None else q.new_empty(0, dtype=torch.float32))
        dh0 = (torch.empty_like(initial_state, memory_format=torch.contiguous_format)
               if initial_state is not None else q.new_empty(0, dtype=torch.float32))
        return (torch.empty_like(q, memory_format=torch.contiguous_format),
                torch.empty_like(k, memory_format=torch.contiguous_format),
                torch.empty_like(v, memory_format=torch.contiguous_format), dg, dh0)

    def _scan_setup(ctx, inputs, output):
        q, k, v, g, g_gamma, gk, scale, h0, cu, chunk_size, _final = inputs
        ctx.save_for_backward(q, k, v, g, g_gamma, gk, h0, cu)
        ctx.scale, ctx.chunk_size = scale, chunk_size

    def _scan_backward(ctx, grad_o, grad_ht):
        q, k, v, g, g_gamma, gk, h0, cu = ctx.saved_tensors
        if grad_o is None:
            grad_o = torch.zeros(*q.shape[:3], v.shape[3], dtype=q.dtype, device=q.device)
        if grad_ht is not None and grad_ht.numel() == 0:
            grad_ht = None
        dq, dk, dv, dg, dh0 = torch.ops.spikeops.linear_scan_bwd.default(
            grad_o, grad_ht, q, k, v, g, g_gamma, gk, ctx.scale, h0, cu, ctx.chunk_size)
        return (dq, dk, dv, dg if g is not None else None,
                dg if g_gamma is not None else None, dg if gk is not None else None, None,
                dh0 if h0 is not None else None, None, None, None)

    torch.library.register_autograd("spikeops::linear_scan_fwd", _scan_backward,
                                    setup_context=_scan_setup)
