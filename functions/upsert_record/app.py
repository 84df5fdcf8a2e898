"""UpsertRecord: point the record at a node (the primary unless told) and wait, bounded, for INSYNC."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.converge import report
from regionha.converge.dns import upsert_record
from regionha.payload import clients, task_from_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-upsert-record")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = task_from_event(event)
    topology = task.topology
    node = topology.node(task.param("node", topology.primary.name))
    result = report(upsert_record(topology, clients(), str(node.ip)))
    logger.info("record converged", extra={"node": node.name, "ip": str(node.ip), "summary": result["summary"]})
    return result | {"node": node.name, "ip": str(node.ip)}
