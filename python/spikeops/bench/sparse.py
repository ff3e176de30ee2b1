"""Benchmark entries of spike sparse convolution (SubMConv3d), forward + backward.

Shape ``(N, G, Cin, Cout, F, bwd)``: about N active voxels in a ``G^3`` grid, clustered like a
LiDAR scan (a wavy ground surface over the whole grid plus a few spherical shells, one voxel
per surface cell), Cin -> Cout channels, k = 3, and features either float (``F = 100``) or
binary spikes firing ``F`` percent. The kernel map (and its transpose) is built once (as
with ``indice_key``) and excluded; with ``bwd = 1`` each timed call runs the conv forward and backward (grads
of features, weight, bias) against a fixed upstream gradient, with ``bwd = 0`` the forward
only (inference, no autograd).

Variants: spikeops (``ops.sparse_conv``, spike path chosen automatically); the reference:
the gather -> mm -> index_add per kernel offset of ``spikeops.ref.sparse_conv.sparse_conv``
on the same precomputed pairs (PyTorch autograd for the backward); the reference compiled.
Peer: on the CPU spconv 2.3.8's ``SubMConv3d`` when it is importable (not a dependency:
``pip install --no-deps spconv==2.3.8 "cumm>=0.7.11,<0.8" pccm ccimport fire lark
portalocker``), timed with one thread because its multithreaded CPU path gives wrong,
varying results; on CUDA the dense ``torch.nn.functional.conv3d`` (cuDNN, channels-last) over the whole
``G^3`` grid with the voxels scattered into it (what a dense network would run; the lent GPU
machines are offline and spconv 2.3.8's CUDA wheels, ~70 MB each before cumm, exceed the
64 MiB that can be carried to them). The ``*_gpu`` entries run the CUDA kernels, which refuse CUDA
tensors until validated: run them with ``SPIKEOPS_UNVALIDATED_CUDA=1``.
``subm3d_k3_map_gpu`` times the kernel-map build itself (hash table on the device; the
reference's sort + searchsorted map on the same device; no peer).

FLOPs: the effective ones, ``3 * 2 * pairs * Cin * Cout`` (forward, input gradient, weight
gradient over the existing pairs only; ``2 * pairs * Cin * Cout`` forward only), whatever the firing rate: for spikes the sgemm
fraction says how the zero-skipping path compares to dense arithmetic on the same pairs.
"""
from __future__ import annotations

import functools
import math

import torch

from .registry import OpEntry, Prepared, Shape, register


