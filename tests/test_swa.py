"""Sliding-window causal softmax attention (spikeops.ops.sliding_window_attn) against
spikeops.ref.attention.sliding_window_attn_ref: outputs, all gradients (q, k, v, and lse's
through the raw op), every CPU ISA, fp32 / bf16 / fp16, awkward shapes, bad inputs,
opcheck, torch.compile; CUDA tests (marked cuda) against the float64 reference."""
from __future__ import annotations

import pytest
import torch

import spikeops
from spikeops.ops import sliding_window_attn
from spikeops.ref.attention import sliding_window_attn_ref

from conftest import skip_unless

native = skip_unless("extension")

# (B, T, H, D, Dv, window): T = 1, window 1, window >= T, T around the 64-row tile,
# D / Dv not multiples of 8 or 16, windows spanning several tiles and not tile-aligned.
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (1, 1, 2, 5, 3, 4),        # T = 1, window > T
    (2, 17, 3, 7, 5, 1),       # window 1: each query sees only itself
    (1, 64, 1, 16, 16, 64),    # exactly one tile
    (1, 65, 2, 33, 17, 64),    # one row past a tile
    (2, 130, 2, 24, 40, 7),
    (1, 200, 1, 64, 64, 1000),  # window >= T: full causal attention
    (1, 300, 2, 31, 65, 129),  # window > tile, not tile-aligned
    (1, 257, 1, 80, 96, 64),
    (2, 129, 3, 64, 64, 128),
]
GRAD_SHAPES = [SHAPES[i] for i in (1, 2, 4, 5, 6, 7)]
EPS = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}


def inputs(B, T, H, D, Dv, dtype=torch.float32, device="cpu", mag=1.0):
    q = (torch.randn(B, T, H, D) * mag).to(device=device, dtype=dtype)
    k = (torch.randn(B, T, H, D) * mag).to(device=device, dtype=dtype)
    v = torch.randn(B, T, H, Dv).to(device=device, dtype=dtype)
    return q, k, v


def assert_error_within(out, same_dtype_ref, ref64, magnitude, factor=2.0, ulps=4.0):
    """The kernel's max error against float64 is at most `factor` x that of PyTorch's
    same-dtype reference, plus `ulps` units of roundoff of the problem's `magnitude` (for
    results that are exact in the reference, e.g. a gradient that cancels to 0: window 1)."""
    assert out.dtype == same_dtype_ref.dtype and out.shape == ref64.shape
    assert out.device == ref64.device
    assert torch.isfinite(out).all(), "kernel output has NaN/Inf (an unwritten element?)"
    err = (out.double() - ref64).abs().max().item() if out.numel() else 0.0
    err_ref = (same_dtype_ref.double() - ref64).abs().max().item() if out.numel() else 0.0
    floor = ulps * EPS[out.dtype] * max(1.0, magnitude)
    assert err <= factor * err_ref + floor, f"kernel error {err:.3g} vs reference {err_ref:.3g}"


def grads(fn, xs, g):
    xs = [x.detach().clone().requires_grad_() for x in xs]
    out = fn(*xs)
    out.backward(g)
    return out, [x.grad for x in xs]


def check_forward(q, k, v, window, scale=None):
    out = sliding_window_attn(q, k, v, window, scale)
    assert out.dtype == q.dtype and out.shape == (*q.shape[:3], v.shape[3])
    same = sliding_window_attn_ref(q, k, v, window, scale)
    exact = sliding_window_attn_ref(q.double(), k.double(), v.double(), window, scale)
    assert_error_within(out, same, exact.to(out.device), exact.abs().max().item()
                        if exact.numel() else 1.0)


