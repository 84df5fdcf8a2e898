"""Standing the failover controllers down for a teardown, and back up for the next build.

A teardown deletes the record and then the zone; a controller that writes the record back in between
(it saw "no record" or a dead node a moment before) leaves the zone non-empty (``HostedZoneNotEmpty``).
So the teardown's first step marks the fence of every controller it knows (the stack's state table and
its peer controller stack's, ``PEER_STATE_TABLE``) and waits out the write permits taken before the mark
(``fence.stand_down``); a controller then writes nothing until the next build's SaveInventory removes
the mark (``resume_controllers``). Nothing the stacks own (functions, rules, schedules) is edited:
the mark is data in the tables the controllers already read (docs/failover.md, "Teardown").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from regionha.failover.fence import WRITE_PERMIT_SECONDS, resume, stand_down
from regionha.waits import check_ready

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology


def stand_down_polls(topology: Topology) -> int:
    """Polls of ``waits.poll_seconds`` that outlast one write permit (at least ``waits.max_polls``)."""
    return max(topology.waits.max_polls,
               math.ceil(WRITE_PERMIT_SECONDS / max(topology.waits.poll_seconds, 1)) + 1)


def stand_down_controllers(
    clients: Clients,
    tables: tuple[tuple[str, str], ...],
    deployment: str,
    *,
    reason: str,
    now: float,
    attempt: int,
    max_polls: int,
) -> dict[str, Any]:
    """One poll of the teardown's bounded wait: mark every table's fence (again: the mark is kept as first
    written) and report ready once no write permit taken before the mark is still running.

    ``tables``: (table, region) pairs, the stack's own first; ``now``: seconds since the epoch on the
    controllers' clock. Returns ``{"ready", "attempt", "statuses"}`` (``waits.check_ready``); raises
    WaitTimeoutError after ``max_polls`` polls. A table that cannot be written fails the step (its error
    reaches the state machine's retry): a teardown must not go on without the mark.

    IAM: dynamodb:UpdateItem on each table.
    """
    statuses: dict[str, str] = {}
    for table, region in tables:
        until = stand_down(clients.client("dynamodb", region), table, deployment, reason=reason, now=now)
        statuses[f"{region}/{table}"] = (
            "stood down" if until <= now else f"a write permit runs {until - now:.1f} s more"
        )
    return check_ready(
        "failover controllers standing down", statuses, ready="stood down", attempt=attempt, max_polls=max_polls
    )


def resume_controllers(clients: Clients, tables: tuple[tuple[str, str], ...], deployment: str) -> list[str]:
    """Remove the stand-down mark from every table's fence; the tables that had one, as ``region/table``.
    IAM: dynamodb:GetItem, dynamodb:UpdateItem on each table."""
    return [
        f"{region}/{table}"
        for table, region in tables
        if resume(clients.client("dynamodb", region), table, deployment)
    ]


def controller_tables(
    own: str, region: str, peer_table: str = "", peer_region: str = ""
) -> tuple[tuple[str, str], ...]:
    """The state tables whose fences the controllers read: the stack's own and, when set, its peer's."""
    return ((own, region), *(((peer_table, peer_region),) if peer_table and peer_region else ()))
