"""FailoverController: on an EC2 state change of a node or the scheduled health check, keep the record on
a healthy node (builtin mode) or watch whoever moves it (external mode)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent,
)

from regionha.errors import ConfigurationError
from regionha.failover import ControllerSettings, controller_inventory, run_controller, trigger_from_event, watch
from regionha.payload import clients, stack_region
from regionha.topology import TopologyError, parse_topology

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-failover-controller")
tracer = Tracer()
aws = clients()
persistence = DynamoDBPersistenceLayer(
    table_name=os.environ["IDEMPOTENCY_TABLE"], boto3_client=aws.client("dynamodb", stack_region())
)
# EventBridge redelivers an event for up to 24 hours: remember each event id that long.
idempotency = IdempotencyConfig(
    event_key_jmespath="id", expires_after_seconds=24 * 3600, raise_on_no_idempotency_key=True
)


def _peer_tables() -> tuple[tuple[str, str], ...]:
    """The other region's controller stack's state table (template: PeerStateTable, PeerRegion)."""
    table, region = os.environ.get("PEER_STATE_TABLE", ""), os.environ.get("PEER_REGION", "")
    return ((table, region),) if table and region else ()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@idempotent(config=idempotency, persistence_store=persistence)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = trigger_from_event(event)
    table, region, deployment = os.environ["STATE_TABLE"], stack_region(), os.environ["DEPLOYMENT"]
    peers = _peer_tables()
    inventory = controller_inventory(aws, table, region, deployment, peers)
    if inventory is None:
        # Before the first build there is nothing to watch; the schedule keeps asking.
        logger.warning("no inventory yet", extra={"deployment": deployment})
        return {"decision": {"action": "ignore", "reason": f"no inventory of {deployment} yet"}}
    try:
        topology = parse_topology(inventory["topology"], "inventory.topology")
    except TopologyError as e:
        logger.exception("inventory topology is invalid")
        raise ConfigurationError(str(e)) from e
    settings = ControllerSettings(
        service_check=os.environ.get("NODE_SERVICE_CHECK", "true").lower() == "true", peer_tables=peers
    )
    loop = float(os.environ.get("HEALTH_CHECK_LOOP_SECONDS", "0"))
    if trigger.kind == "health_check" and loop > 0:
        # Sub-minute detection: check every failover.check_interval_seconds within this scheduled minute.
        results = watch(topology, aws, trigger, table=table, table_region=region, seconds=loop, settings=settings)
        result = next((r for r in results if r.moved), results[-1])
        logger.info("failover controller", extra={"trigger": trigger.kind, "evaluations": len(results)})
    else:
        result = run_controller(topology, aws, trigger, table=table, table_region=region, settings=settings)
    logger.info("failover controller", extra={"trigger": trigger.kind, "result": result.to_json()})
    return result.to_json()
