"""The DNS resource, in the terms of a cluster resource agent: ``activate`` (point the record at a node,
wait bounded for INSYNC, retry throttling), ``monitor`` (read-only: does the record name the active
node?) and ``deactivate`` (leave the record, or delete it while it still names the node). The record
itself is read and written by ``regionha.record``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha import record
from regionha.converge import Outcome
from regionha.errors import ConfigurationError, TransientError
from regionha.failover.decide import node_by_name, node_named
from regionha.failover.fence import error_code
from regionha.failover.settings import RetryPolicy
from regionha.watch import metrics

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology

logger = logging.getLogger(__name__)

# Route 53's answers to "too fast": retried here after botocore's own retries gave up.
DEFAULT_RETRY = RetryPolicy()
THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded"})


def activate(
    topology: Topology,
    clients: Clients,
    node: str,
    *,
    wait_seconds: float = 60.0,
    poll_seconds: float = 1.0,
    retry: RetryPolicy = DEFAULT_RETRY,
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
    target = node_by_name(topology, node)
    return throttled(
        topology,
        lambda: record.upsert_record(
            topology, clients, str(target.ip), wait_seconds=wait_seconds, poll_seconds=poll_seconds
        ),
        retry,
        sleep,
    )


def throttled(topology: Topology, call: Callable[[], Any], retry: RetryPolicy, sleep: Callable[[float], None]) -> Any:
    """``call()``, retried with backoff while Route 53 throttles, at most ``retry.attempts`` times;
    TransientError when throttling outlasts them. Other errors pass through at once."""
    for attempt in range(retry.attempts):
        try:
            return call()
        except ClientError as e:
            if error_code(e) not in THROTTLING_CODES:
                raise
            if attempt + 1 >= retry.attempts:
                raise TransientError(
                    f"record {topology.dns.record.name}: still throttled after {attempt + 1} attempts"
                ) from e
            delay = retry.delay(attempt)
            logger.warning("Route 53 %s, retrying in %.2f s", error_code(e), delay)
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
    found = record.read_record(topology, clients)
    ip = found["ip"] if found else None
    ttl = found["ttl"] if found else None
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
    target = node_by_name(topology, node)
    if not delete:
        return [Outcome("record", topology.dns.record.name, "unchanged")]
    comment = f"regionha {topology.deployment}: deactivate {node}"
    return [record.delete_record(topology, clients, str(target.ip), comment=comment)]


