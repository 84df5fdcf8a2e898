"""converge_vpc against moto: the VPC as the topology says, no writes on a re-run, drift fixed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from regionha.aws import Clients, deployment_filter, tag_value
from regionha.converge import Outcome
from regionha.converge.network import converge_vpc
from regionha.errors import ConfigurationError
from regionha.topology import Topology, parse_topology

RUN = "run-1"
TOKYO = "ap-northeast-1"
DNS_FROM_ONPREM = {("udp", 53, 53, "10.2.10.0/24"), ("tcp", 53, 53, "10.2.10.0/24")}


@pytest.fixture
def clients(moto_aws: None) -> Clients:
    return Clients()


def _by(outcomes: list[Outcome], kind: str, name: str) -> Outcome:
    (found,) = [o for o in outcomes if o.kind == kind and o.name == name]
    return found


def _tagged(ec2: Any, operation: str, key: str, topology: Topology, **kwargs: Any) -> list[dict[str, Any]]:
    return getattr(ec2, operation)(Filters=deployment_filter(topology.deployment), **kwargs)[key]


def _ingress(ec2: Any, group_id: str) -> set[tuple[str, int, int, str]]:
    rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return {
        (r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIpv4"])
        for r in rules["SecurityGroupRules"]
        if not r["IsEgress"]
    }


def _group_id(ec2: Any, topology: Topology, name: str) -> str:
    (sg,) = ec2.describe_security_groups(Filters=deployment_filter(topology.deployment, name))["SecurityGroups"]
    return sg["GroupId"]


def _fail_once(operation: str, after: int = 0) -> Callable[..., None]:
    """A before-call hook that lets ``after`` calls of ``operation`` through, then fails one."""
    seen = {"calls": 0, "failed": False}

    def hook(**kwargs: Any) -> None:
        seen["calls"] += 1
        if seen["calls"] > after and not seen["failed"]:
            seen["failed"] = True
            raise RuntimeError(f"injected failure in {operation}")

    return hook


def test_vpc_is_built_as_the_topology_says(topology: Topology, clients: Clients) -> None:
    outcomes = converge_vpc(topology, "tokyo", clients, RUN)
    ec2 = boto3.client("ec2", region_name=TOKYO)

    (vpc,) = _tagged(ec2, "describe_vpcs", "Vpcs", topology)
    assert vpc["CidrBlock"] == "10.0.0.0/16"
    assert tag_value(vpc, "regionha:name") == "tokyo"
    for attribute, key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute=attribute)[key]["Value"] is True

    subnets = {tag_value(s, "regionha:name"): s for s in _tagged(ec2, "describe_subnets", "Subnets", topology)}
    assert {n: (s["CidrBlock"], s["AvailabilityZone"], s["MapPublicIpOnLaunch"]) for n, s in subnets.items()} == {
        "A1": ("10.0.10.0/24", "ap-northeast-1a", True),
        "A2": ("10.0.110.0/24", "ap-northeast-1a", False),
        "A3": ("10.0.111.0/24", "ap-northeast-1a", False),
    }

    (igw,) = _tagged(ec2, "describe_internet_gateways", "InternetGateways", topology)
    assert [a["VpcId"] for a in igw["Attachments"]] == [vpc["VpcId"]]

    tables = _tagged(ec2, "describe_route_tables", "RouteTables", topology)
    associations = {
        tag_value(t, "regionha:name"): sorted(a["SubnetId"] for a in t["Associations"] if not a.get("Main"))
        for t in tables
    }
    assert associations == {f"{n}-rt": [subnets[n]["SubnetId"]] for n in ("A1", "A2", "A3")}
    # Dedicated tables: none of ours is the VPC's main table, and no routes but local yet.
    assert not any(a.get("Main") for t in tables for a in t["Associations"])
    assert all({r["GatewayId"] for r in t["Routes"]} == {"local"} for t in tables)

    assert _ingress(ec2, _group_id(ec2, topology, "InboundEndpoint")) == DNS_FROM_ONPREM
    assert _ingress(ec2, _group_id(ec2, topology, "ClusterNode")) == {
        ("tcp", 80, 80, "10.2.10.0/24"),
        ("tcp", 80, 80, "10.1.0.0/16"),
    }
    assert {o.action for o in outcomes} == {"created"}
    assert _by(outcomes, "vpc", "tokyo").id == vpc["VpcId"]


def test_second_run_makes_no_mutating_call(topology: Topology, clients: Clients, call_counter: Any) -> None:
    for vpc in topology.vpcs:
        converge_vpc(topology, vpc.name, clients, RUN)
    call_counter.calls.clear()

    outcomes = [o for vpc in topology.vpcs for o in converge_vpc(topology, vpc.name, clients, "run-2")]

    assert call_counter.mutating == []
    assert call_counter.calls, "the re-run must still look"
    assert {o.action for o in outcomes} == {"unchanged"}


def test_stray_security_group_rule_is_revoked(topology: Topology, clients: Clients) -> None:
    converge_vpc(topology, "tokyo", clients, RUN)
    ec2 = boto3.client("ec2", region_name=TOKYO)
    group_id = _group_id(ec2, topology, "InboundEndpoint")
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )

    outcomes = converge_vpc(topology, "tokyo", clients, RUN)

    assert _by(outcomes, "security_group", "InboundEndpoint").action == "updated"
    assert [o.action for o in outcomes if o.kind == "security_group_rule" and o.action != "unchanged"] == ["deleted"]
    assert _ingress(ec2, group_id) == DNS_FROM_ONPREM


def test_missing_security_group_rule_is_added_back(topology: Topology, clients: Clients) -> None:
    converge_vpc(topology, "tokyo", clients, RUN)
    ec2 = boto3.client("ec2", region_name=TOKYO)
    group_id = _group_id(ec2, topology, "InboundEndpoint")
    ec2.revoke_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.2.10.0/24"}]}],
    )

    outcomes = converge_vpc(topology, "tokyo", clients, RUN)

    assert _by(outcomes, "security_group", "InboundEndpoint").action == "updated"
    assert _by(outcomes, "security_group_rule", "InboundEndpoint:udp/53<-10.2.10.0/24").action == "created"
    assert _ingress(ec2, group_id) == DNS_FROM_ONPREM


def test_drifted_subnet_association_and_vpc_attribute_are_fixed(topology: Topology, clients: Clients) -> None:
    outcomes = converge_vpc(topology, "tokyo", clients, RUN)
    ec2 = boto3.client("ec2", region_name=TOKYO)
    vpc_id = _by(outcomes, "vpc", "tokyo").id
    a2_id = _by(outcomes, "subnet", "A2").id
    a1_rt = _by(outcomes, "route_table", "A1-rt").id
    (assoc,) = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [a2_id]}])["RouteTables"][
        0
    ]["Associations"]
    ec2.replace_route_table_association(AssociationId=assoc["RouteTableAssociationId"], RouteTableId=a1_rt)
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": False})
    ec2.modify_subnet_attribute(SubnetId=a2_id, MapPublicIpOnLaunch={"Value": True})

    outcomes = converge_vpc(topology, "tokyo", clients, RUN)

    assert _by(outcomes, "route_table_association", "A2-rt:A2").action == "updated"
    assert _by(outcomes, "vpc", "tokyo").action == "updated"
    assert _by(outcomes, "subnet", "A2").action == "updated"
    (table,) = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [a2_id]}])["RouteTables"]
    assert tag_value(table, "regionha:name") == "A2-rt"
    assert ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]
    assert ec2.describe_subnets(SubnetIds=[a2_id])["Subnets"][0]["MapPublicIpOnLaunch"] is False


def test_interrupted_build_converges_without_duplicates(topology: Topology, clients: Clients) -> None:
    # GIVEN a run that dies after its first route table (a Lambda timeout, a throttle, ...)
    events = clients.ec2(TOKYO).meta.events
    hook = _fail_once("CreateRouteTable", after=1)
    events.register("before-call.ec2.CreateRouteTable", hook)
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            converge_vpc(topology, "tokyo", clients, RUN)
    finally:
        events.unregister("before-call.ec2.CreateRouteTable", hook)

    # WHEN the step runs again
    outcomes = converge_vpc(topology, "tokyo", clients, RUN)

    # THEN what the first run made is found, the rest is made, and nothing exists twice
    ec2 = boto3.client("ec2", region_name=TOKYO)
    assert len(_tagged(ec2, "describe_vpcs", "Vpcs", topology)) == 1
    assert len(_tagged(ec2, "describe_subnets", "Subnets", topology)) == 3
    assert len(_tagged(ec2, "describe_internet_gateways", "InternetGateways", topology)) == 1
    assert sorted(
        tag_value(t, "regionha:name") for t in _tagged(ec2, "describe_route_tables", "RouteTables", topology)
    ) == [
        "A1-rt",
        "A2-rt",
        "A3-rt",
    ]
    assert len(_tagged(ec2, "describe_security_groups", "SecurityGroups", topology)) == 2
    assert _by(outcomes, "vpc", "tokyo").action == "unchanged"
    assert _by(outcomes, "route_table", "A1-rt").action == "unchanged"
    assert _by(outcomes, "route_table", "A2-rt").action == "created"


def test_a_vpc_cidr_that_changed_is_a_configuration_error(topology: Topology, clients: Clients) -> None:
    converge_vpc(topology, "singapore", clients, RUN)
    # The same deployment with the on-prem site moved to 10.3.0.0/16, rules and routes included.
    changed = parse_topology(json.loads(json.dumps(topology.to_json()).replace('"10.2.', '"10.3.')))

    with pytest.raises(ConfigurationError, match="primary CIDR cannot change"):
        converge_vpc(changed, "singapore", clients, RUN)
