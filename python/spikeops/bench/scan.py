"""Benchmark entries of the linear-attention scans (simple GLA, GLA, decoding).

Shape ``(B, T, H, K, V)``: q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, log-decays
``logsigmoid(randn + 3)`` (mild, as in trained models), chunk size 64. Variants:
spikeops.ops (the chunked CPU kernel); the reference (``spikeops.ref.attention``: the
chunk formula in PyTorch ops, with autograd for the training rows); the reference
compiled; no peer on the CPU (fla's kernels are Triton, GPU only).

Training rows time forward + backward (``o.backward(do)`` with every input requiring
grad). FLOPs are those the chunk algorithm must do per head and step, without
recomputation: forward ``C (K + V) + 4 K V`` (causal halves of the intra-chunk products,
the inter-chunk product and the state update), backward ``2 C (K + V) + 8 K V``; the sgemm
fraction compares them with the measured sgemm rate. The decode row is memory-bound (one
step reads and writes the [K, V] state): its bytes are the state read and written plus
q, k, v and o.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .registry import OpEntry, Prepared, Shape, register

CHUNK = 64


def _flops(train: bool) -> Callable[[Shape, torch.dtype], int]:
    def count(shape: Shape, dtype: torch.dtype) -> int:
        B, T, H, K, V = shape
        fwd = CHUNK * (K + V) + 4 * K * V
        bwd = 2 * CHUNK * (K + V) + 8 * K * V
        return B * T * H * (fwd + (bwd if train else 0))
    return count


def _decode_bytes(shape: Shape, dtype: torch.dtype) -> int:
    B, T, H, K, V = shape
    size = torch.empty((), dtype=dtype).element_size()
    return B * H * (2 * 4 * K * V + T * (2 * K + 2 * V) * size)


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _fla_peer(kind: str):
    """fla's Triton kernel of the same op (GPU rows), or the reason it is unavailable."""
    try:
        if kind == "gla":
            from fla.ops.gla import chunk_gla as fn
        else:
            from fla.ops.simple_gla import chunk_simple_gla as fn
    except Exception as exc:  # not installed, or no Triton
        return None, f"fla not importable: {type(exc).__name__}: {exc}"
    return fn, None


def _builder(kind: str, train: bool, decode: bool = False, gpu_peer: bool = False):
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        from spikeops.ref import attention as ref

        B, T, H, K, V = shape
        gen = torch.Generator(device="cpu").manual_seed(0)
        mk = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
        q, k, v = mk(B, T, H, K), mk(B, T, H, K), mk(B, T, H, V)
        gshape = (B, T, H, K) if kind == "gla" else (B, T, H)
        g = F.logsigmoid(torch.randn(*gshape, generator=gen) + 3).to(device)
        h0 = torch.randn(B, H, K, V, generator=gen).to(device) if decode else None
        do = mk(B, T, H, V)
        prep = Prepared()
        try:
            from spikeops import ops
            if decode:
                ours = functools.partial(ops.fused_recurrent_simple_gla, initial_state=h0,
                                         output_final_state=True)
            elif kind == "gla":
                ours = functools.partial(ops.chunk_gla, chunk_size=CHUNK)
            else:
                ours = functools.partial(ops.chunk_simple_gla, chunk_size=CHUNK)
        except Exception as exc:
            prep.unavailable["spikeops"] = f"spikeops.ops.scan: {type(exc).__name__}: {exc}"
            ours = None
        if decode:
            theirs = functools.partial(ref.fused_recurrent_simple_gla_ref, initial_state=h0,
                                       output_final_state=True)
        elif kind == "gla":
            theirs = functools.partial(ref.chunk_gla_ref, chunk_size=CHUNK)
        else:
            theirs = functools.partial(ref.chunk_simple_gla_ref, chunk_size=CHUNK)

        if train:
            leaves = [x.clone().requires_grad_() for x in (q, k, v, g)]

            def step(fn):
                for x in leaves:
                    x.grad = None
                o, _ = fn(leaves[0], leaves[1], leaves[2], g=leaves[3])
                o.backward(do)
            wrap = lambda fn: functools.partial(step, fn)  # noqa: E731
        else:
            def call(fn):
                with torch.no_grad():
                    return fn(q, k, v, g=g)
            wrap = lambda fn: functools.partial(call, fn)  # noqa: E731
        if ours is not None:
            prep.fns["spikeops"] = wrap(ours)
        prep.fns["reference"] = wrap(theirs)
        if compile_reference:
            prep.fns["reference_compiled"] = wrap(_compiled(theirs))
        else:
            prep.unavailable["reference_compiled"] = (
                "compile off (--no-compile, or --quick without --compile)")
        if gpu_peer and device.type == "cuda":
            peer, why = _fla_peer(kind)
            if peer is not None:
                prep.fns["peer"] = wrap(peer)
            else:
                prep.unavailable["peer"] = why
        else:
            prep.unavailable["peer"] = "fla's scans are Triton kernels (GPU only)"
        return prep
    return build


