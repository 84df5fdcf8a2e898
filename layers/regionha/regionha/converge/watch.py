"""Watch follows the topology: the deployment's alarms and dashboard, converged from the topology.

Each forwarder path address gets a path-down alarm, the on-prem resolver its onprem-down, each node a node-down
alarm, the deployment its critical alarms and the composite that ORs them, and one dashboard shows
what an on-call person needs for *this* topology (``dashboard_body``). What they mean lives in
``regionha.watch.alarms``. Everything is in the stack's region (where the canary's metrics go), named
``regionha-<deployment>-…`` and tagged ``regionha:deployment``/``regionha:name``.

Describe, then converge: ``DescribeAlarms`` by the deployment's name prefix; an alarm is put only
when it is missing or differs from its intent, the dashboard only when its body differs, and an
alarm of this deployment that the topology no longer wants (a path or node removed) is deleted. A
re-run with nothing to change makes no write. An alarm counts as this deployment's when its name has
the prefix *and* its Deployment dimension names the deployment, so deployment "a" never touches the
alarms of "a-b" (whose names share the prefix ``regionha-a-``).

AWS behaviour followed (CloudWatch API reference): PutMetricAlarm/PutCompositeAlarm replace an
existing alarm's definition and keep its state, and ignore ``Tags`` on an update (so tags are given
on creation); a composite's rule may only name existing alarms, so the metric alarms go first;
DeleteAlarms takes at most 100 names of which at most one composite, and a composite goes before the
alarms its rule names; dashboard names allow only A-Z, a-z, 0-9, "-" and "_". Every metric alarm has
a ``WarmUpConfiguration`` (user guide, "Alarm warm-up periods"; why and how long:
``regionha.watch.alarms``), which DescribeAlarms returns and is compared like the rest: CloudWatch
warms an alarm up once, at creation, so a put that changes nothing would not restart it, and none is
made. PutMetricAlarm's ``WarmUpConfiguration`` needs botocore 1.44.8 or later: older ones refuse it
before sending (the Lambda runtime's boto3 is older, so the layer bundles its own).

IAM (the ConvergeWatch function): cloudwatch:DescribeAlarms; cloudwatch:PutMetricAlarm,
PutCompositeAlarm, DeleteAlarms, TagResource on ``alarm:regionha-<deployment>-*``;
cloudwatch:GetDashboard, PutDashboard, DeleteDashboards on ``dashboard/regionha-<deployment>*``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import tags
from regionha.converge import Outcome
from regionha.topology import Topology
from regionha.watch.alarms import (
    AlarmIntent,
    alarm_name,
    alarm_prefix,
    canary_alarm_intents,
    composite_name,
    critical_rule,
    dashboard_name,
)
from regionha.watch.canary import FORWARDER_PATH, ONPREM_RESOLVER, canary_targets
from regionha.watch.metrics import NAMESPACE

_DELETE_BATCH = 100
_COMPOSITE_DESCRIPTION = (
    "CRITICAL: the name does not resolve from on-prem, a failover failed, or the canary is silent; "
    "runbook: docs/runbook.md#critical"
)


@dataclass(frozen=True)
class WatchSettings:
    """What the stack gives the watch (template.yaml's environment of ConvergeWatchFunction).

    ``region``: the stack's region; ``topic_arn``: alarm and OK actions (None: no actions);
    ``canary_functions``/``controller_functions``: Lambda function names whose errors the dashboard
    graphs; ``stack_alarms``: the stack's own deployment-wide alarm names (e.g. failover refused) for
    the dashboard's alarm widget; ``runbook_url``: where the text widget links (empty: the path
    docs/runbook.md in the regionha source is named instead)."""

    region: str
    topic_arn: str | None = None
    canary_functions: tuple[str, ...] = ()
    controller_functions: tuple[str, ...] = ()
    stack_alarms: tuple[str, ...] = ()
    runbook_url: str = ""
    critical_stack_alarms: tuple[str, ...] = ()  # members of the composite (failover_critical_alarms)

    @classmethod
    def from_environ(cls, region: str, environ: Mapping[str, str] = os.environ) -> WatchSettings:
        def names(key: str) -> tuple[str, ...]:
            return tuple(n.strip() for n in (environ.get(key) or "").split(",") if n.strip())

        return cls(
            region=region,
            topic_arn=environ.get("NOTICES_TOPIC") or None,
            canary_functions=names("CANARY_FUNCTIONS"),
            controller_functions=names("CONTROLLER_FUNCTIONS"),
            stack_alarms=names("STACK_ALARMS"),
            runbook_url=environ.get("RUNBOOK_URL") or "",
            critical_stack_alarms=failover_critical_alarms(environ),
        )


# --- what is wanted (pure) ------------------------------------------------------------------------------


def metric_alarm_params(topology: Topology, intent: AlarmIntent, settings: WatchSettings) -> dict[str, Any]:
    """PutMetricAlarm's parameters for one intent (without Tags)."""
    actions = [settings.topic_arn] if settings.topic_arn else []
    return {
        "AlarmName": alarm_name(topology.deployment, intent.suffix),
        "AlarmDescription": intent.description,
        "ActionsEnabled": True,
        "AlarmActions": actions,
        "OKActions": actions,
        "Namespace": intent.namespace,
        "MetricName": intent.metric,
        "Dimensions": intent.dimensions(topology.deployment),
        "Statistic": intent.statistic,
        "Period": intent.period,
        "EvaluationPeriods": intent.evaluation_periods,
        "DatapointsToAlarm": intent.datapoints_to_alarm,
        "Threshold": intent.threshold,
        "ComparisonOperator": intent.comparison,
        "TreatMissingData": intent.treat_missing_data,
        "WarmUpConfiguration": intent.warm_up_configuration(),
    }


