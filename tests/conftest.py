"""Shared test fixtures: capability skips, CPU ISA variants, NaN-poisoned outputs."""
from __future__ import annotations

import os

# Outputs allocated by the extension are filled with NaN before the kernel runs,
# so an element the kernel forgets to write fails the comparison (read once, at load).
os.environ.setdefault("SPIKEOPS_POISON_EMPTY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import spikeops  # noqa: E402
from spikeops import _extension  # noqa: E402


def capability(what: str) -> str | None:
    """Why a capability is missing (None when present): the one place tests skip from."""
    if what == "extension":
        return None if _extension.AVAILABLE else f"spikeops._C not loaded: {_extension.LOAD_ERROR}"
    if what == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA GPU on this machine"
        if not _extension.has_cuda_kernels():
            return "spikeops was built without CUDA kernels"
        return None
    raise ValueError(what)


def skip_unless(what: str):
    reason = capability(what)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def pytest_report_header(config):
    info = spikeops.info()
    return [f"spikeops: extension={info['extension_loaded']} "
            f"isa={info.get('cpu_isa_active')} supported={info.get('cpu_isa_supported')} "
            f"cuda_kernels={info.get('cuda')} threads={torch.get_num_threads()}"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords:
            reason = capability("cuda")
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def nan_poisoned_empty(monkeypatch):
    """torch.empty / empty_like from Python hand out NaN, so unwritten outputs show."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point() and not isinstance(t, torch._subclasses.FakeTensor):
            t.fill_(float("nan"))
        return t

    def empty_like(*args, **kwargs):
        t = real_empty_like(*args, **kwargs)
        if t.is_floating_point() and not isinstance(t, torch._subclasses.FakeTensor):
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)
    yield


def _isas():
    if not _extension.AVAILABLE:
        return ["none"]
    return spikeops.info()["cpu_isa_supported"]


@pytest.fixture(params=_isas())
def cpu_isa(request):
    """Runs the test once per CPU kernel variant this machine supports."""
    if request.param == "none":
        pytest.skip(capability("extension") or "")
    before = spikeops.cpu_isa()
    spikeops.set_cpu_isa(request.param)
    yield request.param
    spikeops.set_cpu_isa(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
