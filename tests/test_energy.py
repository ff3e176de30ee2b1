"""spikeops.energy: counts and energies of small networks worked out by hand.

Constants (45 nm, Horowitz 2014): E_MAC 4.6 pJ, E_AC 0.9 pJ, 10 pJ per 64-bit SRAM access =
0.15625 pJ per bit read or written. Every expected number below is derived in the comment
next to it from the layer shapes and the input values, not from running the estimator.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import spikeops
from spikeops import nn as snn
from spikeops.energy import EnergyConstants, EnergyReport, estimate
from spikeops.sparse import SparseTensor

BIT = 10.0 / 64          # pJ per bit


def _row(report, name):
    rows = [r for r in report.layers if r.name == name]
    assert len(rows) == 1, [r.name for r in report.layers]
    return rows[0]


def _approx(a, b):
    assert a == pytest.approx(b, rel=1e-12, abs=1e-9)


class LinearThenConv(nn.Module):
    """fc: Linear 4 -> 3 (bias) on binary spikes; conv: Conv2d 1 -> 2, 3x3, padding 1, no
    bias, on a real-valued 4x4 image (an encoding layer)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)

    def forward(self, spikes, image):
        return self.fc(spikes), self.conv(image)


SPIKES = torch.tensor([[1., 0., 1., 0.],
                       [0., 0., 1., 1.]])        # 4 of 8 non-zero: firing rate 0.5
IMAGE = torch.linspace(-1.0, 1.0, 16).reshape(1, 1, 4, 4)   # real valued


def test_linear_and_conv_hand_count():
    report = estimate(LinearThenConv(), (SPIKES, IMAGE))
    assert [r.name for r in report.layers] == ["fc", "conv"]

    fc = _row(report, "fc")
    assert (fc.kind, fc.calls, fc.input_kind) == ("Linear", 1, "binary")
    assert fc.firing_rate == 0.5
    assert (fc.input_bits, fc.weight_bits, fc.output_bits) == (1, 32, 32)
    assert fc.dense_ops == 24          # 2 rows x 4 inputs x 3 outputs
    assert fc.macs == 0
    assert fc.acs == 12                # 4 spikes x 3 outputs = 0.5 x 24
    assert fc.read_bits == 488         # (12 weights + 3 bias) x 32 + 8 inputs x 1 bit
    assert fc.write_bits == 192        # 6 outputs x 32
    _approx(fc.compute_pj, 10.8)       # 12 x 0.9
    _approx(fc.memory_pj, 106.25)      # (488 + 192) x 0.15625
    _approx(fc.energy_pj, 117.05)
    assert fc.ann_macs == 24
    _approx(fc.ann_energy_pj, 255.4)   # 24 x 4.6 + (480 + 8 x 32 + 192) x 0.15625

    conv = _row(report, "conv")
    assert (conv.kind, conv.input_kind, conv.firing_rate) == ("Conv2d", "real", 1.0)
    assert (conv.input_bits, conv.weight_bits, conv.output_bits) == (32, 32, 32)
    assert conv.dense_ops == 288       # 2 x 4 x 4 outputs x 1 input channel x 9 taps
    assert (conv.macs, conv.acs) == (288, 0)
    assert conv.read_bits == 1088      # 18 weights x 32 + 16 inputs x 32
    assert conv.write_bits == 1024     # 32 outputs x 32
    _approx(conv.compute_pj, 1324.8)   # 288 x 4.6
    _approx(conv.energy_pj, 1654.8)    # + (1088 + 1024) x 0.15625 = 330
    _approx(conv.ann_energy_pj, 1654.8)   # real input, T = 1: the ANN is the same layer

    t = report.totals()
    _approx(t["energy_pj"], 117.05 + 1654.8)
    _approx(report.total_pj, 1771.85)
    _approx(report.total_mj, 1771.85e-9)
    _approx(t["ann_energy_pj"], 255.4 + 1654.8)
    assert (t["macs"], t["acs"]) == (288, 12)


