"""Stateful multi-step neuron modules with SpikingJelly's arguments and state semantics.

A module keeps its membrane ``v`` (float32) between calls until :meth:`reset` (or
:func:`reset_net` on a whole model), so a long sequence can be fed chunk by chunk with the
same spikes and gradients as one call. ``step_mode="m"`` takes ``x [T, *]``; ``"s"`` takes
one step ``x [*]``. Inputs are made contiguous here (the ops themselves insist on it).

``store_v_seq=True`` keeps the membrane after reset of every step in ``.v_seq``; unlike
SpikingJelly's torch backend it is detached (no gradient flows through it), so a loss on
the membrane must be built from ``spikeops.ref.neurons`` instead.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from ..ref.surrogate import SURROGATES

__all__ = ["MemoryModule", "LIF", "IF", "PLIF", "ILIF", "ALIF", "MultiStepLIFNode",
           "MultiStepParametricLIFNode",
           "LIFNode", "IFNode", "ParametricLIFNode", "reset_net", "surrogate_spec"]

# SpikingJelly surrogate class names -> ours.
_SJ_SURROGATES = {
    "sigmoid": "sigmoid", "atan": "atan", "piecewisequadratic": "piecewise_quadratic",
    "piecewiseexp": "piecewise_exp", "softsign": "soft_sign", "superspike": "super_spike",
    "erf": "erf", "rect": "rectangle", "rectangle": "rectangle", "triangle": "triangle",
}


def surrogate_spec(surrogate) -> tuple[str, float | None]:
    """Accept a name ("atan"), a (name, alpha) pair, or a SpikingJelly surrogate object."""
    if surrogate is None:
        return "sigmoid", None
    if isinstance(surrogate, str):
        return surrogate, None
    if isinstance(surrogate, tuple) and len(surrogate) == 2:
        return surrogate[0], surrogate[1]
    key = type(surrogate).__name__.lower()
    if key in _SJ_SURROGATES:
        return _SJ_SURROGATES[key], getattr(surrogate, "alpha", None)
    raise ValueError(f"surrogate_function: cannot map {surrogate!r} to one of {sorted(SURROGATES)}")


class MemoryModule(nn.Module):
    """Base of stateful modules: :meth:`reset` clears the state."""

    def reset(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def reset_net(net: nn.Module) -> None:
    """Reset the state of every spikeops (or SpikingJelly-style) stateful module in ``net``."""
    for m in net.modules():
        if isinstance(m, MemoryModule) or (hasattr(m, "reset") and hasattr(m, "v") and m is not net):
            m.reset()


class _Neuron(MemoryModule):
    def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate_function="sigmoid",
                 detach_reset=False, step_mode="m", store_v_seq=False, backend=None):
        super().__init__()
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode: expected 'm' or 's', got {step_mode!r}")
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate, self.alpha = surrogate_spec(surrogate_function)
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.store_v_seq = bool(store_v_seq)
        self.backend = backend  # accepted for SpikingJelly compatibility; kernels pick themselves
        self.v: torch.Tensor | None = None
        self.v_seq: torch.Tensor | None = None

    def reset(self) -> None:
        self.v = None
        self.v_seq = None

    def _state_in(self, x):
        if self.v is None:
            return None
        if tuple(self.v.shape) != tuple(x.shape[1:]) or self.v.device != x.device:
            raise ValueError(
                f"{type(self).__name__}: the input (per-step shape {tuple(x.shape[1:])}, device "
                f"{x.device}) does not match the stored membrane (shape {tuple(self.v.shape)}, "
                f"device {self.v.device}); call reset() (or spikeops.nn.reset_net) between "
                "sequences and after moving the model")
        return self.v

    def _call(self, x, v0):  # returns (spikes, v_last, v_seq or None)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.step_mode == "s"
        if single:
            x = x.unsqueeze(0)
        x = x.contiguous()
        s, v, v_seq = self._call(x, self._state_in(x))
        self.v = v
        if self.store_v_seq:
            self.v_seq = v_seq[0] if single else v_seq
        return s[0] if single else s

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
                f"surrogate={self.surrogate}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}")


class LIF(_Neuron):
    """Leaky integrate-and-fire (SpikingJelly ``LIFNode``), see :func:`spikeops.ops.lif`."""

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="sigmoid", detach_reset=False, step_mode="m",
                 store_v_seq=False, backend=None):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         store_v_seq, backend)
        self.tau = float(tau)
        self.decay_input = bool(decay_input)

    def _call(self, x, v0):
        out = ops.lif(x, v0, tau=self.tau, decay_input=self.decay_input,
                      v_threshold=self.v_threshold, v_reset=self.v_reset,
                      detach_reset=self.detach_reset, surrogate=self.surrogate,
                      alpha=self.alpha, store_v_seq=self.store_v_seq)
        return out if self.store_v_seq else (*out, None)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(_Neuron):
    """Integrate-and-fire (SpikingJelly ``IFNode``), see :func:`spikeops.ops.if_`."""

    def _call(self, x, v0):
        out = ops.if_(x, v0, v_threshold=self.v_threshold, v_reset=self.v_reset,
                      detach_reset=self.detach_reset, surrogate=self.surrogate,
                      alpha=self.alpha, store_v_seq=self.store_v_seq)
        return out if self.store_v_seq else (*out, None)


class PLIF(_Neuron):
    """Parametric LIF (SpikingJelly ``ParametricLIFNode``): learnable ``w`` with
    ``1 / tau = sigmoid(w)``, initialised from ``init_tau``. ``channels=C`` learns one
    ``w`` per channel along ``channel_dim`` of the module's input (default: one shared
    scalar; ``channel_dim=None`` means 2 for ``[T, B, C, ...]`` in step_mode "m" and 1 for
    ``[B, C, ...]`` in step_mode "s").
    """

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="sigmoid", detach_reset=False, step_mode="m",
                 store_v_seq=False, backend=None, channels=None, channel_dim=None):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         store_v_seq, backend)
        init_tau = float(init_tau)
        if not init_tau > 1:
            raise ValueError(f"init_tau: expected a value > 1, got {init_tau}")
        w0 = -math.log(init_tau - 1.0)
        shape = () if channels is None else (int(channels),)
        self.w = nn.Parameter(torch.full(shape, w0))
        self.decay_input = bool(decay_input)
        if channel_dim is None:
            channel_dim = 2 if step_mode == "m" else 1
        self.channel_dim = int(channel_dim)

    def _call(self, x, v0):
        # In single-step mode x gained a leading T axis: a non-negative channel dim moves by one.
        cd = self.channel_dim
        if self.step_mode == "s" and cd >= 0:
            cd += 1
        out = ops.plif(x, self.w, v0, channel_dim=cd, decay_input=self.decay_input,
                       v_threshold=self.v_threshold, v_reset=self.v_reset,
                       detach_reset=self.detach_reset, surrogate=self.surrogate,
                       alpha=self.alpha, store_v_seq=self.store_v_seq)
        return out if self.store_v_seq else (*out, None)


class ILIF(_Neuron):
    """Integer LIF (SpikeYOLO I-LIF): spikes 0..max_level, see :func:`spikeops.ops.ilif`."""

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, max_level=4,
                 rounding="half_even", detach_reset=True, step_mode="m", store_v_seq=False,
                 backend=None):
        super().__init__(v_threshold, None, "sigmoid", detach_reset, step_mode, store_v_seq,
                         backend)
        self.tau = float(tau)
        self.decay_input = bool(decay_input)
        self.max_level = int(max_level)
        self.rounding = rounding

    def _call(self, x, v0):
        out = ops.ilif(x, v0, tau=self.tau, decay_input=self.decay_input,
                       v_threshold=self.v_threshold, max_level=self.max_level,
                       rounding=self.rounding, detach_reset=self.detach_reset,
                       store_v_seq=self.store_v_seq)
        return out if self.store_v_seq else (*out, None)


class ALIF(_Neuron):
    """Adaptive-threshold LIF, see :func:`spikeops.ops.alif`. Keeps ``v`` and the trace ``a``."""

    def __init__(self, tau=2.0, tau_adapt=20.0, beta=0.1, decay_input=True, v_threshold=1.0,
                 v_reset=0.0, surrogate_function="sigmoid", detach_reset=False, step_mode="m",
                 store_v_seq=False, backend=None):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         store_v_seq, backend)
        self.tau, self.tau_adapt, self.beta = float(tau), float(tau_adapt), float(beta)
        self.decay_input = bool(decay_input)
        self.a: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self.a = None

    def _call(self, x, v0):
        a0 = self.a if v0 is not None else None
        out = ops.alif(x, v0, a0, tau=self.tau, decay_input=self.decay_input,
                       v_threshold=self.v_threshold, v_reset=self.v_reset,
                       tau_adapt=self.tau_adapt, beta=self.beta, detach_reset=self.detach_reset,
                       surrogate=self.surrogate, alpha=self.alpha, store_v_seq=self.store_v_seq)
        self.a = out[2]
        return (out[0], out[1], out[3] if self.store_v_seq else None)


# SpikingJelly names, for code that changes only its import.
LIFNode = LIF
IFNode = IF
ParametricLIFNode = PLIF


class MultiStepLIFNode(LIF):
    """SpikingJelly's old ``clock_driven.neuron.MultiStepLIFNode`` signature (used by
    Spikformer and Spike-driven Transformer); ``backend`` is accepted and ignored."""

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="sigmoid", detach_reset=False, backend="torch",
                 lava_s_cale=1 << 6, **kwargs):
        super().__init__(tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                         v_reset=v_reset, surrogate_function=surrogate_function,
                         detach_reset=detach_reset, step_mode="m", backend=backend, **kwargs)


class MultiStepParametricLIFNode(PLIF):
    """SpikingJelly's old ``MultiStepParametricLIFNode`` signature (Spike-driven Transformer);
    ``backend`` is accepted and ignored."""

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="sigmoid", detach_reset=False, backend="torch", **kwargs):
        super().__init__(init_tau=init_tau, decay_input=decay_input, v_threshold=v_threshold,
                         v_reset=v_reset, surrogate_function=surrogate_function,
                         detach_reset=detach_reset, step_mode="m", backend=backend, **kwargs)