register(OpEntry(
    name="chunk_simple_gla_fwd_bwd_fp32", family="scan", shape=(2, 4096, 8, 64, 64),
    quick_shape=(1, 256, 2, 64, 64), dtype=torch.float32,
    build=_builder("simple", train=True), devices=("cpu",), flops=_flops(True),
    description="simple GLA (g [B, T, H]), chunk 64, forward + backward"))
register(OpEntry(
    name="chunk_simple_gla_fwd_fp32", family="scan", shape=(2, 4096, 8, 64, 64),
    quick_shape=(1, 256, 2, 64, 64), dtype=torch.float32,
    build=_builder("simple", train=False), devices=("cpu",), flops=_flops(False),
    description="simple GLA (g [B, T, H]), chunk 64, forward"))
register(OpEntry(
    name="chunk_simple_gla_fwd_bwd_bf16", family="scan", shape=(2, 4096, 8, 64, 64),
    quick_shape=(1, 256, 2, 64, 64), dtype=torch.bfloat16,
    build=_builder("simple", train=True), devices=("cpu",), flops=_flops(True),
    description="simple GLA, bf16 q/k/v (fp32 state), chunk 64, forward + backward"))
register(OpEntry(
    name="chunk_gla_fwd_bwd_fp32", family="scan", shape=(1, 1024, 4, 64, 64),
    quick_shape=(1, 128, 2, 32, 32), dtype=torch.float32,
    build=_builder("gla", train=True), devices=("cpu",), flops=_flops(True),
    description="GLA (per-key g [B, T, H, K]), chunk 64, forward + backward"))
register(OpEntry(
    name="fused_recurrent_simple_gla_decode_fp32", family="scan", shape=(16, 1, 8, 128, 128),
    quick_shape=(4, 1, 4, 64, 64), dtype=torch.float32,
    build=_builder("simple", train=False, decode=True), devices=("cpu",),
    bytes=_decode_bytes,
    description="one decoding step with a carried state (fused_recurrent_simple_gla)"))

# GPU rows (csrc/cuda/scan): the shape, bf16, forward + backward; peer = fla's
# chunk_simple_gla / chunk_gla when `import fla` works.
_GPU_SHAPE, _GPU_QUICK = (4, 4096, 16, 128, 128), (1, 512, 4, 128, 128)
register(OpEntry(
    name="chunk_simple_gla_fwd_bwd_bf16_gpu", family="scan", shape=_GPU_SHAPE,
    quick_shape=_GPU_QUICK, dtype=torch.bfloat16,
    build=_builder("simple", train=True, gpu_peer=True), devices=("cuda",),
    flops=_flops(True),
    description="simple GLA on the GPU, bf16 q/k/v (fp32 state), chunk 64, forward + backward"))
register(OpEntry(
    name="chunk_gla_fwd_bwd_bf16_gpu", family="scan", shape=_GPU_SHAPE,
    quick_shape=_GPU_QUICK, dtype=torch.bfloat16,
    build=_builder("gla", train=True, gpu_peer=True), devices=("cuda",), flops=_flops(True),
    description="GLA (per-key g) on the GPU, bf16 q/k/v (fp32 state), chunk 64, forward + "
                "backward"))
register(OpEntry(
    name="chunk_simple_gla_fwd_bf16_gpu", family="scan", shape=_GPU_SHAPE,
    quick_shape=_GPU_QUICK, dtype=torch.bfloat16,
    build=_builder("simple", train=False, gpu_peer=True), devices=("cuda",),
    flops=_flops(False),
    description="simple GLA on the GPU, bf16, chunk 64, forward"))
