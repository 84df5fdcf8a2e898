"""The fence: a DynamoDB item per deployment that remembers the record moves that happened.

Every move Route 53 accepted bumps ``generation`` by a conditional write; ``changed_at`` (the time of
the event that caused it) gives the hold-down and the stale-event screen, ``event_id`` the duplicate
screen. The fence is written only after Route 53 accepted a change, so a failed write consumes
nothing; Route 53's compare-and-swap, not the fence, decides which of several controllers moves the
record. AWS doc followed: DynamoDB Developer Guide, "Condition expressions" (PutItem with
ConditionExpression fails with ConditionalCheckFailedException).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

FENCE_SK = "failover"


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


def newest(own: Fence, others: Iterable[Fence | None]) -> Fence:
    """``own`` (its generation is what our conditional write builds on) carrying the most recent change
    any controller recorded, so that hold-down and the duplicate and stale screens see every move."""
    latest = max(
        [own, *(f for f in others if f is not None)],
        key=lambda f: -math.inf if f.changed_at is None else f.changed_at,
    )
    if latest is own:
        return own
    return replace(
        own, active=latest.active, changed_at=latest.changed_at, event_id=latest.event_id, reason=latest.reason
    )


def error_code(e: ClientError) -> str:
    """The AWS error code of a ClientError ("" when absent)."""
    return e.response.get("Error", {}).get("Code", "")


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
        if error_code(e) == "ConditionalCheckFailedException":
            return None
        raise
    return new


def read_fence_or_none(dynamodb: Any, table: str, deployment: str) -> Fence | None:
    """``read_fence``, or None when the table cannot be read (logged)."""
    try:
        return read_fence(dynamodb, table, deployment)
    except (ClientError, BotoCoreError) as e:
        # The table's region may be the one that is down; Route 53 still arbitrates the move.
        logger.warning("fence unreadable (%s): deciding without hold-down and duplicate screening", e)
        return None


def record_change(
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
        fence = read_fence_or_none(dynamodb, table, deployment) or fence
        if fence.changed_at is not None and fence.changed_at > changed_at:
            return fence  # a later change is already recorded
    logger.warning("record moved to %s; the fence kept changing under us", active)
    return Fence(fence.generation + 1, active, changed_at, event_id, reason)
