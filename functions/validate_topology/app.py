"""ValidateTopology: check the topology before any AWS call and plan the build."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge.plan import build_plan
from regionha.payload import NoParams, parse_task

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-validate-topology")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A bad topology raises ConfigurationError listing every problem; the state machine fails at once.
    # The state machine passes its whole input as "input", so that every key there is optional.
    task = parse_task(event.get("input", event), NoParams, "ValidateTopology")
    plan = build_plan(task.topology)
    logger.info("topology valid", extra={"deployment": plan["deployment"], "vpcs": plan["vpcs"]})
    return plan
