"""Spike sparse convolution on CUDA (csrc/cuda/sparse_conv): kernel maps equal the CPU's
(same sites, same order, same table), forward and both gradients against the float64
reference for fp32 / bf16 / fp16, the fp32 forward and the one-range weight gradient equal
to the CPU kernels' bits (same terms, same order, one FMA each), determinism (run twice,
equal), the bad inputs raise the CPU's errors, opcheck, layers on CUDA tensors. Skipped
without a GPU; the kernels' indexing is also checked without one by
tests/test_sparse_conv_cuda_emu.py.

These kernels have not run on a GPU yet, so the ops refuse CUDA tensors unless
SPIKEOPS_UNVALIDATED_CUDA=1; the autouse fixture below sets it."""
from __future__ import annotations

import math

import pytest
import torch

import spikeops

from spikeops import nn as snn
from spikeops.ops import sparse as sc
from spikeops.ref import sparse_conv as ref
from spikeops.sparse import SparseTensor

from test_sparse_conv import (CONV_CASES, MAP_CASES, SHAPES, assert_close_to_exact,
                              random_indices)

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _unvalidated_cuda_enabled(monkeypatch):
    # Written without a GPU (nvcc + host emulation only): the ops refuse CUDA tensors
    # unless this is set, and these tests are what validates them.
    monkeypatch.setenv("SPIKEOPS_UNVALIDATED_CUDA", "1")


def test_gate_refuses_cuda_without_the_flag(monkeypatch):
    monkeypatch.delenv("SPIKEOPS_UNVALIDATED_CUDA")
    idx = random_indices((6, 6, 6), 1, 0.3).cuda()
    with pytest.raises(NotImplementedError, match="^sparse_conv: the CUDA kernels have not run"):
        sc.conv_map(idx, (6, 6, 6), 1, 3, 1, 0, 1, True)


# ---- kernel maps ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", MAP_CASES)
def test_map_equals_cpu(case):
    ndim, k, s, p, d, subm = case
    torch.manual_seed(ndim + 31 * len(str(case)))
    shape = SHAPES[ndim]
    idx = random_indices(shape, 3)
    c_idx, c_shape, c_nb = sc.conv_map(idx, shape, 3, k, s, p, d, subm)
    g_idx, g_shape, g_nb = sc.conv_map(idx.cuda(), shape, 3, k, s, p, d, subm)
    assert g_idx.is_cuda and g_nb.is_cuda and g_idx.dtype == g_nb.dtype == torch.int32
    assert tuple(g_shape) == tuple(c_shape)
    assert torch.equal(g_idx.cpu(), c_idx) and torch.equal(g_nb.cpu(), c_nb)
    inv = sc.map_transpose(g_nb, idx.shape[0])
    assert torch.equal(inv.cpu(), sc.map_transpose(c_nb, idx.shape[0]))


def test_map_large_and_repeat_identical():
    torch.manual_seed(1)
    idx = random_indices((40, 40, 40), 2, 0.1).cuda()
    for subm, s in ((True, 1), (False, 2)):
        a = sc.conv_map(idx, (40, 40, 40), 2, 3, s, 1, 1, subm)
        b = sc.conv_map(idx, (40, 40, 40), 2, 3, s, 1, 1, subm)
        c = sc.conv_map(idx.cpu(), (40, 40, 40), 2, 3, s, 1, 1, subm)
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        assert torch.equal(a[0].cpu(), c[0]) and torch.equal(a[2].cpu(), c[2])


def test_map_4d_and_empty():
    idx = random_indices((5, 4, 6, 3), 2, 0.3)
    for subm, s in ((True, 1), (False, 2)):
        c = sc.conv_map(idx, (5, 4, 6, 3), 2, 3, s, 1, 1, subm)
        g = sc.conv_map(idx.cuda(), (5, 4, 6, 3), 2, 3, s, 1, 1, subm)
        assert torch.equal(g[0].cpu(), c[0]) and torch.equal(g[2].cpu(), c[2])
    empty = torch.zeros(0, 4, dtype=torch.int32, device="cuda")
    oi, _, nb = sc.conv_map(empty, (5, 5, 5), 1, 3, 1, 0, 1, True)
    assert oi.shape == (0, 4) and nb.shape == (0, 27)
    oi, osh, nb = sc.conv_map(empty, (5, 5, 5), 1, 3, 2, 0, 1, False)
    assert oi.shape == (0, 4) and nb.shape == (0, 27) and osh == (2, 2, 2)


