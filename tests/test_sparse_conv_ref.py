"""The pure-PyTorch sparse-conv reference against dense torch convolutions (float64)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spikeops.ref import sparse_conv as sc

B = 2
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
SHAPES = {1: (13,), 2: (9, 8), 3: (7, 8, 6)}


def random_sparse(shape, c, density=0.3, batch_size=B):
    """A random sparse tensor: (features [N, C] float64, indices int32 [N, ndim+1])."""
    mask = torch.rand(batch_size, *shape) < density
    x = torch.randn(batch_size, c, *shape, dtype=torch.float64) * mask.unsqueeze(1)
    feats, idx = sc.from_dense(x)
    return feats, idx


def at_sites(dense, indices):
    """``dense [B, C, *spatial]`` at ``indices`` -> ``[N, C]``."""
    return dense.movedim(1, -1)[tuple(indices.to(torch.int64).unbind(1))]


def dense_weight(w):
    return w.movedim(-1, 1)           # [Cout, *k, Cin] -> [Cout, Cin, *k]


CASES = [  # ndim, kernel, stride, padding, dilation
    (1, 3, 1, 0, 1), (1, 3, 2, 1, 1), (1, 2, 2, 0, 1), (1, 3, 1, 2, 2),
    (2, 3, 2, 1, 1), (2, (3, 2), (2, 1), (1, 0), 1), (2, 3, 1, 1, 2), (2, 2, 2, 0, 1),
    (3, 3, 2, 1, 1), (3, 2, 2, 0, 1), (3, (3, 1, 2), (1, 2, 2), (0, 1, 1), (1, 1, 2)),
]


def _kernel(ndim, k):
    return sc._tuple(k, ndim, "kernel_size")


@pytest.mark.parametrize("ndim,k,s,p,d", CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_strided_conv_matches_dense(ndim, k, s, p, d, with_bias):
    shape = SHAPES[ndim]
    cin, cout = 3, 4
    feats, idx = random_sparse(shape, cin)
    w = torch.randn(cout, *_kernel(ndim, k), cin, dtype=torch.float64)
    bias = torch.randn(cout, dtype=torch.float64) if with_bias else None
    out, out_idx, out_shape = sc.sparse_conv(feats, idx, shape, B, w, bias, s, p, d)
    dense = CONV[ndim](sc.to_dense(feats, idx, shape, B), dense_weight(w), bias, s, p, d)
    assert tuple(dense.shape[2:]) == out_shape
    assert out_idx.dtype == torch.int32
    sc.check_indices(out_idx, out_shape, B)
    keys = sc._keys(out_idx, out_shape)
    assert torch.equal(keys, torch.sort(keys).values)          # sorted batch-major
    torch.testing.assert_close(out, at_sites(dense, out_idx))
    if not with_bias:
        # the dense output vanishes off the output sites
        rest = dense - sc.to_dense(at_sites(dense, out_idx), out_idx, out_shape, B)
        assert torch.count_nonzero(rest) == 0
    # every output site is reached by some input (pairs cover all outputs)
    _, _, pairs = sc.kernel_map(idx, shape, B, _kernel(ndim, k), s, p, d)
    assert len(pairs) == torch.tensor(_kernel(ndim, k)).prod()
    assert torch.unique(torch.cat(pairs)[:, 1]).numel() == out_idx.shape[0]


def test_output_sites_are_exactly_the_reachable_ones():
    # a single input at x=4 with k=3, s=2, p=1 reaches o with 2o-1+j=4 -> o=2 (j=1) only
    idx = torch.tensor([[0, 4], [1, 0]], dtype=torch.int32)
    out_idx, out_shape, pairs = sc.kernel_map(idx, (9,), 2, 3, 2, 1)
    assert out_shape == (5,)
    assert out_idx.tolist() == [[0, 2], [1, 0]]      # input 0 -> o=2; input at 0 -> o=0 (j=1)
    assert [p.tolist() for p in pairs] == [[], [[0, 0], [1, 1]], []]


@pytest.mark.parametrize("ndim,k,d", [(1, 3, 1), (1, 5, 2), (2, 3, 1), (2, (3, 5), (2, 1)),
                                      (3, 3, 1), (3, 3, 2), (2, 2, 1), (3, (2, 3, 1), 1)])
def test_submanifold_matches_dense(ndim, k, d):
    shape = SHAPES[ndim]
    cin, cout = 2, 3
    feats, idx = random_sparse(shape, cin)
    kk = _kernel(ndim, k)
    dd = sc._tuple(d, ndim, "dilation")
    w = torch.randn(cout, *kk, cin, dtype=torch.float64)
    bias = torch.randn(cout, dtype=torch.float64)
    out, out_idx, out_shape = sc.sparse_conv(feats, idx, shape, B, w, bias, dilation=d,
                                             subm=True)
    assert out_idx is idx and out_shape == shape
    pad = tuple(di * (ki // 2) for ki, di in zip(kk, dd))
    dense = CONV[ndim](sc.to_dense(feats, idx, shape, B), dense_weight(w), bias, 1, pad, dd)
    # even kernels: the dense output is larger; crop to the input grid (centre = k // 2)
    dense = dense[(slice(None), slice(None)) + tuple(slice(0, n) for n in shape)]
    torch.testing.assert_close(out, at_sites(dense, idx))


def test_submanifold_rejects_stride():
    _, idx = random_sparse((8, 8), 1)
    with pytest.raises(ValueError, match="stride"):
        sc.kernel_map(idx, (8, 8), B, 3, stride=2, subm=True)


@pytest.mark.parametrize("subm", [False, True])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_gradients_match_dense(ndim, subm):
    shape = SHAPES[ndim]
    cin, cout = 2, 3
    feats, idx = random_sparse(shape, cin)
    k, s, p = 3, (1 if subm else 2), 1
    w = torch.randn(cout, *(k,) * ndim, cin, dtype=torch.float64)
    bias = torch.randn(cout, dtype=torch.float64)

    f1, w1, b1 = (t.clone().requires_grad_() for t in (feats, w, bias))
    out, out_idx, out_shape = sc.sparse_conv(f1, idx, shape, B, w1, b1, s, p, subm=subm)
    g = torch.randn_like(out)
    (out * g).sum().backward()

    f2, w2, b2 = (t.clone().requires_grad_() for t in (feats, w, bias))
    dense = CONV[ndim](sc.to_dense(f2, idx, shape, B), dense_weight(w2), b2, s, p)
    (at_sites(dense, out_idx) * g).sum().backward()

    torch.testing.assert_close(f1.grad, f2.grad)
    torch.testing.assert_close(w1.grad, w2.grad)
    torch.testing.assert_close(b1.grad, b2.grad)
    if ndim == 1:   # small enough for a numerical check too
        assert torch.autograd.gradcheck(
            lambda f, ww, bb: sc.sparse_conv(f, idx, shape, B, ww, bb, s, p, subm=subm)[0],
            (f1.detach().clone().requires_grad_(), w1.detach().clone().requires_grad_(),
             b1.detach().clone().requires_grad_()))


@pytest.mark.parametrize("ndim,k,s,p,d", [(1, 3, 2, 1, 1), (1, 2, 2, 0, 1), (2, 3, 2, 1, 1),
                                          (2, 2, 2, 0, 1), (3, 3, 2, 1, 1), (3, 2, 2, 0, 1),
                                          (3, (3, 2, 3), (2, 2, 1), (1, 0, 1), 1)])
def test_inverse_round_trip_and_matches_conv_transpose(ndim, k, s, p, d):
    shape = SHAPES[ndim]
    kk = _kernel(ndim, k)
    feats, idx = random_sparse(shape, 2)
    w_down = torch.randn(3, *kk, 2, dtype=torch.float64)
    mid, mid_idx, mid_shape = sc.sparse_conv(feats, idx, shape, B, w_down, None, s, p, d)

    w_up = torch.randn(4, *kk, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    up, up_idx, up_shape = sc.sparse_conv(mid, mid_idx, mid_shape, B, w_up, bias, s, p, d,
                                          transposed=True, out_indices=idx,
                                          out_spatial_shape=shape)
    assert up_idx is idx and up_shape == shape         # exactly the original coordinates
    # forward pairs swapped
    _, _, fwd = sc.kernel_map(idx, shape, B, kk, s, p, d)
    _, _, inv = sc.kernel_map(mid_idx, mid_shape, B, kk, s, p, d, transposed=True,
                              out_indices=idx, out_spatial_shape=shape)
    for a, b in zip(fwd, inv):
        assert torch.equal(a, b.flip(1))

    ss, pp, dd = (sc._tuple(v, ndim, "x") for v in (s, p, d))
    base = [(m - 1) * si - 2 * pi + di * (ki - 1) + 1
            for m, si, pi, di, ki in zip(mid_shape, ss, pp, dd, kk)]
    opad = tuple(n - b for n, b in zip(shape, base))
    dense = CONVT[ndim](sc.to_dense(mid, mid_idx, mid_shape, B), w_up.movedim(-1, 0), bias,
                        ss, pp, opad, 1, dd)
    assert tuple(dense.shape[2:]) == shape
    torch.testing.assert_close(up, at_sites(dense, idx))


def test_inverse_default_out_shape_and_requires_out_indices():
    _, idx = random_sparse((9,), 1)
    mid_idx, mid_shape, _ = sc.kernel_map(idx, (9,), B, 3, 2, 1)
    assert mid_shape == (5,)
    _, up_shape, _ = sc.kernel_map(mid_idx, mid_shape, B, 3, 2, 1, transposed=True,
                                   out_indices=idx)
    assert up_shape == (9,)
    with pytest.raises(ValueError, match="out_indices"):
        sc.kernel_map(mid_idx, mid_shape, B, 3, 2, 1, transposed=True)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_dense_round_trip(ndim):
    shape = SHAPES[ndim]
    feats, idx = random_sparse(shape, 3)
    assert idx.dtype == torch.int32
    sc.check_indices(idx, shape, B)
    dense = sc.to_dense(feats, idx, shape, B)
    assert dense.shape == (B, 3, *shape)
    f2, i2 = sc.from_dense(dense)
    assert torch.equal(i2, idx) and torch.equal(f2, feats)
    # shuffled indices scatter to the same grid
    perm = torch.randperm(idx.shape[0])
    assert torch.equal(sc.to_dense(feats[perm], idx[perm], shape, B), dense)
    # from_dense sorts batch-major
    keys = sc._keys(idx, shape)
    assert torch.equal(keys, torch.sort(keys).values)


def test_to_dense_gradient():
    feats, idx = random_sparse((5, 6), 2)
    f = feats.clone().requires_grad_()
    g = torch.randn(B, 2, 5, 6, dtype=torch.float64)
    (sc.to_dense(f, idx, (5, 6), B) * g).sum().backward()
    torch.testing.assert_close(f.grad, at_sites(g, idx))


@pytest.mark.parametrize("bad,exc,match", [
    (lambda i: i.to(torch.int64), TypeError, "indices"),
    (lambda i: i[:, :2], ValueError, "indices"),
    (lambda i: torch.cat([i, -torch.ones_like(i[:1])]), ValueError, "indices"),
    (lambda i: torch.cat([i, torch.tensor([[0, 0, 8]], dtype=torch.int32)]), ValueError,
     "spatial_shape"),
    (lambda i: torch.cat([i, torch.tensor([[2, 0, 0]], dtype=torch.int32)]), ValueError,
     "batch_size"),
    (lambda i: torch.cat([i, i[:1]]), ValueError, "duplicate"),
])
def test_check_indices_rejects(bad, exc, match):
    idx = torch.tensor([[0, 1, 2], [1, 3, 7], [0, 6, 0]], dtype=torch.int32)
    sc.check_indices(idx, (7, 8), B)
    with pytest.raises(exc, match=match) as err:
        sc.check_indices(bad(idx), (7, 8), B)
    assert "indices" in str(err.value)
    with pytest.raises(exc, match=match):     # the ops validate too
        sc.kernel_map(bad(idx), (7, 8), B, 3)


def test_check_indices_bad_shape_args():
    idx = torch.zeros(1, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match="batch_size"):
        sc.check_indices(idx, (4, 4), 0)
    with pytest.raises(ValueError, match="spatial_shape"):
        sc.check_indices(idx, (4, 0), 1)
    with pytest.raises(TypeError, match="indices"):
        sc.check_indices([[0, 0, 0]], (4, 4), 1)


def test_empty_input():
    idx = torch.zeros(0, 3, dtype=torch.int32)
    w = torch.randn(2, 3, 3, 1, dtype=torch.float64)
    out, out_idx, shape = sc.sparse_conv(torch.zeros(0, 1, dtype=torch.float64), idx, (5, 5),
                                         1, w, stride=2)
    assert out.shape == (0, 2) and out_idx.shape == (0, 3) and shape == (2, 2)


@pytest.mark.parametrize("ndim,k,s,p", [(1, 3, 2, 1), (2, 2, None, 0), (2, 3, 2, 1),
                                        (3, 2, None, 0), (3, 3, 2, 1)])
def test_pools_match_dense(ndim, k, s, p):
    shape = SHAPES[ndim]
    feats, idx = random_sparse(shape, 3)
    kk = _kernel(ndim, k)
    stride = kk if s is None else s
    mx, mx_idx, mx_shape = sc.sparse_max_pool(feats, idx, shape, B, k, s, p)
    av, av_idx, av_shape = sc.sparse_avg_pool(feats, idx, shape, B, k, s, p)
    ref_idx, ref_shape, _ = sc.kernel_map(idx, shape, B, kk, stride, p)
    assert torch.equal(mx_idx, ref_idx) and torch.equal(av_idx, ref_idx)
    assert mx_shape == av_shape == ref_shape
    # max over existing inputs: missing sites are -inf in the dense grid
    occ = sc.to_dense(torch.ones(idx.shape[0], 1, dtype=torch.float64), idx, shape, B)
    grid = sc.to_dense(feats, idx, shape, B).masked_fill(occ == 0, float("-inf"))
    dmax = MAXPOOL[ndim](grid, kk, stride, p)
    torch.testing.assert_close(mx, at_sites(dmax, ref_idx))
    # mean over existing inputs = window sum / window count (ones-kernel convs)
    ones = torch.ones(1, 1, *kk, dtype=torch.float64)
    dense = sc.to_dense(feats, idx, shape, B)
    dsum = CONV[ndim](dense.reshape(-1, 1, *shape), ones, None, stride, p).reshape(
        B, 3, *ref_shape)
    dcnt = CONV[ndim](occ, ones, None, stride, p)
    torch.testing.assert_close(av, at_sites(dsum / dcnt, ref_idx))
    # gradients flow
    f = feats.clone().requires_grad_()
    (sc.sparse_max_pool(f, idx, shape, B, k, s, p)[0].sum()
     + sc.sparse_avg_pool(f, idx, shape, B, k, s, p)[0].sum()).backward()
    assert torch.isfinite(f.grad).all()


def test_voxelize_matches_a_dict():
    pts = torch.rand(200, 3, dtype=torch.float64) * torch.tensor([4.4, 3.0, 2.2]) \
        - torch.tensor([0.2, 0.0, 0.1])                          # some points fall outside
    feats = torch.randn(200, 2, dtype=torch.float64)
    vsize, prange = (0.5, 0.5, 1.0), (0.0, 0.0, 0.0, 4.0, 3.0, 2.0)
    f = feats.clone().requires_grad_()
    vf, idx, shape, counts = sc.voxelize(pts, f, vsize, prange, batch_index=1)
    assert shape == (2, 6, 8) and idx.dtype == torch.int32
    sc.check_indices(idx, shape, 2)
    groups = {}
    for p_, f_ in zip(pts.tolist(), feats):
        cell = [int(torch.floor(torch.tensor((p_[a] - prange[a]) / vsize[a]))) for a in range(3)]
        if all(0 <= c < n for c, n in zip(cell, (8, 6, 2))):
            groups.setdefault((1, cell[2], cell[1], cell[0]), []).append(f_)
    keys = sorted(groups)
    assert idx.tolist() == [list(k) for k in keys]
    assert counts.tolist() == [len(groups[k]) for k in keys]
    torch.testing.assert_close(vf.detach(), torch.stack([torch.stack(groups[k]).mean(0)
                                                         for k in keys]))
    vf.sum().backward()
    # each channel of each voxel mean has weights summing to 1; dropped points get 0
    assert f.grad.sum().item() == pytest.approx(2 * len(keys))
