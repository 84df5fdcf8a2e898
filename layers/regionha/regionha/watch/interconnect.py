"""The interconnect: can each cluster node reach its peer in the other region, on the cluster's own path?

The cluster software's heartbeat and mirror disk go node to node over the cluster VPCs' peering, a
path that no DNS probe uses. It is probed where it is used: each node dials its peer's service port
*from the node itself* (the node service's relay, ``GET /peer/<name>``), so the packet leaves the node's
address through its subnet's route table, the peering, and the peer's network ACL and security
group, exactly as a heartbeat does. Whoever reaches the nodes' ports (the probe function in the client
network on AWS, the controller locally) asks the relay.

- ``interconnect_pairs`` (pure): the ordered node pairs in different VPCs, both directions.
- ``dial_peer`` (stdlib only; also the relay's code on the node, see ``relay_source``): one TCP
  connect and ``GET /`` with an outcome label.
- ``path_up`` (pure): the judgement. A TCP answer *or a refusal* (RST) proves the route, the peering,
  the network ACL and the security group carry the packets both ways; a timeout or "no route" does not.
- ``probe_pair`` / ``probe_interconnect``: ask the relays; ``datapoints``: the ``InterconnectReachable``
  metric per pair (``From``, ``To``), nothing for a pair whose vantage node could not be asked
  (``node-down`` says why).
- ``interconnect_alarm_intents``: one alarm per pair, made by ``ConvergeWatch``.
- ``guard``: the failover controller's refusal to move the record onto a node that cannot reach a
  running peer when ``cluster.requires_interconnect`` (one call in ``failover.run_controller``).

AWS docs followed: VPC User Guide "Security group rules" (stateful; a closed port on a reachable
instance answers with a TCP reset), "Network ACLs" (stateless, first matching rule), "VPC peering
limitations" (no transitive routing), "Control traffic to subnets using network ACLs".
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from regionha import netguard
from regionha.errors import ConfigurationError
from regionha.watch import metrics
from regionha.watch.alarms import AlarmIntent, label_suffix

if TYPE_CHECKING:
    from regionha.topology import Topology

logger = logging.getLogger(__name__)

METRIC = "InterconnectReachable"
REFUSAL_METRIC = "InterconnectRefusal"
# Outcomes of one dial; the first two prove the path works in both directions.
UP = frozenset({"answered", "refused"})
DOWN = frozenset({"timeout", "unreachable"})
# The vantage node itself could not be asked: says nothing about the interconnect.
VANTAGE_UNKNOWN = "vantage-unreachable"
NO_RELAY = "no-relay"  # a node whose service predates the relay (an older user-data)
RELAY_PATH = "/peer/"
ENV_FUNCTION = "INTERCONNECT_FUNCTION"


def interconnect_pairs(topology: Topology) -> list[tuple[str, str]]:
    """(from node, to node) for every ordered pair of nodes in different VPCs, in topology order.
    Nodes sharing a VPC talk over its local route, which no peering change can cut."""
    return [(a.name, b.name) for a in topology.nodes for b in topology.nodes if a.vpc != b.vpc]


def dial_peer(host: str, port: int, timeout: float, source: str | None = None) -> dict:
    """One TCP connect to ``host:port`` (from ``source`` when given) and ``GET /``.

    Returns ``{"outcome", "answered_as", "latency_ms", "error"}``; outcome is ``answered`` (HTTP 200),
    ``refused`` (TCP reset: the host is reachable, nothing listens), ``timeout``, ``unreachable``
    (no route: ICMP, ENETUNREACH) or ``error``. Standard library only: the node's relay runs this very
    function's source (``relay_source``)."""
    import errno
    import socket
    import time

    started = time.monotonic()

    def out(outcome, answered_as=None, error=None):
        return {"outcome": outcome, "answered_as": answered_as,
                "latency_ms": round((time.monotonic() - started) * 1000, 1), "error": error}

    try:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
    except ConnectionRefusedError as e:
        return out("refused", error=str(e))
    except TimeoutError as e:
        return out("timeout", error=str(e) or "timed out")
    except OSError as e:
        unreachable = (errno.ENETUNREACH, errno.EHOSTUNREACH)
        return out("unreachable" if e.errno in unreachable else "error", error=f"{type(e).__name__}: {e}")
    try:
        sock.settimeout(timeout)
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1:2]
        if status != [b"200"]:
            return out("answered", error=f"HTTP {status[0].decode() if status else '?'}")
        return out("answered", body.decode(errors="replace").strip() or None)
    except TimeoutError:
        # Connected, then silence: the path carried the handshake, the service hangs.
        return out("answered", error="no HTTP answer")
    except OSError as e:
        return out("answered", error=f"{type(e).__name__}: {e}")
    finally:
        sock.close()


