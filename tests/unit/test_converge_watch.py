"""The deployment's alarms and dashboard follow the topology: created, unchanged on a re-run (zero
writes), a removed path's alarm deleted, another deployment's alarms untouched, teardown leaves nothing.

moto 5.2.5 has no PutCompositeAlarm: as in the local runtime (local/server.py), the composite goes to
the runtime's alarm evaluator, here through botocore's before-call/after-call events instead of the
server's middleware (tests/composites.py, installed by the ``moto_aws`` fixture).
"""

from __future__ import annotations

import json

import boto3
import pytest

from regionha.aws import Clients
from regionha.converge.watch import WatchSettings, converge_watch, dashboard_body, teardown_watch
from regionha.errors import ConfigurationError
from regionha.topology import load_topology
from regionha.watch.alarms import (
    alarm_name,
    canary_alarm_intents,
    composite_name,
    critical_members,
    dashboard_name,
    node_down,
    path_down,
    watched_alarm_names,
)
from regionha.watch.canary import canary_targets
from regionha.watch.interconnect import interconnect_alarm_intents

REGION = "ap-southeast-1"
TOPOLOGY = load_topology()
SETTINGS = WatchSettings(region=REGION, topic_arn=f"arn:aws:sns:{REGION}:123456789012:notices",
                         canary_functions=("regionha-RunCanary", "regionha-DispatchCanary"),
                         controller_functions=("regionha-FailoverController",),
                         stack_alarms=("regionha-failover-refused",), runbook_url="https://example.invalid/runbook")


@pytest.fixture
def composites(composite_alarms, call_counter):
    return composite_alarms


def metric_alarms(deployment_prefix: str = "regionha-") -> dict[str, dict]:
    cw = boto3.client("cloudwatch", region_name=REGION)
    return {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=deployment_prefix)["MetricAlarms"]}


def test_alarms_and_dashboard_follow_the_topology_and_a_rerun_writes_nothing(composites, call_counter):
    # GIVEN nothing; WHEN the watch converges
    outcomes = converge_watch(TOPOLOGY, Clients(), SETTINGS)

    # THEN every path address, the on-prem resolver and each node has its alarm, plus the critical ones
    dep = TOPOLOGY.deployment
    have = metric_alarms()
    want = {alarm_name(dep, i.suffix) for i in [*canary_alarm_intents(TOPOLOGY), *interconnect_alarm_intents(TOPOLOGY)]}
    assert set(have) == want
    assert {alarm_name(dep, path_down(t.path).suffix) for t in canary_targets(TOPOLOGY)} <= want
    assert {alarm_name(dep, node_down(n.name).suffix) for n in TOPOLOGY.nodes} <= want
    osaka = have[f"regionha-{dep}-path-down-osaka-bind"]
    assert osaka["Dimensions"] == [{"Name": "Deployment", "Value": dep}, {"Name": "Path", "Value": "osaka-bind"}]
    assert (osaka["MetricName"], osaka["Statistic"], osaka["EvaluationPeriods"], osaka["DatapointsToAlarm"]) == \
        ("PathSuccess", "Minimum", 3, 2)
    assert osaka["AlarmActions"] == osaka["OKActions"] == [SETTINGS.topic_arn]
    tags = boto3.client("cloudwatch", region_name=REGION).list_tags_for_resource(ResourceARN=osaka["AlarmArn"])
    assert {"Key": "regionha:deployment", "Value": dep} in tags["Tags"]
    (composite,) = composites.describe_composite_alarms(REGION)
    assert composite["AlarmName"] == composite_name(dep)
    assert composite["AlarmRule"] == " OR ".join(f'ALARM("{n}")' for n in critical_members(TOPOLOGY))
    body = json.loads(boto3.client("cloudwatch", region_name=REGION).get_dashboard(
        DashboardName=dashboard_name(dep))["DashboardBody"])
    assert body["widgets"][0]["type"] == "text"
    (widget,) = [w["properties"]["alarms"] for w in body["widgets"] if w["type"] == "alarm"]
    real = {a["AlarmArn"] for a in have.values()} | {composite["AlarmArn"]}
    assert real <= set(widget)  # the alarm widget names the real ARNs (account, partition, region)
    assert {o.action for o in outcomes} == {"created"}

    # WHEN it runs again with nothing to change THEN it writes nothing
    call_counter.calls.clear()
    again = converge_watch(TOPOLOGY, Clients(), SETTINGS)
    assert call_counter.mutating == []
    assert {o.action for o in again} == {"unchanged"}


