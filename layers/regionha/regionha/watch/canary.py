"""Canaries: resolve the record through every forwarder path from the client site and check the truth.

One run = probe every target at once: each forwarder path address alone (each Resolver endpoint IP,
every BIND forwarder) and, a target of its own kind, the on-prem resolver that clients really use;
compare the answers with the record's current value in Route 53 (the truth), and check that the node
the answer names answers on its service port as itself. The result is plain data; ``metrics`` turns
it into the datapoints that alarms watch (``regionha.watch.metrics`` publishes them).

Time: a probe is bounded by the topology's ``canary.timeout_seconds`` as a whole (two UDP tries of
half of it each), node checks by the same bound, and all of them run at once. A run therefore takes
about its slowest probe: a silently dropping path costs one probe timeout, however many paths drop.

IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets
(reading the truth); dynamodb:GetItem on the state table (the inventory).
"""

from __future__ import annotations

import http.client
import ipaddress
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from regionha import netguard
from regionha.errors import ConfigurationError
from regionha.topology import ONPREM, Topology, TopologyError, parse_topology
from regionha.watch.metrics import HIGH_RESOLUTION, NAMESPACE, Datapoint  # noqa: F401 - NAMESPACE: re-export
from regionha.watch.probe import OK, WRONG_ANSWER, ProbeConfig, ProbeResult, probe_many

DNS_PORT = 53
# Each probe gets this many UDP tries inside its bound; the second catches a lost datagram, or an
# on-prem BIND that needed a moment to give up on a dead forwarder (about 1.2 s, measured).
_TRIES = 2

# A host:port override for a path's DNS server or a node's service (CLI --server-map, tests).
Address = tuple[str, int]


# The two kinds of canary target: one address of a forwarder path, and the on-prem resolver (the BIND
# server on-prem clients use, which forwards to the paths). Never told apart by a label.
FORWARDER_PATH = "forwarder_path"
ONPREM_RESOLVER = "onprem_resolver"


@dataclass(frozen=True)
class CanaryTarget:
    """One server to probe.

    ``kind`` is ``FORWARDER_PATH`` (``forwarder`` names the path, ``path`` labels the address: the
    metric dimension Path) or ``ONPREM_RESOLVER`` (``forwarder`` None; ``path`` is ``ONPREM``, the
    label of its result rows, ``--server-map`` key and drill samples, never a Path dimension).
    """

    path: str
    forwarder: str | None
    server: str
    kind: str = FORWARDER_PATH


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
    """What one target (``kind``: a forwarder path address or the on-prem resolver) answered."""

    path: str
    forwarder: str | None
    outcome: str
    answers: tuple[str, ...]
    latency_ms: float
    matches_truth: bool
    node_reachable: bool
    node: str | None
    tcp: bool
    rcode: str | None = None
    tries: int = 0
    error: str | None = None
    kind: str = FORWARDER_PATH

    @property
    def success(self) -> bool:
        """The whole promise of a path: it resolves, to the truth, and that node answers as itself."""
        return self.outcome == OK and self.matches_truth and self.node_reachable

    @property
    def resolved(self) -> bool:
        """The name resolved to addresses, right or wrong (a stale answer right after a failover is one)."""
        return self.outcome in (OK, WRONG_ANSWER)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"answers": list(self.answers), "success": self.success}


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
        """False when the record names an unhealthy node (or no node) while another node is healthy."""
        healthy = {name for name, check in self.nodes.items() if check.reachable}
        return self.truth.node in healthy or not healthy

    @property
    def onprem(self) -> PathResult | None:
        """The on-prem resolver's result (found by kind: a forwarder path's name never makes one)."""
        return next((p for p in self.paths if p.kind == ONPREM_RESOLVER), None)

    @property
    def forwarder_paths(self) -> tuple[PathResult, ...]:
        return tuple(p for p in self.paths if p.kind == FORWARDER_PATH)

    @property
    def all_succeeded(self) -> bool:
        return all(p.success for p in self.paths)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 1),
            "truth": asdict(self.truth),
            "failover_healthy": self.failover_healthy,
            "all_succeeded": self.all_succeeded,
            "paths": [p.to_json() for p in self.paths],
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
    targets.append(CanaryTarget(ONPREM, None, str(topology.client.dns_server.ip), ONPREM_RESOLVER))
    return targets


def client_source(topology: Topology) -> str:
    """The client-site address the local runtime probes from: the first free host of the client network.

    In AWS the canary's ENI has its own address; locally it needs a fixed one inside the client CIDR
    so that security groups and network ACLs judge it as they would judge the client. On a real on-prem
    site it is the agent's host (``client.canary_ip``), where the canary runs.
    """
    if topology.client.onprem:
        return str(topology.client.canary_ip)
    used = {topology.client.dns_server.ip}
    hosts = topology.client.cidr.hosts()
    for ip in hosts:
        if int(ip) - int(topology.client.cidr.network_address) >= 4 and ip not in used:
            return str(ip)
    raise ValueError(f"client network {topology.client.cidr} has no free address")