def relay_source() -> str:
    """``dial_peer``'s source text, for the node's user-data (the relay runs the same code)."""
    return inspect.getsource(dial_peer)


def path_up(outcome: str) -> bool | None:
    """The judgement: True when the dial proves the path, False when it proves it cut, None when the
    probe said nothing about it (vantage node not asked, no relay, a local error)."""
    if outcome in UP:
        return True
    if outcome in DOWN:
        return False
    return None


@dataclass(frozen=True)
class PairResult:
    """One probe of the interconnect: ``source`` dialled ``target``'s service port."""

    source: str
    target: str
    outcome: str
    latency_ms: float = 0.0
    detail: str | None = None
    answered_as: str | None = None

    @property
    def reachable(self) -> bool | None:
        return path_up(self.outcome)

    def describe(self) -> str:
        words = {True: "reaches", False: "cannot reach", None: "could not check"}[self.reachable]
        return f"{self.source} {words} {self.target} ({self.outcome}{': ' + self.detail if self.detail else ''})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"reachable": self.reachable}


def probe_pair(topology: Topology, source: str, target: str, timeout: float, *,
               endpoint: Callable[[Any], tuple[str, int]] | None = None, client: str | None = None) -> PairResult:
    """Ask ``source``'s relay to dial ``target``: ``GET http://<source ip>:<port>/peer/<target>?timeout=T``.

    The relay gets ``timeout`` for its dial; the request to it gets one more second. ``endpoint(node)``
    gives where a node's service answers (default: its address and port); the address passes the
    network guard (its loopback image in local mode). ``client``: the client-site address to ask from,
    in local mode only (as the canary: the twin's security groups and network ACLs judge the sender)."""
    import http.client

    node = topology.node(source)
    host, port = endpoint(node) if endpoint is not None else (str(node.ip), node.port)
    bind = (netguard.resolve_target(client), 0) if client and netguard.local_mode_enabled() else None
    conn = http.client.HTTPConnection(netguard.resolve_target(host), port, timeout=timeout + 1.0,
                                      source_address=bind)
    try:
        conn.request("GET", f"{RELAY_PATH}{target}?timeout={timeout:g}")
        resp = conn.getresponse()
        body = resp.read(4096)
        if resp.status == 404:
            return PairResult(source, target, NO_RELAY, detail=f"{source} has no relay (HTTP 404)")
        if resp.status != 200:
            return PairResult(source, target, VANTAGE_UNKNOWN, detail=f"relay HTTP {resp.status}")
        got = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError) as e:
        return PairResult(source, target, VANTAGE_UNKNOWN, detail=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
    return PairResult(source, target, str(got.get("outcome")), float(got.get("latency_ms") or 0.0),
                      got.get("error"), got.get("answered_as"))


def probe_interconnect(topology: Topology, pairs: Iterable[tuple[str, str]] | None = None, *,
                       timeout: float | None = None, client: str | None = None) -> list[PairResult]:
    """Every pair at once (default: ``interconnect_pairs``); a run takes about the slowest dial.
    Raises ConfigurationError for a pair that is not two nodes in different VPCs."""
    todo = [tuple(p) for p in (interconnect_pairs(topology) if pairs is None else pairs)]
    known = set(interconnect_pairs(topology))
    unknown = [f"{p[0]}->{p[1]}" if len(p) == 2 else str(p) for p in todo if p not in known]
    if unknown:
        raise ConfigurationError(f"not node pairs across VPCs: {', '.join(map(str, unknown))}; pairs are "
                                 f"{', '.join(f'{a}->{b}' for a, b in sorted(known)) or 'none'}")
    if not todo:
        return []
    bound = timeout or topology.canary.timeout_seconds
    with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="interconnect") as pool:
        return list(pool.map(lambda p: probe_pair(topology, p[0], p[1], bound, client=client), todo))