def test_a_removed_path_loses_its_alarm_and_a_changed_alarm_is_fixed(composites):
    converge_watch(TOPOLOGY, Clients(), SETTINGS)
    dep = TOPOLOGY.deployment
    cw = boto3.client("cloudwatch", region_name=REGION)
    # Drift: someone loosened an alarm by hand.
    drifted = metric_alarms()[f"regionha-{dep}-canary-silent"]
    cw.put_metric_alarm(**{k: drifted[k] for k in ("AlarmName", "MetricName", "Namespace", "Statistic", "Period",
                                                   "Dimensions", "Threshold", "ComparisonOperator")},
                        EvaluationPeriods=5)
    data = TOPOLOGY.to_json()
    data["forwarder_paths"] = [p for p in data["forwarder_paths"] if p["name"] != "osaka-bind"]
    data["dns"]["allow_single_path"] = True  # validation refuses one path unless told
    from regionha.topology import parse_topology

    smaller = parse_topology(data, "test")

    outcomes = converge_watch(smaller, Clients(), SETTINGS)

    by_name = {o.name: o.action for o in outcomes}
    assert by_name[f"regionha-{dep}-path-down-osaka-bind"] == "deleted"
    assert by_name[f"regionha-{dep}-canary-silent"] == "updated"
    assert by_name[dashboard_name(dep)] == "updated"
    assert set(metric_alarms()) == {alarm_name(dep, i.suffix)
                                    for i in [*canary_alarm_intents(smaller), *interconnect_alarm_intents(smaller)]}
    assert metric_alarms()[f"regionha-{dep}-canary-silent"]["EvaluationPeriods"] == 1


def test_two_deployments_share_no_alarm_and_teardown_removes_only_its_own(composites):
    other = TOPOLOGY.model_copy(update={"deployment": f"{TOPOLOGY.deployment}-b"})  # shares the name prefix
    converge_watch(TOPOLOGY, Clients(), SETTINGS)
    converge_watch(other, Clients(), SETTINGS)
    mine, theirs = set(metric_alarms(f"regionha-{TOPOLOGY.deployment}-")), set(metric_alarms(
        f"regionha-{other.deployment}-"))
    assert theirs and theirs < mine  # "regionha-regionha-ref-" is a prefix of the other's names
    # Converging the first again deletes none of the other's alarms.
    outcomes = converge_watch(TOPOLOGY, Clients(), SETTINGS)
    assert not [o for o in outcomes if o.action == "deleted"]

    gone = teardown_watch(TOPOLOGY, Clients(), REGION)

    assert {o.action for o in gone} == {"deleted"}
    assert set(metric_alarms()) == theirs
    assert [c["AlarmName"] for c in composites.describe_composite_alarms(REGION)] == [composite_name(other.deployment)]
    cw = boto3.client("cloudwatch", region_name=REGION)
    assert [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]] == [dashboard_name(other.deployment)]
    # A second teardown finds nothing and fails nothing.
    assert {o.action for o in teardown_watch(TOPOLOGY, Clients(), REGION)} == {"absent"}


def test_deleting_two_composites_in_one_call_is_refused_as_cloudwatch_does(composites):
    for name in ("a", "b"):
        composites.put_composite_alarm(REGION, AlarmName=name, AlarmRule="FALSE")
    with pytest.raises(ConfigurationError, match="at most one composite"):
        composites.delete_composite_alarms(REGION, ["a", "b"])
    composites.put_composite_alarm(REGION, AlarmName="c", AlarmRule='ALARM("a")')
    with pytest.raises(ConfigurationError, match="in the rule of c"):
        composites.delete_composite_alarms(REGION, ["a"])


def test_dashboard_shows_what_on_call_needs_for_this_topology():
    body = dashboard_body(TOPOLOGY, SETTINGS)
    text = json.dumps(body)
    (markdown,) = [w["properties"]["markdown"] for w in body["widgets"] if w["type"] == "text"]
    assert SETTINGS.runbook_url in markdown and TOPOLOGY.dns.record.name in markdown
    rows = [r for w in body["widgets"] if w["type"] == "metric" for r in w["properties"]["metrics"]]
    series = {tuple(r) for r in rows if isinstance(r, list) and r and isinstance(r[0], str)}
    dep = TOPOLOGY.deployment
    for t in canary_targets(TOPOLOGY):
        for metric in ("PathSuccess", "PathLatency"):
            assert ("regionha", metric, "Deployment", dep, "Path", t.path) in series
        assert f'Path=\\"{t.path}\\"' in text  # its failure reasons (PathOutcome by Outcome)
    for n in TOPOLOGY.nodes:
        for metric in ("RecordTarget", "NodeUp"):
            assert ("regionha", metric, "Deployment", dep, "Node", n.name) in series
    for metric in ("CanaryHeartbeat", "CanaryDuration", "FailoverStarted", "FailoverCompleted", "FailoverRefused",
                   "FailoverSeconds", "DrillPassed"):
        assert ("regionha", metric, "Deployment", dep) in series
    assert "RecoverySeconds" in text
    for fn in SETTINGS.canary_functions + SETTINGS.controller_functions:
        assert ("AWS/Lambda", "Errors", "FunctionName", fn) in series
    (alarms,) = [w["properties"]["alarms"] for w in body["widgets"] if w["type"] == "alarm"]
    assert len(alarms) == (len(canary_alarm_intents(TOPOLOGY)) + 1 + len(SETTINGS.stack_alarms)
                           + len(interconnect_alarm_intents(TOPOLOGY)))


def test_the_drill_watches_each_path_and_node_alarm():
    names = watched_alarm_names(TOPOLOGY)
    assert len(names) == len(canary_targets(TOPOLOGY)) + len(TOPOLOGY.nodes)
    assert all(n.startswith(f"regionha-{TOPOLOGY.deployment}-") for n in names)
