"""ConvergeInstances: the BIND servers (regions' forwarders, then on-prem) or the cluster nodes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.instances import converge_instance
from regionha.converge.user_data import bind_instances, node_instances
from regionha.payload import ConvergeInstances, clients, parse_task

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-converge-instances")
tracer = Tracer()
# Stop waiting for a drift restart this long before the function's timeout: the state machine's
# retry (NotReadyError) resumes it, instead of a Sandbox.Timedout.
MARGIN_SECONDS = 30


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, ConvergeInstances, "ConvergeInstances")
    specs = bind_instances(task.topology) if task.input.role == "bind" else node_instances(task.topology)
    aws = clients()
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS
    outcomes = []
    for spec in specs:
        outcomes += converge_instance(task.topology, **spec, clients=aws, run_id=task.run_id, deadline=deadline)
    return report(outcomes)
