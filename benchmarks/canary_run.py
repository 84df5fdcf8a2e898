"""Canary run time with every path healthy, and with one path silently dropping.

    python benchmarks/canary_run.py [--count 5] [--timeout S] [--drop PATH ...]

Runs ``regionha.watch.canary.run_canary`` for the reference topology against scripted DNS servers
(tests/dnsfake.py) and real HTTP node services, all on loopback in local mode. Probes run at once,
so the goal is that a silently dropping path costs no more than one probe timeout over the healthy
run, however many paths drop. Prints the median and the worst run time of each case and that cost.
Runs in a network namespace of its own holding only loopback (needs root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from regionha import netguard
from regionha.local.host.netns import Namespace
from regionha.local.host.nodes import NodeService
from regionha.topology import load_topology
from regionha.watch.canary import canary_targets, run_canary, truth_from_record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from dnsfake import FakeDNSServer, answer, drop  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5, help="runs per case")
    parser.add_argument("--timeout", type=float, help="probe timeout (default: the topology's)")
    parser.add_argument("--drop", action="append", metavar="PATH",
                        help="path(s) that drop silently in the second case (default: osaka-bind)")
    args = parser.parse_args(argv)

    os.environ[netguard.LOCAL_ENV] = "1"  # this benchmark is local: loopback only
    netguard.install_socket_guard()
    topology = load_topology()
    bound = args.timeout or topology.canary.timeout_seconds
    primary = topology.primary
    truth = truth_from_record(topology, {"ip": str(primary.ip), "ttl": topology.dns.record.ttl})
    paths = [t.path for t in canary_targets(topology)]
    dropping = args.drop or ["osaka-bind"]
    unknown = set(dropping) - set(paths)
    if unknown:
        parser.error(f"unknown path(s) {', '.join(sorted(unknown))}; paths: {', '.join(paths)}")

    with ExitStack() as stack:
        stack.enter_context(Namespace())  # first: the servers below live in it
        nodes = {}
        for i, node in enumerate(topology.nodes):
            service = NodeService(node.name, f"127.0.80.{i + 1}", 0)
            service.start()
            stack.callback(service.stop)
            nodes[node.name] = (service.host, service.port)

        def servers(drop_paths: list[str]) -> dict[str, tuple[str, int]]:
            out = {}
            for i, path in enumerate(paths):
                action = drop() if path in drop_paths else answer(str(primary.ip))
                server = stack.enter_context(FakeDNSServer(action, address=f"127.0.53.{i + 1}"))
                out[path] = (server.address, server.port)
            return out

        results = {}
        for case, drop_paths in (("healthy", []), (f"{'+'.join(dropping)} dropping", dropping)):
            targets = servers(drop_paths)
            times = []
            for _ in range(args.count):
                run = run_canary(topology, truth, timeout=bound, servers=targets, node_addresses=nodes)
                failed = sorted(p.path for p in run.paths if not p.success)
                if failed != sorted(drop_paths):
                    print(f"{case}: unexpected failures {failed}", file=sys.stderr)
                    return 1
                times.append(run.duration_ms)
            results[case] = times
            print(f"{case:28s} median {statistics.median(times):8.1f} ms   worst {max(times):8.1f} ms"
                  f"   ({args.count} runs, {len(paths)} paths + {len(nodes)} nodes)")

    healthy, dropped = results.values()
    cost = statistics.median(dropped) - statistics.median(healthy)
    verdict = "within" if max(dropped) - statistics.median(healthy) <= bound * 1000 * 1.1 else "OVER"
    print(f"dropping costs {cost:.1f} ms (median) against a probe timeout of {bound * 1000:.0f} ms: "
          f"{verdict} one probe timeout (+10%)")
    return 0 if verdict == "within" else 1


if __name__ == "__main__":
    sys.exit(main())
