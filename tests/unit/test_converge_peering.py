"""Peerings and routes against moto: the built world equals seed-topology.md, re-runs write nothing."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from regionha.aws import Clients, deployment_filter, tag_value
from regionha.converge import Outcome
from regionha.converge.instances import converge_nat
from regionha.converge.network import converge_vpc
from regionha.converge.peering import accept_peering, peering_status, request_peering
from regionha.converge.routes import converge_routes
from regionha.errors import NotReadyError
from regionha.topology import Topology

RUN = "run-1"
REGION = {"tokyo": "ap-northeast-1", "osaka": "ap-northeast-3", "singapore": "ap-southeast-1"}

# seed-topology.md's route tables, plus the VPN stand-in peerings of reference.yaml and the
# on-prem site's table. Targets: "local", "igw", "nat" (the NAT instance's ENI), "pcx:<peering>".
SEED_ROUTES = {
    "tokyo": {
        "A1-rt": {"10.0.0.0/16": "local", "0.0.0.0/0": "igw", "10.1.0.0/16": "pcx:tokyo-osaka",
                  "10.2.0.0/16": "pcx:onprem-tokyo"},
        "A2-rt": {"10.0.0.0/16": "local", "0.0.0.0/0": "nat", "10.1.0.0/16": "pcx:tokyo-osaka",
                  "10.2.0.0/16": "pcx:onprem-tokyo"},
        "A3-rt": {"10.0.0.0/16": "local", "10.1.0.0/16": "pcx:tokyo-osaka", "10.2.0.0/16": "pcx:onprem-tokyo"},
    },
    "osaka": {
        "B1-rt": {"10.1.0.0/16": "local", "0.0.0.0/0": "igw", "10.0.0.0/16": "pcx:tokyo-osaka",
                  "10.2.0.0/16": "pcx:onprem-osaka"},
        "B2-rt": {"10.1.0.0/16": "local", "0.0.0.0/0": "nat", "10.0.0.0/16": "pcx:tokyo-osaka",
                  "10.2.0.0/16": "pcx:onprem-osaka"},
        "B3-rt": {"10.1.0.0/16": "local", "10.0.0.0/16": "pcx:tokyo-osaka", "10.2.0.0/16": "pcx:onprem-osaka",
                  "prefix-list:s3": "vpce"},
    },
    "singapore": {
        "C1-rt": {"10.2.0.0/16": "local", "0.0.0.0/0": "igw", "10.0.0.0/16": "pcx:onprem-tokyo",
                  "10.1.0.0/16": "pcx:onprem-osaka", "prefix-list:s3": "vpce"},
    },
}  # fmt: skip
SEED_SUBNETS = {"A1-rt": "A1", "A2-rt": "A2", "A3-rt": "A3", "B1-rt": "B1", "B2-rt": "B2", "B3-rt": "B3", "C1-rt": "C1"}


@pytest.fixture
def clients(moto_aws: None) -> Clients:
    return Clients()


def build(topology: Topology, clients: Clients, run_id: str = RUN) -> list[Outcome]:
    """The build's EC2 network steps in the state machine's order."""
    outcomes = [o for v in topology.vpcs for o in converge_vpc(topology, v.name, clients, run_id)]
    outcomes += [o for p in topology.peerings for o in request_peering(topology, p.name, clients, run_id)]
    outcomes += [o for p in topology.peerings for o in accept_peering(topology, p.name, clients)]
    outcomes += [o for v in topology.vpcs for o in converge_routes(topology, v.name, clients)]
    outcomes += [o for v in topology.vpcs for o in converge_nat(topology, v.name, clients, run_id)]
    return outcomes


def _ec2(vpc: str) -> Any:
    return boto3.client("ec2", region_name=REGION[vpc])


def _names(topology: Topology) -> dict[str, str]:
    """Resource id -> the name the seed's tables use for it ("igw", "nat", "pcx:<peering>")."""
    names = {}
    for vpc in REGION:
        ec2 = _ec2(vpc)
        for igw in ec2.describe_internet_gateways(Filters=deployment_filter(topology.deployment))["InternetGateways"]:
            names[igw["InternetGatewayId"]] = "igw"
        for pcx in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]:
            if tag_value(pcx, "regionha:deployment") == topology.deployment:
                names[pcx["VpcPeeringConnectionId"]] = f"pcx:{tag_value(pcx, 'regionha:name')}"
        for r in ec2.describe_instances(Filters=deployment_filter(topology.deployment))["Reservations"]:
            for i in r["Instances"]:
                if tag_value(i, "regionha:role") == "nat":
                    names[i["NetworkInterfaces"][0]["NetworkInterfaceId"]] = "nat"
    return names


