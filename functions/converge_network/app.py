"""ConvergeNetwork: one VPC with its subnets, IGW, route tables and security groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.network import converge_vpc
from regionha.payload import VpcTask, clients, parse_task

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-converge-network")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, VpcTask, "ConvergeNetwork")
    result = report(converge_vpc(task.topology, task.input.vpc, clients(), task.run_id))
    logger.info("network converged", extra={"vpc": task.input.vpc, "summary": result["summary"]})
    return result
