"""Benchmark entries of the fused multi-step neurons (LIF, IF, PLIF, ILIF, ALIF).

Each entry times forward + backward of the spikes with a fixed upstream gradient (or the
forward alone) through spikeops.ops, the pure-PyTorch reference, the reference under
torch.compile, and SpikingJelly's multi-step node where it has an equivalent one.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import math
from typing import Any, Callable

import torch

from .registry import Builder, OpEntry, Prepared, Shape, Thunk, register

# Extra op inputs after x (PLIF's w), made per entry: (shape, device) -> tensors.
_Extra = Callable[[Shape, torch.device], tuple[torch.Tensor, ...]]

# Traffic of one call. Forward reads x and writes spikes; backward recomputes the membrane
# from x, so it reads x and grad_spikes and writes grad_x: 5 passes over [T, N] for
# fwd+bwd, 2 for the forward alone. State (v_last, a_last) is float32 [N], written once.
_FWD_BWD_PASSES = 5
_FWD_PASSES = 2


def _traffic(passes: int, states: int) -> Callable[[Shape, torch.dtype], int]:
    def count(shape: Shape, dtype: torch.dtype) -> int:
        steps, n = shape[0], math.prod(shape[1:])
        itemsize = torch.empty((), dtype=dtype).element_size()
        return passes * steps * n * itemsize + states * n * 4
    return count


# ---------------------------------------------------------------------------------------
# SpikingJelly peer
# ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _spikingjelly() -> tuple[Any, Any, str]:
    """(neuron module, functional module, version); raises ImportError when absent."""
    # SpikingJelly's kernels make torch log "Triton not available" on CPU-only wheels, in
    # the middle of the progress bar; that is expected there and not worth a line.
    logging.getLogger("torch._library.triton").addFilter(
        lambda record: "Triton not available" not in record.getMessage())
    from spikingjelly.activation_based import functional, neuron
    try:  # SpikingJelly 2.0 logs every backend selection through loguru; keep output clean
        from spikingjelly.logger import logger
        logger.disable("spikingjelly")
    except Exception:
        pass
    try:
        from importlib.metadata import version
        ver = version("spikingjelly")
    except Exception:
        ver = "unknown"
    return neuron, functional, ver


def _sj_backend_kwargs(cls: type, device: torch.device) -> tuple[dict[str, str], str]:
    """Pick the fastest backend for this device.

    SpikingJelly 0.0.0.0.x and some 2.0 builds take ``backend=`` ('torch' | 'cupy' |
    'triton'); the 2.0 release installed here has no such argument and selects its
    implementation itself (native CUDA > Triton > torch), so we pass nothing then.
    """
    if "backend" not in inspect.signature(cls.__init__).parameters:
        return {}, "auto"
    if device.type != "cuda":
        return {"backend": "torch"}, "torch"
    try:
        supported = tuple(cls(step_mode="m").supported_backends)
    except Exception:
        supported = ("torch",)
    for name in ("triton", "cupy"):
        if name in supported and importlib.util.find_spec(name) is not None:
            return {"backend": name}, name
    return {"backend": "torch"}, "torch"


def _sj_selected(namespace: str) -> str | None:
    """Best effort: which implementation SpikingJelly 2.0's auto-selection picked."""
    try:
        sel = importlib.import_module(f"spikingjelly._ops.{namespace}")._selection
        names = {getattr(v, "name", None) for v in sel._selections.values()} - {None}
        return ",".join(sorted(names)) or None
    except Exception:
        return None


