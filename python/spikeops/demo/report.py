"""The demo's report: PNG plots (matplotlib, Agg) and a Markdown page, plus JSON data."""
from __future__ import annotations

import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def plot_curves(path: Path, history: dict, metric: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = list(range(1, len(history["step_loss"]) + 1))
    ax[0].plot(steps, history["step_loss"], lw=0.8, alpha=0.6, label="per step")
    per = len(steps) / max(len(history["epoch"]), 1)
    ax[0].plot([e * per for e in history["epoch"]], history["train_loss"], "o-",
               label="epoch mean")
    ax[0].set_xlabel("training step")
    ax[0].set_ylabel("training loss")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    ys = history[metric]
    ax[1].plot(history["epoch"], [100 * v for v in ys] if metric == "accuracy" else ys, "o-",
               color="C2")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylabel("test accuracy (%)" if metric == "accuracy"
                     else "validation bits per character")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rates(path: Path, rates: dict) -> None:
    plt = _plt()
    names = list(rates)
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.2))
    vals = [rates[n]["firing_rate"] for n in names]
    ax.barh(range(len(names)), vals, color="C1")
    ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (fraction of non-zero spikes per neuron and step)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_energy(path: Path, layers: list, samples: int, top: int = 25) -> None:
    plt = _plt()
    rows = sorted(layers, key=lambda r: -r.energy_pj)[:top]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.3))
    y = list(range(len(rows)))
    ax.barh([v - 0.2 for v in y], [r.energy_pj * 1e-6 / samples for r in rows], 0.4,
            label="SNN (this model)")
    ax.barh([v + 0.2 for v in y], [r.ann_energy_pj * 1e-6 / samples for r in rows], 0.4,
            label="ANN equivalent")
    ax.set_yticks(y, [_short(r.name) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("energy per sample (µJ, 45 nm)")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speed(path: Path, timing: dict) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ms = [timing[p]["median_s"] * 1e3 for p in ("kernels", "reference")]
    bars = ax.bar(["spikeops kernels", "reference (PyTorch)"], ms, color=["C0", "C7"])
    for b, v in zip(bars, ms):
        ax.annotate(f"{v:.1f} ms", (b.get_x() + b.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=9)
    ax.set_ylabel("time per training step (ms, median)")
    ax.set_title(f"speedup {timing['speedup']:.2f}x")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, spec=".4g"):
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def markdown(meta: dict, history: dict, rates: dict, energy_report) -> str:
    f, t, n = meta["final"], meta["timing"], meta["energy_samples"]
    tot = energy_report.totals()
    lines = [f"# spikeops demo: {meta['task']} with {meta['model']}-{meta['size']}", ""]
    if meta["quick"]:
        lines += ["*Quick smoke-test run (--quick): a reduced model and data subset; the "
                  "numbers below say nothing about the full demo.*", ""]
    lines += ["## Result", ""]
    if "accuracy" in f:
        lines.append(f"- **test accuracy {f['accuracy']:.2%}** after {meta['epochs']} epoch(s) "
                     f"(test loss {f['test_loss']:.4f})")
    else:
        lines.append(f"- **validation {f['bits_per_char']:.3f} bits per character** after "
                     f"{meta['epochs']} epoch(s) of {meta['steps_per_epoch']} steps")
    lines += [
        f"- training {meta['train_seconds']:.1f} s; whole run {meta['wall_seconds']:.1f} s "
        f"(data, training, evaluation, timing, energy)",
        f"- time per training step (median of {t['kernels']['steps']}, interleaved): spikeops "
        f"kernels {t['kernels']['median_s'] * 1e3:.1f} ms, reference path "
        f"{t['reference']['median_s'] * 1e3:.1f} ms: **{t['speedup']:.2f}x**",
    ]
    if "tokens_per_s" in t["kernels"]:
        lines.append(f"- training throughput: {t['kernels']['tokens_per_s']:.0f} tokens/s on the "
                     f"kernels, {t['reference']['tokens_per_s']:.0f} tokens/s on the reference")
    ratio = tot["snn_over_ann"]
    lines += [
        f"- energy estimate (45 nm, STEP-style): {tot['energy_pj'] * 1e-9 / n:.4g} mJ per "
        f"sample, ANN equivalent {tot['ann_energy_pj'] * 1e-9 / n:.4g} mJ"
        + (f" (SNN / ANN = {ratio:.3f})" if ratio is not None else ""),
        "", "![loss and accuracy](curves.png)", "",
        "## Setup", "", "| | |", "|---|---|",
    ]
    d = meta["data"]
    rows = [("command", f"`{meta['command']}`"), ("data", d.get("data", "")),
            ("data sizes", ", ".join(f"{k} {v}" for k, v in d.items() if k != "data")),
            ("model", f"{meta['model']} ({meta['size']}), {meta['parameters']:,} parameters"
                      + (f", T = {meta['T']}" if meta["T"] else "")
                      + (f", N:M {meta['nm']}" if meta["nm"] else "")),
            ("training", f"{meta['epochs']} epochs x {meta['steps_per_epoch']} steps, batch "
                         f"{meta['batch_size']}, AdamW lr {meta['lr']} (one-cycle), seed "
                         f"{meta['seed']}"),
            ("device", f"{meta['device']}, {meta['threads']} threads"),
            ("machine", f"{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, spikeops "
                        f"{m['spikeops']}, CPU ISA {m['cpu_isa']}" if (m := meta["machine"])
                        else ""),
            ("date", meta["date"])]
    lines += [f"| {a} | {b} |" for a, b in rows]
    lines += ["", "## Training", "", "| epoch | train loss | "
              + " | ".join(k for k in ("accuracy", "bits_per_char", "test_loss", "val_loss")
                           if k in history) + " | seconds |",
              "|---|---|" + "---|" * sum(k in history for k in ("accuracy", "bits_per_char",
                                                                  "test_loss", "val_loss"))
              + "---|"]
    for i, e in enumerate(history["epoch"]):
        vals = [_fmt(history[k][i]) for k in ("accuracy", "bits_per_char", "test_loss",
                                              "val_loss") if k in history]
        lines.append(f"| {e} | {history['train_loss'][i]:.4f} | " + " | ".join(vals)
                     + f" | {history['epoch_seconds'][i]:.1f} |")
    lines += ["", "## Kernels against the reference path", "",
              "The same trained weights, copied twice; each timed step is a forward, backward "
              "and AdamW update on one training batch, alternating between the two paths "
              "(`spikeops.use_reference()` for the reference); one warm-up step each first.",
              "", "| path | median ms / step | min ms / step |"
              + (" tokens / s |" if "tokens_per_s" in t["kernels"] else ""),
              "|---|---|---|" + ("---|" if "tokens_per_s" in t["kernels"] else "")]
    for p in ("kernels", "reference"):
        lines.append(f"| {p} | {t[p]['median_s'] * 1e3:.2f} | {t[p]['min_s'] * 1e3:.2f} |"
                     + (f" {t[p]['tokens_per_s']:.0f} |" if "tokens_per_s" in t[p] else ""))
    lines += ["", f"Speedup of the kernels: **{t['speedup']:.2f}x**. On a shared machine these "
              "times drift with the load; the ratio of two interleaved measurements is the "
              "more stable figure.", "", "![speed](speedup.png)", "",
              "## Firing rates", "",
              "Over one evaluation pass: the fraction of non-zero outputs per neuron and time "
              "step, and the mean spike value (integer I-LIF spikes count 0..D).", "",
              "| layer | neuron | firing rate | mean spike |", "|---|---|---|---|"]
    for name, r in rates.items():
        lines.append(f"| `{name}` | {r['kind']} | {r['firing_rate']:.4f} | "
                     f"{r['mean_spike']:.4f} |")
    if rates:
        mean = sum(r["firing_rate"] for r in rates.values()) / len(rates)
        lines.append(f"| mean of {len(rates)} layers | | {mean:.4f} | |")
    lines += ["", "![firing rates](firing_rates.png)", "",
              "## Energy estimate", "",
              f"`spikeops.energy.estimate` on {n} test samples (one forward, no grad), "
              f"divided by {n}: {tot['macs'] / n:.4g} MACs and {tot['acs'] / n:.4g} "
              f"accumulates per sample; compute {tot['compute_pj'] * 1e-9 / n:.4g} mJ, "
              f"memory {tot['memory_pj'] * 1e-9 / n:.4g} mJ. Constants: E_MAC "
              f"{energy_report.constants.e_mac_pj} pJ, E_AC {energy_report.constants.e_ac_pj} "
              "pJ, SRAM per bit as in `spikeops/energy.py`. Full table: `energy.txt`, "
              "`energy.json`.", "", "![energy per layer](energy.png)", "",
              "| layer | kind | input | fire | MACs / sample | ACs / sample | µJ / sample | "
              "ANN µJ / sample |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(energy_report.layers, key=lambda r: -r.energy_pj)[:15]:
        lines.append(f"| `{r.name}` | {r.kind} | {r.input_kind} | {r.firing_rate:.3f} | "
                     f"{r.macs / n:.4g} | {r.acs / n:.4g} | {r.energy_pj * 1e-6 / n:.4g} | "
                     f"{r.ann_energy_pj * 1e-6 / n:.4g} |")
    if len(energy_report.layers) > 15:
        lines.append(f"| … {len(energy_report.layers) - 15} more rows in energy.txt | | | | | "
                     "| | |")
    lines += ["", "Files: `metrics.json` (every number above), `history.json`, `energy.json`, "
              "`energy.txt`, the PNG plots.", ""]
    return "\n".join(lines)


def write_report(folder: Path, meta: dict, history: dict, rates: dict, energy_report) -> None:
    folder = Path(folder)
    metric = "accuracy" if "accuracy" in history else "bits_per_char"
    plot_curves(folder / "curves.png", history, metric)
    plot_rates(folder / "firing_rates.png", rates)
    plot_energy(folder / "energy.png", energy_report.layers, meta["energy_samples"])
    plot_speed(folder / "speedup.png", meta["timing"])
    energy_report.to_json(folder / "energy.json")
    (folder / "energy.txt").write_text(energy_report.table() + "\n")
    (folder / "metrics.json").write_text(json.dumps(
        {**meta, "firing_rates": rates, "energy_totals": energy_report.totals()}, indent=2))
    (folder / "history.json").write_text(json.dumps(history, indent=2))
    (folder / "report.md").write_text(markdown(meta, history, rates, energy_report))
