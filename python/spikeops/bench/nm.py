"""Benchmark entries of the N:M structured-sparse GEMM.

Shape ``(batch, out_features, in_features)``: ``y = x @ W^T`` with ``x [batch, K]`` and an
N:M weight ``W [out, K]``. Variants: spikeops.ops.nm_linear; the reference (decompress,
then a dense matmul); the reference compiled; and the peer, the dense PyTorch matmul on the
dense-equivalent weight into a preallocated output (MKL on the CPU, cuBLAS on the GPU), or,
for the 2:4 fp16/bf16 GPU rows, PyTorch's semi-structured (cuSPARSELt / CUTLASS) matmul.

FLOPs count only the kept weights (2 * batch * out * K * n / m): the sgemm fraction is the
sparse kernel's rate against the measured dense sgemm rate. GEMV rows (batch 1) count
bytes instead: the compressed weight (values + mask) and x, y.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from .registry import Builder, OpEntry, Prepared, Shape, register


def _flops(n: int, m: int) -> Callable[[Shape, torch.dtype], int]:
    def count(shape: Shape, dtype: torch.dtype) -> int:
        batch, rows, k = shape
        return 2 * batch * rows * k * n // m
    return count


def _bytes(n: int, m: int) -> Callable[[Shape, torch.dtype], int]:
    def count(shape: Shape, dtype: torch.dtype) -> int:
        batch, rows, k = shape
        size = torch.empty((), dtype=dtype).element_size()
        return rows * (k // m * n) * size + rows * ((k + 7) // 8) + batch * (k + rows) * size
    return count


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _semi_structured_peer(prep: Prepared, x: torch.Tensor, dense: torch.Tensor) -> None:
    try:
        from torch.sparse import to_sparse_semi_structured
        w_ss = to_sparse_semi_structured(dense)
        torch.nn.functional.linear(x, w_ss)  # fails here when the shape/GPU is unsupported
    except Exception as exc:
        prep.unavailable["peer"] = f"semi-structured: {type(exc).__name__}: {exc}"[:240]
        return
    prep.fns["peer"] = lambda: torch.nn.functional.linear(x, w_ss)
    prep.notes["peer"] = f"torch {torch.__version__} {type(w_ss).__name__}"
    # The dense cuBLAS figure is reported beside it as a note row of its own entry.


def _linear_builder(n: int, m: int, *, peer: str) -> Builder:
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        from spikeops import nm
        from spikeops.ref import nm as ref

        batch, rows, k = shape
        prep = Prepared()
        x = torch.randn(batch, k, device=device).to(dtype)
        w_nm = nm.compress(torch.randn(rows, k, device=device).to(dtype), n, m)
        dense = w_nm.to_dense()
        try:
            from spikeops import ops
            prep.fns["spikeops"] = functools.partial(ops.nm_linear, x, w_nm)
        except Exception as exc:
            prep.unavailable["spikeops"] = f"spikeops.ops.nm_linear: {type(exc).__name__}: {exc}"
        ref_fn = functools.partial(ref.nm_linear, n=n, m=m)
        prep.fns["reference"] = lambda: ref_fn(x, w_nm.values, w_nm.meta)
        if compile_reference:
            compiled = _compiled(ref_fn)
            prep.fns["reference_compiled"] = lambda: compiled(x, w_nm.values, w_nm.meta)
        else:
            prep.unavailable["reference_compiled"] = (
                "compile off (--no-compile, or --quick without --compile)")
        if peer == "semi_structured":
            _semi_structured_peer(prep, x, dense)
        else:
            out = torch.empty(batch, rows, device=device, dtype=dtype)
            wt = dense.t()
            prep.fns["peer"] = lambda: torch.matmul(x, wt, out=out)
            backend = "MKL" if device.type == "cpu" else "cuBLAS"
            prep.notes["peer"] = f"dense torch.matmul ({backend}) on the dense-equivalent weight"
        return prep
    return build


def _train_builder(n: int, m: int) -> Builder:
    """NMLinear (SR-STE) forward + backward against a dense nn.Linear of the same size."""
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        import spikeops
        from spikeops.ref import nm as ref

        batch, rows, k = shape
        prep = Prepared()
        x = torch.randn(batch, k, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(batch, rows, device=device, dtype=dtype)
        layer = spikeops.nn.NMLinear(k, rows, n=n, m=m, device=device, dtype=dtype)
        dense = torch.nn.Linear(k, rows, device=device, dtype=dtype)

        def step(module: Callable[[torch.Tensor], torch.Tensor], params) -> None:
            x.grad = None
            for p in params:
                p.grad = None
            torch.autograd.backward(module(x), grad)

        def reference(inp: torch.Tensor) -> torch.Tensor:
            meta = spikeops.ops.nm_compress(layer.weight.detach(), n, m)[1]
            return ref.nm_masked_linear(inp, layer.weight, meta, n, m, layer.bias,
                                        layer.decay, True)

        params = list(layer.parameters())
        prep.fns["spikeops"] = lambda: step(layer, params)
        prep.fns["reference"] = lambda: step(reference, params)
        prep.unavailable["reference_compiled"] = "not compiled (reference uses an autograd.Function)"
        dense_params = list(dense.parameters())
        prep.fns["peer"] = lambda: step(dense, dense_params)
        prep.notes["peer"] = "dense nn.Linear forward + backward"
        return prep
    return build


_F32, _BF16 = torch.float32, torch.bfloat16
_BIG = (2048, 4096, 4096)
_QUICK = (256, 512, 512)

for _n, _m in ((2, 4), (1, 4)):
    register(OpEntry(
        name=f"nm_linear_{_n}of{_m}_fp32", family="nm", shape=_BIG, quick_shape=_QUICK,
        dtype=_F32, build=_linear_builder(_n, _m, peer="dense"), devices=("cpu",),
        flops=_flops(_n, _m), description=f"{_n}:{_m} sparse x @ W^T, forward"))

register(OpEntry(
    name="nm_linear_2of4_gemv_fp32", family="nm", shape=(1, 4096, 4096),
    quick_shape=(1, 1024, 1024), dtype=_F32, build=_linear_builder(2, 4, peer="dense"),
    devices=("cpu",), bytes=_bytes(2, 4), description="2:4 GEMV (batch 1), forward"))
register(OpEntry(
    name="nm_linear_1of4_gemv_fp32", family="nm", shape=(1, 4096, 4096),
    quick_shape=(1, 1024, 1024), dtype=_F32, build=_linear_builder(1, 4, peer="dense"),
    devices=("cpu",), bytes=_bytes(1, 4), description="1:4 GEMV (batch 1), forward"))
register(OpEntry(
    name="nm_linear_2of4_bf16", family="nm", shape=(512, 4096, 4096), quick_shape=_QUICK,
    dtype=_BF16, build=_linear_builder(2, 4, peer="dense"), devices=("cpu",),
    flops=_flops(2, 4), description="2:4 sparse x @ W^T bf16, forward"))
register(OpEntry(
    name="nm_train_2of4_fp32", family="nm", shape=(2048, 4096, 4096), quick_shape=_QUICK,
    dtype=_F32, build=_train_builder(2, 4), devices=("cpu",),
    # sparse forward + sparse input gradient + the dense weight gradient (dy^T x)
    flops=lambda s, d: 2 * _flops(2, 4)(s, d) + 2 * s[0] * s[1] * s[2],
    description="NMLinear SR-STE fwd+bwd vs dense nn.Linear"))

# GPU: 2:4 bf16 against PyTorch's semi-structured matmul (cuSPARSELt/CUTLASS) and cuBLAS.
register(OpEntry(
    name="nm_linear_2of4_bf16_gpu", family="nm", shape=(8192, 8192, 8192),
    quick_shape=(1024, 1024, 1024), dtype=_BF16,
    build=_linear_builder(2, 4, peer="semi_structured"), devices=("cuda",),
    flops=_flops(2, 4), description="2:4 bf16 vs torch semi-structured"))
register(OpEntry(
    name="nm_linear_2of4_bf16_gpu_vs_dense", family="nm", shape=(8192, 8192, 8192),
    quick_shape=(1024, 1024, 1024), dtype=_BF16, build=_linear_builder(2, 4, peer="dense"),
    devices=("cuda",), flops=_flops(2, 4), description="2:4 bf16 vs cuBLAS dense"))
