"""Linear-attention scans on CUDA (csrc/cuda/scan): every output, final state and gradient
against the float64 reference (the kernel's error within a small factor of the same-dtype
reference's, as tests/test_scan.py holds the CPU kernels), against the CPU kernels, for
every decay kind, GQA, cu_seqlens, initial states, T = 1, T not a multiple of the chunk,
K / V not multiples of 16, fp32 / bf16 / fp16; determinism; opcheck; errors. The kernels'
indexing is also checked without a GPU by tests/test_scan_cuda_emu.py."""
from __future__ import annotations

import pytest
import torch

from spikeops import ops

from test_scan import KINDS, assert_error_within, fns, make, run

pytestmark = pytest.mark.cuda


def on_cuda(fn):
    """fn run on the GPU: tensor arguments moved there (differentiably), results back."""
    def wrapped(**kw):
        kw = {n: (t.cuda() if torch.is_tensor(t) else t) for n, t in kw.items()}
        o, s = fn(**kw)
        assert o.is_cuda and (s is None or s.is_cuda)
        return o.cpu(), (None if s is None else s.cpu())
    return wrapped


def compare(kind, chunk, shape, dtype=torch.float32, with_h0=True, final=True, cu=None,
            decay_scale=1.0, chunk_size=None):
    B, T, Hq, Hkv, K, V = shape
    torch.manual_seed(sum(shape) * 7 + KINDS.index(kind) + 100 * chunk + 13 * (cu is not None))
    N = B if cu is None else len(cu) - 1
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, kind, dtype, N if with_h0 else None,
                            decay_scale)
    go = torch.randn(B, T, Hq, V).to(dtype).float()
    gs = torch.randn(N, Hq, K, V)
    kw = {}
    if chunk:
        kw["chunk_size"] = chunk_size or 64
    if cu is not None:
        kw["cu_seqlens"] = torch.tensor(cu, dtype=torch.int32)
    fn, ref_fn = fns(kind, chunk)
    got = run(on_cuda(fn), q, k, v, dec, h0, final, go, gs, **kw)
    same = run(ref_fn, q, k, v, dec, h0, final, go, gs, **kw)
    exact = run(ref_fn, q, k, v, dec, h0, final, go.double(), gs.double(),
                cast=torch.float64, **kw)
    assert got[0].dtype == dtype
    assert_error_within("o", got[0], same[0], exact[0])
    if final:
        assert got[1].dtype == torch.float32 and got[1].shape == (N, Hq, K, V)
        assert_error_within("final_state", got[1], same[1], exact[1])
    assert set(got[2]) == set(exact[2])
    floor = {}
    if kind == "g_gamma":  # as tests/test_scan.py: the sum of B * T per-step gradients
        steps = {"g": dec["g_gamma"].expand(B, T, Hq).contiguous()}
        same_g = run(ref_fn, q, k, v, steps, h0, final, go, gs, **kw)[2]["g"]
        exact_g = run(ref_fn, q, k, v, steps, h0, final, go.double(), gs.double(),
                      cast=torch.float64, **kw)[2]["g"]
        floor["g_gamma"] = (same_g.double() - exact_g).reshape(-1, Hq).abs().sum(0).max().item()
    for name in exact[2]:
        assert_error_within("d" + name, got[2][name], same[2][name], exact[2][name],
                            ref_err_floor=floor.get(name, 0.0))
    return got


SHAPES = [  # (B, T, Hq, Hkv, K, V)
    (1, 1, 1, 1, 16, 16),     # T = 1
    (2, 37, 4, 2, 20, 19),    # GQA 2:1, K / V not multiples of 16, T < chunk
    (2, 130, 2, 2, 64, 64),   # T not a multiple of the chunk
    (1, 65, 3, 1, 7, 33),     # GQA 3:1, tiny K
    (1, 128, 2, 2, 32, 48),   # whole chunks
    (1, 200, 2, 1, 128, 128),  # the benchmark's head dims
    (1, 70, 1, 1, 256, 96),   # large K
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cuda_chunk_matches_reference(kind, shape):
    compare(kind, True, shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1, 2, 1, 16, 16), (2, 9, 4, 2, 20, 19)])
def test_cuda_recurrent_matches_reference(kind, shape):
    compare(kind, False, shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [True, False])
def test_cuda_bf16(kind, chunk):
    got = compare(kind, chunk, (2, 70, 4, 2, 32, 24), dtype=torch.bfloat16)
    for name in ("q", "k", "v"):
        assert got[2][name].dtype == torch.bfloat16


