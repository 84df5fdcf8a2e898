"""The failover controller: the cluster's "AWS DNS resource", event-driven and fenced.

Three layers, each usable alone:

- The DNS resource: ``activate`` (UPSERT the record to a node, wait bounded for INSYNC, retry
  throttling with backoff), ``monitor`` (read-only: does the record name the active node?) and
  ``deactivate`` (leaves the record unless told to delete it).
- The decision: ``decide`` is a pure function of the topology, the record, each node's health, the
  fence and the triggering event. It fails over only to a healthy standby, holds down after every
  change, fails back only when the topology says so, and ignores duplicate, stale and foreign events.
- The controller: ``run_controller`` gathers those inputs, decides, takes the fence (a DynamoDB
  conditional write on the generation number) before any record write, moves the record, and
  publishes the metrics.

Time: the decision compares event times with event times (the fence keeps the time of the event that
caused the last change), never with the Lambda's clock, so a late event cannot look new and an
emulated clock in the local runtime stays consistent. Ignoring an event is always safe: the scheduled
health check re-evaluates the live state within one period.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent
from botocore.exceptions import BotoCoreError, ClientError

from regionha import netguard
from regionha.aws import TAG_NAME, deployment_filter, tag_value
from regionha.converge import Outcome
from regionha.converge import dns as converge_dns
from regionha.converge.dns import RecordChanged, read_record, swap_record, upsert_record, wait_insync
from regionha.errors import ConfigurationError, TransientError
from regionha.watch import metrics
from regionha.watch.canary import NodeCheck, check_node

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Node, Topology

logger = logging.getLogger(__name__)

EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
SCHEDULED_EVENT = "Scheduled Event"
FENCE_SK = "failover"
# Route 53's answers to "too fast": retried here after botocore's own retries gave up.
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"})
# When several instances carry a node's tags (a replaced one, terminated), the liveliest one counts.
_STATE_RANK = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3, "shutting-down": 4, "terminated": 5}

Action = Literal["failover", "refuse", "nothing", "ignore", "hold_down", "observe"]
TriggerKind = Literal["instance_state", "health_check"]


# --- the DNS resource ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and equal jitter: attempt n waits within [d/2, d],
    d = min(cap, base * 2**n), so waits grow while concurrent callers spread out."""

    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 8.0

    def delay(self, attempt: int) -> float:
        d = min(self.cap_seconds, self.base_seconds * 2**attempt)
        return d / 2 + random.uniform(0, d / 2)


def _error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


def activate(
    topology: Topology,
    clients: Clients,
    node: str,
    *,
    wait_seconds: float = 60.0,
    poll_seconds: float = 1.0,
    retry: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = metrics.sleep,
) -> list[Outcome]:
    """Point the record at ``node``'s IP with the topology's TTL and wait, bounded, for INSYNC.

    Route 53 throttling (``Throttling``, ``PriorRequestNotComplete``) is retried with backoff, at most
    ``retry.attempts`` times; the UPSERT is idempotent, so a retry after a lost answer writes nothing
    new. Raises TransientError when throttling outlasts the retries or INSYNC does not come within
    ``wait_seconds``, ConfigurationError for an unknown node or a missing zone.

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets,
    route53:ChangeResourceRecordSets, route53:GetChange.
    """
    target = _node(topology, node)
    return _throttled(
        topology,
        lambda: upsert_record(topology, clients, str(target.ip), wait_seconds=wait_seconds, poll_seconds=poll_seconds),
        retry,
        sleep,
    )


def _throttled(topology: Topology, call: Callable[[], Any], retry: RetryPolicy, sleep: Callable[[float], None]) -> Any:
    """``call()``, retried with backoff while Route 53 throttles, at most ``retry.attempts`` times;
    TransientError when throttling outlasts them. Other errors pass through at once."""
    for attempt in range(retry.attempts):
        try:
            return call()
        except ClientError as e:
            if _error_code(e) not in THROTTLING_CODES:
                raise
            if attempt + 1 >= retry.attempts:
                raise TransientError(
                    f"record {topology.dns.record.name}: still throttled after {attempt + 1} attempts"
                ) from e
            delay = retry.delay(attempt)
            logger.warning("Route 53 %s, retrying in %.2f s", _error_code(e), delay)
            sleep(delay)
    raise ConfigurationError("retry.attempts must be at least 1")


@dataclass(frozen=True)
class RecordStatus:
    """What ``monitor`` saw: the record's value, the node it names, and whether that is the active one."""

    name: str
    ip: str | None
    ttl: int | None
    node: str | None
    active: str | None
    ttl_matches: bool

    @property
    def names_active(self) -> bool:
        return self.ip is not None and self.node is not None and self.node == self.active

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"names_active": self.names_active}


