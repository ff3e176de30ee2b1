"""Builds CUDA kernel sources into a host emulation (tests/cuda_emu): the sources are
copied, their ``<<<...>>>`` launches rewritten into calls of ``emu_launch``, and compiled
with g++ (C++20: std::barrier for __syncthreads) into a shared library for ctypes. Used by
the *_cuda_emu tests; skips when no suitable g++ is found."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMU = Path(__file__).resolve().parent / "cuda_emu"


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
        if len(args) >= 3 and args[2] != "0":  # dynamic shared memory
            call = f"emu_launch_smem({kern}, dim3({args[0]}), dim3({args[1]}), size_t({args[2]}), "
        else:
            call = f"emu_launch({kern}, dim3({args[0]}), dim3({args[1]}), "
        s = s[:j + 1] + call + f"{s[e + 4:k]})" + s[k + 1:]
    return s


def rewrite_dynamic_shared(s: str) -> str:
    """``extern __shared__ T name[];`` -> a pointer to the launch's dynamic shared memory
    (tests/cuda_emu/cuda_runtime.h: emu_dyn_smem)."""
    return re.sub(r"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;",
                  r"\1* \2 = static_cast<\1*>(emu_dyn_smem);", s)


def build_emulation(out: Path, families, sources, driver: str, name: str,
                    flags=()) -> ctypes.CDLL:
    """Compile csrc/cuda/<family>/ sources (paths relative to csrc) with tests/cuda_emu/
    <driver> into out/<name>.so; pytest.skip without g++ or C++20 <barrier>. ``flags``:
    extra g++ flags (e.g. -DEMU_FIBERS). With SPIKEOPS_EMU_SANITIZE set (e.g. to
    ``address,undefined``) the library is built with -fsanitize=<it> (the process then
    needs the sanitizer runtime preloaded: LD_PRELOAD=$(g++ -print-file-name=libasan.so))."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found: CUDA emulation skipped")
    probe = out / "probe.cpp"
    probe.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    if subprocess.run([cxx, "-std=c++20", "-fsyntax-only", str(probe)],
                      capture_output=True).returncode != 0:
        pytest.skip(f"{cxx} has no C++20 <barrier>: CUDA emulation skipped")
    src = out / "src"
    shutil.copytree(ROOT / "csrc" / "common", src / "common")
    for fam in families:
        shutil.copytree(ROOT / "csrc" / "cuda" / fam, src / "cuda" / fam)
        for f in list((src / "cuda" / fam).glob("*.cu")) + list((src / "cuda" / fam).glob("*.cuh")):
            f.write_text(rewrite_dynamic_shared(rewrite_launches(f.read_text())))
    inc = out / "inc"
    inc.mkdir()
    for header in ("cuda_runtime.h", "cuda_fp16.h", "cuda_bf16.h"):
        shutil.copy(EMU / header, inc / header)
    # a forwarding header, not a copy: #pragma once tells two copies apart only by
    # their modification times (a copy made in another second redefines everything)
    (inc / "cuda_runtime_api.h").write_text('#pragma once\n#include "cuda_runtime.h"\n')
    so = out / f"{name}.so"
    cmd = [cxx, "-std=c++20", "-O1", "-fPIC", "-shared", "-I", str(inc), "-I", str(src),
           *flags]
    sanitize = os.environ.get("SPIKEOPS_EMU_SANITIZE")
    if sanitize:
        cmd += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g",
                "-fno-sanitize-recover=all"]
    for s in sources:
        cmd += ["-x", "c++", str(src / s)]
    cmd += ["-x", "c++", str(EMU / driver), "-o", str(so), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(so))
