"""The readiness audit against a real build: the build state machine in moto (in-process), then drifts
made with the same API calls a person or a script would make.

GIVEN the reference deployment built once by the build state machine,
WHEN nothing changed, THEN the audit finds nothing (and makes only read calls);
WHEN one drift is injected, THEN describe_world + audit report exactly it; undoing it clears it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import boto3
import pytest

from regionha.aws import Clients, deployment_filter
from regionha.failover import FENCE_SK
from regionha.topology import load_topology
from regionha.watch import audit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inprocess import STACK_REGION, build_reference, stack_in_process  # noqa: E402

TOKYO, OSAKA = "ap-northeast-1", "ap-northeast-3"
DEP = "regionha-ref"
READ_PREFIXES = ("Describe", "Get", "List", "Query", "Scan")


@pytest.fixture(scope="module")
def built():
    """The reference deployment built once; yields (stack, topology, table)."""
    with stack_in_process() as (stack, _):
        build_reference(stack)
        yield stack, load_topology(), stack.physical_id("StateTable")


def findings(built) -> list[audit.Finding]:
    stack, topology, table = built
    return audit.audit(topology, audit.describe_world(topology, Clients(), table=table, table_region=STACK_REGION,
                                                      controller=stack.physical_id("FailoverControllerFunction")))


# --- drifts: each returns its undo ---------------------------------------------------------------------


def ec2(region):
    return boto3.client("ec2", region_name=region)


def named(region, kind, name):
    call, key = {"rtb": ("describe_route_tables", "RouteTables"), "sg": ("describe_security_groups", "SecurityGroups"),
                 "subnet": ("describe_subnets", "Subnets"), "vpc": ("describe_vpcs", "Vpcs"),
                 "instance": ("describe_instances", "Reservations"),
                 "igw": ("describe_internet_gateways", "InternetGateways")}[kind]
    found = getattr(ec2(region), call)(Filters=deployment_filter(DEP, name))[key]
    return found[0]["Instances"][0] if kind == "instance" else found[0]


def zone_id():
    r53 = boto3.client("route53")
    zone = r53.list_hosted_zones_by_name(DNSName="cluster.local.")["HostedZones"][0]
    return zone["Id"].split("/")[-1]


def set_record(ip="10.0.110.10", ttl=60):
    boto3.client("route53").change_resource_record_sets(HostedZoneId=zone_id(), ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": "sample.cluster.local.", "Type": "A", "TTL": ttl,
                                                  "ResourceRecords": [{"Value": ip}]}}]})


def delete_peering_route():
    table = named(OSAKA, "rtb", "B2-rt")
    route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "10.0.0.0/16")
    ec2(OSAKA).delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="10.0.0.0/16")
    return lambda: ec2(OSAKA).create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="10.0.0.0/16",
                                           VpcPeeringConnectionId=route["VpcPeeringConnectionId"])


def add_route():
    table = named(TOKYO, "rtb", "A3-rt")
    ec2(TOKYO).create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="192.168.0.0/16",
                            GatewayId=named(TOKYO, "igw", "tokyo-igw")["InternetGatewayId"])
    return lambda: ec2(TOKYO).delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="192.168.0.0/16")


def move_subnet_to_main_table():
    table = named(OSAKA, "rtb", "B2-rt")
    subnet = named(OSAKA, "subnet", "B2")["SubnetId"]
    assoc = next(a for a in table["Associations"] if a.get("SubnetId") == subnet)
    ec2(OSAKA).disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
    return lambda: ec2(OSAKA).associate_route_table(RouteTableId=table["RouteTableId"], SubnetId=subnet)


def revoke_dns_rule():
    group = named(TOKYO, "sg", "InboundEndpoint")["GroupId"]
    permission = {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.2.10.0/24"}]}
    ec2(TOKYO).revoke_security_group_ingress(GroupId=group, IpPermissions=[permission])
    return lambda: ec2(TOKYO).authorize_security_group_ingress(GroupId=group, IpPermissions=[permission])


def orphaned_drill_entry():
    subnet = named(OSAKA, "subnet", "B3")["SubnetId"]
    acl = ec2(OSAKA).describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
        "NetworkAcls"][0]["NetworkAclId"]
    ec2(OSAKA).create_network_acl_entry(NetworkAclId=acl, RuleNumber=64, Protocol="17", RuleAction="deny",
                                        Egress=False, CidrBlock="10.2.10.0/24", PortRange={"From": 53, "To": 53})
    ec2(OSAKA).create_tags(Resources=[acl], Tags=[{"Key": "regionha:drill", "Value": "drill-9 cuts osaka-bind"}])

    def undo():
        ec2(OSAKA).delete_network_acl_entry(NetworkAclId=acl, RuleNumber=64, Egress=False)
        ec2(OSAKA).delete_tags(Resources=[acl], Tags=[{"Key": "regionha:drill"}])
    return undo


def disassociate_zone():
    vpc = named(OSAKA, "vpc", "osaka")["VpcId"]
    r53 = boto3.client("route53")
    r53.disassociate_vpc_from_hosted_zone(HostedZoneId=zone_id(), VPC={"VPCRegion": OSAKA, "VPCId": vpc})
    return lambda: r53.associate_vpc_with_hosted_zone(HostedZoneId=zone_id(), VPC={"VPCRegion": OSAKA, "VPCId": vpc})


def delete_endpoint_interface():
    subnet = named(TOKYO, "subnet", "A3")["SubnetId"]
    eni = ec2(TOKYO).describe_network_interfaces(
        Filters=[{"Name": "addresses.private-ip-address", "Values": ["10.0.111.101"]}])["NetworkInterfaces"][0]
    ec2(TOKYO).delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    return lambda: ec2(TOKYO).create_network_interface(SubnetId=subnet, PrivateIpAddress="10.0.111.101")


def stop_standby():
    iid = named(OSAKA, "instance", "Server-B")["InstanceId"]
    ec2(OSAKA).stop_instances(InstanceIds=[iid])
    return lambda: ec2(OSAKA).start_instances(InstanceIds=[iid])


def allow_imdsv1():
    iid = named(OSAKA, "instance", "osaka-bind")["InstanceId"]
    ec2(OSAKA).modify_instance_metadata_options(InstanceId=iid, HttpTokens="optional")
    return lambda: ec2(OSAKA).modify_instance_metadata_options(InstanceId=iid, HttpTokens="required")


def public_ip_on_node():
    iid = named(TOKYO, "instance", "Server-A")["InstanceId"]
    allocation = ec2(TOKYO).allocate_address(Domain="vpc")["AllocationId"]
    association = ec2(TOKYO).associate_address(AllocationId=allocation, InstanceId=iid)["AssociationId"]

    def undo():
        ec2(TOKYO).disassociate_address(AssociationId=association)
        ec2(TOKYO).release_address(AllocationId=allocation)
    return undo


def move_record():
    set_record(ip="10.1.110.10")
    return set_record


def drift_ttl():
    set_record(ttl=120)
    return set_record


def record_to_a_stranger():
    set_record(ip="10.0.110.99")
    return set_record


def record_made_a_cname():
    r53 = boto3.client("route53")
    current = {"Name": "sample.cluster.local.", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "10.0.110.10"}]}
    cname = {"Name": "sample.cluster.local.", "Type": "CNAME", "TTL": 60,
             "ResourceRecords": [{"Value": "elsewhere.cluster.local."}]}
    r53.change_resource_record_sets(HostedZoneId=zone_id(), ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": current}, {"Action": "CREATE", "ResourceRecordSet": cname}]})
    return lambda: r53.change_resource_record_sets(HostedZoneId=zone_id(), ChangeBatch={"Changes": [
        {"Action": "DELETE", "ResourceRecordSet": cname}, {"Action": "CREATE", "ResourceRecordSet": current}]})


def controller_switched_off(built):
    def inject():
        events = boto3.client("events", region_name=STACK_REGION)
        arn = boto3.client("lambda", region_name=STACK_REGION).get_function(
            FunctionName=built[0].physical_id("FailoverControllerFunction"))["Configuration"]["FunctionArn"]
        names = events.list_rule_names_by_target(TargetArn=arn)["RuleNames"]
        schedule = next(n for n in names if events.describe_rule(Name=n).get("ScheduleExpression"))
        events.disable_rule(Name=schedule)
        return lambda: events.enable_rule(Name=schedule)
    return inject


def fence_on_standby(built):
    def inject():
        ddb = boto3.client("dynamodb", region_name=STACK_REGION)
        key = {"pk": {"S": DEP}, "sk": {"S": FENCE_SK}}
        ddb.put_item(TableName=built[2], Item={**key, "generation": {"N": "1"}, "active": {"S": "Server-B"},
                                               "changed_at": {"N": "1"}})
        return lambda: ddb.delete_item(TableName=built[2], Key=key)
    return inject


DRIFTS = [
    ("peering route deleted", delete_peering_route, [("route-missing", "osaka/B2-rt 10.0.0.0/16")]),
    ("hand-added route", add_route, [("route-extra", "tokyo/A3-rt 192.168.0.0/16")]),
    ("subnet left to the main table", move_subnet_to_main_table, [("route-table-association", "osaka/B2")]),
    ("DNS rule revoked", revoke_dns_rule, [("security-group-rule-missing", "tokyo/InboundEndpoint")]),
    ("drill entry left behind", orphaned_drill_entry, [("nacl-deny", "osaka/{acl} rule 64")]),
    ("zone association lost", disassociate_zone, [("zone-association", "zone cluster.local.")]),
    ("endpoint address's interface gone", delete_endpoint_interface,
     [("resolver-endpoint-ip", "resolver-endpoint tokyo-resolver 10.0.111.101")]),
    ("standby node stopped", stop_standby, [("instance-state", "instance Server-B")]),
    ("IMDSv1 allowed", allow_imdsv1, [("instance-imdsv2", "instance osaka-bind")]),
    ("public IP on a node", public_ip_on_node, [("instance-public-ip", "instance Server-A")]),
    ("record moved behind the controller's back", move_record, [("record-value", "record sample.cluster.local.")]),
    ("record TTL drifted", drift_ttl, [("record-ttl", "record sample.cluster.local.")]),
    ("fence names the standby, record does not", "fence", [("record-value", "record sample.cluster.local.")]),
    ("record moved to no node", record_to_a_stranger, [("record-value", "record sample.cluster.local.")]),
    ("record made a CNAME", record_made_a_cname, [("record-type", "record sample.cluster.local.")]),
    ("controller's health check switched off", "controller", [("controller-disabled", "controller {controller}")]),
]


def test_a_clean_build_has_no_finding_and_the_audit_only_reads(built):
    calls = []

    def count(event_name, **_):
        calls.append(event_name.split(".", 2)[1:])

    session = boto3.DEFAULT_SESSION
    session.events.register("before-call.*.*", count)
    try:
        assert findings(built) == []
    finally:
        session.events.unregister("before-call.*.*", count)
    assert calls and [c for c in calls if not c[1].startswith(READ_PREFIXES)] == []
    # The function's role allows exactly what the audit calls (and its metrics), nothing more.
    service = {"route-53": "route53", "eventbridge": "events"}
    assert {f"{service.get(s, s)}:{op}" for s, op in calls} | {"cloudwatch:PutMetricData"} == function_actions()


def function_actions() -> set[str]:
    from inprocess import load_template

    policies = load_template(Path(__file__).resolve().parents[2] / "template.yaml")["Resources"][
        "AuditDeploymentFunction"]["Properties"]["Policies"]
    actions = set()
    for statement in (st for p in policies for st in p["Statement"]):
        actions |= set(statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    return actions


@pytest.mark.parametrize(("what", "inject", "expected"), DRIFTS, ids=[d[0] for d in DRIFTS])
def test_each_injected_drift_is_found_and_clears_when_undone(built, what, inject, expected):
    inject = {"fence": fence_on_standby, "controller": controller_switched_off}[inject](built) \
        if isinstance(inject, str) else inject
    assert findings(built) == []
    undo = inject()
    try:
        found = findings(built)
    finally:
        undo()

    got = [(f.kind, f.resource) for f in found]
    acl = next((f.resource.split("/")[1].split(" ")[0] for f in found if f.kind == "nacl-deny"), None)
    controller = built[0].physical_id("FailoverControllerFunction")
    assert got == [(k, r.format(acl=acl, controller=controller)) for k, r in expected], [str(f) for f in found]
    assert findings(built) == []


def test_a_deleted_peering_is_found_and_a_new_build_converges_it(built):
    stack = built[0]
    pcx = [p for p in ec2(OSAKA).describe_vpc_peering_connections()["VpcPeeringConnections"]
           if {"Key": "regionha:name", "Value": "tokyo-osaka"} in p.get("Tags", []) and p["Status"]["Code"] == "active"]
    ec2(OSAKA).delete_vpc_peering_connection(VpcPeeringConnectionId=pcx[0]["VpcPeeringConnectionId"])

    found = findings(built)

    assert ("peering-missing", "peering tokyo-osaka") in [(f.kind, f.resource) for f in found]
    build_reference(stack)
    assert findings(built) == []


def test_the_scheduled_function_publishes_a_metric_per_kind_and_the_alarm_watches_the_total(built, monkeypatch):
    stack = built[0]
    monkeypatch.setenv("REGIONHA_METRICS_SINK", "cloudwatch")
    undo = drift_ttl()
    try:
        result = boto3.client("lambda", region_name=STACK_REGION).invoke(
            FunctionName=stack.physical_id("AuditDeploymentFunction"),
            Payload=json.dumps({"detail-type": "Scheduled Event", "source": "aws.events"}))
    finally:
        undo()
    body = json.loads(result["Payload"].read())

    assert "FunctionError" not in result, body
    assert body["findings"] == [{"kind": "record-ttl", "resource": "record sample.cluster.local.",
                                 "reason": "TTL 120 s, expected 60 s"}]
    cw = boto3.client("cloudwatch", region_name=STACK_REGION)
    metrics = cw.list_metrics(Namespace="regionha", MetricName="AuditFindings")["Metrics"]
    kinds = {d["Value"] for m in metrics for d in m["Dimensions"] if d["Name"] == "Kind"}
    assert kinds == set(audit.KINDS)
    (alarm,) = cw.describe_alarms(AlarmNames=["regionha-audit-drift"])["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"]) == (
        "regionha", "AuditFindings", [{"Name": "Deployment", "Value": DEP}])
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1.0)
    total = cw.get_metric_statistics(Namespace="regionha", MetricName="AuditFindings",
                                     Dimensions=[{"Name": "Deployment", "Value": DEP}], StartTime=time.time() - 600,
                                     EndTime=time.time() + 600, Period=300, Statistics=["Maximum"])["Datapoints"]
    assert [p["Maximum"] for p in total] == [1.0]


# --- regionha audit ------------------------------------------------------------------------------------


def test_the_cli_prints_one_line_per_finding_and_exits_1(built, capsys):
    from regionha.cli import main

    table = built[2]
    controller = built[0].physical_id("FailoverControllerFunction")
    args = ["audit", "--region", STACK_REGION, "--table", table, "--deployment", DEP, "--controller", controller]
    assert main(args) == 0
    assert capsys.readouterr().out == ""

    undo = revoke_dns_rule()
    try:
        code = main(args)
    finally:
        undo()

    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == 1 and out[0].startswith("security-group-rule-missing tokyo/InboundEndpoint: sg-")
    assert out[0].endswith("lacks ingress udp/53<-10.2.10.0/24")


def test_the_cli_finds_table_and_deployment_in_the_stack(built, capsys):
    from regionha.cli import main

    cloudformation = boto3.client("cloudformation", region_name=STACK_REGION)
    cloudformation.create_stack(StackName="audit-test", TemplateBody=json.dumps({
        "Parameters": {"Deployment": {"Type": "String", "Default": DEP}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"StateTableName": {"Value": built[2]},
                    "FailoverControllerFunctionName": {"Value": built[0].physical_id("FailoverControllerFunction")}}}))

    assert main(["audit", "--region", STACK_REGION, "--stack-name", "audit-test", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deployment": DEP, "findings": []}
    # The stack's controller is checked like the scheduled audit checks it.
    undo = controller_switched_off(built)()
    try:
        code = main(["audit", "--region", STACK_REGION, "--stack-name", "audit-test"])
    finally:
        undo()
    lines = capsys.readouterr().out.splitlines()
    assert code == 1 and [line.split()[0] for line in lines] == ["controller-disabled"], lines
    assert main(["audit", "--region", STACK_REGION, "--stack-name", "no-such-stack"]) == 2
    assert "cannot read stack no-such-stack" in capsys.readouterr().err


def test_the_cli_reports_a_missing_controller_and_says_when_it_cannot_check_one(built, capsys):
    from regionha.cli import main

    args = ["audit", "--region", STACK_REGION, "--table", built[2], "--deployment", DEP]
    assert main([*args, "--controller", "regionha-no-such-controller"]) == 1
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["controller-missing"]
    # No stack to read its output from: the rest is audited, and the notice says the controller is not.
    assert main([*args, "--stack-name", "no-such-stack"]) == 0
    assert "the failover controller is not checked" in capsys.readouterr().err


def test_the_cli_audits_a_local_runtime_from_its_state_file(built, capsys, tmp_path, monkeypatch):
    """The state file's endpoint and deployment are used, the table is found by its template name.
    (The emulator itself is moto in-process here: the endpoint is recorded, the calls stay in the mock.)"""
    from regionha import aws
    from regionha.cli import audit as cli_audit
    from regionha.cli import main

    endpoints = []

    class InProcess(aws.Clients):
        def __init__(self, session=None, endpoint_url=None):
            endpoints.append(endpoint_url)
            super().__init__()

    monkeypatch.setattr(aws, "Clients", InProcess)
    state = tmp_path / "local-state.json"
    state.write_text(json.dumps({"endpoint_url": "http://127.0.0.1:45123", "region": STACK_REGION,
                                 "deployment": DEP, "state_machines": {}}))
    assert built[2].endswith(cli_audit.LOCAL_TABLE_SUFFIX)

    undo = drift_ttl()
    try:
        code = main(["audit", "--local-state", str(state)])
    finally:
        undo()

    assert code == 1 and endpoints[:1] == ["http://127.0.0.1:45123"] and set(endpoints) == {endpoints[0]}
    assert capsys.readouterr().out.splitlines() == [
        "record-ttl record sample.cluster.local.: TTL 120 s, expected 60 s"]
    # The controller is found by its template name, as the table is, and checked.
    assert built[0].physical_id("FailoverControllerFunction").endswith(cli_audit.LOCAL_CONTROLLER_SUFFIX)
    undo = controller_switched_off(built)()
    try:
        code = main(["audit", "--local-state", str(state)])
    finally:
        undo()
    assert code == 1 and [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "controller-disabled"]
    state.write_text(json.dumps({"endpoint_url": "http://10.0.0.5:4566", "region": STACK_REGION,
                                 "state_machines": {}}))
    assert main(["audit", "--local-state", str(state)]) == 2
    assert "is not a loopback address" in capsys.readouterr().err
