"""Benchmark entries of the recurrent attention ops: RWKV-4 WKV and SDSA.

RWKV-4 WKV, shape ``(B, T, C)``: k ~ 3 N(0, 1), v ~ N(0, 1), time_decay / time_first
``[C]``. SDSA, shape ``(T, B, H, N, D)``: q, k, v binary spikes at a 25% rate (the
Spike-driven Transformer's SDSA input), v_threshold 0.5, tau 2. Each entry times forward
+ backward with a fixed upstream gradient (``*_fwd`` entries the forward alone) through
spikeops.ops, the pure-PyTorch reference (a Python loop over T for RWKV; token sum + LIF
loop + broadcast product for SDSA), and the reference under torch.compile. There is no
installed peer (the RWKV CUDA kernel ships inside model repositories, not as a package).

Traffic (the roofline's bytes): RWKV forward reads k, v and writes y (3 [B, T, C]);
fwd + bwd adds grad_y read, k and v re-read, grad_k, grad_v written (8 in all). SDSA
forward reads q, k, v and writes out (4 [T, B, H, N, D]); fwd + bwd adds grad_out, q, k, v
read and three gradients written (11 in all). The [C] / [T, B, H, 1, D] side tensors are
negligible and not counted.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from .registry import OpEntry, Prepared, Shape, Thunk, register


def _traffic(passes: int) -> Callable[[Shape, torch.dtype], int]:
    def count(shape: Shape, dtype: torch.dtype) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return passes * math.prod(shape) * itemsize
    return count


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _thunk(fn: Callable[..., Any], args: tuple[torch.Tensor, ...],
           grad: torch.Tensor | None) -> Thunk:
    leaves = [t for t in args if t.requires_grad]

    def fwd_bwd() -> None:
        for t in leaves:  # replace, never accumulate: accumulation would add a pass
            t.grad = None
        torch.autograd.backward(fn(*args), grad)

    def fwd() -> None:
        with torch.no_grad():
            fn(*args)

    return fwd if grad is None else fwd_bwd


def _variants(prep: Prepared, op: Callable[..., Any] | None, op_error: str | None,
              ref_fn: Callable[..., Any], args: tuple[torch.Tensor, ...],
              grad: torch.Tensor | None, compile_reference: bool, compile_note: str = ""):
    if op is not None:
        prep.fns["spikeops"] = _thunk(op, args, grad)
    else:
        prep.unavailable["spikeops"] = op_error or "unavailable"
    prep.fns["reference"] = _thunk(ref_fn, args, grad)
    if compile_reference and not compile_note:
        prep.fns["reference_compiled"] = _thunk(_compiled(ref_fn), args, grad)
    else:
        prep.unavailable["reference_compiled"] = compile_note or (
            "compile off (--no-compile, or --quick without --compile)")
    prep.unavailable["peer"] = "no installed package provides this op"


# Compiling the reference unrolls its Python loop over T: at T = 128 (forward + backward)
# that took 2-3 minutes on the 2-core VM; longer loops are not compiled.
_MAX_COMPILED_STEPS = 128


def _rwkv_builder(backward: bool):
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        from spikeops.ref.attention import rwkv4_wkv_ref

        prep = Prepared()
        B, T, C = shape
        gen = torch.Generator(device="cpu").manual_seed(0)
        td = (torch.randn(C, generator=gen) - 0.5).to(device)
        tf = torch.randn(C, generator=gen).to(device)
        k = (3 * torch.randn(shape, generator=gen)).to(device=device, dtype=dtype)
        v = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        grad = None
        if backward:
            grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
            for t in (td, tf, k, v):
                t.requires_grad_(True)
        op, err = None, None
        try:
            from spikeops import ops
            op = ops.rwkv4_wkv
        except Exception as exc:
            err = f"spikeops.ops.rwkv4_wkv: {type(exc).__name__}: {exc}"
        note = (f"T = {T} > {_MAX_COMPILED_STEPS}: compiling the unrolled loop is skipped"
                if T > _MAX_COMPILED_STEPS else "")
        _variants(prep, op, err, rwkv4_wkv_ref, (td, tf, k, v), grad, compile_reference,
                  note)
        return prep
    return build


def _sdsa_builder(backward: bool):
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        from spikeops.ref.attention import sdsa_ref

        prep = Prepared()
        gen = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = ((torch.rand(shape, generator=gen) < 0.25).to(device=device, dtype=dtype)
                   for _ in range(3))
        grad = None
        if backward:
            grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
            for t in (q, k, v):
                t.requires_grad_(True)
        op, err = None, None
        try:
            from spikeops import ops
            op = ops.sdsa
        except Exception as exc:
            err = f"spikeops.ops.sdsa: {type(exc).__name__}: {exc}"
        _variants(prep, op, err, sdsa_ref, (q, k, v), grad, compile_reference)
        return prep
    return build


# Forward + backward at T = 256: the eager reference's backward walks a graph of ~40 nodes
# per step, seconds per call at T = 1024 on a CPU, which the benchmark repeats >= 13 times.
register(OpEntry(
    name="rwkv4_wkv_fp32", family="recurrent", shape=(8, 256, 512),
    quick_shape=(2, 64, 256), dtype=torch.float32, build=_rwkv_builder(True),
    bytes=_traffic(8), description="RWKV-4 WKV (SpikeGPT), forward + backward"))
register(OpEntry(
    name="rwkv4_wkv_fwd_fp32", family="recurrent", shape=(8, 1024, 512),
    quick_shape=(2, 64, 256), dtype=torch.float32, build=_rwkv_builder(False),
    bytes=_traffic(3), description="RWKV-4 WKV (SpikeGPT, T = 1024), forward"))
register(OpEntry(
    name="rwkv4_wkv_short_fp32", family="recurrent", shape=(8, 128, 512),
    quick_shape=(2, 32, 256), dtype=torch.float32, build=_rwkv_builder(True),
    bytes=_traffic(8), description="RWKV-4 WKV, T = 128 (compiled reference shown)"))
register(OpEntry(
    name="sdsa_fp32", family="recurrent", shape=(4, 8, 8, 196, 64),
    quick_shape=(2, 2, 4, 196, 64), dtype=torch.float32, build=_sdsa_builder(True),
    bytes=_traffic(11), description="Spike-driven Transformer SDSA, forward + backward"))
register(OpEntry(
    name="sdsa_fwd_fp32", family="recurrent", shape=(4, 8, 8, 196, 64),
    quick_shape=(2, 2, 4, 196, 64), dtype=torch.float32, build=_sdsa_builder(False),
    bytes=_traffic(4), description="Spike-driven Transformer SDSA, forward"))
