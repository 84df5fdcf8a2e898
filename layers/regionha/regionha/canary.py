"""Canaries: resolve the record through every forwarder path from the client site and check the truth.

One run = probe every path at once (each Resolver endpoint IP alone, every BIND forwarder, and the
on-prem resolver that clients really use), compare the answers with the record's current value in
Route 53 (the truth), and check that the node the answer names answers on its service port as
itself. The result is plain data; ``metrics`` turns it into the datapoints that alarms watch.

IAM: route53:ListHostedZonesByName, route53:ListTagsForResource, route53:ListResourceRecordSets
(reading the truth); cloudwatch:PutMetricData only when publishing without EMF.
"""

from __future__ import annotations

import http.client
import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from regionha import netguard
from regionha.probe import ProbeConfig, ProbeResult, probe_many
from regionha.topology import Topology

ONPREM = "onprem"


@dataclass(frozen=True)
class CanaryTarget:
    """One server to probe: ``path`` is the metric label, ``forwarder`` the forwarder path it tests."""

    path: str
    forwarder: str
    server: str


@dataclass(frozen=True)
class Truth:
    """The record as Route 53 holds it now, and the node it names (None: no such node)."""

    ip: str | None
    ttl: int | None
    node: str | None


@dataclass(frozen=True)
class NodeCheck:
    ip: str
    reachable: bool
    name: str | None
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class PathResult:
    path: str
    forwarder: str
    outcome: str
    answers: tuple[str, ...]
    latency_ms: float
    matches_truth: bool
    node_reachable: bool
    node: str | None
    tcp: bool

    @property
    def success(self) -> bool:
        """The whole promise of a path: it resolves, to the truth, and that node answers as itself."""
        return self.outcome == "ok" and self.matches_truth and self.node_reachable


@dataclass(frozen=True)
class CanaryRun:
    deployment: str
    started_at: float
    duration_ms: float
    truth: Truth
    paths: tuple[PathResult, ...]
    nodes: dict[str, NodeCheck] = field(default_factory=dict)

    @property
    def failover_healthy(self) -> bool:
        """False when the record names an unhealthy node while another node is healthy."""
        healthy = {name for name, check in self.nodes.items() if check.reachable}
        return self.truth.node in healthy or not healthy

    @property
    def onprem(self) -> PathResult | None:
        return next((p for p in self.paths if p.forwarder == ONPREM), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 1),
            "truth": asdict(self.truth),
            "failover_healthy": self.failover_healthy,
            "paths": [asdict(p) | {"success": p.success} for p in self.paths],
            "nodes": {n: asdict(c) for n, c in self.nodes.items()},
        }


def canary_targets(topology: Topology) -> list[CanaryTarget]:
    """Every forwarder path address separately (an ENI can fail alone), then the on-prem resolver."""
    targets = []
    for path in topology.forwarder_paths:
        addresses = path.addresses()
        for ip in addresses:
            label = path.name if len(addresses) == 1 else f"{path.name}/{ip}"
            targets.append(CanaryTarget(label, path.name, str(ip)))
    targets.append(CanaryTarget(ONPREM, ONPREM, str(topology.client.dns_server.ip)))
    return targets


def client_source(topology: Topology) -> str:
    """The client-site address the local runtime probes from: the first free host of the client network.

    In AWS the canary's ENI has its own address; locally it needs a fixed one inside the client CIDR
    so that security groups and network ACLs judge it as they would judge the client.
    """
    used = {topology.client.dns_server.ip}
    hosts = topology.client.cidr.hosts()
    for ip in hosts:
        if int(ip) - int(topology.client.cidr.network_address) >= 4 and ip not in used:
            return str(ip)
    raise ValueError(f"client network {topology.client.cidr} has no free address")


def truth_from_record(topology: Topology, record: dict[str, Any] | None) -> Truth:
    if not record:
        return Truth(None, None, None)
    ip = ipaddress.IPv4Address(record["ip"])
    node = next((n.name for n in topology.nodes if n.ip == ip), None)
    return Truth(str(ip), record.get("ttl"), node)