@pytest.mark.parametrize("kind", KINDS)
def test_cuda_float16(kind):
    compare(kind, True, (1, 50, 2, 2, 16, 16), dtype=torch.float16)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_cuda_cu_seqlens(kind, with_h0):
    lens = [5, 1, 70, 0, 9, 64, 130]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    compare(kind, True, (1, cu[-1], 4, 2, 20, 12), cu=cu, with_h0=with_h0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("final", [False, True])
def test_cuda_without_states(kind, final):
    compare(kind, True, (2, 50, 2, 2, 16, 16), with_h0=False, final=final)


@pytest.mark.parametrize("kind", ["g", "g_gamma", "gk"])
def test_cuda_strong_decay(kind):
    compare(kind, True, (1, 100, 2, 2, 16, 16), decay_scale=200.0)


@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu_kernel_and_is_deterministic(kind):
    B, T, Hq, Hkv, K, V = 2, 150, 4, 2, 40, 24
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, kind, n_state=B)
    go, gs = torch.randn(B, T, Hq, V), torch.randn(B, Hq, K, V)
    fn, _ = fns(kind, True)
    cpu = run(fn, q, k, v, dec, h0, True, go, gs)
    gpu = [run(on_cuda(fn), q, k, v, dec, h0, True, go, gs) for _ in range(2)]
    assert torch.equal(gpu[0][0], gpu[1][0]) and torch.equal(gpu[0][1], gpu[1][1])
    for name in cpu[2]:
        assert torch.equal(gpu[0][2][name], gpu[1][2][name]), name  # deterministic
        torch.testing.assert_close(gpu[0][2][name], cpu[2][name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu[0][0], cpu[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu[0][1], cpu[1], rtol=1e-4, atol=1e-4)


def test_cuda_empty_sequence():
    q, k, v, dec, h0 = make(2, 0, 2, 2, 8, 4, "g", n_state=2)
    q, k, v, h0 = (x.cuda() for x in (q, k, v, h0))
    o, s = ops.chunk_simple_gla(q, k, v, g=dec["g"].cuda(), initial_state=h0,
                                output_final_state=True)
    assert o.shape == (2, 0, 2, 4)
    torch.testing.assert_close(s, h0, rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_cuda_opcheck(kind):
    B, T, Hq, Hkv, K, V = 1, 70, 2, 1, 8, 6
    q, k, v, dec, h0 = make(B, T, Hq, Hkv, K, V, kind, n_state=B)
    c = lambda t: None if t is None else t.cuda()  # noqa: E731
    g = c(dec.get("g")) if kind == "g" else None
    g_gamma = c(dec.get("g_gamma"))
    gk = c(dec.get("g")) if kind == "gk" else None
    q, k, v, h0 = (x.cuda() for x in (q, k, v, h0))
    torch.library.opcheck(torch.ops.spikeops.linear_scan_fwd.default,
                          (q, k, v, g, g_gamma, gk, 0.3, h0, None, 64, True))
    cu = torch.tensor([0, 5, 5, 70], dtype=torch.int64, device="cuda")
    torch.library.opcheck(torch.ops.spikeops.linear_scan_fwd.default,
                          (q, k, v, g, g_gamma, gk, 0.3, torch.randn(3, Hq, K, V, device="cuda"),
                           cu, 64, False))
    do, dht = torch.randn(B, T, Hq, V, device="cuda"), torch.randn(B, Hq, K, V, device="cuda")
    torch.library.opcheck(torch.ops.spikeops.linear_scan_bwd.default,
                          (do, dht, q, k, v, g, g_gamma, gk, 0.3, h0, None, 64))


def test_cuda_errors():
    q, k, v, dec, _ = make(1, 10, 2, 2, 8, 4, "g")
    q, k, v, g = (x.cuda() for x in (q, k, v, dec["g"]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        ops.chunk_simple_gla(q, k, v, g=g, cu_seqlens=torch.tensor([0, 4, 9], device="cuda"))
    with pytest.raises(ValueError, match="initial_state"):
        ops.chunk_simple_gla(q, k, v, g=g, initial_state=torch.zeros(2, 2, 8, 4, device="cuda"))
    with pytest.raises(ValueError, match="initial_state"):
        ops.chunk_simple_gla(q, k, v, g=g, initial_state=torch.zeros(1, 2, 8, 4))  # on the CPU


@pytest.fixture(autouse=True)
def _unvalidated_cuda_enabled(monkeypatch):
    # These CUDA kernels crashed in their first GPU run (2026-11-23); the ops refuse CUDA
    # tensors unless this is set, and the tests run them to find the crash.
    monkeypatch.setenv("SPIKEOPS_UNVALIDATED_CUDA", "1")
