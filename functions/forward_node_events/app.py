"""ForwardNodeEvents: carry the nodes' EC2 state changes to the stack's event bus (or stop doing so)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.events import converge_event_forwarding, teardown_event_forwarding
from regionha.errors import ConfigurationError
from regionha.payload import clients, stack_region, task_from_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-forward-node-events")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = task_from_event(event)
    action, region = task.param("action"), stack_region()
    if action == "forward":
        account = context.invoked_function_arn.split(":")[4]
        bus_arn = f"arn:aws:events:{region}:{account}:event-bus/default"
        return report(
            converge_event_forwarding(
                task.topology, clients(), stack_region=region, bus_arn=bus_arn, role_arn=task.param("role_arn")
            )
        )
    if action == "stop":
        return report(teardown_event_forwarding(task.topology, clients(), stack_region=region))
    raise ConfigurationError(f"action: unknown action {action!r} (forward, stop)")
