"""Recurrent attention ops (spikeops.ops.rwkv4_wkv, spikeops.ops.sdsa) against the
references in spikeops.ref.attention: CPU kernels on every ISA, and (marked cuda) the CUDA
kernels against the CPU kernels and the float64 reference."""
from __future__ import annotations

import pytest
import torch

import spikeops
from spikeops.ops import rwkv4_wkv, sdsa
from spikeops.ref.attention import rwkv4_wkv_ref, sdsa_ref
from spikeops.ref.surrogate import SURROGATES

from conftest import skip_unless

native = skip_unless("extension")


def assert_error_within(out, same_dtype_ref, ref64, factor=2.0, name="", ulps=1.0):
    """The kernel's max error against float64 is at most `factor` x that of PyTorch's
    same-dtype computation (plus `ulps` ulps of the output's scale, for near-exact
    references)."""
    assert out.dtype == same_dtype_ref.dtype and out.shape == ref64.shape, name
    assert torch.isfinite(out).all(), f"{name}: kernel output has NaN/Inf (unwritten?)"
    err = (out.double() - ref64).abs().max().item() if out.numel() else 0.0
    err_ref = (same_dtype_ref.double() - ref64).abs().max().item() if out.numel() else 0.0
    scale = max(1.0, ref64.abs().max().item()) if out.numel() else 1.0
    ulp = ulps * torch.finfo(out.dtype).eps * scale
    assert err <= factor * err_ref + ulp, f"{name}: kernel error {err:.3g} vs reference {err_ref:.3g}"


def run_grads(fn, inputs, g):
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*xs)
    out.backward(g)
    # A None gradient (the reference when nothing depends on an input, e.g. time_decay at
    # T = 1) is a zero gradient.
    return out.detach(), [torch.zeros_like(x) if x.grad is None else x.grad for x in xs]


# =========================================================================================
# RWKV-4 WKV
# =========================================================================================

RWKV_SHAPES = [
    (1, 1, 1),      # one step, one channel
    (2, 1, 5),      # T = 1: y = v
    (3, 50, 37),    # C not a multiple of any vector width
    (2, 70, 64),    # T past two backward segments (32), C = one task block
    (1, 100, 130),  # C > 64: several channel blocks, a 2-channel tail
    (4, 33, 17),
]


def rwkv_inputs(B, T, C, dtype=torch.float32, k_scale=3.0, device="cpu"):
    td = torch.randn(C) - 0.5            # w = -exp(td) from ~ -0.05 to ~ -7
    tf = torch.randn(C)
    k = torch.randn(B, T, C) * k_scale
    v = torch.randn(B, T, C)
    return (td.to(device), tf.to(device), k.to(dtype).to(device), v.to(dtype).to(device))


# The backward is a hand-derived reverse scan, not autograd's graph of the reference, so
# its rounding differs: over 45 random cases its max gradient error was a median 1.0-2.4x
# and at worst 13x the fp32 reference's (at T = 2-3, where the reference's own error is
# ~1e-8 of the scale), its mean error at most 3.2x. The worst cases come from
# dk_t ~ e^{k_t} (ga v_t + gb), a difference of two sums that cancels when output s is
# dominated by token t (y_s ~ v_t): a few ulps of gy v / D absolute, ~1e-6 of the
# gradient's scale. Gradients are therefore held to 4x the reference's error plus 8 ulps
# of the gradient's scale; a wrong formula or index gives errors of the order of the
# gradient itself.
def rwkv_check(inputs, factor_out=2.0, factor_grad=4.0):
    td, tf, k, v = inputs
    g = torch.randn(k.shape).to(v.dtype)
    out, got = run_grads(rwkv4_wkv, inputs, g)
    ref_out, want = run_grads(rwkv4_wkv_ref, inputs, g)
    out64, exact = run_grads(rwkv4_wkv_ref, [x.double() for x in inputs], g.double())
    assert out.dtype == v.dtype and out.shape == k.shape
    assert_error_within(out, ref_out, out64, factor_out, "y")
    for name, a, b, e in zip(("time_decay", "time_first", "k", "v"), got, want, exact):
        assert a.dtype == b.dtype, name
        assert_error_within(a, b, e, factor_grad, name, ulps=8.0)


