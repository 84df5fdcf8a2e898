"""EventBridge as moto does not emulate it: an event bus that delivers, schedules that fire, EC2 state-change events.

moto stores rules and targets but never fires a schedule and never emits service events. This
module reads the rules through the ordinary API (``events.list_rules``/``list_targets_by_rule``),
so the same code drives moto in-process in tests and the moto server in the local runtime, and
delivers to the targets through their APIs (``lambda.invoke``, ``states.start_execution``,
``sns.publish``, ``sqs.send_message``).

Which events a rule takes is :mod:`.event_patterns`; when a schedule fires is :mod:`.schedule_expressions`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local.aws.event_patterns import pattern_matches
from regionha.local.aws.schedule_expressions import Cron, Rate, parse_schedule
from regionha.local.clock import Clock, CompressedClock, Ticker, iso

logger = logging.getLogger(__name__)

DEFAULT_BUS = "default"
SCHEDULED_EVENT = "Scheduled Event"
EC2_STATE_CHANGE = "EC2 Instance State-change Notification"
# A clock jump (a suspended laptop, a huge compression) must not turn into a delivery storm.
MAX_CATCH_UP_FIRES = 1000


# --- schedules --------------------------------------------------------------------------------
# --- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One event handed (or not) to one rule target."""

    rule: str
    rule_arn: str
    target_id: str
    target_arn: str
    time: datetime  # the event's emulated time
    ok: bool
    error: str | None = None
    event: dict[str, Any] = field(default_factory=dict, compare=False)
    payload: str = field(default="", compare=False)


class DeliveryLog:
    """Thread-safe record of deliveries, shared by the schedule runner and the event bus."""

    def __init__(self) -> None:
        self._items: list[Delivery] = []
        self._lock = threading.Lock()

    def append(self, d: Delivery) -> None:
        with self._lock:
            self._items.append(d)

    def all(self, rule: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self._items if rule is None or d.rule == rule]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def json_path(document: Any, path: str) -> Any:
    """A value by the simple JSONPath EventBridge accepts in InputPath ($.a.b, $.list[0]); None if absent."""
    if not path.startswith("$"):
        raise ConfigurationError(f"JSON path must start with '$': {path!r}")
    node = document
    pos = 1
    while pos < len(path):
        m = _PATH_TOKEN.match(path, pos)
        if m is None:
            raise ConfigurationError(f"unsupported JSON path {path!r}")
        key, index = m.groups()
        if key is not None:
            node = node.get(key) if isinstance(node, dict) else None
        else:
            i = int(index)
            node = node[i] if isinstance(node, list) and i < len(node) else None
        if node is None:
            return None
        pos = m.end()
    return node


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def render_input(target: dict[str, Any], event: dict[str, Any], rule_arn: str) -> str:
    """The payload EventBridge sends a target: the event, or the target's Input/InputPath/InputTransformer."""
    if target.get("Input") is not None:
        return target["Input"]
    if target.get("InputPath"):
        return json.dumps(json_path(event, target["InputPath"]))
    transformer = target.get("InputTransformer")
    if transformer:
        values = {name: json_path(event, p) for name, p in (transformer.get("InputPathsMap") or {}).items()}
        values.update(
            {
                "aws.events.rule-arn": rule_arn,
                "aws.events.rule-name": rule_arn.rsplit("/", 1)[-1],
                "aws.events.event.ingestion-time": event.get("time"),
                "aws.events.event": event,
                "aws.events.event.json": event,
            }
        )
        return _transform(transformer["InputTemplate"], values)
    return json.dumps(event)