# ---- convolution ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_conv_forward_backward_matches_ref(case, dtype):
    ndim, k, s, p, d, subm, cin, cout = case
    torch.manual_seed(cin * 100 + cout)
    shape = SHAPES[ndim]
    k = ref._tuple(k, ndim, "k")
    idx = random_indices(shape, 2)
    n = idx.shape[0]
    x = torch.randn(n, cin).to(dtype)
    w = (torch.randn(cout, *k, cin) / (cin * math.prod(k)) ** 0.5).to(dtype)
    b = torch.randn(cout).to(dtype)
    xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
    y_ref, r_idx, _ = ref.sparse_conv(xd, idx, shape, 2, wd, bd, s, p, d, subm)
    gy = torch.randn(y_ref.shape).to(dtype)
    y_ref.backward(gy.double())
    out_idx, _, nbmap = sc.conv_map(idx.cuda(), shape, 2, k, s, p, d, subm)
    assert torch.equal(out_idx.cpu(), r_idx)
    for spikes in (None, False, True):  # CUDA runs the dense kernel for each
        xs, ws, bs_ = (t.cuda().requires_grad_() for t in (x, w, b))
        y = sc.sparse_conv(xs, nbmap, ws, bs_, spikes)
        assert y.is_cuda and y.dtype == dtype
        assert_close_to_exact(y.cpu(), y_ref.detach(), dtype, "out")
        y.backward(gy.cuda())
        assert_close_to_exact(xs.grad.cpu(), xd.grad, dtype, "grad features")
        assert_close_to_exact(ws.grad.cpu(), wd.grad, dtype, "grad weight")
        assert_close_to_exact(bs_.grad.cpu(), bd.grad, dtype, "grad bias")


@pytest.mark.parametrize("cin,cout", [(5, 7), (37, 70), (64, 64)])
def test_fp32_equals_cpu_bits_and_is_deterministic(cin, cout):
    # same terms in the same order with one fp32 FMA each as the CPU kernels (the scalar
    # CPU build multiplies and adds separately: compare with a vector ISA)
    if spikeops.cpu_isa() == "scalar":
        pytest.skip("the scalar CPU kernels do not fuse multiply-add")
    torch.manual_seed(cin + cout)
    shape = (16, 15, 14)
    idx = random_indices(shape, 2, 0.2)
    _, _, nb = sc.conv_map(idx, shape, 2, 3, 1, 0, 1, True)
    x, w, b = torch.randn(idx.shape[0], cin), torch.randn(cout, 27, cin) / 20, torch.randn(cout)
    g = torch.randn(idx.shape[0], cout)
    assert idx.shape[0] <= 4096  # one range in the weight gradient
    fwd = torch.ops.spikeops.sparse_conv_fwd.default
    wgrad = torch.ops.spikeops.sparse_conv_wgrad.default
    y_cpu, dw_cpu = fwd(x, nb, w, b, 0, None), wgrad(g, x, nb, 0)
    nbc, xc, wc, bc, gc = nb.cuda(), x.cuda(), w.cuda(), b.cuda(), g.cuda()
    y1, y2 = fwd(xc, nbc, wc, bc, 0, None), fwd(xc, nbc, wc, bc, 0, None)
    dw1, dw2 = wgrad(gc, xc, nbc, 0), wgrad(gc, xc, nbc, 0)
    assert torch.equal(y1, y2) and torch.equal(dw1, dw2)
    assert torch.equal(y1.cpu(), y_cpu)
    assert torch.equal(dw1.cpu(), dw_cpu)


def test_large_weight_gradient_several_ranges_deterministic():
    torch.manual_seed(3)
    shape = (48, 48, 48)
    idx = random_indices(shape, 1, 0.15)
    assert idx.shape[0] > 3 * 4096  # several ranges, reduced in order
    _, _, nb = sc.conv_map(idx.cuda(), shape, 1, 3, 1, 0, 1, True)
    x = torch.randn(idx.shape[0], 16, device="cuda")
    g = torch.randn(idx.shape[0], 24, device="cuda")
    wgrad = torch.ops.spikeops.sparse_conv_wgrad.default
    dw1, dw2 = wgrad(g, x, nb, 0), wgrad(g, x, nb, 0)
    assert torch.equal(dw1, dw2)
    ref_dw = torch.stack([g.double()[(nb[:, j] >= 0)].t()
                          @ x.double()[nb[nb[:, j] >= 0, j].long()]
                          for j in range(27)], dim=1)
    assert_close_to_exact(dw1.cpu(), ref_dw.cpu(), torch.float32, "grad weight")
    # and the CPU kernel (one sum in row order) within fp32 rounding
    cpu = wgrad(g.cpu(), x.cpu(), nb.cpu(), 0)
    assert_close_to_exact(dw1.cpu(), cpu.double(), torch.float32, "grad weight vs CPU")


