"""spikeops' sparse convolution layers against spconv 2.x itself, where spconv is installed
(it is not a dependency; see README "Spike sparse convolution (CPU)" for the install line).

spconv's layers are built first and their state_dicts loaded into ours, so these tests check
the checkpoint compatibility the README promises: same weight layout, same kernel-offset
order, same output sites, same values and gradients. spconv runs with one thread: its
multithreaded CPU path gives varying, wrong results (spconv issue #679).
"""
from __future__ import annotations

import pytest
import torch

spconv = pytest.importorskip("spconv.pytorch")
from spconv.core import ConvAlgo  # noqa: E402

import spikeops.nn as snn  # noqa: E402
from spikeops.sparse import SparseTensor  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    if not torch.cuda.is_available():
        # spconv 2.3's backward asks for the current CUDA stream even on CPU tensors
        import spconv.pytorch.ops as spconv_ops
        spconv_ops.get_current_stream = lambda: 0
    yield
    torch.set_num_threads(before)


def sites(ndim, grid, n, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, grid, (n, ndim), generator=g)
    b = torch.randint(0, batch, (n, 1), generator=g)
    return torch.unique(torch.cat([b, c], 1), dim=0).int()


def both(theirs_cls, ours_cls, *args, **kw):
    theirs = theirs_cls(*args, algo=ConvAlgo.Native, **kw).double()
    ours = ours_cls(*args, **kw).double()
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def run(layer, make, x, idx, shape):
    y = layer(make(x, idx, shape))
    return y.features, y.indices, y.dense()


LAYERS = [
    ("SubMConv3d", dict(kernel_size=3, padding=1)),
    ("SubMConv3d", dict(kernel_size=(3, 1, 5), dilation=2)),
    ("SparseConv3d", dict(kernel_size=3, stride=2, padding=1)),
    ("SparseConv3d", dict(kernel_size=2, stride=2)),
    ("SparseConv3d", dict(kernel_size=3)),
    ("SubMConv2d", dict(kernel_size=5, padding=2)),
    ("SparseConv2d", dict(kernel_size=3, stride=(2, 1), padding=1)),
]


@pytest.mark.parametrize("name,kw", LAYERS)
def test_matches_spconv(name, kw):
    ndim = int(name[-2])
    grid = 20 if ndim == 3 else 40
    idx = sites(ndim, grid, 1500)
    shape = [grid] * ndim
    x0 = torch.randn(idx.shape[0], 6, dtype=torch.float64)
    theirs, ours = both(getattr(spconv, name), getattr(snn, name), 6, 5, bias=True, **kw)
    xt, xo = x0.clone().requires_grad_(), x0.clone().requires_grad_()
    ft, it, dt = run(theirs, lambda f, i, s: spconv.SparseConvTensor(f, i, s, 2), xt, idx, shape)
    fo, io, do = run(ours, lambda f, i, s: SparseTensor(f, i, tuple(s), 2), xo, idx, shape)
    assert dt.shape == do.shape and torch.allclose(dt, do, rtol=1e-12, atol=1e-12)
    assert it.shape == io.shape  # same output sites (their order may differ)
    # gradients of a loss on the dense outputs, so the row order does not matter
    gd = torch.randn(dt.shape, dtype=torch.float64)
    gt = torch.autograd.grad((dt * gd).sum(), (xt, theirs.weight, theirs.bias))
    go = torch.autograd.grad((do * gd).sum(), (xo, ours.weight, ours.bias))
    for a, b in zip(gt, go):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_inverse_round_trip_matches_spconv():
    idx = sites(3, 16, 1200)
    x0 = torch.randn(idx.shape[0], 4, dtype=torch.float64)
    down_t, down_o = both(spconv.SparseConv3d, snn.SparseConv3d, 4, 8, 3, stride=2,
                          padding=1, bias=False, indice_key="down")
    up_t, up_o = both(spconv.SparseInverseConv3d, snn.SparseInverseConv3d, 8, 4, 3,
                      bias=False, indice_key="down")
    yt = up_t(down_t(spconv.SparseConvTensor(x0, idx, [16] * 3, 2)))
    yo = up_o(down_o(SparseTensor(x0, idx, (16,) * 3, 2)))
    assert yt.features.shape == yo.features.shape == (idx.shape[0], 4)
    assert torch.allclose(yt.dense(), yo.dense(), rtol=1e-12, atol=1e-12)
