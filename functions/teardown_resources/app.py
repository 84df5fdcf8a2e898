"""TeardownResources: remove one family of what the build tagged (reverse build order)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.dns import teardown_dns
from regionha.converge.instances import teardown_instances
from regionha.converge.network import teardown_vpc
from regionha.converge.peering import teardown_peerings
from regionha.failover import controller_tables, stand_down_controllers, stand_down_polls
from regionha.inventory import delete_inventory
from regionha.payload import StandDownControllers, TeardownTask, TeardownVpc, clients, parse_task, stack_region
from regionha.watch import metrics

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-teardown-resources")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, TeardownTask, "TeardownResources")
    family, topology, aws = task.input.family, task.topology, clients()
    if isinstance(task.input, StandDownControllers):
        # Before the record and the zone go: no controller may write the record back meanwhile.
        tables = controller_tables(
            os.environ["STATE_TABLE"], stack_region(), os.environ.get("PEER_STATE_TABLE", ""),
            os.environ.get("PEER_REGION", ""),
        )
        return stand_down_controllers(
            aws, tables, topology.deployment, reason=f"teardown {task.run_id}", now=metrics.now().timestamp(),
            attempt=task.input.attempt, max_polls=stand_down_polls(topology),
        )
    if isinstance(task.input, TeardownVpc):
        return report(teardown_vpc(topology, task.input.vpc, aws))
    if family == "dns":
        return report(teardown_dns(topology, aws))
    if family == "instances":
        return report(teardown_instances(topology, aws))
    if family == "peerings":
        return report(teardown_peerings(topology, aws))
    # inventory
    delete_inventory(aws, os.environ["STATE_TABLE"], stack_region(), topology.deployment)
    return {"summary": {"deleted": 1}, "outcomes": []}
