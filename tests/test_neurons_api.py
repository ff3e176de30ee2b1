"""Neuron ops as PyTorch ops (opcheck, torch.compile), modules, and bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeops
from spikeops import ops, ref
from spikeops.nn import (ALIF, IF, ILIF, LIF, PLIF, MultiStepLIFNode, MultiStepParametricLIFNode,
                         reset_net)

from conftest import skip_unless

pytestmark = skip_unless("extension")
OPS = torch.ops.spikeops


def _x(shape=(4, 3, 10), dtype=torch.float32):
    return (torch.randn(shape) * 1.5 + 0.4).to(dtype)


# ---- opcheck: schema, fake tensors, autograd registration, AOT dispatch ------------

def _opcheck_cases():
    x = _x()
    v0 = torch.randn(3, 10)
    g = torch.randn_like(x)
    gv = torch.randn(3, 10)
    w = torch.randn(3)
    xr = x.clone().requires_grad_(True)
    v0r = v0.clone().requires_grad_(True)
    wr = w.clone().requires_grad_(True)
    return [
        (OPS.lif_fwd.default, (xr, v0r, 2.0, True, 1.0, 0.0, "sigmoid", 4.0, False, False)),
        (OPS.lif_fwd.default, (x, None, 3.0, False, 0.7, None, "atan", 2.0, True, True)),
        (OPS.lif_bwd.default, (g, gv, x, v0, 2.0, True, 1.0, 0.0, "sigmoid", 4.0, False)),
        (OPS.if_fwd.default, (xr, v0r, 1.0, 0.0, "erf", 2.0, False, False)),
        (OPS.if_bwd.default, (g, None, x, None, 1.0, None, "erf", 2.0, False)),
        (OPS.plif_fwd.default, (xr, wr, v0r, 1, True, 1.0, 0.0, "sigmoid", 4.0, False, False)),
        (OPS.plif_bwd.default, (g, gv, x, w, v0, 1, True, 1.0, 0.0, "sigmoid", 4.0, False)),
        (OPS.ilif_fwd.default, (xr, v0r, 2.0, True, 1.0, 4, "half_even", True, False)),
        (OPS.ilif_bwd.default, (g, gv, x, v0, 2.0, True, 1.0, 4, "half_up", False)),
        (OPS.alif_fwd.default, (xr, v0r, None, 2.0, True, 1.0, 0.0, 20.0, 0.1, "sigmoid", 4.0,
                                False, True)),
        (OPS.alif_bwd.default, (g, gv, None, x, v0, None, 2.0, True, 1.0, None, 20.0, 0.1,
                                "sigmoid", 4.0, False)),
    ]


@pytest.mark.parametrize("case", range(11))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_compile_fullgraph_small_network():
    torch._dynamo.reset()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):  # x [T, B, 16]
            s, _ = ops.lif(self.fc1(x), tau=2.0, detach_reset=True)
            s2, _ = ops.plif(self.fc2(s), torch.zeros(4), channel_dim=-1)
            return s2.mean(0)

    net = Net()
    x = torch.randn(4, 8, 16) * 3
    eager = net(x)
    eager.sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    compiled = torch.compile(net, fullgraph=True)  # inductor: the backend users run
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    for p, g in zip(net.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


# ---- modules ------------------------------------------------------------------------

def test_lif_module_keeps_state_until_reset():
    m = LIF(tau=2.0)
    x = _x((6, 2, 9))
    s_full = LIF(tau=2.0)(x)
    s1, s2 = m(x[:2].contiguous()), m(x[2:].contiguous())
    torch.testing.assert_close(torch.cat([s1, s2]), s_full, rtol=0, atol=0)
    assert m.v is not None
    reset_net(nn.Sequential(m))
    assert m.v is None
    with pytest.raises(ValueError, match="reset"):
        m(x)
        m(_x((6, 3, 9)))


def test_single_step_mode_matches_multi_step():
    x = _x((5, 2, 7))
    ms = LIF(step_mode="m", store_v_seq=True)
    ss = LIF(step_mode="s", store_v_seq=True)
    out_m = ms(x)
    out_s = torch.stack([ss(x[t]) for t in range(5)])
    torch.testing.assert_close(out_s, out_m, rtol=0, atol=0)
    torch.testing.assert_close(ss.v_seq, ms.v_seq[-1], rtol=0, atol=0)


def test_modules_match_ops():
    x = _x((4, 2, 3, 5))
    torch.testing.assert_close(IF(v_reset=None)(x), ops.if_(x, v_reset=None)[0])
    p = PLIF(init_tau=3.0, channels=3)
    torch.testing.assert_close(p(x), ops.plif(x, p.w.detach())[0])
    torch.testing.assert_close(ILIF(max_level=3)(x), ops.ilif(x, max_level=3)[0])
    a = ALIF(beta=0.5)
    torch.testing.assert_close(a(x), ops.alif(x, beta=0.5)[0])
    assert a.a is not None
    old = MultiStepLIFNode(tau=2.0, v_threshold=0.5, detach_reset=True, backend="cupy")
    torch.testing.assert_close(old(x), ops.lif(x, v_threshold=0.5, detach_reset=True)[0])
    old_p = MultiStepParametricLIFNode(init_tau=2.0, detach_reset=True, backend="cupy")
    torch.testing.assert_close(old_p(x), ops.plif(x, old_p.w.detach(), detach_reset=True)[0])


def test_plif_module_learns_w():
    p = PLIF(init_tau=2.0, channels=3)
    x = _x((4, 2, 3, 5)).requires_grad_(True)
    p(x).sum().backward()
    assert p.w.grad is not None and p.w.grad.shape == (3,)
    p.reset()
    s_r, _ = ref.neurons.plif(x.detach(), p.w.detach(), channel_dim=2)
    torch.testing.assert_close(p(x.detach()), s_r, rtol=0, atol=0)


def test_spikingjelly_surrogate_objects_are_mapped():
    class ATan:  # what spikingjelly.activation_based.surrogate.ATan looks like
        alpha = 3.0
    m = LIF(surrogate_function=ATan())
    assert (m.surrogate, m.alpha) == ("atan", 3.0)
    with pytest.raises(ValueError, match="surrogate_function"):
        LIF(surrogate_function=object())


# ---- bad input: a clear exception naming the argument --------------------------------

BAD = [
    ("x", TypeError, lambda: ops.lif(torch.randn(3, 4, dtype=torch.float64))),
    ("x", TypeError, lambda: ops.lif(torch.randint(0, 2, (3, 4)))),
    ("x", ValueError, lambda: ops.lif(torch.randn(0, 4))),
    ("x", ValueError, lambda: ops.lif(torch.randn(3, 0))),
    ("x", ValueError, lambda: ops.lif(torch.randn(4, 3).t())),
    ("x", ValueError, lambda: ops.lif(torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last))),
    ("x", ValueError, lambda: ops.lif(torch.tensor(1.0))),
    ("v0", ValueError, lambda: ops.lif(torch.randn(3, 4), torch.randn(5))),
    ("v0", TypeError, lambda: ops.lif(torch.randn(3, 4), torch.randn(4, dtype=torch.float64))),
    ("v0", ValueError, lambda: ops.lif(torch.randn(3, 4), torch.randn(4, device="meta"))),
    ("tau", ValueError, lambda: ops.lif(torch.randn(3, 4), tau=1.0)),
    ("tau", ValueError, lambda: ops.lif(torch.randn(3, 4), tau=0.5)),
    ("tau", ValueError, lambda: ops.ilif(torch.randn(3, 4), tau=float("nan"))),
    ("tau_adapt", ValueError, lambda: ops.alif(torch.randn(3, 4), tau_adapt=1.0)),
    ("surrogate", ValueError, lambda: ops.lif(torch.randn(3, 4), surrogate="relu")),
    ("alpha", ValueError, lambda: ops.lif(torch.randn(3, 4), alpha=-1.0)),
    ("v_threshold", ValueError, lambda: ops.lif(torch.randn(3, 4), v_threshold=float("inf"))),
    ("v_threshold", ValueError, lambda: ops.ilif(torch.randn(3, 4), v_threshold=0.0)),
    ("max_level", ValueError, lambda: ops.ilif(torch.randn(3, 4), max_level=0)),
    ("max_level", ValueError, lambda: ops.ilif(torch.randn(3, 4).bfloat16(), max_level=257)),
    ("max_level", ValueError, lambda: ops.ilif(torch.randn(3, 4).half(), max_level=4096)),
    ("v_threshold", ValueError, lambda: ops.lif(torch.randn(3, 4), v_threshold=1e39)),
    ("beta", ValueError, lambda: ops.alif(torch.randn(3, 4), beta=1e39)),
    ("rounding", ValueError, lambda: ops.ilif(torch.randn(3, 4), rounding="down")),
    ("w", ValueError, lambda: ops.plif(torch.randn(3, 2, 4), torch.randn(3))),
    ("w", ValueError, lambda: ops.plif(torch.randn(3, 2, 4), torch.randn(2, 4))),
    ("w", TypeError, lambda: ops.plif(torch.randn(3, 2, 4), torch.ones(4, dtype=torch.int64))),
    ("channel_dim", ValueError, lambda: ops.plif(torch.randn(3, 2, 4), torch.randn(3),
                                                   channel_dim=0)),
    ("a0", ValueError, lambda: ops.alif(torch.randn(3, 4), None, torch.randn(3))),
    ("step_mode", ValueError, lambda: LIF(step_mode="x")),
    ("init_tau", ValueError, lambda: PLIF(init_tau=1.0)),
]


@pytest.mark.parametrize("name,exc,call", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_the_argument(name, exc, call):
    with pytest.raises(exc, match=name):
        call()


BAD_NATIVE = [  # the same checks inside the C++ ops, for callers of torch.ops directly
    ("x", lambda: OPS.lif_fwd.default(torch.randn(0, 4), None, 2.0, True, 1.0, 0.0, "sigmoid",
                                      4.0, False, False)),
    ("x", lambda: OPS.lif_fwd.default(torch.randn(4, 3).t(), None, 2.0, True, 1.0, 0.0,
                                      "sigmoid", 4.0, False, False)),
    ("v0", lambda: OPS.lif_fwd.default(torch.randn(3, 4), torch.randn(5), 2.0, True, 1.0, 0.0,
                                       "sigmoid", 4.0, False, False)),
    ("tau", lambda: OPS.lif_fwd.default(torch.randn(3, 4), None, 1.0, True, 1.0, 0.0, "sigmoid",
                                        4.0, False, False)),
    ("surrogate", lambda: OPS.lif_fwd.default(torch.randn(3, 4), None, 2.0, True, 1.0, 0.0,
                                              "nope", 4.0, False, False)),
    ("grad_spikes", lambda: OPS.lif_bwd.default(torch.randn(2, 4), None, torch.randn(3, 4), None,
                                                2.0, True, 1.0, 0.0, "sigmoid", 4.0, False)),
    ("w", lambda: OPS.plif_fwd.default(torch.randn(3, 2, 4), torch.randn(3), None, 2, True, 1.0,
                                       0.0, "sigmoid", 4.0, False, False)),
    ("rounding", lambda: OPS.ilif_fwd.default(torch.randn(3, 4), None, 2.0, True, 1.0, 4, "x",
                                              True, False)),
    ("max_level", lambda: OPS.ilif_fwd.default(torch.randn(3, 4).bfloat16(), None, 2.0, True, 1.0,
                                               300, "half_even", True, False)),
    ("v_threshold", lambda: OPS.lif_fwd.default(torch.randn(3, 4), None, 2.0, True, 1e39, 0.0,
                                                "sigmoid", 4.0, False, False)),
]


@pytest.mark.parametrize("name,call", BAD_NATIVE, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_NATIVE)])
def test_native_checks_name_the_argument(name, call):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=name):
        call()


def test_cpu_isa_switch_rejects_unknown_names():
    with pytest.raises(Exception, match="isa"):
        spikeops.set_cpu_isa("sse9")


def test_compile_fullgraph_stateful_modules():
    torch._dynamo.reset()
    net = nn.Sequential(nn.Linear(16, 32), LIF(tau=2.0, detach_reset=True), nn.Linear(32, 4),
                        PLIF(channels=4, channel_dim=-1))
    x = torch.randn(4, 8, 16) * 3
    eager = net(x)
    reset_net(net)
    compiled = torch.compile(net, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    assert net[1].v is not None  # the membrane state was written back by the compiled graph
    out.sum().backward()
    assert net[3].w.grad is not None


def test_double_backward_is_refused_not_zero():
    x = torch.randn(4, 3, 5, requires_grad=True)
    s, v = ops.lif(x)
    (g,) = torch.autograd.grad(s.sum() + (v ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad((g ** 2).sum(), x)


def test_single_step_plif_channel_dim_counts_the_module_input():
    x = torch.randn(5, 2, 3, 4) * 2  # [T, B, C, L]
    multi = PLIF(channels=3, step_mode="m")
    single = PLIF(channels=3, step_mode="s")
    with torch.no_grad():
        single.w.copy_(torch.randn(3))
        multi.w.copy_(single.w)
    out_s = torch.stack([single(x[t]) for t in range(5)])
    torch.testing.assert_close(out_s, multi(x), rtol=0, atol=0)


def test_module_state_on_another_device_is_reported():
    m = LIF()
    m(torch.randn(2, 3))
    m.v = m.v.to("meta")
    with pytest.raises(ValueError, match="device"):
        m(torch.randn(2, 3))
