"""PlaceCanary: the canary's network side. CloudFormation owns the function's VpcConfig (stack
parameters); the build converges the Canary security group and reports those parameters' values;
teardown checks the function is out of the client VPC and waits, bounded, for Lambda's ENIs to go."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.placement import lambda_enis_released, place, require_canary_unplaced
from regionha.payload import PlaceCanary, PlacementTask, UnplaceCanary, clients, parse_task

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-place-canary")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, PlacementTask, "PlaceCanary")
    params = task.input
    if isinstance(params, PlaceCanary):
        outcomes, placement = place(task.topology, clients(), params.function_name)
        if placement["status"] == "pending":
            logger.warning("canary not in the client network yet", extra={"placement": placement})
        elif placement["status"] == "agent":
            logger.info("on-prem site: the canary runs there as the on-prem agent", extra={"placement": placement})
        return {**report(outcomes), "placement": placement}
    if isinstance(params, UnplaceCanary):
        return report(require_canary_unplaced(task.topology, clients(), params.function_name))
    # CheckLambdaEnisReleased
    return lambda_enis_released(task.topology, clients(), params.attempt)
