"""Linear-attention scans (spikeops.ops.scan) on the CPU against spikeops.ref.attention.

Every output, final state and gradient (q, k, v, g / g_gamma, initial_state) of the kernel
is compared with the float64 reference; the kernel's error must stay within a small factor
of the same-dtype (float32 arithmetic) reference's own error.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeops import ops
from spikeops.ref import attention as A

from conftest import skip_unless

native = skip_unless("extension")

KINDS = [None, "g", "g_gamma", "gk"]


def fns(kind, chunk):
    """(kernel function, reference function) of a decay kind and algorithm."""
    if kind == "gk":
        pair = (ops.chunk_gla, A.chunk_gla_ref) if chunk else (ops.fused_recurrent_gla,
                                                              A.fused_recurrent_gla_ref)
    elif kind is None:
        pair = ((ops.chunk_linear_attn, A.chunk_linear_attn_ref) if chunk else
                (ops.fused_recurrent_linear_attn, A.fused_recurrent_linear_attn_ref))
    else:
        pair = ((ops.chunk_simple_gla, A.chunk_simple_gla_ref) if chunk else
                (ops.fused_recurrent_simple_gla, A.fused_recurrent_simple_gla_ref))
    return pair


def make(B, T, Hq, Hkv, K, V, kind, dtype=torch.float32, n_state=None, decay_scale=1.0):
    q = torch.randn(B, T, Hq, K).to(dtype)
    k = torch.randn(B, T, Hkv, K).to(dtype)
    v = torch.randn(B, T, Hkv, V).to(dtype)
    dec = {}
    if kind == "g":
        dec["g"] = F.logsigmoid(torch.randn(B, T, Hq) + 2) * decay_scale
    elif kind == "g_gamma":
        dec["g_gamma"] = -torch.rand(Hq) * 0.5 * decay_scale
    elif kind == "gk":
        dec["g"] = F.logsigmoid(torch.randn(B, T, Hq, K) + 2) * decay_scale
    h0 = None if n_state is None else torch.randn(n_state, Hq, K, V)
    return q, k, v, dec, h0


def run(fn, q, k, v, dec, h0, final, go, gs, cast=None, **kw):
    """o, final state and the gradients of <o, go> + <final, gs> w.r.t. every input."""
    xs = {"q": q, "k": k, "v": v, **dec}
    if h0 is not None:
        xs["initial_state"] = h0
    leaves = {n: (t.to(cast) if cast else t).detach().clone().requires_grad_()
              for n, t in xs.items()}
    o, s = fn(**leaves, output_final_state=final, **kw)
    if not final:
        assert s is None
    loss = (o.to(go.dtype) * go).sum()
    if final:
        loss = loss + (s.to(gs.dtype) * gs).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return o, s, dict(zip(leaves, grads))


def assert_error_within(name, out, same_dtype_ref, ref64, factor=3.0, ref_err_floor=0.0):
    """The kernel's max error against float64 is at most `factor` x that of the same-dtype
    reference (or `ref_err_floor`, if larger), plus a few ulps of the result's scale (for results
    the reference gets nearly exact)."""
    assert out.dtype == same_dtype_ref.dtype, (name, out.dtype, same_dtype_ref.dtype)
    assert out.shape == ref64.shape, (name, out.shape, ref64.shape)
    assert torch.isfinite(out).all(), f"{name}: NaN/Inf (an unwritten element?)"
    err = (out.double() - ref64).abs().max().item()
    err_ref = (same_dtype_ref.double() - ref64).abs().max().item()
    # float32 accumulation over up to T steps: a few ulps of the largest magnitude
    ulp = 4 * torch.finfo(torch.float32).eps * max(1.0, ref64.abs().max().item())
    if out.dtype != torch.float32 and out.dtype != torch.float64:
        ulp = max(ulp, torch.finfo(out.dtype).eps * ref64.abs().max().item())
    assert err <= factor * max(err_ref, ref_err_floor) + ulp, (
        f"{name}: kernel error {err:.3g} vs reference {err_ref:.3g} (floor {ref_err_floor:.3g})")


def compare(kind, chunk, shape, dtype=torch.float32, with_h0=True, final=True, cu=None,
            decay_scale=1.0, chunk_size=None):
    B, T, Hq, Hkv, K, V = shape
    N = B if cu is None else len(cu) - 1
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, kind, dtype, N if with_h0 else None,
                            decay_scale)
    go = torch.randn(B, T, Hq, V).to(dtype).float()
    gs = torch.randn(N, Hq, K, V)
    kw = {}
    if chunk:
        kw["chunk_size"] = chunk_size or 64
    if cu is not None:
        kw["cu_seqlens"] = torch.tensor(cu, dtype=torch.int32)
    fn, ref_fn = fns(kind, chunk)
    got = run(fn, q, k, v, dec, h0, final, go, gs, **kw)
    same = run(ref_fn, q, k, v, dec, h0, final, go, gs, **kw)
    exact = run(ref_fn, q, k, v, dec, h0, final, go.double(), gs.double(),
                cast=torch.float64, **kw)
    assert got[0].dtype == dtype
    assert_error_within("o", got[0], same[0], exact[0])
    if final:
        assert got[1].dtype == torch.float32 and got[1].shape == (N, Hq, K, V)
        assert_error_within("final_state", got[1], same[1], exact[1])
    assert set(got[2]) == set(exact[2])
    floor = {}
    if kind == "g_gamma":
        # g_gamma's gradient is the sum of B * T per-step gradients (dg_t, themselves
        # reverse cumulative sums, so their errors are correlated): its error is the sum
        # of theirs, which in the reference may cancel by luck. The per-step errors are
        # held to 3x the reference's (kind "g"); here the reference error is at least the
        # sum of its per-step errors' absolute values (per head), so the kernel's sum is
        # held to 3x the worst case of adding up the reference's own errors.
        steps = {"g": dec["g_gamma"].expand(B, T, Hq).contiguous()}
        same_g = run(ref_fn, q, k, v, steps, h0, final, go, gs, **kw)[2]["g"]
        exact_g = run(ref_fn, q, k, v, steps, h0, final, go.double(), gs.double(),
                      cast=torch.float64, **kw)[2]["g"]
        err_t = (same_g.double() - exact_g).reshape(-1, Hq)
        floor["g_gamma"] = err_t.abs().sum(0).max().item()
    for name in exact[2]:
        assert_error_within("d" + name, got[2][name], same[2][name], exact[2][name],
                            ref_err_floor=floor.get(name, 0.0))
    return got


SHAPES = [  # (B, T, Hq, Hkv, K, V)
    (1, 1, 1, 1, 16, 16),     # T = 1
    (2, 37, 4, 2, 20, 19),    # GQA 2:1, K / V not multiples of 16, T < chunk
    (2, 130, 2, 2, 64, 64),   # T not a multiple of the chunk
    (1, 65, 3, 1, 7, 33),     # GQA 3:1, tiny K
    (1, 128, 2, 2, 32, 48),   # whole chunks
]


@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_chunk_matches_reference(cpu_isa, kind, shape):
    compare(kind, True, shape)


@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1, 2, 1, 16, 16), (2, 9, 4, 2, 20, 19),
                                   (1, 40, 2, 2, 64, 64)])
def test_recurrent_matches_reference(cpu_isa, kind, shape):
    compare(kind, False, shape)


@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 128, 512])
def test_chunk_sizes(kind, chunk_size):
    # 512 runs as 256 chunks: the same result up to rounding
    compare(kind, True, (1, 300, 2, 1, 24, 40), chunk_size=chunk_size)


@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [True, False])
def test_bf16(cpu_isa, kind, chunk):
    got = compare(kind, chunk, (2, 70, 4, 2, 32, 24), dtype=torch.bfloat16)
    for name in ("q", "k", "v"):
        assert got[2][name].dtype == torch.bfloat16


@native
@pytest.mark.parametrize("kind", KINDS)
def test_float16(kind):
    compare(kind, True, (1, 50, 2, 2, 16, 16), dtype=torch.float16)


@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [True, False])
@pytest.mark.parametrize("with_h0", [False, True])
def test_cu_seqlens(cpu_isa, kind, chunk, with_h0):
    lens = [5, 1, 70, 0, 9, 64]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    compare(kind, chunk, (1, cu[-1], 4, 2, 20, 12), cu=cu, with_h0=with_h0)


@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("final", [False, True])
def test_without_states(kind, final):
    compare(kind, True, (2, 50, 2, 2, 16, 16), with_h0=False, final=final)


@native
@pytest.mark.parametrize("kind", ["g", "g_gamma", "gk"])
def test_strong_decay(cpu_isa, kind):
    # log-decays around -20 per step: exp(-b) would overflow; the kernel never forms it
    compare(kind, True, (1, 100, 2, 2, 16, 16), decay_scale=200.0)


@native
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_equals_chunk(kind):
    B, T, Hq, Hkv, K, V = 2, 33, 2, 1, 16, 8
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, kind, n_state=B)
    (c_fn, _), (r_fn, _) = fns(kind, True), fns(kind, False)
    o1, s1 = c_fn(q, k, v, **dec, initial_state=h0, output_final_state=True, chunk_size=8)
    o2, s2 = r_fn(q, k, v, **dec, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o1, o2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-4)


@native
def test_noncontiguous_and_threads():
    B, T, Hq, Hkv, K, V = 2, 70, 4, 2, 16, 16
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, "g", n_state=B)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert not qt.is_contiguous()
    o1, s1 = ops.chunk_simple_gla(qt, k, v, **dec, initial_state=h0, output_final_state=True)
    o2, s2 = ops.chunk_simple_gla(q, k, v, **dec, initial_state=h0, output_final_state=True)
    assert torch.equal(o1, o2) and torch.equal(s1, s2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        o3, s3 = ops.chunk_simple_gla(q, k, v, **dec, initial_state=h0,
                                      output_final_state=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(o1, o3) and torch.equal(s1, s3)  # deterministic


@native
def test_default_scale():
    q, k, v, dec, _ = make(1, 20, 2, 2, 16, 8, "g")
    o1, _ = ops.chunk_simple_gla(q, k, v, **dec)
    o2, _ = ops.chunk_simple_gla(q, k, v, **dec, scale=0.25)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)


@native
def test_empty_sequence():
    q, k, v, dec, h0 = make(2, 0, 2, 2, 8, 4, "g", n_state=2)
    o, s = ops.chunk_simple_gla(q, k, v, **dec, initial_state=h0, output_final_state=True)
    assert o.shape == (2, 0, 2, 4)
    torch.testing.assert_close(s, h0, rtol=0, atol=0)  # nothing happened to the state


@native
@pytest.mark.parametrize("kind", KINDS)
def test_float64_falls_back_to_reference(kind):
    q, k, v, dec, h0 = make(1, 20, 2, 2, 8, 4, kind, dtype=torch.float64, n_state=1)
    dec = {n: t.double() for n, t in dec.items()}
    fn, ref_fn = fns(kind, True)
    o1, s1 = fn(q, k, v, **dec, initial_state=h0, output_final_state=True)
    o2, s2 = ref_fn(q, k, v, **dec, initial_state=h0, output_final_state=True)
    assert o1.dtype == torch.float64
    assert torch.equal(o1, o2) and torch.equal(s1, s2)


# ---- torch.library / torch.compile ----------------------------------------------------------

@native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk_size", [0, 16])
def test_opcheck(kind, chunk_size):
    B, T, Hq, Hkv, K, V = 1, 21, 2, 1, 8, 6
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, kind, n_state=B)
    g = dec.get("g") if kind == "g" else None
    g_gamma = dec.get("g_gamma")
    gk = dec.get("g") if kind == "gk" else None
    req = lambda t: None if t is None else t.clone().requires_grad_()  # noqa: E731
    args = (req(q), req(k), req(v), req(g), req(g_gamma), req(gk), 0.3, req(h0), None,
            chunk_size, True)
    torch.library.opcheck(torch.ops.spikeops.linear_scan_fwd.default, args)
    cu = torch.tensor([0, 5, 5, 21], dtype=torch.int64)
    h0n = torch.randn(3, Hq, K, V)
    args = (q, k, v, g, g_gamma, gk, 0.3, h0n, cu, chunk_size, False)
    torch.library.opcheck(torch.ops.spikeops.linear_scan_fwd.default, args)
    do = torch.randn(B, T, Hq, V)
    dht = torch.randn(B, Hq, K, V)
    args = (do, dht, q, k, v, g, g_gamma, gk, 0.3, h0, None, chunk_size)
    torch.library.opcheck(torch.ops.spikeops.linear_scan_bwd.default, args)


@native
def test_compile_fullgraph():
    q, k, v, dec, h0 = make(2, 40, 2, 1, 16, 8, "g", n_state=2)

    def f(q, k, v, g, h0):
        o, s = ops.chunk_simple_gla(q, k, v, g=g, initial_state=h0, output_final_state=True,
                                    chunk_size=16)
        return o.sum(-1), s

    leaves = [x.clone().requires_grad_() for x in (q, k, v, dec["g"], h0)]
    y, s = torch.compile(f, fullgraph=True)(*leaves)
    (y.sum() + s.square().sum()).backward()
    eager = [x.clone().requires_grad_() for x in (q, k, v, dec["g"], h0)]
    y_e, s_e = f(*eager)
    (y_e.sum() + s_e.square().sum()).backward()
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(s, s_e)
    for a, b in zip(leaves, eager):
        torch.testing.assert_close(a.grad, b.grad)


# ---- bad input ------------------------------------------------------------------------------

def _bad_cases():
    B, T, H, K, V = 2, 10, 4, 8, 6
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    g = torch.zeros(B, T, H)
    q1 = q[:1]
    k1, v1 = k[:1], v[:1]
    cu = lambda *x: torch.tensor(x, dtype=torch.int32)  # noqa: E731
    S = ops.chunk_simple_gla
    return [
        (S, (q, k[:, :5], v), {}, ValueError, "^k: expected shape"),
        (S, (q, k[..., :4], v), {}, ValueError, "^k: expected shape"),
        (S, (q, k[:, :, :3], v[:, :, :3]), {}, ValueError,
         r"^k: q heads \(4\) must be a multiple of k/v heads \(3\)"),
        (S, (q, k, v[:, :, :2]), {}, ValueError, "^v: expected shape"),
        (S, (q[0], k, v), {}, ValueError, "^q: expected 4 dims"),
        (S, (q, k.to(torch.int32), v), {}, TypeError, "^k: expected float32"),
        (S, (q, k.bfloat16(), v), {}, TypeError, "^k: dtype"),
        (S, (q, k, v), dict(g=g[:, :5]), ValueError, r"^g: expected shape \[2, 10, 4\]"),
        (S, (q, k, v), dict(g_gamma=torch.zeros(3)), ValueError,
         r"^g_gamma: expected shape \[4\]"),
        (S, (q, k, v), dict(g=g, g_gamma=torch.zeros(4)), ValueError,
         "^g, g_gamma: give at most one"),
        (S, (q, k, v), dict(g=g.long()), TypeError, "^g: expected a floating-point"),
        (ops.chunk_gla, (q, k, v, g), {}, ValueError, r"^g: expected shape \[2, 10, 4, 8\]"),
        (ops.chunk_gla, (q, k, v, None), {}, ValueError, "^g: required for GLA"),
        (S, (q, k, v), dict(chunk_size=48), ValueError, "^chunk_size: expected a power of two"),
        (S, (q, k, v), dict(chunk_size=0), ValueError, "^chunk_size: expected a power of two"),
        (S, (q, k, v), dict(scale=float("nan")), ValueError, "^scale: expected a finite"),
        (S, (q, k, v), dict(initial_state=torch.zeros(2, 4, 8, 5)), ValueError,
         r"^initial_state: expected shape \[N, H, K, V\]"),
        (S, (q, k, v), dict(initial_state=torch.zeros(2, 4, 8, 6).bfloat16()), TypeError,
         "^initial_state: expected float32 or float64"),
        (S, (q, k, v), dict(cu_seqlens=cu(0, 10)), ValueError,
         "^cu_seqlens: packed sequences need batch size 1"),
        (S, (q1, k1, v1), dict(cu_seqlens=cu(0, 4, 9)), ValueError,
         "^cu_seqlens: must end at T = 10"),
        (S, (q1, k1, v1), dict(cu_seqlens=cu(1, 10)), ValueError, "^cu_seqlens: must start"),
        (S, (q1, k1, v1), dict(cu_seqlens=cu(0, 6, 4, 10)), ValueError,
         "^cu_seqlens: must be non-decreasing"),
        (S, (q1, k1, v1), dict(cu_seqlens=torch.tensor([0.0, 10.0])), TypeError,
         "^cu_seqlens: expected an integer tensor"),
        (S, (q1, k1, v1), dict(cu_seqlens=cu(10)), ValueError,
         r"^cu_seqlens: expected 1 dim \[N \+ 1\]"),
        (S, (q1, k1, v1), dict(cu_seqlens=cu(0, 4, 10), initial_state=torch.zeros(1, 4, 8, 6)),
         ValueError, r"^initial_state: expected shape \[N, H, K, V\] = \[2, 4, 8, 6\]"),
    ]


@native
@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs(case):
    fn, args, kw, exc, match = _bad_cases()[case]
    with pytest.raises(exc, match=match):
        fn(*args, **kw)


@native
@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_fake(case):
    """The fake implementation raises the C++ op's error (cu_seqlens values excepted: they
    are data, not metadata)."""
    fn, args, kw, exc, match = _bad_cases()[case]
    if "cu_seqlens: must" in match or fn is ops.chunk_gla and args[3] is None:
        pytest.skip("checked on values, or before the op")
    if "chunk_size" in match:
        pytest.skip("checked by the Python wrapper before the op")
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = lambda t: mode.from_tensor(t) if isinstance(t, torch.Tensor) else t  # noqa: E731
        fargs = tuple(fake(a) for a in args)
        fkw = {n: fake(t) for n, t in kw.items()}
        with pytest.raises(exc, match=match):
            fn(*fargs, **fkw)


@native
def test_bad_backward_inputs():
    q, k, v = torch.randn(1, 5, 2, 4), torch.randn(1, 5, 2, 4), torch.randn(1, 5, 2, 3)
    with pytest.raises(ValueError, match="^grad_o: expected shape"):
        torch.ops.spikeops.linear_scan_bwd(torch.randn(1, 5, 2, 4), None, q, k, v, None, None,
                                           None, 1.0, None, None, 64)
    with pytest.raises(ValueError, match="^grad_final_state: expected shape"):
        torch.ops.spikeops.linear_scan_bwd(torch.randn(1, 5, 2, 3), torch.randn(1, 2, 4, 4),
                                           q, k, v, None, None, None, 1.0, None, None, 64)