# --- the truth and the deployment ----------------------------------------------------------------------


def truth_from_record(topology: Topology, record: dict[str, Any] | None) -> Truth:
    if not record:
        return Truth(None, None, None)
    ip = ipaddress.IPv4Address(record["ip"])
    node = next((n.name for n in topology.nodes if n.ip == ip), None)
    return Truth(str(ip), record.get("ttl"), node)


def read_truth(topology: Topology, clients: Any) -> Truth:
    """The record's current value in Route 53 (``Truth(None, ...)`` when the zone or record is missing).

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets.
    """
    from regionha.converge.dns import read_record

    return truth_from_record(topology, read_record(topology, clients))


def deployment_topology(clients: Any, table: str, region: str, deployment: str) -> Topology:
    """The topology a build saved with its inventory; ``ConfigurationError`` when there was no build.

    IAM: dynamodb:GetItem on the state table.
    """
    from regionha.inventory import load_inventory

    inventory = load_inventory(clients, table, region, deployment)
    if inventory is None or not inventory.get("topology"):
        raise ConfigurationError(
            f"no inventory for deployment {deployment} in table {table} ({region}): run a build first"
        )
    try:
        return parse_topology(inventory["topology"], f"inventory of {deployment}")
    except TopologyError as e:
        raise ConfigurationError(str(e)) from e


def stack_topology(clients: Any) -> Topology:
    """The topology of the deployment this stack serves: ``deployment_topology`` for the environment's
    ``DEPLOYMENT`` in its ``STATE_TABLE``, in the stack's region (the scheduled dispatchers' start).

    Raises ``ConfigurationError`` when a variable is unset or there was no build.
    IAM: dynamodb:GetItem on the state table.
    """
    from regionha.payload import require_env, stack_region

    # Looked up at call time so a test's replacement of ``deployment_topology`` applies here too.
    return deployment_topology(clients, require_env("STATE_TABLE"), stack_region(), require_env("DEPLOYMENT"))


# --- one run -------------------------------------------------------------------------------------------


def check_node(
    ip: str, port: int, timeout: float, *, connect_to: str | None = None, source: str | None = None
) -> NodeCheck:
    """GET / on the node's service port: reachable, and which node it says it is.

    ``ip`` is the node's address as the record names it; ``connect_to`` the address actually dialled
    when that differs (its loopback image, an override); ``source`` the (cloud) address to check from,
    a vantage point such as the peer region (its loopback image in local mode).
    """
    started = time.monotonic()
    bind_to = (netguard.resolve_target(source), 0) if source else None
    conn = http.client.HTTPConnection(
        connect_to or netguard.resolve_target(ip), port, timeout=timeout, source_address=bind_to
    )
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


def _known(what: str, given: Mapping[str, Address] | None, names: set[str]) -> dict[str, Address]:
    unknown = sorted(set(given or {}) - names)
    if unknown:
        raise ConfigurationError(f"{what} override for unknown name(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(names))}")
    return dict(given or {})


