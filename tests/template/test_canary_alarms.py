"""template.yaml's canary (function, schedule), and the alarms the build makes from the topology.

The template names no path, node or address: the alarms and the dashboard come from the topology at
build time (``regionha.converge.watch``). The intents come from ``regionha.watch.alarms`` for the reference
topology, and the metrics from ``regionha.watch.canary.metrics`` of a run of that topology: an alarm that
watches a name or a dimension the canary does not emit (and so would never fire) fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from inprocess import ALARM, INSUFFICIENT_DATA, OK, evaluate_range
from regionha.converge.watch import WatchSettings, composite_params, dashboard_body, metric_alarm_params
from regionha.topology import load_topology
from regionha.watch.alarms import (
    CANARY_SILENT,
    CRITICAL_COMPOSITE,
    FAILOVER_STALE_ANSWER,
    FAILOVER_UNHEALTHY_NODE,
    ON_PREM_UNRESOLVABLE,
    AlarmIntent,
    alarm_name,
    canary_alarm_intents,
    critical_members,
    dashboard_name,
    path_down,
)
from regionha.watch.canary import FORWARDER_PATH, CanaryRun, NodeCheck, PathResult, Truth, canary_targets, metrics
from regionha.watch.coverage import CoverageReport, PathCoverage
from regionha.watch.coverage import datapoints as coverage_datapoints

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
        PathResult(t.path, t.forwarder, "ok", (str(a.ip),), 1.0, True, True, a.name, False, kind=t.kind)
        for t in canary_targets(TOPOLOGY)
    )
    nodes = {n.name: NodeCheck(str(n.ip), True, n.name, 1.0) for n in TOPOLOGY.nodes}
    return CanaryRun(TOPOLOGY.deployment, 0.0, 5.0, Truth(str(a.ip), 60, a.name), paths, nodes)


def sample_coverage() -> CoverageReport:
    """The on-prem agent's clean check of the reference topology (built by hand, no named)."""
    paths = tuple(PathCoverage(t.path, str(t.forwarder), t.server, True, True, "ok")
                  for t in canary_targets(TOPOLOGY) if t.kind == FORWARDER_PATH)
    return CoverageReport(TOPOLOGY.deployment, TOPOLOGY.dns.zone_fqdn, (), paths)


