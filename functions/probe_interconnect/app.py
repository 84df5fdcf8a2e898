"""ProbeInterconnect: ask each cluster node's relay whether it reaches its peer over the cluster peering.

Runs in the client VPC (the canary's placement: the nodes' security groups admit the client network
on their service port), like any VPC Lambda without a NAT or endpoints able to call no AWS API: the
topology and the pairs to probe come in the event (DispatchInterconnect, or the failover controller
for one pair). Emits ``InterconnectReachable`` per judged pair as EMF lines (the local runtime: its
PutMetricData sink), unless ``emit_metrics`` is false (the controller's own checks).

IAM: none on AWS (EMF lines); cloudwatch:PutMetricData for the local runtime's sink; the VPC access
actions Lambda needs for the function's network interfaces.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Tracer

from regionha.errors import ConfigurationError
from regionha.topology import parse_topology
from regionha.watch import interconnect, metrics
from regionha.watch.canary import client_source

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# One logger per function: functions sharing a process (the local runtime) never share its context.
logger = Logger(service="regionha-probe-interconnect")
tracer = Tracer()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict) or not isinstance(event.get("topology"), dict):
        raise ConfigurationError("expected {topology, pairs?, timeout?, emit_metrics?, time?} from the dispatcher")
    topology = parse_topology(event["topology"], "dispatched topology")
    results = interconnect.probe_interconnect(
        topology, event.get("pairs"), timeout=event.get("timeout"), client=client_source(topology))
    for r in results:
        logger.info("interconnect pair", extra={"deployment": topology.deployment, **r.to_json()})
    if event.get("emit_metrics", True):
        stamp = event.get("time")
        # PutMetricData datapoints carry the schedule's time (the local runtime's emulated clock).
        metrics.emit(interconnect.datapoints(topology, results),
                     timestamp=datetime.fromisoformat(stamp) if isinstance(stamp, str) else None)
    return {"pairs": [r.to_json() for r in results]}
