"""Spike sparse convolution on the CPU (spikeops.ops.sparse, spikeops.sparse, spikeops.nn
sparse layers) against the pure-PyTorch reference (spikeops.ref.sparse_conv, float64) and
dense torch convolutions at the active sites."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import spikeops
from spikeops import nn as snn
from spikeops.ops import sparse as sc
from spikeops.ref import sparse_conv as ref
from spikeops.sparse import SparseTensor, events_to_sparse, voxelize

from conftest import skip_unless

native = skip_unless("extension")

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
SHAPES = {1: (23,), 2: (11, 9), 3: (9, 8, 7)}


def random_indices(shape, batch_size=2, density=0.25, shuffle=True):
    mask = torch.rand(batch_size, *shape) < density
    idx = mask.nonzero().to(torch.int32)
    if shuffle:
        idx = idx[torch.randperm(idx.shape[0])]
    return idx


def sorted_pairs(pr):
    """Pairs sorted by (output row, input row)."""
    if pr.shape[0] == 0:
        return pr
    key = pr[:, 1] * (pr[:, 0].max() + 1) + pr[:, 0]
    return pr[torch.argsort(key)]


def at_sites(dense, indices):
    return dense.movedim(1, -1)[tuple(indices.to(torch.int64).unbind(1))]


def assert_close_to_exact(got, exact, dtype, what):
    """fp32: within 1e-5 of the scale (fp32 accumulation of at most a few hundred terms);
    bf16 / fp16: one rounding of the output (relative 2^-8 / 2^-11) plus fp32 accumulation."""
    scale = exact.abs().max().item() if exact.numel() else 1.0
    rtol = {torch.float32: 1e-5, torch.bfloat16: 2 ** -8, torch.float16: 2 ** -11}[dtype]
    torch.testing.assert_close(got.double(), exact, rtol=rtol, atol=1e-5 * max(scale, 1.0),
                               msg=lambda m: f"{what}: {m}")


# ---- kernel maps ----------------------------------------------------------------------------

MAP_CASES = [
    # ndim, kernel, stride, padding, dilation, subm
    (1, 3, 1, 0, 1, True), (1, 5, 2, 2, 1, False), (1, 1, 1, 0, 1, True),
    (2, 3, 1, 0, 1, True), (2, 3, 2, 1, 1, False), (2, 2, 2, 0, 1, False),
    (2, (3, 5), 1, 0, (2, 1), True), (2, (1, 3), (1, 2), (0, 1), 1, False),
    (3, 3, 1, 0, 1, True), (3, 3, 2, 1, 1, False), (3, 2, 2, 0, 1, False),
    (3, 5, 1, 0, 1, True), (3, 3, 1, 2, 2, False), (3, 1, 1, 0, 1, False),
    (3, 4, 1, 0, 1, True),  # even kernel: centre is the upper middle tap
]


@native
@pytest.mark.parametrize("case", MAP_CASES)
def test_kernel_map_matches_ref(case):
    ndim, k, s, p, d, subm = case
    shape = SHAPES[ndim]
    idx = random_indices(shape, 3)
    out_idx, out_shape, nbmap = sc.conv_map(idx, shape, 3, k, s, p, d, subm)
    r_idx, r_shape, r_pairs = ref.kernel_map(idx, shape, 3, k, s, p, d, subm)
    assert tuple(out_shape) == tuple(r_shape)
    assert torch.equal(out_idx, r_idx)  # same sites in the same order (subm: input order)
    pairs = sc.nbmap_to_pairs(nbmap)
    assert len(pairs) == len(r_pairs)
    for j, (a, b) in enumerate(zip(pairs, r_pairs)):
        assert torch.equal(sorted_pairs(a), sorted_pairs(b)), f"offset {j}"
    # The input-major table holds the same pairs.
    inv = sc.map_transpose(nbmap, idx.shape[0])
    for j, a in enumerate(sc.nbmap_to_pairs(inv)):
        assert torch.equal(sorted_pairs(a.flip(1)), sorted_pairs(pairs[j])), f"offset {j}"


@native
@pytest.mark.parametrize("k", [1, 3, 5, (3, 1, 5)])
def test_subm_transpose_is_flip(k):
    idx = random_indices((9, 8, 7), 2, 0.3)
    _, _, nb = sc.conv_map(idx, (9, 8, 7), 2, k, 1, 0, 2, True)
    assert torch.equal(sc.map_transpose(nb, idx.shape[0]), nb.flip(1))


@native
def test_kernel_map_threads_and_repeat_identical():
    idx = random_indices((30, 30, 30), 2, 0.1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = sc.conv_map(idx, (30, 30, 30), 2, 3, 2, 1, 1, False)
        torch.set_num_threads(max(2, before))
        b = sc.conv_map(idx, (30, 30, 30), 2, 3, 2, 1, 1, False)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


@native
def test_kernel_map_empty():
    idx = torch.zeros(0, 4, dtype=torch.int32)
    oi, osh, nb = sc.conv_map(idx, (5, 5, 5), 1, 3, 1, 0, 1, True)
    assert oi.shape == (0, 4) and nb.shape == (0, 27)
    oi, osh, nb = sc.conv_map(idx, (5, 5, 5), 1, 3, 2, 0, 1, False)
    assert oi.shape == (0, 4) and nb.shape == (0, 27) and osh == (2, 2, 2)


# ---- convolution against the reference ------------------------------------------------------

CONV_CASES = [
    # ndim, kernel, stride, padding, dilation, subm, cin, cout
    (1, 3, 1, 0, 1, True, 5, 7),
    (1, 5, 2, 1, 1, False, 16, 17),
    (2, 3, 1, 0, 1, True, 33, 20),
    (2, 3, 2, 1, 1, False, 3, 70),
    (2, (3, 1), 1, 0, (1, 2), True, 1, 1),
    (3, 3, 1, 0, 1, True, 17, 33),
    (3, 3, 2, 1, 1, False, 8, 16),
    (3, 2, 2, 0, 1, False, 64, 64),
    (3, 5, 1, 0, 1, True, 4, 9),
    (3, 1, 1, 0, 1, True, 70, 48),
    (3, 3, 1, 1, 2, False, 6, 5),
]


def run_conv(features, idx, shape, bs, weight, bias, s, p, d, subm, spikes=None):
    ndim = len(shape)
    k = tuple(weight.shape[1:-1])
    out_idx, out_shape, nbmap = sc.conv_map(idx, shape, bs, k, s, p, d, subm)
    return sc.sparse_conv(features, nbmap, weight, bias, spikes), out_idx, out_shape


@native
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_conv_forward_backward_matches_ref(cpu_isa, case, dtype):
    ndim, k, s, p, d, subm, cin, cout = case
    shape = SHAPES[ndim]
    k = ref._tuple(k, ndim, "k")
    idx = random_indices(shape, 2)
    n = idx.shape[0]
    x = torch.randn(n, cin).to(dtype)
    w = (torch.randn(cout, *k, cin) / (cin * math.prod(k)) ** 0.5).to(dtype)
    b = torch.randn(cout).to(dtype)
    g = torch.randn(1, cout)  # broadcast later to the output rows
    # float64 reference on the same (rounded) inputs
    xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
    y_ref, r_idx, r_shape = ref.sparse_conv(xd, idx, shape, 2, wd, bd, s, p, d, subm)
    gy = torch.randn(y_ref.shape).to(dtype)
    y_ref.backward(gy.double())
    for spikes in (False, True):
        xs, ws, bs_ = (t.clone().requires_grad_() for t in (x, w, b))
        y, out_idx, out_shape = run_conv(xs, idx, shape, 2, ws, bs_, s, p, d, subm, spikes)
        assert y.dtype == dtype and torch.equal(out_idx, r_idx)
        assert_close_to_exact(y, y_ref.detach(), dtype, "out")
        y.backward(gy)
        assert_close_to_exact(xs.grad, xd.grad, dtype, "grad features")
        # the weight gradient sums over up to N pairs: fp32 accumulation, then one rounding
        assert_close_to_exact(ws.grad, wd.grad, dtype if dtype != torch.float32 else dtype,
                              "grad weight")
        assert_close_to_exact(bs_.grad, bd.grad, dtype, "grad bias")


@native
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("k,d", [(3, 1), (5, 1), (3, 2)])
def test_subm_matches_dense_conv(cpu_isa, ndim, k, d):
    shape = SHAPES[ndim]
    idx = random_indices(shape, 2, 0.3)
    cin, cout = 6, 11
    x = torch.randn(idx.shape[0], cin, dtype=torch.float64)
    w = torch.randn(cout, *([k] * ndim), cin, dtype=torch.float64)
    b = torch.randn(cout, dtype=torch.float64)
    y, _, _ = run_conv(x.float(), idx, shape, 2, w.float(), b.float(), 1, 0, d, True)
    dense = ref.to_dense(x, idx, shape, 2)
    yd = CONV[ndim](dense, w.movedim(-1, 1), b, padding=d * (k // 2), dilation=d)
    assert_close_to_exact(y, at_sites(yd, idx), torch.float32, "subm vs dense")


@native
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("k,s,p,d", [(3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 0, 2), (5, 3, 2, 1)])
def test_regular_and_inverse_match_dense(cpu_isa, ndim, k, s, p, d):
    shape = SHAPES[ndim]
    idx = random_indices(shape, 2, 0.3)
    cin, cout = 5, 7
    x = torch.randn(idx.shape[0], cin, dtype=torch.float64)
    w = torch.randn(cout, *([k] * ndim), cin, dtype=torch.float64)
    y, out_idx, out_shape = run_conv(x.float(), idx, shape, 2, w.float(), None, s, p, d, False)
    yd = CONV[ndim](ref.to_dense(x, idx, shape, 2), w.movedim(-1, 1), stride=s, padding=p,
                    dilation=d)
    assert tuple(yd.shape[2:]) == tuple(out_shape)
    assert_close_to_exact(y, at_sites(yd, out_idx), torch.float32, "regular vs dense")
    # every dense output that some input reaches is an output site; the rest are zero
    reach = CONV[ndim](ref.to_dense(torch.ones(idx.shape[0], 1, dtype=torch.float64), idx,
                                    shape, 2), torch.ones(1, 1, *([k] * ndim),
                                                          dtype=torch.float64),
                       stride=s, padding=p, dilation=d)
    assert (reach[:, 0] > 0).sum().item() == out_idx.shape[0]
    # inverse conv back to the fine sites == dense transposed conv at those sites
    w2 = torch.randn(cin, *([k] * ndim), cout, dtype=torch.float64)
    st = SparseTensor(y.double().float(), out_idx, out_shape, 2)
    _, _, nbmap = sc.conv_map(idx, shape, 2, k, s, p, d, False)
    inv = sc.map_transpose(nbmap, idx.shape[0])
    z = sc.sparse_conv(st.features, inv, w2.float())
    zd = CONVT[ndim](ref.to_dense(y.double(), out_idx, out_shape, 2), w2.movedim(-1, 0),
                     stride=s, dilation=d)
    # full transposed conv (no cropping): fine coordinate i sits at i + padding; crop / pad
    # it to the fine grid
    for dim, n_fine in enumerate(shape):
        zd = zd.narrow(dim + 2, p, min(n_fine, zd.shape[dim + 2] - p))
    pad = []
    for n_fine, n_t in zip(reversed(shape), reversed(zd.shape[2:])):
        pad += [0, n_fine - n_t]
    zd = F.pad(zd, pad)
    assert_close_to_exact(z, at_sites(zd, idx), torch.float32, "inverse vs dense")


@native
def test_results_independent_of_threads():
    idx = random_indices((20, 20, 20), 2, 0.15)
    x = torch.randn(idx.shape[0], 24)
    w = torch.randn(40, 3, 3, 3, 24)
    _, _, nb = sc.conv_map(idx, (20, 20, 20), 2, 3, 1, 0, 1, True)
    before = torch.get_num_threads()
    outs = []
    try:
        for t in (1, max(2, before)):
            torch.set_num_threads(t)
            xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
            y = sc.sparse_conv(xs, nb, ws, spikes=False)
            y.backward(torch.ones_like(y))
            outs.append((y, xs.grad, ws.grad))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


# ---- spike-aware path -----------------------------------------------------------------------

@native
@pytest.mark.parametrize("levels", [1, 4])
# cin 100: two 64-channel mask words, the second partial
@pytest.mark.parametrize("cin,cout", [(16, 16), (37, 70), (64, 64), (100, 24)])
def test_spike_path_identical_to_dense_path(cpu_isa, levels, cin, cout):
    idx = random_indices((12, 12, 12), 2, 0.3)
    # binary spikes (levels 1) or integer counts 0..4 (the integer neuron), ~10-30% firing
    x = torch.randint(0, levels + 1, (idx.shape[0], cin)).float()
    x = x * (torch.rand_like(x) < 0.3)
    w = torch.randn(cout, 3, 3, 3, cin)
    b = torch.randn(cout)
    _, _, nb = sc.conv_map(idx, (12, 12, 12), 2, 3, 1, 0, 1, True)
    dense = sc.sparse_conv(x, nb, w, b, spikes=False)
    skip = sc.sparse_conv(x, nb, w, b, spikes=True)
    auto = sc.sparse_conv(x, nb, w, b, spikes=None)
    assert torch.equal(dense, skip)
    assert torch.equal(dense, auto)
    g = torch.randn(dense.shape)
    gw = [torch.ops.spikeops.sparse_conv_wgrad.default(g, x, nb, sp) for sp in (0, 1, -1)]
    assert torch.equal(gw[0], gw[1]) and torch.equal(gw[0], gw[2])
    exact_gw = torch.stack([g.double().t() @ (x.double()[nb[:, k].clamp(min=0).long()]
                                              * (nb[:, k:k + 1] >= 0)) for k in range(27)], 1)
    assert_close_to_exact(gw[1], exact_gw, torch.float32, "spike weight grad")
    exact, _, _ = ref.sparse_conv(x.double(), idx, (12, 12, 12), 2, w.double(), b.double(),
                                  subm=True)
    assert_close_to_exact(skip, exact, torch.float32, "spikes")


@native
def test_spike_path_nan_and_negative_values_like_dense(cpu_isa):
    # Not spikes, but the skipping path must still treat NaN and -1 as non-zero values.
    idx = random_indices((10, 10, 10), 1, 0.4)
    x = (torch.rand(idx.shape[0], 70) < 0.2).float()
    x[3, 5], x[7, 66], x[9, 0] = float("nan"), -1.0, 2.5
    w = torch.randn(8, 3, 3, 3, 70)
    _, _, nb = sc.conv_map(idx, (10, 10, 10), 1, 3, 1, 0, 1, True)
    dense = sc.sparse_conv(x, nb, w, spikes=False)
    assert torch.equal(dense.isnan(), sc.sparse_conv(x, nb, w, spikes=True).isnan())
    ok = ~dense.isnan()
    assert torch.equal(dense[ok], sc.sparse_conv(x, nb, w, spikes=True)[ok])


@native
def test_spike_path_many_rows_two_threads(cpu_isa):
    # The spike CSR is filled by threads over chunks of rows: more rows than several chunks,
    # two threads, so a row's writes spilling into a neighbouring chunk would show here.
    torch.manual_seed(3)
    idx = random_indices((24, 24, 24), 1, 0.6)
    assert idx.shape[0] > 3 * 2048
    x = (torch.rand(idx.shape[0], 37) < 0.1).float()
    x[::5] *= torch.randint(1, 4, (x[::5].shape[0], 1)).float()  # some integer counts
    w = torch.randn(20, 3, 3, 3, 37)
    _, _, nb = sc.conv_map(idx, (24, 24, 24), 1, 3, 1, 0, 1, True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dense = sc.sparse_conv(x, nb, w, spikes=False)
        g = torch.randn(dense.shape)
        gw = torch.ops.spikeops.sparse_conv_wgrad.default(g, x, nb, 0)
        for _ in range(3):
            assert torch.equal(sc.sparse_conv(x, nb, w, spikes=True), dense)
            assert torch.equal(torch.ops.spikeops.sparse_conv_wgrad.default(g, x, nb, 1), gw)
    finally:
        torch.set_num_threads(threads)


@native
def test_spike_path_bf16_and_layer():
    idx = random_indices((10, 10, 10), 1, 0.3)
    x = (torch.rand(idx.shape[0], 32) < 0.1).to(torch.bfloat16)
    conv = snn.SubMConv3d(32, 48, 3, spikes=True).to(torch.bfloat16)
    conv_d = snn.SubMConv3d(32, 48, 3, spikes=False).to(torch.bfloat16)
    conv_d.load_state_dict(conv.state_dict())
    st = SparseTensor(x, idx, (10, 10, 10), 1)
    assert torch.equal(conv(st).features, conv_d(st).features)


# ---- empty inputs ---------------------------------------------------------------------------

@native
def test_empty_inputs():
    nb = torch.zeros(0, 27, dtype=torch.int32)
    x = torch.zeros(0, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, 8, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = sc.sparse_conv(x, nb, w, b)
    assert y.shape == (0, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 8) and torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(b.grad, torch.zeros_like(b))
    # outputs without any neighbour get the bias only
    nb2 = torch.full((3, 27), -1, dtype=torch.int32)
    y2 = sc.sparse_conv(x.detach(), nb2, w.detach(), b.detach())
    assert torch.equal(y2, b.detach().expand(3, 4))
    # zero channels
    y3 = sc.sparse_conv(torch.zeros(5, 0), torch.zeros(5, 27, dtype=torch.int32),
                        torch.zeros(4, 3, 3, 3, 0), None)
    assert torch.equal(y3, torch.zeros(5, 4))


# ---- torch.library / torch.compile ----------------------------------------------------------

@native
def test_opcheck():
    idx = random_indices((8, 7, 6), 2, 0.3)
    x = torch.randn(idx.shape[0], 5, requires_grad=True)
    w = torch.randn(6, 27, 5, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_map.default,
                          (idx, [8, 7, 6], 2, [3], [1], [0], [1], True))
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_map.default,
                          (idx, [8, 7, 6], 2, [3, 3, 3], [2, 2, 2], [1, 1, 1], [1, 1, 1], False))
    _, _, nb = sc.conv_map(idx, (8, 7, 6), 2, 3, 1, 0, 1, True)
    torch.library.opcheck(torch.ops.spikeops.sparse_map_transpose.default, (nb, idx.shape[0]))
    for spikes in (-1, 0, 1):
        torch.library.opcheck(torch.ops.spikeops.sparse_conv_fwd.default, (x, nb, w, b, spikes))
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_fwd.default,
                          (x, nb, w, b, 0, sc.map_transpose(nb, idx.shape[0])))
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_fwd.default, (x, nb, w, None, 0))
    g = torch.randn(idx.shape[0], 6)
    for spikes in (-1, 0, 1):
        torch.library.opcheck(torch.ops.spikeops.sparse_conv_wgrad.default,
                              (g, x.detach(), nb, spikes))


@native
def test_compile_fullgraph_network():
    idx = random_indices((10, 10, 10), 2, 0.2)
    shape = (10, 10, 10)
    _, _, nb1 = sc.conv_map(idx, shape, 2, 3, 1, 0, 1, True)
    down_idx, down_shape, nb2 = sc.conv_map(idx, shape, 2, 3, 2, 1, 1, False)
    x = torch.randn(idx.shape[0], 8)
    w1 = torch.randn(16, 3, 3, 3, 8, requires_grad=True)
    w2 = torch.randn(12, 3, 3, 3, 16, requires_grad=True)
    b1 = torch.randn(16, requires_grad=True)

    def net(x, nb1, nb2, w1, b1, w2):
        h = torch.relu(sc.sparse_conv(x, nb1, w1, b1))
        return sc.sparse_conv(h, nb2, w2).sum(dim=1)

    compiled = torch.compile(net, fullgraph=True)
    y = compiled(x, nb1, nb2, w1, b1, w2)
    y.sum().backward()
    grads = [t.grad.clone() for t in (w1, b1, w2)]
    for t in (w1, b1, w2):
        t.grad = None
    y_e = net(x, nb1, nb2, w1, b1, w2)
    y_e.sum().backward()
    # inductor reorders the float sums around our ops (relu, .sum): not bit-identical
    torch.testing.assert_close(y, y_e, rtol=1e-5, atol=1e-4)
    for a, t in zip(grads, (w1, b1, w2)):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-4)


# ---- bad input ------------------------------------------------------------------------------

@native
def test_bad_indices_name_the_argument():
    shape = (6, 6, 6)
    good = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0]], dtype=torch.int32)

    def conv_map(idx, bs=2, subm=True):
        return sc.conv_map(idx, shape, bs, 3, 1 if subm else 2, 0, 1, subm)

    with pytest.raises(TypeError, match="indices must be int32"):
        conv_map(good.long())
    for subm in (True, False):
        with pytest.raises(ValueError, match="non-negative"):
            conv_map(torch.tensor([[0, 1, -1, 3]], dtype=torch.int32), subm=subm)
        with pytest.raises(ValueError, match="outside spatial_shape"):
            conv_map(torch.tensor([[0, 1, 6, 3]], dtype=torch.int32), subm=subm)
        with pytest.raises(ValueError, match="batch index >= batch_size"):
            conv_map(good, bs=1, subm=subm)
        with pytest.raises(ValueError, match="duplicate coordinates"):
            conv_map(torch.cat([good, good[:1]]), subm=subm)
    with pytest.raises(ValueError, match=r"indices must have shape \[N, 4\]"):
        conv_map(good[:, :3])
    with pytest.raises(ValueError, match="stride must be 1"):
        sc.conv_map(good, shape, 2, 3, 2, 0, 1, True)
    with pytest.raises(ValueError, match="empty output"):
        sc.conv_map(good, shape, 2, 9, 1, 0, 1, False)
    # the C++ op itself raises the same errors
    with pytest.raises(ValueError, match="duplicate coordinates"):
        torch.ops.spikeops.sparse_conv_map.default(torch.cat([good, good[:1]]), [6, 6, 6], 2,
                                                   [3], [1], [0], [1], True)
    with pytest.raises(ValueError, match="duplicate coordinates"):
        SparseTensor(torch.zeros(3, 2), torch.cat([good, good[:1]]), shape, 2)


@native
def test_bad_conv_arguments():
    idx = random_indices((6, 6, 6), 1, 0.3)
    _, _, nb = sc.conv_map(idx, (6, 6, 6), 1, 3, 1, 0, 1, True)
    x = torch.randn(idx.shape[0], 4)
    with pytest.raises(ValueError, match="channels but weight expects Cin=5"):
        sc.sparse_conv(x, nb, torch.randn(3, 3, 3, 3, 5))
    with pytest.raises(ValueError, match="weight must be"):
        sc.sparse_conv(x, nb, torch.randn(3, 2, 2, 2, 4))
    with pytest.raises(TypeError, match="weight: dtype"):
        sc.sparse_conv(x, nb, torch.randn(3, 3, 3, 3, 4, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="bias must be"):
        sc.sparse_conv(x, nb, torch.randn(3, 3, 3, 3, 4), torch.randn(4))
    bad = nb.clone()
    bad[0, 0] = idx.shape[0]
    with pytest.raises(ValueError, match="nbmap has an entry outside"):
        sc.sparse_conv(x, bad, torch.randn(3, 3, 3, 3, 4))
    with pytest.raises(TypeError, match="spikes"):
        sc.sparse_conv(x, nb, torch.randn(3, 3, 3, 3, 4), spikes="yes")
    layer = snn.SubMConv3d(5, 3, 3)
    with pytest.raises(ValueError, match="in_channels=5"):
        layer(SparseTensor(x, idx, (6, 6, 6), 1))


@native
def test_indice_key_cache_and_errors():
    idx = random_indices((8, 8, 8), 2, 0.3)
    st = SparseTensor(torch.randn(idx.shape[0], 4), idx, (8, 8, 8), 2)
    a = snn.SubMConv3d(4, 6, 3, indice_key="s1")
    b = snn.SubMConv3d(6, 6, 3, indice_key="s1")
    y = b(a(st))
    assert "s1" in y.indice_dict and y.indice_dict is st.indice_dict
    nb_obj = y.indice_dict["s1"].nbmap
    y2 = b(y)
    assert y2.indice_dict["s1"].nbmap is nb_obj  # reused, not rebuilt
    with pytest.raises(ValueError, match="indice_key 's1' was built with"):
        snn.SubMConv3d(6, 6, 5, indice_key="s1")(y)
    with pytest.raises(ValueError, match="no cached strided conv"):
        snn.SparseInverseConv3d(6, 4, 3, indice_key="nope")(y)
    with pytest.raises(ValueError, match="submanifold map"):
        snn.SparseInverseConv3d(6, 4, 3, indice_key="s1")(y)
    down = snn.SparseConv3d(6, 8, 3, 2, 1, indice_key="d1")(y)
    with pytest.raises(ValueError, match="kernel_size"):
        snn.SparseInverseConv3d(8, 4, 2, indice_key="d1")(down)
    with pytest.raises(ValueError, match="not at the sites"):
        snn.SparseInverseConv3d(6, 4, 3, indice_key="d1")(y)


# ---- layers ---------------------------------------------------------------------------------

@native
def test_layers_network_matches_ref_and_roundtrip():
    shape = (12, 10, 9)
    idx = random_indices(shape, 2, 0.2)
    x = torch.randn(idx.shape[0], 5)
    st = SparseTensor(x, idx, shape, 2)
    net = snn.SparseSequential(
        snn.SubMConv3d(5, 8, 3, indice_key="subm1"),
        snn.SparseBatchNorm(8), torch.nn.ReLU(),
        snn.SparseConv3d(8, 16, 3, stride=2, padding=1, indice_key="down1"),
        torch.nn.ReLU(),
        snn.SubMConv3d(16, 16, 3, indice_key="subm2"),
        snn.SparseInverseConv3d(16, 4, 3, indice_key="down1"),
    ).double()
    out = net(st.replace_feature(x.double()))
    assert torch.equal(out.indices, idx) and out.spatial_shape == shape
    # the same network through the reference, step by step
    c1, bn, _, c2, _, c3, c4 = net
    h, _, _ = ref.sparse_conv(x.double(), idx, shape, 2, c1.weight, c1.bias, subm=True)
    h = torch.relu(bn(h))
    h2, idx2, shape2 = ref.sparse_conv(h, idx, shape, 2, c2.weight, c2.bias, 2, 1)
    h2 = torch.relu(h2)
    h3, _, _ = ref.sparse_conv(h2, idx2, shape2, 2, c3.weight, c3.bias, subm=True)
    h4, idx4, _ = ref.sparse_conv(h3, idx2, shape2, 2, c4.weight, c4.bias, 2, 1,
                                  transposed=True, out_indices=idx, out_spatial_shape=shape)
    assert torch.equal(idx4, idx)
    torch.testing.assert_close(out.features, h4)
    xd = x.double().requires_grad_()
    out = net(st.replace_feature(xd))
    out.features.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    # fp32 through the kernels (the layers hand the cached transposed maps to the input
    # gradient) against the float64 torch path
    net32 = net.float()
    grads64 = [p.grad.clone() for p in net32.parameters()]
    net32.zero_grad()
    x32 = x.clone().requires_grad_()
    out32 = net32(st.replace_feature(x32))
    out32.features.sum().backward()
    torch.testing.assert_close(out32.features.double(), h4, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x32.grad.double(), xd.grad, rtol=1e-4, atol=1e-4)
    for p, g64 in zip(net32.parameters(), grads64):
        torch.testing.assert_close(p.grad, g64.float(), rtol=1e-4, atol=1e-3)


@native
def test_spconv_state_dict_loads():
    conv = snn.SubMConv3d(4, 6, 3, indice_key="k")
    sd = {"weight": torch.randn(6, 3, 3, 3, 4), "bias": torch.randn(6)}  # spconv layout
    conv.load_state_dict(sd)
    assert conv.weight.shape == (6, 3, 3, 3, 4)
    conv2 = snn.SparseConv2d(3, 2, (3, 5), stride=2, bias=False)
    assert conv2.weight.shape == (2, 3, 5, 3) and conv2.bias is None
    conv2.load_state_dict({"weight": torch.randn(2, 3, 5, 3)})


@native
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_matches_ref(mode):
    shape = (8, 9, 7)
    idx = random_indices(shape, 2, 0.3)
    x = torch.randn(idx.shape[0], 6, dtype=torch.float64, requires_grad=True)
    st = SparseTensor(x, idx, shape, 2)
    pool = snn.SparseMaxPool3d(2) if mode == "max" else snn.SparseAvgPool3d(3, 2, 1)
    out = pool(st)
    fn = ref.sparse_max_pool if mode == "max" else ref.sparse_avg_pool
    args = (2,) if mode == "max" else (3, 2, 1)
    r, r_idx, r_shape = fn(x, idx, shape, 2, *args)
    assert torch.equal(out.indices, r_idx) and out.spatial_shape == tuple(r_shape)
    torch.testing.assert_close(out.features, r)
    g = torch.randn_like(r)
    ga, = torch.autograd.grad(out.features, x, g)
    gb, = torch.autograd.grad(r, x, g)
    torch.testing.assert_close(ga, gb)


@native
def test_global_pooling():
    idx = random_indices((6, 6, 6), 3, 0.2)
    x = torch.randn(idx.shape[0], 4, dtype=torch.float64)
    st = SparseTensor(x, idx, (6, 6, 6), 3)
    avg = snn.SparseGlobalAvgPool()(st)
    mx = snn.SparseGlobalMaxPool()(st)
    for b in range(3):
        rows = x[idx[:, 0] == b]
        torch.testing.assert_close(avg[b], rows.mean(0))
        torch.testing.assert_close(mx[b], rows.amax(0))


# ---- tensor, voxelisation, events -----------------------------------------------------------

@native
def test_dense_roundtrip():
    x = torch.randn(2, 5, 6, 7, 3) * (torch.rand(2, 5, 6, 7, 1) < 0.3)  # channels last
    st = SparseTensor.from_dense(x)
    assert st.spatial_shape == (5, 6, 7) and st.batch_size == 2
    torch.testing.assert_close(st.dense(channels_first=False), x)
    torch.testing.assert_close(st.dense(), x.movedim(-1, 1))
    st2 = st.replace_feature(st.features * 2)
    assert st2.indice_dict is st.indice_dict and st2.indices is st.indices


@native
def test_voxelize_matches_ref():
    pts = torch.rand(500, 3) * torch.tensor([4.0, 3.0, 2.0])
    feats = torch.randn(500, 4)
    st, counts = voxelize(pts, feats, (0.5, 0.5, 0.5), (0, 0, 0, 4, 3, 2))
    f, i, s, c = ref.voxelize(pts, feats, (0.5, 0.5, 0.5), (0, 0, 0, 4, 3, 2))
    assert torch.equal(st.indices, i) and st.spatial_shape == s and torch.equal(counts, c)
    torch.testing.assert_close(st.features, f)
    assert int(counts.sum()) == 500
    # the voxel tensor convolves
    y = snn.SubMConv3d(4, 8, 3)(st)
    assert y.features.shape == (st.indices.shape[0], 8)


@native
@pytest.mark.parametrize("time_as_dim", [False, True])
def test_events_to_sparse(time_as_dim):
    E, W, H, T = 2000, 17, 13, 4
    ev = torch.stack([torch.rand(E) * 10.0, torch.randint(0, W, (E,)).float(),
                      torch.randint(0, H, (E,)).float(), torch.randint(0, 2, (E,)).float()], 1)
    st = events_to_sparse(ev, (W, H), T, t_range=(0.0, 10.0), time_as_dim=time_as_dim)
    frame = (ev[:, 0] / 10.0 * T).floor().long().clamp(max=T - 1)
    hist = torch.zeros(T, H, W, 2)
    hist.index_put_((frame, ev[:, 2].long(), ev[:, 1].long(), ev[:, 3].long()),
                    torch.ones(E), accumulate=True)
    dense = st.dense(channels_first=False)  # [B(*T), ..., 2]
    if time_as_dim:
        assert st.spatial_shape == (T, H, W) and dense.shape == (1, T, H, W, 2)
        torch.testing.assert_close(dense[0], hist)
    else:
        assert st.spatial_shape == (H, W) and dense.shape == (T, H, W, 2)
        torch.testing.assert_close(dense, hist)
    assert st.features.sum().item() == E
    with pytest.raises(ValueError, match="events must be"):
        events_to_sparse(ev[:, :3], (W, H), T)


def test_cuda_kernels_gated_until_validated(monkeypatch):
    # The CUDA backend has not run on a GPU yet: CUDA tensors are refused unless
    # SPIKEOPS_UNVALIDATED_CUDA=1 (tests/test_sparse_conv_cuda.py sets it).
    from types import SimpleNamespace

    from spikeops import _extension
    cuda_like = SimpleNamespace(is_cuda=True)
    monkeypatch.delenv("SPIKEOPS_UNVALIDATED_CUDA", raising=False)
    with pytest.raises(NotImplementedError,
                       match="^sparse_conv: the CUDA kernels have not run on a GPU yet"):
        _extension.check_cuda_validated("sparse_conv", cuda_like)
    _extension.check_cuda_validated("sparse_conv", torch.zeros(1))  # CPU tensors pass
    monkeypatch.setenv("SPIKEOPS_UNVALIDATED_CUDA", "1")
    _extension.check_cuda_validated("sparse_conv", cuda_like)