def run_canary(
    topology: Topology,
    truth: Truth,
    *,
    timeout: float | None = None,
    source: str | None = None,
    port: int = DNS_PORT,
    servers: Mapping[str, Address] | None = None,
    node_addresses: Mapping[str, Address] | None = None,
) -> CanaryRun:
    """Probe every target and every node at once; a run takes about the slowest probe.

    ``timeout`` bounds each probe and each node check as a whole (default: the topology's
    ``canary.timeout_seconds``). ``source`` (a cloud address of the client site) is only used in local
    mode, where the loopback image of the client must be the sender, of the DNS probes and of the node
    checks alike, for routes, ACLs and security groups to apply (in AWS the canary's ENI is the sender).
    ``servers`` (path label -> host, port) and ``node_addresses`` (node name -> host, port) redirect
    probes, e.g. to a port-forward from an on-prem host; hosts still pass the network guard.
    An answer that is not a node's address is never dialled: it cannot be the node the record names.
    """
    bound = timeout or topology.canary.timeout_seconds
    targets = canary_targets(topology)
    server_of = _known("server", servers, {t.path for t in targets})
    node_of = _known("node", node_addresses, {n.name for n in topology.nodes})
    started_at, t0 = time.time(), time.monotonic()
    expected = frozenset({truth.ip}) if truth.ip else frozenset()
    src = netguard.resolve_target(source) if (source and netguard.local_mode_enabled()) else None
    configs = {}
    for t in targets:
        host, dns_port = server_of.get(t.path, (t.server, port))
        configs[t.path] = ProbeConfig(
            name=topology.dns.record.name,
            server=netguard.resolve_target(host),
            port=dns_port,
            timeout=bound / _TRIES,
            lifetime=bound,
            tries=_TRIES,
            source=src,
            expected=expected,
        )
    with ThreadPoolExecutor(max_workers=len(topology.nodes), thread_name_prefix="canary-node") as pool:
        node_futures = {}
        for n in topology.nodes:
            host, node_port = node_of.get(n.name, (None, n.port))
            connect_to = netguard.resolve_target(host) if host else None
            # From the client site, like the DNS probes: a security group, ACL or route cut between the
            # client network and a node must fail the node check too (check_node maps the cloud source).
            node_futures[n.name] = pool.submit(check_node, str(n.ip), node_port, bound, connect_to=connect_to,
                                               source=source if src else None)
        results: dict[str, ProbeResult] = probe_many(configs)
        nodes = {name: f.result() for name, f in node_futures.items()}
    name_of_ip = {str(n.ip): n.name for n in topology.nodes}
    paths = []
    for target in targets:
        r = results[target.path]
        answer = r.answers[0] if len(r.answers) == 1 else None
        node = name_of_ip.get(answer) if answer else None
        check = nodes.get(node) if node else None
        paths.append(
            PathResult(
                path=target.path,
                forwarder=target.forwarder,
                outcome=r.outcome,
                answers=r.answers,
                latency_ms=round(r.latency_ms, 2),
                matches_truth=bool(truth.ip) and r.answers == (truth.ip,),
                # The node must answer as itself: an address reused by another host does not count.
                node_reachable=bool(check and check.reachable and check.name == node),
                node=node,
                tcp=r.tcp,
                rcode=r.rcode,
                tries=r.tries,
                error=r.error,
                kind=target.kind,
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


# --- metrics ----------------------------------------------------------------------------------------

# Published at one-second storage resolution: the 10-second alarms (``regionha.watch.alarms``) read them.
_HIGH_RESOLUTION_METRICS = frozenset({"PathSuccess", "NodeUp", "OnPremSuccess", "OnPremResolvable"})


def metrics(run: CanaryRun, *, high_resolution: bool = True) -> list[Datapoint]:
    """The datapoints of one run. Alarms and the dashboard watch exactly these names and dimensions.

    Per forwarder path address (Deployment, Path): PathSuccess, PathLatency, AnswerMatchesTruth,
    NodeReachable; and PathOutcome = 1 with an extra Outcome dimension (the probe's label). The on-prem
    resolver (Deployment; never a Path): OnPremSuccess (resolves, to the truth, node answers),
    OnPremLatency, OnPremResolvable (answered with addresses, right or stale), OnPremMatchesTruth and
    OnPremOutcome = 1 (+ Outcome). Per node (Deployment, Node): NodeUp, and RecordTarget = 1 for the node
    the record names, 0 for the others. Per deployment: FailoverHealthy, CanaryHeartbeat (always 1: its
    absence is the signal) and CanaryDuration. PathSuccess, NodeUp, OnPremSuccess and OnPremResolvable
    are high resolution (``high_resolution=False``: all standard).
    """
    dep = {"Deployment": run.deployment}
    points = []
    for p in run.forwarder_paths:
        dims = dep | {"Path": p.path}
        points += [
            Datapoint("PathSuccess", float(p.success), "Count", dims),
            Datapoint("PathLatency", p.latency_ms, "Milliseconds", dims),
            Datapoint("AnswerMatchesTruth", float(p.matches_truth), "Count", dims),
            Datapoint("NodeReachable", float(p.node_reachable), "Count", dims),
            Datapoint("PathOutcome", 1.0, "Count", dims | {"Outcome": p.outcome}),
        ]
    for name, check in run.nodes.items():
        dims = dep | {"Node": name}
        points += [
            Datapoint("NodeUp", float(check.reachable), "Count", dims),
            Datapoint("RecordTarget", float(run.truth.node == name), "Count", dims),
        ]
    onprem = run.onprem
    if onprem is not None:
        points += [
            Datapoint("OnPremSuccess", float(onprem.success), "Count", dep),
            Datapoint("OnPremLatency", onprem.latency_ms, "Milliseconds", dep),
            Datapoint("OnPremOutcome", 1.0, "Count", dep | {"Outcome": onprem.outcome}),
        ]
    points += [
        Datapoint("OnPremResolvable", float(bool(onprem and onprem.resolved)), "Count", dep),
        Datapoint("OnPremMatchesTruth", float(bool(onprem and onprem.matches_truth)), "Count", dep),
        Datapoint("FailoverHealthy", float(run.failover_healthy), "Count", dep),
        Datapoint("CanaryHeartbeat", 1.0, "Count", dep),
        Datapoint("CanaryDuration", round(run.duration_ms, 1), "Milliseconds", dep),
    ]
    if not high_resolution:
        return points
    return [Datapoint(d.name, d.value, d.unit, d.dimensions, HIGH_RESOLUTION) if d.name in _HIGH_RESOLUTION_METRICS
            else d for d in points]
