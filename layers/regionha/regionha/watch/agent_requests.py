"""Probe requests to the on-prem agent: how the drill and the failover controller probe a real site.

On a VPC site the drill's probes and the controller's node checks go to the canary function, placed in
the client subnet. A real on-prem site (``client.kind: onprem``) has no subnet of ours: the only code
inside it is the on-prem agent (``regionha canary run --publish --serve-probes``). So the requester
sends a **probe request** to the deployment's SQS queue, which the agent long-polls (ReceiveMessage
returns as soon as a message arrives), runs it on the site and writes the **reply** as an item keyed by
the request id in the deployment's reply table, which the requester reads (strongly consistent
GetItem every ``REPLY_POLL_SECONDS``). One round trip costs tens of milliseconds plus the probe itself,
what the drill's 0.25 s polling needs (SSM Run Command takes seconds: docs/onprem.md, "Why a queue").

Requests are plain data (``ProbeRequest``): a ``canary`` run (the drill's samples: every path, the
record compared with the truth the requester read) or a ``check_nodes`` round (the controller's
checks from the client network). The agent probes with its own topology file, never addresses taken
from a message, and answers only its own deployment's requests; an expired request is dropped.

Names (template.yaml, the agent's policy): queue ``regionha-<deployment>-probes`` ("." written "_":
SQS names allow letters, digits, "-" and "_"), table ``regionha-<deployment>-probe-replies`` (key
``request_id``, TTL attribute ``expires_at``), both in the stack's region.

IAM, requester: sqs:GetQueueUrl, sqs:SendMessage on the queue; dynamodb:GetItem on the table.
Agent: sqs:GetQueueUrl, sqs:ReceiveMessage, sqs:DeleteMessage on the queue; dynamodb:PutItem on the
table. AWS docs followed: SQS Developer Guide "Amazon SQS short and long polling", DynamoDB Developer
Guide "Read consistency" and "Time to Live".
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from regionha.errors import TransientError
from regionha.topology import Topology

logger = logging.getLogger(__name__)

CANARY = "canary"
CHECK_NODES = "check_nodes"
REPLY_POLL_SECONDS = 0.05
LONG_POLL_SECONDS = 20  # SQS's longest wait: an idle agent makes 3 requests a minute
# A request the agent has not picked up within its own timeout plus this is stale: nobody waits for it.
REQUEST_GRACE_SECONDS = 10.0
REPLY_TTL_SECONDS = 3600


class AgentDidNotAnswer(TransientError):
    """No reply from the on-prem agent within the bound: it is not running, cannot reach AWS, or was
    started without ``--serve-probes``. Probes count as failed; a failover is refused."""


def queue_name(deployment: str) -> str:
    """``regionha-<deployment>-probes``; "." becomes "_" (SQS queue names: A-Z a-z 0-9 - _, at most 80)."""
    return f"regionha-{deployment.replace('.', '_')}-probes"


def reply_table_name(deployment: str) -> str:
    return f"regionha-{deployment}-probe-replies"


class ProbeRequest(BaseModel):
    """One request: ``kind`` canary (``truth``: the record's ip/ttl/node the requester read) or
    check_nodes (``nodes``); ``timeout_seconds`` bounds each probe; ``expires_at`` (epoch seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    deployment: str
    kind: Literal["canary", "check_nodes"]
    timeout_seconds: float = Field(gt=0, le=30)
    expires_at: float
    truth: dict[str, Any] | None = None
    nodes: list[str] = []


def _queue_url(sqs: Any, deployment: str) -> str:
    try:
        return str(sqs.get_queue_url(QueueName=queue_name(deployment))["QueueUrl"])
    except ClientError as e:
        if e.response["Error"]["Code"] in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise AgentDidNotAnswer(
                f"no probe queue {queue_name(deployment)} in {sqs.meta.region_name}: deploy the stack (template.yaml, "
                "ProbeRequestQueue) for deployment " + deployment) from e
        raise


def ask_agent(
    topology: Topology,
    kind: Literal["canary", "check_nodes"],
    *,
    clients: Any,
    region: str,
    timeout: float,
    truth: dict[str, Any] | None = None,
    nodes: list[str] | None = None,
    wait: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Send one probe request to the on-prem agent and wait, bounded, for its reply (the reply's body:
    a canary run's JSON, or ``{"nodes": {...}}``). ``wait`` bounds the whole round trip (default: the
    probe's ``timeout`` plus 5 s). Raises ``AgentDidNotAnswer`` naming the queue and the bound.

    IAM: sqs:GetQueueUrl, sqs:SendMessage, dynamodb:GetItem (see the module docstring)."""
    wait = timeout + 5.0 if wait is None else wait
    request = ProbeRequest(request_id=str(uuid.uuid4()), deployment=topology.deployment, kind=kind,
                           timeout_seconds=timeout, expires_at=time.time() + wait + REQUEST_GRACE_SECONDS,
                           truth=truth, nodes=list(nodes or []))
    sqs = clients.client("sqs", region)
    dynamodb = clients.client("dynamodb", region)
    try:
        sqs.send_message(QueueUrl=_queue_url(sqs, topology.deployment), MessageBody=request.model_dump_json())
        deadline = time.monotonic() + wait
        while True:
            item = dynamodb.get_item(TableName=reply_table_name(topology.deployment),
                                     Key={"request_id": {"S": request.request_id}}, ConsistentRead=True).get("Item")
            if item is not None:
                return dict(json.loads(item["body"]["S"]))
            if time.monotonic() >= deadline:
                break
            sleep(REPLY_POLL_SECONDS)
    except (ClientError, BotoCoreError) as e:
        raise AgentDidNotAnswer(f"probe request to the on-prem agent of {topology.deployment} failed: {e}") from e
    raise AgentDidNotAnswer(
        f"the on-prem agent of {topology.deployment} did not answer {kind} request {request.request_id} within "
        f"{wait:g} s (queue {queue_name(topology.deployment)} in {region}): is regionha-canary running on the site "
        "with --serve-probes and able to reach SQS and DynamoDB? (docs/onprem.md)")


# --- the agent's side --------------------------------------------------------------------------------


def answer(topology: Topology, request: ProbeRequest, source: str | None) -> dict[str, Any]:
    """Run one request on the site with the agent's own topology; the reply's body. No AWS call."""
    from regionha.watch import canary

    if request.kind == CANARY:
        truth = canary.Truth(**{k: (request.truth or {}).get(k) for k in ("ip", "ttl", "node")})
        return canary.run_canary(topology, truth, timeout=request.timeout_seconds, source=source).to_json()
    known = {n.name for n in topology.nodes}
    names = [n for n in request.nodes if n in known]
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="agent-check") as pool:
        futures = {n: pool.submit(canary.check_node, str(topology.node(n).ip), topology.node(n).port,
                                  request.timeout_seconds, source=source) for n in names}
        return {"nodes": {n: asdict(f.result()) for n, f in futures.items()},
                "unknown": sorted(set(request.nodes) - known)}


def serve_requests(topology: Topology, clients: Any, region: str, *, source: str | None,
                   stop: threading.Event, long_poll: int = LONG_POLL_SECONDS, workers: int = 8) -> None:
    """The agent's loop until ``stop``: long-poll the queue, answer each request in a thread of its own,
    write the reply, delete the message. Malformed, foreign or expired requests are deleted unanswered.
    Errors reaching AWS are logged and retried after a pause (the loop never ends on them).

    IAM: sqs:GetQueueUrl, sqs:ReceiveMessage, sqs:DeleteMessage, dynamodb:PutItem."""
    sqs = clients.client("sqs", region)
    dynamodb = clients.client("dynamodb", region)
    table = reply_table_name(topology.deployment)
    url: str | None = None

    def handle(message: dict[str, Any]) -> None:
        try:
            request = ProbeRequest.model_validate_json(message["Body"])
        except ValidationError as e:
            logger.warning("probe request %s refused: %s", message.get("MessageId"), e)
            request = None
        try:
            if request is not None and request.deployment == topology.deployment and request.expires_at > time.time():
                body = answer(topology, request, source)
                dynamodb.put_item(TableName=table, Item={
                    "request_id": {"S": request.request_id}, "body": {"S": json.dumps(body)},
                    "expires_at": {"N": str(int(time.time()) + REPLY_TTL_SECONDS)}})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        except (ClientError, BotoCoreError):
            logger.exception("probe request %s: reply not written", message.get("MessageId"))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-request") as pool:
        while not stop.is_set():
            try:
                url = url or _queue_url(sqs, topology.deployment)
                found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=long_poll)
            except (ClientError, BotoCoreError, AgentDidNotAnswer) as e:
                logger.warning("probe requests: %s; retrying in 5 s", e)
                stop.wait(5)
                continue
            for message in found.get("Messages", []):
                pool.submit(handle, message)
