"""Benchmark: the local demo's wall time and each phase's time (and, once the drill runs in the demo,
its recovery seconds per path). Prints figures; asserts nothing. Needs root, like the demo.

    python benchmarks/demo_time.py [--runs N] [--compression X] [--save FILE] [--baseline FILE]

``--save`` writes the medians (JSON); ``--baseline`` prints them side by side with a saved run's, with
the ratio after/before per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from regionha.local.demo import Demo
from regionha.local.runtime import LocalRuntime, local_topology
from regionha.topology import load_topology


def main() -> int:
    # As `regionha local demo` runs it: the handlers log errors only (their JSON lines cost time too).
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--compression", type=float, default=20.0)
    parser.add_argument("--save", type=Path, help="write the medians here (JSON)")
    parser.add_argument("--baseline", type=Path, help="medians saved by an earlier --save, to compare with")
    args = parser.parse_args()
    totals, phases, recovery = [], {}, {}
    for i in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="regionha-local-"))
        try:
            runtime = LocalRuntime(local_topology(load_topology(), ttl=3), compression=args.compression,
                                   workdir=workdir)
            report = Demo(runtime, lambda _: None, out_dir=workdir / "out").run()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        totals.append(report["seconds"])
        for p in report["phases"]:
            phases.setdefault(p["name"], []).append(p["seconds"])
        for path, seconds in ((report.get("drill") or {}).get("recovery_seconds") or {}).items():
            recovery.setdefault(path, []).append(seconds)
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"run {i + 1}: {'PASSED' if report['ok'] else 'FAILED'} in {report['seconds']:.1f} s "
              f"(load average after: {load})", flush=True)
    print(f"\ndemo wall time: median {statistics.median(totals):.1f} s over {len(totals)} run(s)")
    for name, values in phases.items():
        print(f"  {name:<48} median {statistics.median(values):6.2f} s  max {max(values):6.2f} s")
    for path, values in recovery.items():
        print(f"  recovery {path:<39} median {statistics.median(values):6.2f} s  max {max(values):6.2f} s")
    medians = {"total": statistics.median(totals), "compression": args.compression,
               **{name: statistics.median(values) for name, values in phases.items()}}
    if args.save:
        args.save.write_text(json.dumps(medians, indent=1) + "\n")
    if args.baseline:
        before = json.loads(args.baseline.read_text())
        print(f"\n{'median seconds':<54} {'before':>7} {'after':>7} {'after/before':>12}")
        for name, value in medians.items():
            if name != "compression" and isinstance(before.get(name), int | float):
                ratio = value / before[name] if before[name] else float("nan")
                print(f"  {name:<52} {before[name]:7.2f} {value:7.2f} {ratio:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
