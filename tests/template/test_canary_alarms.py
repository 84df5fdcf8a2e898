"""template.yaml's canary: function, schedule, every alarm against its intent, the composite, the dashboard.

The intents come from ``regionha.alarms`` for the reference topology, and the metrics from
``regionha.canary.metrics`` of a run of that topology: an alarm that watches a name or a dimension the
canary does not emit (and so would never fire) fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from regionha.alarms import (
    CANARY_SILENT,
    CRITICAL_COMPOSITE,
    FAILOVER_STALE_ANSWER,
    FAILOVER_UNHEALTHY_NODE,
    ON_PREM_UNRESOLVABLE,
    AlarmIntent,
    canary_alarm_intents,
    critical_members,
    path_down,
)
from regionha.canary import CanaryRun, NodeCheck, PathResult, Truth, canary_targets, metrics
from regionha.local.alarms import ALARM, INSUFFICIENT_DATA, OK, evaluate_range
from regionha.topology import load_topology

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
NOTICES = [{"Ref": "NoticesTopic"}]
TOPOLOGY = load_topology()
INTENTS = canary_alarm_intents(TOPOLOGY)


@pytest.fixture(scope="module")
def resources() -> dict:
    return yaml_parse(TEMPLATE.read_text())["Resources"]


@pytest.fixture(scope="module")
def parameters() -> dict:
    return yaml_parse(TEMPLATE.read_text())["Parameters"]


def sample_run() -> CanaryRun:
    """A run of the reference topology, every path healthy (no network: built by hand)."""
    a = TOPOLOGY.primary
    paths = tuple(
        PathResult(t.path, t.forwarder, "ok", (str(a.ip),), 1.0, True, True, a.name, False)
        for t in canary_targets(TOPOLOGY)
    )
    nodes = {n.name: NodeCheck(str(n.ip), True, n.name, 1.0) for n in TOPOLOGY.nodes}
    return CanaryRun(TOPOLOGY.deployment, 0.0, 5.0, Truth(str(a.ip), 60, a.name), paths, nodes)


def emitted() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(d.name, tuple(sorted(d.dimensions.items()))) for d in metrics(sample_run())}


def test_parameters_have_the_documented_defaults(parameters):
    assert parameters["Deployment"]["Default"] == TOPOLOGY.deployment == "regionha-ref"
    assert re.fullmatch(parameters["Deployment"]["AllowedPattern"], "regionha-ref")
    assert parameters["CanaryRate"]["Default"] == "rate(1 minute)"
    assert re.fullmatch(parameters["CanaryRate"]["AllowedPattern"], "rate(5 minutes)")
    assert not re.fullmatch(parameters["CanaryRate"]["AllowedPattern"], "every minute")


def test_canary_function_is_scheduled_and_knows_its_deployment(resources):
    fn = resources["RunCanaryFunction"]
    props = fn["Properties"]
    assert fn["Type"] == "AWS::Serverless::Function"
    assert props["CodeUri"] == "functions/run_canary/"
    assert props["Environment"]["Variables"]["DEPLOYMENT"] == {"Ref": "Deployment"}
    # The schedule starts the dispatcher (outside any VPC), which runs the canary inside the client network.
    dispatch = resources["DispatchCanaryFunction"]["Properties"]
    assert "Events" not in props
    (event,) = dispatch["Events"].values()
    assert event == {"Type": "Schedule", "Properties": {"Schedule": {"Ref": "CanaryRate"},
                                                        "Description": "Run the canary", "Enabled": True}}
    assert dispatch["Environment"]["Variables"]["CANARY_FUNCTION"] == {"Ref": "RunCanaryFunction"}
    assert {"LambdaInvokePolicy": {"FunctionName": {"Ref": "RunCanaryFunction"}}} in dispatch["Policies"]
    # A run is bounded by the probe timeout; the function timeout must leave room and stay below the rate.
    assert TOPOLOGY.canary.timeout_seconds * 5 <= props["Timeout"] < 60
    policies = props["Policies"]
    assert {"DynamoDBReadPolicy": {"TableName": {"Ref": "StateTable"}}} in policies
    assert {"VPCAccessPolicy": {}} in policies
    actions = {a for p in policies if "Statement" in p for s in p["Statement"]
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    # What read_record calls, and PutMetricData for the cloudwatch sink.
    assert {"route53:ListHostedZonesByName", "route53:ListTagsForResources",
            "route53:ListResourceRecordSets", "cloudwatch:PutMetricData"} <= actions


def test_schedule_translates_to_a_rule_targeting_the_function():
    from regionha.local.provision import translate

    translated = translate(TEMPLATE).template["Resources"]
    (rule,) = [r for r in translated.values() if r["Type"] == "AWS::Events::Rule"
               and r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["DispatchCanaryFunction", "Arn"]}]
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "CanaryRate"}


def test_the_template_holds_exactly_the_intended_canary_alarms(resources):
    # Other alarms (the failover controller's) share the namespace; the canary's metrics are its own.
    canary_metrics = {name for name, _ in emitted()}
    in_template = {k for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"
                   and r["Properties"].get("Namespace") == "regionha"
                   and r["Properties"].get("MetricName") in canary_metrics}
    assert in_template == {i.logical_id for i in INTENTS}


@pytest.mark.parametrize("intent", INTENTS, ids=lambda i: i.logical_id)
def test_alarm_matches_its_intent(resources, intent: AlarmIntent):
    alarm = resources[intent.logical_id]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    props = alarm["Properties"]
    dimensions = [{"Name": "Deployment", "Value": {"Ref": "Deployment"}}]
    if intent.path is not None:
        dimensions.append({"Name": "Path", "Value": intent.path})
    assert {
        "Namespace": props["Namespace"],
        "MetricName": props["MetricName"],
        "Dimensions": props["Dimensions"],
        "Statistic": props["Statistic"],
        "Period": props["Period"],
        "EvaluationPeriods": props["EvaluationPeriods"],
        "DatapointsToAlarm": props["DatapointsToAlarm"],
        "Threshold": float(props["Threshold"]),
        "ComparisonOperator": props["ComparisonOperator"],
        "TreatMissingData": props["TreatMissingData"],
        "AlarmActions": props["AlarmActions"],
        "OKActions": props["OKActions"],
    } == {
        "Namespace": intent.namespace,
        "MetricName": intent.metric,
        "Dimensions": dimensions,
        "Statistic": intent.statistic,
        "Period": intent.period,
        "EvaluationPeriods": intent.evaluation_periods,
        "DatapointsToAlarm": intent.datapoints_to_alarm,
        "Threshold": intent.threshold,
        "ComparisonOperator": intent.comparison,
        "TreatMissingData": intent.treat_missing_data,
        "AlarmActions": NOTICES,
        "OKActions": NOTICES,
    }
    assert {"Unit", "ExtendedStatistic", "Metrics"}.isdisjoint(props)  # a Unit filter could match nothing
    # The alarm watches a series the canary really emits (Deployment = the parameter's default).
    dims = {"Deployment": TOPOLOGY.deployment} | ({"Path": intent.path} if intent.path else {})
    assert (intent.metric, tuple(sorted(dims.items()))) in emitted()


def test_composite_critical_alarm_ors_the_critical_alarms(resources):
    alarm = resources[CRITICAL_COMPOSITE]
    assert alarm["Type"] == "AWS::CloudWatch::CompositeAlarm"
    props = alarm["Properties"]
    rule = props["AlarmRule"]["Fn::Sub"]
    terms = [t.strip() for t in rule.split(" OR ")]
    assert [re.fullmatch(r'ALARM\("\$\{(\w+)\}"\)', t).group(1) for t in terms] == critical_members(TOPOLOGY)
    critical = (ON_PREM_UNRESOLVABLE, FAILOVER_UNHEALTHY_NODE, FAILOVER_STALE_ANSWER, CANARY_SILENT)
    assert set(critical_members(TOPOLOGY)) == {i.logical_id for i in critical}
    assert props["AlarmActions"] == NOTICES and props["OKActions"] == NOTICES
    assert props.get("ActionsEnabled", True) is True


def _substituted(body: str) -> str:
    """${Deployment} -> its default, any other ${X} -> "<X>", so the body parses as JSON."""
    known = {"Deployment": TOPOLOGY.deployment}
    return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", lambda m: known.get(m.group(1), f"<{m.group(1)}>"), body)


def test_dashboard_shows_paths_record_target_and_alarm_states(resources):
    body = json.loads(_substituted(resources["CanaryDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]))
    graphs = [w["properties"] for w in body["widgets"] if w["type"] == "metric"]
    rows = [tuple(row) for g in graphs for row in g["metrics"]]
    series = {(r[1], tuple(sorted(zip(r[2:-1:2], r[3::2], strict=True)))) for r in rows}
    assert all(r[0] == "regionha" for r in rows)
    assert series <= emitted()  # nothing on the dashboard that the canary does not emit
    dep = ("Deployment", TOPOLOGY.deployment)
    for target in canary_targets(TOPOLOGY):
        for metric in ("PathSuccess", "PathLatency"):
            assert (metric, tuple(sorted([dep, ("Path", target.path)]))) in series
    for node in TOPOLOGY.nodes:
        assert ("RecordTarget", tuple(sorted([dep, ("Node", node.name)]))) in series
    (alarms,) = [w["properties"]["alarms"] for w in body["widgets"] if w["type"] == "alarm"]
    assert alarms == [f"<{i.logical_id}.Arn>" for i in INTENTS] + [f"<{CRITICAL_COMPOSITE}.Arn>"]


# --- what the counts mean, by the CloudWatch evaluation rule (regionha.local.alarms.evaluate_range) ----

B, G = True, False  # a breaching / a good minute; None = no datapoint


def state(intent: AlarmIntent, minutes: list[bool | None], current: str = OK) -> str:
    return evaluate_range(minutes, intent.evaluation_periods, intent.datapoints_to_alarm,
                          intent.treat_missing_data, current).state


@pytest.mark.parametrize(
    ("intent", "minutes", "expected"),
    [
        (path_down("osaka-bind"), [G, G, G, G, B], OK),  # one lost run does not page
        (path_down("osaka-bind"), [G, G, G, B, B], ALARM),  # a dead path does within two runs
        (path_down("osaka-bind"), [G, G, B, G, B], ALARM),  # flapping counts too (2 of 3)
        (ON_PREM_UNRESOLVABLE, [G, G, G, B, B], ALARM),
        # After a failover, the record names the stopped node for the hold-down, and on-prem may serve
        # the old answer for up to the TTL: two such minutes are normal, three are a failed failover.
        (FAILOVER_UNHEALTHY_NODE, [G, G, G, B, B], OK),
        (FAILOVER_UNHEALTHY_NODE, [G, G, B, B, B], ALARM),
        (FAILOVER_STALE_ANSWER, [G, G, G, B, B], OK),
        (FAILOVER_STALE_ANSWER, [G, G, B, B, B], ALARM),
        # Silence: a skipped minute (schedule jitter) is not silence, three in a row are.
        (CANARY_SILENT, [G, G, None], OK),
        (CANARY_SILENT, [G, None, None], OK),
        (CANARY_SILENT, [None, None, None], ALARM),
    ],
)
def test_alarm_counts_mean_what_the_docs_say(intent, minutes, expected):
    assert state(intent, minutes) == expected


def test_silent_canary_alarms_from_a_fresh_stack():
    assert state(CANARY_SILENT, [None] * 3, INSUFFICIENT_DATA) == ALARM


def test_stale_answer_window_exceeds_the_ttl_plus_a_grace():
    ttl = TOPOLOGY.dns.record.ttl
    for intent in (FAILOVER_STALE_ANSWER, FAILOVER_UNHEALTHY_NODE):
        assert intent.datapoints_to_alarm * intent.period >= ttl + intent.period