def monitor(topology: Topology, clients: Clients, active: str | None) -> RecordStatus:
    """Read-only: does the record name ``active`` (with the topology's TTL)? Never writes, so a
    monitor can run as often as wanted without touching Route 53's change rate.

    IAM: route53:ListHostedZonesByName, route53:ListTagsForResources, route53:ListResourceRecordSets.
    """
    record = read_record(topology, clients)
    ip = record["ip"] if record else None
    ttl = record["ttl"] if record else None
    return RecordStatus(
        name=topology.dns.record.name,
        ip=ip,
        ttl=ttl,
        node=node_named(topology, ip),
        active=active,
        ttl_matches=ttl == topology.dns.record.ttl,
    )


def deactivate(topology: Topology, clients: Clients, node: str, *, delete: bool = False) -> list[Outcome]:
    """Leave the record as it is (the default: clients keep a known address until the next
    activation), or with ``delete`` remove it, but only while it still names ``node``: deleting
    another node's record would take the name away from the active node.

    IAM (only with ``delete``): route53:ListHostedZonesByName, route53:ListTagsForResources,
    route53:ListResourceRecordSets, route53:ChangeResourceRecordSets.
    """
    name = topology.dns.record.name
    target = _node(topology, node)
    if not delete:
        return [Outcome("record", name, "unchanged")]
    r53 = clients.route53()
    zone_id = converge_dns._zone_id_or_raise(r53, topology)
    current = converge_dns._record_set(r53, zone_id, name)
    if current is None:
        return [Outcome("record", name, "absent", zone_id)]
    values = [r["Value"] for r in current.get("ResourceRecords", [])]
    if values != [str(target.ip)]:
        return [Outcome("record", name, "unchanged", zone_id)]
    try:
        # DELETE must repeat the record exactly; Route 53 refuses it if the record changed meanwhile.
        r53.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={
                "Comment": f"regionha {topology.deployment}: deactivate {node}",
                "Changes": [{"Action": "DELETE", "ResourceRecordSet": current}],
            },
        )
    except ClientError as e:
        if _error_code(e) == "InvalidChangeBatch":
            return [Outcome("record", name, "unchanged", zone_id)]
        raise
    return [Outcome("record", name, "deleted", zone_id)]


def _node(topology: Topology, name: str) -> Node:
    node = next((n for n in topology.nodes if n.name == name), None)
    if node is None:
        known = ", ".join(n.name for n in topology.nodes)
        raise ConfigurationError(f"no node named {name!r} (nodes: {known})")
    return node


def node_named(topology: Topology, ip: str | None) -> str | None:
    """The node whose address ``ip`` is, or None (no record, or an address of no node of ours)."""
    if not ip:
        return None
    try:
        address = ipaddress.IPv4Address(ip)
    except ValueError:
        return None
    return next((n.name for n in topology.nodes if n.ip == address), None)


# --- the decision's inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """What woke the controller. ``time`` is the event's own time (epoch seconds)."""

    kind: TriggerKind
    id: str
    time: float
    region: str | None = None
    instance_id: str | None = None
    state: str | None = None


def _epoch(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError) as e:
        raise ConfigurationError(f"event time {text!r} is not an ISO 8601 time") from e


def trigger_from_event(event: Mapping[str, Any]) -> Trigger:
    """An EventBridge event (EC2 instance state change or scheduled event) as a Trigger."""
    if not isinstance(event, Mapping) or "detail-type" not in event:
        raise ConfigurationError("expected an EventBridge event (with detail-type)")
    ev = EventBridgeEvent(dict(event))
    when = _epoch(ev.time)
    if ev.detail_type == EC2_STATE_CHANGE:
        detail = ev.detail or {}
        if "instance-id" not in detail or "state" not in detail:
            raise ConfigurationError("EC2 state-change event without detail.instance-id/detail.state")
        return Trigger("instance_state", ev.get_id, when, ev.region, detail["instance-id"], detail["state"])
    if ev.detail_type == SCHEDULED_EVENT:
        return Trigger("health_check", ev.get_id, when, ev.region)
    raise ConfigurationError(f"unexpected event detail-type {ev.detail_type!r}")