def _sj_peer(prep: Prepared, node_name: str, node_kwargs: dict[str, Any], namespace: str,
             x: torch.Tensor, grad: torch.Tensor | None) -> None:
    """Add SpikingJelly's multi-step node as the 'peer' variant (or record why not)."""
    try:
        neuron, functional, ver = _spikingjelly()
    except Exception as exc:
        prep.unavailable["peer"] = f"spikingjelly not importable ({type(exc).__name__}: {exc})"
        return
    try:
        cls = getattr(neuron, node_name)
        backend_kwargs, backend = _sj_backend_kwargs(cls, x.device)
        node = cls(step_mode="m", **node_kwargs, **backend_kwargs).to(x.device)
    except Exception as exc:
        prep.unavailable["peer"] = f"spikingjelly {node_name}: {type(exc).__name__}: {exc}"
        return
    params = [p for p in node.parameters() if p.requires_grad]
    prep.notes["peer"] = f"spikingjelly {ver} {node_name} backend={backend}"

    def run() -> None:
        functional.reset_net(node)  # fresh v0 = v_reset each call, as spikeops gets
        if grad is None:
            with torch.no_grad():
                node(x)
            return
        x.grad = None
        for p in params:
            p.grad = None
        torch.autograd.backward(node(x), grad)

    def record_backend() -> None:
        # Only after a call does SpikingJelly 2.0 know which implementation it picked.
        picked = _sj_selected(namespace) or ("torch" if x.device.type == "cpu" else "?")
        prep.notes["peer"] = f"spikingjelly {ver} {node_name} backend=auto:{picked}"

    prep.fns["peer"] = run
    if backend == "auto":
        prep.after.append(record_backend)


# ---------------------------------------------------------------------------------------
# spikeops / reference / compiled reference
# ---------------------------------------------------------------------------------------