def _transform(template: str, values: dict[str, Any]) -> str:
    """Fill ``<name>`` placeholders: escaped text inside a JSON string, JSON (or raw text) outside one."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(template):
        ch = template[i]
        m = _PLACEHOLDER.match(template, i) if ch == "<" else None
        if m and m.group(1) in values:
            value = values[m.group(1)]
            if in_string:
                text = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
                out.append(json.dumps(text)[1:-1])
            elif isinstance(value, str):
                out.append(value)  # AWS inserts a string outside quotes as it is
            else:
                out.append(json.dumps(value))
            i = m.end()
            continue
        if ch == "\\" and in_string:
            out.append(template[i : i + 2])
            i += 2
            continue
        if ch == '"':
            in_string = not in_string
        out.append(ch)
        i += 1
    return "".join(out)


def _arn_parts(arn: str) -> tuple[str, str, str, str]:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ConfigurationError(f"not an ARN: {arn!r}")
    return parts[2], parts[3], parts[4], parts[5]


def send_to_target(clients: Clients, target_arn: str, payload: str) -> None:
    """Hand ``payload`` to one target by its ARN; raises on failure.

    IAM: ``lambda:InvokeFunction``, ``states:StartExecution``, ``sns:Publish``,
    ``sqs:GetQueueUrl`` + ``sqs:SendMessage`` (the rule's target role in AWS).
    """
    service, region, account, resource = _arn_parts(target_arn)
    if service == "lambda":
        resp = clients.client("lambda", region).invoke(
            FunctionName=target_arn, InvocationType="Event", Payload=payload.encode()
        )
        if resp.get("FunctionError"):
            raise RuntimeError(f"function error {resp['FunctionError']}")
    elif service == "states":
        # EventBridge names executions with a random id; a fixed name would collide on the next fire.
        clients.client("stepfunctions", region).start_execution(
            stateMachineArn=target_arn, name=uuid.uuid4().hex, input=payload
        )
    elif service == "sns":
        clients.client("sns", region).publish(TopicArn=target_arn, Message=payload)
    elif service == "sqs":
        sqs = clients.client("sqs", region)
        url = sqs.get_queue_url(QueueName=resource, QueueOwnerAWSAccountId=account)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=payload)
    else:
        raise ConfigurationError(f"target service {service!r} is not emulated by the local runtime")


def _event_bus_region(arn: str) -> str | None:
    """The region of an event bus ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME), else None."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "events" and parts[5].startswith("event-bus/"):
        return parts[3]
    return None