@dataclass(frozen=True)
class NodeHealth:
    """One node as the controller sees it: its instance state and its service port, from two vantage points.

    ``service``: the port from the client network, after re-checks (False only after
    ``failover.failure_threshold`` consecutive failed checks); None when not checked (the instance is not
    running, or checks are off). ``peer``: the port from the peer region, checked only once the client
    network has lost the node; None when not checked or no peer vantage exists.
    """

    node: str
    instance_id: str | None
    instance_state: str | None
    service: bool | None
    detail: str | None = None
    peer: bool | None = None
    missed: int = 0  # failed client-network checks in a row

    @property
    def healthy(self) -> bool:
        """Serving the clients: running, and not lost from the client network."""
        return self.instance_state == "running" and self.service is not False

    @property
    def link_cut(self) -> bool:
        """Alive (its peer region reaches it) but unreachable from the client network."""
        return self.instance_state == "running" and self.service is False and self.peer is True

    def describe(self) -> str:
        if self.instance_state != "running":
            return f"{self.node} {self.instance_state or 'missing'}"
        if self.link_cut:
            return f"{self.node} unreachable from the client network but answers its peer region ({self.detail})"
        if self.service is False:
            where = "the client network and its peer region" if self.peer is False else "the client network"
            return f"{self.node} service down from {where} ({self.detail})"
        return f"{self.node} healthy"


@dataclass(frozen=True)
class Fence:
    """The fencing item: every record move bumps ``generation`` by a conditional write.

    ``changed_at`` is the time of the event that caused the last change (event time, not the
    controller's clock); ``event_id`` that event's id.
    """

    generation: int = 0
    active: str | None = None
    changed_at: float | None = None
    event_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    active: str | None = None  # the node the record names now
    target: str | None = None  # where the record should go
    needed: bool = False  # the record names an unhealthy node, or none: a failover is due
    failback: bool = False
    client_link: bool = False  # the active node is alive but the client network does not reach it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the decision (pure) ------------------------------------------------------------------------------


def screen(trigger: Trigger, fence: Fence, instance_nodes: Mapping[str, str]) -> Decision | None:
    """The events to ignore before looking at any node: foreign instances, duplicates, stale events.

    ``instance_nodes`` maps the cluster nodes' instance ids to node names.
    """
    if trigger.kind == "instance_state" and trigger.instance_id not in instance_nodes:
        return Decision("ignore", f"instance {trigger.instance_id} is not a cluster node")
    if fence.event_id is not None and trigger.id == fence.event_id:
        return Decision("ignore", f"duplicate: event {trigger.id} already caused generation {fence.generation}")
    if fence.changed_at is not None and trigger.time < fence.changed_at:
        return Decision(
            "ignore",
            f"stale: event of {_iso(trigger.time)} is older than the last change "
            f"(generation {fence.generation}, {_iso(fence.changed_at)})",
        )
    return None


def decide(
    topology: Topology,
    *,
    record_ip: str | None,
    health: Mapping[str, NodeHealth],
    fence: Fence,
    trigger: Trigger,
    instance_nodes: Mapping[str, str],
) -> Decision:
    """What to do about the record, from the live state only; the triggering event is a wake-up call
    and an ordering key, never a statement about a node's health (it may be late)."""
    ignored = screen(trigger, fence, instance_nodes)
    if ignored is not None:
        return ignored
    policy = topology.failover
    active = node_named(topology, record_ip)
    healthy = [n.name for n in topology.nodes if n.name in health and health[n.name].healthy]
    state = "; ".join(health[n.name].describe() for n in topology.nodes if n.name in health)

    if active is not None and active in healthy:
        primary = topology.primary.name
        if policy.mode == "builtin" and policy.failback == "automatic" and active != primary and primary in healthy:
            return _move(topology, fence, trigger, active, primary, f"automatic failback to {primary}", failback=True)
        action: Action = "observe" if policy.mode == "external" else "nothing"
        return Decision(action, f"the record names {active}, which is healthy", active)

    cut = active is not None and active in health and health[active].link_cut
    if cut and policy.client_link_cut == "stay":
        # A dead node and a cut client link look alike from the client network; the peer region tells
        # them apart. Moving across regions would not heal the link (failover.client_link_cut).
        return Decision(
            "nothing",
            f"the record names {active}, which answers its peer region but not the client network: "
            f"client link cut, no failover (failover.client_link_cut: stay) ({state})",
            active,
            client_link=True,
        )
    named = f"the record names {active}, which is not healthy" if active else _no_node(record_ip)
    if cut:
        named = f"the record names {active}, which the client network does not reach (client link cut)"
    standbys = [n for n in healthy if n != active]
    if policy.mode == "external":
        # The cluster software moves the record; regionha only says a move is overdue.
        return Decision("observe", f"{named}; external mode, regionha does not write ({state})", active, needed=True)
    if not standbys:
        return Decision("refuse", f"{named}; no healthy standby ({state})", active, needed=True, client_link=cut)
    return _move(
        topology,
        fence,
        trigger,
        active,
        standbys[0],
        f"{named}; failover to {standbys[0]}",
        needed=True,
        client_link=cut,
    )


