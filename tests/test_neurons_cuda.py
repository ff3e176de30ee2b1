"""The CUDA neuron kernels against the reference (run on a GPU machine; skipped elsewhere).

Spikes are compared with the reference run on the CPU: PyTorch's CUDA `tensor / scalar`
multiplies by the reciprocal, so a CUDA run of the reference can differ from true division
by an ulp and flip a spike, while the kernels divide exactly like the CPU.
"""
from __future__ import annotations

import pytest
import torch

from spikeops import ops, ref

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5),
       torch.float16: dict(rtol=2e-3, atol=1e-6)}


def _run(fn, x, extra, kw, g_out=None):
    xs = x.detach().clone().requires_grad_(True)
    ex = [e.detach().clone().requires_grad_(True) if e is not None else None for e in extra]
    outs = fn(xs, *ex, **kw)
    if g_out is None:
        gen = torch.Generator().manual_seed(1)
        g_out = [torch.randn(o.shape, generator=gen).to(o.dtype) for o in outs]
    loss = sum((o.float() * g.to(o.device).float()).sum()
               for o, g in zip(outs, g_out) if o.requires_grad)
    loss.backward()
    return [o.detach().cpu() for o in outs], [t.grad.cpu() if t is not None else None
                                               for t in [xs, *ex]], g_out


CASES = [
    ("lif", ops.lif, ref.neurons.lif, dict(tau=2.0), 1),
    ("lif-tau3-soft", ops.lif, ref.neurons.lif, dict(tau=3.0, v_reset=None, surrogate="atan"), 1),
    ("lif-nodecay-detach", ops.lif, ref.neurons.lif,
     dict(decay_input=False, detach_reset=True, surrogate="erf"), 1),
    ("if", ops.if_, ref.neurons.if_, dict(surrogate="rectangle"), 1),
    ("ilif", ops.ilif, ref.neurons.ilif, dict(max_level=4, detach_reset=False), 1),
    ("alif", ops.alif, ref.neurons.alif, dict(v_reset=None, beta=0.3), 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 37), (4, 3, 1000), (40, 2, 64), (7, 129)])
@pytest.mark.parametrize("name,kernel,refn,kw,states", CASES, ids=[c[0] for c in CASES])
def test_cuda_matches_cpu_reference(dtype, shape, name, kernel, refn, kw, states):
    x = (torch.randn(shape) * 1.5 + 0.4).to(dtype)
    extra = [torch.randn(shape[1:]) * 0.3 for _ in range(states)]
    ko, kg, g_out = _run(kernel, x.cuda(), [e.cuda() for e in extra], kw)
    ro, rg, _ = _run(refn, x, extra, kw, g_out)
    for a, b in zip(ko, ro):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(kg, rg):
        torch.testing.assert_close(a, b, **(TOL[dtype] if a.dtype == dtype else TOL[torch.float32]))


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_cuda_plif(channel_dim):
    x = torch.randn(6, 3, 8, 5) * 1.5
    w = torch.randn(x.shape[channel_dim])
    kw = dict(channel_dim=channel_dim)
    ko, kg, g_out = _run(lambda x, w: ops.plif(x, w, **kw), x.cuda(), [w.cuda()], {})
    ro, rg, _ = _run(lambda x, w: ref.neurons.plif(x, w, **kw), x, [w], {}, g_out)
    torch.testing.assert_close(ko[0], ro[0], rtol=0, atol=0)
    for a, b in zip(kg, rg):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cuda_opcheck_and_compile():
    x = torch.randn(4, 3, 10, device="cuda").requires_grad_(True)
    torch.library.opcheck(torch.ops.spikeops.lif_fwd.default,
                          (x, None, 2.0, True, 1.0, 0.0, "sigmoid", 4.0, False, False))
    f = torch.compile(lambda x: ops.lif(x)[0].sum(), fullgraph=True)
    torch.testing.assert_close(f(x), ops.lif(x)[0].sum())


def test_cuda_device_mismatch_is_an_error():
    with pytest.raises(ValueError, match="v0"):
        ops.lif(torch.randn(3, 4, device="cuda"), torch.zeros(4))
