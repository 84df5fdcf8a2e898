"""The pure failover decision, without moto or any AWS call: the decision table, event parsing, the
fence merge between controllers, where the second controller goes, and the check-nodes request's shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionha.errors import ConfigurationError
from regionha.failover import (
    CheckNodesRequest,
    Fence,
    NodeHealth,
    RetryPolicy,
    Trigger,
    decide,
    trigger_from_event,
)
from regionha.failover.decide import EC2_STATE_CHANGE, SCHEDULED_EVENT, UNKNOWN_STATE
from regionha.failover.fence import newest
from regionha.failover.settings import peer_controller_region
from regionha.topology import Failover

ROOT = Path(__file__).resolve().parents[2]
STACK_REGION = "ap-southeast-1"
T0 = 1_714_555_800.0  # 2024-05-01T09:30:00Z
IDS = {"Server-A": "i-aaaa", "Server-B": "i-bbbb"}
A_IP, B_IP = "10.0.110.10", "10.1.110.10"


def with_failover(topology, **kwargs):
    return topology.model_copy(update={"failover": Failover(**kwargs)})


# --- the decision table ---------------------------------------------------------------------------


def up(node: str) -> NodeHealth:
    return NodeHealth(node, IDS[node], "running", True)


def down(node: str, state: str = "stopped") -> NodeHealth:
    return NodeHealth(node, IDS[node], state, None)


def sick(node: str) -> NodeHealth:
    """Instance running, service port not answering."""
    return NodeHealth(node, IDS[node], "running", False, "ConnectionRefusedError")


def ec2_event(node: str, state: str, at: float, event_id: str = "ev-1") -> Trigger:
    return Trigger("instance_state", event_id, at, "ap-northeast-1", IDS[node], state)


def check(at: float, event_id: str = "hc-1") -> Trigger:
    return Trigger("health_check", event_id, at, STACK_REGION)


NODES = {v: k for k, v in IDS.items()}
FRESH = Fence()
# Server-B took over at T0 because of event "ev-0".
AFTER_FAILOVER = Fence(1, "Server-B", T0, "ev-0", "failover")

A, B = "Server-A", "Server-B"
# fmt: off
CASES = [
    # (id, failover settings, record, health A, health B, fence, trigger, expected action, target)
    ("all healthy", {}, A_IP, up(A), up(B), FRESH, check(T0), "nothing", None),
    ("active stopped", {}, A_IP, down(A), up(B), FRESH, ec2_event(A, "stopped", T0), "failover", B),
    ("active stopping", {}, A_IP, down(A, "stopping"), up(B), FRESH, ec2_event(A, "stopping", T0),
     "failover", B),
    ("active terminated", {}, A_IP, down(A, "terminated"), up(B), FRESH, ec2_event(A, "terminated", T0),
     "failover", B),
    ("active service down", {}, A_IP, sick(A), up(B), FRESH, check(T0), "failover", B),
    ("standby unhealthy", {}, A_IP, down(A), sick(B), FRESH, check(T0), "refuse", None),
    ("both nodes down", {}, A_IP, down(A), down(B), FRESH, check(T0), "refuse", None),
    ("standby down only", {}, A_IP, up(A), down(B), FRESH, ec2_event(B, "stopped", T0), "nothing", None),
    ("no record", {}, None, up(A), up(B), FRESH, check(T0), "failover", A),
    ("record names a stranger", {}, "10.9.9.9", down(A), up(B), FRESH, check(T0), "failover", B),
    ("foreign instance", {}, A_IP, down(A), up(B), FRESH,
     Trigger("instance_state", "ev-9", T0, "ap-northeast-1", "i-nat", "stopped"), "ignore", None),
    ("duplicate of the last cause", {}, B_IP, up(A), down(B), AFTER_FAILOVER,
     ec2_event(B, "stopped", T0 + 300, event_id="ev-0"), "ignore", None),
    ("stale event", {}, B_IP, down(A), down(B), AFTER_FAILOVER, ec2_event(A, "stopped", T0 - 1),
     "ignore", None),
    ("hold-down", {"hold_down_seconds": 60}, B_IP, up(A), down(B), AFTER_FAILOVER,
     ec2_event(B, "stopped", T0 + 30), "hold_down", A),
    ("hold-down passed", {"hold_down_seconds": 60}, B_IP, up(A), down(B), AFTER_FAILOVER, check(T0 + 60),
     "failover", A),
    ("manual failback", {"failback": "manual"}, B_IP, up(A), up(B), AFTER_FAILOVER, check(T0 + 3600),
     "nothing", None),
    ("automatic failback", {"failback": "automatic"}, B_IP, up(A), up(B), AFTER_FAILOVER, check(T0 + 3600),
     "failover", A),
    ("automatic failback held down", {"failback": "automatic"}, B_IP, up(A), up(B), AFTER_FAILOVER,
     check(T0 + 10), "hold_down", A),
    ("late running after a newer failover", {"failback": "automatic"}, B_IP, up(A), up(B), AFTER_FAILOVER,
     ec2_event(A, "running", T0 - 20, event_id="ev-late"), "ignore", None),
    ("external, active down", {"mode": "external"}, A_IP, down(A), up(B), FRESH, check(T0), "observe", None),
    ("external, active healthy", {"mode": "external"}, A_IP, up(A), up(B), FRESH, check(T0), "observe", None),
]
# fmt: on


@pytest.mark.parametrize(
    ("settings", "record", "a", "b", "fence", "trigger", "action", "target"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(topology, settings, record, a, b, fence, trigger, action, target):
    decision = decide(
        with_failover(topology, **settings),
        record_ip=record,
        health={"Server-A": a, "Server-B": b},
        fence=fence,
        trigger=trigger,
        instance_nodes=NODES,
    )
    assert (decision.action, decision.target) == (action, target), decision.reason


@pytest.mark.parametrize(
    ("a", "b", "needed"),
    [
        (down("Server-A"), up("Server-B"), True),
        (down("Server-A"), down("Server-B"), True),
        (up("Server-A"), down("Server-B"), False),
    ],
)
def test_external_mode_flags_only_an_unhealthy_record(topology, a, b, needed):
    decision = decide(
        with_failover(topology, mode="external"),
        record_ip=A_IP,
        health={"Server-A": a, "Server-B": b},
        fence=FRESH,
        trigger=check(T0),
        instance_nodes=NODES,
    )
    assert decision.action == "observe" and decision.needed is needed



@pytest.mark.parametrize("name", ["failover-ec2-stopped.json", "failover-health-check.json"])
def test_sample_events_parse(name):
    trigger = trigger_from_event(json.loads((ROOT / "events" / name).read_text()))
    assert trigger.time == T0 + (60 if "health" in name else 0)
    assert trigger.kind == ("health_check" if "health" in name else "instance_state")


@pytest.mark.parametrize(
    "event",
    [
        {"detail-type": "Object Created", "time": "2024-05-01T09:30:00Z", "id": "x"},
        {"detail-type": EC2_STATE_CHANGE, "time": "2024-05-01T09:30:00Z", "id": "x", "detail": {}},
        {"detail-type": SCHEDULED_EVENT, "time": "yesterday", "id": "x"},
        {"no": "envelope"},
    ],
)
def test_unusable_events_are_configuration_errors(event):
    with pytest.raises(ConfigurationError):
        trigger_from_event(event)


def test_backoff_grows_within_bounds():
    policy = RetryPolicy(attempts=6, base_seconds=0.5, cap_seconds=4)
    for attempt, ceiling in enumerate([0.5, 1, 2, 4, 4, 4]):
        for _ in range(20):
            assert ceiling / 2 <= policy.delay(attempt) <= ceiling



# --- a region whose EC2 API does not answer ----------------------------------------------------------


def unknown(node: str, service: bool | None) -> NodeHealth:
    return NodeHealth(node, None, UNKNOWN_STATE, service, "EC2 API: could not connect")


@pytest.mark.parametrize(
    ("a", "action", "target"),
    [
        (unknown("Server-A", False), "failover", "Server-B"),  # region gone: the port is lost too
        (unknown("Server-A", True), "nothing", None),  # only the API blinked: the node serves
        (unknown("Server-A", None), "failover", "Server-B"),  # checks off: no evidence it serves
    ],
    ids=["api and port lost", "api lost, port answers", "api lost, no port checks"],
)
def test_a_node_of_a_region_whose_api_is_down_is_judged_by_its_port(topology, a, action, target):
    decision = decide(
        topology, record_ip=A_IP, health={"Server-A": a, "Server-B": up("Server-B")}, fence=FRESH,
        trigger=check(T0), instance_nodes=NODES,
    )
    assert (decision.action, decision.target) == (action, target), decision.reason


# --- two controllers ----------------------------------------------------------------------------------


def test_the_newest_change_of_any_controller_holds_every_controller_down():
    ours = Fence(3, "Server-A", T0, "ev-ours", "failover")
    theirs = Fence(1, "Server-B", T0 + 30, "ev-theirs", "failover")
    merged = newest(ours, [theirs, None])
    # Our generation (what our conditional write builds on), their later change (what hold-down sees).
    assert merged == Fence(3, "Server-B", T0 + 30, "ev-theirs", "failover")
    assert newest(ours, [Fence()]) == ours and newest(Fence(), []) == Fence()
    held = decide(
        with_failover(load(), failback="automatic"), record_ip=B_IP,
        health={"Server-A": up("Server-A"), "Server-B": up("Server-B")}, fence=merged,
        trigger=check(T0 + 40), instance_nodes=NODES,
    )
    assert held.action == "hold_down"


def load():
    from regionha.topology import load_topology

    return load_topology()


def test_the_second_controller_goes_to_a_cluster_region_other_than_the_stacks(topology):
    # The reference: stack in Singapore (the client site), nodes in Tokyo (primary) and Osaka.
    assert peer_controller_region(topology, "ap-southeast-1") == "ap-northeast-3"
    assert peer_controller_region(topology, "ap-northeast-3") == "ap-northeast-1"
    assert peer_controller_region(topology, "ap-northeast-1") == "ap-northeast-3"


# --- the check-nodes request ------------------------------------------------------------------------


def test_the_check_nodes_request_is_its_own_shape(topology):
    request = CheckNodesRequest(topology=topology.to_json(), nodes=["Server-A"], timeout_seconds=1.0)
    body = json.loads(request.model_dump_json())
    assert body["request"] == "check_nodes" and set(body) == {"request", "topology", "nodes", "timeout_seconds"}
    # Nothing of the canary's dispatched run (truth, paths, metrics) travels with it.
    assert "truth" not in body and "emit_metrics" not in body


@pytest.mark.parametrize(
    "event",
    [
        {"request": "check_nodes", "nodes": ["Server-A"], "timeout_seconds": 1.0},  # no topology
        {"request": "check_nodes", "topology": {}, "nodes": [], "timeout_seconds": 1.0},  # no node
        {"request": "check_nodes", "topology": {}, "nodes": ["Server-A"], "timeout_seconds": 0},
        {"request": "check_nodes", "topology": {}, "nodes": ["Server-A"], "timeout_seconds": 1, "truth": {}},
    ],
    ids=["no topology", "no node", "no timeout", "a canary field"],
)
def test_a_malformed_check_nodes_request_is_a_configuration_error(event):
    from regionha.failover import answer_check_nodes

    with pytest.raises(ConfigurationError, match="check_nodes request"):
        answer_check_nodes(event)


def test_an_unknown_node_in_a_check_nodes_request_is_a_configuration_error(topology):
    from regionha.failover import answer_check_nodes

    event = {"request": "check_nodes", "topology": topology.to_json(), "nodes": ["Server-Z"], "timeout_seconds": 1}
    with pytest.raises(ConfigurationError, match="Server-Z"):
        answer_check_nodes(event)
