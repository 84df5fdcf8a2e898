"""The fence: a DynamoDB item per deployment that remembers the record moves that happened.

Every move Route 53 accepted bumps ``generation`` by a conditional write; ``changed_at`` (the time of
the event that caused it) gives the hold-down and the stale-event screen, ``event_id`` the duplicate
screen. The fence is written only after Route 53 accepted a change, so a failed write consumes
nothing; Route 53's compare-and-swap, not the fence, decides which of several controllers moves the
record. AWS doc followed: DynamoDB Developer Guide, "Condition expressions" (UpdateItem with
ConditionExpression fails with ConditionalCheckFailedException; DynamoDB applies the writes to one
item one at a time, each condition checked against the item as the previous write left it).

The stand-down (teardown): a teardown marks the fence ``stand_down`` before it touches the record or
the zone, and every controller takes a **write permit** on the fence (a conditional write refused
once the mark is there, ``permit_write``) before each Route 53 write, and sends that write only while
the permit lasts (``WRITE_PERMIT_SECONDS``). A controller that read "go" a moment before the mark
either took its permit before the mark (the teardown then sees the permit on the item and waits it
out, ``stand_down``) or has its permit refused. The next build removes the mark (``resume``).
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
# How long a write permit lets a controller send Route 53 writes (its compare-and-swap and the
# throttling retries, docs/failover.md), and how much of it must be left to send one: a request sent
# at the latest SEND_MARGIN_SECONDS before the permit ends reaches Route 53 before a teardown stops
# waiting. Seconds on the controller's clock (emulated in the local runtime).
WRITE_PERMIT_SECONDS = 30.0
SEND_MARGIN_SECONDS = 5.0
STAND_DOWN = "stand_down"
PERMIT_PREFIX = "write_permit_"


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
    # Set by a teardown (why and when): every controller stands down until the next build clears it.
    stand_down: str | None = None


class StoodDown(Exception):
    """A write permit was refused: the fence carries a teardown's stand-down mark."""


def newest(own: Fence, others: Iterable[Fence | None]) -> Fence:
    """``own`` (its generation is what our conditional write builds on) carrying the most recent change
    any controller recorded, so that hold-down and the duplicate and stale screens see every move."""
    latest = max(
        [own, *(f for f in others if f is not None)],
        key=lambda f: -math.inf if f.changed_at is None else f.changed_at,
    )
    # Any controller's table may carry a teardown's mark (the build's stack writes it in its own table
    # and its peer's): one is enough to stand down.
    mark = next((f.stand_down for f in [own, *others] if f is not None and f.stand_down), None)
    if latest is not own:
        own = replace(
            own, active=latest.active, changed_at=latest.changed_at, event_id=latest.event_id, reason=latest.reason
        )
    return replace(own, stand_down=mark) if mark != own.stand_down else own


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
        generation=int(item["generation"]["N"]) if "generation" in item else 0,
        active=item.get("active", {}).get("S"),
        changed_at=float(item["changed_at"]["N"]) if "changed_at" in item else None,
        event_id=item.get("event_id", {}).get("S"),
        reason=item.get("reason", {}).get("S"),
        stand_down=item.get(STAND_DOWN, {}).get("S"),
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
    an outdated view and must not touch the record). IAM: dynamodb:UpdateItem on the state table.
    """
    new = Fence(fence.generation + 1, active, changed_at, event_id, reason)
    values: dict[str, Any] = {
        ":generation": {"N": str(new.generation)},
        ":active": {"S": active},
        ":changed_at": {"N": repr(changed_at)},
        ":event_id": {"S": event_id},
        ":reason": {"S": reason[:1000]},
        ":written_at": {"N": repr(time.time())},
    }
    if fence.generation == 0:
        # The item may exist without a generation (a teardown's mark, a write permit).
        condition = "attribute_not_exists(generation)"
    else:
        condition = "generation = :expected"
        values[":expected"] = {"N": str(fence.generation)}
    try:
        # UpdateItem, not PutItem: the stand-down mark and the write permits on the item stay.
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": deployment}, "sk": {"S": FENCE_SK}},
            UpdateExpression=(
                "SET generation = :generation, active = :active, changed_at = :changed_at, "
                "event_id = :event_id, reason = :reason, written_at = :written_at"
            ),
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
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


# --- the stand-down: a teardown's mark and the controllers' write permits ------------------------


def _key(deployment: str) -> dict[str, Any]:
    return {"pk": {"S": deployment}, "sk": {"S": FENCE_SK}}


def permit_write(dynamodb: Any, table: str, deployment: str, *, writer: str, until: float) -> None:
    """Take a write permit on the fence until ``until`` (seconds since the epoch on the controller's
    clock), in the attribute of ``writer`` (the controller's region: each controller its own, so one
    never shortens another's). Refused when the fence carries a teardown's stand-down mark.

    Raises StoodDown when refused; ClientError/BotoCoreError when the table cannot be written.
    IAM: dynamodb:UpdateItem on the state table.
    """
    try:
        dynamodb.update_item(
            TableName=table,
            Key=_key(deployment),
            UpdateExpression="SET #permit = :until",
            ConditionExpression="attribute_not_exists(#mark)",
            ExpressionAttributeNames={"#permit": PERMIT_PREFIX + writer, "#mark": STAND_DOWN},
            ExpressionAttributeValues={":until": {"N": repr(until)}},
        )
    except ClientError as e:
        if error_code(e) == "ConditionalCheckFailedException":
            raise StoodDown(f"the fence in {table} carries a stand-down mark") from e
        raise


def stand_down(dynamodb: Any, table: str, deployment: str, *, reason: str, now: float) -> float:
    """Mark the fence so that every controller stands down (a mark already there is kept, with its time)
    and return when the last write permit taken before the mark ends (0.0: none), seconds since the
    epoch. DynamoDB applies writes to one item one at a time: a permit not in the returned item is one
    whose conditional write comes after the mark, and is refused.

    IAM: dynamodb:UpdateItem on the state table.
    """
    item = dynamodb.update_item(
        TableName=table,
        Key=_key(deployment),
        UpdateExpression="SET #mark = if_not_exists(#mark, :reason), #at = if_not_exists(#at, :now)",
        ExpressionAttributeNames={"#mark": STAND_DOWN, "#at": STAND_DOWN + "_at"},
        ExpressionAttributeValues={":reason": {"S": reason[:1000]}, ":now": {"N": repr(now)}},
        ReturnValues="ALL_NEW",
    ).get("Attributes", {})
    return max((float(v["N"]) for k, v in item.items() if k.startswith(PERMIT_PREFIX)), default=0.0)


def resume(dynamodb: Any, table: str, deployment: str) -> bool:
    """Remove a teardown's stand-down mark (the build does, once its inventory is saved). True when
    there was one. A fence without the mark is only read (a re-build that changes nothing writes
    nothing). IAM: dynamodb:GetItem, dynamodb:UpdateItem on the state table."""
    if read_fence(dynamodb, table, deployment).stand_down is None:
        return False
    try:
        dynamodb.update_item(
            TableName=table,
            Key=_key(deployment),
            UpdateExpression="REMOVE #mark, #at",
            ConditionExpression="attribute_exists(#mark)",
            ExpressionAttributeNames={"#mark": STAND_DOWN, "#at": STAND_DOWN + "_at"},
        )
    except ClientError as e:
        if error_code(e) == "ConditionalCheckFailedException":
            return False
        raise
    return True
