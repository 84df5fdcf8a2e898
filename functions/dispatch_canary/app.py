"""DispatchCanary: read what the canary needs from AWS APIs, then run it inside the client network.

Scheduled by EventBridge. The canary itself runs in the client VPC (placed there by the build), where
it can reach the forwarder paths but, like any VPC Lambda without a NAT or endpoints, no AWS API.
So this function (outside any VPC) reads the topology from the inventory and the truth from Route 53
and invokes the canary synchronously with both; the canary only probes and emits EMF metrics.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.errors import TransientError
from regionha.payload import clients, require_env, stack_region
from regionha.watch import canary

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-dispatch-canary")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    aws = clients()
    deployment = require_env("DEPLOYMENT")
    topology = canary.deployment_topology(aws, require_env("STATE_TABLE"), stack_region(), deployment)
    if topology.client.onprem:
        # A real on-prem site: its on-prem agent runs the canary there; from here every path would fail.
        return {"skipped": "on-prem site: the on-prem agent publishes the canary (docs/onprem.md)"}
    truth = canary.read_truth(topology, aws)
    payload = {
        "topology": topology.to_json(),
        "truth": {"ip": truth.ip, "ttl": truth.ttl, "node": truth.node},
        # The schedule's time: metrics are stamped with it (the local runtime's emulated clock).
        "time": event.get("time") if isinstance(event, dict) else None,
    }
    response = aws.client("lambda", stack_region()).invoke(
        FunctionName=require_env("CANARY_FUNCTION"), InvocationType="RequestResponse", Payload=json.dumps(payload)
    )
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        # No heartbeat this minute: the canary-silent alarm says so.
        raise TransientError(f"canary run failed: {body}")
    logger.info("canary dispatched", extra={"truth": payload["truth"], "all_succeeded": body.get("all_succeeded")})
    return {"truth": payload["truth"], "duration_ms": body.get("duration_ms"),
            "paths": {p["path"]: p.get("success") for p in body.get("paths", [])}}
