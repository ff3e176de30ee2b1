"""spikeops.nn attention modules: shapes, fused vs unfused paths, training, compile, errors."""
from __future__ import annotations

import pytest
import torch

from spikeops import nn as snn

from conftest import skip_unless

native = skip_unless("extension")


def spikes(*shape, rate=0.3):
    return (torch.rand(shape) < rate).float()


@native
def test_ssa_module_fused_equals_unfused():
    torch.manual_seed(0)
    m = snn.SpikingSelfAttention(64, num_heads=4, scale=0.125)
    x = spikes(4, 2, 30, 64)
    y = m(x)
    assert y.shape == x.shape and ((y == 0) | (y == 1)).all()
    m.fused = False
    assert torch.equal(m(x), y)


@native
def test_ssa_module_trains():
    torch.manual_seed(0)
    m = snn.SpikingSelfAttention(32, num_heads=2)
    x = spikes(3, 2, 16, 32)
    y = m(x)
    y.float().mul(torch.randn_like(y)).sum().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@native
def test_ssa_module_compile():
    torch.manual_seed(0)
    m = snn.SpikingSelfAttention(32, num_heads=2).eval()
    x = spikes(2, 1, 12, 32)
    want = m(x)
    got = torch.compile(m, fullgraph=True)(x)
    assert torch.equal(got, want)


def test_module_bad_arguments():
    with pytest.raises(ValueError, match="num_heads: must divide dim"):
        snn.SpikingSelfAttention(30, num_heads=4)
    with pytest.raises(ValueError, match="x: expected spikes"):
        snn.SpikingSelfAttention(32, num_heads=2)(torch.zeros(2, 3, 32))
    with pytest.raises(ValueError, match="mode: expected"):
        snn.LinearAttention(32, 2, mode="parallel")
    with pytest.raises(ValueError, match="num_kv_heads: must divide"):
        snn.GatedLinearAttention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="window: expected an int >= 1"):
        snn.SlidingWindowAttention(32, 2, window=0)
