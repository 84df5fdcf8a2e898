"""SweepFaults: restore drill faults that outlived their expiry or their execution, release stale locks,
remove drill entries that no fault item records.

Scheduled by EventBridge. A drill execution stopped from the console runs no restore; its faults
stay recorded in the state table, and this puts them back within one schedule period. A drill's
NACL deny entry whose fault item is gone (deleted by hand, a restore that forgot it) is removed too,
once no drill holds the deployment's lock. Whatever was put back is a warning and the metric
DrillFaultSwept (per deployment and kind), so a drill that leaves a cut behind does not go unnoticed.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer
from botocore.exceptions import ClientError

from regionha import drill
from regionha.drill import sweeper
from regionha.payload import clients, stack_region
from regionha.watch import metrics

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-sweep-faults")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    aws, region = clients(), stack_region()
    env = drill.DrillEnv.from_environ()
    sfn = aws.client("stepfunctions", region)

    def execution_status(arn: str) -> str | None:
        try:
            return sfn.describe_execution(executionArn=arn)["status"]
        except ClientError:
            # Unknown (deleted history, another account): only the expiry decides.
            logger.warning("cannot describe execution", extra={"execution": arn})
            return None

    swept = sweeper.sweep(aws, env.table, region, execution_status=execution_status)
    locks = drill.sweep_locks(aws, env, execution_status=execution_status)

    def lock_held(deployment: str) -> bool:
        lock = drill.read_lock(aws, env, deployment)
        return lock is not None and lock["expires_at"] >= time.time()

    orphans = sweeper.sweep_all_orphans(aws, env.table, region, lock_held=lock_held)
    for entry in orphans:
        logger.warning("orphaned drill entry removed", extra=entry)
    for item in swept:
        # A drill left this broken until now: say so, as loudly as the orphaned entries.
        (logger.warning if item["restored"] else logger.error)("drill fault swept", extra=item)
    metrics.emit(sweeper.swept_datapoints(swept, orphans), region=region, cloudwatch=aws.client("cloudwatch", region))
    if os.environ.get("NOTICES_TOPIC") and any(not s["restored"] for s in swept):
        aws.client("sns", region).publish(
            TopicArn=os.environ["NOTICES_TOPIC"], Subject="CRITICAL: regionha fault sweeper could not restore",
            Message="\n".join(f"- {s['fault']}: {s.get('error')}" for s in swept if not s["restored"]))
    return {"swept": swept, "locks_released": locks, "orphans_removed": orphans}
