"""The linear-attention scan CUDA kernels (csrc/cuda/scan) run in a host emulation against
the CPU kernels, so their indexing, tiling, bounds and barrier choreography are checked on
machines without a GPU (tests/cuda_emu/cuda_runtime.h says what is emulated and what is
not: not timing, not the device's float arithmetic).

The kernel sources are copied, their ``<<<...>>>`` launches rewritten into calls of
``emu_launch`` (tests/cuda_emu_support.py), compiled with g++ into a shared library
with tests/cuda_emu/scan_driver.cpp (which builds the device sequence table and workspace
as csrc/ops/scan.cpp does) and called through ctypes. Float only: the emulated bf16 /
fp16 types do not round.
"""
from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

from conftest import skip_unless
from cuda_emu_support import build_emulation

native = skip_unless("extension")

DECAY = {None: 0, "g": 1, "g_gamma": 1, "gk": 2}


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build_emulation(tmp_path_factory.mktemp("cuda_emu_scan"), ("neurons", "scan"),
                           ("cuda/scan/scan.cu", "cuda/scan/scan_f32.cu", "cuda/scan/scan_bf16.cu",
                            "cuda/scan/scan_f16.cu"), "scan_driver.cpp", "libemu_scan")


def _p(t):
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


I64, F32, INT = ctypes.c_int64, ctypes.c_float, ctypes.c_int


def rel_err(a, b):
    if a.numel() == 0:
        return 0.0
    assert torch.isfinite(a).all(), "unwritten (NaN) output"
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def make(B, T, Hq, Hkv, K, V, kind, decay_scale=1.0):
    q, k = torch.randn(B, T, Hq, K), torch.randn(B, T, Hkv, K)
    v = torch.randn(B, T, Hkv, V)
    g = g_gamma = gk = None
    if kind == "g":
        g = F.logsigmoid(torch.randn(B, T, Hq) + 2) * decay_scale
    elif kind == "g_gamma":
        g_gamma = -torch.rand(Hq) * 0.5 * decay_scale
    elif kind == "gk":
        gk = F.logsigmoid(torch.randn(B, T, Hq, K) + 2) * decay_scale
    return q, k, v, g, g_gamma, gk


CASES = [  # B, T, Hq, Hkv, K, V, cu_seqlens, with h0 / dht
    (1, 1, 1, 1, 3, 5, None, True),
    (2, 70, 2, 1, 20, 18, None, True),
    (1, 64, 1, 1, 16, 16, None, False),
    (1, 150, 2, 2, 37, 33, [0, 3, 67, 67, 150], True),
    (2, 65, 4, 2, 8, 40, None, False),
    (1, 70, 1, 1, 128, 130, None, True),  # the benchmark head dims, V with a tail
    (2, 0, 2, 2, 8, 4, None, True),  # T = 0: final state = initial state
    (1, 300, 2, 1, 17, 5, [0, 0, 1, 64, 65, 128, 300, 300], True),  # empty first / last
]


@native
@pytest.mark.parametrize("kind", list(DECAY))
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:6])))
def test_emulated_scan_matches_cpu(lib, kind, case):
    check(lib, kind, case)


@native
@pytest.mark.parametrize("kind", ["g", "g_gamma", "gk"])
def test_emulated_scan_strong_decay(lib, kind):
    # log-decays around -20 per step: every exponent the kernels form stays <= 0
    check(lib, kind, (1, 100, 1, 1, 18, 20, None, True), decay_scale=200.0)


def check(lib, kind, case, decay_scale=1.0):
    B, T, Hq, Hkv, K, V, cu, states = case
    torch.manual_seed(sum(case[:6]) + len(str(kind)))
    q, k, v, g, g_gamma, gk = make(B, T, Hq, Hkv, K, V, kind, decay_scale)
    N = len(cu) - 1 if cu else B
    cu_t = torch.tensor(cu if cu else [b * T for b in range(B + 1)], dtype=torch.int64)
    h0 = torch.randn(N, Hq, K, V) if states else None
    scale = K ** -0.5
    dec = g if g is not None else g_gamma if g_gamma is not None else gk
    gamma = int(g_gamma is not None)
    rows = B * T
    o, ht = torch.full((B, T, Hq, V), float("nan")), torch.full((N, Hq, K, V), float("nan"))
    assert lib.emu_scan_fwd(I64(N), I64(Hq), I64(Hkv), I64(K), I64(V), INT(DECAY[kind]),
                            INT(gamma), F32(scale), _p(cu_t), I64(rows), _p(q), _p(k), _p(v),
                            _p(dec), _p(h0), _p(o), _p(ht)) == 0
    cu_arg = torch.tensor(cu, dtype=torch.int64) if cu else None
    o_c, ht_c = torch.ops.spikeops.linear_scan_fwd.default(
        q, k, v, g, g_gamma, gk, scale, h0, cu_arg, 64, True)
    assert rel_err(o, o_c) < 2e-5, "o"
    assert rel_err(ht, ht_c) < 2e-5, "final state"

    do = torch.randn(B, T, Hq, V)
    dht = torch.randn(N, Hq, K, V) if states else None
    nan = lambda *s: torch.full(s, float("nan"))
    dq, dk, dv = nan(B, T, Hq, K), nan(B, T, Hq, K), nan(B, T, Hq, V)
    dg = None
    if kind == "g":
        dg = nan(B, T, Hq)
    elif kind == "g_gamma":
        dg = nan(N, Hq)
    elif kind == "gk":
        dg = nan(B, T, Hq, K)
    dh0 = nan(N, Hq, K, V) if states else None
    assert lib.emu_scan_bwd(I64(N), I64(Hq), I64(Hkv), I64(K), I64(V), INT(DECAY[kind]),
                            INT(gamma), F32(scale), _p(cu_t), I64(rows), _p(q), _p(k), _p(v),
                            _p(dec), _p(h0), _p(do), _p(dht), _p(dq), _p(dk), _p(dv), _p(dg),
                            _p(dh0)) == 0
    want = torch.ops.spikeops.linear_scan_bwd.default(
        do, dht, q, k, v, g, g_gamma, gk, scale, h0, cu_arg, 64)
    rep = Hq // Hkv
    got = {"dq": dq, "dk": dk.view(B, T, Hkv, rep, K).sum(3),
           "dv": dv.view(B, T, Hkv, rep, V).sum(3)}
    if dg is not None:
        got["dg"] = dg.sum(0) if kind == "g_gamma" else dg
    if states:
        got["dh0"] = dh0
    for name, w in zip(("dq", "dk", "dv", "dg", "dh0"), want):
        if name in got:
            if name == "dg" and kind == "g_gamma":
                # a sum of B * T per-step gradients that largely cancel: its error is held
                # to the scale of the per-step terms (the CPU kernel's, with g expanded)
                steps = torch.ops.spikeops.linear_scan_bwd.default(
                    do, dht, q, k, v, g_gamma.expand(B, T, Hq).contiguous(), None, None,
                    scale, h0, cu_arg, 64)[3]
                # (plus a floor at the float32 denormal range, where strong decays end up)
                tol = max(5e-5 * steps.abs().sum((0, 1)).max().item(), 1e-30)
                assert (got[name] - w).abs().max().item() < tol, name
            else:
                assert rel_err(got[name], w) < 5e-5, name
