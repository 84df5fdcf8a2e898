"""PlaceCanary: put the canary function inside the client site's network (or take it out for teardown)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.placement import place_canary, unplace_canary
from regionha.errors import ConfigurationError
from regionha.payload import clients, task_from_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-place-canary")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = task_from_event(event)
    action, function = task.param("action"), task.param("function_name")
    if action == "place":
        return report(place_canary(task.topology, clients(), function, task.run_id))
    if action == "unplace":
        return report(unplace_canary(task.topology, clients(), function))
    raise ConfigurationError(f"action: unknown placement action {action!r} (place, unplace)")
