"""The controller: one evaluation (``run_controller``) gathers the fence, the nodes' health and the
record, decides (``decide``), moves the record by Route 53 compare-and-swap, records the move in the
fence and publishes the metrics; ``watch`` repeats it every ``failover.check_interval_seconds``
within one scheduled invocation; ``manual_switch`` is an operator's move.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from regionha import record
from regionha.errors import ConfigurationError, TransientError
from regionha.failover.decide import (
    UNKNOWN_STATE,
    Decision,
    Trigger,
    decide,
    node_by_name,
    node_named,
    screen,
)
from regionha.failover.fence import (
    SEND_MARGIN_SECONDS,
    WRITE_PERMIT_SECONDS,
    Fence,
    StoodDown,
    newest,
    permit_write,
    read_fence_or_none,
    record_change,
)
from regionha.failover.health import BOUNDED, instance_node_map, node_health, node_instances
from regionha.failover.resource import throttled
from regionha.failover.settings import ControllerSettings
from regionha.inventory import load_inventory, save_inventory
from regionha.watch import interconnect, metrics

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.failover.health import NodeHealth
    from regionha.topology import Topology

logger = logging.getLogger(__name__)
DEFAULT_SETTINGS = ControllerSettings()


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



def run_controller(
    topology: Topology,
    clients: Clients,
    trigger: Trigger,
    *,
    table: str,
    table_region: str,
    settings: ControllerSettings = DEFAULT_SETTINGS,
    zone: str | None = None,
) -> ControllerResult:
    """One evaluation: fence, nodes, record → decision → compare-and-swap of the record, with metrics.
    ``zone``: the private zone's id when already found (``watch`` finds it once per invocation).

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

    Stand-down (teardown, ``regionha.failover.standdown``): a fence carrying a stand-down mark ends the
    evaluation at once, and every Route 53 write needs a write permit taken just before it
    (``fence.permit_write``, in the own table and each readable peer table), sent only while the
    permit lasts: a write the controller decided on before the mark is refused if the mark came first.

    Raises TransientError when Route 53 throttles or fails past the retries or past the write permit
    (nothing was written: the retry starts afresh; Powertools idempotency does not keep a failed run),
    or when the own table refuses the permit for another reason than the mark; ConfigurationError for a
    missing zone.

    IAM: dynamodb:GetItem, dynamodb:UpdateItem (state table; GetItem and UpdateItem on the peer tables),
    ec2:DescribeInstances, route53:
    ListHostedZonesByName, ListTagsForResources, ListResourceRecordSets, ChangeResourceRecordSets
    (CREATE, DELETE), GetChange; cloudwatch:PutMetricData (PutMetricData sink only).
    """
    dynamodb = clients.client("dynamodb", table_region)
    deployment = topology.deployment
    fence = _fence(clients, dynamodb, table, deployment, settings)
    if fence.stand_down:
        return _stood_down(fence.stand_down, fence.generation)
    instances = node_instances(topology, clients)
    instance_nodes = instance_node_map(instances)
    if trigger.kind == "instance_state" and trigger.instance_id not in instance_nodes and _unanswered(instances):
        # An instance we cannot match while some region's EC2 API did not answer may well be a node of
        # ours: judge the live state (the port checks) as a health check would, rather than drop it.
        logger.warning("instance %s not matched (EC2 did not answer): judged as a health check", trigger.instance_id)
        trigger = replace(trigger, kind="health_check")
    early = screen(trigger, fence, instance_nodes)
    if early is not None:
        logger.info("ignored: %s", early.reason)
        return ControllerResult(early, fence.generation)

    health = node_health(
        topology, instances, service_check=settings.service_check, sleep=settings.sleep, peer_check=settings.peer_check
    )
    current = record.read_record(topology, clients, zone=zone)
    record_ip = current["ip"] if current else None
    decision = decide(
        topology,
        record_ip=record_ip,
        health=health,
        fence=fence,
        trigger=trigger,
        instance_nodes=instance_nodes,
    )
    decision = interconnect.guard(topology, decision, health, settings.interconnect_check, clients, settings.sleep)
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

    try:
        until = _permit(clients, dynamodb, table, deployment, settings, writer=table_region)
    except StoodDown as e:
        return _stood_down(str(e), fence.generation, record_ip)
    _emit([metrics.Datapoint("FailoverStarted", 1.0, "Count", dims)], settings, table_region)
    swap: Any = None
    try:
        swap = _swap(topology, clients, record_ip, decision.target, decision.reason, settings, zone, until)
        if swap.change is None:  # it already names the target: somebody else made this very move
            raise record.RecordChanged(f"record already names {decision.target}")
    except record.RecordChanged as e:
        if _answer_lost(e.__cause__) and _names(topology, clients, zone, decision.target):
            swap = None  # botocore re-sent our applied batch after losing its answer: the move is ours
        else:
            now = record.read_record(topology, clients, zone=zone)
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
        if not (_answer_lost(e) and _names(topology, clients, zone, decision.target)):
            if decision.needed:
                _emit([metrics.Datapoint("FailoverStuck", 1.0, "Count", dims)], settings, table_region)
            logger.error("failover to %s not written: %s", decision.target, e)
            raise TransientError(
                f"failover to {decision.target} not written ({e}); nothing recorded, the next try starts afresh"
            ) from e
        logger.warning("Route 53's answer to the move to %s was lost (%s); the record names it", decision.target, e)

    claimed = record_change(
        dynamodb, table, deployment, fence, decision.target, trigger.time, trigger.id, decision.reason
    )
    if swap is not None:
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
    target_ip = str(node_by_name(topology, decision.target).ip)
    return ControllerResult(decision, claimed.generation, True, seconds, target_ip, health)


def watch(
    topology: Topology,
    clients: Clients,
    trigger: Trigger,
    *,
    table: str,
    table_region: str,
    seconds: float,
    settings: ControllerSettings = DEFAULT_SETTINGS,
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
    # The zone once per invocation: each evaluation then reads the record with one Route 53 call (the
    # API allows five a second per account, shared with every other controller and tool).
    found = record.find_zone(clients.route53(), topology)
    zone = record.zone_id(found[0]) if found else None
    start = settings.now()
    results: list[ControllerResult] = []
    for n in range(max(1, math.ceil(seconds / interval) + 1)):
        elapsed = max(0.0, settings.now() - start)
        if n and elapsed >= seconds:
            break
        tick = Trigger(trigger.kind, f"{trigger.id}#{n}", trigger.time + elapsed, trigger.region)
        results.append(
            run_controller(
                topology, clients, tick, table=table, table_region=table_region, settings=settings, zone=zone
            )
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
    zone: str | None = None,
    until: float | None = None,
) -> Any:
    """The compare-and-swap, throttling retried; each attempt sent only while the write permit running
    until ``until`` has SEND_MARGIN_SECONDS left (a teardown waits the permit out, not longer)."""
    ip = str(node_by_name(topology, target).ip)
    comment = f"regionha {topology.deployment}: {reason}"[:256]

    def attempt() -> Any:
        if until is not None and settings.now() > until - SEND_MARGIN_SECONDS:
            raise TransientError(f"write permit ran out before the record could be moved to {target}")
        return record.swap_record(topology, clients, expected_ip, ip, comment=comment, zone=zone)

    return throttled(topology, attempt, settings.retry, settings.sleep)


def _permit(
    clients: Clients, dynamodb: Any, table: str, deployment: str, settings: ControllerSettings, *, writer: str
) -> float:
    """Take the write permit in our table and in every peer table that can be written; the permit's end.

    Raises StoodDown when any table carries the mark, TransientError when our own table cannot be
    written (a teardown could be marking it). A peer table that cannot be reached is skipped: its region
    may be the one that is down, the very case a second controller is for; a teardown there cannot run
    either.
    """
    until = settings.now() + WRITE_PERMIT_SECONDS
    try:
        permit_write(dynamodb, table, deployment, writer=writer, until=until)
    except (ClientError, BotoCoreError) as e:
        raise TransientError(f"write permit not taken in {table}: {e}") from e
    for peer_table, region in settings.peer_tables:
        try:
            permit_write(
                clients.client("dynamodb", region, config=BOUNDED), peer_table, deployment, writer=writer, until=until
            )
        except (ClientError, BotoCoreError) as e:
            logger.warning("write permit not taken in peer table %s in %s (skipped): %s", peer_table, region, e)
    return until


def _unanswered(instances: dict[str, list[dict[str, Any]]]) -> bool:
    """Whether some node's instances are unknown because its region's EC2 API did not answer."""
    return any(found and found[0]["state"] == UNKNOWN_STATE for found in instances.values())


def _answer_lost(error: BaseException | None) -> bool:
    """Whether a failed ChangeResourceRecordSets may still have been applied: its answer was lost (a
    read timeout or a dropped connection), Route 53 failed inside (HTTP 5xx: "the request may or may
    not have been processed"), or botocore re-sent the batch after such a loss (RetryAttempts > 0)."""
    if isinstance(error, TransientError):
        return _answer_lost(error.__cause__)
    if isinstance(error, BotoCoreError):
        return True
    if isinstance(error, ClientError):
        meta = error.response.get("ResponseMetadata", {})
        return meta.get("HTTPStatusCode", 0) >= 500 or meta.get("RetryAttempts", 0) > 0
    return False


def _names(topology: Topology, clients: Clients, zone: str | None, node: str) -> bool:
    """Whether the record, read back now, names ``node`` with the topology's TTL (False if unreadable)."""
    try:
        now = record.read_record(topology, clients, zone=zone)
    except (ClientError, BotoCoreError) as e:
        logger.warning("record not readable after a lost answer: %s", e)
        return False
    return bool(now) and now["ip"] == str(node_by_name(topology, node).ip) and now["ttl"] == topology.dns.record.ttl


def _stood_down(why: str, generation: int, record_ip: str | None = None) -> ControllerResult:
    decision = Decision("ignore", f"stood down for a teardown ({why}); the next build resumes the controller")
    logger.info("%s", decision.reason)
    return ControllerResult(decision, generation, record_ip=record_ip)


def _wait(topology: Topology, clients: Clients, swap: Any, settings: ControllerSettings) -> None:
    """Wait for the accepted change to be INSYNC. Called after the fence records the move, so a failure
    here (GetChange throttled past its retries, still PENDING at the bound) is logged, not raised: the
    move is made and fenced, and a raise would make Lambda's retry a screened-out duplicate that never
    reports the completed failover. IAM: route53:GetChange."""
    if swap.change is None:
        return
    try:
        record.wait_insync(
            clients.route53(),
            swap.change,
            topology.dns.record.name,
            wait_seconds=settings.wait_seconds,
            poll_seconds=settings.poll_seconds,
            sleep=settings.sleep,
        )
    except (TransientError, ClientError, BotoCoreError) as e:
        logger.warning("record moved and fenced; its propagation is unconfirmed: %s", e)



def manual_switch(
    topology: Topology,
    clients: Clients,
    node: str,
    *,
    table: str,
    table_region: str,
    reason: str = "manual switch",
    settings: ControllerSettings = DEFAULT_SETTINGS,
) -> ControllerResult:
    """An operator's move (the manual failback): the same compare-and-swap as the controller's, no
    health checks; recorded in the fence as a newer generation after Route 53 accepted it.

    Raises TransientError when the record changed between reading and writing (try again),
    ConfigurationError when a teardown stood the controllers down (until the next build).
    IAM: dynamodb:GetItem, dynamodb:UpdateItem (state table), the Route 53 actions of ``run_controller``.
    """
    node_by_name(topology, node)
    dynamodb = clients.client("dynamodb", table_region)
    fence = _fence(clients, dynamodb, table, topology.deployment, settings)
    now = settings.now()
    current = record.read_record(topology, clients)
    expected = current["ip"] if current else None
    decision = Decision("failover", f"{reason}: to {node}", node_named(topology, expected), node)
    try:
        until = _permit(clients, dynamodb, table, topology.deployment, settings, writer="manual")
    except StoodDown as e:
        raise ConfigurationError(f"{e}: a teardown stood the controllers down; build again first") from e
    swap: Any = None
    try:
        swap = _swap(topology, clients, expected, node, decision.reason, settings, until=until)
    except record.RecordChanged as e:
        if not (_answer_lost(e.__cause__) and _names(topology, clients, None, node)):
            raise TransientError(f"the record changed meanwhile; try again ({e})") from e
    except (TransientError, ClientError, BotoCoreError) as e:
        if not (_answer_lost(e) and _names(topology, clients, None, node)):
            raise
    if swap is not None and swap.change is None:  # it names the node already: no change to record
        return ControllerResult(decision, fence.generation, False, 0.0, str(node_by_name(topology, node).ip))
    claimed = record_change(
        dynamodb, table, topology.deployment, fence, node, now, f"manual-{uuid.uuid4()}", decision.reason
    )
    if swap is not None:
        _wait(topology, clients, swap, settings)
    target_ip = str(node_by_name(topology, node).ip)
    return ControllerResult(decision, claimed.generation, True, settings.now() - now, target_ip)


class _Bounded:
    """``clients`` whose every client answers or fails within seconds (a peer region may be down)."""

    def __init__(self, clients: Clients):
        self._clients = clients

    def client(self, service: str, region: str) -> Any:
        return self._clients.client(service, region, config=BOUNDED)


def controller_inventory(
    clients: Clients, table: str, region: str, deployment: str, peer_tables: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any] | None:
    """The inventory the controller works from: the newest (``collected_at``) of its own table's and its
    peer controllers' tables' (a peer that cannot be read is skipped). A newer peer copy is mirrored into
    our table (written only when it differs), so a controller stack in another region keeps working from
    its own copy once the build's region is down.

    IAM: dynamodb:GetItem on the state table and the peer tables, dynamodb:PutItem on the state table.
    """
    own = load_inventory(clients, table, region, deployment)
    best = own
    for peer_table, peer_region in peer_tables:
        try:
            theirs = load_inventory(_Bounded(clients), peer_table, peer_region, deployment)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as e:
            logger.warning("peer state table %s in %s unreadable: %s", peer_table, peer_region, e)
            continue
        if theirs is not None and (best is None or theirs.get("collected_at", 0) > best.get("collected_at", 0)):
            best = theirs
    if best is not None and best is not own:
        save_inventory(clients, table, region, best)
    return best


def _fence(clients: Clients, dynamodb: Any, table: str, deployment: str, settings: ControllerSettings) -> Fence:
    """Our fence, carrying the newest change recorded in any peer controller's table (a peer table that
    cannot be read, its region down say, is skipped)."""
    own = read_fence_or_none(dynamodb, table, deployment) or Fence()
    peers = [
        read_fence_or_none(clients.client("dynamodb", region, config=BOUNDED), peer_table, deployment)
        for peer_table, region in settings.peer_tables
    ]
    return newest(own, peers)


def _emit(points: list[metrics.Datapoint], settings: ControllerSettings, region: str) -> None:
    metrics.emit(points, cloudwatch=settings.cloudwatch, region=region)