def emitted() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every series the canary and the on-prem agent publish."""
    points = [*metrics(sample_run()), *coverage_datapoints(sample_coverage())]
    return {(d.name, tuple(sorted(d.dimensions.items()))) for d in points}


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
    from inprocess import translate

    translated = translate(TEMPLATE).template["Resources"]
    (rule,) = [r for r in translated.values() if r["Type"] == "AWS::Events::Rule"
               and r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["DispatchCanaryFunction", "Arn"]}]
    assert rule["Properties"]["ScheduleExpression"] == {"Ref": "CanaryRate"}


def _reference_words() -> set[str]:
    """Every path, node, address and network of the reference topology: none may be in the template."""
    words = {t.path for t in canary_targets(TOPOLOGY)} | {t.server for t in canary_targets(TOPOLOGY)}
    words |= {p.name for p in TOPOLOGY.forwarder_paths} | {n.name for n in TOPOLOGY.nodes}
    words |= {str(n.ip) for n in TOPOLOGY.nodes} | {v.name for v in TOPOLOGY.vpcs}
    words |= {str(v.cidr) for v in TOPOLOGY.vpcs} | {TOPOLOGY.dns.record.name.rstrip("."), TOPOLOGY.dns.zone}
    words.discard("onprem")  # the canary's fixed label of the on-prem resolver, not a topology name
    return words


def test_the_template_names_no_path_node_or_address_of_the_reference():
    text = TEMPLATE.read_text()
    assert [w for w in sorted(_reference_words()) if w in text] == []
    assert "onprem" not in text.replace("on-prem", "")


def test_the_template_holds_no_canary_alarm_or_dashboard(resources):
    # The build makes them from the topology (regionha.converge.watch); only deployment-wide alarms of
    # the failover controller and the readiness audit stay in the template.
    canary_metrics = {name for name, _ in emitted()}
    in_template = [k for k, r in resources.items() if r["Type"].startswith("AWS::CloudWatch::")
                   and r["Properties"].get("MetricName") in canary_metrics | {None}]
    assert in_template == []
    assert sorted(k for k, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm") == [
        "AuditDriftAlarm", "FailoverClientLinkAlarm", "FailoverRefusedAlarm", "FailoverStuckAlarm"]


def test_the_watch_function_may_touch_only_regionhas_alarms_and_dashboards(resources):
    props = resources["ConvergeWatchFunction"]["Properties"]
    statements = [s for p in props["Policies"] for s in p["Statement"]]
    by_resource = {json.dumps(s["Resource"]): set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                   for s in statements}
    assert by_resource.pop('"*"') == {"cloudwatch:DescribeAlarms"}
    alarm_arn = ("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:"
                 "regionha-*")
    dashboard_arn = "arn:${AWS::Partition}:cloudwatch::${AWS::AccountId}:dashboard/regionha-*"
    assert by_resource == {
        json.dumps({"Fn::Sub": alarm_arn}): {"cloudwatch:PutMetricAlarm", "cloudwatch:PutCompositeAlarm",
                                            "cloudwatch:DeleteAlarms", "cloudwatch:TagResource"},
        json.dumps({"Fn::Sub": dashboard_arn}): {"cloudwatch:GetDashboard", "cloudwatch:PutDashboard",
                                                "cloudwatch:DeleteDashboards"},
    }
    # The names the converge op gives match those ARNs.
    assert alarm_name(TOPOLOGY.deployment, "x").startswith(f"regionha-{TOPOLOGY.deployment}-")
    assert dashboard_name(TOPOLOGY.deployment).startswith(f"regionha-{TOPOLOGY.deployment}")
    for machine in ("BuildStateMachine", "TeardownStateMachine"):
        sm = resources[machine]["Properties"]
        assert sm["DefinitionSubstitutions"]["ConvergeWatchFunctionArn"] == {
            "Fn::GetAtt": ["ConvergeWatchFunction", "Arn"]}
        assert {"LambdaInvokePolicy": {"FunctionName": {"Ref": "ConvergeWatchFunction"}}} in sm["Policies"]


@pytest.mark.parametrize("intent", INTENTS, ids=lambda i: i.suffix)
def test_each_alarm_watches_a_series_the_canary_emits(intent: AlarmIntent):
    params = metric_alarm_params(TOPOLOGY, intent, WatchSettings(region="ap-southeast-1", topic_arn="arn:t"))
    dims = tuple(sorted((d["Name"], d["Value"]) for d in params["Dimensions"]))
    assert (params["MetricName"], dims) in emitted()
    assert params["AlarmActions"] == params["OKActions"] == ["arn:t"]
    assert {"Unit", "ExtendedStatistic", "Metrics"}.isdisjoint(params)  # a Unit filter could match nothing


def test_composite_critical_alarm_ors_the_critical_alarms():
    params = composite_params(TOPOLOGY, WatchSettings(region="ap-southeast-1"))
    terms = [t.strip() for t in params["AlarmRule"].split(" OR ")]
    assert [re.fullmatch(r'ALARM\("([^"]+)"\)', t).group(1) for t in terms] == critical_members(TOPOLOGY)
    critical = (ON_PREM_UNRESOLVABLE, FAILOVER_UNHEALTHY_NODE, FAILOVER_STALE_ANSWER, CANARY_SILENT)
    assert set(critical_members(TOPOLOGY)) == {alarm_name(TOPOLOGY.deployment, i.suffix) for i in critical}
    assert params["AlarmName"] == f"regionha-{TOPOLOGY.deployment}-{CRITICAL_COMPOSITE}"


def test_dashboard_series_are_ones_something_emits():
    body = dashboard_body(TOPOLOGY, WatchSettings(region="ap-southeast-1"))
    rows = [r for w in body["widgets"] if w["type"] == "metric" for r in w["properties"]["metrics"]
            if isinstance(r[0], str) and r[0] == "regionha"]
    series = {(r[1], tuple(sorted(zip(r[2::2], r[3::2], strict=True)))) for r in rows}
    controller_or_drill = {"FailoverStarted", "FailoverCompleted", "FailoverRefused", "FailoverSeconds", "DrillPassed"}
    assert {s for s in series if s[0] not in controller_or_drill} <= emitted()


# --- what the counts mean, by the CloudWatch evaluation rule (regionha.local.aws.alarms.evaluate_range) ----

B, G = True, False  # a breaching / a good minute; None = no datapoint


def state(intent: AlarmIntent, minutes: list[bool | None], current: str = OK) -> str:
    return evaluate_range(minutes, intent.evaluation_periods, intent.datapoints_to_alarm,
                          intent.treat_missing_data, current).state


@pytest.mark.parametrize(
    ("intent", "minutes", "expected"),
    [
        (path_down("osaka-bind"), [G, G, G, G, G, G, G, B], OK),  # one lost round does not page
        (path_down("osaka-bind"), [G, G, G, G, G, G, B, B], ALARM),  # a dead path does within two rounds
        (path_down("osaka-bind"), [G, G, G, B, G, G, G, B], ALARM),  # two failures within a minute (2 of 6)
        (path_down("osaka-bind"), [G, B, G, G, G, G, G, B], OK),  # ... but not a minute apart
        # A round's datapoints that arrive late (a probe waiting on a silent path) still count.
        (path_down("osaka-bind"), [G, G, G, B, B, None, None, None], ALARM),
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


def test_build_makes_the_watch_after_placing_the_canary_and_teardown_removes_it_first():
    root = TEMPLATE.parent / "statemachines"
    build = json.loads((root / "build.asl.json").read_text())["States"]
    teardown = json.loads((root / "teardown.asl.json").read_text())["States"]
    assert build["PlaceCanary"]["Next"] == "SaveInventory" and build["SaveInventory"]["Next"] == "FirstCanaryRound"
    # Real rounds (they read the saved inventory), every poll_seconds of the build's waits, until every path
    # and node answers, a minute at most, before the alarms: the nodes' services may still be starting. Its
    # outcome, or its error, goes to the build's summary.
    assert build["FirstCanaryRound"]["Resource"] == "${DispatchCanaryFunctionArn}"
    assert build["FirstCanaryRound"]["Parameters"] == {"rounds": 12, "until_all_succeed": True,
                                                       "interval_seconds.$": "$.plan.waits.poll_seconds"}
    assert build["FirstCanaryRound"]["Next"] == "ConvergeWatch" == build["FirstCanaryRound"]["Catch"][0]["Next"]
    assert build["FirstCanaryRound"]["Catch"][0]["ResultPath"] == build["FirstCanaryRound"]["ResultPath"]
    assert build["SummarizeBuild"]["Parameters"]["first_canary_round.$"] == build["FirstCanaryRound"]["ResultPath"]
    assert build["ConvergeWatch"]["Next"] == "SummarizeBuild"
    assert build["ConvergeWatch"]["Parameters"]["action"] == "converge"
    # The canary check comes first: teardown refuses before deleting anything while the canary is placed.
    assert teardown["ValidateTopology"]["Next"] == "UnplaceCanary"
    # Then the failover controllers stand down (docs/failover.md, "Teardown"), then the watch goes.
    assert teardown["UnplaceCanary"]["Next"] == "InitControllersWait"
    assert teardown["ControllersStoodDown"]["Choices"][0]["Next"] == "TeardownWatch"
    assert teardown["TeardownWatch"]["Parameters"]["action"] == "teardown"
    for state in (build["ConvergeWatch"], teardown["TeardownWatch"]):
        assert state["Resource"] == "${ConvergeWatchFunctionArn}"
        assert state["Parameters"]["topology.$"] == "$.plan.topology"
