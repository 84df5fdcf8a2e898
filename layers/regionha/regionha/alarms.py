"""What the canary's alarms mean, as data: one place that template.yaml, its test and docs follow.

The template cannot loop, so it spells out the alarms of the reference deployment; its test derives
the wanted alarms from the topology here and checks every property of each, so the two cannot drift.
A topology with other forwarder paths needs the same per-path alarm for each of ``canary_targets``.

Periods are one minute, the canary's default rate. Why the counts are what they are:

- a path is down after 2 of 3 minutes without success: one lost run does not page, a dead path does
  within about two runs;
- the name unresolvable from on-prem is the critical symptom (clients fail); 2 of 3 as for a path;
- after a failover the record names a stopped node until the failover's hold-down has passed, and
  on-prem caches may serve the old answer for up to the record's TTL (60 s): both are normal for a
  minute or two, so "failover failed" needs 3 of 3 minutes (TTL plus a grace);
- the canary is silent when its heartbeat is missing 3 minutes in a row, which covers a canary that
  errors, times out or is not scheduled. The alarm is 1 of 1 with missing data breaching: CloudWatch
  reads an evaluation range of a few periods (N + 2 in the local evaluator) and fills missing periods
  only when the range holds fewer real datapoints than N, so with N = 1 it alarms once the whole
  range is empty, and a single skipped minute (schedule jitter) is not silence. (3 of 3 would need
  5 silent minutes for the same reason.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from regionha.canary import NAMESPACE, canary_targets
from regionha.errors import ConfigurationError
from regionha.topology import Topology

PERIOD = 60
LESS_THAN = "LessThanThreshold"


@dataclass(frozen=True)
class AlarmIntent:
    """One metric alarm: a statistic of one metric, below 1 for M of N one-minute periods."""

    logical_id: str
    metric: str
    path: str | None  # the Path dimension (besides Deployment), None for deployment-wide metrics
    statistic: str
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: str
    critical: bool
    period: int = PERIOD
    threshold: float = 1.0
    comparison: str = LESS_THAN
    namespace: str = NAMESPACE

    def dimension_names(self) -> list[str]:
        return ["Deployment", "Path"] if self.path is not None else ["Deployment"]


ON_PREM_UNRESOLVABLE = AlarmIntent(
    "OnPremUnresolvableAlarm", "OnPremResolvable", None, "Minimum", 3, 2, "missing", critical=True
)
FAILOVER_UNHEALTHY_NODE = AlarmIntent(
    "FailoverUnhealthyNodeAlarm", "FailoverHealthy", None, "Minimum", 3, 3, "missing", critical=True
)
FAILOVER_STALE_ANSWER = AlarmIntent(
    "FailoverStaleAnswerAlarm", "OnPremMatchesTruth", None, "Minimum", 3, 3, "missing", critical=True
)
CANARY_SILENT = AlarmIntent(
    "CanarySilentAlarm", "CanaryHeartbeat", None, "Sum", 1, 1, "breaching", critical=True
)

# ALARM when any critical alarm is in ALARM.
CRITICAL_COMPOSITE = "CanaryCriticalAlarm"


def path_logical_id(path: str) -> str:
    """CloudFormation logical id of a path's alarm, e.g. tokyo-resolver/10.0.111.100 ->
    PathDownTokyoResolver100111100Alarm."""
    words = (p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", path) if p)
    return "PathDown" + "".join(words) + "Alarm"


def path_down(path: str) -> AlarmIntent:
    return AlarmIntent(path_logical_id(path), "PathSuccess", path, "Minimum", 3, 2, "missing", critical=False)


def canary_alarm_intents(topology: Topology) -> list[AlarmIntent]:
    """Every metric alarm the canary of ``topology`` needs: one per path, then the critical ones."""
    intents = [path_down(t.path) for t in canary_targets(topology)]
    intents += [ON_PREM_UNRESOLVABLE, FAILOVER_UNHEALTHY_NODE, FAILOVER_STALE_ANSWER, CANARY_SILENT]
    ids = [i.logical_id for i in intents]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise ConfigurationError(
            f"paths give clashing alarm ids {', '.join(clashes)}: rename a forwarder path"
        )
    return intents


def critical_members(topology: Topology) -> list[str]:
    """Logical ids of the alarms the composite critical alarm ORs."""
    return [i.logical_id for i in canary_alarm_intents(topology) if i.critical]