def composite_params(topology: Topology, settings: WatchSettings) -> dict[str, Any]:
    actions = [settings.topic_arn] if settings.topic_arn else []
    return {
        "AlarmName": composite_name(topology.deployment),
        "AlarmDescription": _COMPOSITE_DESCRIPTION,
        "AlarmRule": with_failover_members(critical_rule(topology), settings),
        "ActionsEnabled": True,
        "AlarmActions": actions,
        "OKActions": actions,
    }


# --- failover's members of the composite (owner: failover) ---------------------------------------------


def failover_critical_alarms(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The stack's failover alarms that are critical (``CRITICAL_STACK_ALARMS``: FailoverStuck, a needed
    failover not written): template alarms, so they exist before the composite names them."""
    return tuple(n.strip() for n in (environ.get("CRITICAL_STACK_ALARMS") or "").split(",") if n.strip())


def with_failover_members(rule: str, settings: WatchSettings) -> str:
    """``rule`` OR'ed with ``settings.critical_stack_alarms``."""
    members = [f'ALARM("{name}")' for name in settings.critical_stack_alarms]
    return " OR ".join([rule, *members] if rule else members)


def _metric(name: str, deployment: str, **dims: str) -> list[str]:
    row = [NAMESPACE, name, "Deployment", deployment]
    for key, value in dims.items():
        row += [key, value]
    return row


def _graph(title: str, metrics: list[list[Any]], region: str, *, stat: str, x: int, y: int,
           width: int = 12, height: int = 6, stacked: bool = False, y_max: float | None = None) -> dict[str, Any]:
    left: dict[str, Any] = {"min": 0}
    if y_max is not None:
        left["max"] = y_max
    return {"type": "metric", "x": x, "y": y, "width": width, "height": height,
            "properties": {"title": title, "view": "timeSeries", "stacked": stacked, "region": region,
                           "stat": stat, "period": 60, "metrics": metrics, "yAxis": {"left": left}}}


def _search(expression: str, label: str, id_: str) -> list[Any]:
    return [{"expression": expression, "label": label, "id": id_}]


