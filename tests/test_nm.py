"""N:M sparse GEMM, compression and SR-STE layers against the dense masked reference."""
from __future__ import annotations

import warnings

import pytest
import torch

import spikeops
from spikeops import nm
from spikeops.ops import nm as ops_nm
from spikeops.ref import nm as ref

from conftest import skip_unless

PATTERNS = [(2, 4), (1, 4), (2, 8), (4, 8), (1, 2), (3, 16), (5, 32)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
native = skip_unless("extension")


def assert_error_within(out, same_dtype_ref, ref64, factor=2.0):
    """The kernel's max error against float64 is at most `factor` x that of PyTorch's
    same-dtype computation (plus one ulp of the output's scale, for exact references)."""
    assert out.dtype == same_dtype_ref.dtype and out.shape == ref64.shape
    assert torch.isfinite(out).all(), "kernel output has NaN/Inf (an unwritten element?)"
    err = (out.double() - ref64).abs().max().item()
    err_ref = (same_dtype_ref.double() - ref64).abs().max().item()
    ulp = torch.finfo(out.dtype).eps * max(1.0, ref64.abs().max().item())
    assert err <= factor * err_ref + ulp, f"kernel error {err:.3g} vs reference {err_ref:.3g}"


def random_weight(rows, k, dtype=torch.float32):
    return torch.randn(rows, k).to(dtype)


# ---- format: prune / compress / decompress --------------------------------------------

@pytest.mark.parametrize("n,m", PATTERNS)
def test_prune_compress_to_dense_round_trip(n, m):
    w = random_weight(24, 4 * m + 32)
    mask = nm.prune(w, n, m)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert (mask.reshape(24, -1, m).sum(-1) == n).all()
    torch.testing.assert_close(mask, ref.prune_mask(w, n, m), rtol=0, atol=0)
    w_nm = nm.compress(w, n, m)
    assert w_nm.values.shape == (24, w.shape[1] // m * n)
    assert w_nm.meta.shape == (24, (w.shape[1] + 7) // 8) and w_nm.meta.dtype == torch.uint8
    torch.testing.assert_close(w_nm.to_dense(), w * mask, rtol=0, atol=0)
    torch.testing.assert_close(w_nm.meta, ref.pack_mask(mask), rtol=0, atol=0)
    # The kept values are the largest magnitudes of every group.
    kept_min = torch.where(mask, w.abs(), torch.inf).reshape(24, -1, m).amin(-1)
    dropped_max = torch.where(mask, -torch.inf, w.abs()).reshape(24, -1, m).amax(-1)
    assert (kept_min >= dropped_max).all()


@native
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_compress_matches_reference_with_ties_and_nan(dtype):
    w = torch.randint(-3, 4, (33, 40)).to(dtype)   # many ties
    w[0, :4] = torch.tensor([float("nan"), 1.0, float("nan"), 5.0])
    w[1, :4] = torch.tensor([float("inf"), float("nan"), -float("inf"), 0.0])
    for n, m in [(2, 4), (1, 4), (3, 8)]:
        values, meta = spikeops.ops.nm_compress(w, n, m)
        mask = ref.prune_mask(w, n, m)
        torch.testing.assert_close(meta, ref.pack_mask(mask), rtol=0, atol=0)
        torch.testing.assert_close(values, w[mask].reshape(33, -1), rtol=0, atol=0,
                                   equal_nan=True)
    assert ref.unpack_meta(spikeops.ops.nm_compress(w, 2, 4)[1], 40)[0, :4].tolist() == \
        [True, False, True, False]  # NaN ranks above everything
    assert ref.unpack_meta(spikeops.ops.nm_compress(w, 2, 4)[1], 40)[1, :4].tolist() == \
        [True, True, False, False]  # NaN, then the first of two infinities


@native
def test_compress_with_given_meta_gathers():
    w = random_weight(7, 24)
    mask = nm.prune(torch.randn(7, 24), 2, 4)           # a mask unrelated to w's magnitudes
    w_nm = nm.compress(w, 2, 4, mask=mask)
    torch.testing.assert_close(w_nm.to_dense(), w * mask, rtol=0, atol=0)


def test_conv_weight_groups_run_along_input_channels():
    w = torch.randn(6, 8, 3, 3)
    mask = nm.prune(w, 2, 4)
    assert mask.shape == w.shape
    assert (mask.reshape(6, 2, 4, 3, 3).sum(2) == 2).all()
    w_nm = nm.compress(w, 2, 4)
    assert w_nm.shape == (6, 72)
    torch.testing.assert_close(nm.rows_to_conv_weight(w_nm.to_dense(), w.shape), w * mask,
                               rtol=0, atol=0)


def test_transposable_prune_is_24_both_ways():
    w = torch.randn(16, 32)
    mask = nm.prune(w, 2, 4, transposable=True)
    assert (mask.reshape(16, 8, 4).sum(-1) == 2).all()
    assert (mask.t().reshape(32, 4, 4).sum(-1) == 2).all()
    w_nm = nm.compress(w, 2, 4, transposable=True)
    torch.testing.assert_close(w_nm.mask(), mask, rtol=0, atol=0)


# ---- GEMM against the dense masked matmul ---------------------------------------------

SHAPES = [  # (x shape, rows)
    ((1, 64), 16),          # GEMV, M = 1
    ((3, 96), 7),           # odd batch and rows
    ((4, 40), 33),          # K not a multiple of 16 or 64
    ((5, 136), 70),         # tile path, K tail
    ((2, 3, 264), 45),      # 3-D x
    ((67, 520), 300),       # several batch tiles and row blocks
    ((70, 2056), 13),       # several forward column blocks (1024) and a K tail
]


def run_linear(x, w_nm, bias, fn, gy=None):
    x = x.detach().requires_grad_()
    values = w_nm.values.detach().clone().requires_grad_()
    b = None if bias is None else bias.detach().clone().requires_grad_()
    w = nm.NMTensor(values, w_nm.meta, w_nm.n, w_nm.m, w_nm.shape)
    y = fn(x, w, b)
    if gy is None:
        gy = torch.randn_like(y.float()).to(y.dtype)
    y.backward(gy)
    return y, x.grad, values.grad, None if b is None else b.grad, gy


def dense_linear(x, w, b):
    return torch.nn.functional.linear(x, w.to_dense(), b)


@native
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8), (4, 8)])
@pytest.mark.parametrize("xshape,rows", SHAPES)
def test_linear_and_gradients_match_dense_fp32(cpu_isa, n, m, xshape, rows):
    k = xshape[-1]
    x = torch.randn(xshape)
    w_nm = nm.compress(random_weight(rows, k), n, m)
    bias = torch.randn(rows)
    y, gx, gv, gb, gy = run_linear(x, w_nm, bias, spikeops.ops.nm_linear)
    y_r, gx_r, gv_r, gb_r, _ = run_linear(x, w_nm, bias, dense_linear, gy)
    # float64 oracle
    x64, w64 = x.double(), w_nm.to_dense().double()
    y64 = x64 @ w64.t() + bias.double()
    gy64 = gy.double()
    gx64 = gy64 @ w64
    gw64 = gy64.reshape(-1, rows).t() @ x64.reshape(-1, k)
    gv64 = gw64[w_nm.mask()].reshape(rows, -1)
    assert_error_within(y, y_r, y64)
    assert_error_within(gx, gx_r, gx64)
    assert_error_within(gv, gv_r, gv64)
    torch.testing.assert_close(gb, gb_r)


