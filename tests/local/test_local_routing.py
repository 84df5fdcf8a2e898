"""The twin's VPC router over a hand-made snapshot: longest prefix match, targets, both directions."""

from __future__ import annotations

import ipaddress

import pytest

from regionha.local.host.routing import OPEN, Routing, longest_prefix_match

A = ipaddress.IPv4Address


def r(cidr: str, **target) -> dict:
    return {"DestinationCidrBlock": cidr, "State": "active", **target}


@pytest.mark.parametrize(
    ("dst", "want"),
    [
        ("10.0.1.5", "local"),
        ("10.1.2.3", "pcx-peer"),
        ("10.1.9.9", "pcx-narrow"),  # /24 beats /16
        ("8.8.8.8", "igw-1"),
        ("192.168.0.1", "igw-1"),
    ],
)
def test_longest_prefix_match(dst: str, want: str) -> None:
    routes = [
        r("0.0.0.0/0", GatewayId="igw-1"),
        r("10.0.0.0/16", GatewayId="local"),
        r("10.1.0.0/16", VpcPeeringConnectionId="pcx-peer"),
        r("10.1.9.0/24", VpcPeeringConnectionId="pcx-narrow"),
    ]
    chosen = longest_prefix_match(routes, A(dst))
    assert chosen is not None
    assert want in chosen.values()


def test_no_matching_route_is_none() -> None:
    assert longest_prefix_match([r("10.0.0.0/16", GatewayId="local")], A("10.9.0.1")) is None


def snapshot(*, nat_sdc: bool = False, nat_state: str = "running", public: bool = False,
             pcx: str = "active", app_routes: list | None = None) -> Routing:
    snap = Routing()
    snap.vpcs = {"vpc-a": {"cidr": "10.0.0.0/16", "region": "r1"}, "vpc-b": {"cidr": "10.1.0.0/16", "region": "r1"}}
    snap.subnets = [
        {"SubnetId": "sub-pub", "VpcId": "vpc-a", "CidrBlock": "10.0.1.0/24", "Region": "r1"},
        {"SubnetId": "sub-app", "VpcId": "vpc-a", "CidrBlock": "10.0.2.0/24", "Region": "r1"},
        {"SubnetId": "sub-b", "VpcId": "vpc-b", "CidrBlock": "10.1.1.0/24", "Region": "r1"},
    ]
    snap.tables = [
        {"RouteTableId": "rt-pub", "VpcId": "vpc-a", "Region": "r1",
         "Associations": [{"SubnetId": "sub-pub"}],
         "Routes": [r("10.0.0.0/16", GatewayId="local"), r("0.0.0.0/0", GatewayId="igw-1")]},
        {"RouteTableId": "rt-app", "VpcId": "vpc-a", "Region": "r1",
         "Associations": [{"SubnetId": "sub-app"}],
         "Routes": app_routes if app_routes is not None else [
             r("10.0.0.0/16", GatewayId="local"), r("0.0.0.0/0", NetworkInterfaceId="eni-nat"),
             r("10.1.0.0/16", VpcPeeringConnectionId="pcx-1")]},
        {"RouteTableId": "rt-main-b", "VpcId": "vpc-b", "Region": "r1",
         "Associations": [{"Main": True}],  # sub-b has no explicit association: the main table applies
         "Routes": [r("10.1.0.0/16", GatewayId="local"), r("10.0.2.0/24", VpcPeeringConnectionId="pcx-1")]},
    ]
    snap.peerings = {("r1", "pcx-1"): {"Status": {"Code": pcx}, "RequesterVpcInfo": {"VpcId": "vpc-a"},
                                       "AccepterVpcInfo": {"VpcId": "vpc-b"}}}
    snap.igws = {"vpc-a": {"igw-1"}}
    snap.instances = [
        {"InstanceId": "i-nat", "State": {"Name": nat_state}, "SourceDestCheck": not nat_sdc,
         "PrivateIpAddress": "10.0.1.10", "PublicIpAddress": "203.0.113.10",
         "NetworkInterfaces": [{"NetworkInterfaceId": "eni-nat"}]},
        {"InstanceId": "i-app", "State": {"Name": "running"}, "PrivateIpAddress": "10.0.2.10",
         **({"PublicIpAddress": "203.0.113.11"} if public else {}), "NetworkInterfaces": []},
    ]
    return snap


def test_peering_both_ways_and_the_main_table() -> None:
    assert snapshot().path("10.0.2.10", "10.1.1.5") == OPEN


def test_an_inactive_peering_drops() -> None:
    assert snapshot(pcx="pending-acceptance").path("10.0.2.10", "10.1.1.5") == (
        "route table rt-app: peering pcx-1 is pending-acceptance"
    )


