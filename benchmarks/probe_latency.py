"""Latency of ``regionha.watch.probe.probe`` against the scripted loopback DNS server (tests/dnsfake.py).

    python benchmarks/probe_latency.py [--count 200] [--tcp]

Prints p50/p95/max of the latency the probe itself reports, for plain UDP answers or (``--tcp``)
answers truncated over UDP and fetched again over TCP. It measures the probe's own overhead (socket
setup, dnspython encode/parse), which bounds how short a canary's timeout can sensibly be.
Loopback only: in a network namespace of its own holding only loopback (needs root), with the
network guard in local mode.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
from pathlib import Path

from regionha import netguard
from regionha.local.host.netns import Namespace
from regionha.watch.probe import ProbeConfig, probe

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dnsfake import FakeDNSServer, answer, truncated  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--tcp", action="store_true", help="truncate over UDP: every probe falls back to TCP")
    args = parser.parse_args(argv)

    os.environ[netguard.LOCAL_ENV] = "1"  # this benchmark is local: loopback only
    action = answer("10.1.0.10")
    if args.tcp:
        action = truncated(action)
    with Namespace(), FakeDNSServer(action) as server:
        config = ProbeConfig(
            name="db.cluster.local.",
            server=server.address,
            port=server.port,
            expected=frozenset({"10.1.0.10"}),
        )
        results = [probe(config) for _ in range(args.count)]

    outcomes = collections.Counter(r.outcome for r in results)
    latencies = sorted(r.latency_ms for r in results)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    transport = "udp->tcp" if args.tcp else "udp"
    print(
        f"{args.count} probes ({transport}): p50 {cuts[49]:.3f} ms  p95 {cuts[94]:.3f} ms  "
        f"max {latencies[-1]:.3f} ms  outcomes {dict(outcomes)}"
    )
    return 0 if outcomes == {"ok": args.count} else 1


if __name__ == "__main__":
    sys.exit(main())