@native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("xshape,rows", [((1, 64), 16), ((4, 40), 33), ((67, 520), 300),
                                         ((70, 2056), 13)])
def test_linear_half_precision(cpu_isa, dtype, xshape, rows):
    x = torch.randn(xshape).to(dtype)
    w_nm = nm.compress(random_weight(rows, xshape[-1], dtype), 2, 4)
    bias = torch.randn(rows).to(dtype)
    y = spikeops.ops.nm_linear(x, w_nm, bias)
    y_r = dense_linear(x, w_nm, bias)
    y64 = x.double() @ w_nm.to_dense().double().t() + bias.double()
    assert_error_within(y, y_r, y64)
    g = torch.randn(*xshape[:-1], rows).to(dtype)
    gx = spikeops.ops.nm_linear_grad_input(g, w_nm.values, w_nm.meta, 2, 4)
    assert_error_within(gx, g @ w_nm.to_dense(), g.double() @ w_nm.to_dense().double())


@native
@pytest.mark.parametrize("n,m", PATTERNS)
def test_every_pattern(cpu_isa, n, m):
    k = 2 * m + 64
    for batch in (1, 3, 29, 130):
        x = torch.randn(batch, k)
        w_nm = nm.compress(random_weight(19, k), n, m)
        y = spikeops.ops.nm_linear(x, w_nm)
        y64 = x.double() @ w_nm.to_dense().double().t()
        assert_error_within(y, dense_linear(x, w_nm, None), y64)
        g = torch.randn(batch, 19)
        gx = spikeops.ops.nm_linear_grad_input(g, w_nm.values, w_nm.meta, n, m)
        assert_error_within(gx, g @ w_nm.to_dense(), g.double() @ w_nm.to_dense().double())


