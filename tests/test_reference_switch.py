"""spikeops.use_reference(): every op family and module runs its pure-PyTorch reference.

Each case is checked three ways: (1) a dispatch mode records every ``spikeops::*`` op that
reaches the dispatcher, forward and backward: on the kernel path the case must call some (so
the probe can fail), under ``use_reference()`` none; (2) under the switch the op's outputs and
gradients equal the reference function called directly, bit for bit; (3) they match the
kernel path within the family tests' float32 tolerance.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import spikeops
from spikeops import nn as snn
from spikeops import ops, ref
from spikeops.sparse import SparseTensor

from conftest import skip_unless

pytestmark = skip_unless("extension")

TOL = dict(rtol=1e-4, atol=1e-5)


class SpikeopsCalls(TorchDispatchMode):
    """Records the name of every spikeops::* op dispatched while active."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "spikeops":
            self.names.append(func.name())
        return func(*args, **(kwargs or {}))


def _leaves(*ts):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) for t in ts]


def _run(fn, inputs, seed=0):
    """Forward + backward of ``fn(*inputs)`` (a tuple of tensors); returns the outputs, the
    input gradients and the spikeops ops seen."""
    xs = _leaves(*inputs)
    calls = SpikeopsCalls()
    with calls:
        outs = fn(*xs)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        outs = [o for o in outs if isinstance(o, torch.Tensor)]
        g = torch.Generator().manual_seed(seed)
        loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs
                   if o.is_floating_point() and o.requires_grad)
        grads = torch.autograd.grad(loss, [x for x in xs if x.requires_grad], allow_unused=True)
    return [o.detach() for o in outs], grads, calls.names


def _spikes(*shape, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).float()


