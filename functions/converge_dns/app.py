"""ConvergeDns: the private zone and its VPCs, a Resolver inbound endpoint, or poll the endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.dns import converge_private_zone, converge_resolver_endpoint, resolver_endpoint_status
from regionha.payload import (
    AssociatePrivateZone,
    CheckEndpoints,
    ConvergeResolverEndpoint,
    DnsTask,
    Task,
    clients,
    parse_task,
)
from regionha.waits import check_ready

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-converge-dns")
tracer = Tracer()

FAILED = ("ACTION_NEEDED", "DELETING", "missing")


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, DnsTask, "ConvergeDns")
    params, aws = task.input, clients()
    if isinstance(params, AssociatePrivateZone):
        return report(converge_private_zone(task.topology, aws, task.run_id))
    if isinstance(params, ConvergeResolverEndpoint):
        return report(converge_resolver_endpoint(task.topology, params.path, aws, task.run_id))
    if isinstance(params, CheckEndpoints):
        return _wait_endpoints(task, "resolver endpoints", ready="OPERATIONAL", failed=FAILED)
    # CheckEndpointsGone: Resolver deletes endpoints asynchronously; their ENIs hold subnets and SGs until then.
    return _wait_endpoints(task, "resolver endpoint deletion", ready="missing", failed=())


def _wait_endpoints(task: Task[Any], what: str, *, ready: str, failed: tuple[str, ...]) -> dict[str, Any]:
    """One poll of a bounded wait on every Resolver endpoint path of the topology."""
    aws = clients()
    statuses = {
        p.name: resolver_endpoint_status(task.topology, p.name, aws)
        for p in task.topology.forwarder_paths
        if p.kind == "resolver_endpoint"
    }
    return check_ready(
        what,
        statuses,
        ready=ready,
        attempt=task.input.attempt,
        max_polls=task.topology.waits.max_polls,
        failed=failed,
    )
