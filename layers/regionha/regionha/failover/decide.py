"""The failover decision, pure: what to do about the record, from the topology, the record's value,
each node's health, the fence and the event that woke the controller. No AWS call, no clock.

It fails over only to a healthy standby, holds down after every change, fails back only when the
topology says so, and ignores duplicate, stale and foreign events. Time: event times are compared
with event times (the fence keeps the time of the event that caused the last change), never with the
controller's clock, so a late event cannot look new and an emulated clock stays consistent. Ignoring
an event is always safe: the next health check re-evaluates the live state within one interval.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from regionha.errors import ConfigurationError
from regionha.failover.fence import Fence

if TYPE_CHECKING:
    from regionha.topology import Node, Topology

EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
SCHEDULED_EVENT = "Scheduled Event"

Action = Literal["failover", "refuse", "nothing", "ignore", "hold_down", "observe"]
TriggerKind = Literal["instance_state", "health_check"]
# The instance state of a node whose region's EC2 API did not answer (that region may be down).
UNKNOWN_STATE = "unknown"


def node_by_name(topology: Topology, name: str) -> Node:
    """The node called ``name``; ConfigurationError naming the known nodes otherwise."""
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
        """Serving the clients: running and not lost from the client network; or, when its region's EC2
        API did not answer (state ``unknown``), answering its port checks."""
        if self.instance_state == UNKNOWN_STATE:
            return self.service is True
        return self.instance_state == "running" and self.service is not False

    @property
    def link_cut(self) -> bool:
        """Alive (its peer region reaches it) but unreachable from the client network."""
        return self.instance_state in ("running", UNKNOWN_STATE) and self.service is False and self.peer is True

    def describe(self) -> str:
        if self.instance_state == UNKNOWN_STATE and self.service is None:
            return f"{self.node} unknown ({self.detail})"
        if self.instance_state not in ("running", UNKNOWN_STATE):
            return f"{self.node} {self.instance_state or 'missing'}"
        if self.link_cut:
            return f"{self.node} unreachable from the client network but answers its peer region ({self.detail})"
        if self.service is False:
            where = "the client network and its peer region" if self.peer is False else "the client network"
            return f"{self.node} service down from {where} ({self.detail})"
        return f"{self.node} healthy"


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