def _randn(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _nm_weight():
    w = _randn(6, 8, seed=3)
    return spikeops.nm.compress(w, 2, 4)


# (name, op under test, the reference called directly, inputs)
CASES = [
    ("lif", lambda x: ops.lif(x, tau=2.0), lambda x: ref.neurons.lif(x, tau=2.0),
     (_randn(4, 2, 8, scale=1.5),)),
    ("if", lambda x: ops.if_(x), lambda x: ref.neurons.if_(x), (_randn(4, 2, 8),)),
    ("plif", lambda x, w: ops.plif(x, w), lambda x, w: ref.neurons.plif(x, w),
     (_randn(4, 2, 8, scale=1.5), torch.tensor(0.3))),
    ("ilif", lambda x: ops.ilif(x, max_level=4), lambda x: ref.neurons.ilif(x, max_level=4),
     (_randn(4, 2, 8, scale=2.0),)),
    ("alif", lambda x: ops.alif(x), lambda x: ref.neurons.alif(x), (_randn(4, 2, 8, scale=1.5),)),
    ("nm_linear",
     lambda x, b: ops.nm_linear(x, _nm_weight(), b),
     lambda x, b: ref.nm.nm_linear(x, _nm_weight().values, _nm_weight().meta, 2, 4, b),
     (_randn(5, 8), _randn(6, seed=1))),
    ("nm_masked_linear",
     lambda x, w: ops.nm_masked_linear(x, w, None, 2, 4),
     lambda x, w: ref.nm.nm_masked_linear(x, w, ref.nm.pack_mask(ref.nm.prune_mask(w, 2, 4)),
                                          2, 4),
     (_randn(5, 8), _randn(6, 8, seed=2))),
    ("ssa", lambda q, k, v: ops.ssa(q, k, v), lambda q, k, v: ref.attention.ssa_ref(q, k, v),
     (_spikes(2, 1, 2, 6, 4), _spikes(2, 1, 2, 6, 4, seed=1), _spikes(2, 1, 2, 6, 4, seed=2))),
    ("ssa_lif", lambda q, k, v: ops.ssa_lif(q, k, v, 0.25),
     lambda q, k, v: ref.attention.ssa_lif_ref(q, k, v, 0.25),
     (_spikes(3, 1, 2, 6, 4, p=0.6), _spikes(3, 1, 2, 6, 4, p=0.6, seed=1),
      _spikes(3, 1, 2, 6, 4, p=0.6, seed=2))),
    ("sdsa", lambda q, k, v: ops.sdsa(q, k, v), lambda q, k, v: ref.attention.sdsa_ref(q, k, v),
     (_spikes(3, 1, 2, 6, 4), _spikes(3, 1, 2, 6, 4, seed=1), _spikes(3, 1, 2, 6, 4, seed=2))),
    ("rwkv4_wkv", ops.rwkv4_wkv, ref.attention.rwkv4_wkv_ref,
     (_randn(8, scale=0.5), _randn(8, seed=1, scale=0.5), _randn(2, 5, 8, seed=2),
      _randn(2, 5, 8, seed=3))),
    ("sliding_window_attn", lambda q, k, v: ops.sliding_window_attn(q, k, v, 3),
     lambda q, k, v: ref.attention.sliding_window_attn_ref(q, k, v, 3),
     (_randn(1, 7, 2, 8), _randn(1, 7, 2, 8, seed=1), _randn(1, 7, 2, 8, seed=2))),
    ("chunk_simple_gla",
     lambda q, k, v, g: ops.chunk_simple_gla(q, k, v, g, output_final_state=True, chunk_size=4),
     lambda q, k, v, g: ref.attention.chunk_simple_gla_ref(q, k, v, g, output_final_state=True,
                                                           chunk_size=4),
     (_randn(1, 9, 2, 4), _randn(1, 9, 2, 4, seed=1), _randn(1, 9, 2, 4, seed=2),
      -_randn(1, 9, 2, seed=3).abs() * 0.1)),
    ("fused_recurrent_linear_attn",
     lambda q, k, v: ops.fused_recurrent_linear_attn(q, k, v, output_final_state=True),
     lambda q, k, v: ref.attention.fused_recurrent_linear_attn_ref(q, k, v,
                                                                   output_final_state=True),
     (_randn(1, 9, 2, 4), _randn(1, 9, 2, 4, seed=1), _randn(1, 9, 2, 4, seed=2))),
    ("chunk_gla",
     lambda q, k, v, g: ops.chunk_gla(q, k, v, g, chunk_size=4),
     lambda q, k, v, g: ref.attention.chunk_gla_ref(q, k, v, g, chunk_size=4),
     (_randn(1, 9, 2, 4), _randn(1, 9, 2, 4, seed=1), _randn(1, 9, 2, 4, seed=2),
      -_randn(1, 9, 2, 4, seed=3).abs() * 0.1)),
]


@pytest.mark.parametrize("name, fn, reference, inputs", CASES, ids=[c[0] for c in CASES])
def test_ops_run_reference_under_switch(name, fn, reference, inputs):
    out_k, grad_k, names_k = _run(fn, inputs)
    assert names_k, f"{name}: the kernel path called no spikeops op (the probe is blind)"
    with spikeops.use_reference():
        assert spikeops.reference_enabled()
        out_r, grad_r, names_r = _run(fn, inputs)
    assert not spikeops.reference_enabled()
    assert names_r == [], f"{name}: native ops ran under use_reference(): {names_r}"
    out_d, grad_d, _ = _run(reference, inputs)
    assert len(out_r) == len(out_d) == len(out_k)
    for a, b in zip(out_r, out_d):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(grad_r, grad_d):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(out_k, out_r):
        torch.testing.assert_close(a, b.to(a.dtype), **TOL)
    for a, b in zip(grad_k, grad_r):
        if a is not None:
            torch.testing.assert_close(a, b, **TOL)


def _sparse_input():
    g = torch.Generator().manual_seed(5)
    dense = (torch.rand(2, 3, 6, 6, 6, generator=g) < 0.15).float()    # [B, C, D, H, W]
    dense = dense * (torch.rand(dense.shape, generator=g) + 0.5)
    return SparseTensor.from_dense(dense.permute(0, 2, 3, 4, 1))


def _sparse_model():
    torch.manual_seed(0)
    return snn.SparseSequential(
        snn.SubMConv3d(3, 4, 3, indice_key="s1"),
        snn.SparseConv3d(4, 5, 3, stride=2, padding=1, indice_key="down"),
        snn.SparseInverseConv3d(5, 4, 3, indice_key="down"),
    )


def _sparse_run(model, x):
    feats = x.features.detach().clone().requires_grad_(True)
    xt = SparseTensor(feats, x.indices, x.spatial_shape, x.batch_size)
    calls = SpikeopsCalls()
    with calls:
        out = model(xt)
        dense = out.dense()
        dense.pow(2).sum().backward()
    grads = [feats.grad] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return dense.detach(), grads, calls.names


def test_sparse_conv_layers_run_reference_under_switch():
    model, x = _sparse_model(), _sparse_input()
    out_k, grads_k, names_k = _sparse_run(model, x)
    assert {"spikeops::sparse_conv_fwd", "spikeops::sparse_conv_map"} <= set(names_k)
    with spikeops.use_reference():
        out_r, grads_r, names_r = _sparse_run(model, x)
    assert names_r == []
    torch.testing.assert_close(out_k, out_r, **TOL)
    for a, b in zip(grads_k, grads_r):
        torch.testing.assert_close(a, b, **TOL)


def _block():
    torch.manual_seed(0)
    return torch.nn.Sequential(snn.NMLinear(8, 8), snn.SpikingSelfAttention(8, num_heads=2))


def test_modules_run_reference_under_switch():
    """A module stack (N:M linear, SSA block with LIF projections) forward + backward."""
    model = _block()
    x = _randn(2, 1, 5, 8, scale=3.0)

    def run():
        snn.reset_net(model)                 # the projections' LIF keep their membrane
        xi = x.clone().requires_grad_(True)
        calls = SpikeopsCalls()
        with calls:
            y = model(xi)
            (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        grads = [xi.grad] + [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return y.detach(), grads, calls.names

    y_k, g_k, n_k = run()
    assert {"spikeops::nm_masked_linear", "spikeops::lif_fwd", "spikeops::ssa_lif_fwd"} <= set(n_k)
    with spikeops.use_reference():
        y_r, g_r, n_r = run()
    assert n_r == []
    torch.testing.assert_close(y_k, y_r, rtol=0, atol=0)        # spikes
    for a, b in zip(g_k, g_r):
        torch.testing.assert_close(a, b, **TOL)


def test_nesting_and_exceptions_restore_state():
    assert not spikeops.reference_enabled()
    with spikeops.use_reference():
        assert spikeops.reference_enabled()
        with spikeops.use_reference(False):
            assert not spikeops.reference_enabled()
            with spikeops.use_reference():
                assert spikeops.reference_enabled()
            assert not spikeops.reference_enabled()
        assert spikeops.reference_enabled()
    assert not spikeops.reference_enabled()

    with pytest.raises(KeyError):
        with spikeops.use_reference():
            raise KeyError("boom")
    assert not spikeops.reference_enabled()

    ctx = spikeops.use_reference()           # one object, entered twice (nested)
    with ctx:
        with ctx:
            assert spikeops.reference_enabled()
        assert spikeops.reference_enabled()
    assert not spikeops.reference_enabled()

    assert spikeops.set_reference(True) is False
    try:
        assert spikeops.set_reference(True) is True
        assert spikeops.info()["reference_forced"] is True
    finally:
        spikeops.set_reference(False)
    assert not spikeops.reference_enabled()


def test_decorator_and_bad_arguments():
    @spikeops.use_reference()
    def inside():
        return spikeops.reference_enabled()

    assert inside() is True
    assert not spikeops.reference_enabled()
    with pytest.raises(TypeError, match="enabled"):
        spikeops.use_reference("yes")
    with pytest.raises(TypeError, match="enabled"):
        spikeops.set_reference(1)
    assert not spikeops.reference_enabled()


def test_torch_compile_kernel_path_and_switch():
    """fullgraph compile of the kernel path still works; the flag is guarded, so the same
    compiled function traces the reference under the switch (and the kernels again after)."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    torch._dynamo.reset()
    backend = EagerAndRecordGraphs()

    def f(x):
        return ops.lif(x, tau=2.0)[0]

    cf = torch.compile(f, backend=backend, fullgraph=True)
    x = _randn(3, 2, 4, scale=1.5)

    def graph_ops(gm):
        return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}

    y = cf(x)
    assert len(backend.graphs) == 1
    assert any("spikeops.lif_fwd" in t for t in graph_ops(backend.graphs[0]))
    torch.testing.assert_close(y, f(x), rtol=0, atol=0)
    with spikeops.use_reference():
        y_r = cf(x)
    assert len(backend.graphs) == 2, "the switch did not trigger a recompile"
    assert not any("spikeops" in t for t in graph_ops(backend.graphs[1]))
    torch.testing.assert_close(y_r, ref.neurons.lif(x, tau=2.0)[0], rtol=0, atol=0)
    cf(x)
    assert len(backend.graphs) == 2       # the first graph is reused: no third compile
    torch._dynamo.reset()
