"""`python -m spikeops demo`: train a spiking model, compare the kernels with the reference
path, measure firing rates and energy, and write a Markdown report with plots.

Default: Meta-SpikeFormer-tiny (T = 4) on scikit-learn's 8x8 digits, on the CPU. ``--task
lm`` trains a SpikeGPT-style character model on CPython's pydoc topics; ``--task points``
trains E-3DSNN on procedurally generated point clouds. The report folder is written
atomically: everything goes into a temporary folder beside it, renamed into place at the end.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "build_parser", "DemoError"]

_DEFAULTS = {  # per task: model, epochs, batch size, learning rate
    "digits": dict(model="meta_spikeformer", epochs=12, batch_size=32, lr=3e-3),
    "lm": dict(model="spikegpt", epochs=4, batch_size=16, lr=3e-3),
    "points": dict(model="e3dsnn", epochs=10, batch_size=8, lr=3e-3),
}


class DemoError(Exception):
    """A bad option or environment, reported as ``error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from .tasks import TASK_MODELS, TASKS

    models_text = "; ".join(f"{t}: {', '.join(m)}" for t, m in TASK_MODELS.items())
    p = argparse.ArgumentParser(
        prog="python -m spikeops demo",
        description="Train a spiking network with spikeops, time the kernels against the "
                    "pure-PyTorch reference path, measure firing rates and the energy "
                    "estimate, and write a Markdown report with PNG plots.")
    p.add_argument("--task", default="digits",
                   help=f"what to train: {', '.join(TASKS)} (digits: scikit-learn's 8x8 "
                        "handwritten digits; lm: character-level language model on CPython's "
                        "pydoc topics, reports bits per character and tokens/s; points: "
                        "procedurally generated point-cloud shapes; default: %(default)s)")
    p.add_argument("--model", default=None,
                   help=f"model name from spikeops.models (default per task: digits "
                        f"meta_spikeformer, lm spikegpt, points e3dsnn; choices: {models_text})")
    p.add_argument("--size", default="tiny", help="model configuration: tiny or small (default: %(default)s)")
    p.add_argument("--T", type=int, default=4, dest="T",
                   help="time steps of the image models' direct encoding (default: %(default)s)")
    p.add_argument("--nm", default=None,
                   help="N:M sparse linear / conv layers, e.g. 2:4 (default: dense)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default per task: digits 12, lm 4 of 150 steps, "
                        "points 10)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (default per task: digits 32, lm 16 windows of "
                        "64 characters, points 8 clouds)")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW peak learning rate, one-cycle schedule (default: 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, initialisation and batch order "
                        "(default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda needs a GPU; default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--timing-steps", type=int, default=5,
                   help="training steps timed on each path (kernels, reference), "
                        "interleaved, after one warm-up step each; the median is reported "
                        "(default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="results folder to create (default: results/demo-<task>-<timestamp>); "
                        "must not exist yet")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a tiny model, a few steps, a small data subset")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def _check_args(args):
    from .. import models
    from .tasks import TASK_MODELS, TASKS

    if args.task not in TASKS:
        raise DemoError(f"--task: unknown task {args.task!r}; expected one of {list(TASKS)}")
    d = _DEFAULTS[args.task]
    args.model = args.model or d["model"]
    if args.model not in TASK_MODELS[args.task]:
        known = args.model in models.names()
        why = "is not a model of this task" if known else "is not a spikeops model"
        raise DemoError(f"--model: {args.model!r} {why}; task {args.task!r} takes one of "
                        f"{list(TASK_MODELS[args.task])}")
    if args.size not in models.sizes(args.model):
        raise DemoError(f"--size: unknown configuration {args.size!r}; expected one of "
                        f"{models.sizes(args.model)}")
    args.epochs = d["epochs"] if args.epochs is None else args.epochs
    args.batch_size = d["batch_size"] if args.batch_size is None else args.batch_size
    args.lr = d["lr"] if args.lr is None else args.lr
    if args.quick and args.epochs == d["epochs"]:
        args.epochs = 1
    for name in ("epochs", "batch_size", "T", "timing_steps"):
        if getattr(args, name) < 1:
            raise DemoError(f"--{name.replace('_', '-')}: expected an integer >= 1, got "
                            f"{getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise DemoError(f"--threads: expected an integer >= 1, got {args.threads}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise DemoError(f"--lr: expected a positive number, got {args.lr}")
    if args.nm is not None:
        try:
            models.parse_nm(args.nm)
        except ValueError as err:
            raise DemoError(f"--nm: {err}") from None
    _check_device(args)


def _check_device(args):
    import torch

    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise DemoError(f"--device: expected cpu or cuda, got {args.device!r}")
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DemoError(f"--device {args.device}: no CUDA GPU is available here "
                            "(torch.cuda.is_available() is False); use --device cpu")
        import os

        if args.task == "points" and os.environ.get("SPIKEOPS_UNVALIDATED_CUDA") != "1":
            raise DemoError(f"--device {args.device}: the points task needs the sparse "
                            "convolution, whose CUDA kernels have not run on a GPU yet; use "
                            "--device cpu (or set SPIKEOPS_UNVALIDATED_CUDA=1 to try them)")


def _check_deps():
    missing = []
    for mod, pkg in (("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"),
                     ("tqdm", "tqdm")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        raise DemoError(f"the demo needs {', '.join(missing)}: pip install "
                        f"{' '.join(missing)}  (or pip install 'spikeops[demo]')")


# ---- the results folder, written atomically -------------------------------------------

def _prepare_out(args) -> Path:
    """The final folder (must not exist) and a check that its parent is writable, done
    before training so a bad --out fails in a second, not after minutes."""
    if args.out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("results") / f"demo-{args.task}-{stamp}"
    else:
        out = Path(args.out)
    out = out.expanduser().absolute()
    if out.exists():
        raise DemoError(f"--out: {out} already exists; give a new folder (the report is "
                        "never written over an existing one)")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise DemoError(f"--out: cannot write the results folder {out} "
                        f"({type(err).__name__}: {err.strerror or err})") from None
    return out


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        raise DemoError(f"--out: {out} appeared while the demo ran; the report is left "
                        "unwritten")
    os.rename(tmp, out)


# ---- training and measurements ----------------------------------------------------------

def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _train(task, args, progress):
    import torch
    from tqdm import tqdm

    model = task.model
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    total = args.epochs * task.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total,
                                                pct_start=min(0.15, 30 / max(total, 1)))
    g = torch.Generator().manual_seed(args.seed + 1)
    history = {"epoch": [], "train_loss": [], "step_loss": [], "epoch_seconds": []}
    model.train()
    train_time = 0.0
    for epoch in range(1, args.epochs + 1):
        losses = []
        bar = tqdm(task.train_batches(g), total=task.steps_per_epoch, disable=not progress,
                   desc=f"epoch {epoch}/{args.epochs}", unit="step", leave=True,
                   dynamic_ncols=True, file=sys.stderr)
        t0 = time.perf_counter()
        for batch in bar:
            loss = task.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if len(losses) % 5 == 0 or len(losses) == task.steps_per_epoch:
                bar.set_postfix(loss=f"{sum(losses[-5:]) / len(losses[-5:]):.3f}")
        _sync(args.device)
        seconds = time.perf_counter() - t0
        train_time += seconds
        metrics = task.evaluate(model)
        history["epoch"].append(epoch)
        history["train_loss"].append(sum(losses) / len(losses))
        history["step_loss"].extend(losses)
        history["epoch_seconds"].append(seconds)
        for k, v in metrics.items():
            history.setdefault(k, []).append(v)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"epoch {epoch}: train loss {history['train_loss'][-1]:.4f}, {shown} "
              f"({seconds:.1f} s)", flush=True)
    history["train_seconds"] = train_time
    return history