def check_node(ip: str, port: int, timeout: float) -> NodeCheck:
    """GET / on the node's service port: reachable, and which node it says it is."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(netguard.resolve_target(ip), port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read(256).decode(errors="replace").strip()
        ok = resp.status == 200
        return NodeCheck(ip, ok, body if ok else None, (time.monotonic() - started) * 1000,
                         None if ok else f"HTTP {resp.status}")
    except (OSError, http.client.HTTPException) as e:
        return NodeCheck(ip, False, None, (time.monotonic() - started) * 1000, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


def run_canary(
    topology: Topology,
    truth: Truth,
    *,
    timeout: float | None = None,
    source: str | None = None,
    port: int = 53,
) -> CanaryRun:
    """Probe every target and every node at once; a run takes about the slowest probe.

    ``source`` (a cloud address of the client site) is only used in local mode, where the
    loopback image of the client must be the sender for ACLs and security groups to apply.
    """
    per_try = timeout or topology.canary.timeout_seconds
    started_at, t0 = time.time(), time.monotonic()
    expected = frozenset({truth.ip}) if truth.ip else frozenset()
    src = netguard.resolve_target(source) if (source and netguard.local_mode_enabled()) else None
    configs = {
        t.path: ProbeConfig(
            name=topology.dns.record.name,
            server=netguard.resolve_target(t.server),
            port=port,
            timeout=per_try,
            lifetime=per_try * 2 + 0.5,
            tries=2,
            source=src,
            expected=expected,
        )
        for t in canary_targets(topology)
    }
    node_port = {str(n.ip): n.port for n in topology.nodes}
    with ThreadPoolExecutor(max_workers=len(node_port) + 1, thread_name_prefix="canary") as pool:
        node_futures = {
            n.name: pool.submit(check_node, str(n.ip), n.port, per_try) for n in topology.nodes
        }
        results: dict[str, ProbeResult] = probe_many(configs)
        nodes = {name: f.result() for name, f in node_futures.items()}
    by_ip = {c.ip: c for c in nodes.values()}
    paths = []
    for target in canary_targets(topology):
        r = results[target.path]
        answer = r.answers[0] if r.answers else None
        check = by_ip.get(answer) if answer else None
        if answer and check is None:  # an address that is no node of ours: check it anyway
            check = check_node(answer, node_port.get(answer, topology.primary.port), per_try)
        paths.append(
            PathResult(
                path=target.path,
                forwarder=target.forwarder,
                outcome=r.outcome,
                answers=r.answers,
                latency_ms=round(r.latency_ms, 2),
                matches_truth=bool(truth.ip) and r.answers == (truth.ip,),
                node_reachable=bool(check and check.reachable and check.name == _node_named(topology, answer)),
                node=check.name if check else None,
                tcp=r.tcp,
            )
        )
    return CanaryRun(
        deployment=topology.deployment,
        started_at=started_at,
        duration_ms=(time.monotonic() - t0) * 1000,
        truth=truth,
        paths=tuple(paths),
        nodes=nodes,
    )


def _node_named(topology: Topology, ip: str | None) -> str | None:
    return next((n.name for n in topology.nodes if ip and str(n.ip) == ip), None)


# --- metrics ----------------------------------------------------------------------------------------

NAMESPACE = "regionha"


@dataclass(frozen=True)
class Datapoint:
    name: str
    value: float
    unit: str
    dimensions: dict[str, str]


def metrics(run: CanaryRun) -> list[Datapoint]:
    """The datapoints of one run: per path (success, latency, truth, node) and per deployment."""
    dep = {"Deployment": run.deployment}
    points = []
    for p in run.paths:
        dims = dep | {"Path": p.path}
        points += [
            Datapoint("PathSuccess", float(p.success), "Count", dims),
            Datapoint("PathLatency", p.latency_ms, "Milliseconds", dims),
            Datapoint("AnswerMatchesTruth", float(p.matches_truth), "Count", dims),
            Datapoint("NodeReachable", float(p.node_reachable), "Count", dims),
        ]
    onprem = run.onprem
    points += [
        Datapoint("OnPremResolvable", float(bool(onprem and onprem.outcome == "ok")), "Count", dep),
        Datapoint("OnPremMatchesTruth", float(bool(onprem and onprem.matches_truth)), "Count", dep),
        Datapoint("FailoverHealthy", float(run.failover_healthy), "Count", dep),
        Datapoint("CanaryHeartbeat", 1.0, "Count", dep),
    ]
    return points


def publish_cloudwatch(cloudwatch: Any, run: CanaryRun, *, timestamp: Any = None) -> int:
    """PutMetricData for hosts outside Lambda (and the local runtime); returns the datapoint count."""
    data = [
        {
            "MetricName": d.name,
            "Value": d.value,
            "Unit": d.unit,
            "Dimensions": [{"Name": k, "Value": v} for k, v in d.dimensions.items()],
            **({"Timestamp": timestamp} if timestamp is not None else {}),
        }
        for d in metrics(run)
    ]
    for i in range(0, len(data), 500):  # the API's limit per call
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data[i : i + 500])
    return len(data)