@native
def test_nan_and_inf_propagate():
    x = torch.randn(2, 32)
    x[0, 3] = float("nan")
    w = random_weight(5, 32)
    w_nm = nm.compress(w, 2, 4)
    w_nm.values[1, 0] = float("inf")
    y = spikeops.ops.nm_linear(x, w_nm)
    y_r = dense_linear(x, w_nm, None)
    torch.testing.assert_close(y.isnan(), y_r.isnan(), rtol=0, atol=0)
    torch.testing.assert_close(y.isinf(), y_r.isinf(), rtol=0, atol=0)


@native
def test_results_do_not_depend_on_thread_count():
    x = torch.randn(150, 264)
    w_nm = nm.compress(random_weight(260, 264), 2, 4)
    g = torch.randn(150, 260)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append((spikeops.ops.nm_linear(x, w_nm),
                         spikeops.ops.nm_linear_grad_input(g, w_nm.values, w_nm.meta, 2, 4),
                         spikeops.ops.nm_linear(x[:3], w_nm)))
    finally:
        torch.set_num_threads(before)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@native
def test_empty_batch_and_double_backward():
    w_nm = nm.compress(random_weight(6, 16), 2, 4)
    assert spikeops.ops.nm_linear(torch.randn(0, 16), w_nm).shape == (0, 6)
    x = torch.randn(3, 16, dtype=torch.float32, requires_grad=True)
    y = spikeops.ops.nm_linear(x, w_nm)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.sum(), x)
    x_r = x.detach().clone().requires_grad_()
    y_r = dense_linear(x_r, w_nm, None)
    (gx_r,) = torch.autograd.grad(y_r.square().sum(), x_r, create_graph=True)
    (ggx_r,) = torch.autograd.grad(gx_r.sum(), x_r)
    torch.testing.assert_close(ggx, ggx_r)


# ---- SR-STE training form ----------------------------------------------------------------