def _time_paths(task, args):
    """Median seconds per training step on the kernels and on the reference path (copies
    of the trained model, so training is not disturbed), steps interleaved."""
    import torch

    import spikeops

    g = torch.Generator().manual_seed(args.seed + 7)
    batches = []
    while len(batches) < args.timing_steps + 1:
        for b in task.train_batches(g):
            batches.append(b)
            if len(batches) == args.timing_steps + 1:
                break
    nets = {"kernels": copy.deepcopy(task.model), "reference": copy.deepcopy(task.model)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in nets.items()}
    times = {"kernels": [], "reference": []}

    def step(path, batch):
        with spikeops.use_reference(path == "reference"):
            _sync(args.device)
            t0 = time.perf_counter()
            loss = task.loss(nets[path], batch)
            opts[path].zero_grad(set_to_none=True)
            loss.backward()
            opts[path].step()
            _sync(args.device)
            return time.perf_counter() - t0

    for path in times:                      # warm-up: allocator, first-touch pages
        step(path, batches[0])
    for batch in batches[1:]:
        for path in times:
            times[path].append(step(path, batch))
    out = {}
    for path, ts in times.items():
        out[path] = {"median_s": statistics.median(ts), "min_s": min(ts), "steps": len(ts)}
        if task.tokens_per_batch:
            out[path]["tokens_per_s"] = task.tokens_per_batch / statistics.median(ts)
    out["speedup"] = out["reference"]["median_s"] / out["kernels"]["median_s"]
    return out


