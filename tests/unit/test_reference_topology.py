"""The shipped reference.yaml reproduces every fact of shared/reference/seed-topology.md."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from regionha.topology import BindPath, ResolverEndpointPath, Topology, Vpc

SUBNETS = {
    # vpc: (region, cidr, {subnet: (cidr, public)})
    "tokyo": (
        "ap-northeast-1",
        "10.0.0.0/16",
        {
            "A1": ("10.0.10.0/24", True),
            "A2": ("10.0.110.0/24", False),
            "A3": ("10.0.111.0/24", False),
        },
    ),
    "osaka": (
        "ap-northeast-3",
        "10.1.0.0/16",
        {
            "B1": ("10.1.10.0/24", True),
            "B2": ("10.1.110.0/24", False),
            "B3": ("10.1.111.0/24", False),
        },
    ),
    "singapore": ("ap-southeast-1", "10.2.0.0/16", {"C1": ("10.2.10.0/24", True)}),
}

# The seed's route table section: subnet -> (0.0.0.0/0 target or None, peer destination).
ROUTE_ROWS = {
    "A1": ("igw", "10.1.0.0/16"),
    "A2": ("nat", "10.1.0.0/16"),
    "A3": (None, "10.1.0.0/16"),
    "B1": ("igw", "10.0.0.0/16"),
    "B2": ("nat", "10.0.0.0/16"),
    "B3": (None, "10.0.0.0/16"),
}


def _routes_of(vpc: Vpc, subnet: str) -> dict[IPv4Network, str]:
    (table,) = [t for t in vpc.route_tables if subnet in t.subnets]
    return {r.destination: r.target for r in table.routes}


def _vpc_of_subnet(topology: Topology, subnet: str) -> Vpc:
    return next(v for v in topology.vpcs if subnet in {s.name for s in v.subnets})


def test_vpcs_regions_and_cidrs(topology: Topology) -> None:
    assert {v.name: (v.region, str(v.cidr)) for v in topology.vpcs} == {
        name: (region, cidr) for name, (region, cidr, _) in SUBNETS.items()
    }


@pytest.mark.parametrize("vpc_name", list(SUBNETS))
def test_subnets_roles_and_azs(topology: Topology, vpc_name: str) -> None:
    region, _, subnets = SUBNETS[vpc_name]
    vpc = topology.vpc(vpc_name)
    assert {s.name: (str(s.cidr), s.public) for s in vpc.subnets} == subnets
    # The article places everything in the region's "a" zone (A3 is named ap-northeast-1a).
    assert {s.az for s in vpc.subnets} == {f"{region}a"}


def test_every_region_has_an_internet_gateway_and_the_cluster_regions_a_nat_instance(
    topology: Topology,
) -> None:
    assert all(v.internet_gateway for v in topology.vpcs)
    nats = {v.name: v.nat_instance.subnet for v in topology.vpcs if v.nat_instance is not None}
    assert nats == {"tokyo": "A1", "osaka": "B1"}


def test_tokyo_osaka_peering_is_requested_by_osaka_and_accepted_by_tokyo(topology: Topology) -> None:
    peering = topology.peering("tokyo-osaka")
    assert (peering.requester, peering.accepter) == ("osaka", "tokyo")
    assert peering.stands_in_for is None
    assert topology.region_of(peering.accepter) == "ap-northeast-1"


def test_the_vpn_links_to_the_on_prem_site_are_stood_in_for_separately(topology: Topology) -> None:
    vpn = {p.name: {p.requester, p.accepter} for p in topology.peerings if p.stands_in_for == "vpn"}
    assert vpn == {"onprem-tokyo": {"singapore", "tokyo"}, "onprem-osaka": {"singapore", "osaka"}}


@pytest.mark.parametrize("subnet", list(ROUTE_ROWS))
def test_route_rows(topology: Topology, subnet: str) -> None:
    default_target, peer_destination = ROUTE_ROWS[subnet]
    vpc = _vpc_of_subnet(topology, subnet)
    routes = _routes_of(vpc, subnet)
    assert routes.get(IPv4Network("0.0.0.0/0")) == default_target
    assert routes[IPv4Network(peer_destination)] == "peering:tokyo-osaka"
    # "local" is the VPC CIDR, which AWS routes itself: no explicit route may shadow it.
    assert not [d for d in routes if d.subnet_of(vpc.cidr)]


@pytest.mark.parametrize("vpc_name", ["tokyo", "osaka"])
def test_inbound_endpoint_sg_admits_dns_from_the_on_prem_subnet_only(
    topology: Topology, vpc_name: str
) -> None:
    (group,) = [g for g in topology.vpc(vpc_name).security_groups if g.name == "InboundEndpoint"]
    assert sorted((r.protocol, r.port, str(r.cidr)) for r in group.ingress) == [
        ("tcp", 53, "10.2.10.0/24"),
        ("udp", 53, "10.2.10.0/24"),
    ]


def test_private_zone_and_record(topology: Topology) -> None:
    assert topology.dns.zone_fqdn == "cluster.local."
    assert sorted(topology.dns.zone_vpcs) == ["osaka", "tokyo"]
    assert topology.dns.record.name == "sample.cluster.local."


def test_tokyo_path_is_the_inbound_endpoint_with_two_ips_in_a3(topology: Topology) -> None:
    (path,) = [p for p in topology.forwarder_paths if p.vpc == "tokyo"]
    assert isinstance(path, ResolverEndpointPath)
    assert (path.endpoint_name, path.security_group) == ("InboundTest", "InboundEndpoint")
    assert [(e.subnet, e.ip) for e in path.ips] == [
        ("A3", IPv4Address("10.0.111.100")),
        ("A3", IPv4Address("10.0.111.101")),
    ]
    assert topology.vpc("tokyo").subnet("A3").az == "ap-northeast-1a"


def test_osaka_path_is_bind_in_b3(topology: Topology) -> None:
    (path,) = [p for p in topology.forwarder_paths if p.vpc == "osaka"]
    assert isinstance(path, BindPath)
    assert (path.subnet, path.security_group) == ("B3", "InboundEndpoint")
    assert path.ip in topology.vpc("osaka").subnet("B3").cidr


def test_on_prem_bind_in_c1_is_the_source_the_security_groups_admit(topology: Topology) -> None:
    client = topology.client
    assert (client.vpc, client.dns_server.subnet) == ("singapore", "C1")
    assert client.cidr == IPv4Network("10.2.10.0/24")
    assert client.dns_server.ip in client.cidr
    # The on-prem BIND forwards to the Tokyo endpoint IPs and the Osaka BIND server: both paths.
    forwarders = [ip for p in topology.forwarder_paths for ip in p.addresses()]
    assert forwarders == [
        IPv4Address("10.0.111.100"),
        IPv4Address("10.0.111.101"),
        topology.forwarder_paths[1].ip,
    ]
    assert [s.name for s in topology.bind_servers()] == ["osaka-bind", "onprem-dns"]


def test_nodes(topology: Topology) -> None:
    assert [(n.name, n.vpc, n.subnet) for n in topology.nodes] == [
        ("Server-A", "tokyo", "A2"),
        ("Server-B", "osaka", "B2"),
    ]
    assert topology.primary.name == "Server-A"
    assert topology.region_of(topology.primary.vpc) == "ap-northeast-1"
    assert topology.region_of(topology.node("Server-B").vpc) == "ap-northeast-3"
