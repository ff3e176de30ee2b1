"""Model zoo: each model's forward and backward on the kernels equals the same model (same
weights) on the pure-PyTorch references (``spikeops.use_reference()``); the nm= option; the
registry's errors.

Tolerance: fp32 on both paths, so every output and parameter gradient must agree to a small
multiple of fp32 rounding: ``||a - b|| <= RTOL * max(||b||, 1e-3 * ||all of b||)`` with
``RTOL = 256 eps(fp32)`` (3e-5). The worst error measured over these models was ~16 eps
(BatchNorm backward over small batches amplifies rounding). A spike that flips at the
threshold would show as an O(1) relative error, far above it. The 1e-3 floor only keeps a
tensor whose exact gradient is ~0 from dividing rounding noise by ~0; every compared tensor
is also checked to have a non-zero gradient, so no comparison is vacuous.
"""
from __future__ import annotations

import copy

import pytest
import torch

import spikeops
from spikeops import models
from spikeops.nn import NMConv2d, NMLinear

from conftest import skip_unless

RTOL = 256 * torch.finfo(torch.float32).eps

# Inputs and overrides per model: tiny shapes; Spikformer's SSA scale raised so its attention
# fires with 16 tokens at initialisation (with 0.125 the attention LIF is silent and the
# output projection's gradient is exactly zero on both paths).
KWARGS = {
    "spikformer": dict(in_channels=1, num_classes=10, attn_scale=1.0),
    "meta_spikeformer": dict(in_channels=1, num_classes=10),
    "spikeyolo": dict(in_channels=3),
    "spikegpt": dict(vocab_size=50),
    "spikingbrain": dict(vocab_size=50),
    "e3dsnn": dict(num_classes=5),
}


def _input(name, g):
    if name in ("spikformer", "meta_spikeformer"):
        return torch.randn(4, 1, 8, 8, generator=g)
    if name == "spikeyolo":
        return torch.randn(2, 3, 32, 32, generator=g)
    if name in ("spikegpt", "spikingbrain"):
        return torch.randint(0, 50, (2, 40), generator=g)
    # 4 clouds of 150 points: ~500 active sites (BatchNorm of the pooled head over a batch of
    # 2 gives exactly +-1, whose I-LIF input 0.5 sits on a rounding tie)
    return models.points_to_sparse([torch.rand(150, 3, generator=g) * 2 - 1 for _ in range(4)])


def _loss_and_grads(model, x, weights):
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return [o.detach() for o in outs], loss.detach(), grads


def _rel(a, b, floor=0.0):
    return ((a - b).norm() / max(b.norm().item(), floor, 1e-30)).item()


def _compare(name, nm, x_fn=_input, **extra):
    torch.manual_seed(0)
    model = models.create(name, "tiny", nm=nm, **{**KWARGS[name], **extra})
    g = torch.Generator().manual_seed(1)
    x = x_fn(name, g)
    with torch.no_grad():
        out = model(x)
    outs = out if isinstance(out, tuple) else (out,)
    weights = [torch.randn(o.shape, generator=g) / o.numel() ** 0.5 for o in outs]
    twin = copy.deepcopy(model)
    y_k, loss_k, g_k = _loss_and_grads(model, x, weights)
    with spikeops.use_reference():
        y_r, loss_r, g_r = _loss_and_grads(twin, x, weights)
    return model, (y_k, loss_k, g_k), (y_r, loss_r, g_r)


@skip_unless("extension")
@pytest.mark.parametrize("nm", [None, True], ids=["dense", "nm2:4"])
@pytest.mark.parametrize("name", models.names())
def test_kernels_match_reference(name, nm):
    torch.set_num_threads(2)
    model, (y_k, loss_k, g_k), (y_r, loss_r, g_r) = _compare(name, nm)
    for a, b in zip(y_k, y_r):
        assert torch.isfinite(a).all()
        assert _rel(a, b) <= RTOL, f"{name}: output differs, rel {_rel(a, b):.3g}"
    scale = abs(loss_r.item()) + sum((o.abs().sum() for o in y_r), torch.tensor(0.)).item()
    assert abs(loss_k.item() - loss_r.item()) <= RTOL * scale
    assert set(g_k) == set(g_r)
    total = torch.sqrt(sum(v.norm() ** 2 for v in g_r.values() if v is not None)).item()
    for pname, ref in g_r.items():
        got = g_k[pname]
        assert ref is not None and got is not None, f"{name}: {pname} got no gradient"
        assert ref.norm() > 0, f"{name}: {pname} has a zero gradient (a dead path)"
        err = _rel(got, ref, 1e-3 * total)
        assert err <= RTOL, f"{name}: grad of {pname} differs, rel {err:.3g} > {RTOL:.3g}"
    if nm:
        assert model.nm_layers, f"{name}: nm=True replaced no layer"