def check_backward(q, k, v, window, scale=None, dtype_factor=2.0):
    g = torch.randn(*q.shape[:3], v.shape[3]).to(device=q.device, dtype=q.dtype)
    fn = lambda a, b, c: sliding_window_attn(a, b, c, window, scale)  # noqa: E731
    rf = lambda a, b, c: sliding_window_attn_ref(a, b, c, window, scale)  # noqa: E731
    out, got = grads(fn, (q, k, v), g)
    _, same = grads(rf, (q, k, v), g)
    _, exact = grads(rf, [x.double() for x in (q, k, v)], g.double())
    mag = max([1.0] + [e.abs().max().item() for e in exact if e.numel()])
    # The backward recomputes p = exp(s - lse) from the fp32 lse (flash-attention's design):
    # lse's rounding, eps * |lse|, is a relative error of every p that the same-dtype
    # reference (softmax from s - rowmax) does not make. It matters only for large scores
    # (|lse| of ~100), and it is fp32 roundoff whatever the input dtype.
    sc = q.shape[3] ** -0.5 if scale is None else scale
    lse = _lse_ref(q.double().cpu(), k.double().cpu(), window, sc) if q.numel() else None
    lse_max = lse.abs().max().item() if lse is not None and lse.numel() else 0.0
    ulps = 4.0 + 2.0 * lse_max * EPS[torch.float32] / EPS[q.dtype]
    for name, a, b, e in zip("qkv", got, same, exact):
        assert a.dtype == q.dtype and a.shape == e.shape, name
        try:
            assert_error_within(a, b, e, mag, factor=dtype_factor, ulps=ulps)
        except AssertionError as err:
            raise AssertionError(f"d{name}: {err}") from None


# ---- forward ------------------------------------------------------------------------------

@native
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_fp32(cpu_isa, shape):
    B, T, H, D, Dv, w = shape
    check_forward(*inputs(B, T, H, D, Dv), w)


@native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [SHAPES[i] for i in (1, 2, 4, 7, 9)])
def test_forward_half(cpu_isa, dtype, shape):
    B, T, H, D, Dv, w = shape
    check_forward(*inputs(B, T, H, D, Dv, dtype), w)


@native
@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_forward_scale_and_large_scores(cpu_isa, scale):
    # Scores of several hundred: the online softmax must rescale without overflow.
    q, k, v = inputs(2, 150, 2, 20, 12, mag=6.0)
    check_forward(q, k, v, 70, scale)


@native
def test_forward_noncontiguous(cpu_isa):
    q, k, v = (x.transpose(1, 2) for x in inputs(2, 3, 90, 16, 16))  # [B, T, H, D] views
    assert not q.is_contiguous()
    check_forward(q, k, v, 33)


@native
def test_forward_matches_full_causal_attention():
    # window >= T is plain causal attention: compare with torch's SDPA as a second oracle.
    q, k, v = inputs(2, 77, 3, 24, 24)
    out = sliding_window_attn(q, k, v, 77)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


@native
def test_huge_window_is_full_causal(cpu_isa):
    q, k, v = inputs(1, 70, 2, 8, 8)
    assert torch.equal(sliding_window_attn(q, k, v, 2 ** 40), sliding_window_attn(q, k, v, 70))


@native
def test_empty_and_zero_dims():
    for B, T, H in [(0, 5, 2), (2, 0, 2), (2, 5, 0)]:
        q, k, v = inputs(B, T, H, 8, 6)
        assert sliding_window_attn(q, k, v, 3).shape == (B, T, H, 6)
    # D = 0: every score is 0, so o is the mean of the window's values.
    q, k, v = inputs(2, 20, 2, 0, 5)
    check_forward(q, k, v, 4, scale=1.0)
    assert sliding_window_attn(q, k, v, 4).shape == (2, 20, 2, 5)
    # Dv = 0: an empty output, and zero gradients for q and k.
    q, k, v = inputs(1, 10, 1, 4, 0)
    q.requires_grad_()
    k.requires_grad_()
    out = sliding_window_attn(q, k, v, 3)
    assert out.shape == (1, 10, 1, 0)
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q)) and torch.equal(k.grad, torch.zeros_like(k))


# ---- backward -----------------------------------------------------------------------------

@native
@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_backward_fp32(cpu_isa, shape):
    B, T, H, D, Dv, w = shape
    check_backward(*inputs(B, T, H, D, Dv), w)