@functools.lru_cache(maxsize=4)
def scene(n: int, grid: int, seed: int = 0) -> torch.Tensor:
    """int32 ``[~n, 4]`` voxel sites (batch 0): a wavy ground surface plus spherical shells."""
    g = torch.Generator().manual_seed(seed)
    keys = []
    # ground: z = a smooth random height field over the whole x-y grid (one voxel per cell)
    xs, ys = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    ph = torch.rand(4, generator=g) * 6.28
    z = (grid * 0.2 + 6 * torch.sin(xs / 17.0 + ph[0]) + 5 * torch.cos(ys / 23.0 + ph[1])
         + 3 * torch.sin((xs + ys) / 11.0 + ph[2])).round().long().clamp(0, grid - 1)
    keys.append((xs * grid + ys) * grid + z)
    count = xs.numel()
    # spherical shells (objects) until about n voxels
    while count < n:
        c = torch.rand(3, generator=g) * grid * 0.6 + grid * 0.2
        r = float(torch.rand((), generator=g) * grid * 0.08 + grid * 0.04)
        m = int(4 * math.pi * r * r * 1.5)
        v = torch.randn(m, 3, generator=g)
        p = (c + r * v / v.norm(dim=1, keepdim=True)).round().long().clamp(0, grid - 1)
        keys.append((p[:, 0] * grid + p[:, 1]) * grid + p[:, 2])
        count += int(4 * math.pi * r * r)
    k = torch.unique(torch.cat(keys))
    k = k[torch.randperm(k.numel(), generator=g)[:n]].sort().values
    idx = torch.stack([torch.zeros_like(k), k // (grid * grid), (k // grid) % grid, k % grid], 1)
    return idx.to(torch.int32)


@functools.lru_cache(maxsize=4)
def _map(n: int, grid: int):
    from spikeops.ops import sparse as sc
    idx = scene(n, grid)
    _, _, nbmap = sc.conv_map(idx, (grid,) * 3, 1, 3, 1, 0, 1, True)
    return idx, nbmap


def _flops(shape: Shape, dtype: torch.dtype) -> int:
    n, grid, cin, cout, _, bwd = shape
    _, nbmap = _map(n, grid)
    pairs = int((nbmap >= 0).sum())
    return (3 if bwd else 1) * 2 * pairs * cin * cout


def _ref_conv(x, pairs, w3, b):
    out = x.new_zeros(pairs[0][1].shape[0] if False else x.shape[0], w3.shape[0])
    for k, (pin, pout) in enumerate(pairs):
        if pin.numel():
            out = out.index_add(0, pout, x.index_select(0, pin) @ w3[:, k, :].t())
    return out + b


def _build(shape: Shape, dtype: torch.dtype, device: torch.device,
           compile_reference: bool) -> Prepared:
    from spikeops.ops import sparse as sc

    n, grid, cin, cout, fire, bwd = shape
    prep = Prepared()
    idx, nbmap = _map(n, grid)
    gen = torch.Generator().manual_seed(1)
    if fire >= 100:
        x0 = torch.randn(idx.shape[0], cin, generator=gen)
    else:
        x0 = (torch.rand(idx.shape[0], cin, generator=gen) < fire / 100).float()
    x0 = x0.to(device=device, dtype=dtype)
    w0 = (torch.randn(cout, 3, 3, 3, cin, generator=gen) / math.sqrt(27 * cin)).to(
        device=device, dtype=dtype)
    b0 = torch.zeros(cout, dtype=dtype, device=device)
    grad = torch.randn(idx.shape[0], cout, generator=gen).to(device=device, dtype=dtype)
    idx, nbmap = idx.to(device), nbmap.to(device)
    x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
    nbmap_t = nbmap.flip(1).contiguous()  # what SubMConv3d caches per indice_key

    def ours():
        if not bwd:
            with torch.no_grad():
                return sc.sparse_conv(x0, nbmap, w0, b0)
        y = sc.sparse_conv(x, nbmap, w, b, None, nbmap_t)
        return torch.autograd.grad(y, (x, w, b), grad)

    prep.fns["spikeops"] = ours
    pairs = []
    for pr in sc.nbmap_to_pairs(nbmap):
        pairs.append((pr[:, 0].contiguous(), pr[:, 1].contiguous()))
    w3 = w.reshape(cout, 27, cin)

    def reference(fn=_ref_conv):
        if not bwd:
            with torch.no_grad():
                return fn(x0, pairs, w0.reshape(cout, 27, cin), b0)
        y = fn(x, pairs, w.reshape(cout, 27, cin), b)
        return torch.autograd.grad(y, (x, w, b), grad)

    prep.fns["reference"] = reference
    if compile_reference:
        torch._dynamo.reset()
        compiled = torch.compile(_ref_conv, dynamic=False)
        prep.fns["reference_compiled"] = functools.partial(reference, compiled)
    else:
        prep.unavailable["reference_compiled"] = (
            "compile off (--no-compile, or --quick without --compile)")
    if device.type == "cuda":
        _dense_peer(prep, idx, x0, w0, b0, grad, grid, bool(bwd))
    else:
        _spconv_peer(prep, idx, nbmap, x0, w0, b0, grad, grid, bool(bwd), ours)
    del w3
    nz = float((x0 != 0).float().mean())
    prep.notes["spikeops"] = (f"{idx.shape[0]} voxels, {int((nbmap >= 0).sum())} pairs "
                              f"({float((nbmap >= 0).sum()) / idx.shape[0]:.1f}/voxel), "
                              f"{100 * nz:.0f}% non-zero features")
    return prep


def _spconv_peer(prep: Prepared, idx, nbmap, x0, w0, b0, grad, grid: int, bwd: bool,
                 ours) -> None:
    """spconv's CPU ``SubMConv3d`` (its only CPU algorithm, ``ConvAlgo.Native``) on the
    same sites and weights, indice pairs built once outside the timing (as ``indice_key``
    would). Timed with one thread: with more, spconv 2.3.8's CPU scatter races and its
    results change from call to call (spconv issue #679); the note says how far its
    forward is from ours at 1 and at 2 threads, and, with the backward, how far its
    gradients are from ``ours()``'s."""
    try:
        import spconv.pytorch as spconv
        from spconv import __version__ as spconv_version
        from spconv.core import ConvAlgo
    except Exception as exc:  # not a dependency: pip install --no-deps spconv cumm pccm ...
        prep.unavailable["peer"] = f"spconv not importable ({type(exc).__name__}: {exc})"
        return
    if not torch.cuda.is_available():
        # spconv 2.3.8's backward asks torch for the current CUDA stream even for CPU
        # tensors (an error without CUDA); its CPU kernels ignore the stream.
        import spconv.pytorch.ops as spconv_ops
        spconv_ops.get_current_stream = lambda: 0
    cin, cout = x0.shape[1], w0.shape[0]
    conv = spconv.SubMConv3d(cin, cout, 3, padding=1, bias=True, indice_key="bench",
                             algo=ConvAlgo.Native).to(x0.dtype)
    with torch.no_grad():
        conv.weight.copy_(w0)
        conv.bias.copy_(b0)
    base = spconv.SparseConvTensor(x0, idx, [grid] * 3, 1)
    from spikeops.ops import sparse as sc
    with torch.no_grad():
        want = sc.sparse_conv(x0, nbmap, w0, b0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            first = conv(base)  # builds the indice pairs
        base.indice_dict = first.indice_dict
        xr = x0.detach().clone().requires_grad_()
        with_grad = spconv.SparseConvTensor(xr, idx, [grid] * 3, 1)
        with_grad.indice_dict = first.indice_dict
        with torch.no_grad():
            err1 = float((conv(base).features - want).abs().max())
            torch.set_num_threads(max(2, threads))
            err2 = max(float((conv(base).features - want).abs().max()) for _ in range(3))
    finally:
        torch.set_num_threads(threads)

    def peer():
        torch.set_num_threads(1)
        try:
            if not bwd:
                with torch.no_grad():
                    return conv(base).features
            y = conv(with_grad).features
            return torch.autograd.grad(y, (xr, conv.weight, conv.bias), grad)
        finally:
            torch.set_num_threads(threads)

    prep.fns["peer"] = peer
    grads = ""
    if bwd:  # the gradients of both, once, at one thread for spconv
        gs = [float((a - b).abs().max()) for a, b in zip(peer(), ours())]
        grads = ", gradients (x, w, b) " + " ".join(f"{e:.1e}" for e in gs)
    prep.notes["peer"] = (f"spconv {spconv_version} CPU SubMConv3d (Native), 1 thread; max "
                          f"|diff| vs spikeops: forward {err1:.1e}{grads}; forward at "
                          f"{max(2, threads)} threads {err2:.1e} (its multithreaded CPU "
                          f"path races)")


def _dense_peer(prep: Prepared, idx, x0, w0, b0, grad, grid: int, bwd: bool) -> None:
    """Dense conv3d (cuDNN) over the whole grid: the voxels' features scattered into a
    channels-last ``[1, Cin, G, G, G]`` volume, weight ``[Cout, Cin, 3, 3, 3]``, padding 1;
    the upstream gradient scattered likewise into ``[1, Cout, G, G, G]``."""
    import torch.nn.functional as F

    cin, cout = x0.shape[1], w0.shape[0]
    sites = tuple(idx.long().unbind(1))
    xd = x0.new_zeros(1, grid, grid, grid, cin)
    xd[sites] = x0
    xd = xd.permute(0, 4, 1, 2, 3)  # channels-last 3-D view: [1, Cin, G, G, G]
    wd = w0.permute(0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d)
    gd = grad.new_zeros(1, grid, grid, grid, cout)
    gd[sites] = grad
    gd = gd.permute(0, 4, 1, 2, 3)
    # (the permuted views are channels-last already; clone keeps that layout)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (xd, wd, b0))

    def peer():
        if not bwd:
            with torch.no_grad():
                return F.conv3d(xd, wd, b0, padding=1)
        y = F.conv3d(xr, wr, br, padding=1)
        return torch.autograd.grad(y, (xr, wr, br), gd)

    prep.fns["peer"] = peer
    prep.notes["peer"] = (f"dense F.conv3d (cuDNN {torch.backends.cudnn.version()}, "
                          f"channels-last) over the {grid}^3 grid, {grid ** 3} sites; "
                          f"tf32 allowed: {torch.backends.cudnn.allow_tf32}")


def _build_map(shape: Shape, dtype: torch.dtype, device: torch.device,
               compile_reference: bool) -> Prepared:
    from spikeops.ops import sparse as sc
    from spikeops.ref import sparse_conv as ref

    n, grid = shape[0], shape[1]
    idx = scene(n, grid).to(device)
    prep = Prepared()
    prep.fns["spikeops"] = lambda: sc.conv_map(idx, (grid,) * 3, 1, 3, 1, 0, 1, True)
    prep.fns["reference"] = lambda: ref.kernel_map(idx, (grid,) * 3, 1, 3, 1, 0, 1, True)
    prep.unavailable["reference_compiled"] = "not compiled (data-dependent shapes)"
    prep.unavailable["peer"] = ("spconv's CUDA wheels (~70 MB) cannot be carried to the "
                                "offline GPU machines")
    prep.notes["spikeops"] = f"{idx.shape[0]} voxels, submanifold k=3 map"
    return prep


register(OpEntry(
    name="subm3d_k3_fp32", family="sparse", shape=(100000, 256, 64, 64, 100, 1),
    quick_shape=(20000, 128, 32, 32, 100, 1), dtype=torch.float32, build=_build,
    devices=("cpu",), flops=_flops,
    description="SubMConv3d k=3 64->64, 100k clustered voxels in 256^3, fwd+bwd"))

register(OpEntry(
    name="subm3d_k3_spikes10_fp32", family="sparse", shape=(100000, 256, 64, 64, 10, 1),
    quick_shape=(20000, 128, 32, 32, 10, 1), dtype=torch.float32, build=_build,
    devices=("cpu",), flops=_flops,
    description="SubMConv3d k=3 64->64 on 10%-firing binary spikes, fwd+bwd"))

register(OpEntry(
    name="subm3d_k3_fwd_fp32", family="sparse", shape=(100000, 256, 64, 64, 100, 0),
    quick_shape=(20000, 128, 32, 32, 100, 0), dtype=torch.float32, build=_build,
    devices=("cpu",), flops=_flops,
    description="SubMConv3d k=3 64->64, 100k clustered voxels in 256^3, forward (inference)"))

register(OpEntry(
    name="subm3d_k3_fwd_spikes10_fp32", family="sparse", shape=(100000, 256, 64, 64, 10, 0),
    quick_shape=(20000, 128, 32, 32, 10, 0), dtype=torch.float32, build=_build,
    devices=("cpu",), flops=_flops,
    description="SubMConv3d k=3 64->64 on 10%-firing binary spikes, forward (inference)"))

# GPU: the same layer against the dense cuDNN conv3d on the same grid.
register(OpEntry(
    name="subm3d_k3_fp32_gpu", family="sparse", shape=(100000, 256, 64, 64, 100, 1),
    quick_shape=(20000, 128, 32, 32, 100, 1), dtype=torch.float32, build=_build,
    devices=("cuda",), flops=_flops,
    description="SubMConv3d k=3 64->64, 100k clustered voxels in 256^3, fwd+bwd (GPU)"))

register(OpEntry(
    name="subm3d_k3_fp16_gpu", family="sparse", shape=(100000, 256, 64, 64, 100, 1),
    quick_shape=(20000, 128, 32, 32, 100, 1), dtype=torch.float16, build=_build,
    devices=("cuda",), flops=_flops,
    description="SubMConv3d k=3 64->64, 100k clustered voxels in 256^3, fp16 fwd+bwd (GPU)"))

register(OpEntry(
    name="subm3d_k3_fwd_fp16_gpu", family="sparse", shape=(100000, 256, 64, 64, 100, 0),
    quick_shape=(20000, 128, 32, 32, 100, 0), dtype=torch.float16, build=_build,
    devices=("cuda",), flops=_flops,
    description="SubMConv3d k=3 64->64, 100k clustered voxels in 256^3, fp16 forward (GPU)"))

register(OpEntry(
    name="subm3d_k3_map_gpu", family="sparse", shape=(100000, 256),
    quick_shape=(20000, 128), dtype=torch.int32, build=_build_map,
    devices=("cuda",),
    description="submanifold k=3 kernel map of 100k clustered voxels in 256^3 (GPU)"))
