"""pytest-benchmark suites over the spikeops.bench registry.

    pytest bench/ --benchmark-only                      # quick shapes, CPU
    SPIKEOPS_BENCH_FULL=1 pytest bench/ --benchmark-only  # the registry's full shapes
    SPIKEOPS_BENCH_DEVICE=cuda ...                      # on the GPU
    SPIKEOPS_BENCH_COMPILE=1 ...                        # also the torch.compile'd reference

Quick shapes by default, so running this directory by accident costs seconds, not
minutes. ``pytest`` alone only collects tests/ (pyproject testpaths), never this folder.
Options are environment variables rather than pytest options because pytest_addoption in
a non-root conftest is ignored whenever this folder is not on the command line.
"""
from __future__ import annotations

import os
from typing import Callable

import pytest
import torch


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@pytest.fixture(scope="session")
def bench_device() -> torch.device:
    name = os.environ.get("SPIKEOPS_BENCH_DEVICE", "cpu")
    if name not in ("cpu", "cuda"):
        pytest.fail(f"SPIKEOPS_BENCH_DEVICE: expected cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("SPIKEOPS_BENCH_DEVICE=cuda but no CUDA GPU is available")
    return torch.device(name)


@pytest.fixture(scope="session")
def bench_quick() -> bool:
    return not _flag("SPIKEOPS_BENCH_FULL")


@pytest.fixture(scope="session")
def bench_compile() -> bool:
    return _flag("SPIKEOPS_BENCH_COMPILE")


@pytest.fixture(scope="session")
def synced(bench_device: torch.device) -> Callable[[Callable[[], object]], Callable[[], None]]:
    """Wrap a call so each timed round includes the GPU work it queued."""
    def wrap(fn: Callable[[], object]) -> Callable[[], None]:
        if bench_device.type != "cuda":
            return fn  # type: ignore[return-value]

        def call() -> None:
            fn()
            torch.cuda.synchronize(bench_device)
        return call
    return wrap
