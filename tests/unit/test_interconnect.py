"""The interconnect watch: the pure judgement, the relay (the node's user-data and the twin's node), the
controller's refusal, and the metric and alarm against moto.

Relays are real HTTP servers on 127.0.0.1 (the rendered node script in a subprocess, the twin's
NodeService); nothing is dialled beyond loopback.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from regionha.aws import Clients
from regionha.converge.user_data import node_instances
from regionha.converge.watch import WatchSettings, converge_watch
from regionha.errors import ConfigurationError
from regionha.failover import Decision, NodeHealth
from regionha.local.host.nodes import NodeService
from regionha.topology import parse_topology
from regionha.watch import interconnect, metrics
from regionha.watch.alarms import alarm_name
from regionha.watch.interconnect import (
    PairResult,
    datapoints,
    dial_peer,
    guard,
    interconnect_alarm_intents,
    interconnect_pairs,
    path_up,
    probe_interconnect,
    probe_pair,
    refusal,
    running_pairs,
)

REGION = "ap-southeast-1"


def with_nodes_in_one_vpc(topology):
    data = topology.to_json()
    data["nodes"][1] |= {"vpc": "tokyo", "subnet": "A2", "ip": "10.0.110.11"}
    return parse_topology(data, "test")


def not_required(topology):
    return topology.model_copy(update={"cluster": topology.cluster.model_copy(update={"requires_interconnect": False})})


# --- the pure judgement ----------------------------------------------------------------------------------


def test_pairs_are_both_directions_across_vpcs_only(topology):
    assert interconnect_pairs(topology) == [("Server-A", "Server-B"), ("Server-B", "Server-A")]
    assert interconnect_pairs(with_nodes_in_one_vpc(topology)) == []
    assert interconnect_alarm_intents(with_nodes_in_one_vpc(topology)) == []


def test_the_reference_topology_requires_the_interconnect(topology):
    assert topology.cluster.requires_interconnect is True


@pytest.mark.parametrize(
    ("outcome", "up"),
    [("answered", True), ("refused", True), ("timeout", False), ("unreachable", False),
     ("error", None), (interconnect.VANTAGE_UNKNOWN, None), (interconnect.NO_RELAY, None)],
)
def test_a_reset_proves_the_path_a_timeout_does_not(outcome, up):
    assert path_up(outcome) is up


@pytest.mark.parametrize(
    ("states", "pairs"),
    [({"Server-A": "running", "Server-B": "running"}, [("Server-A", "Server-B"), ("Server-B", "Server-A")]),
     ({"Server-A": "stopped", "Server-B": "running"}, []),
     ({"Server-A": "running", "Server-B": None}, [])],
)
def test_only_pairs_of_running_instances_are_probed(topology, states, pairs):
    assert running_pairs(topology, states) == pairs


def test_datapoints_are_one_per_judged_pair(topology):
    results = [PairResult("Server-A", "Server-B", "answered"), PairResult("Server-B", "Server-A", "timeout"),
               PairResult("Server-A", "Server-B", interconnect.VANTAGE_UNKNOWN)]
    points = datapoints(topology, results)
    assert [(p.name, p.value, p.dimensions) for p in points] == [
        ("InterconnectReachable", 1.0, {"Deployment": "regionha-ref", "From": "Server-A", "To": "Server-B"}),
        ("InterconnectReachable", 0.0, {"Deployment": "regionha-ref", "From": "Server-B", "To": "Server-A"}),
    ]


def test_probing_a_pair_that_is_not_one_is_a_configuration_error(topology):
    with pytest.raises(ConfigurationError, match="Server-A->Server-A"):
        probe_interconnect(topology, [("Server-A", "Server-A")])


class Script:
    """A scripted pair check: outcome per (source, target); records what was dialled."""

    def __init__(self, outcomes):
        self.outcomes = outcomes
        self.dialled = []

    def __call__(self, topology, source, target, timeout):
        self.dialled.append((source, target))
        return PairResult(source, target, self.outcomes[(source, target)], detail="scripted")


BOTH = ["Server-A", "Server-B"]
NO_WAIT = lambda seconds: None  # noqa: E731


class Sequence(Script):
    """A pair check answering the given outcomes in turn (the last one repeats)."""

    def __init__(self, *outcomes):
        super().__init__({})
        self.turns = list(outcomes)

    def __call__(self, topology, source, target, timeout):
        self.dialled.append((source, target))
        outcome = self.turns.pop(0) if len(self.turns) > 1 else self.turns[0]
        return PairResult(source, target, outcome, detail="scripted")


@pytest.mark.parametrize(
    ("turns", "refused"),
    [
        (("timeout", "answered"), False),  # one lost packet
        (("timeout", "timeout", "answered"), False),  # threshold - 1 lost
        (("unreachable", "answered", "timeout"), False),  # alternating: never threshold in a row
        ((interconnect.VANTAGE_UNKNOWN, "answered"), False),  # the probe function blipped once
        (("timeout", "timeout", "timeout"), True),
    ],
)
def test_one_failed_interconnect_dial_does_not_refuse_a_needed_failover(topology, turns, refused):
    waits = []
    check = Sequence(*turns)
    why = refusal(topology, "Server-B", BOTH, check, sleep=waits.append)
    assert (why is not None) is refused
    assert waits == [topology.failover.check_interval_seconds] * (len(check.dialled) - 1)


def test_an_ec2_blip_when_re_reading_the_states_does_not_drop_a_refusal(topology, monkeypatch):
    # The peer was running; re-reading the states before refusing finds its region's EC2 API silent
    # (state unknown): that is no sign of the peer stopping, so the refusal stands.
    from regionha import failover

    unknown = {n: [{"id": None, "state": "unknown", "region": "r", "error": "EC2 API: throttled"}] for n in BOTH}
    monkeypatch.setattr(failover, "node_instances", lambda topology, clients: unknown)
    move = Decision("failover", "x", "Server-A", "Server-B", needed=True)
    check = Script({("Server-B", "Server-A"): "timeout"})
    out = guard(topology, move, health({"Server-A": "running", "Server-B": "running"}), check, clients=object(),
                sleep=NO_WAIT)
    assert out.action == "refuse"


@pytest.mark.parametrize(
    ("outcome", "running", "refused", "dialled"),
    [
        ("answered", BOTH, False, True),
        ("refused", BOTH, False, True),  # a reset: the peer's port is closed but the path works
        ("timeout", BOTH, True, True),
        ("unreachable", BOTH, True, True),
        (interconnect.VANTAGE_UNKNOWN, BOTH, True, True),  # could not check: no blind move
        (interconnect.NO_RELAY, BOTH, False, True),  # an older node service: not judged
        ("timeout", ["Server-B"], False, False),  # the peer is stopped: the ordinary failover
    ],
)
def test_refusal_table(topology, outcome, running, refused, dialled):
    check = Script({("Server-B", "Server-A"): outcome})
    why = refusal(topology, "Server-B", running, check, sleep=NO_WAIT)
    assert (why is not None) is refused
    # A failing pair is dialled failover.failure_threshold times in a row before it counts as cut.
    dials = topology.failover.failure_threshold if refused else 1
    assert check.dialled == ([("Server-B", "Server-A")] * dials if dialled else [])
    if refused:
        assert "Server-B" in why and "Server-A" in why and "cluster.requires_interconnect" in why


def test_no_refusal_when_the_topology_does_not_require_the_interconnect(topology):
    check = Script({("Server-B", "Server-A"): "timeout"})
    assert refusal(not_required(topology), "Server-B", BOTH, check) is None
    assert check.dialled == []


def test_without_a_vantage_point_nothing_is_dialled_nor_refused(topology, monkeypatch):
    monkeypatch.delenv(interconnect.ENV_FUNCTION, raising=False)
    monkeypatch.setattr(interconnect.netguard, "local_mode_enabled", lambda: False)
    assert interconnect.default_check() is None
    assert refusal(topology, "Server-B", BOTH, None) is None


def health(states):
    return {n: NodeHealth(n, f"i-{n}", s, s == "running") for n, s in states.items()}


def test_guard_turns_a_failover_onto_an_isolated_node_into_a_refusal(topology, caplog):
    move = Decision("failover", "the record names Server-A, which is not healthy; failover to Server-B",
                    "Server-A", "Server-B", needed=True)
    check = Script({("Server-B", "Server-A"): "timeout"})
    out = guard(topology, move, health({"Server-A": "running", "Server-B": "running"}), check, sleep=NO_WAIT)
    assert out.action == "refuse" and out.target == "Server-B" and out.needed
    assert out.reason.startswith(move.reason + "; refused: Server-B cannot reach Server-A (timeout")
    assert "failover to Server-B refused" in caplog.text


def test_guard_leaves_other_decisions_and_healthy_links_alone(topology):
    nothing = Decision("nothing", "the record names Server-A, which is healthy", "Server-A")
    check = Script({("Server-B", "Server-A"): "answered"})
    assert guard(topology, nothing, health({"Server-A": "running", "Server-B": "running"}), check) is nothing
    move = Decision("failover", "x", "Server-A", "Server-B", needed=True)
    assert guard(topology, move, health({"Server-A": "running", "Server-B": "running"}), check) is move


# --- the relays: the node's user-data script and the twin's node service ------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def get(port: int, path: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def peer():
    service = NodeService("Server-A", "127.0.0.1", 0)
    service.start()
    yield service
    service.stop()


def test_the_node_user_data_relay_dials_only_its_peers(topology, peer, tmp_path):
    """The script EC2 runs (cut out of the rendered user-data), with its addresses moved to loopback."""
    user_data = next(i for i in node_instances(topology) if i["name"] == "Server-B")["user_data"]
    script = user_data.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    assert '"Server-A": ["10.0.110.10", 80]' in script and "Server-B" not in script.split("PEERS")[1][:80]
    port, closed = free_port(), free_port()
    script = (script.replace('["10.0.110.10", 80]', f'["127.0.0.1", {peer.port}]')
              .replace('("0.0.0.0", 80)', f'("127.0.0.1", {port})'))
    (tmp_path / "node.py").write_text(script)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "node.py")])
    try:
        wait_listening(port)
        assert get(port, "/") == (200, "Server-B\n")
        status, body = get(port, "/peer/Server-A?timeout=1")
        got = json.loads(body)
        assert status == 200 and got["outcome"] == "answered" and got["answered_as"] == "Server-A"
        assert get(port, "/peer/10.0.0.1")[0] == 404  # no open relay: only named peers
        peer.stop()
        assert json.loads(get(port, "/peer/Server-A?timeout=1")[1])["outcome"] == "refused"
    finally:
        proc.terminate()
        proc.wait(5)
    assert dial_peer("127.0.0.1", closed, 1.0)["outcome"] == "refused"


def test_the_twins_node_relays_from_its_own_address_and_probe_pair_reads_it(topology, peer):
    vantage = NodeService("Server-B", "127.0.0.1", 0)
    vantage.peer_address = {"Server-A": ("127.0.0.1", peer.port)}.get
    vantage.start()
    try:
        endpoint = {"Server-A": ("127.0.0.1", peer.port), "Server-B": ("127.0.0.1", vantage.port)}
        result = probe_pair(topology, "Server-B", "Server-A", 1.0, endpoint=lambda n: endpoint[n.name])
        assert (result.outcome, result.answered_as, result.reachable) == ("answered", "Server-A", True)
        # A node without a peer lookup has no relay (404): not judged.
        plain = probe_pair(topology, "Server-A", "Server-B", 1.0, endpoint=lambda n: endpoint[n.name])
        assert plain.outcome == interconnect.NO_RELAY and plain.reachable is None
    finally:
        vantage.stop()
    gone = probe_pair(topology, "Server-B", "Server-A", 1.0, endpoint=lambda n: ("127.0.0.1", vantage.port))
    assert gone.outcome == interconnect.VANTAGE_UNKNOWN and gone.reachable is None


# --- the metric and the alarm (moto) -------------------------------------------------------------------------


def test_the_pair_alarm_watches_exactly_the_series_the_probe_publishes_and_fires(topology, composite_alarms,
                                                                                  monkeypatch):
    monkeypatch.setenv(metrics.SINK_ENV, "cloudwatch")
    settings = WatchSettings(region=REGION)
    outcomes = converge_watch(topology, Clients(), settings)
    name = alarm_name(topology.deployment, "interconnect-down-Server-B-to-Server-A")
    assert ("alarm", name, "created") in [(o.kind, o.name, o.action) for o in outcomes]
    cw = boto3.client("cloudwatch", region_name=REGION)
    assert [o.action for o in converge_watch(topology, Clients(), settings) if o.name == name] == ["unchanged"]

    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    healthy = [PairResult("Server-A", "Server-B", "answered"), PairResult("Server-B", "Server-A", "answered")]
    cut = [PairResult("Server-A", "Server-B", "answered"), PairResult("Server-B", "Server-A", "timeout")]
    for minute in range(3):
        metrics.emit(datapoints(topology, healthy), cloudwatch=cw, timestamp=start + timedelta(minutes=minute))
    composite_alarms.tick(start + timedelta(minutes=3))
    states = {a["AlarmName"]: a["StateValue"] for a in cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]}
    assert states == {name: "OK"}

    for minute in range(3, 6):
        metrics.emit(datapoints(topology, cut), cloudwatch=cw, timestamp=start + timedelta(minutes=minute))
    composite_alarms.tick(start + timedelta(minutes=6))
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix="regionha-")["MetricAlarms"]}
    assert alarms[name]["StateValue"] == "ALARM"
    other = alarm_name(topology.deployment, "interconnect-down-Server-A-to-Server-B")
    assert alarms[other]["StateValue"] == "OK"
    assert {d["Name"]: d["Value"] for d in alarms[name]["Dimensions"]} == {
        "Deployment": topology.deployment, "From": "Server-B", "To": "Server-A"}


def test_the_alarms_link_to_the_runbook_and_the_metrics_are_documented(topology):
    import re
    from pathlib import Path

    runbook = (Path(__file__).resolve().parents[2] / "docs/runbook.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', runbook))
    for intent in interconnect_alarm_intents(topology):
        assert set(re.findall(r"docs/runbook\.md#([a-z0-9-]+)", intent.description)) == {"interconnect-down"}
        assert "interconnect-down" in anchors and len(intent.description) <= 1024
    table = dict(re.findall(r"^\| `([A-Za-z]+)` \| ([A-Za-z]+) \|", runbook, re.MULTILINE))
    assert table[interconnect.METRIC] == table[interconnect.REFUSAL_METRIC] == "Count"


def test_a_peer_that_began_stopping_meanwhile_is_silent_not_cut_off(topology):
    check = Script({("Server-B", "Server-A"): "timeout"})
    assert refusal(topology, "Server-B", BOTH, check, running_now=lambda: ["Server-B"], sleep=NO_WAIT) is None
    assert refusal(topology, "Server-B", BOTH, check, running_now=lambda: BOTH, sleep=NO_WAIT) is not None
