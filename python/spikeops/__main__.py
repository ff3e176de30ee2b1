"""`python -m spikeops {demo,info,bench}`: the demo, build facts and the benchmark harness."""
from __future__ import annotations

import argparse
import json
import sys


def _info(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spikeops info",
                                     description="Print what spikeops was built with and uses.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    import spikeops

    facts = spikeops.info()
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            if isinstance(value, (list, tuple)):
                value = ", ".join(map(str, value)) or "-"
            print(f"{key:<{width}}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo": "train a spiking model, compare kernels and references, write a report",
                "info": "build facts (version, torch, CPU ISAs, CUDA archs)",
                "bench": "time the kernels against references and peers"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: python -m spikeops {demo,info,bench} [options]\n")
        for name, text in commands.items():
            print(f"  {name:<6} {text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    if argv[0] == "info":
        return _info(argv[1:])
    if argv[0] == "demo":
        from .demo import main as demo_main

        return demo_main(argv[1:])
    from .bench.cli import main as bench_main

    return bench_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
