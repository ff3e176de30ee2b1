"""``python -m spikeops bench``: time every registered op against its reference and peers.

Exit codes: 0 measured; 1 a spikeops or reference variant raised; 2 bad usage (unknown
--op, --device cuda without a GPU, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Sequence

import torch

from . import harness, registry

_SPEEDUP_OF = ("reference", "reference_compiled", "peer")
_SHORT = {"spikeops": "spikeops", "reference": "ref", "reference_compiled": "compiled",
          "peer": "peer"}
_TABLE_WIDTH = 170  # what the table needs; rich would otherwise elide cells to fit 80


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spikeops bench",
        description="Time spikeops kernels against the PyTorch reference, the reference "
                    "under torch.compile and the best installed peer, with roofline "
                    "fractions measured in the same run.")
    p.add_argument("--op", metavar="NAME",
                   help="only entries whose name contains NAME; matches at the start of a"
                        " word of the name win ('if' selects if_*, 'lif' not plif/alif)")
    p.add_argument("--quick", action="store_true",
                   help="small shapes and few repetitions (a smoke run, not a measurement);"
                        " implies --no-compile unless --compile is given")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--json", metavar="FILE", help="also write header and rows as JSON")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) (default: leave torch's choice)")
    comp = p.add_mutually_exclusive_group()
    comp.add_argument("--no-compile", dest="compile", action="store_false", default=None,
                      help="skip the torch.compile'd reference")
    comp.add_argument("--compile", dest="compile", action="store_true",
                      help="time the torch.compile'd reference even with --quick")
    p.add_argument("--compile-timeout", type=float, default=300.0, metavar="S",
                   help="give up on a variant whose first call (incl. compilation) takes "
                        "longer than S seconds (default 300)")
    p.add_argument("--list", action="store_true", help="list matching entries and exit")
    return p


def _fail(msg: str) -> int:
    print(f"spikeops bench: error: {msg}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------

def _ms(res: dict[str, Any]) -> str:
    if "median_s" not in res:
        return "n/a"
    spread = 100.0 * res["iqr_s"] / res["median_s"] if res["median_s"] > 0 else 0.0
    ms = res["median_s"] * 1e3
    digits = 0 if ms >= 100 else 1 if ms >= 10 else 2 if ms >= 1 else 3
    return f"{ms:.{digits}f} ±{spread:.0f}%"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100.0 * v:.0f}%"


def _si(v: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if v >= scale:
            return f"{v / scale:.1f} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def _header_lines(h: dict[str, Any]) -> list[str]:
    gpu = h["gpu"]["name"] if h.get("gpu") else "none used"
    lines = [
        f"spikeops bench  {h['date']}  host {h['host']}",
        f"cpu: {h['cpu']} ({h['cpu_count']} logical cores, {h['cpu_affinity']} usable)"
        f"  torch threads: {h['torch_threads']}  gpu: {gpu}",
        f"torch {h['torch']} (cuda {h['torch_cuda']})  python {h['python']}  "
        f"spikeops {h['spikeops']}  spikingjelly {h['peers'].get('spikingjelly') or '-'}",
    ]
    info = h.get("spikeops_info")
    if info is None:
        lines.append("spikeops.info(): not available")
    else:
        lines.append("spikeops.info(): " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if h["env"]:
        lines.append("env: " + " ".join(f"{k}={v}" for k, v in h["env"].items()))
    return lines


def _roofline_line(roof: dict[str, Any]) -> str:
    c, f, g = roof["copy"], roof["clone"], roof["sgemm"]
    return (f"roofline: {c['what']} {_si(c['bandwidth_Bps'], 'B/s')} | "
            f"{f['what']} {_si(f['bandwidth_Bps'], 'B/s')} | "
            f"{g['what']} {_si(g['rate_flops'], 'FLOP/s')}")


_COLUMNS = (["op", "shape", "dtype"] + [_SHORT[v] for v in registry.VARIANTS]
            + [f"x{_SHORT[v]}" for v in _SPEEDUP_OF] + ["roof copy", "roof clone"])


def _cells(row: dict[str, Any]) -> list[str]:
    var, spd, roof = row["variants"], row.get("speedup", {}), row.get("roofline", {})
    if "sgemm" in roof and "copy" not in roof:
        roof_cells = [f"{_pct(roof['sgemm'])} gemm", ""]
    else:
        roof_cells = [_pct(roof.get("copy")), _pct(roof.get("clone"))]
    return ([row["name"], "x".join(map(str, row["shape"])), row["dtype"]]
            + [_ms(var.get(v, {})) for v in registry.VARIANTS]
            + [_x(spd.get(v)) for v in _SPEEDUP_OF] + roof_cells)


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    """n/a reasons and peer facts, each distinct text once."""
    seen: dict[str, list[str]] = {}
    for row in rows:
        if "error" in row:
            seen.setdefault(row["error"], []).append(row["name"])
            continue
        for v, res in row["variants"].items():
            if "na" in res:
                seen.setdefault(f"{_SHORT[v]} n/a: {res['na']}", []).append(row["name"])
        for v, note in row["notes"].items():
            seen.setdefault(f"{_SHORT.get(v, v)}: {note}", []).append(row["name"])
    out = []
    for text, names in seen.items():
        where = "all rows" if len(names) == len(rows) > 1 else ", ".join(names)
        out.append(f"- {text}  [{where}]")
    return out


def _print_report(header: dict[str, Any], roof: dict[str, Any],
                  rows: list[dict[str, Any]]) -> None:
    legend = ("times: median in ms, ±IQR as % of the median; xV: V's time / spikeops' time;"
              " roof: (bytes / copy bandwidth) / spikeops' time, copy into preallocated"
              " (copy) and into fresh memory (clone)")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None  # noqa: N806
    if Console is not None:
        console = Console()
        if console.width < _TABLE_WIDTH:
            console = Console(width=_TABLE_WIDTH)
        for line in _header_lines(header) + [_roofline_line(roof)]:
            console.print(line, highlight=False, markup=False)
        table = Table(show_lines=False, header_style="bold")
        for i, col in enumerate(_COLUMNS):
            table.add_column(col, justify="left" if i < 3 else "right",
                             no_wrap=i == 0)
        for row in rows:
            table.add_row(*_cells(row))
        console.print(table)
        console.print(legend, highlight=False, markup=False)
        for line in _notes(rows):
            console.print(line, highlight=False, markup=False)
        return
    lines = _header_lines(header) + [_roofline_line(roof), ""]
    grid = [_COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(_COLUMNS))]
    for j, r in enumerate(grid):
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", legend] + _notes(rows)
    print("\n".join(lines))


def _write_json(path: str, payload: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bench-", suffix=".json.tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # tolerate being handed the subcommand too
        argv = argv[1:]
    args = _parser().parse_args(argv)

    if args.threads is not None:
        if args.threads < 1:
            return _fail(f"--threads: expected a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda: no CUDA GPU is available to this torch "
                     f"({torch.__version__}, built with cuda {torch.version.cuda})")
    device = torch.device(args.device)
    compile_reference = (not args.quick) if args.compile is None else args.compile

    selected = registry.entries(device=args.device, pattern=args.op)
    if not selected:
        names = ", ".join(e.name for e in registry.entries(device=args.device))
        what = f"--op {args.op!r} matches no" if args.op else "no"
        return _fail(f"{what} benchmark entry on {args.device}; available: {names}")
    if args.list:
        for e in selected:
            print(f"{e.name:32s} {e.family:10s} {'x'.join(map(str, e.shape_for(args.quick))):>16s}"
                  f" {str(e.dtype).removeprefix('torch.')}  {e.description}")
        return 0

    budget = (harness.Budget.quick(args.compile_timeout) if args.quick
              else harness.Budget(first_call_timeout=args.compile_timeout))
    header = harness.collect_header(device, {**vars(args), "compile": compile_reference})

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = (tqdm(total=len(selected) * len(registry.VARIANTS) + 1, desc="roofline",
                file=sys.stderr, leave=False, dynamic_ncols=True) if tqdm else None)
    rows: list[dict[str, Any]] = []
    try:
        roof = harness.measure_roofline(device, budget, args.quick)
        if bar:
            bar.update()
        for entry in selected:
            def on_variant(v: str, name: str = entry.name) -> None:
                if bar:
                    bar.set_description(f"{name} {_SHORT[v]}")
            rows.append(harness.run_entry(entry, device, budget, roof, quick=args.quick,
                                          compile_reference=compile_reference,
                                          on_variant=on_variant))
            if bar:
                bar.update(len(registry.VARIANTS))
    finally:
        if bar:
            bar.close()

    _print_report(header, roof, rows)
    if args.json:
        _write_json(args.json, {"schema": 1, "header": header, "roofline": roof,
                                "rows": rows})
        print(f"wrote {args.json}")
    failed = [f"{r['name']}:{v}" for r in rows for v in r["failed"]]
    if failed:
        print(f"spikeops bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
