"""What the deployment's alarms mean, as data: one place that the watch converge op, tests and docs follow.

The alarms are made from the topology at build time (``regionha.converge.watch``), so each forwarder
path and node of *this* topology has its alarm and nothing in template.yaml names one. Every alarm is
named ``regionha-<deployment>-<suffix>``, so two deployments in one account and region never share one
and the build's IAM can be scoped to that prefix.

Detection within 30 s (issue 13 item 4): the canary runs a round every ``ROUND_SECONDS`` (10 s; the
dispatcher loops within its one-minute schedule, ``regionha.watch.rounds``) and publishes the
datapoints these alarms read at high resolution; CloudWatch evaluates 10-second alarms every 10 s.
Why the counts are what they are:

- a forwarder path address is down after 2 of 6 ten-second periods without success: one lost round
  does not page, a dead path does within two rounds (worst case: the fault right after a round, two
  rounds, the second one's period closing: 30 s, ``tests/local/test_canary_detection.py``); a node is
  down the same way (its service port does not answer as itself), and the on-prem resolver
  (``onprem-down``: resolves, to the truth, and the node answers). Six periods, not three: a round's
  datapoints may arrive up to a minute late (a probe waiting on a silent path; in the local runtime its
  real timeout is twenty emulated ones), and CloudWatch reads only the last N + 2 periods;
- the name unresolvable from on-prem is the critical symptom (clients fail): 2 of 3 minutes in which
  no round resolved (statistic Maximum: a minute holds six rounds, and one slow round must not make it
  a bad minute), a page only once the on-prem resolver has failed clients for a sustained time
  (``onprem-down`` is the fast signal); the failover alarms read their minutes the same way;
- after a failover the record names a stopped node until the failover's hold-down has passed, and
  on-prem caches may serve the old answer for up to the record's TTL (60 s): both are normal for a
  minute or two, so "failover failed" needs 3 of 3 minutes (TTL plus a grace);
- the canary is silent when its heartbeat is missing 3 minutes in a row, which covers a canary that
  errors, times out or is not scheduled. The alarm is 1 of 1 with missing data breaching: CloudWatch
  reads an evaluation range of a few periods (N + 2 in the local evaluator) and fills missing periods
  only when the range holds fewer real datapoints than N, so with N = 1 it alarms once the whole
  range is empty, and a single skipped minute (schedule jitter) is not silence. (3 of 3 would need
  5 silent minutes for the same reason.)

Warm-up (CloudWatch user guide, "Alarm warm-up periods"; PutMetricAlarm ``WarmUpConfiguration``):
every alarm is created with a warm-up period (``AlarmIntent.warm_up_minutes``), during which it stays
INSUFFICIENT_DATA and runs no action. A fresh build makes its alarms right after its first canary
rounds (FirstCanaryRound: until every path and node answers, a minute at most), which may still have
failed (the nodes' services starting: on AWS the user-data takes about a minute), and the schedule's
first run comes up to a minute later: without a warm-up, the
evaluation range holds that failing datapoint and missing periods, and every path, node and
canary-silent alarm pages after every fresh build. The warm-up ends early (the default,
``OnlyStartEvaluatingAfterWarmUpPeriodEnds`` false) once the data fills the evaluation window
(``Period`` x ``EvaluationPeriods``): its newest period holds a datapoint and the metric was published
before the window began. So a healthy deployment's alarms start evaluating, OK, within about a window
of the schedule's first run, and a dead path's alarm fires as soon as its failing datapoints fill the
window. The duration only bounds the wait when no data comes: it is sized per alarm
(``warm_up_for``): the schedule's first run, the window plus the period before it, and a round's
datapoints arriving late. A silent canary is therefore paged at most that long after a build.
CloudWatch applies a warm-up once, at creation: an update (a rebuild that changes nothing puts nothing)
never starts another one.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from regionha.errors import ConfigurationError
from regionha.topology import ONPREM, Topology
from regionha.watch.canary import FORWARDER_PATH, canary_targets
from regionha.watch.metrics import NAMESPACE

PERIOD = 60
# High-resolution alarms: the canary's round interval, and the period of the alarms that must detect
# a path going down within 30 s.
FAST_PERIOD = 10
FAST_EVALUATION_PERIODS = 6
LESS_THAN = "LessThanThreshold"
# Warm-up sizing (``warm_up_for``): the held schedule first runs up to a minute after the build, and a
# round's datapoints may arrive up to a minute late (see above).
SCHEDULE_SECONDS = 60
LATE_SECONDS = 60
# PutMetricAlarm's range for WarmUpPeriodDurationInMinutes.
WARM_UP_MINUTES_RANGE = (1, 2880)
PREFIX = "regionha"
# The one composite alarm of a deployment: ALARM when any critical alarm is in ALARM.
CRITICAL_COMPOSITE = "critical"


@dataclass(frozen=True)
class AlarmIntent:
    """One metric alarm: a statistic of one metric, below 1 for M of N one-minute periods.

    ``suffix`` names it within its deployment (``alarm_name``); ``path``/``node`` are the Path/Node
    dimension besides Deployment (None for deployment-wide metrics). ``warm_up_minutes``: its warm-up
    (1..2880 minutes); None (the default) sizes it from the alarm's window (``warm_up_for``)."""

    suffix: str
    metric: str
    path: str | None
    statistic: str
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: str
    critical: bool
    description: str = ""
    node: str | None = None
    period: int = PERIOD
    threshold: float = 1.0
    comparison: str = LESS_THAN
    namespace: str = NAMESPACE
    # Fires while a drill cuts its path and is OK after restore (the drill's alarm proof checks it).
    drilled: bool = True
    warm_up_minutes: int | None = None

    def __post_init__(self) -> None:
        if self.warm_up_minutes is None:
            object.__setattr__(self, "warm_up_minutes", warm_up_for(self.period, self.evaluation_periods))
        low, high = WARM_UP_MINUTES_RANGE
        if not low <= self.warm_up_minutes <= high:  # type: ignore[operator]
            raise ConfigurationError(f"alarm {self.suffix}: warm-up {self.warm_up_minutes} min is not in {low}..{high}")

    def warm_up_configuration(self) -> dict[str, Any]:
        """PutMetricAlarm's ``WarmUpConfiguration``: end early once the data fills the window."""
        return {"WarmUpPeriodDurationInMinutes": self.warm_up_minutes,
                "OnlyStartEvaluatingAfterWarmUpPeriodEnds": False}

    def dimension_names(self) -> list[str]:
        return ["Deployment"] + (["Path"] if self.path is not None else []) + (["Node"] if self.node else [])

    def dimensions(self, deployment: str) -> list[dict[str, str]]:
        """PutMetricAlarm's Dimensions: exactly the series the canary emits (``canary.metrics``)."""
        dims = [{"Name": "Deployment", "Value": deployment}]
        if self.path is not None:
            dims.append({"Name": "Path", "Value": self.path})
        if self.node is not None:
            dims.append({"Name": "Node", "Value": self.node})
        return dims