def test_integer_spikes_binary_conv_and_time_steps():
    """Integer (I-LIF style) spikes and a conv on binary spikes, with T = 2."""
    model = LinearThenConv()
    counts = torch.tensor([[0., 2., 3., 0.],
                           [1., 0., 0., 0.]])      # 3 of 8 non-zero, sum 6, max 3
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 0] = image[0, 0, 1, 2] = image[0, 0, 3, 3] = image[0, 0, 2, 1] = 1.0
    report = estimate(model, (counts, image), time_steps=2)

    fc = _row(report, "fc")
    assert (fc.input_kind, fc.input_bits) == ("integer", 2)   # ceil(log2(3 + 1))
    assert fc.firing_rate == 3 / 8
    assert fc.acs == 18                # sum of counts 6 x 3 outputs = (6 / 8) x 24
    assert fc.read_bits == 480 + 8 * 2
    assert fc.ann_macs == 12           # 24 / T
    _approx(fc.ann_energy_pj, 12 * 4.6 + (480 + 4 * 32 + 3 * 32) * BIT)

    conv = _row(report, "conv")
    assert (conv.input_kind, conv.input_bits, conv.firing_rate) == ("binary", 1, 0.25)
    assert conv.macs == 0
    assert conv.acs == 72              # 0.25 x 288
    assert conv.read_bits == 18 * 32 + 16
    _approx(conv.energy_pj, 72 * 0.9 + (18 * 32 + 16 + 1024) * BIT)


def test_signed_integer_input_bits():
    report = estimate(nn.Linear(2, 1), torch.tensor([[-2., 1.]]))
    r = report.layers[0]
    assert (r.input_kind, r.input_bits) == ("integer", 3)    # 2 magnitude bits + sign
    assert r.acs == 3                                         # |-2| + |1| spikes x 1 output


def test_lif_then_linear_membrane_and_rates():
    """LIF (tau 2, threshold 1, hard reset) on x [T=2, 1, 3] = [[2, 0, 2], [0, 2, 0]]:
    t=0: H = x/2 = [1, 0, 1] -> spikes [1, 0, 1]; t=1: H = [0, 1, 0] -> spikes [0, 1, 0];
    3 of 6 fire. The Linear 3 -> 2 (no bias) then sees those spikes."""
    model = nn.Sequential(snn.LIF(tau=2.0), nn.Linear(3, 2, bias=False))
    x = torch.tensor([[[2., 0., 2.]], [[0., 2., 0.]]])
    report = estimate(model, x, time_steps=2)
    lif, fc = _row(report, "0"), _row(report, "1")
    assert lif.kind == "LIF" and lif.firing_rate == 0.5
    assert lif.read_bits == 6 * 32               # membrane read, per neuron and step
    assert lif.write_bits == 6 * 32 + 6 * 1      # membrane write + binary spikes
    _approx(lif.energy_pj, (192 + 198) * BIT)
    assert (lif.macs, lif.acs, lif.ann_energy_pj) == (0, 0, 0)
    assert fc.input_kind == "binary" and fc.firing_rate == 0.5
    assert fc.dense_ops == 12 and fc.acs == 6    # 3 spikes x 2 outputs
    assert model[0].v is None                    # state reset afterwards


def test_nm_linear_counts_kept_weights():
    model = snn.NMLinear(8, 2, bias=False, n=2, m=4)
    x = torch.tensor([[1., 0., 0., 1., 0., 1., 0., 0.]])      # 3 of 8
    r = estimate(model, x).layers[0]
    assert r.kind == "NMLinear"
    assert r.dense_ops == 8            # 8 x 2 x (2 / 4)
    assert r.acs == 3                  # 3/8 x 8
    assert r.read_bits == 8 * 32 + 16 + 8   # 8 kept values + 16 mask bits + 8 input bits
    r2 = estimate(model.to_inference(), x).layers[0]           # compressed: same counts
    assert (r2.kind, r2.dense_ops, r2.acs) == ("NMLinearInference", 8, 3)
    assert r2.read_bits == 8 * 32 + 16 + 8


def test_nm_conv_counts_kept_weights():
    model = snn.NMConv2d(4, 1, 1, bias=False, n=2, m=4)
    x = torch.tensor([1., 0., 1., 0.]).reshape(1, 4, 1, 1)   # 2 of 4
    r = estimate(model, x).layers[0]
    assert r.kind == "NMConv2d"
    assert r.dense_ops == 2            # 1 output x 4 channels x 1 tap x (2 / 4)
    assert r.acs == 1                  # 0.5 x 2
    assert r.read_bits == 2 * 32 + 4 + 4    # 2 kept values + 4 mask bits + 4 input bits
    r2 = estimate(model.to_inference(), x).layers[0]
    assert (r2.kind, r2.dense_ops, r2.acs, r2.read_bits) == ("NMConv2dInference", 2, 1, 72)


