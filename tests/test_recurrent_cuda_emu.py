"""The recurrent CUDA kernels (csrc/cuda/recurrent) run in a host emulation against the CPU
kernels, so their indexing, bounds and barrier choreography are checked on machines
without a GPU (tests/cuda_emu/cuda_runtime.h says what is emulated and what is not).

The kernel sources are copied, their ``<<<...>>>`` launches rewritten into calls of
``emu_launch``, compiled with g++ (C++20: std::barrier) into a shared library and called
through ctypes. Float only: the emulated bf16 / fp16 types do not round.
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from spikeops.ref.surrogate import SURROGATES

from conftest import skip_unless
from cuda_emu_support import build_emulation

native = skip_unless("extension")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build_emulation(tmp_path_factory.mktemp("cuda_emu"), ("neurons", "recurrent"),
                           ("cuda/recurrent/rwkv.cu", "cuda/recurrent/sdsa.cu"), "driver.cpp",
                           "libemu")


def _p(t):
    return ctypes.c_void_p(t.data_ptr())


I64, F32 = ctypes.c_int64, ctypes.c_float


def nan_like(t):
    return torch.full_like(t, float("nan"))


def rel_err(a, b):
    if a.numel() == 0:
        return 0.0
    assert torch.isfinite(a).all(), "unwritten (NaN) output"
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@native
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 5), (3, 77, 37), (2, 20, 130)])
def test_emulated_rwkv_matches_cpu(lib, shape):
    from spikeops.ops import rwkv4_wkv
    B, T, C = shape
    td, tf = torch.randn(C) - 0.5, torch.randn(C)
    k, v, g = torch.randn(B, T, C) * 3, torch.randn(B, T, C), torch.randn(B, T, C)
    y = nan_like(k)
    assert lib.emu_rwkv_fwd(I64(B), I64(T), I64(C), _p(td), _p(tf), _p(k), _p(v), _p(y)) == 0
    xs = [x.clone().requires_grad_() for x in (td, tf, k, v)]
    y_cpu = rwkv4_wkv(*xs)
    y_cpu.backward(g)
    gk, gv, gtd, gtf = nan_like(k), nan_like(k), nan_like(td), nan_like(td)
    assert lib.emu_rwkv_bwd(I64(B), I64(T), I64(C), _p(td), _p(tf), _p(k), _p(v), _p(g),
                            _p(gk), _p(gv), _p(gtd), _p(gtf)) == 0
    pairs = [(y, y_cpu.detach()), (gtd, xs[0].grad), (gtf, xs[1].grad), (gk, xs[2].grad),
             (gv, xs[3].grad)]
    for name, (a, b) in zip(("y", "time_decay", "time_first", "k", "v"), pairs):
        # different exp implementations and fma use: agreement to ~1e-6 of the scale
        assert rel_err(a, b) < 2e-5, name


@native
@pytest.mark.parametrize("shape,detach,surrogate", [
    ((1, 1, 1, 1, 1), True, "sigmoid"), ((4, 2, 3, 17, 21), False, "sigmoid"),
    ((3, 1, 2, 1, 7), True, "atan"), ((5, 2, 2, 8, 70), False, "erf"),
    ((2, 1, 1, 0, 5), True, "sigmoid"), ((3, 2, 1, 40, 33), False, "triangle")])
def test_emulated_sdsa_matches_cpu(lib, shape, detach, surrogate):
    T, B, H, N, D = shape
    q, k, v = ((torch.randint(-4, 5, shape) / 4.0) for _ in range(3))
    g = torch.randn(shape)
    vth, tau, alpha = 0.25, 2.0, 3.0
    out, h = nan_like(q), torch.full((T, B, H, 1, D), float("nan"))
    assert lib.emu_sdsa_fwd(I64(T), I64(B * H), I64(N), I64(D), _p(q), _p(k), _p(v), _p(out),
                            _p(h), F32(vth), F32(tau)) == 0
    out_c, h_c = torch.ops.spikeops.sdsa_fwd.default(q, k, v, vth, tau, detach, surrogate, alpha)
    # grid values: exact sums, so the same membrane and output bit for bit
    assert torch.equal(out, out_c) and torch.equal(h, h_c)
    gq, gk, gv = nan_like(q), nan_like(q), nan_like(q)
    sid = list(SURROGATES).index(surrogate)
    assert lib.emu_sdsa_bwd(I64(T), I64(B * H), I64(N), I64(D), _p(q), _p(k), _p(v), _p(g),
                            _p(h), _p(gq), _p(gk), _p(gv), F32(vth), F32(tau),
                            ctypes.c_int(int(detach)), ctypes.c_int(sid), F32(alpha)) == 0
    want = torch.ops.spikeops.sdsa_bwd.default(g, q, k, v, h_c, vth, tau, detach, surrogate,
                                              alpha)
    for name, a, b in zip("qkv", (gq, gk, gv), want):
        assert rel_err(a, b) < 1e-5, "d" + name
