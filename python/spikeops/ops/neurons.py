"""Fused multi-step spiking neurons: one kernel for all T steps forward, one for BPTT.

Every function takes time-major ``x [T, *]`` (float32, bfloat16 or float16; any trailing
shape), runs state and arithmetic in float32, and returns spikes in x's dtype plus the
final membrane ``v_last [*]`` (float32), so a stateful caller can feed it back as ``v0``
and get the same result chunk by chunk as in one call. Argument names follow
SpikingJelly. Backward recomputes the forward instead of saving it, so only x and v0 are
kept for it. ``store_v_seq=True`` also returns the membrane after reset at every step
``v_seq [T, *]`` (float32, not differentiable).

The wrappers call ``torch.ops.spikeops.<op>.default``; their fake implementations and
autograd formulas are registered below, so they run inside ``torch.compile(fullgraph=True)``.
"""
from __future__ import annotations

import math
import struct

import torch

from .. import _extension
from ..ref import neurons as ref
from ..ref.surrogate import check_surrogate


def _dense(x):
    """An uninitialised contiguous tensor like x: what the kernels return for any input
    layout (they compute on x.contiguous()), so fake and real strides agree."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_ROUNDINGS = ("half_even", "half_up")

__all__ = ["lif", "if_", "plif", "ilif", "alif"]


# ---- argument checks (run eagerly and while tracing, on real or fake tensors) ----

def _check_x(x):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x: expected float32, bfloat16 or float16, got {x.dtype} "
                        "(spikeops.ref.neurons runs float64)")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x: expected a time-major tensor [T, *] with T >= 1, got shape "
                         f"{tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x: empty tensor of shape {tuple(x.shape)}")
    if not x.is_contiguous():
        raise ValueError("x: expected a contiguous tensor (call .contiguous(); channels-last "
                         "and strided views are not accepted)")


def _check_state(s, x, name):
    if s is None:
        return
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(s).__name__}")
    if s.device != x.device:
        raise ValueError(f"{name}: expected device {x.device}, got {s.device}")
    if s.dtype != torch.float32:
        raise TypeError(f"{name}: expected float32 state, got {s.dtype}")
    if tuple(s.shape) != tuple(x.shape[1:]):
        raise ValueError(f"{name}: expected shape {tuple(x.shape[1:])} (x.shape[1:]), got "
                         f"{tuple(s.shape)}")
    if not s.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor")


def _check_tau(tau, name="tau"):
    tau = float(tau)
    if not (finite_f32(tau) and tau > 1.0):
        raise ValueError(f"{name}: expected a finite value > 1, got {tau}")
    return tau


def finite_f32(value: float) -> bool:
    """Whether ``value`` stays finite as float32, the precision the kernels use."""
    try:
        return math.isfinite(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return False


def _check_finite(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    value = float(value)
    if not finite_f32(value):
        raise ValueError(f"{name}: expected a finite float32 number, got {value}")
    return value


def _native():
    return _extension.use_native()   # False: no extension, or spikeops.use_reference()


# ---- public functions ------------------------------------------------------------

def lif(x, v0=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
        detach_reset=False, surrogate="sigmoid", alpha=None, store_v_seq=False):
    """Leaky integrate-and-fire over all T steps.

    Charge ``H = V + (X - (V - V_reset)) / tau`` (``decay_input``) or
    ``H = V - (V - V_reset) / tau + X``; fire ``S = [H >= v_threshold]``; hard reset
    ``V = (1 - S) H + S V_reset`` or, with ``v_reset=None``, soft reset ``V = H - S v_threshold``.

    Args:
        x: ``[T, *]`` input current. v0: ``[*]`` float32 initial membrane (default V_reset,
        or 0 for a soft reset). surrogate / alpha: the surrogate gradient (see
        ``spikeops.ref.surrogate.SURROGATES``). detach_reset: no gradient through the reset.
    Returns:
        ``(spikes [T, *] in x.dtype, v_last [*] float32)`` (+ ``v_seq`` if store_v_seq).
    """
    alpha = check_surrogate(surrogate, alpha)
    _check_x(x)
    _check_state(v0, x, "v0")
    tau = _check_tau(tau)
    v_threshold = _check_finite(v_threshold, "v_threshold")
    v_reset = _check_finite(v_reset, "v_reset", allow_none=True)
    if not _native():
        return ref.lif(x, v0, tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                       v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate,
                       alpha=alpha, store_v_seq=store_v_seq)
    s, v, vs = torch.ops.spikeops.lif_fwd.default(
        x, v0, tau, bool(decay_input), v_threshold, v_reset, surrogate, alpha,
        bool(detach_reset), bool(store_v_seq))
    return (s, v, vs) if store_v_seq else (s, v)


def if_(x, v0=None, *, v_threshold=1.0, v_reset=0.0, detach_reset=False,
        surrogate="sigmoid", alpha=None, store_v_seq=False):
    """Integrate-and-fire (no leak): ``H = V + X``; fire and reset as in :func:`lif`."""
    alpha = check_surrogate(surrogate, alpha)
    _check_x(x)
    _check_state(v0, x, "v0")
    v_threshold = _check_finite(v_threshold, "v_threshold")
    v_reset = _check_finite(v_reset, "v_reset", allow_none=True)
    if not _native():
        return ref.if_(x, v0, v_threshold=v_threshold, v_reset=v_reset,
                       detach_reset=detach_reset, surrogate=surrogate, alpha=alpha,
                       store_v_seq=store_v_seq)
    s, v, vs = torch.ops.spikeops.if_fwd.default(
        x, v0, v_threshold, v_reset, surrogate, alpha, bool(detach_reset), bool(store_v_seq))
    return (s, v, vs) if store_v_seq else (s, v)


def plif(x, w, v0=None, *, channel_dim=2, decay_input=True, v_threshold=1.0, v_reset=0.0,
         detach_reset=False, surrogate="sigmoid", alpha=None, store_v_seq=False):
    """Parametric LIF: like :func:`lif` with the learnable decay ``k = sigmoid(w)`` in place
    of ``1 / tau`` (``H = V + (X - (V - V_reset)) k``).

    ``w`` is a scalar tensor or one value per channel ``[C]``, C = ``x.shape[channel_dim]``
    (default 2, i.e. ``[T, B, C, ...]``; use -1 for channels-last token tensors). Its
    gradient is reduced over elements in a fixed order (deterministic).
    """
    alpha = check_surrogate(surrogate, alpha)
    _check_x(x)
    _check_state(v0, x, "v0")
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    if w.device != x.device:
        raise ValueError(f"w: expected device {x.device}, got {w.device}")
    if not w.is_floating_point():
        raise TypeError(f"w: expected a floating tensor, got {w.dtype}")
    if w.dim() > 1:
        raise ValueError(f"w: expected a scalar or a 1-D per-channel tensor, got shape "
                         f"{tuple(w.shape)}")
    channel_dim = int(channel_dim)
    if w.dim() == 1:
        cd = channel_dim + x.dim() if channel_dim < 0 else channel_dim
        if not 1 <= cd < x.dim():
            raise ValueError(f"channel_dim: expected a dimension of x.shape[1:] (1..{x.dim() - 1}"
                             f" or negative), got {channel_dim}")
        if w.shape[0] != x.shape[cd]:
            raise ValueError(f"w: expected {x.shape[cd]} values (x.shape[channel_dim]), got "
                             f"{w.shape[0]}")
        channel_dim = cd
    v_threshold = _check_finite(v_threshold, "v_threshold")
    v_reset = _check_finite(v_reset, "v_reset", allow_none=True)
    if not _native():
        return ref.plif(x, w, v0, channel_dim=channel_dim, decay_input=decay_input,
                        v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                        surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
    s, v, vs = torch.ops.spikeops.plif_fwd.default(
        x, w, v0, channel_dim, bool(decay_input), v_threshold, v_reset, surrogate, alpha,
        bool(detach_reset), bool(store_v_seq))
    return (s, v, vs) if store_v_seq else (s, v)


def ilif(x, v0=None, *, tau=2.0, decay_input=True, v_threshold=1.0, max_level=4,
         rounding="half_even", detach_reset=True, store_v_seq=False):
    """Integer LIF (SpikeYOLO's I-LIF): multi-level spikes ``S = round(clamp(H / v_threshold,
    0, max_level))`` and soft reset ``V = H - S v_threshold``.

    ``rounding`` is ``"half_even"`` (torch.round) or ``"half_up"``. The gradient is
    straight-through inside ``[0, max_level]``; the reset is detached by default. Spikes are
    integers 0..max_level stored in x's dtype; see :func:`spikeops.ref.neurons.expand_integer_spikes`
    to turn them into binary virtual time steps.
    """
    _check_x(x)
    _check_state(v0, x, "v0")
    tau = _check_tau(tau)
    v_threshold = _check_finite(v_threshold, "v_threshold")
    if not struct.unpack("f", struct.pack("f", v_threshold))[0] > 0:
        raise ValueError(f"v_threshold: expected > 0 for integer spikes, got {v_threshold}")
    # Every level must be exact in the spike dtype (bf16 has 8 significant bits, fp16 11).
    exact = {torch.bfloat16: 256, torch.float16: 2048}.get(x.dtype, 2**20)
    if isinstance(max_level, bool) or int(max_level) != max_level or not 1 <= max_level <= exact:
        raise ValueError(f"max_level: expected an integer in 1..{exact} for {x.dtype} (levels "
                         f"must be exact in it), got {max_level!r}")
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding: expected one of {_ROUNDINGS}, got {rounding!r}")
    if not _native():
        return ref.ilif(x, v0, tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                        max_level=int(max_level), rounding=rounding,
                        detach_reset=detach_reset, store_v_seq=store_v_seq)
    s, v, vs = torch.ops.spikeops.ilif_fwd.default(
        x, v0, tau, bool(decay_input), v_threshold, int(max_level), rounding,
        bool(detach_reset), bool(store_v_seq))
    return (s, v, vs) if store_v_seq else (s, v)


def alif(x, v0=None, a0=None, *, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
         tau_adapt=20.0, beta=0.1, detach_reset=False, surrogate="sigmoid", alpha=None,
         store_v_seq=False):
    """Adaptive LIF: threshold ``v_threshold + beta A`` where the trace
    ``A = A - A / tau_adapt + S`` rises with every spike and decays between them.

    Returns ``(spikes, v_last, a_last)`` (+ ``v_seq`` if store_v_seq); ``a0`` is the initial
    trace ``[*]`` float32 (default 0).
    """
    alpha = check_surrogate(surrogate, alpha)
    _check_x(x)
    _check_state(v0, x, "v0")
    _check_state(a0, x, "a0")
    tau = _check_tau(tau)
    tau_adapt = _check_tau(tau_adapt, "tau_adapt")
    beta = _check_finite(beta, "beta")
    v_threshold = _check_finite(v_threshold, "v_threshold")
    v_reset = _check_finite(v_reset, "v_reset", allow_none=True)
    if not _native():
        return ref.alif(x, v0, a0, tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                        v_reset=v_reset, tau_adapt=tau_adapt, beta=beta,
                        detach_reset=detach_reset, surrogate=surrogate, alpha=alpha,
                        store_v_seq=store_v_seq)
    s, v, a, vs = torch.ops.spikeops.alif_fwd.default(
        x, v0, a0, tau, bool(decay_input), v_threshold, v_reset, tau_adapt, beta, surrogate,
        alpha, bool(detach_reset), bool(store_v_seq))
    return (s, v, a, vs) if store_v_seq else (s, v, a)


# ---- fake (meta) implementations and autograd formulas ------------------------------

def _state_like(x):
    return x.new_empty(x.shape[1:], dtype=torch.float32)


def _v_seq_like(x, store_v_seq):
    return x.new_empty(x.shape if store_v_seq else (0,), dtype=torch.float32)


def _grad_or_zeros(g, like, dtype=None):
    if g is None:
        return torch.zeros_like(like, dtype=dtype or like.dtype)
    return g


def _register():
    lib = "spikeops::"
    reg_fake = torch.library.register_fake
    reg_ag = torch.library.register_autograd

    # lif ---------------------------------------------------------------------
    @reg_fake(lib + "lif_fwd")
    def _(x, v0, tau, decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset,
          store_v_seq):
        return _dense(x), _state_like(x), _v_seq_like(x, store_v_seq)

    @reg_fake(lib + "lif_bwd")
    def _(grad_spikes, grad_v_last, x, v0, *args):
        return _dense(x), _state_like(x)

    def lif_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # unused outputs: None, not a zeros pass
        x, v0 = inputs[0], inputs[1]
        ctx.save_for_backward(x, v0)
        ctx.args = inputs[2:9]  # tau .. detach_reset
        ctx.mark_non_differentiable(output[2])

    def lif_backward(ctx, g_s, g_v, _g_seq):
        x, v0 = ctx.saved_tensors
        gx, gv0 = torch.ops.spikeops.lif_bwd.default(
            _grad_or_zeros(g_s, x), g_v, x, v0, *ctx.args)
        return (gx, gv0 if v0 is not None else None) + (None,) * 8

    reg_ag(lib + "lif_fwd", lif_backward, setup_context=lif_setup)

    # if_ ---------------------------------------------------------------------
    @reg_fake(lib + "if_fwd")
    def _(x, v0, v_threshold, v_reset, surrogate, alpha, detach_reset, store_v_seq):
        return _dense(x), _state_like(x), _v_seq_like(x, store_v_seq)

    @reg_fake(lib + "if_bwd")
    def _(grad_spikes, grad_v_last, x, v0, *args):
        return _dense(x), _state_like(x)

    def if_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # unused outputs: None, not a zeros pass
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.args = inputs[2:7]
        ctx.mark_non_differentiable(output[2])

    def if_backward(ctx, g_s, g_v, _g_seq):
        x, v0 = ctx.saved_tensors
        gx, gv0 = torch.ops.spikeops.if_bwd.default(
            _grad_or_zeros(g_s, x), g_v, x, v0, *ctx.args)
        return (gx, gv0 if v0 is not None else None) + (None,) * 6

    reg_ag(lib + "if_fwd", if_backward, setup_context=if_setup)

    # plif --------------------------------------------------------------------
    @reg_fake(lib + "plif_fwd")
    def _(x, w, v0, channel_dim, decay_input, v_threshold, v_reset, surrogate, alpha,
          detach_reset, store_v_seq):
        return _dense(x), _state_like(x), _v_seq_like(x, store_v_seq)

    @reg_fake(lib + "plif_bwd")
    def _(grad_spikes, grad_v_last, x, w, v0, *args):
        return _dense(x), _state_like(x), _dense(w)

    def plif_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # unused outputs: None, not a zeros pass
        ctx.save_for_backward(inputs[0], inputs[1], inputs[2])
        ctx.args = inputs[3:10]
        ctx.mark_non_differentiable(output[2])

    def plif_backward(ctx, g_s, g_v, _g_seq):
        x, w, v0 = ctx.saved_tensors
        gx, gv0, gw = torch.ops.spikeops.plif_bwd.default(
            _grad_or_zeros(g_s, x), g_v, x, w, v0, *ctx.args)
        return (gx, gw, gv0 if v0 is not None else None) + (None,) * 8

    reg_ag(lib + "plif_fwd", plif_backward, setup_context=plif_setup)

    # ilif --------------------------------------------------------------------
    @reg_fake(lib + "ilif_fwd")
    def _(x, v0, tau, decay_input, v_threshold, max_level, rounding, detach_reset,
          store_v_seq):
        return _dense(x), _state_like(x), _v_seq_like(x, store_v_seq)

    @reg_fake(lib + "ilif_bwd")
    def _(grad_spikes, grad_v_last, x, v0, *args):
        return _dense(x), _state_like(x)

    def ilif_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # unused outputs: None, not a zeros pass
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.args = inputs[2:8]
        ctx.mark_non_differentiable(output[2])

    def ilif_backward(ctx, g_s, g_v, _g_seq):
        x, v0 = ctx.saved_tensors
        gx, gv0 = torch.ops.spikeops.ilif_bwd.default(
            _grad_or_zeros(g_s, x), g_v, x, v0, *ctx.args)
        return (gx, gv0 if v0 is not None else None) + (None,) * 7

    reg_ag(lib + "ilif_fwd", ilif_backward, setup_context=ilif_setup)

    # alif --------------------------------------------------------------------
    @reg_fake(lib + "alif_fwd")
    def _(x, v0, a0, tau, decay_input, v_threshold, v_reset, tau_adapt, beta, surrogate,
          alpha, detach_reset, store_v_seq):
        return (_dense(x), _state_like(x), _state_like(x),
                _v_seq_like(x, store_v_seq))

    @reg_fake(lib + "alif_bwd")
    def _(grad_spikes, grad_v_last, grad_a_last, x, v0, a0, *args):
        return _dense(x), _state_like(x), _state_like(x)

    def alif_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)  # unused outputs: None, not a zeros pass
        ctx.save_for_backward(inputs[0], inputs[1], inputs[2])
        ctx.args = inputs[3:12]
        ctx.mark_non_differentiable(output[3])

    def alif_backward(ctx, g_s, g_v, g_a, _g_seq):
        x, v0, a0 = ctx.saved_tensors
        gx, gv0, ga0 = torch.ops.spikeops.alif_bwd.default(
            _grad_or_zeros(g_s, x), g_v, g_a, x, v0, a0, *ctx.args)
        return ((gx, gv0 if v0 is not None else None, ga0 if a0 is not None else None)
                + (None,) * 10)

    reg_ag(lib + "alif_fwd", alif_backward, setup_context=alif_setup)


def _register_no_double_backward():
    """The backward ops have no derivative of their own: say so instead of returning zeros."""
    def refuse(ctx, *grads):
        raise RuntimeError("spikeops neurons: double backward (a gradient of the gradient, "
                           "create_graph=True) is not supported; use spikeops.ref.neurons")

    for name in ("lif_bwd", "if_bwd", "plif_bwd", "ilif_bwd", "alif_bwd"):
        torch.library.register_autograd("spikeops::" + name, refuse,
                                        setup_context=lambda ctx, inputs, output: None)


if _extension.AVAILABLE:
    _register()
    _register_no_double_backward()
