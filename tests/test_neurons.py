"""Fused multi-step neurons against the pure-PyTorch reference: spikes, states, gradients."""
from __future__ import annotations

import pytest
import torch

import spikeops
from spikeops import ops, ref
from spikeops.ref.surrogate import SURROGATES

from conftest import skip_unless

pytestmark = skip_unless("extension")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Awkward shapes: T = 1, N not a multiple of any vector width, N smaller than one vector.
SHAPES = [(1, 37), (4, 3, 5, 7), (7, 1000), (3, 1), (16, 2, 129)]


def grad_tol(dtype):
    """Gradients: fp32 reassociation-level error, or one or two ulps of the low-precision dtype."""
    return {torch.float32: dict(rtol=1e-5, atol=1e-6),
            torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
            torch.float16: dict(rtol=2e-3, atol=1e-6)}[dtype]


def make_input(shape, dtype, scale=1.5):
    return (torch.randn(shape) * scale + 0.4).to(dtype)


def run_both(kernel_fn, ref_fn, x, extra=(), n_state_grads=1, **kw):
    """Forward + backward through both; returns ((outs, grads) kernel, (outs, grads) ref)."""
    results = []
    torch.manual_seed(1)
    g_out = None
    for fn in (kernel_fn, ref_fn):
        xs = x.detach().clone().requires_grad_(True)
        ex = [e.detach().clone().requires_grad_(True) if e is not None else None for e in extra]
        outs = fn(xs, *ex, **kw)
        if g_out is None:
            g_out = [torch.randn(o.shape).to(o.dtype) for o in outs]
        loss = sum((o.float() * g.float()).sum() for o, g in zip(outs, g_out) if o.requires_grad)
        loss.backward()
        grads = [xs.grad] + [e.grad if e is not None else None for e in ex]
        results.append(([o.detach() for o in outs], grads))
    return results


def assert_same(k, r, dtype, exact_outputs=True):
    (ko, kg), (ro, rg) = k, r
    for a, b in zip(ko, ro):
        if exact_outputs:
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        else:
            torch.testing.assert_close(a, b, equal_nan=True)
    for a, b in zip(kg, rg):
        if a is None and b is None:
            continue
        tol = grad_tol(dtype) if a.dtype == dtype else grad_tol(torch.float32)
        torch.testing.assert_close(a, b, **tol)


# ---- LIF ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_lif_matches_reference_each_isa(cpu_isa, dtype, shape):
    x = make_input(shape, dtype)
    v0 = torch.randn(shape[1:]) * 0.5
    k, r = run_both(ops.lif, ref.neurons.lif, x, extra=(v0,), tau=2.0)
    assert_same(k, r, dtype)
    assert k[0][0].dtype == dtype and k[0][1].dtype == torch.float32


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, -0.3, None])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("with_v0", [False, True])
def test_lif_options(cpu_isa, decay_input, v_reset, detach_reset, with_v0):
    x = make_input((6, 2, 67), torch.float32)
    v0 = torch.randn(2, 67) * 0.5 if with_v0 else None
    kw = dict(tau=3.0, decay_input=decay_input, v_threshold=0.8, v_reset=v_reset,
              detach_reset=detach_reset)
    k, r = run_both(ops.lif, ref.neurons.lif, x, extra=(v0,), **kw)
    assert_same(k, r, torch.float32)


@pytest.mark.parametrize("surrogate", list(SURROGATES))
def test_every_surrogate(cpu_isa, surrogate):
    x = make_input((5, 300), torch.float32)
    for alpha in (None, 1.7):
        kw = dict(surrogate=surrogate, alpha=alpha if alpha else SURROGATES[surrogate])
        k, r = run_both(ops.lif, ref.neurons.lif, x, **kw)
        assert_same(k, r, torch.float32)
        assert k[1][0].abs().sum() > 0  # the surrogate actually passed gradient


def test_chunked_calls_equal_one_call():
    x = make_input((12, 4, 50), torch.float32).requires_grad_(True)
    s_full, v_full = ops.lif(x)
    g = torch.randn_like(s_full)
    (s_full * g).sum().backward()
    gx_full = x.grad.clone()
    x.grad = None
    v, outs = None, []
    for chunk in x.split([5, 1, 6]):
        s, v = ops.lif(chunk.contiguous(), v)
        outs.append(s)
    s_chunks = torch.cat(outs)
    (s_chunks * g).sum().backward()
    torch.testing.assert_close(s_chunks, s_full, rtol=0, atol=0)
    torch.testing.assert_close(v, v_full, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, gx_full, rtol=1e-6, atol=1e-7)


