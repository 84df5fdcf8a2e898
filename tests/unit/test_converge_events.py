"""Forwarding the nodes' EC2 state changes from their regions to the stack's bus."""

from __future__ import annotations

import json

import boto3

from regionha.aws import Clients
from regionha.converge.events import PATTERN, converge_event_forwarding, rule_name, teardown_event_forwarding

STACK = "ap-southeast-1"
BUS = f"arn:aws:events:{STACK}:123456789012:event-bus/default"
ROLE = "arn:aws:iam::123456789012:role/forward"


def test_a_rule_per_node_region_then_nothing_to_do_then_gone(topology, call_counter):
    created = converge_event_forwarding(topology, Clients(), stack_region=STACK, bus_arn=BUS, role_arn=ROLE)

    assert sorted((o.region, o.action) for o in created) == [
        ("ap-northeast-1", "created"),
        ("ap-northeast-3", "created"),
    ]
    for region in ("ap-northeast-1", "ap-northeast-3"):
        events = boto3.client("events", region_name=region)
        rule = events.describe_rule(Name=rule_name(topology))
        assert json.loads(rule["EventPattern"]) == PATTERN and rule["State"] == "ENABLED"
        (target,) = events.list_targets_by_rule(Rule=rule_name(topology))["Targets"]
        assert (target["Arn"], target["RoleArn"]) == (BUS, ROLE)

    call_counter.calls.clear()
    again = converge_event_forwarding(topology, Clients(), stack_region=STACK, bus_arn=BUS, role_arn=ROLE)
    assert {o.action for o in again} == {"unchanged"}
    assert call_counter.mutating == []

    gone = teardown_event_forwarding(topology, Clients(), stack_region=STACK)
    assert {o.action for o in gone} == {"deleted"}
    assert {o.action for o in teardown_event_forwarding(topology, Clients(), stack_region=STACK)} == {"absent"}


def test_a_drifted_target_is_put_back(topology, moto_aws):
    converge_event_forwarding(topology, Clients(), stack_region=STACK, bus_arn=BUS, role_arn=ROLE)
    events = boto3.client("events", region_name="ap-northeast-1")
    events.put_targets(Rule=rule_name(topology), Targets=[{"Id": "stray", "Arn": BUS}])

    fixed = converge_event_forwarding(topology, Clients(), stack_region=STACK, bus_arn=BUS, role_arn=ROLE)

    assert {(o.region, o.action) for o in fixed} == {("ap-northeast-1", "updated"), ("ap-northeast-3", "unchanged")}
    assert [t["Id"] for t in events.list_targets_by_rule(Rule=rule_name(topology))["Targets"]] == ["stack-bus"]