def _world_routes(topology: Topology) -> dict[str, dict[str, dict[str, str]]]:
    names = _names(topology)
    world: dict[str, dict[str, dict[str, str]]] = {}
    for vpc in REGION:
        tables = _ec2(vpc).describe_route_tables(Filters=deployment_filter(topology.deployment))["RouteTables"]
        world[vpc] = {}
        for t in tables:
            rows = {}
            for r in t["Routes"]:
                target = r.get("GatewayId") or r.get("VpcPeeringConnectionId") or r.get("NetworkInterfaceId")
                if r.get("DestinationPrefixListId"):
                    # A gateway endpoint's route (the package installs' egress), by the endpoint's service.
                    (endpoint,) = _ec2(vpc).describe_vpc_endpoints(VpcEndpointIds=[target])["VpcEndpoints"]
                    rows[f"prefix-list:{endpoint['ServiceName'].rsplit('.', 1)[-1]}"] = "vpce"
                    continue
                rows[r["DestinationCidrBlock"]] = names.get(target, target)
            world[vpc][tag_value(t, "regionha:name")] = rows
    return world


def _peering(topology: Topology, name: str, region: str | None = None) -> dict[str, Any]:
    """A live peering by name, seen from ``region`` (default: its requester's)."""
    region = region or topology.region_of(topology.peering(name).requester)
    (pcx,) = [
        p
        for p in boto3.client("ec2", region_name=region).describe_vpc_peering_connections()["VpcPeeringConnections"]
        if tag_value(p, "regionha:name") == name and p["Status"]["Code"] not in ("deleted", "rejected", "failed")
    ]
    return pcx


