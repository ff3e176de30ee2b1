"""The sparse convolution CUDA kernels (csrc/cuda/sparse_conv) run in a host emulation
against the CPU ops, so their hashing, indexing, tiling, compaction, bounds and barrier
choreography are checked on machines without a GPU (tests/cuda_emu/cuda_runtime.h says what
is emulated and what is not: not timing, not the device's float arithmetic or memory model).

The kernel sources are copied, their ``<<<...>>>`` launches rewritten into calls of
``emu_launch`` (tests/cuda_emu_support.py), compiled with g++ with
tests/cuda_emu/sparse_conv_driver.cpp (which runs the map steps of the CUDA glue with host
buffers) and called through ctypes. Kernel maps must equal the CPU's exactly. The forward
and the one-range weight gradient sum the same terms in the same order with one fp32 FMA
each as the CPU kernels, so they must equal the CPU's bits too; the multi-range weight
gradient (partial sums added in range order) is compared within fp32 tolerance. The bf16 /
fp16 kernels run on the emulated types, which are unrounded floats: that checks their
indexing, not their rounding.
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from conftest import skip_unless
from cuda_emu_support import build_emulation

native = skip_unless("extension")

I64, INT = ctypes.c_int64, ctypes.c_int


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    lib = build_emulation(tmp_path_factory.mktemp("cuda_emu_sparse"), ("neurons", "sparse_conv"),
                          ("cuda/sparse_conv/sparse_map.cu", "cuda/sparse_conv/sparse_conv.cu",
                           "cuda/sparse_conv/sparse_conv_f32.cu",
                           "cuda/sparse_conv/sparse_conv_bf16.cu",
                           "cuda/sparse_conv/sparse_conv_f16.cu"),
                          "sparse_conv_driver.cpp", "libemu_sparse")
    lib.emu_sparse_wgrad_splits.restype = ctypes.c_int64
    return lib


def _p(t):
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def random_indices(shape, batch_size=2, density=0.25):
    mask = torch.rand(batch_size, *shape) < density
    idx = mask.nonzero().to(torch.int32)
    return idx[torch.randperm(idx.shape[0])].contiguous()


def emu_map(lib, idx, shape, bs, k, s, p, d, subm):
    """(status, first_bad, out_indices, nbmap) from the emulated kernels."""
    nd = len(shape)
    k, s, p, d = (_tuple(v, nd) for v in (k, s, p, d))
    K = 1
    for kk in k:
        K *= kk
    n = idx.shape[0]
    rows = max(n * (1 if subm else K), 1)
    out_idx = torch.full((rows, nd + 1), -7, dtype=torch.int32)
    nbmap = torch.full((rows, K), -7, dtype=torch.int32)
    M, first = torch.full((1,), -9, dtype=torch.int64), torch.full((1,), -9, dtype=torch.int64)
    arr = lambda v: torch.tensor(v, dtype=torch.int64)
    sh, kt, st, pt, dt = arr(shape), arr(k), arr(s), arr(p), arr(d)
    rc = lib.emu_sparse_map(_p(idx), I64(n), INT(nd), _p(sh), I64(bs), _p(kt), _p(st), _p(pt),
                            _p(dt), INT(int(subm)), I64(rows), _p(out_idx), _p(nbmap), _p(M),
                            _p(first))
    m = int(M.item())
    return rc, int(first.item()), out_idx[:m], nbmap[:m]


SHAPES = {1: (23,), 2: (11, 9), 3: (9, 8, 7)}
MAP_CASES = [  # the CPU map tests' cases: ndim, kernel, stride, padding, dilation, subm
    (1, 3, 1, 0, 1, True), (1, 5, 2, 2, 1, False), (1, 1, 1, 0, 1, True),
    (2, 3, 1, 0, 1, True), (2, 3, 2, 1, 1, False), (2, 2, 2, 0, 1, False),
    (2, (3, 5), 1, 0, (2, 1), True), (2, (1, 3), (1, 2), (0, 1), 1, False),
    (3, 3, 1, 0, 1, True), (3, 3, 2, 1, 1, False), (3, 2, 2, 0, 1, False),
    (3, 5, 1, 0, 1, True), (3, 3, 1, 2, 2, False), (3, 1, 1, 0, 1, False),
    (3, 4, 1, 0, 1, True),
]


@native
@pytest.mark.parametrize("case", MAP_CASES)
def test_emulated_map_equals_cpu(lib, case):
    ndim, k, s, p, d, subm = case
    torch.manual_seed(ndim * 100 + len(MAP_CASES))
    shape = SHAPES[ndim]
    idx = random_indices(shape, 3)
    rc, _, out_idx, nbmap = emu_map(lib, idx, shape, 3, k, s, p, d, subm)
    assert rc == 0
    nd = len(shape)
    c_idx, c_nb = torch.ops.spikeops.sparse_conv_map.default(
        idx, list(shape), 3, list(_tuple(k, nd)), list(_tuple(s, nd)), list(_tuple(p, nd)),
        list(_tuple(d, nd)), subm)
    assert torch.equal(out_idx, c_idx)
    assert torch.equal(nbmap, c_nb)


@native
def test_emulated_map_4d_and_empty(lib):
    torch.manual_seed(4)
    shape = (5, 4, 6, 3)
    idx = random_indices(shape, 2, 0.3)
    for subm, k, s, p in ((True, 3, 1, 0), (False, 2, 2, 1)):
        rc, _, out_idx, nbmap = emu_map(lib, idx, shape, 2, k, s, p, 1, subm)
        c_idx, c_nb = torch.ops.spikeops.sparse_conv_map.default(idx, list(shape), 2, [k], [s],
                                                                 [p], [1], subm)
        assert rc == 0 and torch.equal(out_idx, c_idx) and torch.equal(nbmap, c_nb)
    empty = torch.zeros(0, 4, dtype=torch.int32)
    for subm in (True, False):
        rc, _, out_idx, nbmap = emu_map(lib, empty, (5, 5, 5), 1, 3, 1, 1, 1, subm)
        assert rc == 0 and out_idx.shape == (0, 4) and nbmap.shape == (0, 27)


def _lowest_bad_row(idx, shape, bs):
    bad = (idx < 0).any(1) | (idx[:, 0] >= bs)
    bad |= (idx[:, 1:].long() >= torch.tensor(shape)).any(1)
    return int(bad.nonzero()[0].item())


@native
@pytest.mark.parametrize("kind", ["negative", "batch", "coordinate", "duplicate"])
def test_emulated_map_rejects_bad_indices(lib, kind):
    torch.manual_seed(7)
    shape = (9, 8, 7)
    idx = random_indices(shape, 2, 0.3)
    n = idx.shape[0]
    rows = [n // 3, n // 2, n - 1]
    if kind == "negative":
        for r in rows:
            idx[r, 2] = -1
    elif kind == "batch":
        for r in rows:
            idx[r, 0] = 2
    elif kind == "coordinate":
        for r in rows:
            idx[r, 3] = 7
    else:
        idx[n // 2] = idx[n // 3]
    for subm in (True, False):
        rc, first, _, _ = emu_map(lib, idx, shape, 2, 3, 2 - subm, 1, 1, subm)
        if kind == "duplicate":
            assert rc == 2
        else:
            assert rc == 1 and first == _lowest_bad_row(idx, shape, 2) == n // 3


def emu_transpose(lib, nbmap, num_in):
    M, K = nbmap.shape
    inv = torch.full((num_in, K), -7, dtype=torch.int32)
    flags = torch.full((2,), 5, dtype=torch.int32)
    assert lib.emu_sparse_transpose(_p(nbmap), I64(M), I64(K), I64(num_in), _p(inv),
                                    _p(flags)) == 0
    return inv, flags.tolist()


@native
@pytest.mark.parametrize("subm", [True, False])
def test_emulated_transpose_equals_cpu(lib, subm):
    torch.manual_seed(11)
    shape = (9, 8, 7)
    idx = random_indices(shape, 2)
    _, nbmap = torch.ops.spikeops.sparse_conv_map.default(idx, list(shape), 2, [3], [1 + (not subm)],
                                                          [1], [1], subm)
    inv, flags = emu_transpose(lib, nbmap, idx.shape[0])
    assert flags == [0, 0]
    assert torch.equal(inv, torch.ops.spikeops.sparse_map_transpose.default(nbmap, idx.shape[0]))
    bad = nbmap.clone()
    bad[3, 1] = idx.shape[0]
    assert emu_transpose(lib, bad, idx.shape[0])[1][0] == 1
    bad = nbmap.clone()
    rows = (bad[:, 0] >= 0).nonzero().flatten()[:2]
    bad[rows[1], 0] = bad[rows[0], 0]
    assert emu_transpose(lib, bad, idx.shape[0])[1] == [0, 1]


def conv_case(seed, shape, bs, k, cin, cout, subm=True, s=1, p=0, density=0.3):
    torch.manual_seed(seed)
    idx = random_indices(shape, bs, density)
    nd = len(shape)
    _, nbmap = torch.ops.spikeops.sparse_conv_map.default(idx, list(shape), bs, [k] * nd,
                                                          [s] * nd, [p] * nd, [1] * nd, subm)
    K = nbmap.shape[1]
    x = torch.randn(idx.shape[0], cin)
    w = torch.randn(cout, K, cin) / (K * cin) ** 0.5
    return nbmap, x, w


def emu_fwd(lib, x, nbmap, w, bias, dtype=0):
    M, K = nbmap.shape
    cout, _, cin = w.shape
    wp = w.permute(1, 2, 0).contiguous()
    out = torch.full((M, cout), float("nan"))
    bad = torch.full((1,), 5, dtype=torch.int32)
    assert lib.emu_sparse_fwd(INT(dtype), I64(M), I64(K), I64(x.shape[0]), I64(cin), I64(cout),
                              _p(nbmap), _p(x), _p(wp), _p(bias), _p(out), _p(bad)) == 0
    return out, int(bad.item())


FWD_CASES = [  # shape, batch, kernel, Cin, Cout, subm, stride, padding
    ((9, 8, 7), 2, 3, 5, 7, True, 1, 0),
    ((9, 8, 7), 2, 3, 20, 70, True, 1, 0),     # two input-channel slices, two Cout tiles
    ((11, 9), 3, 3, 16, 64, False, 2, 1),
    ((23,), 2, 5, 33, 17, False, 2, 2),
    ((6, 6, 6), 1, 1, 3, 1, True, 1, 0),      # K = 1
]


@native
@pytest.mark.parametrize("case", FWD_CASES, ids=lambda c: f"{len(c[0])}d-{c[3]}x{c[4]}-{c[5]}")
@pytest.mark.parametrize("with_bias", [False, True])
def test_emulated_forward_equals_cpu_bits(lib, case, with_bias):
    shape, bs, k, cin, cout, subm, s, p = case
    nbmap, x, w = conv_case(len(shape) + cin + cout, shape, bs, k, cin, cout, subm, s, p)
    bias = torch.randn(cout) if with_bias else None
    out, bad = emu_fwd(lib, x, nbmap, w, bias)
    assert bad == 0
    cpu = torch.ops.spikeops.sparse_conv_fwd.default(x, nbmap, w, bias, 0, None)
    assert torch.isfinite(out).all(), "unwritten output"
    assert torch.equal(out, cpu)
    # and against float64 gather-scatter, independently of the CPU kernels
    ref = torch.zeros(nbmap.shape[0], cout, dtype=torch.float64)
    for j in range(nbmap.shape[1]):
        m = (nbmap[:, j] >= 0).nonzero().flatten()
        ref.index_add_(0, m, x.double()[nbmap[m, j].long()] @ w[:, j].double().t())
    if bias is not None:
        ref += bias.double()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@native
@pytest.mark.parametrize("dtype", [1, 2], ids=["bf16", "fp16"])
def test_emulated_forward_half_kernels_indexing(lib, dtype):
    nbmap, x, w = conv_case(3, (9, 8, 7), 2, 3, 20, 40)
    bias = torch.randn(40)
    out, bad = emu_fwd(lib, x, nbmap, w, bias, dtype)
    assert bad == 0
    assert torch.equal(out, torch.ops.spikeops.sparse_conv_fwd.default(x, nbmap, w, bias, 0, None))


@native
def test_emulated_forward_input_gradient_on_transposed_map(lib):
    # the autograd's input gradient: the forward on the transposed table with W permuted
    nbmap, x, w = conv_case(5, (9, 8, 7), 2, 3, 12, 9, False, 2, 1)
    inv = torch.ops.spikeops.sparse_map_transpose.default(nbmap, x.shape[0])
    g = torch.randn(nbmap.shape[0], 9)
    wt = w.permute(2, 1, 0)
    out, bad = emu_fwd(lib, g, inv, wt, None)
    assert bad == 0
    assert torch.equal(out, torch.ops.spikeops.sparse_conv_fwd.default(g, inv, wt, None, 0, None))


@native
def test_emulated_forward_flags_bad_nbmap(lib):
    nbmap, x, w = conv_case(6, (9, 8, 7), 2, 3, 4, 5)
    for v in (x.shape[0], -2):
        bad_map = nbmap.clone()
        bad_map[nbmap.shape[0] // 2, 4] = v
        out, bad = emu_fwd(lib, x, bad_map, w, None)
        assert bad == 1 and torch.isfinite(out).all()


def emu_wgrad(lib, g, x, nbmap, splits, dtype=0):
    M, K = nbmap.shape
    cin, cout = x.shape[1], g.shape[1]
    dw = torch.full((K, cin, cout), float("nan"))
    bad = torch.full((1,), 5, dtype=torch.int32)
    assert lib.emu_sparse_wgrad(INT(dtype), I64(M), I64(K), I64(x.shape[0]), I64(cin), I64(cout),
                                _p(nbmap), _p(x), _p(g), _p(dw), I64(splits), _p(bad)) == 0
    return dw.permute(2, 0, 1), int(bad.item())  # [Cout, K, Cin], the op's layout


WGRAD_CASES = [  # shape, batch, kernel, Cin, Cout, subm, stride, padding
    ((9, 8, 7), 2, 3, 5, 7, True, 1, 0),
    ((15, 13), 3, 3, 70, 66, True, 1, 0),      # two Cin and two Cout tiles, several chunks
    ((11, 9), 3, 3, 16, 64, False, 2, 1),
    ((23,), 2, 5, 3, 17, False, 2, 2),
]


@native
@pytest.mark.parametrize("case", WGRAD_CASES, ids=lambda c: f"{len(c[0])}d-{c[3]}x{c[4]}")
def test_emulated_wgrad_matches_cpu(lib, case):
    shape, bs, k, cin, cout, subm, s, p = case
    nbmap, x, _ = conv_case(len(shape) * 7 + cin, shape, bs, k, cin, cout, subm, s, p, 0.4)
    g = torch.randn(nbmap.shape[0], cout)
    cpu = torch.ops.spikeops.sparse_conv_wgrad.default(g, x, nbmap, 0)
    dw1, bad = emu_wgrad(lib, g, x, nbmap, 1)
    assert bad == 0 and torch.isfinite(dw1).all()
    assert torch.equal(dw1, cpu)  # one range: the CPU's order and bits
    ref = torch.zeros_like(cpu, dtype=torch.float64)
    for j in range(nbmap.shape[1]):
        m = (nbmap[:, j] >= 0).nonzero().flatten()
        ref[:, j] = g.double()[m].t() @ x.double()[nbmap[m, j].long()]
    # fp32 accumulation of up to a few hundred terms: the CPU tests' tolerance (1e-5 of the
    # scale), and no worse than twice the CPU kernel's own error against float64
    scale = max(ref.abs().max().item(), 1.0)
    cpu_err = (cpu.double() - ref).abs().max().item()
    for splits in (2, 7):
        dws, bad = emu_wgrad(lib, g, x, nbmap, splits)
        assert bad == 0 and torch.isfinite(dws).all(), splits
        torch.testing.assert_close(dws.double(), ref, rtol=1e-5, atol=1e-5 * scale)
        assert (dws.double() - ref).abs().max().item() <= 2 * cpu_err + 1e-7 * scale
    assert torch.equal(dws, emu_wgrad(lib, g, x, nbmap, 7)[0])  # reproducible


@native
@pytest.mark.parametrize("dtype", [1, 2], ids=["bf16", "fp16"])
def test_emulated_wgrad_half_kernels_indexing(lib, dtype):
    nbmap, x, _ = conv_case(9, (9, 8, 7), 2, 3, 20, 40)
    g = torch.randn(nbmap.shape[0], 40)
    dw, bad = emu_wgrad(lib, g, x, nbmap, 1, dtype)
    assert bad == 0
    assert torch.equal(dw, torch.ops.spikeops.sparse_conv_wgrad.default(g, x, nbmap, 0))


@native
def test_emulated_wgrad_flags_bad_nbmap_and_splits(lib):
    nbmap, x, _ = conv_case(10, (9, 8, 7), 2, 3, 4, 5)
    g = torch.randn(nbmap.shape[0], 5)
    bad_map = nbmap.clone()
    bad_map[1, 13] = x.shape[0] + 3
    dw, bad = emu_wgrad(lib, g, x, bad_map, 2)
    assert bad == 1 and torch.isfinite(dw).all()
    assert [lib.emu_sparse_wgrad_splits(I64(m)) for m in (0, 1, 4096, 4097, 10 ** 6)] == \
        [1, 1, 1, 2, 32]
