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
from regionha.errors import ConfigurationError
from regionha.inventory import delete_inventory
from regionha.payload import clients, stack_region, task_from_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-teardown-resources")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = task_from_event(event)
    family = task.param("family")
    topology, aws = task.topology, clients()
    if family == "dns":
        return report(teardown_dns(topology, aws))
    if family == "instances":
        return report(teardown_instances(topology, aws))
    if family == "peerings":
        return report(teardown_peerings(topology, aws))
    if family == "vpc":
        return report(teardown_vpc(topology, task.param("vpc"), aws))
    if family == "inventory":
        delete_inventory(aws, os.environ["STATE_TABLE"], stack_region(), topology.deployment)
        return {"summary": {"deleted": 1}, "outcomes": []}
    raise ConfigurationError(f"family: unknown family {family!r} (dns, instances, peerings, vpc, inventory)")
