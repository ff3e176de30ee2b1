"""Spiking self-attention (spikeops.ops.ssa) on the CPU against spikeops.ref.attention.ssa_ref."""
from __future__ import annotations

import pytest
import torch

from spikeops.ops import ssa, ssa_lif
from spikeops.ref.attention import ssa_lif_ref, ssa_ref
from spikeops.ref.neurons import lif as lif_ref

from conftest import skip_unless

native = skip_unless("extension")

SHAPES = [
    (1, 1),              # N = 1, D = 1
    (1, 5),
    (64, 64),            # exactly one word of tokens
    (65, 33),            # N just past a word, D odd
    (130, 17),
    (3, 2, 4, 100, 31),  # [T, B, H, N, D]
    (2, 3, 2, 196, 64),  # Spikformer-like
    (1, 300, 130),       # D > 128: several q words, several output chunks
    (1, 520, 130),       # N * D > 65535: the fp32 row sums instead of uint16
]


def spikes(shape, dtype=torch.float32, rate=None):
    rate = torch.rand(()).item() if rate is None else rate
    return (torch.rand(shape) < rate).to(dtype)


def qkv(shape, dtype=torch.float32, dv=None, rate=None):
    vshape = shape if dv is None else (*shape[:-1], dv)
    return spikes(shape, dtype, rate), spikes(shape, dtype, rate), spikes(vshape, dtype, rate)


def exact(q, k, v, scale=0.125, order="kv_first"):
    return ssa_ref(q.double(), k.double(), v.double(), scale, order)


@native
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
def test_forward_exact_fp32(cpu_isa, shape, order):
    for _ in range(3):  # random firing rates
        q, k, v = qkv(shape)
        out = ssa(q, k, v, 0.125, order)
        assert out.dtype == torch.float32 and out.shape == v.shape
        # counts * 0.125 are exact in fp32 at these sizes: bit-for-bit equality
        assert torch.equal(out.double(), exact(q, k, v))


@native
@pytest.mark.parametrize("dv", [1, 7, 64, 100])
def test_forward_value_dim(cpu_isa, dv):
    q, k, v = qkv((2, 3, 70, 24), dv=dv)
    assert torch.equal(ssa(q, k, v).double(), exact(q, k, v))


@native
def test_orders_identical(cpu_isa):
    q, k, v = qkv((2, 4, 150, 48))
    assert torch.equal(ssa(q, k, v, 0.3, "kv_first"), ssa(q, k, v, 0.3, "qk_first"))


@native
def test_scale_rounding(cpu_isa):
    # Any scale: the exact count times fp32(scale), rounded once.
    q, k, v = qkv((3, 90, 20))
    scale = 0.1
    counts = exact(q, k, v, 1.0)
    want = (counts * torch.tensor(scale, dtype=torch.float32).double()).float()
    assert torch.equal(ssa(q, k, v, scale), want)


@native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(65, 33), (2, 2, 196, 64), (1, 1)])
def test_forward_half(cpu_isa, dtype, shape):
    q, k, v = qkv(shape, dtype)
    out = ssa(q, k, v)
    assert out.dtype == dtype
    # the exact result rounded once to the dtype (the same-dtype reference rounds k^T v too)
    assert torch.equal(out, exact(q, k, v).to(dtype))


@native
def test_extremes(cpu_isa):
    shape = (2, 129, 40)
    z, o = torch.zeros(shape), torch.ones(shape)
    assert torch.equal(ssa(z, o, o), torch.zeros(shape))
    assert torch.equal(ssa(o, o, o), torch.full(shape, 129 * 40 * 0.125))
    negz = -torch.zeros(shape)  # -0.0 == 0 is a valid spike
    assert torch.equal(ssa(o, negz, o), torch.zeros(shape))


@native
@pytest.mark.parametrize("n", [1023, 1025])  # N * D = 65472 (largest uint16 sums), 65600
def test_all_ones_at_the_integer_row_sum_limit(cpu_isa, n):
    o = torch.ones(2, n, 64)
    assert torch.equal(ssa(o, o, o, 1.0), torch.full(o.shape, float(n * 64)))


@native
def test_noncontiguous(cpu_isa):
    q, k, v = qkv((2, 3, 50, 16))
    qt, kt, vt = (x.transpose(0, 1) for x in (q, k, v))
    assert torch.equal(ssa(qt, kt, vt).double(), exact(qt, kt, vt))


_NIBBLE_TABLE_CHECK = """
import torch
from spikeops.ops import ssa
from spikeops.ref.attention import ssa_ref
torch.manual_seed(0)
for shape in [(65, 33), (2, 3, 2, 196, 64), (1, 300, 130), (1, 520, 130)]:
    q, k, v = ((torch.rand(shape) < 0.3).float() for _ in range(3))
    want = ssa_ref(q.double(), k.double(), v.double(), 0.125, "kv_first").float()
    assert torch.equal(ssa(q, k, v, 0.125), want), shape
print("ok")
"""


