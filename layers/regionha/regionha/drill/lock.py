"""The drill lock: one drill per deployment at a time, a conditional write in the state table
(``pk`` = deployment, ``sk`` = ``drill-lock``) with an expiry, released by its holder or swept when
it expired or its execution ended. IAM: dynamodb:PutItem/GetItem/DeleteItem/Scan on the state table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.errors import ConfigurationError

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.drill.inputs import DrillEnv

LOCK_SK = "drill-lock"


def acquire_lock(clients: Clients, env: DrillEnv, deployment: str, holder: str, *, ttl: float,
                 execution_arn: str | None = None, now: float | None = None) -> None:
    """Take the deployment's drill lock, or raise ConfigurationError naming who holds it.

    Succeeds when no lock exists, the lock expired, or ``holder`` already holds it (a retry).
    IAM: dynamodb:PutItem, dynamodb:GetItem.
    """
    now = time.time() if now is None else now
    ddb = clients.client("dynamodb", env.region)
    try:
        ddb.put_item(
            TableName=env.table,
            Item={"pk": {"S": deployment}, "sk": {"S": LOCK_SK}, "holder": {"S": holder},
                  "execution_arn": {"S": execution_arn or ""}, "acquired_at": {"N": str(int(now))},
                  "expires_at": {"N": str(int(now + ttl))}},
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR holder = :me",
            ExpressionAttributeValues={":now": {"N": str(int(now))}, ":me": {"S": holder}},
        )
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        held = read_lock(clients, env, deployment) or {}
        raise ConfigurationError(
            f"another drill holds the lock of {deployment}: {held.get('holder', '?')} until "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.get('expires_at', 0)))}") from e


def read_lock(clients: Clients, env: DrillEnv, deployment: str) -> dict[str, Any] | None:
    item = clients.client("dynamodb", env.region).get_item(
        TableName=env.table, Key={"pk": {"S": deployment}, "sk": {"S": LOCK_SK}}, ConsistentRead=True).get("Item")
    if not item:
        return None
    return {"holder": item["holder"]["S"], "expires_at": float(item["expires_at"]["N"])}


def release_lock(clients: Clients, env: DrillEnv, deployment: str, holder: str) -> bool:
    """Delete the lock only if ``holder`` holds it; True if it did. IAM: dynamodb:DeleteItem."""
    try:
        clients.client("dynamodb", env.region).delete_item(
            TableName=env.table, Key={"pk": {"S": deployment}, "sk": {"S": LOCK_SK}},
            ConditionExpression="holder = :me", ExpressionAttributeValues={":me": {"S": holder}})
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def sweep_locks(clients: Clients, env: DrillEnv, *, now: float | None = None,
                execution_status: Callable[[str], str | None] | None = None) -> list[dict[str, Any]]:
    """Release drill locks that expired or whose execution is no longer running (stopped from the
    console), so the next drill need not wait for the lock's expiry. IAM: dynamodb:Scan,
    dynamodb:DeleteItem, states:DescribeExecution."""
    now = time.time() if now is None else now
    ddb = clients.client("dynamodb", env.region)
    kwargs: dict[str, Any] = {"TableName": env.table, "FilterExpression": "sk = :lock",
                              "ExpressionAttributeValues": {":lock": {"S": LOCK_SK}}, "ConsistentRead": True}
    released = []
    for _ in range(100):
        page = ddb.scan(**kwargs)
        for item in page.get("Items", []):
            holder, arn = item["holder"]["S"], item.get("execution_arn", {}).get("S")
            why = "expired" if float(item["expires_at"]["N"]) < now else None
            if why is None and arn and execution_status is not None:
                status = execution_status(arn)
                why = f"execution {status.lower()}" if status not in (None, "RUNNING") else None
            if why and release_lock(clients, env, item["pk"]["S"], holder):
                released.append({"deployment": item["pk"]["S"], "holder": holder, "reason": why})
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return released