def test_a_one_way_route_drops_the_reply() -> None:
    # vpc-b routes back only to 10.0.2.0/24: the public subnet gets no reply.
    snap = snapshot(app_routes=None)
    snap.tables[0]["Routes"].append(r("10.1.0.0/16", VpcPeeringConnectionId="pcx-1"))
    assert snap.path("10.0.1.20", "10.1.1.5") == "no way back: route table rt-main-b: no route to 10.0.1.20"


def test_egress_through_a_nat_instance_needs_it_running_with_the_check_off() -> None:
    assert snapshot(nat_sdc=True).egress("10.0.2.10") == OPEN
    assert snapshot(nat_sdc=False).egress("10.0.2.10") == (
        "route table rt-app: NAT instance i-nat has its source/destination check on"
    )
    assert snapshot(nat_sdc=True, nat_state="stopped").egress("10.0.2.10") == (
        "route table rt-app: NAT instance i-nat is stopped"
    )


def test_the_internet_gateway_needs_a_public_ip_and_never_carries_private_addresses() -> None:
    snap = snapshot()
    snap.instances.append({"InstanceId": "i-web", "State": {"Name": "running"}, "PrivateIpAddress": "10.0.1.30",
                           "NetworkInterfaces": []})
    assert snap.egress("10.0.1.30") == "route table rt-pub: 10.0.1.30 has no public IP for the internet gateway"
    assert snap.egress("10.0.1.10") == OPEN  # the NAT instance itself has one
    assert snap.forward(A("10.0.1.10"), A("10.9.0.1")).endswith("does not carry traffic to 10.9.0.1")


def test_a_gateway_endpoint_route_serves_its_service_only() -> None:
    snap = snapshot(app_routes=[r("10.0.0.0/16", GatewayId="local"),
                                {"DestinationPrefixListId": "pl-s3", "GatewayId": "vpce-1", "State": "active"}])
    snap.prefix_lists = {("r1", "pl-s3"): "com.amazonaws.r1.s3"}
    snap.endpoints = {"vpce-1": {"State": "available"}}
    assert snap.egress("10.0.2.10", "s3") == OPEN
    assert snap.egress("10.0.2.10", "dynamodb") == "route table rt-app: no route to 52.219.0.1"


def test_a_blackhole_route_drops() -> None:
    snap = snapshot(app_routes=[r("10.0.0.0/16", GatewayId="local"),
                                {**r("10.1.0.0/16", VpcPeeringConnectionId="pcx-1"), "State": "blackhole"}])
    assert snap.path("10.0.2.10", "10.1.1.5") == "route table rt-app: route 10.1.0.0/16 is a blackhole"


def test_a_deleted_peering_route_is_not_bridged_by_the_nat_instances_default_route() -> None:
    """The cluster nodes' subnets lost their peering routes; their default route leads to their VPC's NAT
    instance, whose own subnet still routes to the peer. The NAT masquerades: the reply goes to the NAT's
    address, and the peer, routing it through its own NAT instance, masquerades it again: the first NAT
    drops it (no connection matches). On AWS the sender times out; so does the twin."""
    routes_gone = [r("10.0.0.0/16", GatewayId="local"), r("0.0.0.0/0", NetworkInterfaceId="eni-nat")]
    snap = snapshot(nat_sdc=True, app_routes=routes_gone)
    snap.tables[0]["Routes"].append(r("10.1.0.0/16", VpcPeeringConnectionId="pcx-1"))  # the NAT's subnet
    # vpc-b: its node subnet lost its route too, and defaults to its own NAT instance.
    snap.subnets.append({"SubnetId": "sub-b-pub", "VpcId": "vpc-b", "CidrBlock": "10.1.9.0/24", "Region": "r1"})
    snap.tables[2]["Routes"] = [r("10.1.0.0/16", GatewayId="local"), r("0.0.0.0/0", NetworkInterfaceId="eni-nat-b")]
    snap.tables.append({"RouteTableId": "rt-pub-b", "VpcId": "vpc-b", "Region": "r1",
                        "Associations": [{"SubnetId": "sub-b-pub"}],
                        "Routes": [r("10.1.0.0/16", GatewayId="local"),
                                   r("10.0.0.0/16", VpcPeeringConnectionId="pcx-1")]})
    snap.instances.append({"InstanceId": "i-nat-b", "State": {"Name": "running"}, "SourceDestCheck": False,
                           "PrivateIpAddress": "10.1.9.10", "NetworkInterfaces": [{"NetworkInterfaceId": "eni-nat-b"}]})

    assert snap.path("10.0.2.10", "10.1.1.5") == (
        "no way back to NAT instance 10.0.1.10 (it masqueraded the flow): route table rt-main-b: a reply "
        "through NAT instance i-nat-b arrives masqueraded, matching no connection")
    # With the peer's route still there, the reply reaches the NAT straight over the peering: it works.
    snap.tables[2]["Routes"].append(r("10.0.0.0/16", VpcPeeringConnectionId="pcx-1"))
    assert snap.path("10.0.2.10", "10.1.1.5") == OPEN
