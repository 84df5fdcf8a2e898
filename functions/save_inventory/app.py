"""SaveInventory: describe what the build made and save it for canaries, failover and drills."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.failover import controller_tables, resume_controllers
from regionha.inventory import collect_inventory, save_inventory
from regionha.payload import NoParams, clients, parse_task, stack_region

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-save-inventory")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event, NoParams, "SaveInventory")
    aws = clients()
    inventory = collect_inventory(task.topology, aws)
    written = save_inventory(aws, os.environ["STATE_TABLE"], stack_region(), inventory)
    # A teardown stood the failover controllers down; this build, now that they have an inventory to
    # work from, lets them resume.
    tables = controller_tables(
        os.environ["STATE_TABLE"], stack_region(), os.environ.get("PEER_STATE_TABLE", ""),
        os.environ.get("PEER_REGION", ""),
    )
    resumed = resume_controllers(aws, tables, inventory["deployment"])
    if resumed:
        logger.info("failover controllers resumed", extra={"tables": resumed})
    return {
        "summary": {"updated" if written else "unchanged": 1},
        "deployment": inventory["deployment"],
        "vpcs": {n: v["id"] for n, v in inventory["vpcs"].items()},
        "instances": {n: i["state"] for n, i in inventory["instances"].items()},
        "record": inventory["record"],
        "controllers_resumed": resumed,
    }
