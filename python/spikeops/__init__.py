"""spikeops: fused CPU (AVX) and CUDA kernels for spiking and sparse neural networks.

    import spikeops
    spikes, v = spikeops.ops.lif(x)           # x: [T, *]
    spikeops.nn.LIF(tau=2.0)                   # SpikingJelly-style module
    spikeops.info()                            # what was built, what runs
    with spikeops.use_reference(): ...         # same model on the pure-PyTorch references
    spikeops.energy.estimate(model, x)         # STEP-style energy estimate
"""
from __future__ import annotations

from . import _extension
from ._extension import reference_enabled, set_reference, use_reference  # noqa: E402
from . import ops, ref, nn, nm  # noqa: E402
from . import energy  # noqa: E402

__version__ = "0.1.0"


def info() -> dict:
    """Build and runtime facts: version, torch, CPU ISAs compiled / in use, CUDA archs."""
    import torch

    facts = {
        "version": __version__,
        "extension_loaded": _extension.AVAILABLE,
        "reference_forced": _extension.reference_enabled(),
        "torch_runtime": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }
    if _extension.AVAILABLE:
        facts.update(_extension._C.build_info())
        pool = _extension._C.cpu_pool_stats()
        facts["cpu_output_pool_mb"] = pool["limit_bytes"] >> 20
    else:
        facts["load_error"] = _extension.LOAD_ERROR
    return facts


def set_cpu_isa(isa: str) -> None:
    """Force the CPU kernel variant ('scalar', 'avx2' or 'avx512') for this process."""
    if not _extension.AVAILABLE:
        raise RuntimeError("set_cpu_isa: the native extension is not loaded")
    _extension._C.set_cpu_isa(isa)


def empty_cpu_cache() -> None:
    """Free the cached (unused) large CPU output buffers (see SPIKEOPS_CPU_POOL_MB)."""
    if _extension.AVAILABLE:
        _extension._C.cpu_pool_release()


def cpu_isa() -> str | None:
    """The CPU kernel variant in use (None without the extension)."""
    return _extension._C.cpu_isa() if _extension.AVAILABLE else None


__all__ = ["ops", "ref", "nn", "nm", "energy", "use_reference", "set_reference",
           "reference_enabled", "info", "set_cpu_isa", "cpu_isa", "empty_cpu_cache",
           "__version__"]
