"""AuditDeployment: the scheduled readiness audit; the built world compared with the topology.

Scheduled by EventBridge, outside any VPC (it only calls AWS APIs, read-only). Reads the topology the
build saved with its inventory, as the canary's dispatch does, describes the world, and publishes
``AuditFindings`` per finding kind and in total; each finding is one log line with its reason.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.payload import clients, parse_scheduled, require_env, stack_region
from regionha.watch import audit, canary, metrics

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="regionha-audit-deployment")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parse_scheduled(event, "AuditDeployment")
    aws, region = clients(), stack_region()
    table, deployment = require_env("STATE_TABLE"), require_env("DEPLOYMENT")
    topology = canary.deployment_topology(aws, table, region, deployment)
    # The stack's failover controller: built-in mode moves the record only while it is there and started.
    world = audit.describe_world(topology, aws, table=table, table_region=region,
                                 controller=os.environ.get("CONTROLLER_FUNCTION") or None)
    findings = audit.audit(topology, world)
    for finding in findings:
        logger.warning(str(finding), extra={"finding": finding.to_json()})
    metrics.emit(audit.datapoints(deployment, findings), region=region,
                 cloudwatch=aws.client("cloudwatch", region))
    logger.info("audit done", extra={"deployment": deployment, "findings": len(findings)})
    return {"deployment": deployment, "findings": [f.to_json() for f in findings]}
