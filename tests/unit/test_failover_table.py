"""The failure table (issue 14): each failure kind injected into the controller against moto, with the
expected outcome; and detection that is not fooled (re-checks, two vantage points).

Port checks go through the controller's seam ``failover.check_node``: a scripted stand-in answers per
node and per vantage point (``source`` None: the client network; else the peer region).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import test_failover as world  # the same moto world: instances, private zone, template-shaped tables
from test_failover import A_IP, B_IP, STACK_REGION, T0, metric_sums, route53_writes, with_failover

from regionha import failover
from regionha.converge.dns import read_record
from regionha.failover import ControllerSettings, Fence, NodeHealth, Trigger, decide, node_health
from regionha.topology import TopologyError, parse_topology
from regionha.watch.canary import NodeCheck

moto_world = world.moto_world
NAMES = {A_IP: "Server-A", B_IP: "Server-B"}

# How a node answers a port check: from the client network, and from its peer region.
UP, TIMEOUT, REFUSED = "up", "timeout", "refused"


@dataclass
class Ports:
    """The scripted seam: ``client``/``peer`` map a node to its answer (default up); ``client_script``
    gives a node a sequence of client answers, one per check, then up."""

    client: dict[str, str] = field(default_factory=dict)
    peer: dict[str, str] = field(default_factory=dict)
    client_script: dict[str, list[str]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, ip: str, port: int, timeout: float, *, source: str | None = None, **kw) -> NodeCheck:
        name = NAMES[ip]
        vantage = "client" if source is None else "peer"
        self.calls.append((name, vantage))
        if vantage == "client" and self.client_script.get(name):
            answer = self.client_script[name].pop(0)
        else:
            answer = (self.client if vantage == "client" else self.peer).get(name, UP)
        if answer == UP:
            return NodeCheck(ip, True, name, 1.0)
        error = "TimeoutError: timed out" if answer == TIMEOUT else "ConnectionRefusedError: refused"
        return NodeCheck(ip, False, None, timeout * 1000, error)


@pytest.fixture
def ports(monkeypatch) -> Ports:
    seam = Ports()
    monkeypatch.setattr(failover, "check_node", seam)
    return seam


@pytest.fixture
def cw(monkeypatch):
    monkeypatch.setenv("REGIONHA_METRICS_SINK", "cloudwatch")


def settings(sleeps: list[float] | None = None) -> ControllerSettings:
    return ControllerSettings(
        poll_seconds=0.01, wait_seconds=1, sleep=(sleeps.append if sleeps is not None else lambda s: None)
    )


def run(w, trigger: Trigger, topology=None, sleeps=None):
    return failover.run_controller(
        topology or w.topology, w.clients, trigger, table=w.table, table_region=STACK_REGION, settings=settings(sleeps)
    )


def check(at: float, event_id: str) -> Trigger:
    return Trigger("health_check", event_id, at, STACK_REGION)


def record(w) -> str:
    return NAMES[read_record(w.topology, w.clients)["ip"]]


# --- the table ------------------------------------------------------------------------------------------

# (kind, instance action on Server-A, client answer of A, peer answer of A, topology failover settings,
#  expected action, expected record afterwards, expected metrics besides Started/Completed/Seconds)
TABLE = [
    ("instance stopped", "stop", UP, UP, {}, "failover", "Server-B", {}),
    ("instance terminated", "terminate", UP, UP, {}, "failover", "Server-B", {}),
    ("node frozen (no answers)", None, TIMEOUT, TIMEOUT, {}, "failover", "Server-B", {}),
    ("service dead on a running instance", None, REFUSED, REFUSED, {}, "failover", "Server-B", {}),
    ("region isolated (client and peer)", None, TIMEOUT, TIMEOUT, {}, "failover", "Server-B", {}),
    ("client link cut", None, TIMEOUT, UP, {}, "nothing", "Server-A", {"ClientLinkDown": 1}),
    ("client link cut, topology fails over", None, TIMEOUT, UP, {"client_link_cut": "failover"},
     "failover", "Server-B", {"ClientLinkDown": 1}),
]


@pytest.mark.parametrize(
    ("instance", "client", "peer", "policy", "action", "after", "extra"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_failure_kind(moto_world, ports, cw, instance, client, peer, policy, action, after, extra):
    w = moto_world
    topo = with_failover(w.topology, **policy)
    # GIVEN the failure injected into Server-A, the active node
    if instance == "stop":
        w.ec2("Server-A").stop_instances(InstanceIds=[w.instances["Server-A"]])
    elif instance == "terminate":
        w.ec2("Server-A").terminate_instances(InstanceIds=[w.instances["Server-A"]])
    ports.client["Server-A"], ports.peer["Server-A"] = client, peer
    sleeps: list[float] = []
    # WHEN the scheduled health check runs
    result = run(w, check(T0, "hc-1"), topo, sleeps)
    # THEN the expected outcome, confirmed by failure_threshold checks an interval apart when the instance runs
    assert result.decision.action == action, result.decision.reason
    assert record(w) == after
    if instance is None:
        assert sleeps == [topo.failover.check_interval_seconds] * 2
        assert [c for c in ports.calls if c == ("Server-A", "client")] == [("Server-A", "client")] * 3
        assert result.health["Server-A"].missed == 3
    moved = {"FailoverStarted": 1, "FailoverCompleted": 1} if action == "failover" else {}
    sums = metric_sums(w.topology.deployment)
    sums.pop("FailoverSeconds", None)
    assert sums == moved | extra


def test_one_missed_check_is_rechecked_not_failed_over(moto_world, ports, cw):
    # Case single-failed-check-fails-over: a GC pause, one lost packet.
    ports.client_script["Server-A"] = [TIMEOUT]
    sleeps: list[float] = []
    result = run(moto_world, check(T0, "hc-1"), sleeps=sleeps)
    assert result.decision.action == "nothing" and record(moto_world) == "Server-A"
    assert sleeps == [moto_world.topology.failover.check_interval_seconds] and result.health["Server-A"].healthy
    # Two misses in a row are still under the threshold of 3.
    ports.client_script["Server-A"] = [TIMEOUT, REFUSED]
    assert run(moto_world, check(T0 + 60, "hc-2")).decision.action == "nothing"
    assert metric_sums(moto_world.topology.deployment) == {}


def test_both_nodes_down_writes_nothing_and_does_not_flap(moto_world, ports, cw, call_counter):
    w = moto_world
    w.ec2("Server-A").stop_instances(InstanceIds=[w.instances["Server-A"]])
    ports.client["Server-B"] = ports.peer["Server-B"] = REFUSED
    writes = len(route53_writes(call_counter))
    for k in range(3):
        result = run(w, check(T0 + 60 * k, f"hc-{k}"))
        assert result.decision.action == "refuse", result.decision.reason
    assert len(route53_writes(call_counter)) == writes and record(w) == "Server-A"
    # critical: FailoverStuck (alarm failover-stuck) every minute it lasts
    assert metric_sums(w.topology.deployment) == {"FailoverRefused": 3, "FailoverStuck": 3}


@pytest.mark.parametrize("failback", ["manual", "automatic"])
def test_primary_back_holds_down_and_never_ping_pongs(moto_world, ports, cw, call_counter, failback):
    w = moto_world
    topo = with_failover(w.topology, failback=failback, hold_down_seconds=120)
    ports.client["Server-A"] = ports.peer["Server-A"] = REFUSED
    assert run(w, check(T0, "hc-0"), topo).moved and record(w) == "Server-B"
    # Server-A answers again
    ports.client["Server-A"] = ports.peer["Server-A"] = UP
    inside = run(w, check(T0 + 60, "hc-1"), topo)
    assert inside.decision.action == ("hold_down" if failback == "automatic" else "nothing")
    after = run(w, check(T0 + 180, "hc-2"), topo)
    assert after.moved is (failback == "automatic")
    assert record(w) == ("Server-A" if failback == "automatic" else "Server-B")
    # then it stays put: no ping-pong while both nodes are healthy
    writes = len(route53_writes(call_counter))
    for k in range(3, 6):
        assert not run(w, check(T0 + 180 + 60 * k, f"hc-{k}"), topo).moved
    assert len(route53_writes(call_counter)) == writes


# --- detection: the decision and the checks ----------------------------------------------------------


def health(node: str, service: bool | None, peer: bool | None = None) -> NodeHealth:
    return NodeHealth(node, f"i-{node}", "running", service, "x", peer)


@pytest.mark.parametrize(
    ("a", "policy", "action", "target", "client_link"),
    [
        (health("Server-A", False, True), "stay", "nothing", None, True),
        (health("Server-A", False, True), "failover", "failover", "Server-B", True),
        (health("Server-A", False, False), "stay", "failover", "Server-B", False),
        (health("Server-A", False, None), "stay", "failover", "Server-B", False),  # no peer vantage
    ],
    ids=["link cut stays", "link cut fails over by choice", "isolated", "no peer vantage"],
)
def test_decide_tells_a_cut_client_link_from_a_dead_node(topology, a, policy, action, target, client_link):
    decision = decide(
        with_failover(topology, client_link_cut=policy),
        record_ip=A_IP,
        health={"Server-A": a, "Server-B": health("Server-B", True)},
        fence=Fence(),
        trigger=check(T0, "hc"),
        instance_nodes={"i-Server-A": "Server-A", "i-Server-B": "Server-B"},
    )
    assert (decision.action, decision.target, decision.client_link) == (action, target, client_link)


def test_checks_follow_the_topology_threshold_and_interval(topology, ports):
    topo = with_failover(topology, failure_threshold=4, check_interval_seconds=2)
    instances = {n.name: [{"id": f"i-{n.name}", "state": "running"}] for n in topo.nodes}
    ports.client["Server-A"], ports.peer["Server-A"] = TIMEOUT, UP
    sleeps: list[float] = []
    h = node_health(topo, instances, sleep=sleeps.append, peer_check=True)
    assert sleeps == [2.0, 2.0, 2.0]
    assert h["Server-A"].missed == 4 and h["Server-A"].link_cut and not h["Server-A"].healthy
    assert "4 failed checks in a row, 2 s apart" in h["Server-A"].detail
    # the healthy node is checked once, from the client network only
    assert ports.calls.count(("Server-B", "client")) == 1 and ("Server-B", "peer") not in ports.calls


def test_a_check_seam_without_vantage_points_still_works(topology, monkeypatch):
    # A stand-in with the plain (ip, port, timeout) signature: no peer vantage, judged as before.
    monkeypatch.setattr(failover, "check_node", lambda ip, port, timeout: NodeCheck(ip, False, None, 1.0, "down"))
    instances = {n.name: [{"id": f"i-{n.name}", "state": "running"}] for n in topology.nodes}
    h = node_health(topology, instances, sleep=lambda s: None, peer_check=True)
    assert h["Server-A"].service is False and h["Server-A"].peer is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"check_interval_seconds": 0.5}, "check_interval_seconds"),
        ({"failure_threshold": 10, "check_interval_seconds": 10}, "at most 45 s"),
        ({"client_link_cut": "maybe"}, "client_link_cut"),
    ],
)
def test_detection_settings_are_validated(topology, section, message):
    data = topology.to_json() | {"failover": section}
    with pytest.raises(TopologyError, match=message):
        parse_topology(data, "t.yaml")


class SteppingClock:
    """Time that moves only by the controller's own sleeps (and a fixed cost per port check round)."""

    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_watch_checks_every_interval_and_catches_a_failure_mid_minute(moto_world, ports, cw):
    """Sub-minute detection: one scheduled invocation evaluates every 5 s for 40 s; Server-A dies
    after the third evaluation and the record moves within that same minute."""
    clock = SteppingClock(T0)
    checks = {"n": 0}
    real = ports.__call__

    def dies_later(ip, port, timeout, **kw):
        if NAMES[ip] == "Server-A" and kw.get("source") is None:
            checks["n"] += 1
        if NAMES[ip] == "Server-A" and checks["n"] > 3:
            ports.client["Server-A"] = ports.peer["Server-A"] = REFUSED
        return real(ip, port, timeout, **kw)

    failover.check_node = dies_later  # restored by the ports fixture's monkeypatch
    s = ControllerSettings(poll_seconds=0.01, wait_seconds=1, sleep=clock.sleep, now=clock.now)
    results = failover.watch(
        with_failover(moto_world.topology, check_interval_seconds=5),
        moto_world.clients,
        check(T0, "hc-1"),
        table=moto_world.table,
        table_region=STACK_REGION,
        seconds=40,
        settings=s,
    )
    actions = [r.decision.action for r in results]
    assert actions[:3] == ["nothing"] * 3 and "failover" in actions
    moved = next(r for r in results if r.moved)
    # detected at the 4th evaluation (T0 + 15 s) and confirmed by two re-checks 5 s apart
    assert moved.failover_seconds is not None and clock.now() - T0 <= 45
    assert record(moto_world) == "Server-B" and len(results) <= 9