@skip_unless("extension")
def test_e3dsnn_many_sites_two_threads_match_reference():
    torch.set_num_threads(2)

    def many(name, g):   # 6 clouds of 200 points: > 2048 sites after the first stride
        return models.points_to_sparse([torch.rand(200, 3, generator=g) * 2 - 1
                                        for _ in range(6)])

    _, (y_k, _, g_k), (y_r, _, g_r) = _compare("e3dsnn", None, many, widths=(8, 8, 8),
                                               hidden=16)
    assert _rel(y_k[0], y_r[0]) <= RTOL
    total = torch.sqrt(sum(v.norm() ** 2 for v in g_r.values())).item()
    assert max(_rel(g_k[n], g_r[n], 1e-3 * total) for n in g_r) <= RTOL


def test_nm_option_replaces_layers_and_keeps_n_of_m():
    dense = models.create("meta_spikeformer", in_channels=1)
    assert dense.nm_layers == []
    assert not any(isinstance(m, (NMLinear, NMConv2d)) for m in dense.modules())
    for spec, (n, m) in ((True, (2, 4)), ("1:4", (1, 4)), ((2, 8), (2, 8))):
        net = models.create("meta_spikeformer", in_channels=1, nm=spec)
        layers = [net.get_submodule(name) for name in net.nm_layers]
        assert layers and all(isinstance(l, (NMLinear, NMConv2d)) for l in layers)
        assert all((l.n, l.m) == (n, m) for l in layers)
        # the first conv (1 input channel) cannot be N:M and stays dense
        assert type(net.downsample[0].conv.conv) is torch.nn.Conv2d
        lin = next(l for l in layers if isinstance(l, NMLinear))
        kept = lin.mask().reshape(lin.out_features, -1, m).sum(-1)
        assert (kept == n).all()
    for name in models.names():
        net = models.create(name, nm=True, **KWARGS[name])
        assert net.nm_layers, f"{name}: nm=True replaced nothing"
        lm = name in ("spikegpt", "spikingbrain")
        if lm:
            assert "head" not in net.nm_layers


def test_nm_bad_values():
    for bad in ("2-4", (2,), 3, (2.0, 4.0), "a:b"):
        with pytest.raises(ValueError, match="nm"):
            models.create("spikformer", nm=bad)
    with pytest.raises(ValueError, match="m: expected a power of two"):
        models.create("spikformer", nm=(2, 3))
    with pytest.raises(ValueError, match="n: expected 1 <= n < m"):
        models.create("spikformer", nm="5:4")


def test_registry_names_and_errors():
    assert models.names() == ["e3dsnn", "meta_spikeformer", "spikegpt", "spikeyolo",
                              "spikformer", "spikingbrain"]
    with pytest.raises(ValueError, match=r"name: unknown model 'resnet'.*spikformer"):
        models.create("resnet")
    with pytest.raises(ValueError, match=r"name: unknown model"):
        models.create(None)
    with pytest.raises(ValueError, match=r"size: unknown configuration 'huge'.*small"):
        models.create("spikformer", "huge")
    assert isinstance(models.create("Meta-SpikeFormer", in_channels=1), models.MetaSpikeFormer)
    for name in models.names():
        assert models.sizes(name) == ["small", "tiny"]


def test_small_configs_are_larger():
    for name in models.names():
        tiny = sum(p.numel() for p in models.create(name, "tiny", **KWARGS[name]).parameters())
        small = sum(p.numel() for p in models.create(name, "small", **KWARGS[name]).parameters())
        assert small > 2 * tiny, name


def test_bad_inputs_name_the_argument():
    img = models.create("meta_spikeformer", in_channels=1)
    with pytest.raises(ValueError, match="x: expected an image batch"):
        img(torch.randn(8, 8))
    lm = models.create("spikegpt", vocab_size=10)
    with pytest.raises(ValueError, match="idx"):
        lm(torch.randn(2, 5))
    with pytest.raises(ValueError, match="mixer"):
        models.create("spikegpt", mixer="lstm")
    pc = models.create("e3dsnn")
    with pytest.raises(ValueError, match="x: expected a SparseTensor"):
        pc(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"points\[1\]"):
        models.points_to_sparse([torch.rand(5, 3), torch.rand(5, 2)])


@skip_unless("extension")
def test_spikegpt_linear_mixer_matches_reference():
    torch.set_num_threads(2)
    _, (y_k, _, g_k), (y_r, _, g_r) = _compare("spikegpt", None, mixer="linear")
    assert _rel(y_k[0], y_r[0]) <= RTOL
    total = torch.sqrt(sum(v.norm() ** 2 for v in g_r.values())).item()
    for n in g_r:
        assert g_r[n].norm() > 0, n
        assert _rel(g_k[n], g_r[n], 1e-3 * total) <= RTOL, n


def test_models_are_stateless_between_batches():
    """Each forward resets the neurons: the same batch twice gives the same output, and a
    batch of another size runs (no stale membrane)."""
    torch.manual_seed(0)
    net = models.create("meta_spikeformer", in_channels=1).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        a, b = net(x), net(x)
        net(torch.randn(5, 1, 8, 8))
    assert torch.equal(a, b)