def _move(
    topology: Topology,
    fence: Fence,
    trigger: Trigger,
    active: str | None,
    target: str,
    reason: str,
    *,
    needed: bool = False,
    failback: bool = False,
    client_link: bool = False,
) -> Decision:
    hold = topology.failover.hold_down_seconds
    if fence.changed_at is not None and trigger.time - fence.changed_at < hold:
        left = hold - (trigger.time - fence.changed_at)
        return Decision(
            "hold_down",
            f"{reason} held down: last change {trigger.time - fence.changed_at:.0f} s ago, "
            f"hold-down {hold} s ({left:.0f} s left)",
            active,
            target,
            needed,
            failback,
            client_link,
        )
    return Decision("failover", reason, active, target, needed, failback, client_link)


def _no_node(record_ip: str | None) -> str:
    return f"the record names {record_ip}, no node of ours" if record_ip else "there is no record"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --- fencing ------------------------------------------------------------------------------------------


def read_fence(dynamodb: Any, table: str, deployment: str) -> Fence:
    """The fencing item (a strongly consistent read). IAM: dynamodb:GetItem on the state table."""
    item = dynamodb.get_item(
        TableName=table, Key={"pk": {"S": deployment}, "sk": {"S": FENCE_SK}}, ConsistentRead=True
    ).get("Item")
    if not item:
        return Fence()
    return Fence(
        generation=int(item["generation"]["N"]),
        active=item.get("active", {}).get("S"),
        changed_at=float(item["changed_at"]["N"]) if "changed_at" in item else None,
        event_id=item.get("event_id", {}).get("S"),
        reason=item.get("reason", {}).get("S"),
    )


def claim_fence(
    dynamodb: Any,
    table: str,
    deployment: str,
    fence: Fence,
    *,
    active: str,
    changed_at: float,
    event_id: str,
    reason: str,
) -> Fence | None:
    """Take the next generation, on the condition that nobody took it since ``fence`` was read.

    Returns the new fence, or None when another decider won (its decision stands; ours is based on
    an outdated view and must not touch the record). IAM: dynamodb:PutItem on the state table.
    """
    new = Fence(fence.generation + 1, active, changed_at, event_id, reason)
    kwargs: dict[str, Any] = {}
    if fence.generation == 0:
        kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        kwargs["ConditionExpression"] = "generation = :expected"
        kwargs["ExpressionAttributeValues"] = {":expected": {"N": str(fence.generation)}}
    try:
        dynamodb.put_item(
            TableName=table,
            Item={
                "pk": {"S": deployment},
                "sk": {"S": FENCE_SK},
                "generation": {"N": str(new.generation)},
                "active": {"S": active},
                "changed_at": {"N": repr(changed_at)},
                "event_id": {"S": event_id},
                "reason": {"S": reason[:1000]},
                "written_at": {"N": repr(time.time())},
            },
            **kwargs,
        )
    except ClientError as e:
        if _error_code(e) == "ConditionalCheckFailedException":
            return None
        raise
    return new


# --- node health --------------------------------------------------------------------------------------


def node_instances(topology: Topology, clients: Clients) -> dict[str, list[dict[str, Any]]]:
    """Each node's EC2 instances (any state, by the deployment's tags) in its own region.

    IAM: ec2:DescribeInstances.
    """
    regions: dict[str, list[str]] = {}
    for n in topology.nodes:
        regions.setdefault(topology.region_of(n.vpc), []).append(n.name)
    found: dict[str, list[dict[str, Any]]] = {n.name: [] for n in topology.nodes}
    for region, names in regions.items():
        filters = [*deployment_filter(topology.deployment), {"Name": f"tag:{TAG_NAME}", "Values": names}]
        for page in clients.ec2(region).get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    name = tag_value(inst, TAG_NAME)
                    if name in found:
                        found[name].append({"id": inst["InstanceId"], "state": inst["State"]["Name"], "region": region})
    for instances in found.values():
        instances.sort(key=lambda i: _STATE_RANK.get(i["state"], len(_STATE_RANK)))
    return found