def test_empty_inputs():
    nb = torch.zeros(0, 27, dtype=torch.int32, device="cuda")
    x = torch.zeros(0, 8, device="cuda", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, 8, device="cuda", requires_grad=True)
    b = torch.randn(4, device="cuda", requires_grad=True)
    y = sc.sparse_conv(x, nb, w, b)
    assert y.shape == (0, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 8) and torch.equal(w.grad, torch.zeros_like(w))
    nb2 = torch.full((3, 27), -1, dtype=torch.int32, device="cuda")
    y2 = sc.sparse_conv(x.detach(), nb2, w.detach(), b.detach())
    assert torch.equal(y2, b.detach().expand(3, 4))
    y3 = sc.sparse_conv(torch.zeros(5, 0, device="cuda"),
                        torch.zeros(5, 27, dtype=torch.int32, device="cuda"),
                        torch.zeros(4, 3, 3, 3, 0, device="cuda"), None)
    assert torch.equal(y3, torch.zeros(5, 4, device="cuda"))


def test_opcheck():
    idx = random_indices((8, 7, 6), 2, 0.3).cuda()
    x = torch.randn(idx.shape[0], 5, device="cuda", requires_grad=True)
    w = torch.randn(6, 27, 5, device="cuda", requires_grad=True)
    b = torch.randn(6, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_map.default,
                          (idx, [8, 7, 6], 2, [3], [1], [0], [1], True))
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_map.default,
                          (idx, [8, 7, 6], 2, [3, 3, 3], [2, 2, 2], [1, 1, 1], [1, 1, 1], False))
    _, _, nb = sc.conv_map(idx, (8, 7, 6), 2, 3, 1, 0, 1, True)
    torch.library.opcheck(torch.ops.spikeops.sparse_map_transpose.default, (nb, idx.shape[0]))
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_fwd.default, (x, nb, w, b, 0))
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_fwd.default,
                          (x, nb, w, None, 0, sc.map_transpose(nb, idx.shape[0])))
    g = torch.randn(idx.shape[0], 6, device="cuda")
    torch.library.opcheck(torch.ops.spikeops.sparse_conv_wgrad.default, (g, x.detach(), nb, 0))


def test_compile_fullgraph():
    idx = random_indices((10, 10, 10), 2, 0.2).cuda()
    _, _, nb1 = sc.conv_map(idx, (10, 10, 10), 2, 3, 1, 0, 1, True)
    _, _, nb2 = sc.conv_map(idx, (10, 10, 10), 2, 3, 2, 1, 1, False)
    x = torch.randn(idx.shape[0], 8, device="cuda")
    w1 = torch.randn(16, 3, 3, 3, 8, device="cuda", requires_grad=True)
    w2 = torch.randn(12, 3, 3, 3, 16, device="cuda", requires_grad=True)

    def net(x, nb1, nb2, w1, w2):
        return sc.sparse_conv(torch.relu(sc.sparse_conv(x, nb1, w1)), nb2, w2).sum(dim=1)

    y = torch.compile(net, fullgraph=True)(x, nb1, nb2, w1, w2)
    y.sum().backward()
    grads = [w1.grad.clone(), w2.grad.clone()]
    w1.grad = w2.grad = None
    y_e = net(x, nb1, nb2, w1, w2)
    y_e.sum().backward()
    torch.testing.assert_close(y, y_e, rtol=1e-5, atol=1e-4)
    for a, t in zip(grads, (w1, w2)):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-4)


# ---- bad input: the CPU's errors ------------------------------------------------------------

def _same_error(fn, *args):
    """fn on the CPU arguments and on their CUDA copies raise the same type and message."""
    errs = []
    for dev in ("cpu", "cuda"):
        a = [t.to(dev) if torch.is_tensor(t) else t for t in args]
        with pytest.raises((ValueError, TypeError)) as info:
            fn(*a)
        errs.append((info.type, str(info.value).splitlines()[0]))
    assert errs[0] == errs[1]
    return errs[1][1]