def warm_up_for(period: int, evaluation_periods: int) -> int:
    """Minutes of warm-up for an alarm of ``evaluation_periods`` periods of ``period`` seconds: the
    schedule's first run after the build, the evaluation window and the period before it (the window is
    full only once the metric was published before it began), and a round's datapoints arriving late.

    e.g. 4 for the 10-second alarms (6 periods), 4 for canary-silent (1 minute), 6 for 3 one-minute
    periods."""
    return math.ceil((SCHEDULE_SECONDS + period * (evaluation_periods + 1) + LATE_SECONDS) / 60)


def alarm_prefix(deployment: str) -> str:
    """Every alarm of ``deployment`` starts with this (IAM: ``alarm:regionha-<deployment>-*``)."""
    return f"{PREFIX}-{deployment}-"


def alarm_name(deployment: str, suffix: str) -> str:
    """e.g. ``regionha-regionha-ref-path-down-osaka-bind``."""
    return alarm_prefix(deployment) + suffix


def label_suffix(label: str) -> str:
    """A path or node label as alarm-name text: "/" (path/IP) written "-"."""
    return label.replace("/", "-")


ON_PREM_UNRESOLVABLE = AlarmIntent(
    "onprem-unresolvable", "OnPremResolvable", None, "Maximum", 3, 2, "missing", critical=True,
    description="CRITICAL: the on-prem resolver cannot resolve the record (clients cannot reach the "
                "service) in 2 of the last 3 minutes; runbook: docs/runbook.md#onprem-unresolvable",
)
FAILOVER_UNHEALTHY_NODE = AlarmIntent(
    "failover-unhealthy-node", "FailoverHealthy", None, "Maximum", 3, 3, "missing", critical=True,
    description="CRITICAL: failover failed: the record names a node that does not answer while another "
                "node does, 3 minutes in a row; runbook: docs/runbook.md#failover-unhealthy-node",
)
FAILOVER_STALE_ANSWER = AlarmIntent(
    "failover-stale-answer", "OnPremMatchesTruth", None, "Maximum", 3, 3, "missing", critical=True,
    description="CRITICAL: failover failed: the on-prem answer disagrees with the record for 3 minutes "
                "(longer than the TTL plus a grace); runbook: docs/runbook.md#failover-stale-answer",
)
CANARY_SILENT = AlarmIntent(
    "canary-silent", "CanaryHeartbeat", None, "Sum", 1, 1, "breaching", critical=True,
    description="CRITICAL: the canary reported nothing for 3 minutes (errors, timeouts or no schedule): "
                "nothing is watched; runbook: docs/runbook.md#canary-silent",
)
CRITICAL_INTENTS = (ON_PREM_UNRESOLVABLE, FAILOVER_UNHEALTHY_NODE, FAILOVER_STALE_ANSWER, CANARY_SILENT)


