"""FailoverController Lambda: EventBridge events in, Powertools Idempotency, topology from the inventory;
and the template pieces that feed it (rule pattern, schedule, alarm, tables)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_failover as world  # the same world: moto, node services on loopback, template-shaped tables
from test_failover import (
    A_IP,
    B_IP,
    STACK_REGION,
    create_table,
    helper,
    metric_sums,
    route53_writes,
    stop_node,
    template,
)

from inprocess import pattern_matches
from regionha.converge.dns import read_record
from regionha.errors import TransientError
from regionha.inventory import collect_inventory, save_inventory

# The world's fixtures, shared with test_failover.py.
local_only, node_services, moto_world = world.local_only, world.node_services, world.moto_world

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "functions" / "failover_controller" / "app.py"


@dataclass
class LambdaContext:
    function_name: str = "FailoverControllerFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:ap-southeast-1:123456789012:function:FailoverController"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def handler(moto_world, monkeypatch):
    """The handler module, imported fresh with its environment, after the world exists."""
    monkeypatch.setenv("STATE_TABLE", moto_world.table)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", create_table("IdempotencyTable", "regionha-idempotency"))
    monkeypatch.setenv("DEPLOYMENT", moto_world.topology.deployment)
    monkeypatch.setenv("REGIONHA_METRICS_SINK", "cloudwatch")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "regionha")
    inventory = collect_inventory(moto_world.topology, moto_world.clients)
    save_inventory(moto_world.clients, moto_world.table, STACK_REGION, inventory)
    spec = importlib.util.spec_from_file_location(f"failover_controller_app_{uuid.uuid4().hex}", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def ec2_event(instance_id: str, state: str, time: str = "2024-05-01T09:30:00Z", event_id: str | None = None):
    event = json.loads((ROOT / "events" / "failover-ec2-stopped.json").read_text())
    event["id"] = event_id or str(uuid.uuid4())
    event["time"] = time
    event["resources"] = [f"arn:aws:ec2:ap-northeast-1:123456789012:instance/{instance_id}"]
    event["detail"] = {"instance-id": instance_id, "state": state}
    return event


def health_check(time: str = "2024-05-01T09:31:00Z"):
    event = json.loads((ROOT / "events" / "failover-health-check.json").read_text())
    return event | {"id": str(uuid.uuid4()), "time": time}


def test_stopped_active_node_fails_over_once_despite_redelivery(
    handler, moto_world, node_services, call_counter
):
    # GIVEN the active node stopped
    stop_node(moto_world, node_services, "Server-A")
    event = ec2_event(moto_world.instances["Server-A"], "stopped")
    # WHEN EventBridge delivers the event, then delivers it again
    first = handler(event, LambdaContext())
    writes = len(route53_writes(call_counter))
    second = handler(event, LambdaContext())
    # THEN the record moved once; the redelivery got the stored answer and touched nothing
    assert first["decision"]["action"] == "failover" and first["moved"] and first["generation"] == 1
    assert second == first
    assert len(route53_writes(call_counter)) == writes
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    sums = metric_sums(moto_world.topology.deployment)
    assert (sums["FailoverStarted"], sums["FailoverCompleted"]) == (1, 1)


def test_scheduled_check_with_healthy_nodes_changes_nothing(handler, moto_world, node_services, call_counter):
    writes = len(call_counter.mutating)
    result = handler(health_check(), LambdaContext())
    assert result["decision"]["action"] == "nothing"
    assert result["health"]["Server-A"]["healthy"] and result["health"]["Server-B"]["healthy"]
    # The only writes: Powertools Idempotency's record of the event.
    assert set(call_counter.mutating[writes:]) <= {("dynamodb", "PutItem"), ("dynamodb", "UpdateItem")}
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == A_IP


def test_the_sample_event_is_not_a_cluster_node(handler, moto_world, node_services):
    event = json.loads((ROOT / "events" / "failover-ec2-stopped.json").read_text())
    result = handler(event, LambdaContext())
    assert result["decision"] == {
        "action": "ignore",
        "reason": "instance i-0a1b2c3d4e5f60001 is not a cluster node",
        "active": None,
        "target": None,
        "needed": False,
        "failback": False,
        "client_link": False,
    }


def test_late_event_after_failover_is_ignored(handler, moto_world, node_services):
    topo = moto_world.topology
    stop_node(moto_world, node_services, "Server-A")
    assert handler(ec2_event(moto_world.instances["Server-A"], "stopped"), LambdaContext())["moved"]
    # A "stopping" of the same shutdown, delivered after the failover but older than it.
    older = ec2_event(moto_world.instances["Server-A"], "stopping", "2024-05-01T09:29:58Z")
    late = handler(older, LambdaContext())
    assert late["decision"]["action"] == "ignore" and late["decision"]["reason"].startswith("stale")
    assert read_record(topo, moto_world.clients)["ip"] == B_IP


def test_no_inventory_yet(handler, moto_world):
    key = {"pk": {"S": moto_world.topology.deployment}, "sk": {"S": "inventory"}}
    helper("dynamodb").delete_item(TableName=moto_world.table, Key=key)
    result = handler(health_check(), LambdaContext())
    assert result["decision"]["action"] == "ignore" and "no inventory" in result["decision"]["reason"]


# --- the template pieces ----------------------------------------------------------------------------


def function_resource() -> dict:
    return template()["Resources"]["FailoverControllerFunction"]


def test_rule_pattern_matches_node_state_changes_only():
    pattern = function_resource()["Properties"]["Events"]["InstanceStateChange"]["Properties"]["Pattern"]
    sample = json.loads((ROOT / "events" / "failover-ec2-stopped.json").read_text())
    def with_state(state: str) -> dict:
        return sample | {"detail": {"instance-id": "i-1", "state": state}}

    for state in ("stopping", "stopped", "shutting-down", "terminated"):
        assert pattern_matches(pattern, with_state(state)), state
    for state in ("pending", "running"):
        assert not pattern_matches(pattern, with_state(state)), state


def test_schedule_environment_and_alarm_fit_the_code():
    resources = template()["Resources"]
    props = function_resource()["Properties"]
    assert props["Events"]["HealthCheck"]["Properties"]["Schedule"] == {"Ref": "HealthCheckRate"}
    assert template()["Parameters"]["HealthCheckRate"]["Default"] == "rate(1 minute)"
    assert set(props["Environment"]["Variables"]) >= {"DEPLOYMENT", "IDEMPOTENCY_TABLE", "NODE_SERVICE_CHECK"}
    for logical_id, metric in [
        ("FailoverRefusedAlarm", "FailoverRefused"),
        ("FailoverStuckAlarm", "FailoverStuck"),
        ("FailoverClientLinkAlarm", "ClientLinkDown"),
    ]:
        alarm = resources[logical_id]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("regionha", metric), logical_id
        assert alarm["Dimensions"] == [{"Name": "Deployment", "Value": {"Ref": "Deployment"}}]
        assert alarm["AlarmActions"] == [{"Ref": "NoticesTopic"}]
    # The scheduled run's loop, its last evaluation's re-checks, throttling retries and INSYNC wait fit
    # the Lambda timeout (reference topology: 3 checks 5 s apart, 2 s each).
    loop = float(props["Environment"]["Variables"]["HEALTH_CHECK_LOOP_SECONDS"])
    assert loop + (2 * 5 + 3 * 2) + 8 + 60 <= props["Timeout"]
    # The compare-and-swap needs exactly DELETE and CREATE of A records.
    r53 = [
        st for p in props["Policies"] if "Statement" in p for st in p["Statement"]
        if st["Action"] == "route53:ChangeResourceRecordSets"
    ]
    assert r53[0]["Condition"]["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsActions"] == [
        "CREATE",
        "DELETE",
    ]
    ttl = resources["IdempotencyTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expiration", "Enabled": True}


def test_a_throttled_failover_is_not_kept_by_idempotency(handler, moto_world, node_services):
    # GIVEN the active node stopped and Route 53 throttling every write of the handler's (4 attempts)
    stop_node(moto_world, node_services, "Server-A")
    aws = inspect.unwrap(handler).__globals__["aws"]
    seen = world.throttle(aws, "ChangeResourceRecordSets", 4)
    event = ec2_event(moto_world.instances["Server-A"], "stopped")
    # WHEN the invocation fails THEN the error reaches Lambda (which retries the event)
    with pytest.raises(TransientError, match="not written"):
        handler(event, LambdaContext())
    assert seen["n"] == 4
    # and Lambda's retry of the same event id is not answered from the idempotency store: it moves
    again = handler(event, LambdaContext())
    assert again["moved"] and read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP


# --- the controller's node checks: a request of their own ----------------------------------------------


def test_the_check_nodes_request_checks_only_the_nodes(topology, node_services, monkeypatch, caplog, capsys):
    """The function in the client network answers the controller's check_nodes request with the nodes'
    port checks alone: no forwarder path probed, no record read, no 'record does not exist' warning."""
    from regionha.failover import CheckNodesRequest
    from regionha.watch import canary

    def no_paths(*args, **kwargs):
        raise AssertionError("a check_nodes request probed the forwarder paths")

    monkeypatch.setattr(canary, "run_canary", no_paths)
    monkeypatch.setattr(canary, "read_truth", no_paths)
    node_services["Server-B"].stop()
    path = ROOT / "functions" / "run_canary" / "app.py"
    spec = importlib.util.spec_from_file_location(f"run_canary_app_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    request = CheckNodesRequest(topology=topology.to_json(), nodes=["Server-A", "Server-B"], timeout_seconds=1.0)

    answer = module.lambda_handler(json.loads(request.model_dump_json()), LambdaContext("RunCanaryFunction"))

    assert set(answer) == {"nodes"}
    assert answer["nodes"]["Server-A"]["reachable"] and answer["nodes"]["Server-A"]["name"] == "Server-A"
    assert not answer["nodes"]["Server-B"]["reachable"]
    assert "does not exist" not in caplog.text + capsys.readouterr().out


def test_failover_stuck_is_a_member_of_the_composite_critical_alarm(topology):
    """A needed failover not written (FailoverStuck) pages like every other critical alarm: the stack's
    failover-stuck alarm is named in the composite's rule, next to the topology's critical alarms."""
    from regionha.converge.watch import WatchSettings, composite_params
    from regionha.watch.alarms import critical_rule

    env = template()["Resources"]["ConvergeWatchFunction"]["Properties"]["Environment"]["Variables"]
    assert env["CRITICAL_STACK_ALARMS"] == {"Ref": "FailoverStuckAlarm"}
    settings = WatchSettings.from_environ("ap-southeast-1", {"CRITICAL_STACK_ALARMS": "regionha-failover-stuck"})
    rule = composite_params(topology, settings)["AlarmRule"]
    assert rule == critical_rule(topology) + ' OR ALARM("regionha-failover-stuck")'
    assert composite_params(topology, WatchSettings("ap-southeast-1"))["AlarmRule"] == critical_rule(topology)
