"""Benchmark: the whole catch matrix (``regionha prove``): per defect, the detection time of each catcher
(emulated seconds), and the wall time per defect and in total. Prints figures; asserts nothing. Needs
root, like the demo (run it inside ``unshare -n``).

    python benchmarks/prove_matrix.py [--no-drill] [--only DEFECT ...] [--compression X]
"""

from __future__ import annotations

import argparse
import sys

from regionha.local.prove import WATCH_MINUTES, Prove, print_report, select
from regionha.local.prove_catalogue import DEFECTS
from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import load_topology


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-drill", dest="drill", action="store_false")
    parser.add_argument("--only", action="append")
    parser.add_argument("--compression", type=float, default=20.0)
    parser.add_argument("--watch-minutes", type=float, default=WATCH_MINUTES)
    args = parser.parse_args()
    runtime = LocalRuntime(local_topology(load_topology(), ttl=3), compression=args.compression)
    report = Prove(runtime, select(DEFECTS, args.only), drill=args.drill, watch_minutes=args.watch_minutes,
                   say=lambda line: print(line, flush=True)).run()
    print_report(report)
    for r in report["rows"]:
        print(f"  {r['defect']:<28} wall {r['real_seconds']:6.1f} s  watched {r['watched_seconds']:6.0f} emulated s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
