"""ConvergePeering: request (requester region), accept (accepter region) or poll the peerings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.peering import accept_peering, peering_status, request_peering
from regionha.payload import AcceptPeering, PeeringTask, RequestPeering, clients, parse_task
from regionha.waits import check_ready

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-converge-peering")
tracer = Tracer()

FAILED = ("failed", "rejected", "expired", "deleted", "missing")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, PeeringTask, "ConvergePeering")
    params, aws = task.input, clients()
    if isinstance(params, RequestPeering):
        return report(request_peering(task.topology, params.peering, aws, task.run_id))
    if isinstance(params, AcceptPeering):
        return report(accept_peering(task.topology, params.peering, aws))
    # CheckPeerings: one poll of the bounded wait
    statuses = {p.name: peering_status(task.topology, p.name, aws) for p in task.topology.peerings}
    result = check_ready(
        "peerings",
        statuses,
        ready="active",
        attempt=params.attempt,
        max_polls=task.topology.waits.max_polls,
        failed=FAILED,
    )
    logger.info("peering status", extra=result)
    return result