def instance_node_map(instances: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    return {i["id"]: name for name, found in instances.items() for i in found}


def service_endpoint(node: Node) -> tuple[str, int]:
    """Where a node's service answers: its cloud address (``check_node`` maps it in local mode).
    Tests replace this to point at servers of their own."""
    return str(node.ip), node.port


def node_health(
    topology: Topology,
    instances: Mapping[str, list[dict[str, Any]]],
    *,
    service_check: bool = True,
    timeout: float | None = None,
    threshold: int | None = None,
    interval: float | None = None,
    sleep: Callable[[float], None] = metrics.sleep,
    peer_check: bool | None = None,
) -> dict[str, NodeHealth]:
    """Health of every node: the instance state, and for a running instance ``GET /`` on its port,
    which must answer with the node's own name.

    A node that fails a check is re-checked every ``interval`` seconds (``failover.check_interval_seconds``)
    and counts as down only after ``threshold`` (``failover.failure_threshold``) failures in a row, so
    one lost packet or slow answer never moves the record. While re-checking, a node is also checked
    from its peer region (the other cluster region's address; ``peer_check``, by default on wherever
    the controller dials the nodes itself), which tells a cut client link from a dead node. Checks of
    one round run at once; every port check goes through ``check_node`` (this module's, looked up at
    call time). Takes at most (threshold - 1) x interval + threshold x timeout seconds.
    """
    policy = topology.failover
    per_try = timeout or topology.canary.timeout_seconds
    threshold = threshold or policy.failure_threshold
    interval = policy.check_interval_seconds if interval is None else interval
    if peer_check is None:
        peer_check = not os.environ.get("PROBE_FUNCTION") or netguard.local_mode_enabled()
    best = {n.name: (instances.get(n.name) or [None])[0] for n in topology.nodes}
    to_check = [n.name for n in topology.nodes if service_check and best[n.name] and best[n.name]["state"] == "running"]
    checks = _client_checks(topology, to_check, per_try)
    missed = {name: 1 for name in to_check if not _answers(checks[name], name)}
    peer: dict[str, bool | None] = {}
    for _ in range(1, threshold):
        if not missed:
            break
        sleep(interval)
        failing = sorted(missed)
        again = _client_checks(topology, failing, per_try)
        if peer_check:
            for name, ok in _peer_checks(topology, failing, per_try).items():
                peer[name] = peer.get(name) or ok
        for name in failing:
            checks[name] = again[name]
            if _answers(again[name], name):
                logger.info("%s answered again after %d missed check(s)", name, missed.pop(name))
            else:
                missed[name] += 1
    if peer_check and threshold == 1 and missed:
        peer.update(_peer_checks(topology, sorted(missed), per_try))
    health = {}
    for n in topology.nodes:
        inst = best[n.name]
        check = checks.get(n.name)
        service = None
        detail = None
        if check is not None:
            service = n.name not in missed
            if not check.reachable:
                detail = check.error
            elif check.name != n.name:
                detail = f"answers as {check.name!r}"
            if not service:
                detail = f"{missed[n.name]} failed checks in a row, {interval:g} s apart: {detail}"
        health[n.name] = NodeHealth(
            n.name,
            inst["id"] if inst else None,
            inst["state"] if inst else None,
            service,
            detail,
            peer.get(n.name),
            missed.get(n.name, 0),
        )
    return health


def _answers(check: NodeCheck, name: str) -> bool:
    return check.reachable and check.name == name


def _client_checks(topology: Topology, names: list[str], timeout: float) -> dict[str, NodeCheck]:
    """One round of checks from the client network: through the canary function (``PROBE_FUNCTION``) on
    AWS, else by ``check_node`` from here."""
    if not names:
        return {}
    if os.environ.get("PROBE_FUNCTION"):
        return _checks_through_probe_function(topology, set(names), timeout)
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="node-check") as pool:
        futures = {name: pool.submit(check_node, *service_endpoint(topology.node(name)), timeout) for name in names}
        return {name: f.result() for name, f in futures.items()}


def peer_source(topology: Topology, node: str) -> str | None:
    """The peer-region vantage point of ``node``: the address of a node in another VPC (its region's
    ClusterNode security group admits the peer VPC), or None when every node shares the VPC."""
    vpc = topology.node(node).vpc
    other = next((n for n in topology.nodes if n.vpc != vpc), None)
    return str(other.ip) if other is not None else None