@native
@pytest.mark.parametrize("shape", RWKV_SHAPES)
def test_rwkv_fp32(cpu_isa, shape):
    rwkv_check(rwkv_inputs(*shape))


@native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 40, 37), (1, 3, 130)])
def test_rwkv_half(cpu_isa, dtype, shape):
    rwkv_check(rwkv_inputs(*shape, dtype=dtype))


@native
def test_rwkv_t1_is_v(cpu_isa):
    td, tf, k, v = rwkv_inputs(3, 1, 23)
    assert torch.equal(rwkv4_wkv(td, tf, k, v), v)


@native
@pytest.mark.slow
def test_rwkv_long_sequence_large_k(cpu_isa):
    # T = 3000 with k up to ~+-60 and decays from ~0 (long memory) to very fast: the naive
    # exp(k) form overflows in fp32 from k = 89; the stable scan must stay accurate.
    B, T, C = 2, 3000, 19
    td = torch.linspace(-8.0, 3.0, C)
    tf = torch.randn(C) * 2
    k = torch.randn(B, T, C) * 20
    k[:, ::97] += 40.0
    v = torch.randn(B, T, C)
    rwkv_check((td, tf, k, v))


@native
def test_rwkv_noncontiguous(cpu_isa):
    td, tf, _, _ = rwkv_inputs(1, 1, 24)
    k = torch.randn(2, 24, 30).transpose(1, 2)  # [B, T, C] view, C stride 1 missing
    v = torch.randn(30, 2, 24).permute(1, 0, 2)
    assert not k.is_contiguous() and not v.is_contiguous()
    rwkv_check((td, tf, k, v))


@native
@pytest.mark.parametrize("shape", [(5, 40, 70), (1, 30, 40)])  # the second: narrow tasks
def test_rwkv_deterministic_over_threads(shape):
    inputs = rwkv_inputs(*shape)
    g = torch.randn(shape)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        o1, g1 = run_grads(rwkv4_wkv, inputs, g)
        torch.set_num_threads(2)
        o2, g2 = run_grads(rwkv4_wkv, inputs, g)
        _, g3 = run_grads(rwkv4_wkv, inputs, g)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(o1, o2)
    for a, b, c in zip(g1, g2, g3):
        assert torch.equal(a, b) and torch.equal(b, c)


@native
@pytest.mark.parametrize("shape", [(0, 5, 8), (2, 0, 8), (2, 5, 0)])
def test_rwkv_empty(shape):
    inputs = rwkv_inputs(*shape)
    g = torch.randn(shape)
    out, grads = run_grads(rwkv4_wkv, inputs, g)
    assert out.shape == shape
    for x, gr in zip(inputs, grads):
        assert gr.shape == x.shape and (gr == 0).all()


@native
def test_rwkv_opcheck():
    inputs = [x.requires_grad_() for x in rwkv_inputs(2, 9, 11)]
    torch.library.opcheck(torch.ops.spikeops.rwkv4_wkv_fwd.default, tuple(inputs))
    td, tf, k, v = rwkv_inputs(2, 9, 11)
    torch.library.opcheck(torch.ops.spikeops.rwkv4_wkv_bwd.default,
                          (torch.randn(2, 9, 11), td, tf, k, v))