def dashboard_body(topology: Topology, settings: WatchSettings, alarm_arn_prefix: str | None = None) -> dict[str, Any]:
    """The dashboard of this topology, as PutDashboard's DashboardBody (a JSON object).

    Rows: a text widget (what is watched, the runbook), the alarm states, each path's success,
    latency and failure reasons (the PathOutcome series by Outcome), the record's target and node
    health, canary heartbeat and duration, failovers (started, completed, refused, seconds), drill
    results and recovery, and the Lambda errors of the canary and the failover controller.
    ``alarm_arn_prefix``: ``arn:<partition>:cloudwatch:<region>:<account>:alarm:`` (the alarm widget
    takes ARNs); default with account 123456789012 (tests).
    """
    dep, region = topology.deployment, settings.region
    everything = canary_targets(topology)
    targets = [t for t in everything if t.kind == FORWARDER_PATH]
    names = [alarm_name(dep, i.suffix) for i in canary_alarm_intents(topology)] + [composite_name(dep)]
    names += interconnect_alarm_names(topology)
    prefix = alarm_arn_prefix or f"arn:aws:cloudwatch:{region}:123456789012:alarm:"
    arns = [prefix + n for n in [*names, *settings.stack_alarms]]
    runbook = (f"[Runbook]({settings.runbook_url})" if settings.runbook_url
               else "Runbook: `docs/runbook.md` in the regionha source")
    paths = ", ".join(f"`{t.path}` ({t.server})" for t in targets)
    onprem = next((f"`{t.server}`" for t in everything if t.kind == ONPREM_RESOLVER), "none")
    nodes = ", ".join(f"`{n.name}` ({n.ip}:{n.port})" for n in topology.nodes)
    text = (f"## regionha deployment `{dep}`\n"
            f"Record `{topology.dns.record.name}` (TTL {topology.dns.record.ttl} s), failover "
            f"{topology.failover.mode}. Paths: {paths}. On-prem resolver: {onprem}. Nodes: {nodes}.\n\n{runbook}")
    widgets: list[dict[str, Any]] = [
        {"type": "text", "x": 0, "y": 0, "width": 24, "height": 3, "properties": {"markdown": text}},
        {"type": "alarm", "x": 0, "y": 3, "width": 24, "height": 4,
         "properties": {"title": "Alarms", "alarms": arns}},
    ]
    y = 7
    widgets += [
        _graph("Path success (1 = resolves to the truth and the node answers)",
               [_metric("PathSuccess", dep, Path=t.path) for t in targets], region, stat="Minimum", x=0, y=y,
               y_max=1),
        _graph("Path and on-prem resolver latency (ms)",
               [*(_metric("PathLatency", dep, Path=t.path) for t in targets), _metric("OnPremLatency", dep)],
               region, stat="Maximum", x=12, y=y),
    ]
    y += 6
    for i, t in enumerate(targets):
        # One series per outcome label (ok, timeout, nxdomain, wrong_answer, ...): the failure reason.
        expr = (f"SEARCH('{{{NAMESPACE},Deployment,Outcome,Path}} MetricName=\"PathOutcome\" "
                f"Deployment=\"{dep}\" Path=\"{t.path}\"', 'Sum', 60)")
        widgets.append(_graph(f"{t.path}: probe outcomes", [_search(expr, "", f"o{i}")], region, stat="Sum",
                              x=(i % 3) * 8, y=y + (i // 3) * 5, width=8, height=5, stacked=True))
    y += 5 * ((len(targets) + 2) // 3)
    onprem_outcomes = (f"SEARCH('{{{NAMESPACE},Deployment,Outcome}} MetricName=\"OnPremOutcome\" "
                       f"Deployment=\"{dep}\"', 'Sum', 60)")
    widgets += [
        _graph("On-prem resolver success (1 = resolves to the truth and the node answers)",
               [_metric("OnPremSuccess", dep)], region, stat="Minimum", x=0, y=y, y_max=1),
        _graph("On-prem resolver: probe outcomes", [_search(onprem_outcomes, "", "onprem")], region, stat="Sum",
               x=12, y=y, stacked=True),
    ]
    y += 6
    widgets += [
        _graph("Record target (1 = the record names this node)",
               [_metric("RecordTarget", dep, Node=n.name) for n in topology.nodes], region, stat="Maximum",
               x=0, y=y, y_max=1),
        _graph("Node up (answers on its service port as itself)",
               [_metric("NodeUp", dep, Node=n.name) for n in topology.nodes], region, stat="Minimum",
               x=12, y=y, y_max=1),
    ]
    y += 6
    widgets += [
        _graph("Canary heartbeat (runs per minute)", [_metric("CanaryHeartbeat", dep)], region, stat="Sum",
               x=0, y=y, width=8),
        _graph("Canary duration (ms)", [_metric("CanaryDuration", dep)], region, stat="Maximum", x=8, y=y,
               width=8),
        _graph("On-prem resolves / matches the record",
               [_metric("OnPremResolvable", dep), _metric("OnPremMatchesTruth", dep),
                _metric("FailoverHealthy", dep)], region, stat="Minimum", x=16, y=y, width=8, y_max=1),
    ]
    y += 6
    widgets += [
        _graph("Failovers (started, completed, refused)",
               [_metric("FailoverStarted", dep), _metric("FailoverCompleted", dep),
                _metric("FailoverRefused", dep)], region, stat="Sum", x=0, y=y),
        _graph("Failover seconds (event to INSYNC)", [_metric("FailoverSeconds", dep)], region, stat="Maximum",
               x=12, y=y),
    ]
    y += 6
    recovery = (f"SEARCH('{{{NAMESPACE},Deployment,Path}} MetricName=\"RecoverySeconds\" "
                f"Deployment=\"{dep}\"', 'Maximum', 60)")
    widgets += [
        _graph("Drill results (1 = PASSED, 0 = FAILED)", [_metric("DrillPassed", dep)], region, stat="Minimum",
               x=0, y=y, y_max=1),
        _graph("Drill recovery seconds per path", [_search(recovery, "", "r")], region, stat="Maximum",
               x=12, y=y),
    ]
    y += 6
    functions = list(settings.canary_functions) + list(settings.controller_functions)
    if functions:
        widgets.append(_graph(
            "Lambda errors (canary, dispatcher, failover controller)",
            [["AWS/Lambda", "Errors", "FunctionName", f] for f in functions], region, stat="Sum", x=0, y=y,
            width=24))
    return {"widgets": widgets}


# --- converge -----------------------------------------------------------------------------------------


def _describe(cw: Any, deployment: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    metric: dict[str, dict[str, Any]] = {}
    composite: dict[str, dict[str, Any]] = {}
    pages = cw.get_paginator("describe_alarms").paginate(
        AlarmNamePrefix=alarm_prefix(deployment), AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    for page in pages:
        metric.update({a["AlarmName"]: a for a in page.get("MetricAlarms", [])})
        composite.update({a["AlarmName"]: a for a in page.get("CompositeAlarms", [])})
    return metric, composite


def _owned(alarm: Mapping[str, Any], deployment: str) -> bool:
    return any(d.get("Name") == "Deployment" and d.get("Value") == deployment for d in alarm.get("Dimensions", []))


def _normal(params: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in params.items() if k != "Tags"}
    if "Dimensions" in out:
        out["Dimensions"] = sorted((d["Name"], d["Value"]) for d in out["Dimensions"])
    if "Threshold" in out:
        out["Threshold"] = float(out["Threshold"])
    for key in ("AlarmActions", "OKActions"):
        if key in out:
            out[key] = sorted(out[key])
    if out.get("WarmUpConfiguration"):
        # The flag's default (false) may be left out of an answer: the same configuration either way.
        out["WarmUpConfiguration"] = {"OnlyStartEvaluatingAfterWarmUpPeriodEnds": False,
                                      **out["WarmUpConfiguration"]}
    return out


def _differs(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    have_n = _normal({k: have.get(k, [] if k.endswith("Actions") else None) for k in want})
    return have_n != _normal(want)


def _alarm_arn_prefix(clients: Any, region: str, alarms: list[dict[str, Any]]) -> str:
    """``arn:<partition>:cloudwatch:<region>:<account>:alarm:`` for the alarm widget: from an existing
    alarm's ARN, else from STS GetCallerIdentity (which needs no permission)."""
    arn = next((a["AlarmArn"] for a in alarms if (a.get("AlarmArn") or "").count(":") >= 6), None)
    if arn is None:
        arn = clients.client("sts", region).get_caller_identity()["Arn"]
    parts = arn.split(":")
    return f"arn:{parts[1]}:cloudwatch:{region}:{parts[4]}:alarm:"


def _get_dashboard(cw: Any, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(cw.get_dashboard(DashboardName=name)["DashboardBody"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("ResourceNotFound", "ResourceNotFoundException"):
            return None
        raise


def converge_watch(topology: Topology, clients: Any, settings: WatchSettings) -> list[Outcome]:
    """Converge the deployment's alarms and dashboard to the topology; one Outcome per resource.

    Raises ConfigurationError when two paths or nodes give the same alarm name.
    """
    dep, region = topology.deployment, settings.region
    cw = clients.client("cloudwatch", region)
    have_metric, have_composite = _describe(cw, dep)
    outcomes: list[Outcome] = []
    wanted: set[str] = set()
    for intent in canary_alarm_intents(topology):
        params = metric_alarm_params(topology, intent, settings)
        name = params["AlarmName"]
        wanted.add(name)
        have = have_metric.get(name)
        if have is not None and not _differs(have, params):
            outcomes.append(Outcome("alarm", name, "unchanged", region=region))
            continue
        cw.put_metric_alarm(**params, **({} if have else {"Tags": tags(dep, intent.suffix)}))
        outcomes.append(Outcome("alarm", name, "updated" if have else "created", region=region))
    outcomes += converge_interconnect_alarms(topology, cw, have_metric, settings, wanted)
    params = composite_params(topology, settings)
    have = have_composite.get(params["AlarmName"])
    if have is not None and not _differs(have, params):
        outcomes.append(Outcome("composite_alarm", params["AlarmName"], "unchanged", region=region))
    else:
        cw.put_composite_alarm(**params, **({} if have else {"Tags": tags(dep, "critical")}))
        outcomes.append(Outcome("composite_alarm", params["AlarmName"], "updated" if have else "created",
                                region=region))
    stale = sorted(n for n, a in have_metric.items() if n not in wanted and _owned(a, dep))
    for i in range(0, len(stale), _DELETE_BATCH):
        cw.delete_alarms(AlarmNames=stale[i:i + _DELETE_BATCH])
    outcomes += [Outcome("alarm", n, "deleted", region=region) for n in stale]

    arn_prefix = _alarm_arn_prefix(clients, region, [*have_metric.values(), *have_composite.values()])
    name = dashboard_name(dep)
    body = dashboard_body(topology, settings, arn_prefix)
    current = _get_dashboard(cw, name)
    if current == body:
        outcomes.append(Outcome("dashboard", name, "unchanged", region=region))
    else:
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body, separators=(",", ":")))
        outcomes.append(Outcome("dashboard", name, "created" if current is None else "updated", region=region))
    return outcomes


# --- the interconnect's alarms (regionha.watch.interconnect; docs/interconnect.md) ----------------------


def interconnect_alarm_names(topology: Topology) -> list[str]:
    """The interconnect alarms, for the dashboard's alarm widget."""
    from regionha.watch.interconnect import interconnect_alarm_intents

    return [alarm_name(topology.deployment, i.suffix) for i in interconnect_alarm_intents(topology)]


def converge_interconnect_alarms(topology: Topology, cw: Any, have_metric: Mapping[str, Mapping[str, Any]],
                                 settings: WatchSettings, wanted: set[str]) -> list[Outcome]:
    """One ``interconnect-down-<from>-to-<to>`` alarm per node pair across VPCs, put only when missing
    or different; adds their names to ``wanted`` (so the stale sweep keeps them, and deletes those of
    pairs the topology no longer has). Not members of the critical composite: a cut interconnect does
    not stop clients resolving the name; it makes a failover unsafe, which the controller refuses."""
    from regionha.watch.interconnect import interconnect_alarm_intents

    outcomes = []
    for intent in interconnect_alarm_intents(topology):
        params = metric_alarm_params(topology, intent, settings)
        name = params["AlarmName"]
        wanted.add(name)
        have = have_metric.get(name)
        if have is not None and not _differs(have, params):
            outcomes.append(Outcome("alarm", name, "unchanged", region=settings.region))
            continue
        cw.put_metric_alarm(**params, **({} if have else {"Tags": tags(topology.deployment, intent.suffix)}))
        outcomes.append(Outcome("alarm", name, "updated" if have else "created", region=settings.region))
    return outcomes


def teardown_watch(topology: Topology, clients: Any, region: str) -> list[Outcome]:
    """Delete the deployment's composite, its metric alarms and its dashboard (absent ones are fine).

    IAM: cloudwatch:DescribeAlarms, cloudwatch:DeleteAlarms, cloudwatch:GetDashboard,
    cloudwatch:DeleteDashboards.
    """
    dep = topology.deployment
    cw = clients.client("cloudwatch", region)
    have_metric, have_composite = _describe(cw, dep)
    outcomes: list[Outcome] = []
    composite = composite_name(dep)
    if composite in have_composite:
        # A composite first, alone: DeleteAlarms takes at most one composite per call.
        cw.delete_alarms(AlarmNames=[composite])
        outcomes.append(Outcome("composite_alarm", composite, "deleted", region=region))
    else:
        outcomes.append(Outcome("composite_alarm", composite, "absent", region=region))
    mine = sorted(n for n, a in have_metric.items() if _owned(a, dep))
    for i in range(0, len(mine), _DELETE_BATCH):
        cw.delete_alarms(AlarmNames=mine[i:i + _DELETE_BATCH])
    outcomes += [Outcome("alarm", n, "deleted", region=region) for n in mine]
    name = dashboard_name(dep)
    if _get_dashboard(cw, name) is not None:
        cw.delete_dashboards(DashboardNames=[name])
        outcomes.append(Outcome("dashboard", name, "deleted", region=region))
    else:
        outcomes.append(Outcome("dashboard", name, "absent", region=region))
    return outcomes
