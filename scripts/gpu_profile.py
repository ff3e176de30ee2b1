"""Kernel-level GPU times (torch.profiler) of a few spikeops ops, with achieved bandwidth.

Run on a GPU machine after building with CUDA: ``python scripts/gpu_profile.py``. Prints, per
case, each CUDA kernel's mean time and the case's bytes over the summed kernel time, so
launch and Python overhead (which the benchmark harness includes) are separated out.
"""
from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

import spikeops
from spikeops import ops


def kernel_times(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" and e.count > 0:
            t = getattr(e, "device_time_total", None) or e.cuda_time_total
            rows.append((e.key[:70], e.count // reps, t / reps))
    return sorted(rows, key=lambda r: -r[2])


def report(name, fn, nbytes=None):
    rows = kernel_times(fn)
    total = sum(r[2] for r in rows)
    bw = f"  {nbytes / (total * 1e-6) / 1e12:.2f} TB/s" if nbytes else ""
    print(f"== {name}: kernels {total:.1f} us per call{bw}")
    for k, c, t in rows[:6]:
        print(f"   {t:8.1f} us  x{c}  {k}")


def main():
    dev = "cuda"
    print(torch.cuda.get_device_name(), spikeops.info().get("cuda_archs"))
    for dtype, shape in ((torch.float16, (16, 64, 65536)), (torch.float32, (8, 1 << 22))):
        x = (torch.randn(shape, device=dev) + 0.5).to(dtype).requires_grad_()
        g = torch.randn(shape, device=dev).to(dtype)
        n = x.numel() * x.element_size()

        def fwd():
            with torch.no_grad():
                ops.lif(x, tau=2.0)

        def fwd_bwd():
            x.grad = None
            s, _ = ops.lif(x, tau=2.0)
            s.backward(g)
        report(f"lif fwd {dtype} {shape}", fwd, 2 * n)
        report(f"lif fwd+bwd {dtype} {shape}", fwd_bwd, 5 * n)
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = ((torch.rand(4, 8, 8, 196, 64, device=dev) < 0.25).to(dtype) for _ in range(3))
        report(f"ssa {dtype}", lambda: ops.ssa(q, k, v, 0.125))
        report(f"ssa_lif {dtype}", lambda: ops.ssa_lif(q, k, v, 0.125))
        report(f"cuBLAS matmuls {dtype}", lambda: (q @ (k.transpose(-2, -1) @ v)) * 0.125)
    w = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    w_nm = spikeops.nm.compress(w, 2, 4)
    xx = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    report("nm_linear 2:4 bf16 8192^3", lambda: ops.nm_linear(xx, w_nm))
    report("dense bf16 8192^3", lambda: xx @ w.t())


if __name__ == "__main__":
    main()
