"""DispatchInterconnect: pick the node pairs to probe (AWS APIs, outside any VPC), then probe them inside.

Scheduled by EventBridge. Reads the topology from the inventory and the nodes' instance states from
EC2, and invokes ProbeInterconnect (in the client VPC) with the pairs whose two instances run: a
stopped node is node-down's news, not the interconnect's.

IAM: dynamodb:GetItem (the inventory), ec2:DescribeInstances (each node's region),
lambda:InvokeFunction (ProbeInterconnectFunction).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.errors import TransientError
from regionha.failover import node_instances
from regionha.payload import clients, require_env, stack_region
from regionha.watch import canary, interconnect

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-dispatch-interconnect")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Probe the running pairs; returns ``{"pairs": [{source, target, outcome, reachable}]}``."""
    aws = clients()
    topology = canary.stack_topology(aws)
    states = {name: (found[0]["state"] if found else None) for name, found in node_instances(topology, aws).items()}
    pairs = interconnect.running_pairs(topology, states)
    if not pairs:
        logger.info("no pair to probe", extra={"states": states})
        return {"pairs": []}
    payload = {"topology": topology.to_json(), "pairs": pairs,
               "time": event.get("time") if isinstance(event, dict) else None}
    response = aws.client("lambda", stack_region()).invoke(FunctionName=require_env(interconnect.ENV_FUNCTION),
                                                            InvocationType="RequestResponse",
                                                            Payload=json.dumps(payload))
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        raise TransientError(f"interconnect probe failed: {body}")
    return {"pairs": [{k: p[k] for k in ("source", "target", "outcome", "reachable")} for p in body["pairs"]]}
