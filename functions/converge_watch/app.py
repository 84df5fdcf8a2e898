"""ConvergeWatch: the deployment's alarms and dashboard from the topology (build), or their removal (teardown)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.watch import WatchSettings, converge_watch, teardown_watch
from regionha.errors import ConfigurationError
from regionha.payload import clients, stack_region, task_from_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger(service="regionha-converge-watch")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = task_from_event(event)
    action = task.param("action", "converge")
    if action == "converge":
        return report(converge_watch(task.topology, clients(), WatchSettings.from_environ(stack_region())))
    if action == "teardown":
        return report(teardown_watch(task.topology, clients(), stack_region()))
    raise ConfigurationError(f"action: unknown watch action {action!r} (converge, teardown)")