@native
def test_rwkv_compile_fullgraph():
    td, tf, k, v = rwkv_inputs(2, 12, 20)

    def f(td, tf, k, v):
        return rwkv4_wkv(td, tf, k.tanh() * 4, v).square().sum(-1)

    a = [x.clone().requires_grad_() for x in (td, tf, k, v)]
    b = [x.clone().requires_grad_() for x in (td, tf, k, v)]
    y = torch.compile(f, fullgraph=True)(*a)
    y.sum().backward()
    y_e = f(*b)
    y_e.sum().backward()
    torch.testing.assert_close(y, y_e)
    for x, z in zip(a, b):
        torch.testing.assert_close(x.grad, z.grad)


@native
def test_rwkv_bad_inputs():
    td, tf, k, v = rwkv_inputs(2, 5, 6)
    cases = [
        ((td, tf, k[0], v[0]), ValueError, "k: expected 3 dims"),
        ((td, tf, k, v[:, :4]), ValueError, "v: expected the shape of k"),
        ((td[:5], tf, k, v), ValueError, r"time_decay: expected shape \[6\]"),
        ((td, tf.view(2, 3), k, v), ValueError, r"time_first: expected shape \[6\]"),
        ((td.double(), tf, k, v), TypeError, "time_decay: expected float32"),
        ((td, tf.half(), k, v), TypeError, "time_first: expected float32"),
        ((td, tf, k.double(), v), TypeError, "k: expected float32, bfloat16 or float16"),
        ((td, tf, k, v.to(torch.int32)), TypeError, "v: expected float32, bfloat16 or float16"),
        ((td, tf, k, v.half()), TypeError, "v: dtype"),
        ((td, tf, k, "v"), TypeError, "v: expected a torch.Tensor"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            rwkv4_wkv(*args)
    # The op itself (C++ checks) names the argument too.
    for args, exc, msg in cases[:-1]:
        with pytest.raises(exc, match=msg):
            torch.ops.spikeops.rwkv4_wkv_fwd.default(*args)
    with pytest.raises(ValueError, match="grad_y: expected shape"):
        torch.ops.spikeops.rwkv4_wkv_bwd.default(torch.randn(2, 5, 5), td, tf, k, v)


@native
def test_rwkv_double_backward_refused():
    td, tf, k, v = (x.requires_grad_() for x in rwkv_inputs(1, 4, 3))
    y = rwkv4_wkv(td, tf, k, v).sum()
    (gk,) = torch.autograd.grad(y, k, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gk.sum().backward()


# =========================================================================================
# SDSA
# =========================================================================================

SDSA_SHAPES = [
    (1, 1, 1, 1, 1),
    (4, 2, 3, 17, 21),   # odd N and D
    (2, 1, 1, 196, 64),  # Spike-driven Transformer-like head (one head: features split)
    (5, 2, 2, 8, 130),   # D > 128, a 2-feature tail
    (3, 1, 2, 1, 7),     # N = 1
    (1, 3, 4, 33, 16),   # T = 1
]


def grid(shape, dtype=torch.float32, lo=-4, hi=4, device="cpu"):
    """Multiples of 1/4 in [lo/4, hi/4]: products and sums are exact in fp32 (and the
    inputs exact in bf16 / fp16), so the kernel's token sums equal float64's."""
    return (torch.randint(lo, hi + 1, shape) / 4.0).to(dtype).to(device)


def spikes(shape, dtype=torch.float32, rate=0.25, device="cpu"):
    return (torch.rand(shape) < rate).to(dtype).to(device)


def lif_membrane64(k, v, v_threshold, tau):
    """H [T, B, H, 1, D] of the reference LIF in float64 (for near-threshold masks)."""
    kv = (k.double() * v.double()).sum(-2, keepdim=True)
    vm = torch.zeros_like(kv[0])
    hs = []
    for t in range(kv.shape[0]):
        h = vm + (kv[t] - vm) / tau
        s = (h - v_threshold >= 0).double()
        vm = (1 - s) * h
        hs.append(h)
    return torch.stack(hs)


@native
@pytest.mark.parametrize("shape", SDSA_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sdsa_forward_exact(cpu_isa, shape, dtype):
    q, k, v = grid(shape, dtype), grid(shape, dtype), grid(shape, dtype)
    for vth in (0.5, 0.25, -0.125):
        out = sdsa(q, k, v, v_threshold=vth)
        want = sdsa_ref(q.double(), k.double(), v.double(), v_threshold=vth)
        assert out.dtype == dtype and out.shape == q.shape
        # fp32 sums of grid values and tau = 2 are exact: the spikes equal float64's
        assert torch.equal(out.double(), want)


@native
@pytest.mark.parametrize("shape", [(4, 2, 3, 17, 21), (3, 1, 1, 50, 40)])
def test_sdsa_forward_tau3_matches_fp32_reference(cpu_isa, shape):
    # (kv - V) / 3 is rounded: the kernel does the reference's float32 operations in its
    # order, so the fp32 reference's spikes and outputs are reproduced bit for bit.
    q, k, v = grid(shape), grid(shape), grid(shape)
    out = sdsa(q, k, v, tau=3.0, v_threshold=0.3)
    assert torch.equal(out, sdsa_ref(q, k, v, tau=3.0, v_threshold=0.3))


@native
def test_sdsa_membrane_saved(cpu_isa):
    shape = (6, 2, 3, 10, 24)
    q, k, v = grid(shape), grid(shape), grid(shape)
    out, h = torch.ops.spikeops.sdsa_fwd.default(q, k, v, 0.5, 2.0, True, "sigmoid", 4.0)
    assert h.dtype == torch.float32 and h.shape == (6, 2, 3, 1, 24)
    assert torch.equal(h.double(), lif_membrane64(k, v, 0.5, 2.0))
    assert torch.equal(out, sdsa_ref(q, k, v))


@native
@pytest.mark.parametrize("shape", [(4, 2, 3, 17, 21), (8, 1, 2, 64, 48)])
def test_sdsa_forward_random_floats(cpu_isa, shape):
    # Arbitrary floats: the kernel's fp32 token sums differ from float64 by rounding, so a
    # spike may flip where the membrane is within rounding of the threshold. Channels that
    # come that close at some step are left out; every other output must be exact.
    q, k, v = (torch.randn(shape) for _ in range(3))
    out = sdsa(q, k, v)
    want = sdsa_ref(q.double(), k.double(), v.double())
    near = ((lif_membrane64(k, v, 0.5, 2.0) - 0.5).abs() < 1e-4).any(0, keepdim=True)
    keep = ~near.expand_as(want)
    assert keep.float().mean() > 0.9
    assert torch.equal(out.double()[keep], want[keep])


SURR = list(SURROGATES)


def sdsa_grad_check(inputs, g, factor=2.0, **kw):
    fn = lambda a, b, c: sdsa(a, b, c, **kw)  # noqa: E731
    rfn = lambda a, b, c: sdsa_ref(a, b, c, **kw)  # noqa: E731
    out, got = run_grads(fn, inputs, g)
    ref_out, want = run_grads(rfn, inputs, g)
    out64, exact = run_grads(rfn, [x.double() for x in inputs], g.double())
    assert torch.equal(out.double(), out64)
    for name, a, b, e in zip("qkv", got, want, exact):
        assert a.dtype == inputs[0].dtype, name
        assert_error_within(a, b, e, factor, "d" + name)


@native
@pytest.mark.parametrize("shape", SDSA_SHAPES)
@pytest.mark.parametrize("detach_reset", [True, False])
def test_sdsa_gradients_fp32(cpu_isa, shape, detach_reset):
    inputs = [grid(shape) for _ in range(3)]
    sdsa_grad_check(inputs, torch.randn(shape), detach_reset=detach_reset, v_threshold=0.25)


@native
@pytest.mark.parametrize("surrogate", SURR)
def test_sdsa_gradients_surrogates(cpu_isa, surrogate):
    shape = (5, 2, 2, 9, 19)
    inputs = [grid(shape) for _ in range(3)]
    alpha = None if surrogate != "sigmoid" else 2.5
    sdsa_grad_check(inputs, torch.randn(shape), detach_reset=False, surrogate=surrogate,
                    alpha=alpha, v_threshold=0.25)


@native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_sdsa_gradients_half(cpu_isa, dtype, detach_reset):
    shape = (4, 2, 3, 30, 21)
    inputs = [grid(shape, dtype) for _ in range(3)]
    sdsa_grad_check(inputs, torch.randn(shape).to(dtype), detach_reset=detach_reset)


@native
def test_sdsa_binary_spikes(cpu_isa):
    # The real use: q, k, v are spikes; the counts are integers (exact in every dtype).
    shape = (4, 2, 8, 196, 64)
    inputs = [spikes(shape) for _ in range(3)]
    g = torch.randn(shape)
    sdsa_grad_check(inputs, g, v_threshold=0.5)


@native
def test_sdsa_gradients_tau3(cpu_isa):
    shape = (4, 2, 3, 17, 21)
    inputs = [grid(shape) for _ in range(3)]
    g = torch.randn(shape)
    kw = dict(tau=3.0, v_threshold=0.3, detach_reset=False)
    _, got = run_grads(lambda a, b, c: sdsa(a, b, c, **kw), inputs, g)
    _, want = run_grads(lambda a, b, c: sdsa_ref(a, b, c, **kw), inputs, g)
    for a, b in zip(got, want):  # same spikes as the fp32 reference (see the forward test)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@native
def test_sdsa_noncontiguous(cpu_isa):
    shape = (3, 2, 4, 10, 12)
    q, k, v = (grid((2, 3, 4, 10, 12)).transpose(0, 1) for _ in range(3))
    assert not q.is_contiguous()
    sdsa_grad_check([q, k, v], torch.randn(shape))


@native
def test_sdsa_deterministic_over_threads():
    shape = (4, 1, 2, 40, 96)
    inputs = [torch.randn(shape) for _ in range(3)]
    g = torch.randn(shape)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        o1, g1 = run_grads(sdsa, inputs, g)
        torch.set_num_threads(2)
        o2, g2 = run_grads(sdsa, inputs, g)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(o1, o2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


@native
@pytest.mark.parametrize("shape", [(0, 2, 2, 3, 4), (2, 2, 2, 0, 4), (2, 2, 2, 3, 0),
                                   (2, 0, 2, 3, 4)])
def test_sdsa_empty(shape):
    inputs = [grid(shape) for _ in range(3)]
    out, grads = run_grads(sdsa, inputs, torch.randn(shape))
    assert out.shape == shape
    for gr in grads:
        assert gr.shape == shape
    _, h = torch.ops.spikeops.sdsa_fwd.default(*inputs, 0.5, 2.0, True, "sigmoid", 4.0)
    assert h.shape == (shape[0], shape[1], shape[2], 1, shape[4])
    assert (h == 0).all()  # N = 0: kv = 0, the membrane stays at 0


@native
def test_sdsa_opcheck():
    shape = (3, 2, 2, 5, 7)
    for detach in (True, False):
        args = tuple(grid(shape).requires_grad_() for _ in range(3)) + (
            0.25, 2.0, detach, "atan", 2.0)
        torch.library.opcheck(torch.ops.spikeops.sdsa_fwd.default, args)
    q, k, v = (grid(shape) for _ in range(3))
    _, h = torch.ops.spikeops.sdsa_fwd.default(q, k, v, 0.25, 2.0, False, "sigmoid", 4.0)
    torch.library.opcheck(torch.ops.spikeops.sdsa_bwd.default,
                          (torch.randn(shape), q, k, v, h, 0.25, 2.0, False, "sigmoid", 4.0))


@native
def test_sdsa_compile_fullgraph():
    shape = (3, 2, 2, 10, 16)
    q, k, v = (grid(shape) for _ in range(3))

    def f(q, k, v):
        return sdsa(q, k * 2, v, v_threshold=0.25).sum(-2)

    a = [x.clone().requires_grad_() for x in (q, k, v)]
    b = [x.clone().requires_grad_() for x in (q, k, v)]
    y = torch.compile(f, fullgraph=True)(*a)
    y.square().sum().backward()
    y_e = f(*b)
    y_e.square().sum().backward()
    torch.testing.assert_close(y, y_e)
    for x, z in zip(a, b):
        torch.testing.assert_close(x.grad, z.grad)


@native
def test_sdsa_bad_inputs():
    shape = (2, 1, 2, 5, 4)
    q, k, v = (grid(shape) for _ in range(3))
    cases = [
        ((q, k[:, :, :1], v), {}, ValueError, "k: expected the shape of q"),
        ((q, k, v[..., :3]), {}, ValueError, "v: expected the shape of q"),
        ((q[0], k[0], v[0]), {}, ValueError, "q: expected 5 dims"),
        ((q.double(), k, v), {}, TypeError, "q: expected float32, bfloat16 or float16"),
        ((q, k.to(torch.int64), v), {}, TypeError, "k: expected float32, bfloat16 or float16"),
        ((q, k, v.half()), {}, TypeError, "v: dtype"),
        ((q, k, v), {"tau": 1.0}, ValueError, "tau: expected a finite value > 1"),
        ((q, k, v), {"tau": float("nan")}, ValueError, "tau: expected a finite value > 1"),
        ((q, k, v), {"v_threshold": float("inf")}, ValueError, "v_threshold: expected a finite"),
        ((q, k, v), {"surrogate": "relu"}, ValueError, "surrogate: unknown name"),
        ((q, k, v), {"alpha": -1.0}, ValueError, "alpha: expected a finite"),
    ]
    for args, kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            sdsa(*args, **kw)
    # The op's C++ checks name the argument too.
    op = torch.ops.spikeops.sdsa_fwd.default
    base = dict(v_threshold=0.5, tau=2.0, detach_reset=True, surrogate="sigmoid", alpha=4.0)
    for args, kw, exc, msg in cases:
        a = dict(base, **kw)
        if "alpha" in kw or "surrogate" in kw:
            pass
        with pytest.raises(exc, match=msg):
            op(*args, a["v_threshold"], a["tau"], a["detach_reset"], a["surrogate"],
               a["alpha"])
    _, h = op(q, k, v, 0.5, 2.0, True, "sigmoid", 4.0)
    bwd = torch.ops.spikeops.sdsa_bwd.default
    with pytest.raises(ValueError, match="grad_out: expected shape"):
        bwd(q[:1], q, k, v, h, 0.5, 2.0, True, "sigmoid", 4.0)
    with pytest.raises(ValueError, match="h_seq: expected shape"):
        bwd(q, q, k, v, h[:1], 0.5, 2.0, True, "sigmoid", 4.0)
    with pytest.raises(TypeError, match="h_seq: expected float32"):
        bwd(q, q, k, v, h.double(), 0.5, 2.0, True, "sigmoid", 4.0)


# =========================================================================================
# CUDA: the same ops on the GPU against the CPU kernels and the float64 reference. Sizes
# are chosen to cover several thread blocks and every kind of tail.
# =========================================================================================

CUDA_RWKV_SHAPES = [(1, 1, 1), (2, 1, 5), (3, 77, 37), (5, 129, 300), (16, 64, 1000),
                    (1, 1000, 33)]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_RWKV_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_rwkv_matches_reference(shape, dtype):
    cpu_inputs = rwkv_inputs(*shape, dtype=dtype)
    g = torch.randn(shape).to(dtype)
    gpu_inputs = [x.cuda() for x in cpu_inputs]
    out, got = run_grads(rwkv4_wkv, gpu_inputs, g.cuda())
    ref_out, want = run_grads(rwkv4_wkv_ref, cpu_inputs, g)
    out64, exact = run_grads(rwkv4_wkv_ref, [x.double() for x in cpu_inputs], g.double())
    assert out.is_cuda and out.dtype == dtype
    assert_error_within(out.cpu(), ref_out, out64, 2.0, "y")
    for name, a, b, e in zip(("time_decay", "time_first", "k", "v"), got, want, exact):
        assert a.is_cuda, name
        assert_error_within(a.cpu(), b, e, 4.0, name, ulps=8.0)
    # and close to the CPU kernel
    out_c, got_c = run_grads(rwkv4_wkv, cpu_inputs, g)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else {}
    torch.testing.assert_close(out.cpu(), out_c, **tol)


@pytest.mark.cuda
def test_cuda_rwkv_long_sequence_large_k():
    B, T, C = 3, 3000, 67
    td = torch.linspace(-8.0, 3.0, C)
    tf = torch.randn(C) * 2
    k = torch.randn(B, T, C) * 20
    k[:, ::97] += 40.0
    v = torch.randn(B, T, C)
    cpu_inputs = (td, tf, k, v)
    g = torch.randn(B, T, C)
    out, got = run_grads(rwkv4_wkv, [x.cuda() for x in cpu_inputs], g.cuda())
    ref_out, want = run_grads(rwkv4_wkv_ref, cpu_inputs, g)
    out64, exact = run_grads(rwkv4_wkv_ref, [x.double() for x in cpu_inputs], g.double())
    assert_error_within(out.cpu(), ref_out, out64, 2.0, "y")
    for name, a, b, e in zip(("time_decay", "time_first", "k", "v"), got, want, exact):
        assert_error_within(a.cpu(), b, e, 4.0, name, ulps=8.0)


@pytest.mark.cuda
def test_cuda_rwkv_deterministic_and_noncontiguous():
    td, tf, _, _ = rwkv_inputs(1, 1, 90, device="cuda")   # C = 90, as k and v below
    k = torch.randn(4, 90, 200, device="cuda").transpose(1, 2)   # [B=4, T=200, C=90] views
    v = torch.randn(4, 90, 200, device="cuda").transpose(1, 2)
    g = torch.randn(4, 200, 90, device="cuda")
    _, g1 = run_grads(rwkv4_wkv, (td, tf, k, v), g)
    _, g2 = run_grads(rwkv4_wkv, (td, tf, k, v), g)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    _, gc = run_grads(rwkv4_wkv, [x.cpu() for x in (td, tf, k, v)], g.cpu())
    for a, b in zip(g1, gc):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_rwkv_empty_and_compile():
    for shape in [(0, 5, 8), (2, 0, 8), (2, 5, 0)]:
        inputs = rwkv_inputs(*shape, device="cuda")
        out, grads = run_grads(rwkv4_wkv, inputs, torch.randn(shape, device="cuda"))
        assert out.shape == shape and all((gr == 0).all() for gr in grads)
    inputs = [x.requires_grad_() for x in rwkv_inputs(2, 9, 11, device="cuda")]
    torch.library.opcheck(torch.ops.spikeops.rwkv4_wkv_fwd.default, tuple(inputs))
    f = torch.compile(lambda *a: rwkv4_wkv(*a).sum(-1), fullgraph=True)
    f(*inputs).sum().backward()


CUDA_SDSA_SHAPES = [(1, 1, 1, 1, 1), (4, 2, 3, 17, 21), (4, 8, 8, 196, 64), (3, 1, 2, 1, 7),
                    (5, 2, 2, 8, 130), (2, 3, 1, 300, 33), (1, 64, 8, 49, 96), (7, 1, 1, 5, 40)]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SDSA_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_cuda_sdsa_matches_reference(shape, dtype, detach_reset):
    inputs = [grid(shape, dtype) for _ in range(3)]
    g = torch.randn(shape).to(dtype)
    kw = dict(v_threshold=0.25, detach_reset=detach_reset)
    out, got = run_grads(lambda a, b, c: sdsa(a, b, c, **kw), [x.cuda() for x in inputs],
                         g.cuda())
    ref_out, want = run_grads(lambda a, b, c: sdsa_ref(a, b, c, **kw), inputs, g)
    out64, exact = run_grads(lambda a, b, c: sdsa_ref(a, b, c, **kw),
                             [x.double() for x in inputs], g.double())
    assert out.is_cuda and out.dtype == dtype
    assert torch.equal(out.cpu().double(), out64)  # exact sums: the float64 spikes
    for name, a, b, e in zip("qkv", got, want, exact):
        assert a.is_cuda and a.dtype == dtype, name
        assert_error_within(a.cpu(), b, e, 2.0, "d" + name)
    # membrane identical to the CPU kernel's (exact arithmetic on grid values)
    _, h = torch.ops.spikeops.sdsa_fwd.default(*[x.cuda() for x in inputs], 0.25, 2.0,
                                               detach_reset, "sigmoid", 4.0)
    _, h_c = torch.ops.spikeops.sdsa_fwd.default(*inputs, 0.25, 2.0, detach_reset,
                                                 "sigmoid", 4.0)
    assert torch.equal(h.cpu(), h_c)


@pytest.mark.cuda
@pytest.mark.parametrize("surrogate", SURR)
def test_cuda_sdsa_surrogates(surrogate):
    shape = (5, 2, 2, 9, 19)
    inputs = [grid(shape) for _ in range(3)]
    g = torch.randn(shape)
    kw = dict(v_threshold=0.25, detach_reset=False, surrogate=surrogate)
    _, got = run_grads(lambda a, b, c: sdsa(a, b, c, **kw), [x.cuda() for x in inputs],
                       g.cuda())
    _, want = run_grads(lambda a, b, c: sdsa(a, b, c, **kw), inputs, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_cuda_sdsa_random_floats_and_determinism():
    shape = (4, 4, 4, 77, 48)
    q, k, v = (torch.randn(shape, device="cuda") for _ in range(3))
    g = torch.randn(shape, device="cuda")
    o1, g1 = run_grads(sdsa, (q, k, v), g)
    o2, g2 = run_grads(sdsa, (q, k, v), g)
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    want = sdsa_ref(q.double(), k.double(), v.double()).cpu()
    near = ((lif_membrane64(k.cpu(), v.cpu(), 0.5, 2.0) - 0.5).abs() < 1e-4).any(0, keepdim=True)
    keep = ~near.expand_as(want)
    assert torch.equal(o1.cpu().double()[keep], want[keep])


@pytest.mark.cuda
def test_cuda_sdsa_empty_noncontiguous_compile():
    for shape in [(0, 2, 2, 3, 4), (2, 2, 2, 0, 4), (2, 2, 2, 3, 0)]:
        inputs = [grid(shape, device="cuda") for _ in range(3)]
        out, grads = run_grads(sdsa, inputs, torch.randn(shape, device="cuda"))
        assert out.shape == shape and all(gr.shape == shape for gr in grads)
    q, k, v = (grid((2, 3, 4, 10, 12), device="cuda").transpose(0, 1) for _ in range(3))
    g = torch.randn(q.shape, device="cuda")
    out, got = run_grads(sdsa, (q, k, v), g)
    out_c, want = run_grads(sdsa, [x.cpu() for x in (q, k, v)], g.cpu())
    assert torch.equal(out.cpu(), out_c)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)
    args = tuple(x.detach().clone().requires_grad_() for x in (q, k, v)) + (
        0.25, 2.0, False, "sigmoid", 4.0)
    torch.library.opcheck(torch.ops.spikeops.sdsa_fwd.default, args)
    f = torch.compile(lambda a, b, c: sdsa(a, b, c).sum(-2), fullgraph=True)
    f(*args[:3]).sum().backward()