def test_built_world_equals_the_seed_topology(topology: Topology, clients: Clients) -> None:
    build(topology, clients)

    assert _world_routes(topology) == SEED_ROUTES
    for vpc, tables in SEED_ROUTES.items():
        ec2 = _ec2(vpc)
        for table_name in tables:
            (table,) = ec2.describe_route_tables(Filters=deployment_filter(topology.deployment, table_name))[
                "RouteTables"
            ]
            (assoc,) = table["Associations"]
            (subnet,) = ec2.describe_subnets(SubnetIds=[assoc["SubnetId"]])["Subnets"]
            assert tag_value(subnet, "regionha:name") == SEED_SUBNETS[table_name]

    # Requested from Osaka (vpc-2222bbbb), accepted in Tokyo (vpc-1111aaaa).
    pcx = _peering(topology, "tokyo-osaka")
    assert pcx["Status"]["Code"] == "active"
    assert (pcx["RequesterVpcInfo"]["CidrBlock"], pcx["RequesterVpcInfo"]["Region"]) == ("10.1.0.0/16", REGION["osaka"])
    assert (pcx["AccepterVpcInfo"]["CidrBlock"], pcx["AccepterVpcInfo"]["Region"]) == ("10.0.0.0/16", REGION["tokyo"])
    assert {p.name: peering_status(topology, p.name, clients) for p in topology.peerings} == {
        "tokyo-osaka": "active",
        "onprem-tokyo": "active",
        "onprem-osaka": "active",
    }

    # InboundEndpoint (sg-0000aaaa / sg-0000bbbb): DNS over UDP and TCP from 10.2.10.0/24 only.
    for vpc in ("tokyo", "osaka"):
        ec2 = _ec2(vpc)
        (sg,) = ec2.describe_security_groups(Filters=deployment_filter(topology.deployment, "InboundEndpoint"))[
            "SecurityGroups"
        ]
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [sg["GroupId"]]}])
        ingress = {
            (r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIpv4"])
            for r in rules["SecurityGroupRules"]
            if not r["IsEgress"]
        }
        assert ingress == {("udp", 53, 53, "10.2.10.0/24"), ("tcp", 53, 53, "10.2.10.0/24")}


def test_second_build_makes_no_mutating_call(topology: Topology, clients: Clients, call_counter: Any) -> None:
    build(topology, clients)
    call_counter.calls.clear()

    outcomes = build(topology, clients, "run-2")

    assert call_counter.mutating == []
    assert {o.action for o in outcomes} == {"unchanged"}


def test_drifted_routes_are_fixed(topology: Topology, clients: Clients) -> None:
    build(topology, clients)
    ec2 = _ec2("tokyo")
    tables = {
        tag_value(t, "regionha:name"): t["RouteTableId"]
        for t in ec2.describe_route_tables(Filters=deployment_filter(topology.deployment))["RouteTables"]
    }
    pcx_id = _peering(topology, "onprem-tokyo")["VpcPeeringConnectionId"]
    (igw,) = ec2.describe_internet_gateways(Filters=deployment_filter(topology.deployment))["InternetGateways"]
    # GIVEN a deleted route, two routes pointed elsewhere (one of them the NAT route) and a stray route
    ec2.delete_route(RouteTableId=tables["A1-rt"], DestinationCidrBlock="10.1.0.0/16")
    ec2.replace_route(RouteTableId=tables["A2-rt"], DestinationCidrBlock="10.1.0.0/16", VpcPeeringConnectionId=pcx_id)
    ec2.replace_route(
        RouteTableId=tables["A2-rt"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw["InternetGatewayId"]
    )
    ec2.create_route(RouteTableId=tables["A3-rt"], DestinationCidrBlock="192.168.0.0/16", VpcPeeringConnectionId=pcx_id)
    assert _world_routes(topology) != SEED_ROUTES

    outcomes = converge_routes(topology, "tokyo", clients)

    # converge_routes fixes its own routes and leaves the "nat" ones to converge_nat, drifted or not ...
    assert {(o.kind, o.name, o.action) for o in outcomes if o.action != "unchanged"} == {
        ("route_table_routes", "A1-rt", "updated"),
        ("route", "A1-rt:10.1.0.0/16", "created"),
        ("route_table_routes", "A2-rt", "updated"),
        ("route", "A2-rt:10.1.0.0/16", "updated"),
        ("route_table_routes", "A3-rt", "updated"),
        ("route", "A3-rt:192.168.0.0/16", "deleted"),
    }
    assert _world_routes(topology)["tokyo"]["A2-rt"]["0.0.0.0/0"] == "igw"

    outcomes = converge_nat(topology, "tokyo", clients, RUN)

    # ... which owns them.
    assert {(o.kind, o.name, o.action) for o in outcomes if o.action != "unchanged"} == {
        ("route_table_routes", "A2-rt", "updated"),
        ("route", "A2-rt:0.0.0.0/0", "updated"),
    }
    assert _world_routes(topology) == SEED_ROUTES


def test_peering_steps_in_order_and_out_of_order(topology: Topology, clients: Clients) -> None:
    for vpc in ("tokyo", "osaka"):
        converge_vpc(topology, vpc, clients, RUN)
    assert peering_status(topology, "tokyo-osaka", clients) == "missing"
    with pytest.raises(NotReadyError, match="not requested yet"):
        accept_peering(topology, "tokyo-osaka", clients)

    (requested,) = request_peering(topology, "tokyo-osaka", clients, RUN)
    assert requested.action == "created"
    assert requested.region == "ap-northeast-3"
    assert peering_status(topology, "tokyo-osaka", clients) == "pending-acceptance"
    with pytest.raises(NotReadyError, match="active"):
        converge_routes(topology, "tokyo", clients)
    # A retried request finds the first one instead of asking twice.
    assert [o.action for o in request_peering(topology, "tokyo-osaka", clients, RUN)] == ["unchanged"]

    (accepted,) = accept_peering(topology, "tokyo-osaka", clients)
    assert (accepted.action, accepted.region, accepted.id) == ("created", "ap-northeast-1", requested.id)
    assert peering_status(topology, "tokyo-osaka", clients) == "active"
    assert [o.action for o in accept_peering(topology, "tokyo-osaka", clients)] == ["unchanged"]
    # The accepter's side carries the tags too, so Tokyo alone tells whose peering it is.
    assert tag_value(_peering(topology, "tokyo-osaka", "ap-northeast-1"), "regionha:deployment") == "regionha-ref"


def test_request_before_the_vpcs_exist_is_not_ready(topology: Topology, clients: Clients) -> None:
    converge_vpc(topology, "osaka", clients, RUN)

    with pytest.raises(NotReadyError, match="vpc tokyo"):
        request_peering(topology, "tokyo-osaka", clients, RUN)
