"""The twin's VPC router with a real on-prem site: the site is a network beyond its given links, each a
virtual private gateway that carries traffic only while attached to its VPC, both directions needed."""

from __future__ import annotations

import ipaddress

import pytest

from regionha.local.host.routing import OPEN, Routing, Site, SiteLink

NET = ipaddress.IPv4Network


def r(cidr: str, **target) -> dict:
    return {"DestinationCidrBlock": cidr, "State": "active", **target}


def snapshot(*, attached: str | None = "vpc-t", return_route: bool = True, link_routes=("10.60.0.0/16",),
             route_to: str = "vgw-t") -> Routing:
    snap = Routing()
    snap.vpcs = {"vpc-t": {"cidr": "10.60.0.0/16", "region": "r1", "name": "tokyo"},
                 "vpc-o": {"cidr": "10.61.0.0/16", "region": "r2", "name": "osaka"}}
    snap.subnets = [{"SubnetId": "sub-a3", "VpcId": "vpc-t", "CidrBlock": "10.60.111.0/24", "Region": "r1"},
                    {"SubnetId": "sub-b3", "VpcId": "vpc-o", "CidrBlock": "10.61.111.0/24", "Region": "r2"}]
    routes = [r("10.60.0.0/16", GatewayId="local")]
    if return_route:
        routes.append(r("10.62.0.0/16", GatewayId=route_to))
    snap.tables = [
        {"RouteTableId": "rt-a3", "VpcId": "vpc-t", "Region": "r1", "Associations": [{"SubnetId": "sub-a3"}],
         "Routes": routes},
        {"RouteTableId": "rt-b3", "VpcId": "vpc-o", "Region": "r2", "Associations": [{"SubnetId": "sub-b3"}],
         "Routes": [r("10.61.0.0/16", GatewayId="local"), r("10.62.0.0/16", GatewayId="vgw-o")]},
    ]
    snap.vpn_gateways = {
        "vgw-t": {"VpnGatewayId": "vgw-t", "State": "available",
                  "VpcAttachments": [{"VpcId": attached, "State": "attached"}] if attached else
                  [{"VpcId": "vpc-t", "State": "detached"}]},
        "vgw-o": {"VpnGatewayId": "vgw-o", "State": "available",
                  "VpcAttachments": [{"VpcId": "vpc-o", "State": "attached"}]},
    }
    snap.site = Site(NET("10.62.10.0/24"), (
        SiteLink("tokyo-vpn", "vgw-t", tuple(NET(c) for c in link_routes)),
        SiteLink("osaka-dx", "vgw-o", (NET("10.61.0.0/16"),)),
    ))
    return snap


def test_the_site_reaches_each_vpc_over_its_link_and_back():
    snap = snapshot()
    assert snap.path("10.62.10.10", "10.60.111.100") == OPEN
    assert snap.path("10.62.10.10", "10.61.111.10") == OPEN


@pytest.mark.parametrize(("change", "src", "dst", "why"), [
    # A detached gateway: the site's side leads nowhere, and the VPC's route to it is a blackhole.
    (dict(attached=None), "10.62.10.10", "10.60.111.100", "virtual private gateway vgw-t is not attached to a VPC"),
    (dict(attached=None), "10.60.111.100", "10.62.10.10", "vgw-t is not attached to this VPC (blackhole)"),
    # Attached to another VPC than the destination's.
    (dict(attached="vpc-o"), "10.62.10.10", "10.60.111.100", "10.60.111.100 is not in VPC osaka"),
    # No route back from the destination's subnet: the reply is dropped.
    (dict(return_route=False), "10.62.10.10", "10.60.111.100",
     "no way back: route table rt-a3: no route to 10.62.10.10"),
    # A route back over the other VPC's gateway.
    (dict(route_to="vgw-o"), "10.62.10.10", "10.60.111.100", "vgw-o is not attached to this VPC"),
    # The site's router sends nothing for that prefix.
    (dict(link_routes=("10.60.200.0/24",)), "10.62.10.10", "10.60.111.100", "on-prem router: no link route holds"),
])
def test_what_aws_would_drop_is_dropped_with_the_reason(change, src, dst, why):
    verdict = snapshot(**change).path(src, dst)
    assert verdict != OPEN and why in verdict, verdict


def test_a_gateway_carries_only_the_sites_network():
    snap = snapshot()
    snap.tables[0]["Routes"].append(r("10.99.0.0/16", GatewayId="vgw-t"))
    assert "beyond link tokyo-vpn" in snap.forward(ipaddress.IPv4Address("10.60.111.100"),
                                                   ipaddress.IPv4Address("10.99.0.1"))
