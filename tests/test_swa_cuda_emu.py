"""The sliding-window attention CUDA kernels (csrc/cuda/swa) run in a host emulation against
the CPU kernels: o, lse, dq, dk, dv over the CUDA test shapes of tests/test_swa.py, so their
indexing, tiling, masks, shared-memory layout, warp shuffles and barrier choreography are
checked on machines without a GPU (tests/cuda_emu/cuda_runtime.h says what is emulated and
what is not: not timing, not the device's float arithmetic).

The kernel sources are copied, their ``<<<...>>>`` launches rewritten into calls of
``emu_launch_smem`` and their ``extern __shared__`` arrays into the launch's buffer
(tests/cuda_emu_support.py), compiled with g++ (threads as fibers: -DEMU_FIBERS) into a
shared library with tests/cuda_emu/swa_driver.cpp and called through ctypes. Float only:
the emulated bf16 / fp16 types do not round. The launch checks of the emulation (grid and
block limits, dynamic shared memory over 48 KB without cudaFuncSetAttribute) apply too.
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from spikeops.ref.attention import sliding_window_attn_ref

from conftest import skip_unless
from cuda_emu_support import build_emulation
from test_swa import CUDA_SHAPES, _lse_ref, assert_error_within

native = skip_unless("extension")

I64, F32 = ctypes.c_int64, ctypes.c_float


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build_emulation(tmp_path_factory.mktemp("cuda_emu_swa"), ("swa",),
                           ("cuda/swa/swa.cu", "cuda/swa/swa_f32.cu", "cuda/swa/swa_bf16.cu",
                            "cuda/swa/swa_f16.cu"), "swa_driver.cpp", "libemu_swa",
                           flags=("-DEMU_FIBERS",))


def _p(t):
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def rel_err(a, b):
    if a.numel() == 0:
        return 0.0
    assert torch.isfinite(a).all(), "unwritten (NaN) output"
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def nan(*shape):
    return torch.full(shape, float("nan"))


def run_fwd(lib, q, k, v, window, scale):
    B, T, H, D = q.shape
    Dv = v.shape[3]
    o, lse = nan(B, T, H, Dv), nan(B, H, T)
    rc = lib.emu_swa_fwd(I64(B), I64(T), I64(H), I64(D), I64(Dv), I64(window), F32(scale),
                         _p(q), _p(k), _p(v), _p(o), _p(lse))
    return rc, o, lse


def run_bwd(lib, go, gl, q, k, v, o, lse, window, scale):
    B, T, H, D = q.shape
    Dv = v.shape[3]
    dq, dk, dv = nan(B, T, H, D), nan(B, T, H, D), nan(B, T, H, Dv)
    rc = lib.emu_swa_bwd(I64(B), I64(T), I64(H), I64(D), I64(Dv), I64(window), F32(scale),
                         _p(q), _p(k), _p(v), _p(o), _p(lse), _p(go), _p(gl), _p(dq), _p(dk),
                         _p(dv))
    return rc, dq, dk, dv


def check(lib, shape, with_grad_lse):
    """o and lse against the CPU op; dq, dk, dv as tests/test_swa.py holds the kernels: the
    error against the float64 reference within twice the CPU op's (fp32, from the same o
    and lse) plus a few ulps of the problem's magnitude (window 1: the gradients of q and
    k cancel to 0, leaving rounding noise of the size of dO . v)."""
    B, T, H, D, Dv, window = shape
    torch.manual_seed(sum(shape) + with_grad_lse)
    q, k, v = torch.randn(B, T, H, D), torch.randn(B, T, H, D), torch.randn(B, T, H, Dv)
    scale = D ** -0.5 if D else 1.0
    rc, o, lse = run_fwd(lib, q, k, v, window, scale)
    assert rc == 0
    o_c, lse_c = torch.ops.spikeops.swa_fwd.default(q, k, v, window, scale)
    assert rel_err(o, o_c) < 2e-5, "o"
    if lse.numel():
        assert torch.isfinite(lse).all(), "unwritten (NaN) lse"
        assert (lse - lse_c).abs().max().item() < 2e-5 * max(1.0, lse_c.abs().max().item()), "lse"

    go = torch.randn(B, T, H, Dv)
    gl = torch.randn(B, H, T) if with_grad_lse else None
    # the kernels' and the CPU op's backward both from the CPU forward's o and lse
    rc, dq, dk, dv = run_bwd(lib, go, gl, q, k, v, o_c, lse_c, window, scale)
    assert rc == 0
    same = torch.ops.spikeops.swa_bwd.default(go, gl, q, k, v, o_c, lse_c, window, scale)
    xs = [x.double().requires_grad_() for x in (q, k, v)]
    loss = (sliding_window_attn_ref(*xs, window, scale) * go.double()).sum()
    if gl is not None:
        loss = loss + (_lse_ref(xs[0], xs[1], window, scale) * gl.double()).sum()
    exact = torch.autograd.grad(loss, xs, allow_unused=True, materialize_grads=True) \
        if loss.requires_grad else [torch.zeros_like(x) for x in xs]
    mag = max([1.0] + [e.abs().max().item() for e in exact if e.numel()])
    lse_max = lse_c.abs().max().item() if lse_c.numel() else 0.0
    for name, got, sm, e in zip(("dq", "dk", "dv"), (dq, dk, dv), same, exact):
        try:
            assert_error_within(got, sm, e, mag, ulps=4.0 + 2.0 * lse_max)
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


@native
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_emulated_swa_matches_cpu(lib, shape):
    check(lib, shape, with_grad_lse=False)


@native
@pytest.mark.parametrize("shape", [(1, 200, 2, 40, 24, 90), (2, 70, 1, 3, 130, 33)],
                         ids=lambda s: "x".join(map(str, s)))
def test_emulated_swa_grad_lse(lib, shape):
    check(lib, shape, with_grad_lse=True)


# Beyond CUDA_SHAPES: the largest head dims (~129 KB of dynamic shared memory in the
# backward), D = 0, Dv = 0, T = 0, window 1 with a wide v, a window past 2^32.
AWKWARD = [(1, 70, 2, 256, 256, 1000), (1, 100, 1, 0, 5, 10), (1, 50, 2, 5, 0, 10),
           (1, 0, 2, 5, 5, 3), (1, 40, 1, 3, 130, 1), (1, 130, 1, 129, 127, 2 ** 40)]


@native
@pytest.mark.parametrize("shape", AWKWARD, ids=lambda s: "x".join(map(str, s)))
def test_emulated_swa_awkward_shapes(lib, shape):
    check(lib, shape, with_grad_lse=True)


@native
def test_emulated_swa_rejects_head_dim_over_max(lib):
    q = torch.randn(1, 4, 1, 257)
    rc, o, _ = run_fwd(lib, q, q, q[..., :8].contiguous(), 3, 1.0)
    assert rc != 0 and torch.isnan(o).all()