def _paged(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        resp = call(**kwargs, **({"NextToken": token} if token else {}))
        yield from resp.get(key, [])
        token = resp.get("NextToken")
        if not token:
            return


def _enabled(rule: dict[str, Any]) -> bool:
    return str(rule.get("State", "")).startswith("ENABLED")


class _RuleTargets:
    """Reads rules and their targets and delivers to them; shared by the bus and the schedule runner."""

    # Set by the EventBus: how an event reaches another region's default bus.
    forward: Callable[[str, dict[str, Any]], Any] | None = None

    def __init__(self, clients: Clients, log: DeliveryLog | None):
        self.clients = clients
        self.log = log if log is not None else DeliveryLog()

    def rules(self, region: str, bus: str = DEFAULT_BUS) -> list[dict[str, Any]]:
        """IAM: ``events:ListRules``."""
        return list(_paged(self.clients.client("events", region).list_rules, "Rules", EventBusName=bus))

    def deliver(self, region: str, rule: dict[str, Any], event: dict[str, Any], at: datetime) -> list[Delivery]:
        """Send ``event`` to every target of ``rule``. IAM: ``events:ListTargetsByRule`` plus the targets'."""
        events = self.clients.client("events", region)
        bus = rule.get("EventBusName") or DEFAULT_BUS
        targets = list(_paged(events.list_targets_by_rule, "Targets", Rule=rule["Name"], EventBusName=bus))
        out = []
        for target in targets:
            payload = ""
            try:
                payload = render_input(target, event, rule["Arn"])
                bus_region = _event_bus_region(target["Arn"])
                if bus_region is not None and self.forward is not None:
                    # Another bus (cross-region forwarding): the event itself goes on, to that bus's rules.
                    self.forward(bus_region, event)
                else:
                    send_to_target(self.clients, target["Arn"], payload)
                d = Delivery(rule["Name"], rule["Arn"], target["Id"], target["Arn"], at, True, None, event, payload)
            except Exception as e:  # a failed target is a recorded delivery, as in EventBridge metrics
                logger.warning("delivery of %s to %s failed: %s", rule["Name"], target["Arn"], e)
                d = Delivery(rule["Name"], rule["Arn"], target["Id"], target["Arn"], at, False, repr(e), event, payload)
            self.log.append(d)
            out.append(d)
        return out


class EventBus(_RuleTargets):
    """Delivers any event to the ENABLED rules of its region's bus whose EventPattern matches.

    ``put`` fills the envelope fields AWS adds (id, time, version, account) when missing.
    """

    def __init__(
        self,
        clients: Clients,
        clock: Clock | None = None,
        bus: str = DEFAULT_BUS,
        log: DeliveryLog | None = None,
        account: str = "123456789012",
    ):
        super().__init__(clients, log)
        self.clock = clock or CompressedClock()
        self.bus = bus
        self.account = account
        self.forward = lambda region, event: self.put(event, bus_region=region)

    def put(self, event: dict[str, Any], *, bus_region: str | None = None) -> list[Delivery]:
        """Deliver to the matching rules of ``bus_region``'s bus (default: the event's own region)."""
        if "region" not in event or "source" not in event or "detail-type" not in event:
            raise ConfigurationError("an event needs at least region, source and detail-type")
        now = self.clock.now()
        full = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "account": self.account,
            "time": iso(now),
            "resources": [],
            "detail": {},
            **event,
        }
        region = bus_region or full["region"]
        out: list[Delivery] = []
        for rule in self.rules(region, self.bus):
            if not _enabled(rule) or not rule.get("EventPattern"):
                continue
            if pattern_matches(json.loads(rule["EventPattern"]), full):
                out.extend(self.deliver(region, {**rule, "EventBusName": self.bus}, full, now))
        return out


@dataclass
class _ScheduleState:
    expression: str
    schedule: Rate | Cron
    anchor: datetime
    next_fire: datetime | None


class ScheduleRunner(_RuleTargets, Ticker):
    """Fires ENABLED rules with a ScheduleExpression in ``regions`` on the emulated clock.

    A schedule starts when the runner first sees the rule enabled (moto keeps no creation time):
    a rate fires one period later, then every period; a cron at each matching minute. Every due
    firing is sent, also several after a clock jump, each with its own scheduled time.
    """

    def __init__(
        self,
        clients: Clients,
        regions: Iterable[str],
        clock: Clock,
        log: DeliveryLog | None = None,
        interval: float = 0.25,
    ):
        _RuleTargets.__init__(self, clients, log)
        Ticker.__init__(self)
        self.regions = list(regions)
        self.clock = clock
        self.interval = interval
        self._state: dict[str, _ScheduleState] = {}

    def tick(self, now: datetime | None = None) -> list[Delivery]:
        now = now or self.clock.now()
        out: list[Delivery] = []
        seen: set[str] = set()
        for region in self.regions:
            for rule in self.rules(region):
                expr = rule.get("ScheduleExpression")
                if not expr or not _enabled(rule):
                    continue
                seen.add(rule["Arn"])
                state = self._state.get(rule["Arn"])
                if state is None or state.expression != expr:
                    schedule = parse_schedule(expr)
                    state = _ScheduleState(expr, schedule, now, schedule.next_after(now, now))
                    self._state[rule["Arn"]] = state
                out.extend(self._fire_due(region, rule, state, now))
        # A disabled or deleted rule restarts its schedule when it comes back, as in EventBridge.
        for arn in set(self._state) - seen:
            del self._state[arn]
        return out

    def _fire_due(self, region: str, rule: dict[str, Any], state: _ScheduleState, now: datetime) -> list[Delivery]:
        out: list[Delivery] = []
        fired = 0
        while state.next_fire is not None and state.next_fire <= now:
            if fired >= MAX_CATCH_UP_FIRES:
                logger.warning("rule %s: skipping firings after %d catch-up deliveries", rule["Name"], fired)
                state.next_fire = state.schedule.next_after(now, state.anchor)
                break
            out.extend(
                self.deliver(region, rule, scheduled_event(rule["Arn"], region, state.next_fire), state.next_fire)
            )
            fired += 1
            state.next_fire = state.schedule.next_after(state.next_fire, state.anchor)
        return out


