"""A failover controller in each cluster region, in the local twin: the stack's own (full stack, the client
site's region) and a controller-only stack (``StackRole: controller``) in the standby's region, both deployed
from template.yaml and scheduled by the runtime.

- The stack region's controller down (its rules disabled): the other region's controller, working from the
  inventory it mirrored into its own table, fails over when the active node stops.
- Both controllers racing on the same failure: Route 53's compare-and-swap lets exactly one write; the other
  sees the record moved (or already on a healthy node) and writes nothing, without an error.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from polling import until  # noqa: E402

A_IP, B_IP = "10.0.110.10", "10.1.110.10"


@pytest.fixture(scope="module")
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


@pytest.fixture(scope="module")
def runtime(start_runtime):
    return start_runtime()


def record_ip(rt) -> str | None:
    from regionha.record import read_record

    return (read_record(rt.topology, rt.clients) or {}).get("ip")


def instance_id(rt, node: str) -> str:
    region = rt.topology.region_of(rt.topology.node(node).vpc)
    found = rt.clients.ec2(region).describe_instances(
        Filters=[{"Name": "tag:regionha:name", "Values": [node]},
                 {"Name": "instance-state-name", "Values": ["running", "stopped", "pending", "stopping"]}]
    )["Reservations"][0]["Instances"][0]
    return found["InstanceId"]


def set_node(rt, node: str, state: str) -> None:
    region = rt.topology.region_of(rt.topology.node(node).vpc)
    ec2 = rt.clients.ec2(region)
    (ec2.stop_instances if state == "stopped" else ec2.start_instances)(InstanceIds=[instance_id(rt, node)])
    rt.settle()


def controller_rules(rt, stack) -> list[tuple[str, str]]:
    """(region, rule name) of a stack's controller rules (its schedule and its EC2 state-change rule)."""
    events = rt.clients.client("events", stack.region)
    names = [r["Name"] for r in events.list_rules()["Rules"]]
    prefix = f"{stack.name}-FailoverControllerFunction"
    return [(stack.region, n) for n in names if n.startswith(prefix)]


def enable(rt, rules: list[tuple[str, str]], on: bool) -> None:
    for region, name in rules:
        events = rt.clients.client("events", region)
        (events.enable_rule if on else events.disable_rule)(Name=name)


def generation(rt, stack) -> int:
    """The fence generation in a stack's state table: how many moves that stack's controller made."""
    from regionha.failover import read_fence

    ddb = rt.clients.client("dynamodb", stack.region)
    return read_fence(ddb, stack.physical_id("StateTable"), rt.topology.deployment).generation


def test_the_controller_stack_mirrors_the_inventory(runtime):
    from regionha.inventory import load_inventory

    rt = runtime
    assert rt.controller_region == "ap-northeast-3" and rt.controller_stack is not None
    # Its first scheduled run (one emulated minute) copies the inventory the build saved in the stack region.
    table = rt.controller_stack.physical_id("StateTable")
    copy = until(lambda: load_inventory(rt.clients, table, rt.controller_region, rt.topology.deployment), 30)
    assert copy and copy["deployment"] == rt.topology.deployment
    # It is a controller only: no build, no drill, no canary schedule in that region.
    assert not rt.controller_stack.state_machines


def test_the_stack_regions_controller_down_the_other_region_fails_over(runtime):
    rt = runtime
    assert record_ip(rt) == A_IP
    stack_rules = controller_rules(rt, rt.stack)
    assert stack_rules, "no controller rules in the stack region"
    enable(rt, stack_rules, False)  # the stack region's controller is gone
    try:
        rt.wait_emulated(1.5)  # its last invocation (a 55 s loop) has ended
        set_node(rt, "Server-A", "stopped")
        assert until(lambda: record_ip(rt) == B_IP, 30), "the other region's controller did not fail over"
        assert generation(rt, rt.controller_stack) == 1 and generation(rt, rt.stack) == 0
    finally:
        enable(rt, stack_rules, True)


def test_two_controllers_racing_write_exactly_once(runtime, monkeypatch):
    from regionha import record
    from regionha.failover import manual_switch

    rt = runtime
    # GIVEN Server-A back and the record on it, both controllers' own triggers paused
    set_node(rt, "Server-A", "running")
    rules = controller_rules(rt, rt.stack) + controller_rules(rt, rt.controller_stack)
    enable(rt, rules, False)
    try:
        rt.wait_emulated(2)  # in-flight invocations ended, and past the hold-down of the last move (60 s)
        manual_switch(rt.topology, rt.clients, "Server-A",
                      table=rt.stack.physical_id("StateTable"), table_region=rt.region)
        assert record_ip(rt) == A_IP
        rt.wait_emulated(2)
        set_node(rt, "Server-A", "stopped")
        # Both decide before either writes (the handlers run in this process): a true race for Route 53.
        both_decided = threading.Barrier(2, timeout=60)
        swap = record.swap_record

        def racing_swap(*args, **kwargs):
            both_decided.wait()
            return swap(*args, **kwargs)

        monkeypatch.setattr(record, "swap_record", racing_swap)
        results: dict[str, dict] = {}
        errors: list[BaseException] = []
        tokyo = rt.topology.region_of(rt.topology.node("Server-A").vpc)
        stopped = instance_id(rt, "Server-A")

        def invoke(stack) -> None:
            # WHEN each controller gets the EC2 stop of Server-A (each its own delivery of it)
            try:
                event = {
                    "version": "0", "id": str(uuid.uuid4()), "detail-type": "EC2 Instance State-change Notification",
                    "source": "aws.ec2", "account": "123456789012", "region": tokyo,
                    "time": datetime.fromtimestamp(rt.clock.now().timestamp(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "resources": [], "detail": {"instance-id": stopped, "state": "stopped"},
                }
                answer = rt.clients.client("lambda", stack.region).invoke(
                    FunctionName=stack.functions["FailoverControllerFunction"].name, Payload=json.dumps(event)
                )
                body = json.loads(answer["Payload"].read())
                assert not answer.get("FunctionError"), body
                results[stack.region] = body
            except BaseException as e:  # noqa: BLE001  (reported by the main thread)
                errors.append(e)

        threads = [threading.Thread(target=invoke, args=(s,)) for s in (rt.stack, rt.controller_stack)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        # THEN exactly one wrote; the other saw its compare-and-swap refused and wrote nothing, no error
        assert not errors, errors
        moved = [r for r in results.values() if r["moved"]]
        assert len(moved) == 1, results
        loser = next(r for r in results.values() if not r["moved"])
        assert loser["decision"]["action"] == "ignore", loser["decision"]
        assert loser["decision"]["reason"].startswith("another controller or an operator moved the record first")
        assert record_ip(rt) == B_IP
    finally:
        enable(rt, rules, True)