def running_pairs(topology: Topology, states: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """The pairs worth probing now: both instances running (``states``: node -> EC2 state). A stopped
    vantage cannot relay; a stopped target is silent on AWS, which is node-down's news, not the link's."""
    return [(a, b) for a, b in interconnect_pairs(topology) if states.get(a) == "running" == states.get(b)]


def datapoints(topology: Topology, results: Iterable[PairResult]) -> list[metrics.Datapoint]:
    """``InterconnectReachable`` (1/0, dimensions Deployment, From, To) per judged pair."""
    return [
        metrics.Datapoint(METRIC, 1.0 if r.reachable else 0.0, "Count",
                          {"Deployment": topology.deployment, "From": r.source, "To": r.target})
        for r in results if r.reachable is not None
    ]


# --- alarms -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InterconnectIntent(AlarmIntent):
    """An alarm on one pair's series: dimensions Deployment, From, To (not Path/Node)."""

    source: str = ""
    target: str = ""

    def dimension_names(self) -> list[str]:
        return ["Deployment", "From", "To"]

    def dimensions(self, deployment: str) -> list[dict[str, str]]:
        return [{"Name": "Deployment", "Value": deployment}, {"Name": "From", "Value": self.source},
                {"Name": "To", "Value": self.target}]


def interconnect_down(source: str, target: str) -> InterconnectIntent:
    # 2 of 3 one-minute periods, like path-down: one lost probe does not page. Missing data (a vantage
    # node down, so not asked) is left to node-down.
    return InterconnectIntent(
        f"interconnect-down-{label_suffix(source)}-to-{label_suffix(target)}", METRIC, None, "Minimum", 3, 2,
        "missing", critical=False, source=source, target=target,
        description=f"Interconnect: {source} could not reach {target}'s service port over the cluster "
                    f"peering in 2 of the last 3 minutes (heartbeat and mirror disk use that path; a "
                    f"failover onto an isolated node is refused); runbook: docs/runbook.md#interconnect-down",
    )


def interconnect_alarm_intents(topology: Topology) -> list[InterconnectIntent]:
    """One alarm per ordered node pair across VPCs (none when every node shares a VPC)."""
    return [interconnect_down(a, b) for a, b in interconnect_pairs(topology)]


# --- the failover controller's refusal --------------------------------------------------------------------

PairCheck = Callable[["Topology", str, str, float], PairResult]


def check_through_function(topology: Topology, source: str, target: str, timeout: float) -> PairResult:
    """``probe_pair`` made by the probe function (``INTERCONNECT_FUNCTION``) in the client network, for a
    caller outside any VPC (the failover controller on AWS). A failed invocation is an unknown result.
    IAM: lambda:InvokeFunction on that function."""
    from regionha.aws import Clients

    function = os.environ[ENV_FUNCTION]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    payload = {"topology": topology.to_json(), "pairs": [[source, target]], "timeout": timeout,
               "emit_metrics": False}
    try:
        response = Clients().client("lambda", region).invoke(
            FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(payload))
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RuntimeError(f"{function}: {body}")
        got = body["pairs"][0]
    except Exception as e:  # any failure to probe is "could not check", never "reachable"
        return PairResult(source, target, VANTAGE_UNKNOWN, detail=f"probe function: {e}")
    return PairResult(got["source"], got["target"], got["outcome"], got.get("latency_ms") or 0.0,
                      got.get("detail"), got.get("answered_as"))


def default_check() -> PairCheck | None:
    """Through the probe function where one is configured (AWS); in local mode, ask the relay from here
    at the controller's own ``failover.service_endpoint`` seam (looked up at call time); else None: no
    vantage point, nothing is dialled (a controller outside any VPC reaches no node)."""
    if os.environ.get(ENV_FUNCTION):
        return check_through_function
    if netguard.local_mode_enabled():
        from regionha import failover

        return lambda topology, source, target, timeout: probe_pair(
            topology, source, target, timeout, endpoint=lambda node: failover.service_endpoint(node))
    return None


def refusal(topology: Topology, target: str, running: Iterable[str], check: PairCheck | None,
            running_now: Callable[[], Iterable[str]] | None = None,
            sleep: Callable[[float], None] = metrics.sleep) -> str | None:
    """Why the record must not move onto ``target``, or None. Pure but for ``check``.

    Only peers whose instance runs are dialled: a stopped peer cannot form a second active side, and a
    stopped peer is the ordinary reason to fail over. A result that is neither up nor down counts as
    down (no blind move), except a node without the relay (logged: it cannot be judged, and refusing
    every failover of an older deployment would be worse). ``running_now()`` re-reads which nodes run
    before refusing: a peer that began stopping since ``running`` was read is silent, not cut off.

    A pair that fails is dialled again every ``failover.check_interval_seconds`` (``sleep``) and counts as
    cut only after ``failover.failure_threshold`` failures in a row, like the nodes' port checks: one
    lost packet never refuses a needed failover."""
    if not topology.cluster.requires_interconnect:
        return None
    vpc = topology.node(target).vpc
    alive = set(running)
    peers = [n.name for n in topology.nodes if n.vpc != vpc and n.name in alive]
    if peers and check is None:
        logger.warning("interconnect of %s not judged: no vantage point (%s unset, not local)", target, ENV_FUNCTION)
        return None
    policy = topology.failover
    cut = []
    for peer in peers:
        for attempt in range(policy.failure_threshold):
            if attempt:
                sleep(policy.check_interval_seconds)
            result = check(topology, target, peer, topology.canary.timeout_seconds)
            if result.outcome == NO_RELAY or result.reachable is True:
                break
        if result.outcome == NO_RELAY:
            logger.warning("interconnect not judged: %s", result.describe())
            continue
        if result.reachable is not True:
            cut.append(result)
    if cut and running_now is not None:
        alive = set(running_now())
        cut = [r for r in cut if r.target in alive]
    if not cut:
        return None
    return (f"{'; '.join(r.describe() for r in cut)}: {target} is cut off from its running peer over the interconnect "
            "(cluster.requires_interconnect): a failover onto it risks a split brain")


def guard(topology: Topology, decision: Any, health: Mapping[str, Any], check: PairCheck | None = None,
          clients: Any = None, sleep: Callable[[float], None] = metrics.sleep) -> Any:
    """The controller's hook: ``decision`` unchanged, or a ``refuse`` of the same move with the reason.

    ``decision`` is a ``failover.Decision``; ``health`` maps node names to objects with an
    ``instance_state``; ``check`` dials one pair (default ``default_check()``); ``clients`` (optional)
    re-reads the instance states before a refusal (ec2:DescribeInstances). Logs the refusal and
    publishes ``InterconnectRefusal`` (Count; Deployment, Node = the refused target)."""
    if decision.action != "failover" or decision.target is None:
        return decision
    running = [name for name, h in health.items() if getattr(h, "instance_state", None) == "running"]
    running_now = None
    if clients is not None:
        def running_now() -> list[str]:
            from regionha.failover import node_instances
            from regionha.failover.decide import UNKNOWN_STATE

            found = node_instances(topology, clients)
            # A region whose EC2 API did not answer now does not show its node stopping: still alive.
            return [name for name, instances in found.items()
                    if instances and instances[0]["state"] in ("running", UNKNOWN_STATE)]
    why = refusal(topology, decision.target, running, check if check is not None else default_check(), running_now,
                  sleep)
    if why is None:
        return decision
    logger.warning("failover to %s refused: %s", decision.target, why)
    try:
        metrics.emit([metrics.Datapoint(REFUSAL_METRIC, 1.0, "Count",
                                        {"Deployment": topology.deployment, "Node": decision.target})])
    except Exception:  # the refusal stands whether or not its metric is published
        logger.exception("InterconnectRefusal not published")
    return replace(decision, action="refuse", reason=f"{decision.reason}; refused: {why}")