def _peer_checks(topology: Topology, names: list[str], timeout: float) -> dict[str, bool | None]:
    """One round of checks of ``names`` from their peer region: True/False, None without a vantage."""

    def one(name: str) -> bool | None:
        source = peer_source(topology, name)
        if source is None:
            return None
        try:
            check = check_node(*service_endpoint(topology.node(name)), timeout, source=source)
        except TypeError:  # a check_node without a vantage point (a test's stand-in)
            return None
        except OSError as e:  # the vantage address is not ours to bind here
            logger.warning("no peer-region check of %s: %s", name, e)
            return None
        return _answers(check, name)

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="peer-check") as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def _checks_through_probe_function(topology: Topology, names: set[str], timeout: float) -> dict[str, NodeCheck]:
    """The service-port checks, made by the canary function (``PROBE_FUNCTION``) from the client network.

    The controller stays outside any VPC, where the EC2, Route 53 and DynamoDB APIs are; the nodes'
    ports are reachable only from inside (their security group admits the client network). A failed
    invocation makes every check fail, which refuses a failover rather than making a blind one.
    IAM: lambda:InvokeFunction on the canary function.
    """
    from regionha.aws import Clients

    function = os.environ["PROBE_FUNCTION"]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    payload = {
        "topology": topology.to_json(),
        "truth": {"ip": None, "ttl": None, "node": None},
        "timeout": timeout,
        "emit_metrics": False,
    }
    try:
        response = (
            Clients()
            .client("lambda", region)
            .invoke(FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(payload))
        )
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise RuntimeError(f"{function}: {body}")
        nodes = body["nodes"]
    except Exception as e:  # any failure to probe leaves the node unknown, i.e. unhealthy
        return {n: NodeCheck(str(topology.node(n).ip), False, None, 0.0, f"probe function: {e}") for n in names}
    return {
        n: NodeCheck(nodes[n]["ip"], nodes[n]["reachable"], nodes[n]["name"], nodes[n]["latency_ms"], nodes[n]["error"])
        for n in names
    }


# --- the controller -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControllerResult:
    decision: Decision
    generation: int
    moved: bool = False
    failover_seconds: float | None = None
    record_ip: str | None = None
    health: dict[str, NodeHealth] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision.to_json(),
            "generation": self.generation,
            "moved": self.moved,
            "failover_seconds": self.failover_seconds,
            "record_ip": self.record_ip,
            "health": {k: asdict(v) | {"healthy": v.healthy} for k, v in self.health.items()},
        }


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller talks to the world; the defaults are the Lambda's."""

    service_check: bool = True
    wait_seconds: float = 60.0
    poll_seconds: float = 1.0
    retry: RetryPolicy = RetryPolicy()
    # Waits and event times follow one clock (emulated in the local runtime, see metrics.now/sleep).
    sleep: Callable[[float], None] = metrics.sleep
    now: Callable[[], float] = field(default=lambda: metrics.now().timestamp())
    cloudwatch: Any = None  # for the PutMetricData sink
    # Check a node from its peer region too (None: wherever the controller dials the nodes itself).
    peer_check: bool | None = None


