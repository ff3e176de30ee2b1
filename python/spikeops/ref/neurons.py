"""Pure-PyTorch references of the multi-step neurons: the test oracle and the fallback.

Written step by step exactly as SpikingJelly's multi-step neurons compute (same float
operation order), so spikes from the kernels match them bit for bit in float32.
All inputs are time-major ``x [T, *]``; state and arithmetic are float32 (float64 when
x is float64, for gradcheck); spikes are returned in x's dtype.
"""
from __future__ import annotations

import torch

from .surrogate import check_surrogate, heaviside, quantize_st


def _state_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _init(v0, x, value):
    dt = _state_dtype(x)
    if v0 is None:
        return torch.full(x.shape[1:], value, dtype=dt, device=x.device)
    return v0.to(dt)


def _charge(v, x, tau, decay_input, v_reset, k=None):
    """One charge step; `k` (a multiplicative decay) replaces 1/tau when given."""
    vr = 0.0 if v_reset is None else v_reset
    if k is None:
        if decay_input:
            return v + (x - (v - vr)) / tau if vr != 0.0 else v + (x - v) / tau
        return v - (v - vr) / tau + x if vr != 0.0 else v - v / tau + x
    if decay_input:
        return v + (x - (v - vr)) * k if vr != 0.0 else v + (x - v) * k
    return v - (v - vr) * k + x if vr != 0.0 else v - v * k + x


def _reset(h, s, v_threshold, v_reset, detach_reset):
    sd = s.detach() if detach_reset else s
    if v_reset is None:
        return h - sd * v_threshold
    return (1.0 - sd) * h + sd * v_reset


def _run(x, v0, charge, fire, v_threshold, v_reset, detach_reset, store_v_seq):
    v = _init(v0, x, 0.0 if v_reset is None else v_reset)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = charge(v, x[t].to(v.dtype))
        s, thr = fire(h)
        v = _reset(h, s, thr, v_reset, detach_reset)
        spikes.append(s)
        if store_v_seq:
            v_seq.append(v)
    out = torch.stack(spikes).to(x.dtype)
    return out, v, (torch.stack(v_seq) if store_v_seq else None)


def lif(x, v0=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
        detach_reset=False, surrogate="sigmoid", alpha=None, store_v_seq=False):
    """Multi-step LIF. Returns (spikes [T,*], v_last [*]) (+ v_seq when store_v_seq)."""
    alpha = check_surrogate(surrogate, alpha)
    def fire(h):
        return heaviside(h - v_threshold, surrogate, alpha), v_threshold
    s, v, vs = _run(x, v0, lambda v, xt: _charge(v, xt, tau, decay_input, v_reset),
                    fire, v_threshold, v_reset, detach_reset, store_v_seq)
    return (s, v, vs) if store_v_seq else (s, v)


def if_(x, v0=None, *, v_threshold=1.0, v_reset=0.0, detach_reset=False,
        surrogate="sigmoid", alpha=None, store_v_seq=False):
    """Multi-step integrate-and-fire: H = V + X."""
    alpha = check_surrogate(surrogate, alpha)
    def fire(h):
        return heaviside(h - v_threshold, surrogate, alpha), v_threshold
    s, v, vs = _run(x, v0, lambda v, xt: v + xt, fire, v_threshold, v_reset,
                    detach_reset, store_v_seq)
    return (s, v, vs) if store_v_seq else (s, v)


def plif_decay(w, x, channel_dim):
    """k = sigmoid(w), broadcast against x[t] (w is a scalar or one value per channel)."""
    k = torch.sigmoid(w.to(_state_dtype(x)))
    if k.dim() == 0:
        return k
    cd = channel_dim + x.dim() if channel_dim < 0 else channel_dim
    if not 1 <= cd < x.dim():
        raise ValueError(f"channel_dim: expected a dimension of x.shape[1:], got {channel_dim}")
    shape = [1] * (x.dim() - 1)
    shape[cd - 1] = -1
    return k.view(shape)


def plif(x, w, v0=None, *, channel_dim=2, decay_input=True, v_threshold=1.0, v_reset=0.0,
         detach_reset=False, surrogate="sigmoid", alpha=None, store_v_seq=False):
    """Multi-step parametric LIF (Fang et al.): decay k = sigmoid(w), w scalar or [C]."""
    alpha = check_surrogate(surrogate, alpha)
    k = plif_decay(w, x, channel_dim)

    def fire(h):
        return heaviside(h - v_threshold, surrogate, alpha), v_threshold
    s, v, vs = _run(x, v0, lambda v, xt: _charge(v, xt, None, decay_input, v_reset, k),
                    fire, v_threshold, v_reset, detach_reset, store_v_seq)
    return (s, v, vs) if store_v_seq else (s, v)


def ilif(x, v0=None, *, tau=2.0, decay_input=True, v_threshold=1.0, max_level=4,
         rounding="half_even", detach_reset=True, store_v_seq=False):
    """Integer LIF (SpikeYOLO): S = round(clamp(H / Vth, 0, D)), soft reset V = H - S Vth."""
    half_up = rounding == "half_up"

    def fire(h):
        return quantize_st(h / v_threshold, max_level, half_up), v_threshold
    s, v, vs = _run(x, v0, lambda v, xt: _charge(v, xt, tau, decay_input, None), fire,
                    v_threshold, None, detach_reset, store_v_seq)
    return (s, v, vs) if store_v_seq else (s, v)


def alif(x, v0=None, a0=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
         tau_adapt=20.0, beta=0.1, detach_reset=False, surrogate="sigmoid", alpha=None,
         store_v_seq=False):
    """Adaptive-threshold LIF: threshold Vth + beta A, with A = A - A / tau_adapt + S.

    Returns (spikes, v_last, a_last) (+ v_seq when store_v_seq).
    """
    alpha = check_surrogate(surrogate, alpha)
    v = _init(v0, x, 0.0 if v_reset is None else v_reset)
    a = _init(a0, x, 0.0)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = _charge(v, x[t].to(v.dtype), tau, decay_input, v_reset)
        thr = v_threshold + beta * a
        s = heaviside(h - thr, surrogate, alpha)
        v = _reset(h, s, thr, v_reset, detach_reset)
        a = a - a / tau_adapt + s
        spikes.append(s)
        if store_v_seq:
            v_seq.append(v)
    out = torch.stack(spikes).to(x.dtype)
    if store_v_seq:
        return out, v, a, torch.stack(v_seq)
    return out, v, a


def expand_integer_spikes(spikes: torch.Tensor, max_level: int) -> torch.Tensor:
    """[T, *] integer spikes in 0..D -> [T * D, *] binary spikes (D virtual steps each).

    Virtual step d of step t fires when spikes[t] > d, so the D binary steps sum to the
    integer spike: multiply-free, spike-driven inference of an ILIF layer.
    """
    levels = torch.arange(max_level, device=spikes.device).view(
        1, max_level, *([1] * (spikes.dim() - 1)))
    binary = (spikes.unsqueeze(1) > levels).to(spikes.dtype)
    return binary.reshape(spikes.shape[0] * max_level, *spikes.shape[1:])