def test_bad_indices_raise_the_cpu_errors():
    shape = [6, 6, 6]
    good = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0]], dtype=torch.int32)
    op = torch.ops.spikeops.sparse_conv_map.default
    for subm in (True, False):
        s = [1] if subm else [2]
        for idx, bs, what in (
                (torch.tensor([[0, 1, 2, 3], [0, 1, -1, 3], [0, 9, 1, 1]], dtype=torch.int32), 2,
                 "non-negative"),
                (torch.tensor([[0, 1, 2, 3], [0, 1, 6, 3], [0, -1, 1, 1]], dtype=torch.int32), 2,
                 "outside spatial_shape"),
                (good, 1, "batch index >= batch_size"),
                (torch.cat([good, good[:1]]), 2, "duplicate coordinates")):
            assert what in _same_error(op, idx, shape, bs, [3], s, [1], [1], subm)
    assert "indices must be int32" in _same_error(op, good.long(), shape, 2, [3], [1], [0], [1],
                                                  True)
    assert "indices must have shape" in _same_error(op, good[:, :3], shape, 2, [3], [1], [0],
                                                    [1], True)
    assert "stride must be 1" in _same_error(op, good, shape, 2, [3], [2], [0], [1], True)
    assert "empty output" in _same_error(op, good, shape, 2, [9], [1], [0], [1], False)
    with pytest.raises(ValueError, match="features: expected device"):
        SparseTensor(torch.zeros(2, 3), good.cuda(), shape, 2)


def test_bad_conv_arguments_raise_the_cpu_errors():
    idx = random_indices((6, 6, 6), 1, 0.3)
    _, _, nb = sc.conv_map(idx, (6, 6, 6), 1, 3, 1, 0, 1, True)
    x = torch.randn(idx.shape[0], 4)
    fwd = torch.ops.spikeops.sparse_conv_fwd.default
    wgrad = torch.ops.spikeops.sparse_conv_wgrad.default
    assert "Cin=5" in _same_error(fwd, x, nb, torch.randn(3, 27, 5), None, 0, None)
    assert "weight must be" in _same_error(fwd, x, nb, torch.randn(3, 8, 4), None, 0, None)
    assert "weight: dtype" in _same_error(fwd, x, nb, torch.randn(3, 27, 4, dtype=torch.bfloat16),
                                          None, 0, None)
    assert "bias must be" in _same_error(fwd, x, nb, torch.randn(3, 27, 4), torch.randn(4), 0,
                                         None)
    assert "spikes must be" in _same_error(fwd, x, nb, torch.randn(3, 27, 4), None, 3, None)
    for v in (idx.shape[0], -2):
        bad = nb.clone()
        bad[idx.shape[0] // 2, 5] = v
        assert "nbmap has an entry outside" in _same_error(fwd, x, bad, torch.randn(3, 27, 4),
                                                           None, 0, None)
        assert "nbmap has an entry outside" in _same_error(wgrad, torch.randn(nb.shape[0], 3),
                                                           x, bad, 0)
        assert "nbmap has an entry outside" in _same_error(
            torch.ops.spikeops.sparse_map_transpose.default, bad, idx.shape[0])
    twice = nb.clone()
    rows = (twice[:, 0] >= 0).nonzero().flatten()[:2]
    twice[rows[1], 0] = twice[rows[0], 0]
    assert "used by two output rows" in _same_error(
        torch.ops.spikeops.sparse_map_transpose.default, twice, idx.shape[0])
    assert "grad_out must be" in _same_error(wgrad, torch.randn(3, 3), x, nb, 0)
    with pytest.raises(ValueError, match="weight: expected device"):
        fwd(x.cuda(), nb.cuda(), torch.randn(3, 27, 4), None, 0, None)


# ---- layers ---------------------------------------------------------------------------------

def test_layers_network_on_cuda_matches_cpu():
    torch.manual_seed(5)
    shape = (12, 10, 9)
    idx = random_indices(shape, 2, 0.2)
    x = torch.randn(idx.shape[0], 5)
    net = snn.SparseSequential(
        snn.SubMConv3d(5, 8, 3, indice_key="subm1"),
        snn.SparseBatchNorm(8), torch.nn.ReLU(),
        snn.SparseConv3d(8, 16, 3, stride=2, padding=1, indice_key="down1"),
        torch.nn.ReLU(),
        snn.SubMConv3d(16, 16, 3, indice_key="subm2"),
        snn.SparseInverseConv3d(16, 4, 3, indice_key="down1"),
    )
    results = []
    for dev in ("cpu", "cuda"):
        net = net.to(dev)
        net.zero_grad()
        xs = x.to(dev).requires_grad_()
        out = net(SparseTensor(xs, idx.to(dev), shape, 2))
        assert out.features.device.type == dev and out.indices.device.type == dev
        out.features.square().sum().backward()
        results.append([out.features, out.indices, xs.grad]
                       + [p.grad for p in net.parameters()])
    cpu, gpu = results
    assert torch.equal(gpu[1].cpu(), cpu[1])
    for a, b in zip(gpu[:1] + gpu[2:], cpu[:1] + cpu[2:]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)
    st = SparseTensor(x.cuda(), idx.cuda(), shape, 2)
    torch.testing.assert_close(st.dense().cpu(), SparseTensor(x, idx, shape, 2).dense())
