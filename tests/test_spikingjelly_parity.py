"""Same spikes and gradients as SpikingJelly's multi-step neurons (skipped if not installed)."""
from __future__ import annotations

import logging

import pytest
import torch

from spikeops import ops
from spikeops.nn import surrogate_spec

sj = pytest.importorskip("spikingjelly.activation_based", reason="spikingjelly not installed")
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)
from spikingjelly.activation_based import neuron, surrogate  # noqa: E402

SURROGATES = ["Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike",
              "Erf", "Rect"]


def _both(sj_node, ours, x):
    torch.manual_seed(2)
    xs = x.clone().requires_grad_(True)
    s = sj_node(xs)
    g = torch.randn_like(s)
    (s * g).sum().backward()
    xo = x.clone().requires_grad_(True)
    so = ours(xo)
    (so * g).sum().backward()
    return (s, xs.grad), (so, xo.grad)


@pytest.mark.parametrize("kw", [dict(), dict(v_reset=None), dict(decay_input=False),
                                dict(detach_reset=True), dict(tau=3.0, v_threshold=0.5),
                                dict(v_reset=-0.2, decay_input=False, tau=5.0)])
def test_lif_matches_spikingjelly(kw):
    x = torch.randn(6, 4, 33) * 1.5 + 0.4
    (s, gs), (so, go) = _both(neuron.LIFNode(step_mode="m", **kw),
                              lambda x: ops.lif(x, **kw)[0], x)
    torch.testing.assert_close(so, s, rtol=0, atol=0)
    torch.testing.assert_close(go, gs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogates_match_spikingjelly(name):
    sg = getattr(surrogate, name)()
    ours, alpha = surrogate_spec(sg)
    x = torch.randn(5, 200) * 1.5 + 0.4
    (s, gs), (so, go) = _both(neuron.LIFNode(step_mode="m", surrogate_function=sg),
                              lambda x: ops.lif(x, surrogate=ours, alpha=alpha)[0], x)
    torch.testing.assert_close(so, s, rtol=0, atol=0)
    torch.testing.assert_close(go, gs, rtol=1e-5, atol=1e-6)


def test_if_and_plif_match_spikingjelly():
    x = torch.randn(6, 4, 33) * 1.5 + 0.4
    (s, gs), (so, go) = _both(neuron.IFNode(step_mode="m"), lambda x: ops.if_(x)[0], x)
    torch.testing.assert_close(so, s, rtol=0, atol=0)
    torch.testing.assert_close(go, gs, rtol=1e-5, atol=1e-6)
    sj_plif = neuron.ParametricLIFNode(init_tau=3.0, step_mode="m")
    w = sj_plif.w.detach().clone().requires_grad_(True)
    (s, gs), (so, go) = _both(sj_plif, lambda x: ops.plif(x, w)[0], x)
    torch.testing.assert_close(so, s, rtol=0, atol=0)
    torch.testing.assert_close(go, gs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, sj_plif.w.grad, rtol=1e-4, atol=1e-5)