@native
def test_kv_table_without_vpopcnt():
    # With AVX512_VPOPCNTDQ the AVX-512 kernel counts KV with VPOPCNTQ; this runs its other
    # path (the nibble table, for AVX-512 CPUs without the instruction) in a fresh process.
    import os
    import subprocess
    import sys

    env = dict(os.environ, SPIKEOPS_SSA_NO_VPOPCNT="1")
    done = subprocess.run([sys.executable, "-c", _NIBBLE_TABLE_CHECK], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@native
def test_empty():
    for shape in [(0, 5, 8), (2, 0, 8)]:
        q, k, v = qkv(shape)
        assert ssa(q, k, v).shape == shape
    q, k, _ = qkv((2, 5, 0))
    v = spikes((2, 5, 3))
    assert torch.equal(ssa(q, k, v), torch.zeros(2, 5, 3))  # D = 0: an empty sum


# ---- gradients ------------------------------------------------------------------------------

def _grads(fn, q, k, v, g):
    xs = [x.clone().requires_grad_() for x in (q, k, v)]
    out = fn(*xs)
    out.backward(g)
    return out, [x.grad for x in xs]


@native
@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients(order, dtype):
    q, k, v = qkv((2, 3, 70, 24), dtype, dv=20)
    g = torch.randn(2, 3, 70, 20).to(dtype)
    out, got = _grads(lambda a, b, c: ssa(a, b, c, 0.125, order), q, k, v, g)
    ref_out, want = _grads(lambda a, b, c: ssa_ref(a, b, c, 0.125, order), q, k, v, g)
    _, exact_g = _grads(lambda a, b, c: ssa_ref(a, b, c, 0.125, order),
                        q.double(), k.double(), v.double(), g.double())
    for name, a, b, e in zip("qkv", got, want, exact_g):
        assert a.dtype == dtype, name
        if dtype == torch.float32:
            torch.testing.assert_close(a, b, msg=name)
        else:  # at most ~2x the same-dtype reference's error against float64
            err, ref_err = (a.double() - e).abs().max(), (b.double() - e).abs().max()
            assert err <= 2 * ref_err + 1e-6, (name, err, ref_err)


# ---- torch.library / torch.compile ----------------------------------------------------------

@native
def test_opcheck():
    q, k, v = qkv((2, 20, 12), dv=9)
    for order in ("kv_first", "qk_first"):
        args = tuple(x.clone().requires_grad_() for x in (q, k, v)) + (0.125, order)
        torch.library.opcheck(torch.ops.spikeops.ssa_fwd.default, args)


@native
def test_compile_fullgraph():
    q, k, v = qkv((2, 2, 40, 16))

    def f(q, k, v):
        return ssa(q, k, v, 0.25, "kv_first").sum(-1)

    qs = q.clone().requires_grad_()
    y = torch.compile(f, fullgraph=True)(qs, k, v)
    y.sum().backward()
    qe = q.clone().requires_grad_()
    y_e = f(qe, k, v)
    y_e.sum().backward()
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(qs.grad, qe.grad)


# ---- bad input ------------------------------------------------------------------------------

@native
@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan"), "subnormal"])
# D = 20: the generic packer with a tail; D = 130: the 64-column words, then a tail
@pytest.mark.parametrize("shape", [(2, 70, 20), (2, 70, 130)])
@pytest.mark.parametrize("where", [0, 77, -1])  # first entry, inside a word, last (tail)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_non_binary_names_argument(cpu_isa, name, bad, shape, where, dtype):
    if bad == "subnormal":  # not 0 either (its bits are tested, not a compare with 0)
        bad = torch.finfo(dtype).tiny / 2
    xs = dict(zip("qkv", qkv(shape, dtype)))
    xs[name].view(-1)[where] = bad
    assert xs[name].view(-1)[where].item() != 0
    with pytest.raises(ValueError, match=f"^{name}: expected binary spikes"):
        ssa(xs["q"], xs["k"], xs["v"])


@native
@pytest.mark.parametrize("col", [5, 70])  # inside a 64-column word, in the tail
def test_subnormal_rejected_with_denormals_are_zero(cpu_isa, col):
    q, k, v = qkv((1, 40, 100))
    q[0, 3, col] = 1e-40
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernel runs on this thread, under its DAZ setting
    if not torch.set_flush_denormal(True):
        torch.set_num_threads(threads)
        pytest.skip("this CPU cannot flush denormals")
    try:
        with pytest.raises(ValueError, match="^q: expected binary spikes"):
            ssa(q, k, v)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


@native
def test_non_binary_reports_q_first():
    q, k, v = qkv((4, 70, 20))
    q[3, 5, 1] = 0.5
    k[0, 0, 0] = 3.0
    with pytest.raises(ValueError, match="^q: expected binary"):
        ssa(q, k, v)


@native
def test_bad_inputs():
    q, k, v = qkv((2, 10, 8))
    with pytest.raises(ValueError, match="k: expected the shape of q"):
        ssa(q, k[:, :5], v)
    with pytest.raises(ValueError, match="v: expected shape"):
        ssa(q, k, v[:, :5])
    with pytest.raises(ValueError, match="order: expected"):
        ssa(q, k, v, order="softmax")
    with pytest.raises(ValueError, match="scale: expected a finite"):
        ssa(q, k, v, scale=float("inf"))
    with pytest.raises(TypeError, match="q: expected float32, bfloat16 or float16"):
        ssa(q.double(), k, v)
    with pytest.raises(TypeError, match="v: expected float32"):
        ssa(q, k, v.to(torch.int32))
    with pytest.raises(TypeError, match="k: dtype"):
        ssa(q, k.half(), v)
    with pytest.raises(ValueError, match="q: expected at least 2 dims"):
        ssa(q[0, 0], k[0, 0], v[0, 0])


# ---- SSA fused with the attention LIF (ssa_lif) ---------------------------------------------

LIF_SHAPES = [(1, 1, 1), (4, 2, 3, 70, 33), (3, 1, 130, 17), (2, 2, 2, 196, 64), (5, 65, 9)]


def lif_scale(q, k, v):
    # a scale that puts the attention values around twice the 0.5 threshold, where a tau = 2
    # LIF fires about every other step (moderate firing)
    mean = ssa_ref(q.double(), k.double(), v.double(), 1.0).mean().item()
    return 1.0 / max(mean, 1.0)


def unfused(q, k, v, scale, order="kv_first", tau=2.0, v_threshold=0.5, v_reset=0.0):
    # the exact attention (spikeops' ssa, checked bit for bit above) rounded to the dtype,
    # then the reference LIF: what ssa_lif must reproduce spike for spike. (ssa_lif_ref in
    # bf16 / fp16 rounds k^T v to the dtype: inexact once counts pass 256 / 2048.)
    attn = ssa(q, k, v, scale, order)
    return lif_ref(attn, tau=tau, v_threshold=v_threshold, v_reset=v_reset,
                   decay_input=True)[0]


@native
@pytest.mark.parametrize("shape", LIF_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lif_forward_matches_unfused(cpu_isa, shape, dtype):
    q, k, v = qkv(shape, dtype, dv=shape[-1] + 3, rate=0.3)
    scale = lif_scale(q, k, v)
    s = ssa_lif(q, k, v, scale, tau=2.0, v_threshold=0.5)
    want = unfused(q, k, v, scale)
    if dtype == torch.float32:
        assert torch.equal(want, ssa_lif_ref(q, k, v, scale))
    assert s.dtype == dtype and s.shape == v.shape
    assert torch.equal(s, want)
    if s.numel() > 1000:
        rate = s.float().mean().item()
        assert 0.02 < rate < 0.98, rate  # the test exercises both spikes and silence


@native
def test_lif_options(cpu_isa):
    q, k, v = qkv((6, 2, 50, 20), rate=0.3)
    scale = lif_scale(q, k, v)
    for kw in (dict(tau=3.0, v_threshold=0.3, v_reset=-0.2), dict(tau=1.5, v_threshold=1.0),
               dict(v_reset=0.1, order="qk_first")):
        assert torch.equal(ssa_lif(q, k, v, scale, **kw), unfused(q, k, v, scale, **kw)), kw


@native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_lif_gradients(dtype, detach_reset):
    q, k, v = qkv((4, 2, 60, 24), dtype, dv=20, rate=0.3)
    scale = lif_scale(q, k, v)
    g = torch.randn(4, 2, 60, 20).to(dtype)
    kw = dict(surrogate="atan", alpha=2.0, detach_reset=detach_reset)
    out, got = _grads(lambda a, b, c: ssa_lif(a, b, c, scale, **kw), q, k, v, g)
    ref_out, want = _grads(lambda a, b, c: ssa_lif_ref(a, b, c, scale, **kw), q, k, v, g)
    assert torch.equal(out, ref_out)
    for name, a, b in zip("qkv", got, want):
        assert a.dtype == dtype, name
        assert b.abs().max() > 0, name   # the surrogate passes gradient at these rates
        if dtype == torch.float32:
            torch.testing.assert_close(a, b, msg=name)
        else:  # the same bf16 operations in the same order, up to matmul blocking
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2, msg=name)


@native
def test_lif_opcheck_and_compile():
    q, k, v = qkv((3, 2, 20, 12), dv=9)
    args = tuple(x.clone().requires_grad_() for x in (q, k, v))
    torch.library.opcheck(torch.ops.spikeops.ssa_lif_fwd.default,
                          args + (0.2, "kv_first", 2.0, 0.5, 0.0, "sigmoid", 4.0, True))

    def f(q, k, v):
        return ssa_lif(q, k, v, 0.2).sum(-1)

    qs = q.clone().requires_grad_()
    y = torch.compile(f, fullgraph=True)(qs, k, v)
    y.sum().backward()
    qe = q.clone().requires_grad_()
    y_e = f(qe, k, v)
    y_e.sum().backward()
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(qs.grad, qe.grad)


@native
def test_lif_bad_inputs():
    q, k, v = qkv((2, 3, 10, 8))
    with pytest.raises(ValueError, match="q: expected at least 3 dims"):
        ssa_lif(q[0, 0], k[0, 0], v[0, 0])
    with pytest.raises(ValueError, match="tau: expected"):
        ssa_lif(q, k, v, tau=0.0)
    with pytest.raises(ValueError, match="v_threshold: expected"):
        ssa_lif(q, k, v, v_threshold=float("nan"))
    with pytest.raises(ValueError, match="surrogate"):
        ssa_lif(q, k, v, surrogate="nope")
    with pytest.raises(ValueError, match="k: expected the shape of q"):
        ssa_lif(q, k[:, :, :5], v)
    q[1, 2, 3, 4] = 0.25
    with pytest.raises(ValueError, match="^q: expected binary"):
        ssa_lif(q, k, v)


# ---- CUDA -----------------------------------------------------------------------------------

CUDA_SHAPES = [(1, 1), (64, 64), (65, 33), (2, 3, 4, 100, 31), (4, 8, 196, 64), (1, 300, 130),
               (2, 17, 128), (1, 2100, 20)]   # (2100: the KV hi/lo split) (130: ATen path)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu(shape, dtype):
    dv = shape[-1] + 70            # two column blocks, the second partial
    q, k, v = qkv(shape, dtype, dv=dv)
    scale = 0.1 if dtype == torch.float32 else 0.125
    want = ssa(q, k, v, scale)     # the CPU kernel: exact, rounded once
    got = ssa(q.cuda(), k.cuda(), v.cuda(), scale).cpu()
    assert torch.equal(got, want)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(4, 2, 3, 70, 33), (2, 8, 196, 64), (3, 1, 600, 16),
                                   (2, 1, 40, 140)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_lif_matches_cpu(shape, dtype):
    q, k, v = qkv(shape, dtype, dv=shape[-1] + 5, rate=0.3)
    scale = lif_scale(q, k, v)
    want = ssa_lif(q, k, v, scale)
    got = ssa_lif(q.cuda(), k.cuda(), v.cuda(), scale).cpu()
    assert torch.equal(got, want)
    g = torch.randn(v.shape).to(dtype)
    _, gc = _grads(lambda a, b, c: ssa_lif(a, b, c, scale), q, k, v, g)
    _, gg = _grads(lambda a, b, c: ssa_lif(a, b, c, scale), q.cuda(), k.cuda(), v.cuda(),
                   g.cuda())
    for name, a, b in zip("qkv", gg, gc):
        torch.testing.assert_close(a.cpu().float(), b.float(), rtol=2e-2, atol=2e-2, msg=name)


@pytest.mark.cuda
def test_cuda_non_binary_float_fallback():
    # CUDA computes a non-binary head in fp32 (documented) instead of raising.
    q, k, v = qkv((3, 90, 40), torch.float32)
    k[1, 5, 3] = 0.37
    v[2, 89, 39] = -2.5
    got = ssa(q.cuda(), k.cuda(), v.cuda(), 0.1).cpu()
    want = ssa_ref(q.double(), k.double(), v.double(), 0.1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[0], ssa(q[:1], k[:1], v[:1], 0.1)[0])   # binary heads stay exact


@pytest.mark.cuda
def test_cuda_non_binary_q_in_a_later_row_group():
    # q non-binary only in rows past the first group of 128: those rows take the fp32 path
    # on exact KV counts, the other rows stay exact.
    q, k, v = qkv((2, 300, 64), torch.float32)
    q[0, 200, 5] = 0.25
    got = ssa(q.cuda(), k.cuda(), v.cuda(), 0.1).cpu()
    want = ssa_ref(q.double(), k.double(), v.double(), 0.1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    q[0, 200, 5] = 1.0
    exact_rows = ssa(q, k, v, 0.1)
    assert torch.equal(got[0, :128], exact_rows[0, :128])
    assert torch.equal(got[1], exact_rows[1])