def scheduled_event(rule_arn: str, region: str, at: datetime) -> dict[str, Any]:
    """The event EventBridge sends for a scheduled rule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": SCHEDULED_EVENT,
        "source": "aws.events",
        "account": _arn_parts(rule_arn)[2],
        "time": iso(at),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }


# --- EC2 state changes ------------------------------------------------------------------------

# The instance lifecycle (docs: "Amazon EC2 instance state changes"); moto jumps over the
# transitional states, so the emitter walks this graph to emit them in order.
_LIFECYCLE: dict[str, tuple[str, ...]] = {
    "pending": ("running", "shutting-down"),
    "running": ("stopping", "shutting-down"),
    "stopping": ("stopped", "shutting-down"),
    "stopped": ("pending", "shutting-down"),
    "shutting-down": ("terminated",),
    "terminated": (),
}


def lifecycle_path(old: str | None, new: str) -> list[str]:
    """The states an instance passes through from ``old`` (None: not launched yet) to ``new``, ``new`` included."""
    if old == new:
        return []
    start = "pending" if old is None else old
    prefix = ["pending"] if old is None else []
    if start == new:
        return prefix
    frontier: list[list[str]] = [[start]]
    visited = {start}
    while frontier:
        path = frontier.pop(0)
        for nxt in _LIFECYCLE.get(path[-1], ()):
            if nxt == new:
                return prefix + path[1:] + [nxt]
            if nxt not in visited:
                visited.add(nxt)
                frontier.append(path + [nxt])
    return prefix + [new]  # a state outside the graph: report it as it is


def ec2_state_change_event(region: str, account: str, instance_id: str, state: str, at: datetime) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": EC2_STATE_CHANGE,
        "source": "aws.ec2",
        "account": account,
        "time": iso(at),
        "region": region,
        "resources": [f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


class Ec2StateChangeEmitter(Ticker):
    """Polls ``ec2.describe_instances`` and puts AWS's state-change events on the bus.

    The first tick records the states it finds (nothing before it is known); afterwards each
    change emits every state of the lifecycle path, in order: running → stopped gives
    ``stopping`` then ``stopped``. IAM: ``ec2:DescribeInstances``.
    """

    def __init__(
        self,
        clients: Clients,
        regions: Iterable[str],
        bus: EventBus,
        clock: Clock | None = None,
        interval: float = 0.25,
    ):
        super().__init__()
        self.clients = clients
        self.regions = list(regions)
        self.bus = bus
        self.clock = clock or bus.clock
        self.interval = interval
        self._states: dict[str, dict[str, str]] | None = None

    def _snapshot(self) -> dict[str, dict[str, str]]:
        snap: dict[str, dict[str, str]] = {}
        for region in self.regions:
            pages = self.clients.ec2(region).get_paginator("describe_instances").paginate()
            for page in pages:
                for reservation in page["Reservations"]:
                    for inst in reservation["Instances"]:
                        snap[inst["InstanceId"]] = {
                            "region": region,
                            "account": reservation.get("OwnerId", self.bus.account),
                            "state": inst["State"]["Name"],
                        }
        return snap

    def tick(self, now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or self.clock.now()
        snap = self._snapshot()
        previous, self._states = self._states, snap
        if previous is None:
            return []
        emitted = []
        for instance_id, cur in snap.items():
            old = previous.get(instance_id, {}).get("state")
            for state in lifecycle_path(old, cur["state"]):
                event = ec2_state_change_event(cur["region"], cur["account"], instance_id, state, now)
                self.bus.put(event)
                emitted.append(event)
        return emitted
