"""The build and teardown state machines, executed by moto's ASL interpreter calling our real handlers.

GIVEN template.yaml provisioned into moto in-process (functions, state machines, table),
WHEN the build state machine runs on the reference topology,
THEN the world equals seed-topology.md; a second build writes nothing; teardown removes everything
the build tagged, also after a build that was interrupted midway.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inprocess import handlers_in_process, run_execution  # noqa: E402

TOKYO, OSAKA, SINGAPORE = "ap-northeast-1", "ap-northeast-3", "ap-southeast-1"
REGIONS = (TOKYO, OSAKA, SINGAPORE)
DEPLOYMENT = "regionha-ref"
ORCHESTRATION = {"lambda", "sfn"}  # the interpreter's own calls, not changes to the deployment


@pytest.fixture
def stack(moto_aws):
    with handlers_in_process() as (stack, invocations):
        yield stack


def topology_input(**waits) -> dict:
    from regionha.topology import load_topology

    topology = load_topology()
    topology = topology.model_copy(update={"waits": topology.waits.model_copy(update={"poll_seconds": 0, **waits})})
    return {"topology": topology.to_json()}


def run(stack, logical_id: str, payload: dict, name: str) -> dict:
    return run_execution(stack, logical_id, payload, name)


def tagged(region: str) -> dict[str, list]:
    """Everything in a region that carries this deployment's tag (and is not already gone)."""
    ec2 = boto3.client("ec2", region_name=region)
    f = [{"Name": "tag:regionha:deployment", "Values": [DEPLOYMENT]}]
    instances = [
        i
        for r in ec2.describe_instances(Filters=f)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    peerings = [
        p
        for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
        if p["Status"]["Code"] not in ("deleted", "rejected")
        and {"Key": "regionha:deployment", "Value": DEPLOYMENT} in p.get("Tags", [])
    ]
    endpoints = boto3.client("route53resolver", region_name=region).list_resolver_endpoints()["ResolverEndpoints"]
    return {
        "vpcs": ec2.describe_vpcs(Filters=f)["Vpcs"],
        "subnets": ec2.describe_subnets(Filters=f)["Subnets"],
        "security_groups": ec2.describe_security_groups(Filters=f)["SecurityGroups"],
        "route_tables": ec2.describe_route_tables(Filters=f)["RouteTables"],
        "internet_gateways": ec2.describe_internet_gateways(Filters=f)["InternetGateways"],
        "instances": instances,
        "peerings": peerings,
        "resolver_endpoints": endpoints,
    }


def by_name(resources: list[dict]) -> dict[str, dict]:
    return {
        next(t["Value"] for t in r["Tags"] if t["Key"] == "regionha:name"): r
        for r in resources
        if any(t["Key"] == "regionha:name" for t in r.get("Tags", []))
    }


def test_build_converges_the_reference_deployment(stack):
    desc = run(stack, "BuildStateMachine", topology_input(), "build-1")

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    tokyo, osaka, singapore = (tagged(r) for r in REGIONS)
    vpcs = {r: by_name(tagged(r)["vpcs"]) for r in REGIONS}
    assert {n: v["CidrBlock"] for n, v in vpcs[TOKYO].items()} == {"tokyo": "10.0.0.0/16"}
    assert {n: v["CidrBlock"] for n, v in vpcs[OSAKA].items()} == {"osaka": "10.1.0.0/16"}
    assert {n: v["CidrBlock"] for n, v in vpcs[SINGAPORE].items()} == {"singapore": "10.2.0.0/16"}
    assert {n: s["CidrBlock"] for n, s in by_name(tokyo["subnets"]).items()} == {
        "A1": "10.0.10.0/24",
        "A2": "10.0.110.0/24",
        "A3": "10.0.111.0/24",
    }
    assert {n: s["CidrBlock"] for n, s in by_name(osaka["subnets"]).items()} == {
        "B1": "10.1.10.0/24",
        "B2": "10.1.110.0/24",
        "B3": "10.1.111.0/24",
    }

    # Peering tokyo-osaka: requested from Osaka, accepted in Tokyo, active.
    pcx = by_name(osaka["peerings"])["tokyo-osaka"]
    assert pcx["RequesterVpcInfo"]["VpcId"] == vpcs[OSAKA]["osaka"]["VpcId"]
    assert pcx["AccepterVpcInfo"]["VpcId"] == vpcs[TOKYO]["tokyo"]["VpcId"]
    assert pcx["AccepterVpcInfo"]["Region"] == TOKYO
    assert pcx["Status"]["Code"] == "active"

    # Every route-table row of the seed: 0/0 → IGW or NAT ENI or none, peer CIDR → pcx.
    nat_eni = {
        n: i["NetworkInterfaces"][0]["NetworkInterfaceId"]
        for region in (TOKYO, OSAKA)
        for n, i in by_name(tagged(region)["instances"]).items()
        if n.startswith("nat-")
    }
    rows = {}
    for region in (TOKYO, OSAKA):
        for name, table in by_name(tagged(region)["route_tables"]).items():
            for route in table["Routes"]:
                target = (
                    route.get("GatewayId") or route.get("NetworkInterfaceId") or route.get("VpcPeeringConnectionId")
                )
                rows[(name, route.get("DestinationCidrBlock") or route["DestinationPrefixListId"])] = target
    igw = {r: tagged(r)["internet_gateways"][0]["InternetGatewayId"] for r in (TOKYO, OSAKA)}
    pcx_id = pcx["VpcPeeringConnectionId"]
    expected = {
        ("A1-rt", "0.0.0.0/0"): igw[TOKYO],
        ("A1-rt", "10.0.0.0/16"): "local",
        ("A1-rt", "10.1.0.0/16"): pcx_id,
        ("A2-rt", "0.0.0.0/0"): nat_eni["nat-tokyo"],
        ("A2-rt", "10.0.0.0/16"): "local",
        ("A2-rt", "10.1.0.0/16"): pcx_id,
        ("A3-rt", "10.0.0.0/16"): "local",
        ("A3-rt", "10.1.0.0/16"): pcx_id,
        ("B1-rt", "0.0.0.0/0"): igw[OSAKA],
        ("B1-rt", "10.1.0.0/16"): "local",
        ("B1-rt", "10.0.0.0/16"): pcx_id,
        ("B2-rt", "0.0.0.0/0"): nat_eni["nat-osaka"],
        ("B2-rt", "10.1.0.0/16"): "local",
        ("B2-rt", "10.0.0.0/16"): pcx_id,
        ("B3-rt", "10.1.0.0/16"): "local",
        ("B3-rt", "10.0.0.0/16"): pcx_id,
    }
    assert {k: rows.get(k) for k in expected} == expected
    assert ("A3-rt", "0.0.0.0/0") not in rows and ("B3-rt", "0.0.0.0/0") not in rows
    # B3's only way out is the S3 gateway endpoint (the Osaka BIND server's dnf install): a prefix-list route.
    (endpoint,) = boto3.client("ec2", region_name=OSAKA).describe_vpc_endpoints()["VpcEndpoints"]
    assert endpoint["ServiceName"] == f"com.amazonaws.{OSAKA}.s3"
    assert [k[0] for k, v in rows.items() if v == endpoint["VpcEndpointId"]] == ["B3-rt"]

    # InboundEndpoint SGs: DNS UDP+TCP 53 from 10.2.10.0/24 only.
    for region in (TOKYO, OSAKA):
        sg = by_name(tagged(region)["security_groups"])["InboundEndpoint"]
        rules = sorted(
            (p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"])
            for p in sg["IpPermissions"]
            for r in p["IpRanges"]
        )
        assert rules == [("tcp", 53, 53, "10.2.10.0/24"), ("udp", 53, 53, "10.2.10.0/24")]

    # Private zone associated with exactly the Tokyo and Osaka VPCs; the record names the primary.
    r53 = boto3.client("route53")
    (zone,) = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == "cluster.local."]
    assert zone["Config"]["PrivateZone"]
    associated = {(v["VPCRegion"], v["VPCId"]) for v in r53.get_hosted_zone(Id=zone["Id"])["VPCs"]}
    assert associated == {(TOKYO, vpcs[TOKYO]["tokyo"]["VpcId"]), (OSAKA, vpcs[OSAKA]["osaka"]["VpcId"])}
    (record,) = [
        r for r in r53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"] if r["Type"] == "A"
    ]
    assert (record["Name"], record["TTL"], record["ResourceRecords"]) == (
        "sample.cluster.local.",
        60,
        [{"Value": "10.0.110.10"}],
    )

    # The Resolver inbound endpoint: two IPs in A3 with the InboundEndpoint SG.
    resolver = boto3.client("route53resolver", region_name=TOKYO)
    (endpoint,) = resolver.list_resolver_endpoints()["ResolverEndpoints"]
    ips = resolver.list_resolver_endpoint_ip_addresses(ResolverEndpointId=endpoint["Id"])["IpAddresses"]
    a3 = by_name(tokyo["subnets"])["A3"]["SubnetId"]
    assert sorted((i["Ip"], i["SubnetId"]) for i in ips) == [("10.0.111.100", a3), ("10.0.111.101", a3)]
    assert endpoint["SecurityGroupIds"] == [by_name(tokyo["security_groups"])["InboundEndpoint"]["GroupId"]]
    assert (endpoint["Name"], endpoint["Direction"], endpoint["Status"]) == ("InboundTest", "INBOUND", "OPERATIONAL")

    # Nodes and BIND servers: private IPs, no public IP, IMDSv2 required.
    instances = {n: i for r in REGIONS for n, i in by_name(tagged(r)["instances"]).items()}
    for name, ip in {
        "Server-A": "10.0.110.10",
        "Server-B": "10.1.110.10",
        "osaka-bind": "10.1.111.10",
        "onprem-dns": "10.2.10.10",
    }.items():
        assert instances[name]["PrivateIpAddress"] == ip
        assert not instances[name].get("PublicIpAddress"), name
        assert instances[name]["MetadataOptions"]["HttpTokens"] == "required"
    assert singapore["vpcs"]


def test_a_second_build_with_no_change_makes_no_mutating_call(stack, call_counter):
    assert run(stack, "BuildStateMachine", topology_input(), "build-1")["status"] == "SUCCEEDED"
    call_counter.calls.clear()

    desc = run(stack, "BuildStateMachine", topology_input(), "build-2")

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    assert [c for c in call_counter.mutating if c[0] not in ORCHESTRATION] == []
    assert any(c[0] == "ec2" for c in call_counter.calls)  # it did look


def test_teardown_removes_everything_the_build_tagged(stack):
    assert run(stack, "BuildStateMachine", topology_input(), "build-1")["status"] == "SUCCEEDED"

    desc = run(stack, "TeardownStateMachine", topology_input(), "teardown-1")

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    for region in REGIONS:
        assert {k: v for k, v in tagged(region).items() if v} == {}, region
    assert [
        z for z in boto3.client("route53").list_hosted_zones()["HostedZones"] if z["Name"] == "cluster.local."
    ] == []


def test_teardown_refuses_before_deleting_anything_while_the_canary_runs_in_the_client_vpc(stack):
    build = run(stack, "BuildStateMachine", topology_input(), "build-1")
    assert build["status"] == "SUCCEEDED"
    placement = json.loads(build["output"])["canary"]["placement"]
    assert placement["status"] == "pending"  # the build reports; only CloudFormation places
    # What `sam deploy --parameter-overrides ClientSubnetId=… CanarySecurityGroupId=…` does:
    params = placement["parameters"]
    boto3.client("lambda", region_name=SINGAPORE).update_function_configuration(
        FunctionName=stack.functions["RunCanaryFunction"].name,
        VpcConfig={"SubnetIds": [params["ClientSubnetId"]], "SecurityGroupIds": [params["CanarySecurityGroupId"]]},
    )
    before = {r: {k: len(v) for k, v in tagged(r).items()} for r in REGIONS}

    desc = run(stack, "TeardownStateMachine", topology_input(), "teardown-1")

    assert desc["status"] == "FAILED"
    assert "still runs in the client VPC" in desc["cause"]
    assert "ClientSubnetId= CanarySecurityGroupId=" in desc["cause"]
    assert {r: {k: len(v) for k, v in tagged(r).items()} for r in REGIONS} == before


def test_an_interrupted_build_is_rerun_and_converges_without_duplicates(stack, monkeypatch):
    from regionha.converge import routes
    from regionha.errors import ConfigurationError

    real = routes.converge_routes
    failures = {"left": 1}

    def fail_once(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise ConfigurationError("injected: the routes step fails once")
        return real(*args, **kwargs)

    # The handler imported the function at load time: patch it there.
    for module in list(sys.modules.values()):
        if getattr(module, "converge_routes", None) is real and module is not routes:
            monkeypatch.setattr(module, "converge_routes", fail_once)
    monkeypatch.setattr(routes, "converge_routes", fail_once)

    first = run(stack, "BuildStateMachine", topology_input(), "build-1")
    assert first["status"] == "FAILED" and first.get("error") == "BuildFailed"
    half = {r: tagged(r) for r in REGIONS}
    assert all(half[r]["vpcs"] for r in REGIONS) and not any(half[r]["instances"] for r in REGIONS)

    second = run(stack, "BuildStateMachine", topology_input(), "build-2")

    assert second["status"] == "SUCCEEDED", second.get("cause")
    counts = {r: {k: len(v) for k, v in tagged(r).items()} for r in REGIONS}
    assert counts[TOKYO]["vpcs"] == counts[OSAKA]["vpcs"] == counts[SINGAPORE]["vpcs"] == 1
    assert counts[TOKYO]["subnets"] == 3 and counts[OSAKA]["subnets"] == 3
    assert counts[TOKYO]["instances"] == 2 and counts[OSAKA]["instances"] == 3  # nat+node / nat+bind+node
    assert counts[SINGAPORE]["instances"] == 1
    peering_ids = {p["VpcPeeringConnectionId"] for r in REGIONS for p in tagged(r)["peerings"]}
    assert len(peering_ids) == 3  # each is seen from both of its regions
    assert counts[TOKYO]["resolver_endpoints"] == 1


def test_teardown_of_a_half_built_deployment(stack, monkeypatch):
    from regionha.converge import dns

    def refuse(*args, **kwargs):
        from regionha.errors import ConfigurationError

        raise ConfigurationError("injected: the zone step fails")

    for module in list(sys.modules.values()):
        if getattr(module, "converge_private_zone", None) is dns.converge_private_zone:
            monkeypatch.setattr(module, "converge_private_zone", refuse)
    assert run(stack, "BuildStateMachine", topology_input(), "build-1")["status"] == "FAILED"

    desc = run(stack, "TeardownStateMachine", topology_input(), "teardown-1")

    assert desc["status"] == "SUCCEEDED", desc.get("cause")
    for region in REGIONS:
        assert {k: v for k, v in tagged(region).items() if v} == {}, region


def test_a_bad_topology_fails_at_validation_before_any_aws_call(stack, call_counter):
    payload = topology_input()
    payload["topology"]["dns"]["record"]["ttl"] = -1

    desc = run(stack, "BuildStateMachine", payload, "build-bad")

    assert desc["status"] == "FAILED"
    touched = {c[0] for c in call_counter.calls} - ORCHESTRATION
    assert touched == set()