@native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [GRAD_SHAPES[i] for i in (1, 2, 4, 5)])
def test_backward_half(cpu_isa, dtype, shape):
    B, T, H, D, Dv, w = shape
    check_backward(*inputs(B, T, H, D, Dv, dtype), w)


@native
def test_backward_large_scores(cpu_isa):
    check_backward(*inputs(1, 140, 2, 16, 8, mag=5.0), 50, 0.5)


@native
def test_backward_noncontiguous_grad(cpu_isa):
    q, k, v = inputs(1, 100, 2, 12, 12)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    out = sliding_window_attn(*xs, 30)
    g = torch.randn(1, 2, 100, 12).transpose(1, 2)  # non-contiguous upstream gradient
    out.backward(g)
    rs = [x.double().requires_grad_() for x in (q, k, v)]
    sliding_window_attn_ref(*rs, 30).backward(g.double())
    for a, b in zip(xs, rs):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-5)


def _lse_ref(q, k, window, scale):
    T, D = q.shape[1], q.shape[3]
    s = torch.einsum("bthd,bshd->bhts", q, k) * scale
    t = torch.arange(T)
    off = t.view(-1, 1) - t.view(1, -1)
    return s.masked_fill(~((off >= 0) & (off < window)), float("-inf")).logsumexp(-1)


@native
def test_lse_and_its_gradient(cpu_isa):
    # The raw op returns lse; a loss that uses it gives q and k a gradient through it.
    q, k, v = inputs(2, 150, 2, 20, 10)
    w, scale = 70, 20 ** -0.5
    go, gl = torch.randn(2, 150, 2, 10), torch.randn(2, 2, 150)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    o, lse = torch.ops.spikeops.swa_fwd.default(*xs, w, scale)
    ((o * go).sum() + (lse * gl).sum()).backward()
    rs = [x.double().requires_grad_() for x in (q, k, v)]
    o64 = sliding_window_attn_ref(*rs, w, scale)
    lse64 = _lse_ref(rs[0], rs[1], w, scale)
    ((o64 * go.double()).sum() + (lse64 * gl.double()).sum()).backward()
    torch.testing.assert_close(lse.double(), lse64.detach(), rtol=1e-5, atol=1e-5)
    for name, a, b in zip("qkv", xs, rs):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-5, msg=name)


@native
def test_backward_deterministic_across_threads():
    q, k, v = inputs(2, 300, 3, 32, 24)
    g = torch.randn(2, 300, 3, 24)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            out, gr = grads(lambda a, b, c: sliding_window_attn(a, b, c, 100), (q, k, v), g)
            results.append([out] + gr)
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@native
def test_backward_schemes_bit_identical(cpu_isa):
    # With >= 2 heads per thread the CPU tasks own whole heads (forward: k, v converted
    # once; backward: one key-major sweep, dq summed per head), with fewer they own tiles
    # (backward: a query-tile pass and a key-tile pass): the same sums in the same order,
    # so one head's results must not depend on how many heads come with it.
    q, k, v = inputs(1, 200, 6, 24, 20)
    g = torch.randn(1, 200, 6, 20)
    fn = lambda a, b, c: sliding_window_attn(a, b, c, 90)  # noqa: E731
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out, full = grads(fn, (q, k, v), g)                   # 6 heads: per-head tasks
        for h in (0, 5):
            sl = slice(h, h + 1)
            o1, one = grads(fn, (q[:, :, sl], k[:, :, sl], v[:, :, sl]), g[:, :, sl])  # tiles
            for a, b in zip([out] + full, [o1] + one):
                assert torch.equal(a[:, :, sl], b)
    finally:
        torch.set_num_threads(before)


# ---- errors ---------------------------------------------------------------------------------

