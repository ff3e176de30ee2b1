"""The recurrent CUDA kernels (csrc/cuda/recurrent) run in a host emulation against the CPU
kernels, so their indexing, bounds and barrier choreography are checked on machines
without a GPU (tests/cuda_emu/cuda_runtime.h says what is emulated and what is not).

The kernel sources are copied, their ``<<<...>>>`` launches rewritten into calls of
``emu_launch``, compiled with g++ (C++20: std::barrier) into a shared library and called
through ctypes. Float only: the emulated bf16 / fp16 types do not round.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from spikeops.ref.surrogate import SURROGATES

from conftest import skip_unless

ROOT = Path(__file__).resolve().parents[1]
EMU = Path(__file__).resolve().parent / "cuda_emu"
native = skip_unless("extension")


def _split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "(<["
        depth -= ch in ")>]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def rewrite_launches(s: str) -> str:
    """``name<targs>\\n <<<a, b, 0, stream>>>(p)`` -> ``emu_launch(name<targs>, dim3(a), dim3(b), p)``."""
    while "<<<" in s:
        i = s.index("<<<")
        j = i - 1
        while s[j].isspace():
            j -= 1
        if s[j] == ">":  # template arguments
            depth = 0
            while True:
                depth += (s[j] == ">") - (s[j] == "<")
                if depth == 0:
                    break
                j -= 1
            j -= 1
        while s[j].isalnum() or s[j] == "_":
            j -= 1
        kern = s[j + 1:i].strip()
        e = s.index(">>>", i)
        args = _split_top(s[i + 3:e])
        k, depth = e + 3, 0
        while True:
            depth += (s[k] == "(") - (s[k] == ")")
            if depth == 0:
                break
            k += 1
        s = (s[:j + 1] + f"emu_launch({kern}, dim3({args[0]}), dim3({args[1]}), {s[e + 4:k]})"
             + s[k + 1:])
    return s


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found: CUDA emulation skipped")
    out = tmp_path_factory.mktemp("cuda_emu")
    probe = out / "probe.cpp"
    probe.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    if subprocess.run([cxx, "-std=c++20", "-fsyntax-only", str(probe)],
                      capture_output=True).returncode != 0:
        pytest.skip(f"{cxx} has no C++20 <barrier>: CUDA emulation skipped")
    src = out / "src"
    shutil.copytree(ROOT / "csrc" / "common", src / "common")
    for fam in ("neurons", "recurrent"):
        shutil.copytree(ROOT / "csrc" / "cuda" / fam, src / "cuda" / fam)
        for f in list((src / "cuda" / fam).glob("*.cu")) + list((src / "cuda" / fam).glob("*.cuh")):
            f.write_text(rewrite_launches(f.read_text()))
    inc = out / "inc"
    inc.mkdir()
    for name in ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h"):
        shutil.copy(EMU / name, inc / name)
    shutil.copy(EMU / "cuda_runtime.h", inc / "cuda_runtime_api.h")
    so = out / "libemu.so"
    cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-I", str(inc), "-I", str(src),
           "-x", "c++", str(src / "cuda/recurrent/rwkv.cu"),
           "-x", "c++", str(src / "cuda/recurrent/sdsa.cu"),
           "-x", "c++", str(EMU / "driver.cpp"), "-o", str(so), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(so))


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
