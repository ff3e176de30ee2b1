"""Benchmark entries of spiking self-attention (Spikformer SSA) on binary spikes.

Shape ``(T, B, H, N, D)``: q, k, v ``[T, B, H, N, D]`` spikes at a 25% firing rate; the
op is ``q @ (k^T @ v) * scale``. Variants: spikeops.ops.ssa (bit-packed popcount kernel);
the reference (``ssa_ref``, kv_first: two batched float matmuls, MKL on the CPU); the
reference compiled; and the peer, the reference in the paper's order
(``(q @ k^T) @ v``, qk_first), the float computation Spikformer code runs.

FLOPs are those of the kv_first float matmuls (2 * 2 * G * N * D * D), so the sgemm
fraction says how the bit kernel compares to dense float arithmetic at the same size.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from .registry import OpEntry, Prepared, Shape, register


def _flops(shape: Shape, dtype: torch.dtype) -> int:
    *lead, n, d = shape
    return 4 * math.prod(lead) * n * d * d


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _build(shape: Shape, dtype: torch.dtype, device: torch.device,
           compile_reference: bool) -> Prepared:
    from spikeops.ref.attention import ssa_ref

    prep = Prepared()
    q, k, v = ((torch.rand(shape, device=device) < 0.25).to(dtype) for _ in range(3))
    try:
        from spikeops import ops
        prep.fns["spikeops"] = functools.partial(ops.ssa, q, k, v, 0.125)
    except Exception as exc:
        prep.unavailable["spikeops"] = f"spikeops.ops.ssa: {type(exc).__name__}: {exc}"
    prep.fns["reference"] = functools.partial(ssa_ref, q, k, v, 0.125, "kv_first")
    if compile_reference:
        compiled = _compiled(functools.partial(ssa_ref, scale=0.125, order="kv_first"))
        prep.fns["reference_compiled"] = lambda: compiled(q, k, v)
    else:
        prep.unavailable["reference_compiled"] = (
            "compile off (--no-compile, or --quick without --compile)")
    prep.fns["peer"] = functools.partial(ssa_ref, q, k, v, 0.125, "qk_first")
    prep.notes["peer"] = "float matmuls in the paper's order, (q @ k^T) @ v (qk_first)"
    return prep


register(OpEntry(
    name="ssa_binary_fp32", family="attention", shape=(4, 8, 8, 196, 64),
    quick_shape=(2, 2, 4, 196, 64), dtype=torch.float32, build=_build, devices=("cpu",),
    flops=_flops, description="Spikformer SSA, binary q/k/v, forward"))

# CUDA: bf16 spikes; the reference is then two cuBLAS bf16 batched matmuls (kv_first).
register(OpEntry(
    name="ssa_binary_bf16_gpu", family="attention", shape=(4, 8, 8, 196, 64),
    quick_shape=(2, 2, 4, 196, 64), dtype=torch.bfloat16, build=_build, devices=("cuda",),
    flops=_flops, description="Spikformer SSA, binary q/k/v, forward vs cuBLAS bf16 matmuls"))


def _build_lif(shape: Shape, dtype: torch.dtype, device: torch.device,
               compile_reference: bool) -> Prepared:
    from spikeops.ref.attention import ssa_lif_ref

    prep = Prepared()
    q, k, v = ((torch.rand(shape, device=device) < 0.25).to(dtype) for _ in range(3))
    # the scale Spikformer uses (0.125) makes the attention LIF fire at a realistic rate here
    try:
        from spikeops import ops
        prep.fns["spikeops"] = functools.partial(ops.ssa_lif, q, k, v, 0.125)
    except Exception as exc:
        prep.unavailable["spikeops"] = f"spikeops.ops.ssa_lif: {type(exc).__name__}: {exc}"
    prep.fns["reference"] = functools.partial(ssa_lif_ref, q, k, v, 0.125)
    if compile_reference:
        compiled = _compiled(functools.partial(ssa_lif_ref, scale=0.125))
        prep.fns["reference_compiled"] = lambda: compiled(q, k, v)
    else:
        prep.unavailable["reference_compiled"] = (
            "compile off (--no-compile, or --quick without --compile)")
    try:
        from spikeops import ops

        def unfused() -> Any:
            return ops.lif(ops.ssa(q, k, v, 0.125), tau=2.0, v_threshold=0.5)[0]
        prep.fns["peer"] = unfused
        prep.notes["peer"] = "unfused spikeops: ops.ssa then ops.lif (attention values stored)"
    except Exception as exc:
        prep.unavailable["peer"] = f"{type(exc).__name__}: {exc}"
    return prep


register(OpEntry(
    name="ssa_lif_binary_fp32", family="attention", shape=(4, 8, 8, 196, 64),
    quick_shape=(2, 2, 4, 196, 64), dtype=torch.float32, build=_build_lif,
    devices=("cpu", "cuda"), flops=_flops,
    description="Spikformer SSA + attention LIF (tau 2, threshold 0.5), fused, forward"))
