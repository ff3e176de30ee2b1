"""Render a bench JSON file as the Markdown table the README shows.

    python -m spikeops.bench.report bench/results/<machine>-<date>.json
"""
from __future__ import annotations

import json
import sys


def _ms(variant: dict | None) -> str:
    if not variant or "median_s" not in variant:
        return "n/a"
    return f"{variant['median_s'] * 1e3:.2f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}×"


def markdown(result: dict) -> str:
    h = result["header"]
    roof = result.get("roofline", {})
    lines = [
        f"Machine: {h.get('cpu')} ({h.get('cpu_count')} cores), {h.get('torch_threads')} threads, "
        f"{h.get('gpu') or 'no GPU'}; torch {h.get('torch')}; {h.get('date')}.",
        "",
        "| op | shape | dtype | spikeops ms | reference ms | ref. compiled ms | peer ms "
        "| × ref | × compiled | × peer | roofline |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        v, s = row["variants"], row.get("speedup", {})
        shape = "×".join(map(str, row["shape"]))
        # Bytes-bound rows: fraction of the copy bandwidth; FLOP-bound: of the sgemm rate.
        fracs = row.get("roofline", {})
        roofline = ("n/a" if not fracs else f"{fracs['copy']:.0%} copy" if "copy" in fracs
                    else f"{fracs['sgemm']:.0%} sgemm")
        lines.append(
            f"| {row['name']} | {shape} | {row['dtype']} | {_ms(v.get('spikeops'))} "
            f"| {_ms(v.get('reference'))} | {_ms(v.get('reference_compiled'))} "
            f"| {_ms(v.get('peer'))} | {_x(s.get('reference'))} "
            f"| {_x(s.get('reference_compiled'))} | {_x(s.get('peer'))} "
            f"| {roofline} |")
    refs = []
    for key, ref in roof.items():
        if "bandwidth_Bps" in ref:
            refs.append(f"{ref['what']}: {ref['bandwidth_Bps'] / 1e9:.1f} GB/s")
        elif "rate_flops" in ref:
            refs.append(f"{ref['what']}: {ref['rate_flops'] / 1e9:.0f} GFLOP/s")
    if refs:
        lines += ["", "Roofline references measured in the same run: " + "; ".join(refs) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m spikeops.bench.report RESULTS.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        print(markdown(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