class SSABlock(nn.Module):
    def __init__(self, order):
        super().__init__()
        self.order = order

    def forward(self, q, k, v):
        return spikeops.ops.ssa(q, k, v, 0.125, self.order)


def test_ssa_product_counts():
    """q, k, v [T=1, B=1, H=1, N=2, D=2] binary: q has 1 spike (rate 1/4), k 2 (1/2), v 4."""
    q = torch.tensor([[[[[1., 0.], [0., 0.]]]]])
    k = torch.tensor([[[[[1., 1.], [0., 0.]]]]])
    v = torch.ones(1, 1, 1, 2, 2)
    r = estimate(SSABlock("kv_first"), (q, k, v)).layers[0]
    assert (r.name, r.kind, r.input_kind) == ("SSABlock.ssa", "ssa", "binary")
    assert r.dense_ops == 16           # 2 N D Dv = 2 x 2 x 2 x 2
    assert r.acs == 6                  # (1/2 + 1/4) x N D Dv = 0.75 x 8
    assert r.firing_rate == 7 / 12
    assert r.read_bits == 12           # 12 binary operand elements, no weights
    assert r.write_bits == 4 * 32
    r = estimate(SSABlock("qk_first"), (q, k, v)).layers[0]
    assert r.dense_ops == 16           # N N D + N N Dv
    assert r.acs == 1 / 4 * 8 + 1 * 8

    class SDSABlock(nn.Module):
        def forward(self, q, k, v):
            return spikeops.ops.sdsa(q, k, v)

    r = estimate(SDSABlock(), (q, k, v)).layers[0]
    assert (r.name, r.kind) == ("SDSABlock.sdsa", "sdsa")
    assert r.dense_ops == 4            # N D: the token sum of k * v
    assert r.acs == 2                  # k * v has 2 non-zeros


def test_token_mixer_counts():
    """Linear attention, simple GLA, sliding-window attention and RWKV-4 on tiny inputs."""
    torch.manual_seed(0)

    class Mixers(nn.Module):
        def forward(self, q, k, v, g, kr, vr):
            ops = spikeops.ops
            ops.chunk_linear_attn(q, k, v)
            ops.chunk_simple_gla(q, k, v, g)
            ops.sliding_window_attn(q, k, v, 2)
            return ops.rwkv4_wkv(torch.zeros(4), torch.zeros(4), kr, vr)

    q, k = torch.randn(1, 4, 2, 3), torch.randn(1, 4, 2, 3)        # B 1, T 4, H 2, K 3
    v = torch.randn(1, 4, 2, 3)                                    # V 3
    g = -torch.rand(1, 4, 2)
    kr, vr = torch.randn(1, 3, 4), torch.randn(1, 3, 4)            # B 1, T 3, C 4
    rep = estimate(Mixers(), (q, k, v, g, kr, vr))
    la = _row(rep, "Mixers.chunk_linear_attn")
    assert (la.kind, la.input_kind) == ("chunk_linear_attn", "real")
    assert la.dense_ops == la.macs == 1 * 4 * 2 * 2 * 3 * 3      # 2 K V per token and head
    assert la.acs == 0
    assert la.read_bits == 3 * 24 * 32 and la.write_bits == 24 * 32
    gla = _row(rep, "Mixers.chunk_simple_gla")
    assert gla.dense_ops == 1 * 4 * 2 * 3 * 3 * 3                # gated: 3 K V
    swa = _row(rep, "Mixers.sliding_window_attn")
    assert swa.dense_ops == 2 * (1 + 2 + 2 + 2) * (3 + 3)        # H x keys seen x (D + Dv)
    rw = _row(rep, "Mixers.rwkv4_wkv")
    assert rw.dense_ops == 5 * 3 * 4                              # 5 per (token, channel)
    assert rw.read_bits == 2 * 12 * 32                            # k and v

    qs = (torch.rand(1, 4, 2, 3) < 0.5).float()
    ks = (torch.rand(1, 4, 2, 3) < 0.5).float()
    vs = (torch.rand(1, 4, 2, 3) < 0.5).float()

    class Spiking(nn.Module):
        def forward(self, q, k, v):
            return spikeops.ops.fused_recurrent_linear_attn(q, k, v)

    r = estimate(Spiking(), (qs, ks, vs)).layers[0]
    rate = float(qs.sum() + ks.sum() + vs.sum()) / 72
    assert r.input_kind == "binary" and r.macs == 0
    _approx(r.acs, rate * 144)                                    # dense 2 K V x 8 x mean |x|


