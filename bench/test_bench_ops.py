"""The benchmark registry under pytest-benchmark: every entry of every family, every
variant (spikeops, reference, compiled reference, the peer), plus the roofline
references in group 'roofline' so a saved run (--benchmark-save) carries its own ceiling.

Measurements only: nothing here asserts on time (convention 9). See conftest.py for the
environment variables that select device, full shapes and torch.compile.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytest_benchmark")
bench = pytest.importorskip("spikeops.bench")

ENTRIES = bench.entries()


@pytest.mark.parametrize("variant", bench.VARIANTS)
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_entry(benchmark, entry, variant, bench_device, bench_quick, bench_compile, synced):
    if bench_device.type not in entry.devices:
        pytest.skip(f"{entry.name} is registered for {', '.join(entry.devices)} only")
    if variant == "reference_compiled" and not bench_compile:
        pytest.skip("torch.compile variant: set SPIKEOPS_BENCH_COMPILE=1")
    prep = entry.setup(bench_device, quick=bench_quick,
                       compile_reference=variant == "reference_compiled")
    fn = prep.fns.get(variant)
    if fn is None:
        pytest.skip(f"{variant}: {prep.unavailable.get(variant, 'not provided')}")
    call = synced(fn)
    call()  # first call outside the rounds: compilation, lazy init, page faults
    for hook in prep.after:
        hook()

    shape = entry.shape_for(bench_quick)
    benchmark.group = entry.name
    benchmark.extra_info.update(
        variant=variant, shape=list(shape), dtype=str(entry.dtype),
        device=str(bench_device), bytes=entry.bytes(shape, entry.dtype) if entry.bytes else None,
        notes=dict(prep.notes), torch_threads=torch.get_num_threads())
    benchmark(call)


_COPY_MIB = 64


@pytest.mark.parametrize("kind", ["copy", "clone", "sgemm"])
def test_roofline(benchmark, kind, bench_device, bench_quick, synced):
    """Ceilings for the rows above: bytes moved per second, FLOPs per second."""
    benchmark.group = "roofline"
    if kind == "sgemm":
        n = 1024 if bench_quick else 2048
        a, b = torch.rand(n, n, device=bench_device), torch.rand(n, n, device=bench_device)
        c = torch.empty(n, n, device=bench_device)
        benchmark.extra_info.update(flops=2 * n**3)
        benchmark(synced(lambda: torch.mm(a, b, out=c)))
        return
    x = torch.rand(_COPY_MIB * 2**20 // 4, device=bench_device)
    y = torch.empty_like(x)
    y.copy_(x)  # fault in y's pages before timing
    benchmark.extra_info.update(bytes=2 * x.numel() * x.element_size())
    benchmark(synced((lambda: y.copy_(x)) if kind == "copy" else (lambda: x.clone())))
