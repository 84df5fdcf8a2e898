"""RunDrillStep: one state of the drill state machine (preflight, a step, restore, alarms, report, lock).

The state machine passes ``{"action", "step"?, "state": <the execution's state>}``, parsed into one typed
task per action (``regionha.drill.inputs``: PreflightTask, StepTask, RestoreTask, ...); the drill package
does the work and keeps the drill's record in the state table, so each state's output stays small.
Errors keep their class names (``DrillStepFailed``, ``DrillAborted``, ``ConfigurationError``,
``TransientError``) for the state machine's Retry and Catch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha import drill
from regionha.payload import clients

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-run-drill-step")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = drill.parse_task(event)
    logger.append_keys(drill_action=task.action, drill_step=getattr(task, "step", None))
    try:
        result = drill.run_task(task, clients(), drill.DrillEnv.from_environ())
    except Exception:
        logger.exception("drill action failed")
        raise
    logger.info("drill action done", extra={"result": result})
    return result
