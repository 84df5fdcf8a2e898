"""The drill's parts against moto in-process: input, plans, lock, faults and their restore, the sweeper,
observation (scripted rounds), the alarm proof and the report. The whole state machine with real
handlers, node services and DNS servers is in test_drill_state_machine.py.
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import boto3
import pytest

from inprocess import nacl_allows
from regionha import drill
from regionha.aws import Clients, tag_spec
from regionha.drill import CUT, Drill, DrillEnv, DrillSettings, Round
from regionha.drill import faults as drill_faults
from regionha.errors import ConfigurationError
from regionha.topology import Failover

ROOT = Path(__file__).resolve().parents[2]
TOKYO, OSAKA, STACK = "ap-northeast-1", "ap-northeast-3", "ap-southeast-1"
TABLE = "state"
AMI = "ami-0123456789abcdef0"  # moto does not check it
DEP = "regionha-ref"
ENV = DrillEnv(table=TABLE, region=STACK)


# --- input -------------------------------------------------------------------------------------------


def test_defaults_and_deployment_from_environment():
    s = DrillSettings.from_input({}, "dep-from-env")
    # No step_timeout: each observing step's bound is its recovery budget (TTL + detection + fallback).
    assert (s.scenario, s.deployment, s.poll_interval, s.step_timeout, s.failback) == (
        "acceptance", "dep-from-env", 0.5, None, True)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"scenario": "chaos"}, "scenario must be one of"),
        ({"scenario": "cut-path"}, "needs region_path"),
        ({"step_timout": 3}, "unknown key(s) step_timout"),
        ({"poll_interval": 0}, "poll_interval must be in"),
        ({"step_timeout": 800, "alarm_timeout": 100}, "must each fit in 840 s"),
        ({"cut": "half"}, "cut must be one of"),
        ({"failback": "yes"}, "failback must be true or false"),
        ({"step_timeout": "soon"}, "step_timeout must be a number"),
    ],
)
def test_bad_input_is_refused_with_a_specific_message(given, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DrillSettings.from_input(given, DEP)


def test_no_deployment_anywhere_is_refused():
    with pytest.raises(ConfigurationError, match="no deployment"):
        DrillSettings.from_input({}, None)


@pytest.mark.parametrize("name", ["drill-acceptance", "drill-fail-active-node", "drill-cut-path-tokyo",
                                  "drill-cut-path-osaka"])
def test_console_inputs_are_valid(name, topology):
    data = json.loads((ROOT / "events" / f"{name}.json").read_text())
    settings = DrillSettings.from_input(data, DEP)
    assert drill.plan(topology, settings, "Server-A")


# --- plans and the state machine ----------------------------------------------------------------------


def labels(topology):
    return [label for ls in drill.path_labels(topology).values() for label in ls]


def test_acceptance_plan_is_the_articles_seven_steps(topology):
    steps = drill.plan(topology, DrillSettings(deployment=DEP), "Server-A")

    assert [s["id"] for s in steps] == ["ensure-primary", "verify-primary", "fail-primary", "observe-secondary",
                                        "rejoin-primary", "fail-secondary", "observe-primary"]
    by_id = {s["id"]: s for s in steps}
    assert by_id["ensure-primary"]["node"] == "Server-A"
    assert set(by_id["verify-primary"]["expect"].values()) == {"Server-A"}
    assert by_id["fail-primary"]["faults"] == [{"kind": "node", "target": "Server-A"},
                                               {"kind": "path", "target": "tokyo-resolver"}]
    assert by_id["observe-secondary"]["expect"] == {
        "tokyo-resolver/10.0.111.100": CUT, "tokyo-resolver/10.0.111.101": CUT,
        "osaka-bind": "Server-B", "onprem": "Server-B"}
    assert by_id["rejoin-primary"]["faults"] == by_id["fail-primary"]["faults"]
    assert by_id["fail-secondary"]["faults"] == [{"kind": "node", "target": "Server-B"},
                                                 {"kind": "path", "target": "osaka-bind"}]
    assert by_id["observe-primary"]["expect"] == {
        "tokyo-resolver/10.0.111.100": "Server-A", "tokyo-resolver/10.0.111.101": "Server-A",
        "osaka-bind": CUT, "onprem": "Server-A"}
    assert [s["measure"] for s in steps if s["kind"] == "observe" and s.get("measure")] == [True, True]


def test_fail_active_node_fails_whatever_node_the_record_names(topology):
    steps = drill.plan(topology, DrillSettings(deployment=DEP, scenario="fail-active-node"), "Server-B")

    assert [s["id"] for s in steps] == ["fail-active-node", "observe-active-moved"]
    assert steps[0]["faults"] == [{"kind": "node", "target": "Server-B"}]
    assert set(steps[1]["expect"]) == set(labels(topology))
    assert set(steps[1]["expect"].values()) == {"Server-A"}


def test_cut_path_expects_the_cut_path_silent_and_the_rest_on_the_active_node(topology):
    settings = DrillSettings(deployment=DEP, scenario="cut-path", region_path="osaka-bind")
    steps = drill.plan(topology, settings, "Server-A")

    assert [s["id"] for s in steps] == ["cut-path", "observe-path-cut"]
    assert steps[1]["expect"] == {"tokyo-resolver/10.0.111.100": "Server-A", "tokyo-resolver/10.0.111.101": "Server-A",
                                  "osaka-bind": CUT, "onprem": "Server-A"}
    with pytest.raises(ConfigurationError, match="not a forwarder path"):
        drill.plan(topology, DrillSettings(deployment=DEP, scenario="cut-path", region_path="nara"), "Server-A")


def asl():
    return json.loads((ROOT / "statemachines" / "drill.asl.json").read_text())


def sequence_from(states, start):
    """The step ids the state machine runs from ``start`` until it reaches Restore."""
    ids, name = [], start
    for _ in range(len(states)):
        if name == "Restore":
            return ids
        state = states[name]
        if state["Type"] == "Map":  # the further steps of a plan (none for two nodes)
            name = state["Next"]
            continue
        ids.append(state["Parameters"]["step"])
        name = state["Next"]
    raise AssertionError("no path to Restore")


@pytest.mark.parametrize(("scenario", "extra"), [("acceptance", {}), ("fail-active-node", {}),
                                                 ("cut-path", {"region_path": "tokyo-resolver"})])
def test_the_state_machine_runs_exactly_the_planned_steps(topology, scenario, extra):
    states = asl()["States"]
    (choice,) = [c for c in states["ChooseScenario"]["Choices"] if c["StringEquals"] == scenario]

    planned = drill.plan(topology, DrillSettings(deployment=DEP, scenario=scenario, **extra), "Server-A")

    assert sequence_from(states, choice["Next"]) == [s["id"] for s in planned]


def test_every_task_retries_transient_errors_and_catches_into_restore_or_onwards():
    doc = asl()
    # Long enough for the worst case (test_state_machine_robustness), bounded by a day.
    assert doc["TimeoutSeconds"] <= 24 * 3600
    for name, state in doc["States"].items():
        if state["Type"] != "Task":
            continue
        assert "TransientError" in state["Retry"][0]["ErrorEquals"], name
        assert state["Retry"][0]["MaxAttempts"] <= 5, name
        # A timed-out invocation may be caught before it (test_state_machine_robustness); the last catches all.
        catch = state["Catch"][-1]
        assert catch["ErrorEquals"] == ["States.ALL"], name
        if state["Parameters"]["action"] in ("preflight", "step"):
            assert catch["Next"] == "Restore", name
    # Restore always leads to the alarm check, the report and the lock's release, failure or not.
    states = doc["States"]
    assert states["Restore"]["Next"] == "CheckAlarms" and states["Restore"]["Catch"][0]["Next"] == "RestoreFailed"
    assert states["RestoreFailed"]["Next"] == states["RestoreFailed"]["Catch"][0]["Next"] == "CheckAlarms"
    assert states["Report"]["Next"] == "ReleaseLock"


def test_the_drill_watches_the_deployments_own_alarms_and_the_stacks():
    from inprocess import load_template
    from regionha.topology import load_topology
    from regionha.watch.alarms import critical_members, watched_alarm_names

    template = load_template(ROOT / "template.yaml")
    env = template["Resources"]["RunDrillStepFunction"]["Properties"]["Environment"]["Variables"]
    assert env["DRILL_WATCH_ALARMS"] == {"Ref": "FailoverRefusedAlarm"}
    topology = load_topology()
    drill_env = drill.DrillEnv(table="t", region="ap-southeast-1", watch_alarms=("stack-failover-refused",))
    run = drill.Drill(None, drill_env, {"deployment": topology.deployment}, topology=topology)

    assert run.alarms.watch_alarms == ("stack-failover-refused", *watched_alarm_names(topology))
    assert run.alarms.critical_alarms == tuple(critical_members(topology))


# --- a small world in moto ---------------------------------------------------------------------------


@pytest.fixture
def table(moto_aws):
    """The state table alone."""
    boto3.client("dynamodb", region_name=STACK).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    return Clients()


@pytest.fixture
def world(table, topology):
    """VPCs, subnets and nodes of the reference deployment (just what faults touch) and the state table."""
    clients = table
    ids = {}
    for vpc in topology.vpcs[:2]:
        ec2 = clients.ec2(vpc.region)
        vpc_id = ec2.create_vpc(CidrBlock=str(vpc.cidr), TagSpecifications=tag_spec("vpc", DEP, vpc.name))[
            "Vpc"]["VpcId"]
        for subnet in vpc.subnets:
            ids[subnet.name] = ec2.create_subnet(
                VpcId=vpc_id, CidrBlock=str(subnet.cidr), AvailabilityZone=subnet.az,
                TagSpecifications=tag_spec("subnet", DEP, subnet.name))["Subnet"]["SubnetId"]
    for node in topology.nodes:
        ids[node.name] = clients.ec2(topology.region_of(node.vpc)).run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=ids[node.subnet], PrivateIpAddress=str(node.ip),
            TagSpecifications=tag_spec("instance", DEP, node.name))["Instances"][0]["InstanceId"]
    return clients, ids


def nacl_entries(region, subnet_id):
    acl = boto3.client("ec2", region_name=region).describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["NetworkAcls"][0]
    return acl, [e for e in acl["Entries"] if drill_faults.RULE_FIRST <= e["RuleNumber"] <= drill_faults.RULE_LAST]


def state(region, instance_id):
    return drill_faults.instance_state(Clients(), region, instance_id)


def fault_items():
    return [i for i in boto3.client("dynamodb", region_name=STACK).scan(TableName=TABLE)["Items"]
            if i["sk"]["S"].startswith("fault#")]


# --- the lock ----------------------------------------------------------------------------------------


def test_a_second_drill_is_refused_while_the_first_holds_the_lock(table):
    clients = table
    drill.acquire_lock(clients, ENV, DEP, "drill-1", ttl=600, now=1000)
    drill.acquire_lock(clients, ENV, DEP, "drill-1", ttl=600, now=1001)  # a retry of the holder

    with pytest.raises(ConfigurationError, match="another drill holds the lock of regionha-ref: drill-1"):
        drill.acquire_lock(clients, ENV, DEP, "drill-2", ttl=600, now=1100)

    assert drill.release_lock(clients, ENV, DEP, "drill-2") is False  # not the holder: nothing released
    assert drill.read_lock(clients, ENV, DEP)["holder"] == "drill-1"
    assert drill.release_lock(clients, ENV, DEP, "drill-1") is True
    drill.acquire_lock(clients, ENV, DEP, "drill-2", ttl=600, now=1100)


def test_an_expired_lock_is_taken_over(table):
    clients = table
    drill.acquire_lock(clients, ENV, DEP, "drill-1", ttl=60, now=1000)

    drill.acquire_lock(clients, ENV, DEP, "drill-2", ttl=60, now=1061)

    assert drill.read_lock(clients, ENV, DEP)["holder"] == "drill-2"


def test_the_sweeper_releases_the_lock_of_a_stopped_execution(table):
    clients = table
    drill.acquire_lock(clients, ENV, DEP, "drill-1", ttl=600, execution_arn="arn:exec:1")
    status = {"arn:exec:1": "RUNNING"}

    assert drill.sweep_locks(clients, ENV, execution_status=status.get) == []
    status["arn:exec:1"] = "ABORTED"
    released = drill.sweep_locks(clients, ENV, execution_status=status.get)

    assert released == [{"deployment": DEP, "holder": "drill-1", "reason": "execution aborted"}]
    assert drill.read_lock(clients, ENV, DEP) is None


# --- faults ----------------------------------------------------------------------------------------


def test_cutting_a_path_denies_dns_from_the_client_network_in_the_reserved_range(world, topology):
    clients, ids = world
    fault = drill_faults.path_fault(topology, clients, "tokyo-resolver")

    drill_faults.apply_path_fault(clients, fault, "drill-1")
    drill_faults.apply_path_fault(clients, fault, "drill-1")  # a retry adds nothing

    acl, ours = nacl_entries(TOKYO, ids["A3"])
    assert sorted((e["RuleNumber"], e["Protocol"], e["RuleAction"], e["CidrBlock"], e["PortRange"]["From"])
                  for e in ours) == [(60, "17", "deny", "10.2.10.0/24", 53), (61, "6", "deny", "10.2.10.0/24", 53)]
    assert all(not e["Egress"] for e in ours)
    assert {"Key": "regionha:drill", "Value": "drill-1 cuts tokyo-resolver"} in acl["Tags"]
    onprem = ipaddress.IPv4Network("10.2.10.10/32")
    assert not nacl_allows(acl["Entries"], onprem, "udp", 53)
    assert not nacl_allows(acl["Entries"], onprem, "tcp", 53)

    for _ in range(2):  # restore is idempotent
        drill_faults.restore_path_fault(clients, fault)

    acl, ours = nacl_entries(TOKYO, ids["A3"])
    assert ours == []
    assert nacl_allows(acl["Entries"], onprem, "udp", 53)
    assert not any(t["Key"] == "regionha:drill" for t in acl.get("Tags", []))


def test_cutting_all_traffic_uses_one_entry_per_nacl(world, topology):
    clients, ids = world
    fault = drill_faults.path_fault(topology, clients, "osaka-bind", cut="all")
    drill_faults.apply_path_fault(clients, fault, "drill-1")

    _, ours = nacl_entries(OSAKA, ids["B3"])
    # osaka-bind is the second path: its block starts 4 rules after the first path's.
    assert [(e["RuleNumber"], e["Protocol"]) for e in ours] == [(64, "-1")]


def test_a_reserved_rule_taken_by_someone_else_is_refused_and_never_removed(world, topology):
    clients, ids = world
    acl, _ = nacl_entries(TOKYO, ids["A3"])
    boto3.client("ec2", region_name=TOKYO).create_network_acl_entry(
        NetworkAclId=acl["NetworkAclId"], RuleNumber=61, Protocol="6", RuleAction="allow", Egress=False,
        CidrBlock="10.9.0.0/16", PortRange={"From": 443, "To": 443})
    fault = drill_faults.path_fault(topology, clients, "tokyo-resolver")

    with pytest.raises(ConfigurationError, match="rule 61 .* is taken by another entry"):
        drill_faults.apply_path_fault(clients, fault, "drill-1")
    result = drill_faults.restore_path_fault(clients, fault)

    _, ours = nacl_entries(TOKYO, ids["A3"])
    assert [(e["RuleNumber"], e["RuleAction"]) for e in ours] == [(61, "allow")]
    assert result["foreign"] == [f"{acl['NetworkAclId']} rule 61"]


def test_an_allow_entry_below_the_reserved_range_would_shadow_the_cut_and_is_refused(world, topology):
    clients, ids = world
    acl, _ = nacl_entries(TOKYO, ids["A3"])
    boto3.client("ec2", region_name=TOKYO).create_network_acl_entry(
        NetworkAclId=acl["NetworkAclId"], RuleNumber=10, Protocol="17", RuleAction="allow", Egress=False,
        CidrBlock="10.2.0.0/16", PortRange={"From": 53, "To": 53})
    fault = drill_faults.path_fault(topology, clients, "tokyo-resolver")

    with pytest.raises(ConfigurationError, match="rule 10 allows 10.2.10.0/24 before the drill's deny"):
        drill_faults.apply_path_fault(clients, fault, "drill-1")
    assert nacl_entries(TOKYO, ids["A3"])[1] == []


def test_failing_a_node_stops_its_instance_and_restore_starts_it(world, topology):
    clients, ids = world
    fault = drill_faults.node_fault(topology, clients, "Server-A", cluster_action=None)
    assert (fault["method"], fault["instance_id"]) == ("stop", ids["Server-A"])

    drill_faults.apply_node_fault(clients, fault)
    assert state(TOKYO, ids["Server-A"]) == "stopped"

    assert drill_faults.restore_node_fault(clients, fault)["action"] == "started"
    assert drill_faults.restore_node_fault(clients, fault)["action"] == "none"  # twice is safe
    assert state(TOKYO, ids["Server-A"]) == "running"


def test_external_mode_fails_a_node_with_the_cluster_action_through_ssm(world, topology, call_counter):
    clients, ids = world
    external = topology.model_copy(update={"failover": Failover(mode="external")})
    action = {"commands": ["clpgrp -m failover"], "restore_commands": ["clpgrp -m failover Server-A"]}
    fault = drill_faults.node_fault(external, clients, "Server-A", cluster_action=action)

    drill_faults.apply_node_fault(clients, fault)
    drill_faults.restore_node_fault(clients, fault)

    assert ("ssm", "SendCommand") in call_counter.calls
    assert ("ec2", "StopInstances") not in call_counter.calls
    assert state(TOKYO, ids["Server-A"]) == "running"
    with pytest.raises(ConfigurationError, match="commands must be a non-empty list"):
        drill_faults.node_fault(external, clients, "Server-A", cluster_action={"commands": "reboot"})


def test_the_sweeper_restores_expired_faults_and_those_of_stopped_executions(world, topology):
    clients, ids = world
    store = drill_faults.FaultStore(clients, TABLE, STACK, DEP)
    now = time.time()
    faults = {
        "expired": {**drill_faults.node_fault(topology, clients, "Server-A", None), "execution": "old",
                    "execution_arn": "arn:old"},
        "stopped": {**drill_faults.path_fault(topology, clients, "tokyo-resolver"), "execution": "stopped",
                    "execution_arn": "arn:stopped"},
        "running": {**drill_faults.path_fault(topology, clients, "osaka-bind"), "execution": "live",
                    "execution_arn": "arn:live"},
    }
    for name, fault in faults.items():
        store.record(fault, ttl_seconds=10 if name != "expired" else 1, now=now - 5)
        drill_faults.apply_fault(clients, fault)
    status = {"arn:old": "RUNNING", "arn:stopped": "ABORTED", "arn:live": "RUNNING"}

    swept = drill_faults.sweep(clients, TABLE, STACK, now=now, execution_status=status.get)

    assert sorted((s["reason"], s["restored"]) for s in swept) == [("execution aborted", True), ("expired", True)]
    assert state(TOKYO, ids["Server-A"]) == "running"
    assert nacl_entries(TOKYO, ids["A3"])[1] == []
    assert len(nacl_entries(OSAKA, ids["B3"])[1]) == 2  # the running drill's cut stays
    assert [i["execution"]["S"] for i in fault_items()] == ["live"]
    assert drill_faults.sweep(clients, TABLE, STACK, now=now, execution_status=status.get) == []


# --- observing (scripted rounds, no network) ----------------------------------------------------------


def sample(path, node=None, outcome="ok", reachable=True, t=0.0):
    return {"t": t, "step": "s", "path": path, "outcome": outcome, "answer": None, "node": node,
            "node_reachable": reachable and node is not None, "success": outcome == "ok" and reachable}


class Scripted(Drill):
    """A drill whose rounds come from a script instead of the network."""

    def __init__(self, topology, rounds, critical=()):
        env = DrillEnv(table=TABLE, region=STACK, critical_alarms=tuple(critical))
        context = {"execution": "x", "settings": {"deployment": DEP, "poll_interval": 0.01, "step_timeout": 0.5,
                                                  "alarm_timeout": 0}}
        super().__init__(None, env, context, topology=topology, sleep=lambda s: None)
        self.record = self._blank()
        self.rounds = iter(rounds)

    def sample(self, step):
        return next(self.rounds)


def test_recovery_is_fault_time_to_the_first_sample_naming_the_expected_node_that_answers(topology):
    expect = {"a": "Server-B", "b": CUT}
    rounds = [
        Round(100.5, [sample("a", "Server-A", "wrong_answer", reachable=False), sample("b", "Server-A")], {}, "B"),
        Round(101.0, [sample("a", "Server-B", reachable=False), sample("b", outcome="timeout")], {}, "B"),
        Round(102.25, [sample("a", "Server-B"), sample("b", outcome="timeout")], {}, "B"),
    ]
    d = Scripted(topology, rounds)
    d.record["fault_time"] = 100.0

    result = d.observe("observe", expect, measure=True, timeout=5, hold=False)

    assert result["recovery_seconds"] == {"a": 2.25}
    assert d.record["recovery"] == [{"step": "observe", "path": "a", "node": "Server-B", "seconds": 2.25,
                                     "after": "fault"}]
    assert len(d.record["timeline_inline"]) == 6


def test_recovery_is_measured_only_for_paths_whose_answer_had_to_change(topology):
    # GIVEN a cut of path b while the record stays on Server-A: a keeps answering Server-A.
    rounds = [Round(100.5, [sample("a", "Server-A"), sample("b", outcome="timeout")], {}, "A")]
    d = Scripted(topology, rounds)
    d.record |= {"fault_time": 100.0, "answer_before_fault": "Server-A"}

    result = d.observe("observe", {"a": "Server-A", "b": CUT}, measure=True, timeout=5, hold=False)

    assert result["recovery_seconds"] == {} and d.record["recovery"] == []


def test_a_restored_cut_path_recovers_from_its_restore(topology):
    rounds = [Round(200.4, [sample("a", "Server-A"), sample("b", outcome="timeout")], {}, "A"),
              Round(200.9, [sample("a", "Server-A"), sample("b", "Server-A")], {}, "A")]
    d = Scripted(topology, rounds)

    result = d.observe("restore", {"a": drill.TRUTH, "b": drill.TRUTH}, measure=False, timeout=5, hold=False,
                       restored={"b": 200.0})

    assert result["recovery_seconds"] == {"b": 0.9}
    assert d.record["recovery"] == [{"step": "restore", "path": "b", "node": "Server-A", "seconds": 0.9,
                                     "after": "restore"}]


def test_a_path_that_had_to_change_and_did_not_is_recorded_as_not_recovered(topology):
    stale = Round(1.0, [sample("a", "Server-A", reachable=False)], {}, "Server-A")
    d = Scripted(topology, [stale] * 10_000)
    d.record |= {"fault_time": 0.5, "answer_before_fault": "Server-A"}

    with pytest.raises(drill.DrillStepFailed):
        d.observe("observe", {"a": "Server-B"}, measure=True, timeout=0.05, hold=False)

    assert d.record["recovery"] == [{"step": "observe", "path": "a", "node": None, "seconds": None,
                                     "after": "fault"}]
    assert drill.compose_report(d.record, [])["recovery_seconds"] == {"a": None}


def test_a_drill_in_which_nothing_moves_the_record_fails_its_step(topology):
    stale = Round(1.0, [sample("a", "Server-A", reachable=False)], {}, "Server-A")
    d = Scripted(topology, [stale] * 10_000)

    with pytest.raises(drill.DrillStepFailed, match="want Server-B, saw ok .*Server-A silent"):
        d.observe("observe", {"a": "Server-B"}, measure=True, timeout=0.05, hold=False)
    assert d.record["timeline_inline"]  # samples are kept for the report even so


def test_a_critical_alarm_while_a_path_still_resolves_aborts(topology):
    rounds = [Round(1.0, [sample("a", "Server-A"), sample("b", outcome="timeout")], {"crit": "OK"}, "A"),
              Round(2.0, [sample("a", "Server-A"), sample("b", outcome="timeout")], {"crit": "ALARM"}, "A")]
    d = Scripted(topology, rounds, critical=["crit"])

    with pytest.raises(drill.DrillAborted, match="crit went to ALARM while a still resolved"):
        d.observe("observe", {"a": "Server-B", "b": CUT}, measure=True, timeout=5, hold=False)


def test_a_critical_alarm_with_no_path_resolving_is_not_a_stop_condition(topology):
    down = Round(1.0, [sample("a", "Server-A", reachable=False)], {"crit": "ALARM"}, "A")
    d = Scripted(topology, [down] * 10_000, critical=["crit"])

    with pytest.raises(drill.DrillStepFailed):
        d.observe("observe", {"a": "Server-B"}, measure=True, timeout=0.05, hold=False)


# --- alarm proof and report (pure) -------------------------------------------------------------------


def proof_record(log):
    return {
        "events": [{"t": 10, "event": "fault", "kind": "path", "target": "tokyo-resolver"},
                   {"t": 20, "event": "restore", "kind": "path", "target": "tokyo-resolver"}],
        "alarm_paths": {"pd-tokyo": "tokyo-resolver/10.0.111.100", "pd-osaka": "osaka-bind"},
        "alarm_baseline": {"crit": "OK"},
        "alarm_log": log,
    }


def test_the_alarm_proof_needs_the_cut_paths_alarm_in_alarm_during_the_cut_and_ok_after():
    env = DrillEnv(table=TABLE, region=STACK, watch_alarms=("pd-tokyo", "pd-osaka"), critical_alarms=("crit",))
    final = {"pd-tokyo": "OK", "pd-osaka": "OK", "crit": "OK"}
    fired = [{"t": 15, "alarm": "pd-tokyo", "state": "ALARM"}, {"t": 25, "alarm": "pd-tokyo", "state": "OK"}]

    good = drill.alarm_proof(proof_record(fired), env, final)
    silent = drill.alarm_proof(proof_record([]), env, final)
    late = drill.alarm_proof(proof_record([{"t": 21, "alarm": "pd-tokyo", "state": "ALARM"}]), env, final)
    still = drill.alarm_proof(proof_record(fired), env, final | {"pd-tokyo": "ALARM"})
    critical = drill.alarm_proof(proof_record(fired + [{"t": 12, "alarm": "crit", "state": "ALARM"}]), env, final)

    assert good["summary"] == {"checked": True, "ok": True, "critical_fired": [], "note": None}
    assert good["alarms"]["pd-tokyo"]["seen"] == ["ALARM", "OK"]
    assert good["alarms"]["pd-osaka"]["ok"]  # not cut: only OK after restore is asked
    assert not silent["summary"]["ok"] and not silent["alarms"]["pd-tokyo"]["fired_during_fault"]
    assert not late["summary"]["ok"]
    assert not still["summary"]["ok"] and not still["alarms"]["pd-tokyo"]["ok_after_restore"]
    assert critical["summary"]["critical_fired"] == ["crit"] and not critical["summary"]["ok"]


def test_alarm_paths_come_from_the_path_dimension_or_the_name():
    labels_ = ["tokyo-resolver/10.0.111.100", "osaka-bind", "onprem"]
    assert drill.alarm_path({"AlarmName": "x", "Dimensions": [{"Name": "Path", "Value": "osaka-bind"}]},
                            labels_) == "osaka-bind"
    assert drill.alarm_path({"AlarmName": "stack-path-down-tokyo-resolver-10.0.111.100"}, labels_) == \
        "tokyo-resolver/10.0.111.100"
    assert drill.alarm_path({"AlarmName": "stack-failover-refused"}, labels_) is None


def report_record(**changes):
    record = {
        "execution": "e1", "deployment": DEP, "scenario": "cut-path", "started_at": 1.0, "mode": "builtin",
        "plan": [{"id": "cut-path"}, {"id": "observe-path-cut"}],
        "steps": [{"id": "preflight", "name": "preflight", "ok": True, "start": 1, "end": 2, "detail": {}},
                  {"id": "cut-path", "name": "cut", "ok": True, "start": 2, "end": 3, "detail": {}},
                  {"id": "observe-path-cut", "name": "observe", "ok": True, "start": 3, "end": 4, "detail": {}}],
        "recovery": [{"step": "observe-path-cut", "path": "onprem", "node": "Server-A", "seconds": 1.25}],
        "events": [{"t": 2.5, "event": "fault", "kind": "path", "target": "osaka-bind"},
                   {"t": 5.0, "event": "restore", "kind": "path", "target": "osaka-bind"}],
        "restore": {"ok": True, "left_broken": []},
        "alarm_proof": {"checked": True, "ok": True},
        "alarms": {},
    }
    return record | changes


def test_report_shape_and_verdict():
    report = drill.compose_report(report_record(), [{"t": 3.1, "path": "onprem"}])

    assert report["status"] == "PASSED"
    assert {"status", "scenario", "deployment", "execution", "started_at", "ended_at", "steps", "recovery_seconds",
            "timeline", "alarms", "restore", "error"} <= set(report)
    assert set(report["steps"][0]) == {"id", "name", "ok", "start", "end", "detail"}
    assert report["recovery_seconds"] == {"onprem@Server-A": 1.25}
    assert report["faults"] == [{"kind": "path", "target": "osaka-bind", "start": 2.5, "end": 5.0}]
    json.dumps(report)


@pytest.mark.parametrize(
    "changes",
    [
        {"restore": {"ok": False, "left_broken": ["path osaka-bind"]}},
        {"alarm_proof": {"checked": True, "ok": False}},
        {"error": {"Error": "DrillStepFailed", "Cause": "..."}},
        {"steps": report_record()["steps"][:2]},  # observe-path-cut never ran
        {"steps": report_record()["steps"][:2] + [{"id": "observe-path-cut", "name": "o", "ok": True, "start": 3,
                                                   "end": None, "detail": {}}]},  # the Lambda died mid-step
        {"plan": []},
    ],
)
def test_report_fails_for_any_missing_proof(changes):
    assert drill.compose_report(report_record(**changes), [])["status"] == "FAILED"


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ([{"t": 5, "alarm": "a", "state": "ALARM"}], True),  # went to ALARM during the cut
        ([{"t": 1, "alarm": "a", "state": "ALARM"}], True),  # already in ALARM when the cut began
        ([{"t": 1, "alarm": "a", "state": "ALARM"}, {"t": 2, "alarm": "a", "state": "OK"}], False),
        ([{"t": 12, "alarm": "a", "state": "ALARM"}], False),  # only after the cut ended
        ([{"t": 5, "alarm": "b", "state": "ALARM"}], False),  # another alarm
    ],
)
def test_an_alarm_counts_as_fired_if_it_was_in_alarm_during_the_cut(log, expected):
    from regionha.drill.proof import in_alarm_during

    assert in_alarm_during(log, "a", {"start": 3, "end": 10}) is expected


def test_acceptance_with_three_nodes_fails_each_node_in_turn():
    from regionha.topology import load_topology

    topology = load_topology(ROOT / "layers/regionha/regionha/topologies/three-regions.yaml")
    settings = drill.DrillSettings(deployment=topology.deployment)

    steps = drill.plan(topology, settings, "Server-A")

    assert [s["id"] for s in steps[:7]] == list(drill.ACCEPTANCE_STEPS)
    assert [s["id"] for s in steps[7:]] == ["rejoin-secondary", "fail-node-Server-C", "observe-node-Server-C"]
    failed = [f["target"] for s in steps if s["kind"] == "inject"
              for f in s["faults"] if f["kind"] == drill_faults.NODE]
    assert failed == ["Server-A", "Server-B", "Server-C"]
    observe_c = steps[-1]
    cut = {label: want for label, want in observe_c["expect"].items() if want == drill.CUT}
    assert cut == {"seoul-bind": drill.CUT}
    assert {want for want in observe_c["expect"].values() if want != drill.CUT} == {"Server-A"}
    # The two-node reference keeps exactly the article's seven steps.
    assert [s["id"] for s in drill.plan(load_topology(), settings, "Server-A")] == list(drill.ACCEPTANCE_STEPS)


def test_the_state_machine_runs_further_steps_one_at_a_time_after_the_named_ones():
    doc = json.loads((ROOT / "statemachines/drill.asl.json").read_text())
    states = doc["States"]
    more = states["RunMoreSteps"]
    assert states["ObservePrimary"]["Next"] == "RunMoreSteps" and more["Next"] == "Restore"
    assert more["Type"] == "Map" and more["MaxConcurrency"] == 1 and more["ItemsPath"] == "$.drill.more_steps"
    assert more["Catch"][0]["Next"] == "Restore"
    named = [s["Parameters"]["step"] for s in states.values() if s.get("Parameters", {}).get("action") == "step"
             and "step" in s["Parameters"]]
    assert set(drill.ACCEPTANCE_STEPS) <= set(named)