@native
@pytest.mark.parametrize("dense_grad", [True, False])
def test_masked_linear_gradient_is_the_srste_formula(cpu_isa, dense_grad):
    x = torch.randn(2, 5, 48, requires_grad=True)
    weight = torch.randn(12, 48, requires_grad=True)
    bias = torch.randn(12, requires_grad=True)
    decay = 3e-3
    meta = spikeops.ops.nm_compress(weight.detach(), 2, 4)[1]
    y = spikeops.ops.nm_masked_linear(x, weight, meta, 2, 4, bias, decay=decay,
                                      dense_grad=dense_grad)
    gy = torch.randn_like(y)
    y.backward(gy)
    mask = ref.unpack_meta(meta, 48)
    torch.testing.assert_close(y.detach(), torch.nn.functional.linear(x, weight * mask, bias)
                               .detach(), rtol=1e-5, atol=1e-5)
    gw_dense = gy.reshape(-1, 12).t() @ x.detach().reshape(-1, 48)
    expected = gw_dense + decay * (~mask) * weight.detach() if dense_grad else gw_dense * mask
    torch.testing.assert_close(weight.grad, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, gy @ (weight.detach() * mask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.grad, gy.reshape(-1, 12).sum(0))
    # the reference implements the same formula
    weight2 = weight.detach().clone().requires_grad_()
    ref.nm_masked_linear(x.detach(), weight2, meta, 2, 4, None, decay, dense_grad).backward(gy)
    torch.testing.assert_close(weight2.grad, expected, rtol=1e-5, atol=1e-5)


@native
def test_nmlinear_srste_recomputes_mask_and_trains():
    torch.manual_seed(1)
    layer = spikeops.nn.NMLinear(32, 8, n=2, m=4)
    assert (layer.mask().reshape(8, 8, 4).sum(-1) == 2).all()
    target = torch.nn.Linear(32, 8)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(256, 32)
    losses = []
    for _ in range(30):
        loss = (layer(x) - target(x).detach()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        layer.weight.mul_(-1).add_(torch.randn(8, 32))  # the mask follows the weight
    torch.testing.assert_close(layer.mask(), nm.prune(layer.weight, 2, 4), rtol=0, atol=0)


@native
def test_nmlinear_fixed_mode_and_inference():
    layer = spikeops.nn.NMLinear(64, 10, mode="fixed")
    mask = layer.mask().clone()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(10, 64))
    torch.testing.assert_close(layer.mask(), mask, rtol=0, atol=0)  # fixed: unchanged
    x = torch.randn(7, 64)
    y = layer(x)
    y.sum().backward()
    assert (layer.weight.grad[~mask] == 0).all()
    inf = layer.to_inference()
    assert isinstance(inf, spikeops.nn.NMLinearInference)
    torch.testing.assert_close(inf(x), y.detach(), rtol=0, atol=0)


@native
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_nmconv2d_matches_masked_dense_conv(padding_mode):
    conv = spikeops.nn.NMConv2d(8, 6, 3, stride=2, padding=1, padding_mode=padding_mode)
    x = torch.randn(2, 8, 9, 11)
    y = conv(x)
    mask = conv.mask()
    dense = torch.nn.Conv2d(8, 6, 3, stride=2, padding=1, padding_mode=padding_mode)
    with torch.no_grad():
        dense.weight.copy_(conv.weight * mask)
        dense.bias.copy_(conv.bias)
    torch.testing.assert_close(y, dense(x))
    y.sum().backward()
    assert conv.weight.grad.shape == conv.weight.shape
    torch.testing.assert_close(conv.to_inference()(x), y.detach(), rtol=1e-5, atol=1e-5)


def test_sparsify_replaces_layers_in_place():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10), torch.nn.Linear(10, 4),
                                torch.nn.Conv2d(4, 8, 3), torch.nn.Conv2d(3, 3, 1))
    before = model[0].weight.detach().clone()
    replaced = nm.sparsify_(model, 2, 4)
    assert replaced == ["0", "2", "4"]  # 10 and 3 inputs are not multiples of 4: skipped
    assert isinstance(model[0], spikeops.nn.NMLinear) and isinstance(model[4], spikeops.nn.NMConv2d)
    torch.testing.assert_close(model[0].weight, before, rtol=0, atol=0)
    only_first = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 8))
    assert nm.sparsify_(only_first, 1, 4, filter_fn=lambda name, mod: name == "0") == ["0"]
    with pytest.raises(ValueError, match="filter_fn"):
        nm.sparsify_(torch.nn.Sequential(torch.nn.Linear(10, 4)), 2, 4,
                     filter_fn=lambda name, mod: True)


# ---- torch.library / torch.compile ----------------------------------------------------------

