"""RunCanary: resolve the record through every forwarder path from the client site, check the truth.

Scheduled by EventBridge; runs inside the client VPC once the build placed it there (docs/canary.md).
Reads the deployment's topology from its saved inventory and the truth from Route 53, probes every
path and node at once, logs one structured line per path and emits the metrics the alarms watch.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer
from botocore.exceptions import BotoCoreError, ClientError

from regionha.errors import TransientError
from regionha.failover.health import CHECK_NODES, answer_check_nodes
from regionha.payload import clients, require_env, stack_region
from regionha.topology import parse_topology
from regionha.watch import canary, metrics, rounds

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-run-canary")
tracer = Tracer()


def _scheduled_time(event: Any) -> datetime | None:
    """The time of the schedule or of the dispatcher's round: the datapoints' timestamp."""
    return rounds.event_time(event)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("request") == CHECK_NODES:
        # The failover controller's node checks (its own request): only the ports, no path, no metric.
        return answer_check_nodes(event)
    scheduled = _scheduled_time(event)
    deployment = require_env("DEPLOYMENT")
    if isinstance(event, dict) and isinstance(event.get("topology"), dict) and "truth" in event:
        # Dispatched (the normal case): everything read outside the VPC, no AWS API call from here.
        topology = parse_topology(event["topology"], "dispatched topology")
        truth = canary.Truth(**{k: event["truth"].get(k) for k in ("ip", "ttl", "node")})
    else:
        # Invoked directly (console, CLI, a function outside any VPC): read them ourselves.
        aws = clients()
        topology = canary.deployment_topology(aws, require_env("STATE_TABLE"), stack_region(), deployment)
        try:
            truth = canary.read_truth(topology, aws)
        except (ClientError, BotoCoreError) as e:
            # No run without the truth: every path would look wrong. The missing heartbeat says so.
            logger.exception("cannot read the record from Route 53")
            raise TransientError(f"reading {topology.dns.record.name} from Route 53 failed: {e}") from e
    if truth.ip is None:
        logger.warning("the record does not exist: every path fails",
                       extra={"record": topology.dns.record.name})

    timeout = event.get("timeout") if isinstance(event, dict) else None
    run = canary.run_canary(topology, truth, timeout=timeout, source=canary.client_source(topology))
    if isinstance(event, dict) and event.get("emit_metrics") is False:
        # A drill probing through the canary at its own pace: its rounds are not the canary's minutes.
        return run.to_json()
    for path in run.paths:
        logger.info("canary path", extra={"deployment": deployment, **path.to_json()})
    for name, check in run.nodes.items():
        logger.info("canary node", extra={"deployment": deployment, "node": name, "ip": check.ip,
                                          "reachable": check.reachable, "answered_as": check.name,
                                          "error": check.error})
    # Datapoints carry the round's slot time (EMF Timestamp, or PutMetricData's), so that each lands in
    # its own 10-second alarm period, also on the local runtime's emulated clock.
    metrics.emit(canary.metrics(run), timestamp=scheduled)
    result = run.to_json()
    logger.info("canary run", extra={"scheduled": scheduled.isoformat() if scheduled else None,
                                     "duration_ms": result["duration_ms"], "truth": result["truth"],
                                     "failover_healthy": run.failover_healthy,
                                     "all_succeeded": run.all_succeeded})
    return result

