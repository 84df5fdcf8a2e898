"""``regionha canary run``: the canary's probes from any host (a real on-prem machine), as a table.

The same ``run_canary`` as the Lambda: every forwarder path address, the on-prem resolver and the
nodes, all at once. The truth is the record in Route 53 (needs AWS credentials) unless ``--expect``
gives it. ``--publish`` puts the same datapoints with PutMetricData, into the client site's region
(where the stack and its alarms live) unless ``--region`` says otherwise.

Two modes. Real network (the default): the topology's own addresses, from this host; before sending
anything the command says on stderr that it probes the real network and lists every address it will
reach. Local (``REGIONHA_LOCAL=1``, which ``regionha local exec`` sets): cloud addresses map onto
loopback, probes leave from the client site's loopback image and the socket guard refuses anything
else; ``regionha local exec -- regionha canary run`` probes a running local runtime.

``--interval S`` starts a round every S seconds of the environment's clock (the local runtime's
emulated one under ``REGIONHA_CLOCK``), rounds overlapping when one is slow, each published stamped
with its slot. The on-prem agent (agent/regionha-canary.service) adds ``--serve-probes`` (answer the
drill's and the failover controller's probe requests: ``regionha.watch.agent_requests``) and
``--wait-for-record`` (publish nothing until the build made the record).

``--output text`` (default) prints a table per run; ``--output json`` one JSON object per run, one per
line, on stdout (what it will reach and what it published go to stderr).

Exit codes: 0 every path of every run succeeded, 1 some path failed (or publishing failed), 2 the
command could not run (bad arguments, topology or overrides, no access to the truth).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from regionha.cli.output import EXIT_FAILED, EXIT_INVALID, EXIT_OK, add_output_argument

# Rounds of a slow run overlap (a silent path costs one probe timeout); more than this wait their turn.
MAX_OVERLAPPING_ROUNDS = 6


def _address(text: str, what: str) -> tuple[str, tuple[str, int]]:
    """NAME=HOST:PORT -> (NAME, (HOST, PORT)); ValueError says what is wrong."""
    name, sep, target = text.rpartition("=")
    host, colon, port = target.rpartition(":")
    if not sep or not name or not colon:
        raise ValueError(f"{what} {text!r}: expected NAME=HOST:PORT")
    try:
        ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"{what} {text!r}: HOST must be an IPv4 address and PORT a number") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"{what} {text!r}: PORT must be 1-65535")
    return name, (host, number)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_run(run: Any) -> str:
    """A header line (time, record, truth, run time) and one row per path."""
    truth = run.truth
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.started_at))
    record = f"{truth.ip} ({truth.node or 'no node'})" if truth.ip else "missing"
    lines = [
        f"{when} deployment {run.deployment}: record -> {record}, run {run.duration_ms:.0f} ms, "
        f"failover {'healthy' if run.failover_healthy else 'FAILED'}"
    ]
    rows = [("PATH", "OUTCOME", "ANSWER", "TRUTH?", "NODE", "LATENCY")]
    for p in run.paths:
        node = p.node or "-"
        if p.node and not p.node_reachable:
            node += " (down)"
        rows.append((p.path, p.outcome, ",".join(p.answers) or "-", _yes(p.matches_truth), node,
                     f"{p.latency_ms:.1f} ms"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def real_network_notice(
    topology: Any, servers: dict[str, tuple[str, int]], nodes: dict[str, tuple[str, int]], *,
    read_record: bool, publish_region: str | None, serve_region: str | None = None,
) -> str:
    """What a real-network run will reach, one line per destination, for stderr before the first probe."""
    from regionha.watch.canary import DNS_PORT, canary_targets

    lines = [
        "regionha canary run: probing the REAL network from this host (REGIONHA_LOCAL is not set; "
        "`regionha local exec -- regionha canary run` probes a local runtime instead). It will reach:"
    ]
    for t in canary_targets(topology):
        host, port = servers.get(t.path, (t.server, DNS_PORT))
        lines.append(f"  DNS (UDP, TCP on truncation) {host}:{port}   # {t.path}")
    for n in topology.nodes:
        host, port = nodes.get(n.name, (str(n.ip), n.port))
        lines.append(f"  TCP {host}:{port}   # node {n.name}'s service port")
    if read_record:
        lines.append(f"  AWS Route 53 (ListResourceRecordSets): the record {topology.dns.record.name}")
    if publish_region:
        lines.append(f"  AWS CloudWatch (PutMetricData) in {publish_region}")
    if serve_region:
        lines.append(f"  AWS SQS (ReceiveMessage) and DynamoDB (PutItem) in {serve_region}: probe requests, replies")
    return "\n".join(lines)


def cmd_canary_run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from regionha import netguard
    from regionha.aws import Clients, stack_region
    from regionha.cli import _report, default_topology_path, read_topology
    from regionha.errors import ConfigurationError
    from regionha.topology import TopologyError
    from regionha.watch import canary, metrics

    try:
        topology = read_topology(Path(args.topology) if args.topology else default_topology_path())
    except TopologyError as e:
        return _report(e)
    try:
        servers = dict(_address(s, "--server-map") for s in args.server_map)
        nodes = dict(_address(s, "--node-map") for s in args.node_map)
        expect = str(ipaddress.IPv4Address(args.expect)) if args.expect else None
    except ValueError as e:
        print(f"regionha canary run: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.once and args.count not in (None, 1):
        print("regionha canary run: --once runs once; drop --count or use --interval", file=sys.stderr)
        return EXIT_INVALID
    runs = 1 if args.once or args.interval is None else args.count
    if args.interval is None and args.count is not None:
        runs = args.count

    netguard.install_socket_guard()  # in local mode, nothing but loopback; elsewhere a no-op
    region = args.region or (topology.region_of(topology.client_vpc) if topology.client_vpc else None)
    if region is None and (args.publish or args.serve_probes):
        try:  # a real on-prem site has no client VPC: the stack's region (AWS_REGION, the profile)
            region = stack_region()
        except ConfigurationError as e:
            print(f"regionha canary run: {e}; give --region", file=sys.stderr)
            return EXIT_INVALID
    if not netguard.local_mode_enabled():
        print(real_network_notice(topology, servers, nodes, read_record=expect is None,
                                  publish_region=region if args.publish else None,
                                  serve_region=region if args.serve_probes else None), file=sys.stderr, flush=True)
    source = canary.client_source(topology) if netguard.local_mode_enabled() else None
    aws = Clients() if (expect is None or args.publish) else None
    as_json = args.output == "json"
    printing = threading.Lock()
    armed = threading.Event()  # --wait-for-record: the record has been seen once
    if not args.wait_for_record:
        armed.set()

    def one_round(slot: datetime) -> int:
        """Read the truth, probe, print, publish (stamped with the round's slot). Exit status of the round."""
        try:
            if expect is not None:
                truth = canary.truth_from_record(topology, {"ip": expect, "ttl": None})
            else:
                truth = canary.read_truth(topology, aws)
            if not armed.is_set():
                if truth.ip is None:
                    with printing:
                        print(f"regionha canary run: {topology.dns.record.name} does not exist yet (no build): "
                              "waiting for it before publishing", file=sys.stderr, flush=True)
                    return EXIT_OK
                armed.set()
            run = canary.run_canary(topology, truth, timeout=args.timeout, source=source,
                                    servers=servers, node_addresses=nodes)
        except ConfigurationError as e:
            with printing:
                print(f"regionha canary run: {e}", file=sys.stderr, flush=True)
            return EXIT_INVALID
        except (BotoCoreError, ClientError) as e:
            with printing:
                print(f"regionha canary run: cannot read the record from Route 53 ({e}); "
                      "give the expected address with --expect IP", file=sys.stderr, flush=True)
            return EXIT_INVALID
        status = EXIT_OK if run.all_succeeded else EXIT_FAILED
        published = None
        if args.publish:
            try:
                published = metrics.put_metric_data(canary.metrics(run), aws.client("cloudwatch", region),
                                                    timestamp=slot)
            except (BotoCoreError, ClientError) as e:
                published = e
                status = EXIT_FAILED
        with printing:
            # json: one JSON object per run, one per line (a single run is a single document).
            print(json.dumps(run.to_json()) if as_json else format_run(run), flush=True)
            if isinstance(published, int):
                print(f"published {published} datapoints to CloudWatch in {region}",
                      file=sys.stderr if as_json else sys.stdout, flush=True)
            elif published is not None:
                print(f"regionha canary run: publishing failed: {published}", file=sys.stderr, flush=True)
        return status

    serving = threading.Event()
    if args.serve_probes:
        from regionha.watch.agent_requests import serve_requests

        # The drill's probes and the controller's node checks, run here on the site (docs/onprem.md).
        threading.Thread(target=serve_requests, args=(topology, aws or Clients(), region),
                         kwargs={"source": source, "stop": serving}, name="probe-requests", daemon=True).start()
    try:
        return _run_rounds(one_round, runs, args.interval)
    finally:
        serving.set()


def _run_rounds(one_round: Any, runs: int | None, interval: float | None) -> int:
    """Run ``one_round(slot)`` ``runs`` times (None: until interrupted), a slot every ``interval``
    seconds of the environment's clock (``metrics.now``/``metrics.sleep``: real time, or the local
    runtime's emulated one). Like the canary function's rounds (``regionha.watch.rounds``) a slow round
    (a silent path costs a probe timeout) does not delay the next: rounds overlap, in threads; a slot
    already past is skipped. Without ``interval`` the runs follow each other. The worst exit status of
    the rounds; a round that could not run (2) stops the loop."""
    from regionha.watch import metrics

    status = EXIT_OK
    done = 0
    pending: list[Future[int]] = []
    start = metrics.now()
    k = 0
    with ThreadPoolExecutor(max_workers=MAX_OVERLAPPING_ROUNDS, thread_name_prefix="canary-round") as pool:
        try:
            while runs is None or done < runs:
                slot = start + timedelta(seconds=(interval or 0.0) * k)
                if interval is not None:
                    wait = (slot - metrics.now()).total_seconds()
                    if wait > 0:
                        metrics.sleep(wait)
                    elif -wait >= interval:  # overran: skip to the current slot
                        k += int(-wait // interval)
                        continue
                future = pool.submit(one_round, slot if interval is not None else metrics.now())
                pending.append(future)
                if interval is None:
                    future.result()
                done += 1
                k += 1
                for f in [f for f in pending if f.done()]:
                    pending.remove(f)
                    status = max(status, f.result())
                if status == EXIT_INVALID:
                    break
            for f in pending:
                status = max(status, f.result())
        except KeyboardInterrupt:
            pass
    return status


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("canary", help="run the canary's probes from this host")
    commands = group.add_subparsers(dest="canary_command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="probe every forwarder path, the on-prem resolver and the nodes; print a table",
        description="Probe every forwarder path address, the on-prem resolver and the nodes at once, "
        "compare with the record in Route 53 (or --expect) and print a table. Exit 0 when every path "
        "succeeded, 1 when one failed, 2 when the command could not run.",
        epilog="Modes: by default the real network: the topology's addresses as they are, from this host "
        "(an on-prem machine); it first lists on stderr everything it will reach. With REGIONHA_LOCAL=1 "
        "(set by `regionha local exec`): local mode, cloud addresses 10.a.b.c map onto loopback 127.a.b.c "
        "and nothing else may be reached; `regionha local exec -- regionha canary run` probes a running "
        "local runtime inside its network namespace.",
    )
    run.add_argument("--topology", metavar="FILE", help="topology YAML (default: the reference deployment)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one run (the default)")
    mode.add_argument("--interval", type=_positive(float), metavar="S", help="start a run every S seconds")
    run.add_argument("--count", type=_positive(int), metavar="N",
                     help="stop after N runs (default: 1, or forever with --interval)")
    run.add_argument("--server-map", action="append", default=[], metavar="TARGET=HOST:PORT",
                     help="send the probes of a target (a forwarder path address, or onprem) elsewhere "
                     "(e.g. a port-forward); repeatable")
    run.add_argument("--node-map", action="append", default=[], metavar="NODE=HOST:PORT",
                     help="check a node's service elsewhere; repeatable")
    run.add_argument("--expect", metavar="IP", help="the record's value, instead of reading Route 53")
    run.add_argument("--timeout", type=_positive(float), metavar="S",
                     help="bound of each probe (default: the topology's canary.timeout_seconds)")
    run.add_argument("--publish", action="store_true", help="put the metrics to CloudWatch (AWS credentials)")
    run.add_argument("--region", help="CloudWatch region for --publish (default: the client site's region)")
    run.add_argument("--serve-probes", action="store_true",
                     help="also answer the drill's and the failover controller's probe requests from the "
                     "deployment's queue (an on-prem site's agent: docs/onprem.md)")
    run.add_argument("--wait-for-record", action="store_true",
                     help="publish nothing until the record exists once (an agent installed before the build "
                     "must not feed the deployment's new alarms the failures of a half-built deployment)")
    add_output_argument(run)
    # Before --output existed: --json meant --output json; kept for old scripts, not shown.
    run.add_argument("--json", dest="output", action="store_const", const="json", help=argparse.SUPPRESS)
    run.set_defaults(handler=cmd_canary_run)