@native
def test_bad_inputs():
    q, k, v = inputs(1, 10, 2, 8, 6)
    for w in (0, -3, True, 2.5, None):
        with pytest.raises(ValueError, match="window: expected an int >= 1"):
            sliding_window_attn(q, k, v, w)
    with pytest.raises(ValueError, match="window: expected an int >= 1"):
        torch.ops.spikeops.swa_fwd.default(q, k, v, 0, 1.0)
    with pytest.raises(ValueError, match="q: expected 4 dims"):
        sliding_window_attn(q[0], k, v, 3)
    with pytest.raises(ValueError, match="k: expected the shape of q"):
        sliding_window_attn(q, k[:, :9], v, 3)
    with pytest.raises(ValueError, match="v: expected shape"):
        sliding_window_attn(q, k, v[:, :, :1], 3)
    with pytest.raises(ValueError, match="scale: expected a finite number"):
        sliding_window_attn(q, k, v, 3, float("nan"))
    with pytest.raises(TypeError, match="q: expected float32, bfloat16 or float16"):
        sliding_window_attn(q.double(), k.double(), v.double(), 3)
    with pytest.raises(TypeError, match="k: expected float32, bfloat16 or float16"):
        sliding_window_attn(q, k.int(), v, 3)
    with pytest.raises(TypeError, match="v: dtype .*differs from q.s"):
        sliding_window_attn(q, k, v.bfloat16(), 3)
    o, lse = torch.ops.spikeops.swa_fwd.default(q, k, v, 3, 0.5)
    bwd = torch.ops.spikeops.swa_bwd.default
    with pytest.raises(ValueError, match="lse: expected shape"):
        bwd(torch.ones_like(o), None, q, k, v, o, lse[:, :1], 3, 0.5)
    with pytest.raises(TypeError, match="lse: expected dtype"):
        bwd(torch.ones_like(o), None, q, k, v, o, lse.double(), 3, 0.5)
    with pytest.raises(ValueError, match="grad_o: expected shape"):
        bwd(torch.ones_like(q), None, q, k, v, o, lse, 3, 0.5)
    with pytest.raises(ValueError, match="grad_lse: expected shape"):
        bwd(torch.ones_like(o), lse[0], q, k, v, o, lse, 3, 0.5)


# ---- torch.library / torch.compile --------------------------------------------------------

@native
def test_opcheck():
    q, k, v = inputs(2, 70, 2, 12, 9)
    args = tuple(x.clone().requires_grad_() for x in (q, k, v)) + (20, 0.3)
    torch.library.opcheck(torch.ops.spikeops.swa_fwd.default, args)
    o, lse = torch.ops.spikeops.swa_fwd.default(q, k, v, 20, 0.3)
    go = torch.randn_like(o)
    for gl in (None, torch.randn_like(lse)):
        torch.library.opcheck(torch.ops.spikeops.swa_bwd.default,
                              (go, gl, q, k, v, o, lse, 20, 0.3))


@native
def test_torch_compile_fullgraph():
    def layer(q, k, v):
        return sliding_window_attn(q, k, v, 16).square().sum()

    compiled = torch.compile(layer, fullgraph=True)
    q, k, v = inputs(1, 40, 2, 8, 8)
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    ys = [x.clone().requires_grad_() for x in (q, k, v)]
    torch.testing.assert_close(compiled(*xs), layer(*ys))
    compiled(*xs).backward()
    layer(*ys).backward()
    for a, b in zip(xs, ys):
        torch.testing.assert_close(a.grad, b.grad)


# ---- CUDA ---------------------------------------------------------------------------------

