"""The attention-family references: chunk == recurrent, packing, GQA, grads, validation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeops.ref import attention as A

D64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def _inputs(B, T, Hq, Hkv, K, V, kind, grad=False, n_state=None):
    q = torch.randn(B, T, Hq, K, dtype=D64)
    k = torch.randn(B, T, Hkv, K, dtype=D64)
    v = torch.randn(B, T, Hkv, V, dtype=D64)
    extra = {}
    if kind == "g":
        extra["g"] = F.logsigmoid(torch.randn(B, T, Hq, dtype=D64))
    elif kind == "g_gamma":
        extra["g_gamma"] = -torch.rand(Hq, dtype=D64) * 0.5
    elif kind == "gk":
        extra["g"] = F.logsigmoid(torch.randn(B, T, Hq, K, dtype=D64))
    h0 = None if n_state is None else torch.randn(n_state, Hq, K, V, dtype=D64)
    if grad:
        for x in (q, k, v, *extra.values(), *([h0] if h0 is not None else [])):
            x.requires_grad_(True)
    return q, k, v, extra, h0


def _fns(kind):
    if kind == "gk":
        return A.chunk_gla_ref, A.fused_recurrent_gla_ref
    if kind is None:
        return A.chunk_linear_attn_ref, A.fused_recurrent_linear_attn_ref
    return A.chunk_simple_gla_ref, A.fused_recurrent_simple_gla_ref


@pytest.mark.parametrize("kind", [None, "g", "g_gamma", "gk"])
@pytest.mark.parametrize("T,chunk", [(1, 64), (7, 4), (16, 16), (33, 8), (65, 64), (20, 1)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_chunk_equals_recurrent(kind, T, chunk, with_h0):
    B, Hq, Hkv, K, V = 2, 2, 2, 4, 3
    q, k, v, extra, h0 = _inputs(B, T, Hq, Hkv, K, V, kind, n_state=B if with_h0 else None)
    chunk_fn, rec_fn = _fns(kind)
    o1, s1 = chunk_fn(q, k, v, **extra, initial_state=h0, output_final_state=True,
                      chunk_size=chunk)
    o2, s2 = rec_fn(q, k, v, **extra, initial_state=h0, output_final_state=True)
    assert o1.shape == (B, T, Hq, V) and s1.shape == (B, Hq, K, V)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(s1, s2, **TOL)
    assert torch.isfinite(o1).all()


def test_recurrence_by_hand():
    """A tiny case written straight from S_t = exp(g_t) S_{t-1} + k_t^T v_t, o_t = s q_t S_t."""
    B, T, H, K, V = 1, 5, 1, 2, 2
    q, k, v, extra, h0 = _inputs(B, T, H, H, K, V, "g", n_state=1)
    g, scale = extra["g"], 0.7
    S = h0[0, 0].clone()
    want = []
    for t in range(T):
        S = torch.exp(g[0, t, 0]) * S + torch.outer(k[0, t, 0], v[0, t, 0])
        want.append(scale * q[0, t, 0] @ S)
    for fn in _fns("g"):
        o, s = fn(q, k, v, g=g, scale=scale, initial_state=h0, output_final_state=True)
        torch.testing.assert_close(o[0, :, 0], torch.stack(want), **TOL)
        torch.testing.assert_close(s[0, 0], S, **TOL)


def test_default_scale_and_no_final_state():
    q, k, v, extra, _ = _inputs(1, 6, 2, 2, 4, 3, "g")
    o, s = A.chunk_simple_gla_ref(q, k, v, **extra, chunk_size=4)
    assert s is None
    o2, _ = A.chunk_simple_gla_ref(q, k, v, **extra, scale=4 ** -0.5, chunk_size=4)
    torch.testing.assert_close(o, o2, **TOL)


def test_g_gamma_equals_constant_g():
    q, k, v, extra, _ = _inputs(2, 9, 3, 3, 4, 2, "g_gamma")
    g = extra["g_gamma"].expand(2, 9, 3).contiguous()
    for fn in _fns("g"):
        o1, s1 = fn(q, k, v, g_gamma=extra["g_gamma"], output_final_state=True)
        o2, s2 = fn(q, k, v, g=g, output_final_state=True)
        torch.testing.assert_close(o1, o2, **TOL)
        torch.testing.assert_close(s1, s2, **TOL)


def test_simple_gla_equals_gla_with_broadcast_decay():
    q, k, v, extra, h0 = _inputs(1, 11, 2, 2, 3, 4, "g", n_state=1)
    gk = extra["g"].unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
    o1, s1 = A.chunk_simple_gla_ref(q, k, v, **extra, initial_state=h0,
                                    output_final_state=True, chunk_size=4)
    o2, s2 = A.chunk_gla_ref(q, k, v, gk, initial_state=h0, output_final_state=True,
                             chunk_size=8)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(s1, s2, **TOL)


@pytest.mark.parametrize("kind", [None, "g", "g_gamma", "gk"])
def test_cu_seqlens_equals_separate_runs(kind):
    lens = [5, 1, 12, 0, 9]
    T = sum(lens)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    N, Hq, Hkv, K, V = len(lens), 4, 2, 3, 2
    q, k, v, extra, h0 = _inputs(1, T, Hq, Hkv, K, V, kind, n_state=N)
    chunk_fn, rec_fn = _fns(kind)
    oc, sc = chunk_fn(q, k, v, **extra, initial_state=h0, output_final_state=True,
                      cu_seqlens=cu, chunk_size=4)
    orr, sr = rec_fn(q, k, v, **extra, initial_state=h0, output_final_state=True,
                     cu_seqlens=cu)
    torch.testing.assert_close(oc, orr, **TOL)
    torch.testing.assert_close(sc, sr, **TOL)
    assert sc.shape == (N, Hq, K, V)
    for n in range(N):
        s, e = int(cu[n]), int(cu[n + 1])
        ex = {name: (x if name == "g_gamma" else x[:, s:e]) for name, x in extra.items()}
        o1, s1 = rec_fn(q[:, s:e], k[:, s:e], v[:, s:e], **ex, initial_state=h0[n:n + 1],
                        output_final_state=True)
        torch.testing.assert_close(oc[:, s:e], o1, **TOL)
        torch.testing.assert_close(sc[n:n + 1], s1, **TOL)
    # an empty sequence hands its initial state through unchanged
    torch.testing.assert_close(sc[3], h0[3], **TOL)


@pytest.mark.parametrize("kind", [None, "g", "gk"])
def test_gqa_equals_repeated_heads(kind):
    B, T, Hq, Hkv, K, V = 2, 10, 6, 2, 3, 4
    q, k, v, extra, h0 = _inputs(B, T, Hq, Hkv, K, V, kind, n_state=B)
    kr, vr = k.repeat_interleave(3, dim=2), v.repeat_interleave(3, dim=2)
    for fn in _fns(kind):
        o1, s1 = fn(q, k, v, **extra, initial_state=h0, output_final_state=True)
        o2, s2 = fn(q, kr, vr, **extra, initial_state=h0, output_final_state=True)
        torch.testing.assert_close(o1, o2, **TOL)
        torch.testing.assert_close(s1, s2, **TOL)
    # head h reads kv head h // 3: head 4 must not depend on kv head 0
    k2 = k.clone()
    k2[:, :, 0] += 1.0
    o3, _ = _fns(kind)[1](q, k2, v, **extra, initial_state=h0)
    o1, _ = _fns(kind)[1](q, k, v, **extra, initial_state=h0)
    torch.testing.assert_close(o3[:, :, 3:], o1[:, :, 3:], **TOL)
    assert not torch.allclose(o3[:, :, :3], o1[:, :, :3])


@pytest.mark.parametrize("kind", ["g", "gk"])
@pytest.mark.parametrize("packed", [False, True])
def test_gradients_agree(kind, packed):
    Hq, Hkv, K, V = 2, 1, 3, 2
    if packed:
        B, T, cu, N = 1, 13, torch.tensor([0, 4, 13], dtype=torch.int64), 2
    else:
        B, T, cu, N = 2, 11, None, 2
    q, k, v, extra, h0 = _inputs(B, T, Hq, Hkv, K, V, kind, grad=True, n_state=N)
    leaves = [q, k, v, extra["g"], h0]
    chunk_fn, rec_fn = _fns(kind)
    do = torch.randn(B, T, Hq, V, dtype=D64)
    ds = torch.randn(N, Hq, K, V, dtype=D64)
    grads = []
    for fn, kw in ((chunk_fn, dict(chunk_size=4)), (rec_fn, {})):
        o, s = fn(q, k, v, **extra, initial_state=h0, output_final_state=True,
                  cu_seqlens=cu, **kw)
        grads.append(torch.autograd.grad((o * do).sum() + (s * ds).sum(), leaves))
    for a, b in zip(*grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **TOL)


def test_gradcheck_chunk_small():
    q, k, v, extra, h0 = _inputs(1, 5, 1, 1, 2, 2, "gk", grad=True, n_state=1)
    torch.autograd.gradcheck(
        lambda q, k, v, g, h0: A.chunk_gla_ref(q, k, v, g, initial_state=h0,
                                               output_final_state=True, chunk_size=2),
        (q, k, v, extra["g"], h0))


def test_float32_inputs_give_float32():
    q, k, v = (torch.randn(1, 9, 2, 4), torch.randn(1, 9, 2, 4), torch.randn(1, 9, 2, 4))
    g = F.logsigmoid(torch.randn(1, 9, 2))
    o, s = A.chunk_simple_gla_ref(q, k, v, g=g, output_final_state=True, chunk_size=4)
    o2, _ = A.fused_recurrent_simple_gla_ref(q.double(), k.double(), v.double(), g=g.double())
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    torch.testing.assert_close(o.double(), o2, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# validation of the scans

def _ok():
    q = torch.randn(1, 8, 4, 3, dtype=D64)
    k = torch.randn(1, 8, 2, 3, dtype=D64)
    v = torch.randn(1, 8, 2, 5, dtype=D64)
    return q, k, v


@pytest.mark.parametrize("fn", [A.chunk_simple_gla_ref, A.fused_recurrent_simple_gla_ref,
                                A.chunk_linear_attn_ref, A.fused_recurrent_linear_attn_ref])
@pytest.mark.parametrize("case,exc,name", [
    ("k_len", ValueError, "k"), ("k_dim", ValueError, "k"), ("heads", ValueError, "k"),
    ("v_heads", ValueError, "v"), ("q_3d", ValueError, "q"), ("q_int", TypeError, "q"),
    ("cu_start", ValueError, "cu_seqlens"), ("cu_end", ValueError, "cu_seqlens"),
    ("cu_decr", ValueError, "cu_seqlens"), ("cu_float", TypeError, "cu_seqlens"),
    ("cu_batch", ValueError, "cu_seqlens"), ("h0_shape", ValueError, "initial_state"),
    ("h0_shape_cu", ValueError, "initial_state"), ("h0_dtype", TypeError, "initial_state"),
])
def test_scan_validation(fn, case, exc, name):
    q, k, v = _ok()
    kw = {}
    if case == "k_len":
        k = k[:, :7]
    elif case == "k_dim":
        k = torch.randn(1, 8, 2, 4, dtype=D64)
    elif case == "heads":
        k, v = torch.randn(1, 8, 3, 3, dtype=D64), torch.randn(1, 8, 3, 5, dtype=D64)
    elif case == "v_heads":
        v = torch.randn(1, 8, 1, 5, dtype=D64)
    elif case == "q_3d":
        q = q[0]
    elif case == "q_int":
        q = q.long()
    elif case == "cu_start":
        kw["cu_seqlens"] = torch.tensor([1, 4, 8])
    elif case == "cu_end":
        kw["cu_seqlens"] = torch.tensor([0, 4, 7])
    elif case == "cu_decr":
        kw["cu_seqlens"] = torch.tensor([0, 5, 3, 8])
    elif case == "cu_float":
        kw["cu_seqlens"] = torch.tensor([0.0, 4.0, 8.0])
    elif case == "cu_batch":
        q, k, v = (torch.cat([x, x]) for x in (q, k, v))
        kw["cu_seqlens"] = torch.tensor([0, 4, 8])
    elif case == "h0_shape":
        kw["initial_state"] = torch.zeros(1, 2, 3, 5, dtype=D64)   # kv heads, not q heads
    elif case == "h0_shape_cu":
        kw["cu_seqlens"] = torch.tensor([0, 4, 8])
        kw["initial_state"] = torch.zeros(1, 4, 3, 5, dtype=D64)   # N = 2 sequences
    elif case == "h0_dtype":
        kw["initial_state"] = torch.zeros(1, 4, 3, 5, dtype=torch.float16)
    with pytest.raises(exc, match=name):
        fn(q, k, v, **kw)


def test_scan_validation_g_and_chunk_size():
    q, k, v = _ok()
    with pytest.raises(ValueError, match="g"):
        A.chunk_simple_gla_ref(q, k, v, g=torch.zeros(1, 8, 2, dtype=D64))   # kv heads
    with pytest.raises(ValueError, match="g_gamma"):
        A.chunk_simple_gla_ref(q, k, v, g_gamma=torch.zeros(2, dtype=D64))
    with pytest.raises(ValueError, match="g, g_gamma"):
        A.fused_recurrent_simple_gla_ref(q, k, v, g=torch.zeros(1, 8, 4, dtype=D64),
                                         g_gamma=torch.zeros(4, dtype=D64))
    with pytest.raises(ValueError, match="g"):
        A.chunk_gla_ref(q, k, v, torch.zeros(1, 8, 4, dtype=D64))   # needs [B, T, H, K]
    with pytest.raises(ValueError, match="g"):
        A.fused_recurrent_gla_ref(q, k, v, None)
    for bad in (0, 3, 48, -4, 2.0, True):
        with pytest.raises(ValueError, match="chunk_size"):
            A.chunk_simple_gla_ref(q, k, v, chunk_size=bad)
    for good in (1, 2, 32):
        A.chunk_gla_ref(q, k, v, torch.zeros(1, 8, 4, 3, dtype=D64), chunk_size=good)


# ---------------------------------------------------------------------------------------------
# SSA, SDSA

def test_ssa_orders_agree_and_by_hand():
    q = (torch.rand(2, 3, 2, 10, 4) > 0.5).to(D64)
    k = (torch.rand(2, 3, 2, 10, 4) > 0.5).to(D64)
    v = (torch.rand(2, 3, 2, 10, 5) > 0.5).to(D64)
    a = A.ssa_ref(q, k, v, scale=0.125)
    b = A.ssa_ref(q, k, v, scale=0.125, order="qk_first")
    assert a.shape == (2, 3, 2, 10, 5)
    torch.testing.assert_close(a, b, **TOL)
    # N = 2 tokens, D = 2: q k^T = [[1, 1], [0, 1]], (q k^T) v = [[1, 2], [0, 1]]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=D64)
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=D64)
    v = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=D64)
    want = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=D64) * 0.5
    for order in ("kv_first", "qk_first"):
        torch.testing.assert_close(A.ssa_ref(q, k, v, scale=0.5, order=order), want)
    with pytest.raises(ValueError, match="order"):
        A.ssa_ref(q, k, v, order="vq")
    with pytest.raises(ValueError, match="k"):
        A.ssa_ref(q, k[:, :1], v)
    with pytest.raises(ValueError, match="v"):
        A.ssa_ref(q, k, v[:1])


def test_sdsa_by_hand():
    T, B, H, N, D = 3, 1, 1, 2, 2
    q = torch.ones(T, B, H, N, D, dtype=D64)
    k = torch.ones(T, B, H, N, D, dtype=D64)
    v = torch.zeros(T, B, H, N, D, dtype=D64)
    # channel 0: sum_N k*v = 2 every step -> H = 1 >= 0.5 fires each step (hard reset to 0);
    # channel 1: sum = 0.5 on token 0 only -> H = 0.25, 0.375, 0.4375: never fires
    v[:, :, :, :, 0] = 1.0
    v[:, :, :, 0, 1] = 0.5
    out = A.sdsa_ref(q, k, v)
    want = torch.zeros(T, B, H, N, D, dtype=D64)
    want[..., 0] = 1.0
    torch.testing.assert_close(out, want)
    # channel 1 crosses 0.5 with a lower threshold at step 1: 0.25, 0.375 -> threshold 0.3
    out = A.sdsa_ref(q, k, v, v_threshold=0.3)
    assert out[:, 0, 0, 0, 1].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="q"):
        A.sdsa_ref(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="v"):
        A.sdsa_ref(q, k, v[..., :1])


def test_sdsa_gradient_flows():
    q, k, v = (torch.rand(4, 2, 2, 5, 3, dtype=D64, requires_grad=True) for _ in range(3))
    A.sdsa_ref(q, k, v).sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))
    assert k.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# RWKV-4

def _wkv_naive(time_decay, time_first, k, v):
    w, u = -time_decay.exp(), time_first
    B, T, C = k.shape
    out = torch.zeros(B, T, C, dtype=D64)
    for t in range(T):
        num = (u + k[:, t]).exp() * v[:, t]
        den = (u + k[:, t]).exp()
        for i in range(t):
            e = ((t - 1 - i) * w + k[:, i]).exp()
            num = num + e * v[:, i]
            den = den + e
        out[:, t] = num / den
    return out


def test_rwkv4_matches_naive():
    B, T, C = 2, 12, 5
    td, tf = torch.randn(C, dtype=D64), torch.randn(C, dtype=D64)
    k, v = torch.randn(B, T, C, dtype=D64), torch.randn(B, T, C, dtype=D64)
    torch.testing.assert_close(A.rwkv4_wkv_ref(td, tf, k, v), _wkv_naive(td, tf, k, v), **TOL)
    assert A.rwkv4_wkv_ref(td, tf, k[:, :1], v[:, :1]).shape == (B, 1, C)
    torch.testing.assert_close(A.rwkv4_wkv_ref(td, tf, k[:, :1], v[:, :1]), v[:, :1], **TOL)


def test_rwkv4_gradients_match_naive():
    B, T, C = 1, 6, 3
    args = [torch.randn(C, dtype=D64), torch.randn(C, dtype=D64),
            torch.randn(B, T, C, dtype=D64), torch.randn(B, T, C, dtype=D64)]
    for x in args:
        x.requires_grad_(True)
    g1 = torch.autograd.grad(A.rwkv4_wkv_ref(*args).square().sum(), args)
    g2 = torch.autograd.grad(_wkv_naive(*args).square().sum(), args)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **TOL)


def test_rwkv4_long_and_large_is_finite():
    B, T, C = 1, 2000, 4
    td = torch.tensor([-5.0, 0.0, 3.0, 8.0])      # w from ~-0.007 (slow) to ~-3000 (fast)
    tf = torch.tensor([0.0, 50.0, -50.0, 10.0])
    k = torch.randn(B, T, C) * 60                 # exp(k) alone overflows float32
    v = torch.randn(B, T, C)
    y = A.rwkv4_wkv_ref(td, tf, k, v)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # wkv is a convex combination of the v's seen so far
    assert (y.abs() <= v.abs().cummax(1).values + 1e-4).all()


def test_rwkv4_validation():
    k = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="time_decay"):
        A.rwkv4_wkv_ref(torch.zeros(3), torch.zeros(4), k, k)
    with pytest.raises(ValueError, match="time_first"):
        A.rwkv4_wkv_ref(torch.zeros(4), torch.zeros(1, 4), k, k)
    with pytest.raises(ValueError, match="v"):
        A.rwkv4_wkv_ref(torch.zeros(4), torch.zeros(4), k, k[:, :2])
    with pytest.raises(ValueError, match="k"):
        A.rwkv4_wkv_ref(torch.zeros(4), torch.zeros(4), k[0], k[0])
    with pytest.raises(TypeError, match="k"):
        A.rwkv4_wkv_ref(torch.zeros(4), torch.zeros(4), k.long(), k)


# ---------------------------------------------------------------------------------------------
# sliding window

@pytest.mark.parametrize("window,T", [(1, 5), (3, 9), (9, 9), (50, 9)])
def test_sliding_window_equals_banded_full_attention(window, T):
    B, H, Dh, Dv = 2, 3, 4, 5
    q, k = torch.randn(B, T, H, Dh, dtype=D64), torch.randn(B, T, H, Dh, dtype=D64)
    v = torch.randn(B, T, H, Dv, dtype=D64)
    mask = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        for j in range(max(0, t - window + 1), t + 1):
            mask[t, j] = True
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                          v.transpose(1, 2), attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(A.sliding_window_attn_ref(q, k, v, window), want, **TOL)
    want2 = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), attn_mask=mask,
                                           scale=0.3).transpose(1, 2)
    torch.testing.assert_close(A.sliding_window_attn_ref(q, k, v, window, scale=0.3), want2,
                               **TOL)
    if window >= T:      # a window covering everything is plain causal attention
        causal = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                v.transpose(1, 2),
                                                is_causal=True).transpose(1, 2)
        torch.testing.assert_close(A.sliding_window_attn_ref(q, k, v, window), causal, **TOL)


def test_sliding_window_validation():
    q = torch.randn(1, 4, 2, 3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            A.sliding_window_attn_ref(q, q, q, bad)
    with pytest.raises(ValueError, match="k"):
        A.sliding_window_attn_ref(q, q[:, :3], q, 2)
    with pytest.raises(ValueError, match="v"):
        A.sliding_window_attn_ref(q, q, q[:, :, :1], 2)
    with pytest.raises(ValueError, match="q"):
        A.sliding_window_attn_ref(q[0], q[0], q[0], 2)