def test_v_seq_matches_reference(cpu_isa):
    x = make_input((5, 3, 40), torch.float32)
    s, v, vs = ops.lif(x, store_v_seq=True, v_reset=None)
    s_r, v_r, vs_r = ref.neurons.lif(x, store_v_seq=True, v_reset=None)
    torch.testing.assert_close(vs, vs_r, rtol=0, atol=0)
    torch.testing.assert_close(vs[-1], v, rtol=0, atol=0)
    assert not vs.requires_grad


def test_nan_and_inf_propagate_like_reference(cpu_isa):
    x = make_input((4, 50), torch.float32)
    x[0, 3] = float("nan")
    x[1, 7] = float("inf")
    x[2, 9] = -float("inf")
    for v_reset in (0.0, None):
        s, v = ops.lif(x, v_reset=v_reset)
        s_r, v_r = ref.neurons.lif(x, v_reset=v_reset)
        torch.testing.assert_close(s, s_r, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(v, v_r, rtol=0, atol=0, equal_nan=True)


def test_spikes_recomputed_in_backward_are_the_emitted_ones():
    # A threshold exactly hit by the charge: any change in arithmetic would flip spikes,
    # and the gradient of the hard reset (1 - S) would then differ from the reference.
    x = torch.full((6, 64), 2.0)
    k, r = run_both(ops.lif, ref.neurons.lif, x, tau=2.0, v_threshold=1.0)
    assert k[0][0].sum() > 0
    assert_same(k, r, torch.float32)


# ---- IF, PLIF, ILIF, ALIF ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_if_matches_reference(cpu_isa, dtype, v_reset):
    x = make_input((5, 3, 41), dtype, scale=0.8)
    v0 = torch.randn(3, 41) * 0.3
    k, r = run_both(ops.if_, ref.neurons.if_, x, extra=(v0,), v_reset=v_reset)
    assert_same(k, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_channel,channel_dim", [(False, 2), (True, 2), (True, -1), (True, 1)])
@pytest.mark.parametrize("decay_input", [True, False])
def test_plif_matches_reference(cpu_isa, dtype, per_channel, channel_dim, decay_input):
    shape = (4, 3, 6, 5)
    x = make_input(shape, dtype)
    c = shape[channel_dim]
    w = torch.randn(c) if per_channel else torch.tensor(0.3)
    v0 = torch.randn(shape[1:]) * 0.3

    def kern(x, w, v0, **kw):
        return ops.plif(x, w, v0, **kw)

    def refn(x, w, v0, **kw):
        return ref.neurons.plif(x, w, v0, **kw)

    k, r = run_both(kern, refn, x, extra=(w, v0), channel_dim=channel_dim,
                    decay_input=decay_input, v_reset=0.1)
    assert_same(k, r, dtype)
    assert k[1][1].shape == w.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("max_level", [1, 4, 7])
def test_ilif_matches_reference(cpu_isa, dtype, rounding, detach_reset, max_level):
    x = make_input((5, 2, 77), dtype, scale=3.0)
    # Exact halves exercise the rounding mode.
    x.view(-1)[:8] = torch.tensor([0.5, 1.5, 2.5, 3.5, 1.0, 0.25, 5.0, 9.0]).to(dtype)
    v0 = torch.randn(2, 77) * 0.3
    k, r = run_both(ops.ilif, ref.neurons.ilif, x, extra=(v0,), rounding=rounding,
                    detach_reset=detach_reset, max_level=max_level, v_threshold=0.5)
    assert_same(k, r, dtype)
    s = k[0][0].float()
    assert s.min() >= 0 and s.max() <= max_level and torch.equal(s, s.round())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_alif_matches_reference(cpu_isa, dtype, v_reset, detach_reset):
    x = make_input((8, 2, 45), dtype)
    v0 = torch.randn(2, 45) * 0.3
    a0 = torch.rand(2, 45)
    k, r = run_both(ops.alif, ref.neurons.alif, x, extra=(v0, a0), v_reset=v_reset,
                    detach_reset=detach_reset, beta=0.3, tau_adapt=5.0)
    assert_same(k, r, dtype)


def test_long_sequence_uses_small_backward_blocks(cpu_isa):
    # T large enough that backward keeps only a few vectors of history per block.
    x = make_input((700, 100), torch.float32, scale=0.6)
    k, r = run_both(ops.lif, ref.neurons.lif, x)
    assert_same(k, r, torch.float32)


def test_results_do_not_depend_on_thread_count():
    x = make_input((8, 50000), torch.float32).requires_grad_(True)
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xv = x.view(8, 10, 5000)
            wv = torch.randn(10, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
            s, v = ops.plif(xv.contiguous(), wv, channel_dim=1)
            (s.sum() + v.sum()).backward()
            outs.append((s, v, x.grad.clone(), wv.grad.clone()))
            x.grad = None
    finally:
        torch.set_num_threads(before)
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)


# ---- helpers, gradcheck ----------------------------------------------------------------

def test_expand_integer_spikes():
    s = torch.tensor([[0.0, 3.0], [4.0, 1.0]])
    b = ref.neurons.expand_integer_spikes(s, 4)
    assert b.shape == (8, 2)
    torch.testing.assert_close(b.view(2, 4, 2).sum(1), s)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert b[:4, 1].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_reference_gradcheck_float64():
    # Below threshold the dynamics are smooth, so finite differences check the reference's
    # BPTT through the charge, the state and the PLIF decay; the kernel matches the reference.
    x = (torch.rand(5, 3, 4, dtype=torch.float64) * 0.1).requires_grad_(True)
    v0 = (torch.rand(3, 4, dtype=torch.float64) * 0.1).requires_grad_(True)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, v0: ref.neurons.lif(x, v0, tau=3.0, v_threshold=100.0)[1], (x, v0))
    assert torch.autograd.gradcheck(
        lambda x, v0, w: ref.neurons.plif(x, w, v0, channel_dim=-1, v_threshold=100.0)[1],
        (x, v0, w))
    assert torch.autograd.gradcheck(
        lambda x, v0: ref.neurons.alif(x, v0, None, v_threshold=100.0)[1], (x, v0))


def test_fallback_to_reference_without_extension(monkeypatch):
    from spikeops import _extension
    x = make_input((3, 20), torch.float32)
    s_native, v_native = ops.lif(x)
    monkeypatch.setattr(_extension, "AVAILABLE", False)
    s_ref, v_ref = ops.lif(x)
    torch.testing.assert_close(s_native, s_ref, rtol=0, atol=0)
    torch.testing.assert_close(v_native, v_ref, rtol=0, atol=0)


def test_info_reports_build():
    info = spikeops.info()
    assert info["extension_loaded"]
    assert set(info["cpu_isa_compiled"]) == {"scalar", "avx2", "avx512"}
    assert info["cpu_isa_active"] in info["cpu_isa_supported"]
    assert info["torch_version"]


# ---- accuracy against float64: the kernel's error at most ~2x the fp32 reference's -------

def _ref64_grads(ref_fn, x, extra, kw):
    torch.manual_seed(1)
    xs = x.double().requires_grad_(True)
    ex = [e.double().requires_grad_(True) if e is not None else None for e in extra]
    outs = ref_fn(xs, *ex, **kw)
    g_out = [torch.randn(o.shape).to(o.dtype) for o in outs]
    sum((o * g.double()).sum() for o, g in zip(outs, g_out) if o.requires_grad).backward()
    return outs[0], [xs.grad] + [e.grad if e is not None else None for e in ex]


ACCURACY_CASES = [
    ("lif", ops.lif, ref.neurons.lif, dict(tau=3.0, decay_input=False, v_threshold=0.8)),
    ("lif-soft", ops.lif, ref.neurons.lif, dict(tau=2.0, v_reset=None, surrogate="atan")),
    ("lif-erf", ops.lif, ref.neurons.lif, dict(tau=5.0, surrogate="erf", detach_reset=True)),
    ("if", ops.if_, ref.neurons.if_, dict(surrogate="piecewise_exp")),
    ("ilif", ops.ilif, ref.neurons.ilif, dict(tau=3.0, detach_reset=False)),
    ("alif", ops.alif, ref.neurons.alif, dict(v_reset=None, beta=0.3)),
]


@pytest.mark.parametrize("name,kernel,refn,kw", ACCURACY_CASES, ids=[c[0] for c in ACCURACY_CASES])
def test_gradient_error_at_most_twice_the_reference(cpu_isa, name, kernel, refn, kw):
    x = make_input((12, 3, 97), torch.float32)
    v0 = torch.randn(3, 97) * 0.3
    k, r = run_both(kernel, refn, x, extra=(v0,), **kw)
    s64, g64 = _ref64_grads(refn, x, (v0,), kw)
    if not torch.equal(s64.float(), k[0][0]):
        pytest.skip("float64 spikes differ from float32 ones: the comparison would be moot")
    for gk, gr, gd in zip(k[1], r[1], g64):
        err_kernel = (gk.double() - gd).abs().max().item()
        err_ref = (gr.double() - gd).abs().max().item()
        floor = 2 * torch.finfo(torch.float32).eps * gd.abs().max().item()
        assert err_kernel <= 2 * err_ref + floor, (err_kernel, err_ref)


@pytest.mark.parametrize("surrogate", ["sigmoid", "piecewise_exp", "erf", "triangle", "atan"])
@pytest.mark.parametrize("v_reset,detach_reset", [(None, False), (0.0, True)])
def test_nan_gradients_propagate_like_reference(cpu_isa, surrogate, v_reset, detach_reset):
    x = make_input((4, 40), torch.float32)
    x[0, 3] = float("nan")
    x[2, 17] = float("inf")
    k, r = run_both(ops.lif, ref.neurons.lif, x, surrogate=surrogate, v_reset=v_reset,
                    detach_reset=detach_reset)
    for a, b in zip(k[0] + k[1], r[0] + r[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert torch.isnan(k[1][0][:, 3]).any()  # the NaN element's gradient is NaN, not zero


def test_cpu_output_pool_stays_within_its_limit_and_can_be_emptied():
    from spikeops import _extension
    limit = _extension._C.cpu_pool_stats()["limit_bytes"]
    for n in (1 << 17, 3 << 16, 5 << 15, 1 << 18, 1 << 17):  # several pooled sizes
        x = make_input((8, n), torch.float32)
        s, v = ops.lif(x)
        s_r, v_r = ref.neurons.lif(x)
        assert torch.equal(s, s_r)
        del s, v
        assert _extension._C.cpu_pool_stats()["cached_bytes"] <= limit
    spikeops.empty_cpu_cache()
    assert _extension._C.cpu_pool_stats()["cached_bytes"] == 0
    s, _ = ops.lif(make_input((8, 1 << 17), torch.float32))  # allocates afresh after emptying
    assert s.shape == (8, 1 << 17)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_and_options(cpu_isa, seed):
    gen = torch.Generator().manual_seed(seed)

    def randint(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    shape = (randint(1, 20),) + tuple(randint(1, 70) for _ in range(randint(1, 3)))
    dtype = DTYPES[randint(0, 2)]
    x = make_input(shape, dtype, scale=0.5 + 2 * float(torch.rand(1, generator=gen)))
    v0 = torch.randn(shape[1:], generator=gen) * 0.3 if randint(0, 1) else None
    kw = dict(tau=float(randint(2, 8)) * 0.75 + 0.5, decay_input=bool(randint(0, 1)),
              v_reset=[0.0, None, -0.1][randint(0, 2)], detach_reset=bool(randint(0, 1)),
              surrogate=list(SURROGATES)[randint(0, len(SURROGATES) - 1)],
              v_threshold=0.5 + float(torch.rand(1, generator=gen)))
    kw["alpha"] = SURROGATES[kw["surrogate"]]
    k, r = run_both(ops.lif, ref.neurons.lif, x, extra=(v0,), **kw)
    assert_same(k, r, dtype)
    a0 = torch.rand(shape[1:], generator=gen) if v0 is not None else None
    k, r = run_both(ops.alif, ref.neurons.alif, x, extra=(v0, a0), beta=0.2, **kw)
    assert_same(k, r, dtype)
