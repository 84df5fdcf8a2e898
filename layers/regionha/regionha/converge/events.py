"""Forwarding the nodes' EC2 state changes to the stack's event bus.

EC2 sends "EC2 Instance State-change Notification" events only to the default bus of the
instance's own region; the failover controller's rule lives in the stack's region. One rule per
node region forwards them (target: the stack region's default bus, with a role EventBridge assumes).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import Clients, tags
from regionha.converge import Outcome
from regionha.topology import Topology

PATTERN = {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]}
TARGET_ID = "stack-bus"


def rule_name(topology: Topology) -> str:
    return f"regionha-{topology.deployment}-node-events"


def forwarding_regions(topology: Topology, stack_region: str) -> list[str]:
    """Node regions other than the stack's own (whose bus already gets its instances' events)."""
    return sorted({topology.region_of(n.vpc) for n in topology.nodes} - {stack_region})


def _rule(events: Any, name: str) -> dict[str, Any] | None:
    try:
        return events.describe_rule(Name=name)
    except ClientError as e:
        if e.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise


def converge_event_forwarding(
    topology: Topology, clients: Clients, *, stack_region: str, bus_arn: str, role_arn: str
) -> list[Outcome]:
    """The forwarding rule and its target in every node region; writes nothing when already so.

    IAM: events:DescribeRule, events:PutRule, events:ListTargetsByRule, events:PutTargets,
    events:TagResource, iam:PassRole on the forwarding role.
    """
    name = rule_name(topology)
    outcomes = []
    for region in forwarding_regions(topology, stack_region):
        events = clients.client("events", region)
        rule = _rule(events, name)
        want_pattern = json.dumps(PATTERN, sort_keys=True)
        have_pattern = json.dumps(json.loads(rule["EventPattern"]), sort_keys=True) if rule else None
        action = "unchanged"
        if rule is None or have_pattern != want_pattern or rule.get("State") != "ENABLED":
            events.put_rule(
                Name=name,
                EventPattern=want_pattern,
                State="ENABLED",
                Description="regionha: the cluster nodes' state changes, to the stack's event bus",
                Tags=[t for t in tags(topology.deployment, name) if t["Key"] != "Name"],
            )
            action = "created" if rule is None else "updated"
        targets = events.list_targets_by_rule(Rule=name)["Targets"]
        want = {"Id": TARGET_ID, "Arn": bus_arn, "RoleArn": role_arn}
        if [{k: t.get(k) for k in want} for t in targets] != [want]:
            extra = [t["Id"] for t in targets if t["Id"] != TARGET_ID]
            if extra:
                events.remove_targets(Rule=name, Ids=extra)
            events.put_targets(Rule=name, Targets=[want])
            action = "created" if action == "created" else "updated"
        outcomes.append(Outcome("event_forwarding_rule", name, action, name, region))
    return outcomes


def teardown_event_forwarding(topology: Topology, clients: Clients, *, stack_region: str) -> list[Outcome]:
    """IAM: events:DescribeRule, events:ListTargetsByRule, events:RemoveTargets, events:DeleteRule."""
    name = rule_name(topology)
    outcomes = []
    for region in forwarding_regions(topology, stack_region):
        events = clients.client("events", region)
        if _rule(events, name) is None:
            outcomes.append(Outcome("event_forwarding_rule", name, "absent", None, region))
            continue
        ids = [t["Id"] for t in events.list_targets_by_rule(Rule=name)["Targets"]]
        if ids:
            events.remove_targets(Rule=name, Ids=ids)
        events.delete_rule(Name=name)
        outcomes.append(Outcome("event_forwarding_rule", name, "deleted", name, region))
    return outcomes