def test_sparse_conv_exact_pairs():
    """Two active sites, neighbours along x, in a 1x3x3x3 grid; SubMConv3d 2 -> 3, 3x3x3:
    each site reaches itself and the other: 4 pairs. Site A features [1, 0], B [1, 1]."""
    feats = torch.tensor([[1., 0.], [1., 1.]])
    idx = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.int32)
    x = SparseTensor(feats, idx, (3, 3, 3), 1)
    layer = snn.SubMConv3d(2, 3, 3, indice_key="a")
    r = estimate(layer, x).layers[0]
    assert (r.kind, r.input_kind, r.firing_rate) == ("SubMConv3d", "binary", 0.75)
    assert r.dense_ops == 24           # 4 pairs x 2 x 3
    assert r.acs == 18                 # (1 + 2 + 1 + 2) non-zero inputs on the pairs x 3
    assert r.read_bits == (3 * 27 * 2 + 3) * 32 + 4
    assert r.write_bits == 6 * 32


def test_repeated_calls_accumulate():
    fc = nn.Linear(4, 3)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = fc

        def forward(self, x):
            return self.fc(x) + self.fc(torch.zeros_like(x))

    r = estimate(Twice(), SPIKES).layers[0]
    assert r.calls == 2
    assert r.acs == 12                 # the zeros add no accumulate
    assert r.firing_rate == 4 / 16
    assert r.read_bits == 2 * 488


def test_report_json_round_trip_and_table(tmp_path):
    report = estimate(LinearThenConv(), (SPIKES, IMAGE))
    path = tmp_path / "energy.json"
    text = report.to_json(path)
    assert path.read_text() == text
    d = json.loads(text)
    assert d["constants"]["e_mac_pj"] == 4.6 and d["constants"]["e_ac_pj"] == 0.9
    assert [row["name"] for row in d["layers"]] == ["fc", "conv"]
    assert d["totals"]["acs"] == 12
    back = EnergyReport.from_json(text)
    assert back.to_dict() == report.to_dict()
    table = str(report)
    assert table.splitlines()[0].split()[:3] == ["layer", "kind", "calls"]
    assert "fc" in table and "Conv2d" in table and "ANN equivalent" in table
    with pytest.raises(ValueError, match="not an EnergyReport"):
        EnergyReport.from_dict({"layers": []})


def test_custom_constants():
    c = EnergyConstants(e_mac_pj=1.0, e_ac_pj=0.5, e_read_bit_pj=0.0, e_write_bit_pj=0.0)
    r = estimate(LinearThenConv(), (SPIKES, IMAGE), constants=c)
    _approx(_row(r, "fc").energy_pj, 6.0)        # 12 ACs x 0.5
    _approx(_row(r, "conv").energy_pj, 288.0)    # 288 MACs x 1
    with pytest.raises(ValueError, match="e_ac_pj"):
        EnergyConstants(e_ac_pj=-1.0)
    with pytest.raises(ValueError, match="e_mac_pj"):
        EnergyConstants(e_mac_pj=math.nan)


def test_bad_input_errors():
    with pytest.raises(TypeError, match="model"):
        estimate(lambda x: x, SPIKES)
    with pytest.raises(TypeError, match="example_input"):
        estimate(nn.Linear(4, 3), [1, 2, 3])
    with pytest.raises(TypeError, match="example_input"):
        estimate(nn.Linear(4, 3), ())
    with pytest.raises(RuntimeError, match="example_input: the model failed"):
        estimate(nn.Linear(4, 3), torch.zeros(2, 5))       # wrong feature size
    with pytest.raises(ValueError, match="time_steps"):
        estimate(nn.Linear(4, 3), SPIKES, time_steps=0)
    with pytest.raises(ValueError, match="ann_bits"):
        estimate(nn.Linear(4, 3), SPIKES, ann_bits=0)
    with pytest.raises(TypeError, match="constants"):
        estimate(nn.Linear(4, 3), SPIKES, constants={"e_mac_pj": 1})


def test_hooks_removed_and_mode_restored():
    model = LinearThenConv().train()
    estimate(model, (SPIKES, IMAGE))
    assert model.training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert spikeops.ops.ssa.__name__ == "ssa"          # the attention wrappers were undone