def _make_inputs(shape: Shape, dtype: torch.dtype, device: torch.device,
                 backward: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    # Mean 0.5 so neurons fire at realistic rates (LIF ~11% of steps, IF ~31%).
    x = (torch.randn(shape, generator=gen) + 0.5).to(device=device, dtype=dtype)
    if not backward:
        return x, None
    grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return x.requires_grad_(True), grad


def _thunk(fn: Callable[..., Any], x: torch.Tensor, extra: tuple[torch.Tensor, ...],
           grad: torch.Tensor | None) -> Thunk:
    leaves = [t for t in (x, *extra) if t.requires_grad]

    def fwd_bwd() -> None:
        for t in leaves:  # replace, never accumulate: accumulation would add a pass
            t.grad = None
        torch.autograd.backward(fn(x, *extra)[0], grad)

    def fwd() -> None:
        with torch.no_grad():
            fn(x, *extra)

    return fwd if grad is None else fwd_bwd


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    # Every entry compiles the same reference code object at a new shape/dtype; start
    # from a clean dynamo cache so its recompile limit never silently falls back to eager.
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _neuron_builder(op: str, kwargs: dict[str, Any], *, backward: bool,
                    peer: tuple[str, dict[str, Any]] | None, peer_namespace: str = "",
                    extra: _Extra | None = None) -> Builder:
    def build(shape: Shape, dtype: torch.dtype, device: torch.device,
              compile_reference: bool) -> Prepared:
        from spikeops.ref import neurons as ref

        prep = Prepared()
        x, grad = _make_inputs(shape, dtype, device, backward)
        more = extra(shape, device) if extra is not None else ()
        if backward:
            more = tuple(t.requires_grad_(True) for t in more)
        ref_fn = functools.partial(getattr(ref, op), **kwargs)

        try:
            ops = importlib.import_module("spikeops.ops")
            prep.fns["spikeops"] = _thunk(functools.partial(getattr(ops, op), **kwargs),
                                          x, more, grad)
        except Exception as exc:
            prep.unavailable["spikeops"] = f"spikeops.ops.{op}: {type(exc).__name__}: {exc}"
        prep.fns["reference"] = _thunk(ref_fn, x, more, grad)
        if compile_reference:
            prep.fns["reference_compiled"] = _thunk(_compiled(ref_fn), x, more, grad)
        else:
            prep.unavailable["reference_compiled"] = (
                "compile off (--no-compile, or --quick without --compile)")
        if peer is None:
            prep.unavailable["peer"] = "no equivalent SpikingJelly node"
        else:
            _sj_peer(prep, peer[0], peer[1], peer_namespace, x, grad)
        return prep
    return build


def _plif_w(shape: Shape, device: torch.device) -> tuple[torch.Tensor, ...]:
    # Scalar w = 0 -> decay sigmoid(0) = 1/2, i.e. tau = 2 like the LIF rows.
    return (torch.zeros((), device=device),)


_LIF = dict(tau=2.0, surrogate="sigmoid")
_SJ_LIF = ("LIFNode", dict(tau=2.0))


def _neuron_entry(name: str, op: str, kwargs: dict[str, Any], shape: Shape, quick: Shape,
                  dtype: torch.dtype, *, backward: bool = True, states: int = 1,
                  peer: tuple[str, dict[str, Any]] | None = None, peer_namespace: str = "",
                  extra: _Extra | None = None, devices: tuple[str, ...] = ("cpu", "cuda"),
                  description: str = "") -> None:
    register(OpEntry(
        name=name, family="neurons", shape=shape, quick_shape=quick, dtype=dtype,
        devices=devices,
        build=_neuron_builder(op, kwargs, backward=backward, peer=peer,
                              peer_namespace=peer_namespace, extra=extra),
        bytes=_traffic(_FWD_BWD_PASSES if backward else _FWD_PASSES, states),
        description=description,
    ))


_N, _QN = 2**20, 2**18
_F32, _BF16, _F16 = torch.float32, torch.bfloat16, torch.float16

_neuron_entry("lif_fwd_bwd_fp32_T8", "lif", _LIF, (8, _N), (8, _QN), _F32,
              peer=_SJ_LIF, peer_namespace="lif", description="LIF sigmoid fwd+bwd")
_neuron_entry("lif_fwd_bwd_fp32_T16", "lif", _LIF, (16, _N // 2), (16, _QN // 2), _F32,
              peer=_SJ_LIF, peer_namespace="lif", description="LIF sigmoid fwd+bwd")
_neuron_entry("lif_fwd_bwd_bf16_T8", "lif", _LIF, (8, _N), (8, _QN), _BF16,
              peer=_SJ_LIF, peer_namespace="lif", description="LIF sigmoid fwd+bwd")
_neuron_entry("lif_fwd_fp32_T8", "lif", _LIF, (8, _N), (8, _QN), _F32, backward=False,
              peer=_SJ_LIF, peer_namespace="lif", description="LIF forward only")
_neuron_entry("if_fwd_bwd_fp32_T8", "if_", dict(surrogate="sigmoid"), (8, _N), (8, _QN),
              _F32, peer=("IFNode", {}), peer_namespace="if_", description="IF fwd+bwd")
_neuron_entry("plif_fwd_bwd_fp32_T8", "plif", dict(surrogate="sigmoid"), (8, _N),
              (8, _QN), _F32, peer=("ParametricLIFNode", dict(init_tau=2.0)),
              peer_namespace="plif", extra=_plif_w,
              description="PLIF fwd+bwd, scalar learnable w")
# SpikingJelly's ILIFNode has another parameterisation (spike-count surrogate object,
# tau default 4/3) not verified equivalent to spikeops.ilif, so it is not used as a peer.
_neuron_entry("ilif_fwd_bwd_fp32_T8", "ilif", dict(tau=2.0, max_level=4), (8, _N),
              (8, _QN), _F32, description="integer LIF (D=4) fwd+bwd")
_neuron_entry("alif_fwd_bwd_fp32_T8", "alif", dict(_LIF, tau_adapt=20.0, beta=0.1),
              (8, _N), (8, _QN), _F32, states=2, description="adaptive LIF fwd+bwd")
for _dt, _tag in ((_F16, "fp16"), (_BF16, "bf16")):
    _neuron_entry(f"lif_fwd_bwd_{_tag}_T16_B64", "lif", _LIF, (16, 64, 65536),
                  (16, 16, 16384), _dt, peer=_SJ_LIF, peer_namespace="lif",
                  devices=("cuda",), description="LIF sigmoid fwd+bwd, [T, B, N]")
