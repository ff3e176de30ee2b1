"""STEP-style energy estimate of a (spiking) network from one forward pass.

    report = spikeops.energy.estimate(model, example_input, time_steps=4)
    print(report)                      # per-layer table and totals
    report.to_json("energy.json")      # or report.to_dict()

The model runs once under ``torch.no_grad()`` with forward hooks on its compute layers; each
layer's input is measured (firing rate, value kind, bit width) and the layer's operations and
memory traffic are counted. The model follows the unified analytical model of STEP (Shen et
al., "STEP: A Unified Spiking Transformer Evaluation Platform for Fair and Reproducible
Benchmarking", arXiv:2505.11151, 2025) in its structure — computation that depends on spike
sparsity and operand kind, plus memory access that depends on bit widths — with the per-
operation figures of Horowitz (ISSCC 2014) for 45 nm, as used by Spikformer (Zhou et al.,
ICLR 2023) and the Spike-driven Transformers (Yao et al., NeurIPS 2023, ICLR 2024). STEP's own
coefficients are not copied; every constant below is a field of :class:`EnergyConstants`, so a
study can substitute its own.

**Constants** (:class:`EnergyConstants`; Horowitz, "Computing's energy problem (and what we
can do about it)", ISSCC 2014, 45 nm, 0.9 V):

- ``e_mac_pj = 4.6``: one 32-bit float multiply (3.7 pJ) plus add (0.9 pJ);
- ``e_ac_pj = 0.9``: one 32-bit float add (an accumulate driven by a spike);
- ``e_read_bit_pj = e_write_bit_pj = 10 / 64 = 0.15625``: a 64-bit access of an 8 KB SRAM
  costs 10 pJ, charged per bit moved (local on-chip buffers; DRAM is not modelled).

**Per compute layer** (``nn.Linear``, ``nn.Conv1d/2d/3d``, spikeops' ``NMLinear``,
``NMConv2d``, ``NMLinearInference``, ``NMConv2dInference``, the sparse convolutions, and the
attention products of ``ops.ssa`` / ``ops.ssa_lif`` / ``ops.sdsa``), summed over every call:

- ``dense_ops`` — the multiply-accumulates of the dense layer (bias adds not counted):
  Linear ``numel(x) * out_features``; ConvNd ``numel(y) * in_channels / groups * prod(k)``
  (padding positions included, the usual FLOPs convention); N:M layers multiply these by
  ``n / m`` (only kept weights exist); sparse conv ``pairs * Cin * Cout`` with ``pairs`` the
  (input site, output site, offset) entries of its kernel map; SSA ``2 N D Dv`` per
  (T, B, head) for ``kv_first`` (``N N D + N N Dv`` for ``qk_first``); SDSA ``N D`` (the sum
  over tokens of ``k * v``; the gating of q by spikes is a mask, not counted).
  Token mixers (each call of the op): linear attention ``2 K V`` per token and q head (the
  recurrent form's state update ``k^T v`` and read-out ``q S``; the chunk form gives the same
  result), gated forms (GLA, simple GLA with g or g_gamma) ``3 K V`` (plus the decay of the
  state); sliding-window attention ``(D + Dv)`` per (query, key in its window) (the softmax's
  exponentials are not counted); RWKV-4 WKV 5 per (token, channel) (the products and the
  division of the stable recurrence; exponentials not counted). Their inputs are q, k, v
  (k, v for RWKV); spikes among them give ACs scaled by the mean ``|x|`` over all of them.
- the input kind: ``binary`` (values 0/1), ``integer`` (whole numbers, e.g. I-LIF counts
  0..D) or ``real``. Binary and integer inputs are spikes: ``ACs = s * dense_ops`` with ``s``
  the mean of ``|x|`` (spikes per input element; equal to the firing rate for binary input;
  an integer spike of value n is n accumulates, SpikeYOLO's virtual time steps), ``MACs = 0``.
  Real-valued input (e.g. the first, encoding layer) gives ``MACs = dense_ops``, ``ACs = 0``.
  SSA: ``ACs`` of each product scale with the firing rate of the spike operand that selects
  (``k`` for ``k^T v`` and ``q`` for ``q (k^T v)``; ``q`` for ``q k^T`` and ``v`` for
  ``(q k^T) v``); SDSA: ``ACs = nnz(k * v)``. Sparse conv:
  ``ACs = sum over map pairs of |x_row|_1 * Cout`` (exact).
- ``firing_rate`` = fraction of non-zero input elements (reported for every kind).
- bit widths: input ``1`` for binary, ``ceil(log2(max|x| + 1))`` (+1 if negative values
  occur) for integer, the dtype's width for real; weights and outputs: their dtype's width.
- memory: ``read_bits = weight_bits * numel(W) (+ bias) + input_bits * numel(x)`` (weights
  read once per call; N:M weights: kept values plus one mask bit per dense weight);
  ``write_bits = output_bits * numel(y)``; the ``ssa_lif`` rows add the attention LIF's
  membrane, ``32 * numel(y)`` bits read and as many written. N:M layers' ACs assume the
  spikes meet kept and pruned weights alike (``s * dense_ops``, an expectation).
- ``compute_pj = MACs * e_mac_pj + ACs * e_ac_pj``;
  ``memory_pj = read_bits * e_read_bit_pj + write_bits * e_write_bit_pj``;
  ``energy_pj = compute_pj + memory_pj``.

**Per spiking neuron module** (spikeops ``LIF``, ``IF``, ``PLIF``, ``ILIF``, ``ALIF`` and
their SpikingJelly-named aliases): no arithmetic is counted (the Spikformer / SDT convention
counts synaptic operations only); the membrane is read and written once per neuron and time
step, ``read_bits = write_bits = states * 32 * numel(x)`` (``states = 2`` for ALIF's membrane
and adaptation trace, else 1; float32 state), and the output spikes are written,
``+ spike_bits * numel(s)``. The ``fire`` column of a neuron row is its *output* firing rate.
Neuron states are reset (``spikeops.nn.reset_net``) before and after the run, and the model
runs in ``eval()`` mode (its training flag is restored).

**ANN equivalent** (``ann_*`` columns): the same layers as a non-spiking network of
``ann_bits``-bit activations (default 32) run once instead of ``time_steps`` times:
``ann_macs = dense_ops / time_steps`` (every operation a MAC), activations read and written at
``ann_bits`` over ``1 / time_steps`` of the elements, weights read as above; neuron rows cost
nothing in the ANN.

``time_steps`` only scales the ANN columns: the SNN counts already include every time step,
because the hooks see all T steps (multi-step modules fold T into the batch; single-step
modules are called T times).

Not counted: normalisation, pooling, residual adds, softmax, the scans of the linear-attention,
GLA, RWKV and sliding-window token mixers (their projections are Linear layers and are counted),
and data movement beyond the local SRAM.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

__all__ = ["EnergyConstants", "LayerEnergy", "EnergyReport", "estimate"]


@dataclass(frozen=True)
class EnergyConstants:
    """Per-operation and per-bit energies in picojoules (defaults: Horowitz, ISSCC 2014, 45 nm)."""

    e_mac_pj: float = 4.6          # 32-bit float multiply 3.7 pJ + add 0.9 pJ
    e_ac_pj: float = 0.9           # 32-bit float add
    e_read_bit_pj: float = 10.0 / 64   # 8 KB SRAM: 10 pJ per 64-bit access
    e_write_bit_pj: float = 10.0 / 64

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise ValueError(f"EnergyConstants.{f.name}: expected a finite number >= 0, "
                                 f"got {v!r}")


@dataclass
class LayerEnergy:
    """One row of the report: a compute layer, an attention product or a neuron module."""

    name: str
    kind: str
    calls: int = 0
    input_kind: str = "-"          # binary / integer / real / "-" (neurons)
    firing_rate: float = 0.0       # fraction of non-zero input elements
    input_bits: int = 0
    weight_bits: int = 0
    output_bits: int = 0
    dense_ops: float = 0.0
    macs: float = 0.0
    acs: float = 0.0
    read_bits: float = 0.0
    write_bits: float = 0.0
    compute_pj: float = 0.0
    memory_pj: float = 0.0
    energy_pj: float = 0.0
    ann_macs: float = 0.0
    ann_energy_pj: float = 0.0
    # running sums for the firing rate over calls (not exported)
    _nonzero: float = field(default=0.0, repr=False)
    _elements: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


_COLUMNS = [  # (header, attribute, format)
    ("layer", "name", "s"), ("kind", "kind", "s"), ("calls", "calls", "d"),
    ("input", "input_kind", "s"), ("fire", "firing_rate", ".3f"), ("bits in/w/out", None, "s"),
    ("MACs", "macs", ".4g"), ("ACs", "acs", ".4g"), ("read b", "read_bits", ".4g"),
    ("write b", "write_bits", ".4g"), ("E (pJ)", "energy_pj", ".4g"),
    ("ANN MACs", "ann_macs", ".4g"), ("ANN E (pJ)", "ann_energy_pj", ".4g"),
]


@dataclass
class EnergyReport:
    """Per-layer rows and totals of :func:`estimate` (energies in picojoules)."""

    layers: list[LayerEnergy]
    constants: EnergyConstants
    time_steps: int = 1
    ann_bits: int = 32

    @property
    def total_pj(self) -> float:
        return sum(r.energy_pj for r in self.layers)

    @property
    def total_mj(self) -> float:
        return self.total_pj * 1e-9

    @property
    def ann_total_pj(self) -> float:
        return sum(r.ann_energy_pj for r in self.layers)

    def totals(self) -> dict:
        keys = ("dense_ops", "macs", "acs", "read_bits", "write_bits", "compute_pj",
                "memory_pj", "energy_pj", "ann_macs", "ann_energy_pj")
        out = {k: sum(getattr(r, k) for r in self.layers) for k in keys}
        out["snn_over_ann"] = (out["energy_pj"] / out["ann_energy_pj"]
                               if out["ann_energy_pj"] else None)
        return out

    def to_dict(self) -> dict:
        return {"time_steps": self.time_steps, "ann_bits": self.ann_bits,
                "constants": asdict(self.constants),
                "layers": [r.to_dict() for r in self.layers], "totals": self.totals()}

    def to_json(self, path=None, **kwargs) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyReport":
        """Inverse of :meth:`to_dict` (the totals are recomputed from the rows)."""
        try:
            rows = [LayerEnergy(**r) for r in d["layers"]]
            return cls(rows, EnergyConstants(**d["constants"]), int(d["time_steps"]),
                       int(d["ann_bits"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"d: not an EnergyReport dictionary ({err})") from None

    @classmethod
    def from_json(cls, text: str) -> "EnergyReport":
        return cls.from_dict(json.loads(text))

    def table(self) -> str:
        """A plain-text table: one line per row, then the totals."""
        def cell(r, attr, fmt):
            if attr is None:
                return f"{r.input_bits}/{r.weight_bits}/{r.output_bits}"
            return format(getattr(r, attr), fmt)

        body = [[h for h, _, _ in _COLUMNS]]
        body += [[cell(r, a, f) for _, a, f in _COLUMNS] for r in self.layers]
        widths = [max(len(row[i]) for row in body) for i in range(len(_COLUMNS))]
        lines = []
        for j, row in enumerate(body):
            lines.append("  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))))
            if j == 0:
                lines.append("-" * len(lines[0]))
        t = self.totals()
        ratio = "n/a" if t["snn_over_ann"] is None else f"{t['snn_over_ann']:.3f}"
        lines.append("-" * len(lines[0]))
        lines.append(f"total: {t['energy_pj'] * 1e-9:.6g} mJ (compute {t['compute_pj']:.4g} pJ, "
                     f"memory {t['memory_pj']:.4g} pJ; {t['macs']:.4g} MACs, {t['acs']:.4g} ACs)"
                     f"; ANN equivalent {t['ann_energy_pj'] * 1e-9:.6g} mJ; SNN / ANN = {ratio}")
        lines.append(f"45 nm: E_MAC {self.constants.e_mac_pj} pJ, E_AC {self.constants.e_ac_pj} "
                     f"pJ, SRAM {self.constants.e_read_bit_pj:.5g} / "
                     f"{self.constants.e_write_bit_pj:.5g} pJ per bit read / written; "
                     f"T = {self.time_steps}, ANN activations {self.ann_bits} bit")
        return "\n".join(lines)

    __str__ = table

    def print_table(self, file=None) -> None:
        print(self.table(), file=file)


# ---- measurement ---------------------------------------------------------------------------

def _dtype_bits(t: torch.Tensor) -> int:
    return 1 if t.dtype == torch.bool else t.element_size() * 8


@dataclass
class _InputStats:
    kind: str          # binary / integer / real
    bits: int
    nonzero: float
    elements: int
    abs_sum: float

    @property
    def mean_abs(self) -> float:
        return self.abs_sum / self.elements if self.elements else 0.0


def _input_stats(x: torch.Tensor) -> _InputStats:
    x = x.detach()
    n = x.numel()
    nonzero = float(torch.count_nonzero(x)) if n else 0.0
    if x.dtype == torch.bool:
        return _InputStats("binary", 1, nonzero, n, nonzero)
    xf = x.double() if x.is_floating_point() else x.to(torch.float64)
    finite = bool(torch.isfinite(xf).all()) if n else True
    integral = finite and bool((xf == xf.round()).all()) if n else True
    abs_sum = float(xf.abs().sum()) if n else 0.0
    if integral:
        lo = float(xf.min()) if n else 0.0
        hi = float(xf.abs().max()) if n else 0.0
        if lo >= 0 and hi <= 1:
            return _InputStats("binary", 1, nonzero, n, abs_sum)
        bits = math.ceil(math.log2(hi + 1)) + (1 if lo < 0 else 0)
        return _InputStats("integer", bits, nonzero, n, abs_sum)
    return _InputStats("real", _dtype_bits(x), nonzero, n, abs_sum)


class _Counter:
    def __init__(self, constants: EnergyConstants, time_steps: int, ann_bits: int):
        self.c, self.T, self.ann_bits = constants, time_steps, ann_bits
        self.rows: dict[str, LayerEnergy] = {}

    def row(self, name: str, kind: str) -> LayerEnergy:
        if name not in self.rows:
            self.rows[name] = LayerEnergy(name=name, kind=kind)
        return self.rows[name]

    def add_compute(self, name, kind, x_stats: _InputStats, dense_ops: float, acs_spike: float,
                    weight_elems: float, weight_bits: int, out: torch.Tensor,
                    extra_read_bits: float = 0.0, extra_write_bits: float = 0.0):
        """One call of a compute layer. ``acs_spike``: the ACs if the input is spikes."""
        r = self.row(name, kind)
        r.calls += 1
        spikes = x_stats.kind in ("binary", "integer")
        macs, acs = (0.0, acs_spike) if spikes else (float(dense_ops), 0.0)
        out_bits = _dtype_bits(out)
        read = weight_elems * weight_bits + x_stats.elements * x_stats.bits + extra_read_bits
        write = out.numel() * out_bits + extra_write_bits
        r.input_kind = _merge_kind(r.input_kind if r.calls > 1 else None, x_stats.kind)
        r.input_bits = max(r.input_bits, x_stats.bits)
        r.weight_bits = max(r.weight_bits, weight_bits)
        r.output_bits = max(r.output_bits, out_bits)
        r._nonzero += x_stats.nonzero
        r._elements += x_stats.elements
        r.firing_rate = r._nonzero / r._elements if r._elements else 0.0
        r.dense_ops += dense_ops
        r.macs += macs
        r.acs += acs
        r.read_bits += read
        r.write_bits += write
        compute = macs * self.c.e_mac_pj + acs * self.c.e_ac_pj
        memory = read * self.c.e_read_bit_pj + write * self.c.e_write_bit_pj
        r.compute_pj += compute
        r.memory_pj += memory
        r.energy_pj += compute + memory
        ann_macs = dense_ops / self.T
        ann_read = weight_elems * weight_bits + x_stats.elements / self.T * self.ann_bits
        ann_write = out.numel() / self.T * self.ann_bits
        r.ann_macs += ann_macs
        r.ann_energy_pj += (ann_macs * self.c.e_mac_pj + ann_read * self.c.e_read_bit_pj
                            + ann_write * self.c.e_write_bit_pj)

    def add_neuron(self, name, kind, x: torch.Tensor, spikes: torch.Tensor, states: int):
        r = self.row(name, kind)
        r.calls += 1
        s_stats = _input_stats(spikes)
        membrane = states * 32 * x.numel()
        r.output_bits = max(r.output_bits, s_stats.bits)
        r._nonzero += s_stats.nonzero
        r._elements += s_stats.elements
        r.firing_rate = r._nonzero / r._elements if r._elements else 0.0
        r.read_bits += membrane
        write = membrane + spikes.numel() * s_stats.bits
        r.write_bits += write
        memory = membrane * self.c.e_read_bit_pj + write * self.c.e_write_bit_pj
        r.memory_pj += memory
        r.energy_pj += memory


def _merge_kind(old, new):
    if old is None or old == "-" or old == new:
        return new
    order = ["binary", "integer", "real"]
    return order[max(order.index(old), order.index(new))]


def _merge_stats(stats: list) -> "_InputStats":
    """The operands of one op as one input: the widest kind and bit width, summed counts."""
    kind = stats[0].kind
    for st in stats[1:]:
        kind = _merge_kind(kind, st.kind)
    return _InputStats(kind, max(st.bits for st in stats), sum(st.nonzero for st in stats),
                       sum(st.elements for st in stats), sum(st.abs_sum for st in stats))


def _first_tensor(args, name):
    if not args or not isinstance(args[0], torch.Tensor):
        raise TypeError(f"{name}: expected a tensor input, got "
                        f"{type(args[0]).__name__ if args else 'nothing'}")
    return args[0]


def _nm_fraction(module) -> float:
    n, m = getattr(module, "n", None), getattr(module, "m", None)
    return n / m if isinstance(n, int) and isinstance(m, int) and m else 1.0


def _compute_hook(counter: _Counter, name: str):
    from .nn.nm import NMConv2dInference, NMLinearInference, _NMMixin
    from .nn.sparse_conv import SparseConvolution
    from .sparse import SparseTensor

    def hook(module, args, out):
        kind = type(module).__name__
        if isinstance(module, SparseConvolution):
            x = args[0]
            if not isinstance(x, SparseTensor):
                return
            feats = x.features.detach()
            _, _, nbmap, _ = module._map(x)
            valid = nbmap >= 0
            pairs = int(valid.sum())
            cin, cout = module.in_channels, module.out_channels
            row_abs = feats.double().abs().sum(dim=1)                   # |x_row|_1
            acs = float(row_abs[nbmap[valid].long()].sum()) * cout
            w = module.weight
            wel = w.numel() + (module.bias.numel() if module.bias is not None else 0)
            counter.add_compute(name, kind, _input_stats(feats), float(pairs * cin * cout), acs,
                                wel, _dtype_bits(w), out.features)
            return
        x = _first_tensor(args, name)
        stats = _input_stats(x)
        if isinstance(module, (nn.Linear, NMLinearInference)):
            frac = _nm_fraction(module) if isinstance(module, (_NMMixin, NMLinearInference)) \
                else 1.0
            out_f = module.out_features
            dense = x.numel() * out_f * frac
        elif isinstance(module, nn.modules.conv._ConvNd) or isinstance(module, NMConv2dInference):
            if isinstance(module, NMConv2dInference):
                k, cin_g = math.prod(module.kernel_size), module.in_channels
            else:
                k, cin_g = math.prod(module.kernel_size), module.in_channels // module.groups
            frac = _nm_fraction(module) if isinstance(module, (_NMMixin, NMConv2dInference)) \
                else 1.0
            dense = out.numel() * cin_g * k * frac
        else:  # pragma: no cover - only registered on the classes above
            return
        acs = stats.mean_abs * dense
        if isinstance(module, (NMLinearInference, NMConv2dInference)):
            # kept values plus one mask bit per dense weight
            dense_w = module.values.shape[0] * module.values.shape[1] * module.m // module.n
            wel_bits = module.values.numel() * _dtype_bits(module.values) + dense_w
            wbits = _dtype_bits(module.values)
            bias = getattr(module, "bias", None)
            if bias is not None:
                wel_bits += bias.numel() * _dtype_bits(bias)
            counter.add_compute(name, kind, stats, float(dense), acs, wel_bits / wbits, wbits, out)
            return
        w = module.weight
        wbits = _dtype_bits(w)
        bias = getattr(module, "bias", None)
        if isinstance(module, _NMMixin):
            kept = w.numel() * module.n // module.m
            wel = kept + w.numel() / wbits + (bias.numel() if bias is not None else 0)
        else:
            wel = w.numel() + (bias.numel() if bias is not None else 0)
        counter.add_compute(name, kind, stats, float(dense), acs, wel, wbits, out)

    return hook


def _neuron_hook(counter: _Counter, name: str):
    from .nn.neurons import ALIF

    def hook(module, args, out):
        x = _first_tensor(args, name)
        s = out[0] if isinstance(out, (tuple, list)) else out
        counter.add_neuron(name, type(module).__name__, x, s, 2 if isinstance(module, ALIF) else 1)
    return hook


class _AttentionPatch:
    """Wraps the attention and token-mixer ops (``ops.ssa`` / ``ssa_lif`` / ``sdsa``, the
    linear-attention / GLA scans, ``rwkv4_wkv``, ``sliding_window_attn``) while estimating,
    attributing each call to the innermost running module (tracked by forward pre-hooks)."""

    SCANS = ("chunk_linear_attn", "fused_recurrent_linear_attn", "chunk_simple_gla",
             "fused_recurrent_simple_gla", "chunk_gla", "fused_recurrent_gla")
    NAMES = ("ssa", "ssa_lif", "sdsa", "rwkv4_wkv", "sliding_window_attn") + SCANS

    def __init__(self, counter: _Counter, stack: list):
        self.counter, self.stack = counter, stack
        self.saved = {}

    def __enter__(self):
        from . import ops
        for op in self.NAMES:
            self.saved[op] = getattr(ops, op)
            setattr(ops, op, self._wrap(op, self.saved[op]))
        return self

    def __exit__(self, *exc):
        from . import ops
        for op, fn in self.saved.items():
            setattr(ops, op, fn)
        return False

    def _wrap(self, op, fn):
        def wrapper(q, k, v, *args, **kwargs):
            out = fn(q, k, v, *args, **kwargs)
            owner = self.stack[-1] if self.stack else "ops"
            self._count(f"{owner}.{op}" if owner else op, op, q, k, v, args, kwargs, out)
            return out
        return wrapper

    def _count(self, name, op, q, k, v, args, kwargs, out):
        if op in self.SCANS or op in ("rwkv4_wkv", "sliding_window_attn"):
            return self._count_mixer(name, op, q, k, v, args, kwargs, out)
        N, D, Dv = q.shape[-2], q.shape[-1], v.shape[-1]
        groups = q.numel() // (N * D)
        sq, sk, sv = _input_stats(q), _input_stats(k), _input_stats(v)
        stats = _merge_stats([sq, sk, sv])
        extra_r = extra_w = 0.0
        if op == "sdsa":
            dense = groups * N * D
            acs = float(torch.count_nonzero(k.detach() * v.detach()))
        else:
            order = kwargs.get("order", args[1] if len(args) > 1 else "kv_first")
            if order == "qk_first":
                dense = groups * (N * N * D + N * N * Dv)
                acs = groups * (sq.mean_abs * N * N * D + sv.mean_abs * N * N * Dv)
            else:
                dense = groups * 2 * N * D * Dv
                acs = groups * (sk.mean_abs + sq.mean_abs) * N * D * Dv
            if op == "ssa_lif":       # the attention LIF's membrane, per element and step
                extra_r = extra_w = 32 * out.numel()
        self.counter.add_compute(name, op, stats, float(dense), float(acs), 0, 0, out,
                                 extra_r, extra_w)


    def _count_mixer(self, name, op, a, b, c, args, kwargs, out):
        if op == "rwkv4_wkv":           # (time_decay, time_first, k, v): k, v [B, T, C]
            k, v = c, kwargs.get("v", args[0] if args else None)
            x = [k, v]
            dense = _RWKV_OPS * k.numel()
        elif op == "sliding_window_attn":   # q, k [B, T, H, D], v [B, T, H, Dv]
            q, k, v = a, b, c
            window = int(kwargs.get("window", args[0] if args else 1))
            B, T, H, D = q.shape
            keys = sum(min(t + 1, window) for t in range(T))  # keys each query sees
            dense = B * H * keys * (D + v.shape[-1])
            x = [q, k, v]
        else:                           # q, k [B, T, Hq|Hkv, K], v [B, T, Hkv, V]
            q, k, v = a, b, c
            g = kwargs.get("g", args[0] if args else None)
            g_gamma = kwargs.get("g_gamma", args[1] if len(args) > 1 else None)
            gated = op in ("chunk_gla", "fused_recurrent_gla") or (
                op.endswith("simple_gla") and (g is not None or g_gamma is not None))
            B, T, Hq, K = q.shape
            per_token = (3 if gated else 2) * K * v.shape[-1]
            dense = B * T * Hq * per_token
            x = [q, k, v]
        merged = _merge_stats([_input_stats(t) for t in x])
        acs = merged.mean_abs * dense
        o = out[0] if isinstance(out, (tuple, list)) else out
        self.counter.add_compute(name, op, merged, float(dense), float(acs), 0, 0, o)


# RWKV-4 WKV per (b, t, c): e^{u+k} v, the decay of the numerator and the denominator, e^k v,
# and the division: 5 multiply-accumulates (the exponentials are not counted).
_RWKV_OPS = 5


def _push(stack, name):
    def hook(module, args):
        stack.append(name)          # returns None: the input is left as it is
    return hook


def _pop(stack):
    def hook(module, args, out):
        stack.pop()                 # returns None: the output is left as it is
    return hook


def estimate(model: nn.Module, example_input: Any, *, time_steps: int = 1,
             constants: EnergyConstants | None = None, ann_bits: int = 32) -> EnergyReport:
    """Run ``model(example_input)`` once (no grad) and estimate its energy (see the module
    docstring for every formula and constant).

    Args:
        model: an ``nn.Module``.
        example_input: a tensor, a :class:`spikeops.sparse.SparseTensor`, or a tuple of
            positional arguments for ``model``.
        time_steps: T of the spiking model, used for the ANN-equivalent columns (>= 1).
        constants: per-operation energies (default: 45 nm, Horowitz 2014).
        ann_bits: activation width of the ANN equivalent.
    Returns:
        An :class:`EnergyReport`, one row per compute layer / attention product / neuron
        module that ran, in the order they first ran.
    """
    from .nn.neurons import _Neuron, reset_net
    from .nn.nm import NMConv2dInference, NMLinearInference
    from .nn.sparse_conv import SparseConvolution
    from .sparse import SparseTensor

    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"time_steps: expected an int >= 1, got {time_steps!r}")
    if isinstance(ann_bits, bool) or not isinstance(ann_bits, int) or ann_bits < 1:
        raise ValueError(f"ann_bits: expected an int >= 1, got {ann_bits!r}")
    if constants is None:
        constants = EnergyConstants()
    elif not isinstance(constants, EnergyConstants):
        raise TypeError(f"constants: expected an EnergyConstants, got {type(constants).__name__}")
    if isinstance(example_input, (torch.Tensor, SparseTensor)):
        args = (example_input,)
    elif isinstance(example_input, tuple) and example_input:
        args = example_input
    else:
        raise TypeError("example_input: expected a tensor, a SparseTensor or a non-empty tuple "
                        f"of the model's positional arguments, got {type(example_input).__name__}")

    counter = _Counter(constants, time_steps, ann_bits)
    stack: list[str] = []
    compute_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, NMLinearInference,
                     NMConv2dInference, SparseConvolution)
    handles = []
    for name, mod in model.named_modules():
        name = name or type(mod).__name__
        handles.append(mod.register_forward_pre_hook(_push(stack, name)))
        if isinstance(mod, compute_types):
            handles.append(mod.register_forward_hook(_compute_hook(counter, name)))
        elif isinstance(mod, _Neuron):
            handles.append(mod.register_forward_hook(_neuron_hook(counter, name)))
        handles.append(mod.register_forward_hook(_pop(stack)))
    was_training = model.training
    try:
        model.eval()
        reset_net(model)
        with torch.no_grad(), _AttentionPatch(counter, stack):
            try:
                model(*args)
            except Exception as err:
                msg = f"example_input: the model failed on it ({type(err).__name__}: {err})"
                try:
                    new = type(err)(msg)
                except Exception:
                    new = RuntimeError(msg)
                raise new from err
    finally:
        for h in handles:
            h.remove()
        reset_net(model)
        model.train(was_training)
    return EnergyReport(list(counter.rows.values()), constants, time_steps, ann_bits)
