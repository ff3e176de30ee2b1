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


@native
def test_sdsa_module():
    torch.manual_seed(0)
    m = snn.SpikeDrivenSelfAttention(32, num_heads=4)
    x = spikes(4, 2, 10, 32)
    y = m(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


@native
@pytest.mark.parametrize("cls,kw", [(snn.LinearAttention, {}),
                                    (snn.LinearAttention, dict(num_kv_heads=2)),
                                    (snn.GatedLinearAttention, {}),
                                    (snn.GatedLinearAttention, dict(gate="scalar")),
                                    (snn.GatedLinearAttention, dict(num_kv_heads=1))])
def test_linear_attention_modes_agree(cls, kw):
    torch.manual_seed(0)
    m = cls(32, num_heads=4, **kw)
    x = torch.randn(2, 70, 32)
    y_chunk, s_chunk = m(x)
    m.mode = "fused_recurrent"
    y_rec, s_rec = m(x)
    torch.testing.assert_close(y_chunk, y_rec, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_chunk, s_rec, rtol=1e-4, atol=1e-4)
    # continuing from the state equals running the whole sequence at once
    m.mode = "chunk"
    y1, s1 = m(x[:, :33])
    y2, s2 = m(x[:, 33:], initial_state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_chunk, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s2, s_chunk, rtol=1e-4, atol=1e-4)
    y_chunk.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@native
def test_sliding_window_module_matches_reference():
    from spikeops.ref.attention import sliding_window_attn_ref
    torch.manual_seed(0)
    m = snn.SlidingWindowAttention(32, num_heads=4, window=9)
    x = torch.randn(2, 40, 32)
    q, k, v = m.qkv(x).reshape(2, 40, 3, 4, 8).unbind(2)
    want = m.o_proj(sliding_window_attn_ref(q, k, v, 9).reshape(2, 40, 32))
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)


@native
def test_gla_module_compile():
    torch.manual_seed(0)
    m = snn.GatedLinearAttention(32, num_heads=2)
    x = torch.randn(1, 20, 32)
    want, _ = m(x)
    got, _ = torch.compile(m, fullgraph=True)(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
