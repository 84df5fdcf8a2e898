"""Cross-field rules of a topology: each case breaks the reference deployment in one place.

A case is (mutation, field, fragment): the mutation is applied to the reference YAML as a plain dict,
then the problem list must hold exactly one problem for ``field`` whose message contains ``fragment``
(exactly one: a fault must not be reported twice).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
import yaml

from regionha.topology import DEFAULT_TOPOLOGY, Problem, TopologyError, load_topology, parse_topology
from regionha.topology.validation import AWS_REGIONS, check_topology, topology_warnings

REFERENCE: dict[str, Any] = yaml.safe_load(
    resources.files("regionha.topologies").joinpath(DEFAULT_TOPOLOGY).read_text(encoding="utf-8")
)

DELETE = object()
Mutation = Callable[[dict[str, Any]], None]


def _walk(data: Any, path: str) -> tuple[Any, str | int]:
    """The container and final key of a field path such as ``vpcs[0].subnets[1].cidr``."""
    keys: list[str | int] = [
        int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)
    ]
    for key in keys[:-1]:
        data = data[key]
    return data, keys[-1]


def put(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        container, key = _walk(data, path)
        if value is DELETE:
            del container[key]
        else:
            container[key] = value

    return mutate


def append(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        container, key = _walk(data, path)
        container[key].append(value)

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for m in mutations:
            m(data)

    return mutate


def problems_after(mutation: Mutation) -> list[Problem]:
    data = copy.deepcopy(REFERENCE)
    mutation(data)
    try:
        parse_topology(data)
    except TopologyError as e:
        return e.problems
    return []


def assert_problem(problems: list[Problem], field: str, fragment: str) -> None:
    matching = [p for p in problems if p.field == field and fragment in p.message]
    assert len(matching) == 1, f"expected one problem at {field} saying {fragment!r}; got: {problems}"


TOKYO_A1_RT = "vpcs[0].route_tables[0]"

CASES = [
    # regions and availability zones
    ("unknown-region", put("vpcs[0].region", "ap-northeast-9"), "vpcs[0].region", "unknown AWS region"),
    (
        "az-of-other-region",
        put("vpcs[0].subnets[1].az", "ap-northeast-3a"),
        "vpcs[0].subnets[1].az",
        "not in region ap-northeast-1",
    ),
    (
        "az-without-letter",
        put("vpcs[1].subnets[0].az", "ap-northeast-3"),
        "vpcs[1].subnets[0].az",
        "not in region ap-northeast-3",
    ),
    # CIDRs
    ("peered-vpcs-overlap", put("vpcs[1].cidr", "10.0.0.0/15"), "peerings[0]", "must not overlap"),
    (
        "route-inside-own-vpc",
        append(f"{TOKYO_A1_RT}.routes", {"destination": "10.0.0.0/16", "target": "igw"}),
        f"{TOKYO_A1_RT}.routes[3].destination",
        "within the VPC's own CIDR 10.0.0.0/16",
    ),
    (
        "route-to-peer-outside-peer-vpc",
        put(f"{TOKYO_A1_RT}.routes[1].destination", "10.3.0.0/16"),
        f"{TOKYO_A1_RT}.routes[1].destination",
        "not within osaka (10.1.0.0/16)",
    ),
    (
        "route-destination-twice",
        append(f"{TOKYO_A1_RT}.routes", {"destination": "0.0.0.0/0", "target": "nat"}),
        f"{TOKYO_A1_RT}.routes[3].destination",
        "already routed by routes[0]",
    ),
    ("vpc-cidr-too-large", put("vpcs[2].cidr", "10.0.0.0/8"), "vpcs[2].cidr", "EC2 accepts /16 to /28"),
    (
        "subnet-cidr-too-small",
        put("vpcs[2].subnets[0].cidr", "10.2.10.0/29"),
        "vpcs[2].subnets[0].cidr",
        "EC2 accepts /16 to /28",
    ),
    (
        "subnet-outside-vpc",
        put("vpcs[0].subnets[2].cidr", "10.5.111.0/24"),
        "vpcs[0].subnets[2].cidr",
        "outside its VPC's CIDR 10.0.0.0/16",
    ),
    (
        "subnets-overlap",
        put("vpcs[0].subnets[2].cidr", "10.0.110.128/25"),
        "vpcs[0].subnets[2].cidr",
        "overlaps vpcs[0].subnets[1] (A2 10.0.110.0/24)",
    ),
    # addresses
    (
        "endpoint-ip-outside-subnet",
        put("forwarder_paths[0].ips[1].ip", "10.0.110.50"),
        "forwarder_paths[0].ips[1].ip",
        "outside its subnet A3",
    ),
    (
        "bind-ip-outside-subnet",
        put("forwarder_paths[1].ip", "10.1.112.10"),
        "forwarder_paths[1].ip",
        "outside its subnet B3",
    ),
    ("node-ip-outside-subnet", put("nodes[0].ip", "10.0.111.10"), "nodes[0].ip", "outside its subnet A2"),
    (
        "dns-server-ip-outside-subnet",
        put("client.dns_server.ip", "10.2.11.10"),
        "client.dns_server.ip",
        "outside its subnet C1",
    ),
    (
        "endpoint-ip-reserved",
        put("forwarder_paths[0].ips[0].ip", "10.0.111.3"),
        "forwarder_paths[0].ips[0].ip",
        "reserved by AWS",
    ),
    (
        "bind-ip-reserved",
        put("forwarder_paths[1].ip", "10.1.111.255"),
        "forwarder_paths[1].ip",
        "reserved by AWS",
    ),
    (
        "duplicate-ip",
        put("forwarder_paths[0].ips[1].ip", "10.0.111.100"),
        "forwarder_paths[0].ips[1].ip",
        "already used by forwarder_paths[0].ips[0].ip",
    ),
    (
        "duplicate-ip-node-and-endpoint",
        both(put("nodes[0].subnet", "A3"), put("nodes[0].ip", "10.0.111.101")),
        "nodes[0].ip",
        "already used by forwarder_paths[0].ips[1].ip",
    ),
    (
        "endpoint-one-ip",
        put("forwarder_paths[0].ips", [{"subnet": "A3", "ip": "10.0.111.100"}]),
        "forwarder_paths[0].ips",
        "2 to 6 IPs, not 1",
    ),
    (
        "endpoint-seven-ips",
        put("forwarder_paths[0].ips", [{"subnet": "A3", "ip": f"10.0.111.{100 + k}"} for k in range(7)]),
        "forwarder_paths[0].ips",
        "2 to 6 IPs, not 7",
    ),
    # DNS
    (
        "record-outside-zone",
        put("dns.record.name", "sample.cluster.example."),
        "dns.record.name",
        "outside zone cluster.local.",
    ),
    (
        "record-suffix-is-not-zone",
        put("dns.record.name", "samplecluster.local."),
        "dns.record.name",
        "outside zone cluster.local.",
    ),
    (
        "record-bad-label",
        put("dns.record.name", "bad name.cluster.local."),
        "dns.record.name",
        "invalid record name",
    ),
    ("ttl-negative", put("dns.record.ttl", -1), "dns.record.ttl", "outside Route 53's range 0..2147483647"),
    ("ttl-too-large", put("dns.record.ttl", 2147483648), "dns.record.ttl", "0..2147483647"),
    ("zone-empty-label", put("dns.zone", "cluster..local"), "dns.zone", "invalid zone name"),
    ("zone-leading-hyphen", put("dns.zone", "-cluster.local"), "dns.zone", "invalid zone name"),
    ("zone-underscore", put("dns.zone", "clu_ster.local"), "dns.zone", "invalid zone name"),
    ("zone-long-label", put("dns.zone", "a" * 64 + ".local"), "dns.zone", "invalid zone name"),
    ("zone-empty", put("dns.zone", ""), "dns.zone", "zone name is empty"),
    (
        "zone-vpc-unknown",
        put("dns.zone_vpcs", ["tokyo", "osaka", "kyoto"]),
        "dns.zone_vpcs[2]",
        "unknown VPC 'kyoto'",
    ),
    ("zone-vpc-twice", put("dns.zone_vpcs", ["tokyo", "osaka", "tokyo"]), "dns.zone_vpcs[2]", "listed twice"),
    (
        "forwarder-vpc-not-in-zone",
        put("dns.zone_vpcs", ["tokyo"]),
        "forwarder_paths[1].vpc",
        "not in dns.zone_vpcs",
    ),
    # references to things that do not exist
    ("node-unknown-vpc", put("nodes[0].vpc", "kyoto"), "nodes[0].vpc", "unknown VPC 'kyoto'"),
    ("node-unknown-subnet", put("nodes[0].subnet", "A9"), "nodes[0].subnet", "no subnet 'A9' in VPC 'tokyo'"),
    (
        "node-unknown-sg",
        put("nodes[1].security_group", "Nope"),
        "nodes[1].security_group",
        "no security group 'Nope' in VPC 'osaka'",
    ),
    (
        "node-sg-of-other-vpc",
        put("nodes[0].security_group", "OnPremDns"),
        "nodes[0].security_group",
        "no security group 'OnPremDns' in VPC 'tokyo'",
    ),
    (
        "forwarder-unknown-vpc",
        put("forwarder_paths[0].vpc", "kyoto"),
        "forwarder_paths[0].vpc",
        "unknown VPC 'kyoto'",
    ),
    (
        "forwarder-unknown-subnet",
        put("forwarder_paths[1].subnet", "B9"),
        "forwarder_paths[1].subnet",
        "no subnet 'B9' in VPC 'osaka'",
    ),
    (
        "endpoint-ip-unknown-subnet",
        put("forwarder_paths[0].ips[0].subnet", "B3"),
        "forwarder_paths[0].ips[0].subnet",
        "no subnet 'B3' in VPC 'tokyo'",
    ),
    (
        "forwarder-unknown-sg",
        put("forwarder_paths[0].security_group", "Nope"),
        "forwarder_paths[0].security_group",
        "no security group 'Nope'",
    ),
    ("client-unknown-vpc", put("client.vpc", "kyoto"), "client.vpc", "unknown VPC 'kyoto'"),
    (
        "dns-server-unknown-subnet",
        put("client.dns_server.subnet", "C9"),
        "client.dns_server.subnet",
        "no subnet 'C9' in VPC 'singapore'",
    ),
    (
        "dns-server-unknown-sg",
        put("client.dns_server.security_group", "Nope"),
        "client.dns_server.security_group",
        "no security group 'Nope' in VPC 'singapore'",
    ),
    (
        "nat-unknown-subnet",
        put("vpcs[0].nat_instance.subnet", "A9"),
        "vpcs[0].nat_instance.subnet",
        "no subnet 'A9' in VPC 'tokyo'",
    ),
    (
        "route-table-unknown-subnet",
        put(f"{TOKYO_A1_RT}.subnets", ["A9"]),
        f"{TOKYO_A1_RT}.subnets[0]",
        "no subnet 'A9'",
    ),
    # placement
    (
        "node-in-public-subnet",
        both(put("nodes[0].subnet", "A1"), put("nodes[0].ip", "10.0.10.10")),
        "nodes[0].subnet",
        "A1 is public",
    ),
    (
        "nat-in-private-subnet",
        put("vpcs[1].nat_instance.subnet", "B2"),
        "vpcs[1].nat_instance.subnet",
        "must be in a public subnet; B2 is private",
    ),
    (
        "nat-without-igw",
        both(put("vpcs[0].internet_gateway", False), put(f"{TOKYO_A1_RT}.routes[0]", DELETE)),
        "vpcs[0].nat_instance",
        "needs the VPC's internet gateway",
    ),
    ("client-cidr-outside-vpc", put("client.cidr", "10.9.10.0/24"), "client.cidr", "outside VPC singapore"),
    (
        "dns-server-outside-client-cidr",
        put("client.cidr", "10.2.20.0/24"),
        "client.dns_server.ip",
        "outside client.cidr 10.2.20.0/24",
    ),
    # routes
    (
        "route-nat-without-nat-instance",
        put("vpcs[0].nat_instance", DELETE),
        "vpcs[0].route_tables[1].routes[0].target",
        "no nat_instance",
    ),
    (
        "route-igw-without-igw",
        put("vpcs[2].internet_gateway", False),
        "vpcs[2].route_tables[0].routes[0].target",
        "no internet gateway",
    ),
    (
        "route-unknown-peering",
        put(f"{TOKYO_A1_RT}.routes[1].target", "peering:nope"),
        f"{TOKYO_A1_RT}.routes[1].target",
        "unknown peering 'nope'",
    ),
    (
        "route-peering-of-other-vpcs",
        put(f"{TOKYO_A1_RT}.routes[2].target", "peering:onprem-osaka"),
        f"{TOKYO_A1_RT}.routes[2].target",
        "joins singapore and osaka, not VPC tokyo",
    ),
    (
        "subnet-in-two-route-tables",
        put("vpcs[0].route_tables[1].subnets", ["A2", "A1"]),
        "vpcs[0].route_tables[1].subnets[1]",
        "already associated with route table A1-rt",
    ),
    # peerings
    ("peering-to-itself", put("peerings[0].requester", "tokyo"), "peerings[0].accepter", "to itself"),
    (
        "peering-unknown-requester",
        put("peerings[0].requester", "kyoto"),
        "peerings[0].requester",
        "unknown VPC 'kyoto'",
    ),
    ("peering-unknown-accepter", put("peerings[1].accepter", "kyoto"), "peerings[1].accepter", "unknown VPC"),
    (
        "pair-peered-twice",
        append("peerings", {"name": "again", "requester": "tokyo", "accepter": "osaka"}),
        "peerings[3]",
        "already peered by peerings[0] (tokyo-osaka)",
    ),
    # duplicate names
    ("duplicate-vpc", put("vpcs[1].name", "tokyo"), "vpcs[1].name", "duplicate VPC name 'tokyo'"),
    (
        "duplicate-subnet",
        put(
            "vpcs[2].subnets",
            [
                REFERENCE["vpcs"][2]["subnets"][0],
                {"name": "C1", "cidr": "10.2.20.0/24", "az": "ap-southeast-1b"},
            ],
        ),
        "vpcs[2].subnets[1].name",
        "duplicate subnet name 'C1'",
    ),
    (
        "duplicate-route-table",
        put("vpcs[0].route_tables[1].name", "A1-rt"),
        "vpcs[0].route_tables[1].name",
        "duplicate route table name",
    ),
    (
        "duplicate-security-group",
        put("vpcs[0].security_groups[1].name", "InboundEndpoint"),
        "vpcs[0].security_groups[1].name",
        "duplicate security group name",
    ),
    (
        "duplicate-peering",
        put("peerings[2].name", "tokyo-osaka"),
        "peerings[2].name",
        "duplicate peering name",
    ),
    (
        "duplicate-forwarder-path",
        put("forwarder_paths[1].name", "tokyo-resolver"),
        "forwarder_paths[1].name",
        "duplicate forwarder path name",
    ),
    ("duplicate-node", put("nodes[1].name", "Server-A"), "nodes[1].name", "duplicate node name 'Server-A'"),
    (
        "node-named-like-nat",
        put("nodes[1].name", "nat-tokyo"),
        "nodes[1].name",
        "instance name 'nat-tokyo' is already used by vpcs[0].nat_instance.name",
    ),
    (
        "node-named-like-bind",
        put("nodes[0].name", "osaka-bind"),
        "nodes[0].name",
        "already used by forwarder_paths[1].name",
    ),
    (
        "dns-server-named-like-nat",
        put("client.dns_server.name", "nat-osaka"),
        "client.dns_server.name",
        "already used by vpcs[1].nat_instance.name",
    ),
    # security groups of the forwarder paths
    (
        "sg-udp-from-elsewhere",
        put("vpcs[0].security_groups[0].ingress[0].cidr", "10.2.20.0/24"),
        "forwarder_paths[0].security_group",
        "does not admit UDP 53 from the on-prem DNS server 10.2.10.10",
    ),
    (
        "sg-tcp-from-elsewhere",
        put("vpcs[1].security_groups[0].ingress[1].cidr", "10.2.20.0/24"),
        "forwarder_paths[1].security_group",
        "does not admit TCP 53",
    ),
    (
        "sg-no-rules",
        put("vpcs[0].security_groups[0].ingress", []),
        "forwarder_paths[0].security_group",
        "does not admit UDP and TCP 53",
    ),
    (
        "sg-wrong-port",
        put("vpcs[1].security_groups[0].ingress[0].port", 5353),
        "forwarder_paths[1].security_group",
        "does not admit UDP 53",
    ),
    # nodes
    ("one-node", put("nodes", [REFERENCE["nodes"][0]]), "nodes", "at least 2"),
]


@pytest.mark.parametrize(("mutation", "field", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_names_its_field(mutation: Mutation, field: str, fragment: str) -> None:
    assert_problem(problems_after(mutation), field, fragment)


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(put("nodes[0].ip", "10.0.110.4"), id="first-assignable-ip"),
        pytest.param(put("nodes[0].ip", "10.0.110.254"), id="last-assignable-ip"),
        pytest.param(put("dns.record.ttl", 0), id="ttl-zero"),
        pytest.param(put("dns.record.ttl", 2147483647), id="ttl-max"),
        pytest.param(put("dns.record.name", "cluster.local."), id="record-at-zone-apex"),
        pytest.param(put("dns.record.name", "SAMPLE.Cluster.Local."), id="record-case-insensitive"),
        pytest.param(put("dns.zone", "cluster.local."), id="zone-with-trailing-dot"),
        pytest.param(
            put("forwarder_paths[0].ips", [{"subnet": "A3", "ip": f"10.0.111.{100 + k}"} for k in range(6)]),
            id="endpoint-six-ips",
        ),
        pytest.param(
            put("vpcs[0].security_groups[0].ingress", [{"protocol": "all", "cidr": "10.2.0.0/16"}]),
            id="sg-all-traffic-from-wider-cidr",
        ),
        pytest.param(
            put(
                "vpcs[1].security_groups[0].ingress",
                [{"protocol": "udp", "cidr": "10.2.10.10/32"}, {"protocol": "tcp", "cidr": "10.2.10.10/32"}],
            ),
            id="sg-any-port-from-the-server-only",
        ),
        pytest.param(
            append(f"{TOKYO_A1_RT}.routes", {"destination": "10.0.0.0/8", "target": "nat"}),
            id="route-wider-than-own-vpc",
        ),
        pytest.param(
            both(put("vpcs[2].region", "me-central-1"), put("vpcs[2].subnets[0].az", "me-central-1a")),
            id="other-commercial-region",
        ),
    ],
)
def test_boundaries_that_are_valid(mutation: Mutation) -> None:
    assert problems_after(mutation) == []


def test_reference_has_no_problems(topology) -> None:
    assert check_topology(topology) == []


def test_all_problems_are_reported_not_only_the_first() -> None:
    problems = problems_after(
        both(
            put("vpcs[0].region", "ap-northeast-9"),
            put("dns.record.ttl", -5),
            put("nodes[1].subnet", "B1"),
            put("peerings[2].accepter", "kyoto"),
        )
    )
    assert {p.field for p in problems} >= {
        "vpcs[0].region",
        "dns.record.ttl",
        "nodes[1].subnet",
        "peerings[2].accepter",
    }


def test_fewer_than_two_nodes_also_caught_when_pydantic_is_bypassed(topology) -> None:
    # model_copy(update=...) skips validation; check_topology must not rely on the field constraint.
    single = topology.model_copy(update={"nodes": topology.nodes[:1]})
    assert_problem(check_topology(single), "nodes", "at least 2 nodes, not 1")


@pytest.mark.parametrize("last", [".0", ".1", ".2", ".3", ".255"])
def test_every_aws_reserved_address_is_refused(last: str) -> None:
    assert_problem(problems_after(put("nodes[0].ip", "10.0.110" + last)), "nodes[0].ip", "reserved by AWS")


def test_region_list_holds_the_seed_regions_and_no_other_partition() -> None:
    assert {"ap-northeast-1", "ap-northeast-3", "ap-southeast-1"} <= AWS_REGIONS
    assert not {r for r in AWS_REGIONS if r.startswith(("cn-", "us-gov-", "us-iso"))}


def test_load_topology_reports_cross_field_problems_with_the_file_name(tmp_path) -> None:
    data = copy.deepcopy(REFERENCE)
    data["dns"]["record"]["ttl"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TopologyError) as raised:
        load_topology(path)
    assert raised.value.source == str(path)
    assert [str(p) for p in raised.value.problems] == [
        "dns.record.ttl: TTL -1 is outside Route 53's range 0..2147483647"
    ]


# --- reachability (field case validate-misses-unreachable-paths) ------------------------------------
# Each case removes one route or rule of the reference; the flows are those regionha relies on.

TOKYO_A2_RT, TOKYO_A3_RT = "vpcs[0].route_tables[1]", "vpcs[0].route_tables[2]"
OSAKA_B2_RT, OSAKA_B3_RT = "vpcs[1].route_tables[1]", "vpcs[1].route_tables[2]"
CLIENT_C1_RT = "vpcs[2].route_tables[0]"

REACHABILITY_CASES = [
    (
        "a2-node-no-route-back-to-client",
        put(f"{TOKYO_A2_RT}.routes[2]", DELETE),
        TOKYO_A2_RT,
        "subnet A2 (node Server-A) has no route back to VPC singapore (10.2.0.0/16): 10.2.10.0/24 goes to "
        "the NAT instance by route 0.0.0.0/0; replies to client network 10.2.10.0/24 are dropped",
    ),
    (
        "b2-node-no-route-back-to-client",
        put(f"{OSAKA_B2_RT}.routes[2]", DELETE),
        OSAKA_B2_RT,
        "subnet B2 (node Server-B) has no route back to VPC singapore",
    ),
    (
        "a3-no-route-back-to-onprem",
        put(f"{TOKYO_A3_RT}.routes[1]", DELETE),
        TOKYO_A3_RT,
        "subnet A3 (forwarder path tokyo-resolver) has no route back to VPC singapore (10.2.0.0/16): no route "
        "matches 10.2.10.10; replies to on-prem DNS server onprem-dns 10.2.10.10 are dropped",
    ),
    (
        "b3-no-route-back-to-onprem",
        put(f"{OSAKA_B3_RT}.routes[1]", DELETE),
        OSAKA_B3_RT,
        "subnet B3 (forwarder path osaka-bind) has no route back to VPC singapore",
    ),
    (
        "c1-no-route-to-tokyo",
        put(f"{CLIENT_C1_RT}.routes[1]", DELETE),
        CLIENT_C1_RT,
        "subnet C1 (on-prem DNS server onprem-dns, client network) has no route to VPC tokyo (10.0.0.0/16): "
        "10.0.111.100 goes to the internet gateway by route 0.0.0.0/0; unreachable: forwarder path "
        "tokyo-resolver 10.0.111.100, 10.0.111.101; node Server-A 10.0.110.10",
    ),
    (
        "c1-no-route-to-osaka",
        put(f"{CLIENT_C1_RT}.routes[2]", DELETE),
        CLIENT_C1_RT,
        "has no route to VPC osaka (10.1.0.0/16)",
    ),
    (
        "c1-no-routes-at-all",
        put(f"{CLIENT_C1_RT}.routes", []),
        CLIENT_C1_RT,
        "no route matches 10.0.111.100",
    ),
    (
        "node-subnet-without-route-table",
        put(f"{TOKYO_A2_RT}.subnets", ["A1"]),  # A2 left to the main route table (and A1 listed twice)
        "vpcs[0].subnets[1]",
        "subnet A2 (node Server-A; no route table, so the VPC's main one with only the local route) has no "
        "route back to VPC singapore",
    ),
    (
        "client-to-tokyo-through-osaka-is-not-transitive",
        put(f"{CLIENT_C1_RT}.routes[1]", {"destination": "10.0.0.0/16", "target": "peering:onprem-osaka"}),
        CLIENT_C1_RT,
        "goes to VPC osaka by peering onprem-osaka (route 10.0.0.0/16), and peerings are not transitive",
    ),
    (
        "more-specific-route-takes-part-of-the-client-network-away",
        append(f"{TOKYO_A2_RT}.routes", {"destination": "10.2.10.128/25", "target": "nat"}),
        TOKYO_A2_RT,
        "10.2.10.128/25 goes to the NAT instance by route 10.2.10.128/25",
    ),
    (
        "node-sg-closed-to-client",
        put("vpcs[0].security_groups[1].ingress[0].cidr", "10.2.20.0/24"),
        "nodes[0].security_group",
        "security group ClusterNode of VPC tokyo does not admit TCP 80 from the client network 10.2.10.0/24 "
        "(client.cidr): clients, the canary's node checks and the failover controller's port checks cannot "
        "reach node Server-A",
    ),
    (
        "node-sg-admits-half-the-client-network",
        put("vpcs[1].security_groups[1].ingress[0].cidr", "10.2.10.0/25"),
        "nodes[1].security_group",
        "admits TCP 80 from only part of the client network 10.2.10.0/24 (not from 10.2.10.128/25)",
    ),
    (
        "node-port-not-admitted",
        put("nodes[1].port", 8080),
        "nodes[1].security_group",
        "does not admit TCP 8080 from the client network",
    ),
    (
        "dns-server-sg-closed-to-clients",
        put("vpcs[2].security_groups[0].ingress[1].cidr", "10.2.10.10/32"),
        "client.dns_server.security_group",
        "security group OnPremDns admits TCP 53 from only part of the client network 10.2.10.0/24",
    ),
    # The interconnect (cluster.requires_interconnect): every node to the other VPCs' nodes and back.
    (
        "node-sg-closed-to-its-peer-node",
        put("vpcs[0].security_groups[1].ingress", REFERENCE["vpcs"][0]["security_groups"][1]["ingress"][:1]),
        "nodes[0].security_group",
        "does not admit TCP 80 from node Server-B 10.1.110.10 (VPC osaka): the interconnect to node Server-A is cut",
    ),
    (
        "node-subnet-without-route-to-peer-vpc",
        put("vpcs[1].route_tables[1].routes[1]", DELETE),
        "vpcs[1].route_tables[1]",
        "subnet B2 (node Server-B) has no route to VPC tokyo (10.0.0.0/16)",
    ),
    (
        "client-network-in-no-subnet",
        put("client.cidr", "10.2.20.0/24"),
        "client.cidr",
        "no subnet of VPC singapore holds any of the client network 10.2.20.0/24",
    ),
]


@pytest.mark.parametrize(
    ("mutation", "field", "fragment"), [c[1:] for c in REACHABILITY_CASES], ids=[c[0] for c in REACHABILITY_CASES]
)
def test_unreachable_flows_are_refused_naming_the_route_table_or_group(
    mutation: Mutation, field: str, fragment: str
) -> None:
    assert_problem(problems_after(mutation), field, fragment)


@pytest.mark.parametrize(
    ("mutation", "fields"),
    [
        pytest.param(put(f"{TOKYO_A3_RT}.routes[1]", DELETE), [TOKYO_A3_RT], id="a3-one-route-one-problem"),
        pytest.param(put(f"{CLIENT_C1_RT}.routes[1]", DELETE), [CLIENT_C1_RT], id="c1-one-route-one-problem"),
        pytest.param(
            both(
                put("vpcs[0].security_groups[1].ingress", REFERENCE["vpcs"][0]["security_groups"][1]["ingress"][1:]),
                put("vpcs[1].security_groups[1].ingress", REFERENCE["vpcs"][1]["security_groups"][1]["ingress"][1:]),
            ),
            ["nodes[0].security_group", "nodes[1].security_group"],
            id="nodes-sg-closed-to-client-one-problem-per-node",
        ),
        pytest.param(
            put("vpcs[0].security_groups[1].ingress", REFERENCE["vpcs"][0]["security_groups"][1]["ingress"][:1]),
            ["nodes[0].security_group"],
            id="node-sg-closed-to-peer-one-problem",
        ),
    ],
)
def test_one_missing_route_or_rule_is_one_problem(mutation: Mutation, fields: list[str]) -> None:
    assert [p.field for p in problems_after(mutation)] == fields


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(
            put(
                "vpcs[0].security_groups[1].ingress",
                [{"protocol": "tcp", "port": 80, "cidr": "10.2.10.0/25"},
                 {"protocol": "tcp", "port": 80, "cidr": "10.2.10.128/25"},
                 {"protocol": "tcp", "port": 80, "cidr": "10.1.0.0/16"}],
            ),
            id="client-network-admitted-in-two-halves",
        ),
        pytest.param(
            both(put("nodes[0].port", 8443), put("vpcs[0].security_groups[1].ingress[0]",
                                                 {"protocol": "all", "cidr": "10.0.0.0/14"})),
            id="node-port-admitted-by-an-all-traffic-rule",
        ),
        pytest.param(
            both(put("cluster", {"requires_interconnect": False}),
                 put("vpcs[0].security_groups[1].ingress", REFERENCE["vpcs"][0]["security_groups"][1]["ingress"][:1])),
            id="nodes-closed-to-each-other-without-an-interconnect",
        ),
        pytest.param(
            put(f"{TOKYO_A3_RT}.routes[1]", {"destination": "10.2.10.0/24", "target": "peering:onprem-tokyo"}),
            id="route-back-to-just-the-client-network",
        ),
        pytest.param(
            append(f"{CLIENT_C1_RT}.routes", {"destination": "10.0.111.0/24", "target": "peering:onprem-tokyo"}),
            id="more-specific-route-to-the-same-peer",
        ),
    ],
)
def test_reachable_variants_are_valid(mutation: Mutation) -> None:
    assert problems_after(mutation) == []


def test_reachability_is_judged_from_the_model_alone(topology) -> None:
    from regionha.topology.reachability import check_reachability

    assert check_reachability(topology) == []


# --- independent forwarder paths ------------------------------------------------------------------

ONE_PATH = put("forwarder_paths", REFERENCE["forwarder_paths"][:1])
BOTH_PATHS_IN_TOKYO = both(
    put("forwarder_paths[1].vpc", "tokyo"),
    put("forwarder_paths[1].subnet", "A3"),
    put("forwarder_paths[1].ip", "10.0.111.10"),
    # The BIND server's package install needs egress from A3 too.
    put("vpcs[0].gateway_endpoints", [{"service": "s3", "route_tables": ["A3-rt"]}]),
)


@pytest.mark.parametrize(
    ("mutation", "fragment"),
    [
        pytest.param(ONE_PATH, "only one independent forwarder path (tokyo-resolver, in VPC tokyo)", id="one-path"),
        pytest.param(
            BOTH_PATHS_IN_TOKYO,
            "only one independent forwarder path (tokyo-resolver, osaka-bind, all in VPC tokyo)",
            id="two-paths-in-one-vpc",
        ),
    ],
)
def test_fewer_than_two_independent_paths_are_refused(mutation: Mutation, fragment: str) -> None:
    problems = problems_after(mutation)
    assert_problem(problems, "forwarder_paths", fragment)
    assert_problem(problems, "forwarder_paths", "set dns.allow_single_path: true")


@pytest.mark.parametrize("mutation", [ONE_PATH, BOTH_PATHS_IN_TOKYO], ids=["one-path", "two-paths-in-one-vpc"])
def test_a_single_path_is_accepted_when_explicitly_allowed(mutation: Mutation) -> None:
    assert problems_after(both(mutation, put("dns.allow_single_path", True))) == []


# --- warnings: valid, but likely to hurt -----------------------------------------------------------


def warnings_after(mutation: Mutation) -> list[Problem]:
    data = copy.deepcopy(REFERENCE)
    mutation(data)
    return topology_warnings(parse_topology(data))  # parse_topology raises if it is not valid


def test_reference_warns_only_about_its_mdns_zone(topology) -> None:
    assert [(w.field, w.message.split(",")[0]) for w in topology_warnings(topology)] == [
        ("dns.zone", "zone cluster.local. is under local.")
    ]
    assert "RFC 6762" in topology_warnings(topology)[0].message


@pytest.mark.parametrize(
    ("zone", "record", "warned"),
    [
        ("local", "sample.local.", True),
        ("Cluster.LOCAL.", "sample.cluster.local.", True),
        ("cluster.internal", "sample.cluster.internal.", False),
        ("cluster.localhost", "sample.cluster.localhost.", False),
        ("notlocal", "sample.notlocal.", False),
    ],
)
def test_zone_under_local_is_warned_about(zone: str, record: str, warned: bool) -> None:
    found = warnings_after(both(put("dns.zone", zone), put("dns.record.name", record)))
    assert [w.field for w in found if "Multicast DNS" in w.message] == (["dns.zone"] if warned else [])


@pytest.mark.parametrize(
    ("ttl", "budget", "warned"),
    [(60, None, False), (300, None, False), (301, None, True), (120, 90, True), (90, 90, False)],
)
def test_ttl_longer_than_the_failover_budget_is_warned_about(ttl: int, budget: int | None, warned: bool) -> None:
    mutation = put("dns.record.ttl", ttl)
    if budget is not None:
        mutation = both(mutation, put("failover", {"rto_budget_seconds": budget}))
    found = [w for w in warnings_after(mutation) if w.field == "dns.record.ttl"]
    assert len(found) == int(warned)
    if warned:
        shown = budget if budget is not None else 300
        assert f"TTL {ttl} s is longer than the failover budget failover.rto_budget_seconds ({shown} s)" in (
            found[0].message
        )


def test_paths_in_two_vpcs_of_one_region_are_warned_about() -> None:
    # A fourth VPC in Tokyo's region, peered to the client site, takes the BIND path.
    kyoto = copy.deepcopy(REFERENCE["vpcs"][1])
    kyoto.update(name="tokyo2", region="ap-northeast-1", cidr="10.1.0.0/16")
    for s in kyoto["subnets"]:
        s["az"] = "ap-northeast-1a"
    found = warnings_after(
        both(
            put("vpcs[1]", kyoto),
            put("dns.zone_vpcs", ["tokyo", "tokyo2"]),
            put("forwarder_paths[1].vpc", "tokyo2"),
            put("nodes[1].vpc", "tokyo2"),
            put("peerings", [{"name": "tokyo-osaka", "requester": "tokyo2", "accepter": "tokyo"},
                             {"name": "onprem-tokyo", "requester": "singapore", "accepter": "tokyo"},
                             {"name": "onprem-osaka", "requester": "singapore", "accepter": "tokyo2"}]),
        )
    )
    assert [(w.field, w.message) for w in found if w.field == "forwarder_paths"] == [
        ("forwarder_paths", "every forwarder path is in region ap-northeast-1: an outage of that region takes them all")
    ]


def test_budget_must_be_positive() -> None:
    assert_problem(problems_after(put("failover", {"rto_budget_seconds": 0})), "failover.rto_budget_seconds", "")


# --- reserved names (issue 10: a path named onprem was reported as the on-prem resolver) ----------


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("forwarder_paths[1].name", "onprem"),
        ("forwarder_paths[0].name", "OnPrem"),
        ("forwarder_paths[1].name", "on-prem"),
        ("forwarder_paths[0].name", "on_prem"),
        ("nodes[1].name", "onprem"),
        ("nodes[0].name", "Onprem"),
    ],
)
def test_the_onprem_label_is_refused_as_a_path_or_node_name(field: str, name: str) -> None:
    assert_problem(problems_after(put(field, name)), field, f"name {name!r} is reserved: 'onprem' labels")


def test_the_onprem_label_is_the_canarys() -> None:
    from regionha.topology import ONPREM as RESERVED
    from regionha.watch.canary import ONPREM, canary_targets

    assert ONPREM == RESERVED
    onprem = canary_targets(parse_topology(copy.deepcopy(REFERENCE)))[-1]
    # The on-prem resolver is a target of its own kind, labelled with the reserved name; never a path.
    assert (onprem.path, onprem.kind, onprem.forwarder) == (RESERVED, "onprem_resolver", None)


@pytest.mark.parametrize("name", ["onprem-bind", "prem", "onpremise"])
def test_names_merely_like_onprem_are_valid(name: str) -> None:
    assert problems_after(put("forwarder_paths[1].name", name)) == []


@pytest.mark.parametrize(("vpc", "field", "table"), [("osaka", "forwarder_paths[1].subnet", "B3-rt"),
                                                      ("singapore", "client.dns_server.subnet", "C1-rt")])
def test_a_bind_server_without_package_egress_is_warned_about(vpc, field, table):
    # Its first-boot dnf install needs S3 (the Amazon Linux repositories): an S3 gateway endpoint or a NAT.
    # A warning (older topology files still load); the build refuses to launch it (test_converge_instances).
    data = copy.deepcopy(REFERENCE)
    next(v for v in data["vpcs"] if v["name"] == vpc)["gateway_endpoints"] = []
    warnings = [w for w in topology_warnings(parse_topology(data)) if "dnf" in w.message]
    assert [(w.field, f"(route table {table}) has no egress" in w.message) for w in warnings] == [(field, True)]