def path_down(path: str) -> AlarmIntent:
    """A forwarder path address (its canary label) without success in 2 of 3 ten-second periods."""
    if path == ONPREM:
        raise ConfigurationError(f"{ONPREM!r} labels the on-prem resolver, not a forwarder path: see onprem_down")
    return AlarmIntent(
        f"path-down-{label_suffix(path)}", "PathSuccess", path, "Minimum", FAST_EVALUATION_PERIODS, 2, "missing",
        critical=False, period=FAST_PERIOD,
        description=f"Forwarder path {path}: no successful canary probe (resolve, truth, node) in 2 of the "
                    f"last 6 ten-second periods; runbook: docs/runbook.md#path-down",
    )


# The on-prem resolver, a target of its own kind: its own metric (no Path dimension) and alarm.
ON_PREM_DOWN = AlarmIntent(
    "onprem-down", "OnPremSuccess", None, "Minimum", FAST_EVALUATION_PERIODS, 2, "missing", critical=False,
    period=FAST_PERIOD,
    description="The on-prem resolver: no successful canary probe (resolve, truth, node) in 2 of the last 6 "
                "ten-second periods; runbook: docs/runbook.md#onprem-down",
)


def coverage_down(path: str) -> AlarmIntent:
    """The on-prem resolver no longer resolves through this forwarder path address on its own (it left
    the effective forwarder list, or does not answer the on-prem server): two agent checks in a row.

    Not proven by drills (a drill cuts paths, it does not edit the on-prem configuration)."""
    return AlarmIntent(
        f"onprem-coverage-{label_suffix(path)}", "OnPremPathCovered", path, "Minimum", 2, 2, "missing",
        critical=False, drilled=False,
        description=f"Forwarder path {path}: the on-prem resolver cannot resolve through it on its own (not in "
                    f"its forwarders, or no answer to it) in 2 checks in a row; runbook: "
                    f"docs/runbook.md#onprem-coverage",
    )


def node_down(node: str) -> AlarmIntent:
    return AlarmIntent(
        f"node-down-{label_suffix(node)}", "NodeUp", None, "Minimum", FAST_EVALUATION_PERIODS, 2, "missing",
        critical=False, node=node, period=FAST_PERIOD,
        description=f"Node {node}: its service port did not answer as itself (from the client network) in "
                    f"2 of the last 6 ten-second periods; runbook: docs/runbook.md#node-down",
    )


def canary_alarm_intents(topology: Topology) -> list[AlarmIntent]:
    """Every metric alarm the deployment needs: one per path address, the on-prem resolver's, one per
    node, the on-prem coverage of each path address, then the critical ones.

    Raises ConfigurationError when two labels give the same alarm name (e.g. paths "a/b" and "a-b").
    """
    intents = [path_down(t.path) for t in canary_targets(topology) if t.kind == FORWARDER_PATH]
    intents.append(ON_PREM_DOWN)
    intents += [node_down(n.name) for n in topology.nodes]
    # The on-prem agent's coverage check (regionha.watch.coverage), one per forwarder path address.
    intents += [coverage_down(t.path) for t in canary_targets(topology) if t.kind == FORWARDER_PATH]
    intents += list(CRITICAL_INTENTS)
    suffixes = [i.suffix for i in intents]
    clashes = sorted({s for s in suffixes if suffixes.count(s) > 1} | ({CRITICAL_COMPOSITE} & set(suffixes)))
    if clashes:
        raise ConfigurationError(
            f"paths or nodes give clashing alarm names {', '.join(clashes)}: rename a forwarder path or node"
        )
    return intents


def critical_members(topology: Topology) -> list[str]:
    """Names of the alarms the composite critical alarm ORs."""
    return [alarm_name(topology.deployment, i.suffix) for i in canary_alarm_intents(topology) if i.critical]


def critical_rule(topology: Topology) -> str:
    """The composite's AlarmRule: ALARM of any critical member."""
    return " OR ".join(f'ALARM("{name}")' for name in critical_members(topology))


def composite_name(deployment: str) -> str:
    return alarm_name(deployment, CRITICAL_COMPOSITE)


def watched_alarm_names(topology: Topology) -> list[str]:
    """The alarms a drill proves: each path's and node's (fire while cut/failed, OK after restore)."""
    return [alarm_name(topology.deployment, i.suffix) for i in canary_alarm_intents(topology)
            if not i.critical and i.drilled]


def dashboard_name(deployment: str) -> str:
    """PutDashboard allows only A-Z, a-z, 0-9, "-" and "_": other characters of the deployment
    (".") become "_", with a short hash so that "a.b" and "a_b" stay apart."""
    name = f"{PREFIX}-{deployment}"
    if re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:6]
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) + f"-{digest}"