def run_controller(
    topology: Topology,
    clients: Clients,
    trigger: Trigger,
    *,
    table: str,
    table_region: str,
    settings: ControllerSettings = ControllerSettings(),
) -> ControllerResult:
    """One evaluation: fence, nodes, record → decision → compare-and-swap of the record, with metrics.

    Route 53 is the arbiter: the move is one change batch that deletes the value the decision saw and
    creates the new one, so of several controllers (one per cluster region, say) that saw the same
    record exactly one moves it; the others find it changed and stand down. The fence (DynamoDB) is
    written only after Route 53 accepted the change: it remembers changes that happened (hold-down,
    duplicate and stale events), and a write that failed consumes nothing, so Lambda's retry of the
    event or the next health check tries again at once. An unreadable fence (the table's region down)
    leaves the controller working on Route 53's arbitration alone.

    Metrics (namespace regionha, dimension Deployment): FailoverStarted before the write,
    FailoverCompleted and FailoverSeconds (event time to INSYNC) when the record is INSYNC,
    FailoverRefused when a failover is due and cannot happen (no healthy standby, or external mode),
    FailoverStuck when a needed failover is not written (no healthy standby, held down, Route 53
    throttling or failing past the retries), ClientLinkDown when the active node answers its peer
    region but not the client network.

    Raises TransientError when Route 53 throttles or fails past the retries (nothing was written: the
    retry starts afresh; Powertools idempotency does not keep a failed run), ConfigurationError for a
    missing zone.

    IAM: dynamodb:GetItem, dynamodb:PutItem (state table), ec2:DescribeInstances, route53:
    ListHostedZonesByName, ListTagsForResources, ListResourceRecordSets, ChangeResourceRecordSets
    (CREATE, DELETE), GetChange; cloudwatch:PutMetricData (PutMetricData sink only).
    """
    dynamodb = clients.client("dynamodb", table_region)
    deployment = topology.deployment
    fence = _read_fence_or_none(dynamodb, table, deployment) or Fence()
    instances = node_instances(topology, clients)
    instance_nodes = instance_node_map(instances)
    early = screen(trigger, fence, instance_nodes)
    if early is not None:
        logger.info("ignored: %s", early.reason)
        return ControllerResult(early, fence.generation)

    health = node_health(
        topology, instances, service_check=settings.service_check, sleep=settings.sleep, peer_check=settings.peer_check
    )
    record = read_record(topology, clients)
    record_ip = record["ip"] if record else None
    decision = decide(
        topology,
        record_ip=record_ip,
        health=health,
        fence=fence,
        trigger=trigger,
        instance_nodes=instance_nodes,
    )
    logger.info("decision %s: %s", decision.action, decision.reason)
    dims = {"Deployment": deployment}
    points = []
    if decision.action in ("refuse", "observe") and decision.needed:
        points.append(metrics.Datapoint("FailoverRefused", 1.0, "Count", dims))
    if decision.action in ("refuse", "hold_down") and decision.needed:
        points.append(metrics.Datapoint("FailoverStuck", 1.0, "Count", dims))
    if decision.client_link:
        points.append(metrics.Datapoint("ClientLinkDown", 1.0, "Count", dims))
    if points:
        _emit(points, settings, table_region)
    if decision.action != "failover" or decision.target is None:
        return ControllerResult(decision, fence.generation, record_ip=record_ip, health=health)

    _emit([metrics.Datapoint("FailoverStarted", 1.0, "Count", dims)], settings, table_region)
    try:
        swap = _swap(topology, clients, record_ip, decision.target, decision.reason, settings)
        if swap.change is None:  # it already names the target: somebody else made this very move
            raise RecordChanged(f"record already names {decision.target}")
    except RecordChanged as e:
        now = read_record(topology, clients)
        lost = Decision(
            "ignore",
            f"another controller or an operator moved the record first (it names "
            f"{node_named(topology, now['ip'] if now else None) or (now or {}).get('ip') or 'nothing'}); "
            f"nothing written ({e})",
            decision.active,
            decision.target,
        )
        logger.info("%s", lost.reason)
        return ControllerResult(lost, fence.generation, record_ip=now["ip"] if now else None, health=health)
    except (TransientError, ClientError, BotoCoreError) as e:
        if decision.needed:
            _emit([metrics.Datapoint("FailoverStuck", 1.0, "Count", dims)], settings, table_region)
        logger.error("failover to %s not written: %s", decision.target, e)
        raise TransientError(
            f"failover to {decision.target} not written ({e}); nothing recorded, the next try starts afresh"
        ) from e

    claimed = _record_change(
        dynamodb, table, deployment, fence, decision.target, trigger.time, trigger.id, decision.reason
    )
    _wait(topology, clients, swap, settings)
    seconds = max(0.0, settings.now() - trigger.time)
    _emit(
        [
            metrics.Datapoint("FailoverCompleted", 1.0, "Count", dims),
            metrics.Datapoint("FailoverSeconds", seconds, "Seconds", dims),
        ],
        settings,
        table_region,
    )
    logger.info("record on %s (generation %d) %.1f s after the event", decision.target, claimed.generation, seconds)
    target_ip = str(_node(topology, decision.target).ip)
    return ControllerResult(decision, claimed.generation, True, seconds, target_ip, health)


def watch(
    topology: Topology,
    clients: Clients,
    trigger: Trigger,
    *,
    table: str,
    table_region: str,
    seconds: float,
    settings: ControllerSettings = ControllerSettings(),
) -> list[ControllerResult]:
    """Sub-minute detection inside one scheduled invocation: evaluate at once, then every
    ``failover.check_interval_seconds`` until ``seconds`` (on ``settings.now``'s clock) have passed.

    EventBridge schedules go down to one minute; this loop is what checks the nodes every few seconds
    (a Lambda that loops inside its scheduled minute: 43,800 invocations a month of about ``seconds``
    each, about $11 a month at 55 s and 256 MB, see docs/failover.md). Each evaluation is a
    ``run_controller`` with its own trigger id (``<event id>#<n>``) and the event time plus the elapsed
    time, so hold-down and stale-event screening work as for separate events.
    Errors end the loop and reach Lambda (its retry, or the next minute, starts afresh).
    """
    interval = topology.failover.check_interval_seconds
    start = settings.now()
    results: list[ControllerResult] = []
    for n in range(max(1, math.ceil(seconds / interval) + 1)):
        elapsed = max(0.0, settings.now() - start)
        if n and elapsed >= seconds:
            break
        tick = Trigger(trigger.kind, f"{trigger.id}#{n}", trigger.time + elapsed, trigger.region)
        results.append(
            run_controller(topology, clients, tick, table=table, table_region=table_region, settings=settings)
        )
        settings.sleep(max(0.0, interval - (settings.now() - start - elapsed)))
    return results