@native
def test_opcheck():
    w = random_weight(12, 48)
    values, meta = spikeops.ops.nm_compress(w, 2, 4)
    x = torch.randn(3, 48, requires_grad=True)
    b = torch.randn(12, requires_grad=True)
    v = values.clone().requires_grad_()
    g = torch.randn(3, 12, requires_grad=True)
    wr = w.clone().requires_grad_()
    cases = [
        (torch.ops.spikeops.nm_compress.default, (w, None, 2, 4)),
        (torch.ops.spikeops.nm_compress.default, (w, meta, 2, 4)),
        (torch.ops.spikeops.nm_linear.default, (x, v, meta, 2, 4, b)),
        (torch.ops.spikeops.nm_linear.default, (x, v, meta, 2, 4, None)),
        (torch.ops.spikeops.nm_linear_grad_input.default, (g, v, meta, 2, 4)),
        (torch.ops.spikeops.nm_masked_linear.default, (x, wr, values, meta, 2, 4, b, 2e-4, True)),
        (torch.ops.spikeops.nm_masked_linear.default, (x, wr, values, meta, 2, 4, None, 0.0,
                                                       False)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@native
def test_compile_fullgraph():
    layer = spikeops.nn.NMLinear(32, 16)
    inf = torch.nn.Linear(32, 16)
    nm.sparsify_(torch.nn.Sequential(inf), 2, 4)
    x = torch.randn(5, 32, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    y = compiled(x)
    y.sum().backward()
    gx = x.grad.clone()
    x.grad = None
    y_e = layer(x)
    y_e.sum().backward()
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(gx, x.grad)
    infer = layer.to_inference()
    torch.testing.assert_close(torch.compile(infer, fullgraph=True)(x), infer(x))


# ---- bad input ------------------------------------------------------------------------------

@native
@pytest.mark.parametrize("call,match", [
    (lambda: nm.compress(torch.randn(4, 10), 2, 4), "multiple of m"),
    (lambda: nm.compress(torch.randn(4, 16), 4, 4), "n: expected"),
    (lambda: nm.compress(torch.randn(4, 16), 0, 4), "n: expected"),
    (lambda: nm.compress(torch.randn(4, 18), 2, 6), "m: expected a power of two"),
    (lambda: nm.prune(torch.randn(4, 16), 2, 4, criterion="random"), "criterion"),
    (lambda: nm.prune(torch.randn(8, 16), 1, 4, transposable=True), "transposable"),
    (lambda: nm.prune(torch.randn(16), 2, 4), "w: expected a 2-D"),
    (lambda: nm.prune(torch.ones(4, 8, dtype=torch.int64), 2, 4), "w: expected a floating"),
    (lambda: torch.ops.spikeops.nm_compress(torch.randn(4, 16, dtype=torch.float64), None, 2, 4),
     "weight: expected float32"),
    (lambda: torch.ops.spikeops.nm_compress(torch.randn(4, 16), torch.zeros(4, 3, dtype=torch.uint8),
                                            2, 4), "meta: expected shape"),
])
def test_bad_format_arguments(call, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        call()


def _w(n=2, m=4, rows=6, k=32, dtype=torch.float32):
    values, meta = spikeops.ops.nm_compress(torch.randn(rows, k).to(dtype), n, m)
    return values, meta


@native
def test_bad_linear_arguments():
    values, meta = _w()
    x = torch.randn(3, 32)
    w = nm.NMTensor(values, meta, 2, 4, (6, 32))
    op = torch.ops.spikeops.nm_linear
    cases = [
        (lambda: spikeops.ops.nm_linear(torch.randn(3, 31), w), "x: expected in_features"),
        (lambda: spikeops.ops.nm_linear(x.double(), w), "x: expected float32"),
        (lambda: spikeops.ops.nm_linear(x.half(), w), "values: dtype"),
        (lambda: spikeops.ops.nm_linear(x, w, torch.randn(5)), "bias: expected shape"),
        (lambda: spikeops.ops.nm_linear(x, w, torch.randn(6).half()), "bias: dtype"),
        (lambda: op(x, values, meta.to(torch.int8), 2, 4, None), "meta: expected uint8"),
        (lambda: op(x, values, meta[:, :3], 2, 4, None), "meta: expected shape"),
        (lambda: op(x, values, meta, 2, 8, None), "meta: expected shape|x: expected in_features"),
        (lambda: op(x, values[:, :15], meta, 2, 4, None), "values: expected a positive multiple"),
        (lambda: op(x, values, meta, 4, 4, None), "n: expected"),
        (lambda: op(x, values.to("meta"), meta, 2, 4, None), "values: expected device"),
        (lambda: op(torch.tensor(1.0), values, meta, 2, 4, None), "x: expected a tensor"),
        (lambda: torch.ops.spikeops.nm_linear_grad_input(torch.randn(3, 5), values, meta, 2, 4),
         "grad_out: expected out_features"),
        (lambda: torch.ops.spikeops.nm_masked_linear(x, torch.randn(6, 32), values, meta, 2, 4,
                                                     None, -1.0, True), "decay"),
        (lambda: torch.ops.spikeops.nm_masked_linear(x, torch.randn(6, 36), values, meta, 2, 4,
                                                     None, 0.0, True), "weight: expected shape"),
        (lambda: spikeops.nn.NMLinear(30, 4), "in_features"),
        (lambda: spikeops.nn.NMLinear(32, 4, mode="dense"), "mode"),
        (lambda: spikeops.nn.NMConv2d(8, 8, 3, groups=2), "groups"),
    ]
    for call, match in cases:
        with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
            call()


@native
def test_inconsistent_meta_is_rejected():
    values, meta = _w()
    bad = meta.clone()
    bad[2, 1] ^= 0b00010001  # flips one bit in each of two groups: 1 and 3 kept
    x = torch.randn(3, 32)
    for call in (lambda: torch.ops.spikeops.nm_linear(x, values, bad, 2, 4, None),
                 lambda: torch.ops.spikeops.nm_linear(x[:1], values, bad, 2, 4, None),
                 lambda: torch.ops.spikeops.nm_linear_grad_input(torch.randn(3, 6), values, bad,
                                                                 2, 4),
                 lambda: torch.ops.spikeops.nm_compress(torch.randn(6, 32), bad, 2, 4),
                 lambda: nm.NMTensor.from_parts(values, bad, 2, 4)):
        with pytest.raises((ValueError, RuntimeError), match="meta"):
            call()
    padded_values, padded_meta = _w(k=12)  # 12 columns: the padding bits must stay zero
    padded_meta[0, 1] |= 0x80
    with pytest.raises((ValueError, RuntimeError), match="meta"):
        torch.ops.spikeops.nm_linear(torch.randn(2, 12), padded_values, padded_meta, 2, 4, None)
    assert nm.NMTensor.from_parts(values, meta, 2, 4).shape == (6, 32)


def test_reference_fallback_matches_native(monkeypatch):
    if not spikeops._extension.AVAILABLE:
        pytest.skip("needs the extension to compare")
    x = torch.randn(4, 32)
    w_nm = nm.compress(torch.randn(6, 32), 2, 4)
    y_native = spikeops.ops.nm_linear(x, w_nm)
    monkeypatch.setattr(spikeops._extension, "AVAILABLE", False)
    y_ref = spikeops.ops.nm_linear(x, w_nm)
    torch.testing.assert_close(y_native, y_ref)
    values, meta = spikeops.ops.nm_compress(w_nm.to_dense(), 2, 4, meta=w_nm.meta)
    torch.testing.assert_close(values, w_nm.values, rtol=0, atol=0)


# ---- CUDA ---------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("batch", [1, 7, 300])
def test_cuda_matches_cpu(dtype, n, m, batch):
    k, rows = 256, 192
    w = random_weight(rows, k, dtype)
    w_cpu = nm.compress(w, n, m)
    w_gpu = nm.compress(w.cuda(), n, m)
    torch.testing.assert_close(w_gpu.meta.cpu(), w_cpu.meta, rtol=0, atol=0)
    torch.testing.assert_close(w_gpu.values.cpu(), w_cpu.values, rtol=0, atol=0)
    x = torch.randn(batch, k).to(dtype)
    bias = torch.randn(rows).to(dtype)
    y = spikeops.ops.nm_linear(x.cuda(), w_gpu, bias.cuda()).cpu()
    y64 = x.double() @ w_cpu.to_dense().double().t() + bias.double()
    assert_error_within(y, dense_linear(x, w_cpu, bias), y64, factor=4.0)
    g = torch.randn(batch, rows).to(dtype)
    gx = spikeops.ops.nm_linear_grad_input(g.cuda(), w_gpu.values, w_gpu.meta, n, m).cpu()
    assert_error_within(gx, g @ w_cpu.to_dense(), g.double() @ w_cpu.to_dense().double(),
                        factor=4.0)


@pytest.mark.cuda
def test_cuda_24_fallback_warns_once_and_matches(monkeypatch):
    monkeypatch.setattr(ops_nm, "_warned_no_tensor_cores", False)
    k, rows, batch = 96, 64, 32  # K not a multiple of 64: no sparse tensor cores
    w_nm = nm.compress(random_weight(rows, k, torch.float16).cuda(), 2, 4)
    x = torch.randn(batch, k, device="cuda", dtype=torch.float16)
    with pytest.warns(UserWarning, match="sparse tensor cores"):
        y = spikeops.ops.nm_linear(x, w_nm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spikeops.ops.nm_linear(x, w_nm)           # once: no second warning
    w_cpu = nm.NMTensor(w_nm.values.cpu(), w_nm.meta.cpu(), 2, 4, w_nm.shape)
    y64 = x.cpu().double() @ w_cpu.to_dense().double().t()
    assert_error_within(y.cpu(), dense_linear(x.cpu(), w_cpu, None), y64, factor=4.0)
