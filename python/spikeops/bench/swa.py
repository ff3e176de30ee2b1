"""Benchmark entries of sliding-window causal softmax attention (SpikingBrain's SWA layers).

Shape ``(B, T, H, D, window)``: q, k, v ``[B, T, H, D]`` standard normal, query t attends
to keys ``t - window < j <= t``. Variants: spikeops.ops.sliding_window_attn (flash-style
tiles, no T x T matrix); the reference (``sliding_window_attn_ref``: einsum scores, masked
softmax over the full T x T matrix); the reference compiled; and the peer, PyTorch's
``scaled_dot_product_attention`` with the window as a boolean mask (whichever SDPA backend
torch picks for a masked call). ``*_fwd_bwd`` entries time forward + backward with a fixed
upstream gradient.

FLOPs are those the window requires: 4 * D * pairs for the forward (q k^T and p v over the
``pairs = sum_t min(t + 1, window)`` allowed (query, key) pairs, per batch and head) and
2.5x that for the backward (recomputed scores, dO v^T, dv, dk, dq), so the sgemm fraction
says how close a variant is to dense matrix-multiply speed on the useful work; the
references and SDPA do the full T x T work, up to T / window times more.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from .registry import OpEntry, Prepared, Shape, register


def _pairs(T: int, w: int) -> int:
    w = min(w, T)
    return w * (w + 1) // 2 + (T - w) * w


def _flops(backward: bool) -> Callable[[Shape, torch.dtype], int]:
    def flops(shape: Shape, dtype: torch.dtype) -> int:
        B, T, H, D, w = shape
        fwd = 4 * D * B * H * _pairs(T, w)
        return int(fwd * (3.5 if backward else 1.0))
    return flops


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _sdpa_window(q, k, v, mask):
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return o.transpose(1, 2)


def _builder(backward: bool):
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        from spikeops.ref.attention import sliding_window_attn_ref

        B, T, H, D, w = shape
        gen = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(B, T, H, D, generator=gen).to(device=device, dtype=dtype)
                   for _ in range(3))
        grad = torch.randn(B, T, H, D, generator=gen).to(device=device, dtype=dtype)
        if backward:
            for t in (q, k, v):
                t.requires_grad_(True)

        def thunk(fn: Callable[..., Any]) -> Callable[[], None]:
            def fwd_bwd() -> None:
                for t in (q, k, v):  # replace, never accumulate
                    t.grad = None
                torch.autograd.backward(fn(q, k, v), grad)

            def fwd() -> None:
                with torch.no_grad():
                    fn(q, k, v)

            return fwd_bwd if backward else fwd

        prep = Prepared()
        try:
            from spikeops import ops
            prep.fns["spikeops"] = thunk(functools.partial(ops.sliding_window_attn, window=w))
        except Exception as exc:
            prep.unavailable["spikeops"] = (f"spikeops.ops.sliding_window_attn: "
                                            f"{type(exc).__name__}: {exc}")
        ref = functools.partial(sliding_window_attn_ref, window=w)
        prep.fns["reference"] = thunk(ref)
        if compile_reference:
            prep.fns["reference_compiled"] = thunk(_compiled(ref))
        else:
            prep.unavailable["reference_compiled"] = (
                "compile off (--no-compile, or --quick without --compile)")
        t = torch.arange(T, device=device)
        off = t.view(-1, 1) - t.view(1, -1)
        mask = (off >= 0) & (off < w)
        prep.fns["peer"] = thunk(functools.partial(_sdpa_window, mask=mask))
        prep.notes["peer"] = "torch scaled_dot_product_attention with a [T, T] boolean window mask"
        return prep
    return build


def _entry(name: str, shape: Shape, quick: Shape, dtype: torch.dtype, backward: bool,
           devices: tuple[str, ...]) -> None:
    register(OpEntry(
        name=name, family="swa", shape=shape, quick_shape=quick, dtype=dtype,
        build=_builder(backward), devices=devices, flops=_flops(backward),
        description=("sliding-window causal softmax attention, "
                     + ("forward + backward" if backward else "forward"))))


_CPU = (2, 4096, 8, 64, 512)
_CPU_QUICK = (1, 1024, 4, 64, 256)
_GPU = (2, 8192, 16, 128, 1024)
_GPU_QUICK = (2, 2048, 8, 64, 512)
_entry("swa_fwd_fp32", _CPU, _CPU_QUICK, torch.float32, False, ("cpu",))
_entry("swa_fwd_bwd_fp32", _CPU, _CPU_QUICK, torch.float32, True, ("cpu",))
_entry("swa_fwd_bf16_gpu", _GPU, _GPU_QUICK, torch.bfloat16, False, ("cuda",))
_entry("swa_fwd_bwd_bf16_gpu", _GPU, _GPU_QUICK, torch.bfloat16, True, ("cuda",))
_entry("swa_fwd_fp32_gpu", _GPU, _GPU_QUICK, torch.float32, False, ("cuda",))