def _swap(
    topology: Topology,
    clients: Clients,
    expected_ip: str | None,
    target: str,
    reason: str,
    settings: ControllerSettings,
) -> Any:
    ip = str(_node(topology, target).ip)
    comment = f"regionha {topology.deployment}: {reason}"[:256]
    return _throttled(
        topology,
        lambda: swap_record(topology, clients, expected_ip, ip, comment=comment),
        settings.retry,
        settings.sleep,
    )


def _wait(topology: Topology, clients: Clients, swap: Any, settings: ControllerSettings) -> None:
    if swap.change is not None:
        wait_insync(
            clients.route53(),
            swap.change,
            topology.dns.record.name,
            wait_seconds=settings.wait_seconds,
            poll_seconds=settings.poll_seconds,
            sleep=settings.sleep,
        )


def _read_fence_or_none(dynamodb: Any, table: str, deployment: str) -> Fence | None:
    try:
        return read_fence(dynamodb, table, deployment)
    except (ClientError, BotoCoreError) as e:
        # The table's region may be the one that is down; Route 53 still arbitrates the move.
        logger.warning("fence unreadable (%s): deciding without hold-down and duplicate screening", e)
        return None


def _record_change(
    dynamodb: Any, table: str, deployment: str, fence: Fence, active: str, changed_at: float, event_id: str, reason: str
) -> Fence:
    """Record a change Route 53 accepted as the next generation. A newer fence written meanwhile (another
    controller's later change) is built upon; a table that cannot be written only costs the hold-down."""
    for _ in range(3):
        try:
            claimed = claim_fence(
                dynamodb,
                table,
                deployment,
                fence,
                active=active,
                changed_at=changed_at,
                event_id=event_id,
                reason=reason,
            )
        except (ClientError, BotoCoreError) as e:
            logger.warning("record moved to %s but the fence was not written: %s", active, e)
            return Fence(fence.generation + 1, active, changed_at, event_id, reason)
        if claimed is not None:
            return claimed
        fence = _read_fence_or_none(dynamodb, table, deployment) or fence
        if fence.changed_at is not None and fence.changed_at > changed_at:
            return fence  # a later change is already recorded
    logger.warning("record moved to %s; the fence kept changing under us", active)
    return Fence(fence.generation + 1, active, changed_at, event_id, reason)


def manual_switch(
    topology: Topology,
    clients: Clients,
    node: str,
    *,
    table: str,
    table_region: str,
    reason: str = "manual switch",
    settings: ControllerSettings = ControllerSettings(),
) -> ControllerResult:
    """An operator's move (the manual failback): the same compare-and-swap as the controller's, no
    health checks; recorded in the fence as a newer generation after Route 53 accepted it.

    Raises TransientError when the record changed between reading and writing (try again).
    IAM: dynamodb:GetItem, dynamodb:PutItem (state table), the Route 53 actions of ``run_controller``.
    """
    _node(topology, node)
    dynamodb = clients.client("dynamodb", table_region)
    fence = _read_fence_or_none(dynamodb, table, topology.deployment) or Fence()
    now = settings.now()
    record = read_record(topology, clients)
    decision = Decision(
        "failover", f"{reason}: to {node}", node_named(topology, record["ip"] if record else None), node
    )
    try:
        swap = _swap(topology, clients, record["ip"] if record else None, node, decision.reason, settings)
    except RecordChanged as e:
        raise TransientError(f"the record changed meanwhile; try again ({e})") from e
    if swap.change is None:  # it names the node already: no change to record
        return ControllerResult(decision, fence.generation, False, 0.0, str(_node(topology, node).ip))
    claimed = _record_change(
        dynamodb, table, topology.deployment, fence, node, now, f"manual-{uuid.uuid4()}", decision.reason
    )
    _wait(topology, clients, swap, settings)
    return ControllerResult(decision, claimed.generation, True, settings.now() - now, str(_node(topology, node).ip))


def _emit(points: list[metrics.Datapoint], settings: ControllerSettings, region: str) -> None:
    metrics.emit(points, cloudwatch=settings.cloudwatch, region=region)