CUDA_SHAPES = SHAPES + [
    (1, 1000, 2, 64, 64, 256),   # many tiles, window spanning several
    (2, 333, 4, 128, 128, 100),  # D = 128
    (1, 150, 1, 256, 200, 77),   # the largest supported D
    (1, 97, 3, 3, 130, 5),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", CUDA_SHAPES)
def test_cuda_forward(dtype, shape):
    B, T, H, D, Dv, w = shape
    q, k, v = inputs(B, T, H, D, Dv, dtype, device="cuda")
    out = sliding_window_attn(q, k, v, w)
    assert out.is_cuda and out.dtype == dtype
    same = sliding_window_attn_ref(q, k, v, w)
    exact = sliding_window_attn_ref(q.double(), k.double(), v.double(), w)
    assert_error_within(out, same, exact, exact.abs().max().item())
    _, lse = torch.ops.spikeops.swa_fwd.default(q, k, v, w, D ** -0.5 if D else 1.0)
    lse64 = _lse_ref(q.double().cpu(), k.double().cpu(), w, D ** -0.5 if D else 1.0)
    torch.testing.assert_close(lse.double().cpu(), lse64, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", CUDA_SHAPES)
def test_cuda_backward(dtype, shape):
    B, T, H, D, Dv, w = shape
    check_backward(*inputs(B, T, H, D, Dv, dtype, device="cuda"), w)


@pytest.mark.cuda
def test_cuda_matches_cpu_and_is_deterministic():
    q, k, v = inputs(2, 500, 3, 64, 48)
    g = torch.randn(2, 500, 3, 48)
    fn = lambda a, b, c: sliding_window_attn(a, b, c, 130)  # noqa: E731
    out_c, gr_c = grads(fn, (q, k, v), g)
    dev = [x.cuda() for x in (q, k, v)]
    runs = [grads(fn, dev, g.cuda()) for _ in range(2)]
    for a, b in zip([runs[0][0]] + runs[0][1], [runs[1][0]] + runs[1][1]):
        assert torch.equal(a, b)  # deterministic: no float atomics
    for a, b in zip([out_c] + gr_c, [runs[0][0]] + runs[0][1]):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_cuda_lse_gradient():
    q, k, v = inputs(1, 200, 2, 40, 24, device="cuda")
    w, scale = 90, 0.2
    go, gl = torch.randn(1, 200, 2, 24, device="cuda"), torch.randn(1, 2, 200, device="cuda")
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    o, lse = torch.ops.spikeops.swa_fwd.default(*xs, w, scale)
    ((o * go).sum() + (lse * gl).sum()).backward()
    rs = [x.double().cpu().requires_grad_() for x in (q, k, v)]
    o64 = sliding_window_attn_ref(*rs, w, scale)
    ((o64 * go.double().cpu()).sum() + (_lse_ref(rs[0], rs[1], w, scale)
                                         * gl.double().cpu()).sum()).backward()
    for name, a, b in zip("qkv", xs, rs):
        torch.testing.assert_close(a.grad.double().cpu(), b.grad, rtol=1e-4, atol=1e-5,
                                   msg=name)


@pytest.mark.cuda
def test_cuda_errors():
    q, k, v = inputs(1, 10, 2, 8, 6, device="cuda")
    with pytest.raises(ValueError, match="k: expected device"):
        sliding_window_attn(q, k.cpu(), v, 3)
    with pytest.raises(ValueError, match="v: expected device"):
        sliding_window_attn(q, k, v.cpu(), 3)
    big = torch.randn(1, 10, 1, 257, device="cuda")
    with pytest.raises(ValueError, match="D <= 256"):
        sliding_window_attn(big, big, big[..., :8], 3)


@pytest.fixture(autouse=True)
def _unvalidated_cuda_enabled(monkeypatch):
    # These CUDA kernels crashed in their first GPU run (2026-11-23); the ops refuse CUDA
    # tensors unless this is set, and the tests run them to find the crash.
    monkeypatch.setenv("SPIKEOPS_UNVALIDATED_CUDA", "1")


def test_unvalidated_cuda_guard(monkeypatch):
    from types import SimpleNamespace

    from spikeops import _extension
    cuda_like = SimpleNamespace(is_cuda=True)
    monkeypatch.delenv("SPIKEOPS_UNVALIDATED_CUDA")
    for op in ("sliding_window_attn", "linear_scan"):
        with pytest.raises(NotImplementedError, match=f"^{op}: the CUDA kernels crashed"):
            _extension.check_cuda_validated(op, cuda_like)
    _extension.check_cuda_validated("ssa", cuda_like)          # validated ops pass
    _extension.check_cuda_validated("sliding_window_attn", SimpleNamespace(is_cuda=False))
    monkeypatch.setenv("SPIKEOPS_UNVALIDATED_CUDA", "1")
    _extension.check_cuda_validated("sliding_window_attn", cuda_like)
