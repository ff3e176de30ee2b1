"""Timing, roofline references and machine facts for the benchmark CLI.

Times are medians of many calls after a warm-up, with the interquartile range as spread.
CPU calls are timed with time.perf_counter; CUDA calls with CUDA events (the queue is
drained with torch.cuda.synchronize before reading them). Roofline references are measured
in the same process because absolute speeds on shared machines drift between runs.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch

from .registry import VARIANTS, OpEntry, Prepared

# Variants whose failure means the run is broken (as opposed to a peer or compile n/a).
ESSENTIAL = ("spikeops", "reference")


@dataclass(frozen=True)
class Budget:
    """How long to spend per variant. --quick shrinks everything."""

    warmup: int = 3
    min_reps: int = 10
    max_reps: int = 200
    seconds: float = 2.0
    first_call_timeout: float = 300.0  # covers torch.compile, which can take a minute

    @classmethod
    def quick(cls, first_call_timeout: float = 300.0) -> "Budget":
        return cls(warmup=1, min_reps=3, max_reps=50, seconds=0.25,
                   first_call_timeout=first_call_timeout)


@dataclass(frozen=True)
class Timing:
    median_s: float
    q1_s: float
    q3_s: float
    reps: int
    first_call_s: float

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "iqr_s": self.iqr_s}


class FirstCallTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise FirstCallTimeout in the main thread after `seconds` (no-op where impossible).

    torch.compile cannot be cancelled from outside; SIGALRM interrupts it between Python
    bytecodes, which is enough to give up on a compile that runs too long.
    """
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise FirstCallTimeout(f"first call (incl. compilation) exceeded {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        return samples[0], samples[0], samples[0]
    q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, med, q3


def time_fn(fn: Callable[[], object], device: torch.device, budget: Budget) -> Timing:
    """Median time of fn() on `device` in seconds, after a first call and a warm-up."""
    _sync(device)
    t0 = time.perf_counter()
    with _deadline(budget.first_call_timeout):
        fn()
        _sync(device)
    first = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in range(budget.warmup):
        fn()
    _sync(device)
    per_call = (time.perf_counter() - t0) / max(budget.warmup, 1) if budget.warmup else first
    reps = int(min(budget.max_reps, max(budget.min_reps, budget.seconds / max(per_call, 1e-9))))

    samples: list[float] = []
    gc.collect()
    gc.disable()  # a collection inside a timed call would be noise, not the op
    try:
        if device.type == "cuda":
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(reps)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(device)
            samples = [start.elapsed_time(end) * 1e-3 for start, end in events]
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    q1, med, q3 = _quartiles(samples)
    return Timing(med, q1, q3, reps, first)


# ---------------------------------------------------------------------------------------
# Roofline references
# ---------------------------------------------------------------------------------------

def _measure_copies(device: torch.device, budget: Budget, mib: int) -> dict[str, Any]:
    x = torch.rand(mib * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    y.copy_(x)  # touch y's pages before timing
    moved = 2 * x.numel() * x.element_size()
    out: dict[str, Any] = {}
    for key, fn, what in (("copy", lambda: y.copy_(x), f"y.copy_(x), {mib} MiB fp32"),
                          ("clone", lambda: x.clone(), f"x.clone(), {mib} MiB fp32")):
        t = time_fn(fn, device, budget)
        out[key] = {"what": what, "bytes": moved, "bandwidth_Bps": moved / t.median_s,
                    **t.as_dict()}
    return out


def measure_roofline(device: torch.device, budget: Budget, quick: bool) -> dict[str, Any]:
    """Copy bandwidth into preallocated and into fresh memory, and the sgemm rate.

    Copy bytes count read + write. The fresh-memory copy (x.clone()) includes the page
    faults of first touch, which dominate on the CPU allocator of small virtual machines.
    """
    mib = 256 if device.type == "cuda" else 64  # larger than any L2 / L3 on either side
    out = _measure_copies(device, budget, mib)
    n = 1024 if quick else (4096 if device.type == "cuda" else 2048)
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    c = torch.empty(n, n, device=device)
    flops = 2 * n**3
    t = time_fn(lambda: torch.mm(a, b, out=c), device, budget)
    out["sgemm"] = {"what": f"torch.mm fp32 {n}x{n}x{n}", "flops": flops,
                    "rate_flops": flops / t.median_s, **t.as_dict()}
    return out


# ---------------------------------------------------------------------------------------
# Running one entry
# ---------------------------------------------------------------------------------------

def _short(exc: BaseException, limit: int = 240) -> str:
    cause: BaseException | None = exc
    while cause is not None:  # torch.compile wraps our timeout in its own error types
        if isinstance(cause, FirstCallTimeout):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _roofline(seconds: float, nbytes: int | None, flops: int | None,
              roof: dict[str, Any]) -> dict[str, float]:
    """Fraction of the best possible time: traffic at copy speed (or FLOPs at sgemm rate)."""
    frac: dict[str, float] = {}
    if nbytes:
        for key in ("copy", "clone"):
            frac[key] = nbytes / roof[key]["bandwidth_Bps"] / seconds
    if flops:
        frac["sgemm"] = flops / roof["sgemm"]["rate_flops"] / seconds
    return frac


def run_entry(entry: OpEntry, device: torch.device, budget: Budget, roof: dict[str, Any],
              *, quick: bool, compile_reference: bool,
              on_variant: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Set up one entry, time every variant, and return its JSON-ready row."""
    shape = entry.shape_for(quick)
    nbytes = entry.bytes(shape, entry.dtype) if entry.bytes else None
    flops = entry.flops(shape, entry.dtype) if entry.flops else None
    row: dict[str, Any] = {
        "name": entry.name, "family": entry.family, "description": entry.description,
        "shape": list(shape), "dtype": str(entry.dtype).removeprefix("torch."),
        "device": str(device), "bytes": nbytes, "flops": flops,
        "variants": {}, "failed": [], "notes": {},
    }
    try:
        prep: Prepared = entry.setup(device, quick=quick, compile_reference=compile_reference)
    except Exception as exc:
        row["error"] = f"setup: {_short(exc)}"
        row["failed"] = list(ESSENTIAL)
        row["variants"] = {v: {"na": row["error"]} for v in VARIANTS}
        return row

    for variant in VARIANTS:
        if on_variant is not None:
            on_variant(variant)
        fn = prep.fns.get(variant)
        if fn is None:
            row["variants"][variant] = {"na": prep.unavailable.get(variant, "not provided")}
            continue
        try:
            t = time_fn(fn, device, budget)
        except Exception as exc:  # FirstCallTimeout included
            # A failing compile or peer is a fact about them, not a crash of the bench.
            row["variants"][variant] = {"na": _short(exc)}
            if variant in ESSENTIAL:
                row["failed"].append(variant)
            continue
        res: dict[str, Any] = t.as_dict()
        res["roofline"] = _roofline(t.median_s, nbytes, flops, roof)
        row["variants"][variant] = res
    for hook in prep.after:
        try:
            hook()
        except Exception:
            pass  # notes are a courtesy; never lose measured rows over them
    row["notes"] = dict(prep.notes)
    del prep
    gc.collect()

    base = row["variants"].get("spikeops", {}).get("median_s")
    row["speedup"] = {
        v: (r["median_s"] / base if base and "median_s" in r else None)
        for v, r in row["variants"].items() if v != "spikeops"
    }
    row["roofline"] = row["variants"].get("spikeops", {}).get("roofline", {})
    return row


# ---------------------------------------------------------------------------------------
# Header: what machine and software produced the numbers
# ---------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def _spikeops_facts() -> tuple[str, dict[str, Any] | None]:
    """spikeops version and spikeops.info() (None when the function does not exist)."""
    info: dict[str, Any] | None = None
    try:
        import spikeops
        fn = getattr(spikeops, "info", None)
        if callable(fn):
            try:
                info = dict(fn())
            except Exception as exc:
                info = {"error": _short(exc)}
        version = ((info or {}).get("version") or getattr(spikeops, "__version__", None)
                   or _version("spikeops") or "unknown")
    except Exception as exc:
        version, info = "unknown", {"error": _short(exc)}
    return str(version), info


def collect_header(device: torch.device, args: dict[str, Any]) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    version, info = _spikeops_facts()
    header: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "spikeops": version,
        "spikeops_info": info,
        "peers": {"spikingjelly": _version("spikingjelly")},
        "env": {k: os.environ[k] for k in ("THP_MEM_ALLOC_ENABLE", "SPIKEOPS_CPU_ISA",
                                           "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
        "args": args,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        header["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_GiB": round(props.total_memory / 2**30, 1),
                         "sm_count": props.multi_processor_count}
    return header
