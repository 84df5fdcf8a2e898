"""ConvergeRoutes: the IGW and peering routes of every route table of one VPC."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.routes import converge_routes
from regionha.payload import VpcTask, clients, parse_task

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-converge-routes")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, VpcTask, "ConvergeRoutes")
    return report(converge_routes(task.topology, task.input.vpc, clients(), task.run_id))