def _firing_rates(task):
    """Per spiking module: fraction of non-zero outputs and mean spike value (integer
    I-LIF spikes count), over one evaluation pass."""
    import torch

    from ..nn.neurons import _Neuron

    stats = {}
    hooks = []
    for name, mod in task.model.named_modules():
        if isinstance(mod, _Neuron):
            def hook(m, args, out, name=name):
                s = stats.setdefault(name, {"kind": type(m).__name__, "nonzero": 0.0,
                                            "sum": 0.0, "count": 0})
                s["nonzero"] += (out != 0).sum().item()
                s["sum"] += out.float().sum().item()
                s["count"] += out.numel()
            hooks.append(mod.register_forward_hook(hook))
    try:
        task.evaluate(task.model)
    finally:
        for h in hooks:
            h.remove()
    return {n: {"kind": s["kind"], "firing_rate": s["nonzero"] / max(s["count"], 1),
                "mean_spike": s["sum"] / max(s["count"], 1)} for n, s in stats.items()}


def _energy(task, args):
    from .. import energy

    T = getattr(task.model, "T", 1) if task.name == "digits" else 1
    report = energy.estimate(task.model, task.example, time_steps=max(int(T), 1))
    return report


# ---- main -------------------------------------------------------------------------------

def run(args) -> Path:
    """Everything after argument parsing; returns the report folder."""
    import torch

    from .report import write_report
    from .tasks import BUILDERS

    out = _prepare_out(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    progress = not args.no_progress
    t_start = time.perf_counter()
    print(f"spikeops demo: task {args.task}, model {args.model}-{args.size}"
          f"{' (quick)' if args.quick else ''}, device {args.device}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    task = BUILDERS[args.task](args.model, args.size, args.T, args.nm, args.batch_size,
                               args.seed, args.device, args.quick)
    n_params = sum(p.numel() for p in task.model.parameters())
    history = _train(task, args, progress)
    final = {k: history[k][-1] for k in history if k in ("accuracy", "bits_per_char",
                                                          "test_loss", "val_loss")}
    print("timing a few training steps on the kernels and on the reference path ...",
          file=sys.stderr)
    timing = _time_paths(task, args)
    rates = _firing_rates(task)
    energy_report = _energy(task, args)
    wall = time.perf_counter() - t_start
    import spikeops

    facts = spikeops.info()
    meta = {
        "task": args.task, "model": args.model, "size": args.size, "quick": args.quick,
        "T": getattr(task.model, "T", None) if args.task == "digits" else None,
        "nm": args.nm,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "seed": args.seed, "device": args.device, "threads": torch.get_num_threads(),
        "parameters": n_params, "steps_per_epoch": task.steps_per_epoch,
        "wall_seconds": wall, "train_seconds": history["train_seconds"],
        "final": final, "data": task.info, "timing": timing,
        "energy_samples": task.example_count,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "spikeops": facts.get("version"), "cpu_isa": facts.get("cpu_isa_active"),
                    "extension": facts.get("extension_loaded")},
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m spikeops demo " + " ".join(args.argv),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)          # mkdtemp makes it private
        write_report(tmp, meta, history, rates, energy_report)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _summary(meta, rates, energy_report, out)
    return out


def _summary(meta, rates, energy_report, out):
    f, t = meta["final"], meta["timing"]
    head = (f"test accuracy {f['accuracy']:.2%}" if "accuracy" in f
            else f"validation {f['bits_per_char']:.3f} bits/char")
    print(f"\n{head}; training {meta['train_seconds']:.1f} s, total {meta['wall_seconds']:.1f} s")
    line = (f"time per training step: kernels {t['kernels']['median_s'] * 1e3:.1f} ms, "
            f"reference {t['reference']['median_s'] * 1e3:.1f} ms ({t['speedup']:.2f}x)")
    if "tokens_per_s" in t["kernels"]:
        line += (f"; {t['kernels']['tokens_per_s']:.0f} vs "
                 f"{t['reference']['tokens_per_s']:.0f} tokens/s")
    print(line)
    mean_rate = (sum(r["firing_rate"] for r in rates.values()) / len(rates)) if rates else 0.0
    tot = energy_report.totals()
    print(f"{len(rates)} spiking layers, mean firing rate {mean_rate:.3f}; energy "
          f"{tot['energy_pj'] * 1e-9 / meta['energy_samples']:.4g} mJ per sample "
          f"(ANN equivalent {tot['ann_energy_pj'] * 1e-9 / meta['energy_samples']:.4g} mJ)")
    print(f"report: {out / 'report.md'}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        _check_args(args)
        _check_deps()
        run(args)
    except DemoError as err:
        print(f"python -m spikeops demo: error: {err}", file=sys.stderr)
        return 2
    return 0
