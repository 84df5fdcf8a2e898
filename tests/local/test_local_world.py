"""The local world: security group / network ACL evaluation, node services, and the reconciler
reading a reference deployment held by moto in-process (no root: the loopback cuts are recorded by a
stand-in for LocalNetwork here and exercised for real in tests/integration/test_local_network.py).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from regionha.aws import Clients, tag_spec
from regionha.local.aws.vpc_rules import nacl_allows, sg_allows
from regionha.local.host.network import Flow
from regionha.local.host.nodes import NodeService
from regionha.local.world import World, dns_targets

net = ipaddress.IPv4Network


def perm(proto: str, low: int | None, high: int | None, *cidrs: str) -> dict[str, Any]:
    p: dict[str, Any] = {"IpProtocol": proto, "IpRanges": [{"CidrIp": c} for c in cidrs]}
    if low is not None:
        p.update(FromPort=low, ToPort=high)
    return p


@pytest.mark.parametrize(
    ("permissions", "source", "proto", "allowed"),
    [
        ([perm("udp", 53, 53, "10.2.10.0/24")], "10.2.10.10/32", "udp", True),
        ([perm("udp", 53, 53, "10.2.10.0/24")], "10.2.10.10/32", "tcp", False),
        ([perm("udp", 53, 53, "10.2.10.0/24")], "10.2.11.10/32", "udp", False),
        ([perm("udp", 53, 53, "10.2.10.0/24")], "10.2.10.0/24", "udp", True),
        ([perm("udp", 53, 53, "10.2.10.0/25")], "10.2.10.0/24", "udp", False),  # half the site
        ([perm("udp", 53, 53, "10.2.10.0/25", "10.2.10.128/25")], "10.2.10.0/24", "udp", True),
        ([perm("udp", 53, 53, "10.2.10.0/25"), perm("17", 53, 53, "10.2.10.128/25")], "10.2.10.0/24", "udp", True),
        ([perm("tcp", 1, 1024, "0.0.0.0/0")], "10.2.10.10/32", "tcp", True),
        ([perm("tcp", 54, 1024, "0.0.0.0/0")], "10.2.10.10/32", "tcp", False),
        ([perm("6", 53, 53, "10.0.0.0/8")], "10.2.10.10/32", "tcp", True),
        ([perm("-1", None, None, "10.2.0.0/16")], "10.2.10.10/32", "udp", True),
        ([perm("icmp", -1, -1, "0.0.0.0/0")], "10.2.10.10/32", "udp", False),
        ([], "10.2.10.10/32", "udp", False),
    ],
)
def test_security_group_evaluation(permissions: list[dict], source: str, proto: str, allowed: bool) -> None:
    assert sg_allows(permissions, net(source), proto, 53) is allowed


def entry(number: int, action: str, proto: str, cidr: str, ports: tuple[int, int] | None = None, egress=False):
    e: dict[str, Any] = {
        "RuleNumber": number,
        "RuleAction": action,
        "Protocol": proto,
        "CidrBlock": cidr,
        "Egress": egress,
    }
    if ports:
        e["PortRange"] = {"From": ports[0], "To": ports[1]}
    return e


DEFAULT_NACL = [
    entry(100, "allow", "-1", "0.0.0.0/0"),
    entry(32767, "deny", "-1", "0.0.0.0/0"),
    entry(100, "allow", "-1", "0.0.0.0/0", egress=True),
    entry(32767, "deny", "-1", "0.0.0.0/0", egress=True),
]


@pytest.mark.parametrize(
    ("entries", "source", "proto", "allowed"),
    [
        (DEFAULT_NACL, "10.2.10.10/32", "udp", True),
        ([entry(90, "deny", "17", "10.2.0.0/16"), *DEFAULT_NACL], "10.2.10.10/32", "udp", False),
        ([entry(90, "deny", "17", "10.2.0.0/16"), *DEFAULT_NACL], "10.2.10.10/32", "tcp", True),
        # first match wins: a lower-numbered allow beats a later deny, whatever the list order
        (
            [entry(200, "deny", "-1", "0.0.0.0/0"), entry(10, "allow", "6", "10.2.10.0/24", (53, 53))],
            "10.2.10.10/32",
            "tcp",
            True,
        ),
        (
            [entry(10, "allow", "6", "10.2.10.0/24", (53, 53)), entry(5, "deny", "-1", "0.0.0.0/0")],
            "10.2.10.10/32",
            "tcp",
            False,
        ),
        (
            [entry(10, "allow", "6", "10.2.10.0/24", (54, 60)), entry(20, "deny", "6", "0.0.0.0/0")],
            "10.2.10.10/32",
            "tcp",
            False,
        ),
        ([entry(10, "allow", "6", "10.2.10.0/24", (1, 1024))], "10.2.10.10/32", "tcp", True),
        ([entry(10, "allow", "17", "10.2.10.0/24")], "10.2.11.10/32", "udp", False),  # unmatched: denied
        ([], "10.2.10.10/32", "udp", False),
        # egress entries do not decide inbound traffic
        (
            [entry(1, "deny", "-1", "0.0.0.0/0", egress=True), entry(100, "allow", "-1", "0.0.0.0/0")],
            "10.2.10.10/32",
            "udp",
            True,
        ),
        # a deny covering part of a source network cuts that network
        (
            [entry(10, "deny", "17", "10.2.10.10/32"), entry(20, "allow", "-1", "0.0.0.0/0")],
            "10.2.10.0/24",
            "udp",
            False,
        ),
        (
            [entry(10, "allow", "17", "10.2.10.0/25"), entry(20, "allow", "17", "10.2.10.128/25")],
            "10.2.10.0/24",
            "udp",
            True,
        ),
        (
            [entry(10, "allow", "17", "10.2.10.0/25"), entry(20, "deny", "17", "10.2.10.0/24")],
            "10.2.10.0/24",
            "udp",
            False,
        ),
        # a deny that only overlaps already-allowed addresses is never reached by them
        (
            [entry(10, "allow", "17", "10.2.10.0/24"), entry(20, "deny", "17", "10.2.10.10/32")],
            "10.2.10.0/24",
            "udp",
            True,
        ),
    ],
)
def test_network_acl_evaluation(entries: list[dict], source: str, proto: str, allowed: bool) -> None:
    assert nacl_allows(entries, net(source), proto, 53) is allowed


# --- node services ------------------------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status, r.read().decode()


def test_node_service_answers_its_name_and_a_stopped_node_listens_nowhere() -> None:
    node = NodeService("Server-A", "127.0.0.1", 0)
    node.start()
    node.start()  # idempotent
    try:
        assert get(node.url) == (200, "Server-A")
        assert get(node.url + "health") == (200, "ok")
        with pytest.raises(urllib.error.HTTPError):
            get(node.url + "nope")
    finally:
        node.stop()
    node.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", node.port), timeout=2):
        pass
    node.start()  # comes back on the same port
    try:
        assert get(f"http://127.0.0.1:{node.port}/") == (200, "Server-A")
    finally:
        node.stop()


def test_node_service_refuses_non_local_addresses() -> None:
    with pytest.raises(Exception, match="not a local address"):
        NodeService("Server-A", "10.0.110.10", 80)


# --- the reconciler against the reference deployment in moto ------------------------------------------


@dataclass
class RecordingNetwork:
    """Stands in for LocalNetwork where root is not available: remembers the cuts asked for."""

    blocked: frozenset[Flow] = frozenset()
    calls: list[frozenset[Flow]] = field(default_factory=list)

    def set_blocked(self, flows: Iterable[Flow]) -> dict[str, list[str]]:
        new = frozenset(flows)
        self.calls.append(new)
        changes = {"added": sorted(map(str, new - self.blocked)), "lifted": sorted(map(str, self.blocked - new))}
        self.blocked = new
        return changes

    def add_address(self, ip: str) -> bool:
        return True


@dataclass
class Deployment:
    ids: dict[str, str]  # "vpc:tokyo", "subnet:A3", "sg:tokyo/InboundEndpoint", "instance:Server-A", ...


def build_reference(topology) -> Deployment:
    """The parts of the reference deployment the world reads, built straight with boto3."""
    dep = topology.deployment
    ids: dict[str, str] = {}
    for vpc in topology.vpcs:
        ec2 = boto3.client("ec2", region_name=vpc.region)
        vpc_id = ec2.create_vpc(CidrBlock=str(vpc.cidr), TagSpecifications=tag_spec("vpc", dep, vpc.name))["Vpc"][
            "VpcId"
        ]
        ids[f"vpc:{vpc.name}"] = vpc_id
        for s in vpc.subnets:
            ids[f"subnet:{s.name}"] = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=str(s.cidr),
                AvailabilityZone=s.az,
                TagSpecifications=tag_spec("subnet", dep, s.name),
            )["Subnet"]["SubnetId"]
        for sg in vpc.security_groups:
            gid = ec2.create_security_group(
                GroupName=f"{dep}-{sg.name}",
                Description=sg.description,
                VpcId=vpc_id,
                TagSpecifications=tag_spec("security-group", dep, sg.name),
            )["GroupId"]
            ids[f"sg:{vpc.name}/{sg.name}"] = gid
            ec2.authorize_security_group_ingress(
                GroupId=gid,
                IpPermissions=[
                    perm(rule.protocol, rule.port, rule.port, str(rule.cidr)) for rule in sg.ingress if rule.port
                ],
            )

    def instance(name: str, vpc: str, subnet: str, ip: str, sg: str) -> None:
        ec2 = boto3.client("ec2", region_name=topology.region_of(vpc))
        ids[f"instance:{name}"] = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            SubnetId=ids[f"subnet:{subnet}"],
            PrivateIpAddress=ip,
            SecurityGroupIds=[ids[f"sg:{vpc}/{sg}"]],
            TagSpecifications=tag_spec("instance", dep, name),
        )["Instances"][0]["InstanceId"]

    for node in topology.nodes:
        instance(node.name, node.vpc, node.subnet, str(node.ip), node.security_group)
    for path in topology.forwarder_paths:
        if path.kind == "bind":
            instance(path.name, path.vpc, path.subnet, str(path.ip), path.security_group)
        else:
            resolver = boto3.client("route53resolver", region_name=topology.region_of(path.vpc))
            ids[f"endpoint:{path.name}"] = resolver.create_resolver_endpoint(
                CreatorRequestId=path.name,
                Name=path.endpoint_name,
                SecurityGroupIds=[ids[f"sg:{path.vpc}/{path.security_group}"]],
                Direction="INBOUND",
                IpAddresses=[{"SubnetId": ids[f"subnet:{i.subnet}"], "Ip": str(i.ip)} for i in path.ips],
            )["ResolverEndpoint"]["Id"]
    server = topology.client.dns_server
    instance(server.name, topology.client.vpc, server.subnet, str(server.ip), server.security_group)
    build_routing(topology)
    return Deployment(ids)


def build_routing(topology) -> None:
    """Route tables, peerings and routes, by the build's own converge steps (NAT routes excepted)."""
    from regionha.converge.network import converge_vpc
    from regionha.converge.peering import accept_peering, request_peering
    from regionha.converge.routes import converge_routes

    clients = Clients()
    for vpc in topology.vpcs:
        converge_vpc(topology, vpc.name, clients, "test")
    for p in topology.peerings:
        request_peering(topology, p.name, clients, "test")
        accept_peering(topology, p.name, clients)
    for vpc in topology.vpcs:
        converge_routes(topology, vpc.name, clients)


@pytest.fixture
def world(moto_aws: None, topology) -> Iterator[tuple[World, RecordingNetwork, Deployment]]:
    deployment = build_reference(topology)
    nodes = {n.name: NodeService(n.name, "127.0.0.1", 0) for n in topology.nodes}
    network = RecordingNetwork()
    ports = {"10.0.111.100": 15301, "10.0.111.101": 15302, "10.1.111.10": 15303, "10.2.10.10": 15304}
    w = World(topology, Clients(), network, nodes, port_of=ports.__getitem__)
    yield w, network, deployment
    w.stop()
    for n in nodes.values():
        n.stop()


def ec2(topology, vpc: str) -> Any:
    return boto3.client("ec2", region_name=topology.region_of(vpc))


def test_a_fully_built_deployment_is_open_and_its_nodes_serve(world, topology) -> None:
    w, network, _ = world
    applied = w.reconcile()
    assert applied["nodes"] == {"Server-A": "up", "Server-B": "up"}
    assert applied["node_paths"] == {"Server-A": "open", "Server-B": "open"}
    assert applied["blocked"] == []
    assert network.blocked == frozenset()
    assert applied["paths"]["tokyo-resolver"] == {
        "10.0.111.100": {"udp": "open", "tcp": "open"},
        "10.0.111.101": {"udp": "open", "tcp": "open"},
    }
    assert get(w.nodes["Server-A"].url) == (200, "Server-A")


def test_a_stopped_node_instance_closes_its_port(world, topology) -> None:
    w, _, deployment = world
    w.reconcile()
    port = w.nodes["Server-A"].port
    ec2(topology, "tokyo").stop_instances(InstanceIds=[deployment.ids["instance:Server-A"]])
    assert w.reconcile()["nodes"] == {"Server-A": "down", "Server-B": "up"}
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    ec2(topology, "tokyo").start_instances(InstanceIds=[deployment.ids["instance:Server-A"]])
    assert w.reconcile()["nodes"]["Server-A"] == "up"
    assert get(w.nodes["Server-A"].url) == (200, "Server-A")


def test_revoking_udp_53_cuts_udp_only_on_that_path(world, topology) -> None:
    w, network, deployment = world
    w.reconcile()
    ec2(topology, "tokyo").revoke_security_group_ingress(
        GroupId=deployment.ids["sg:tokyo/InboundEndpoint"], IpPermissions=[perm("udp", 53, 53, "10.2.10.0/24")]
    )
    applied = w.reconcile()
    assert network.blocked == {
        Flow("127.2.10.0/24", "127.0.111.100", "udp", 15301),
        Flow("127.2.10.0/24", "127.0.111.101", "udp", 15302),
    }
    assert applied["paths"]["tokyo-resolver"]["10.0.111.100"] == {"udp": "security group", "tcp": "open"}
    assert applied["paths"]["osaka-bind"]["10.1.111.10"] == {"udp": "open", "tcp": "open"}


def test_a_network_acl_deny_on_the_forwarder_subnet_cuts_the_path(world, topology) -> None:
    w, network, deployment = world
    osaka = ec2(topology, "osaka")
    subnet = deployment.ids["subnet:B3"]
    acl = osaka.create_network_acl(VpcId=deployment.ids["vpc:osaka"])["NetworkAcl"]["NetworkAclId"]
    for number, action, cidr in ((90, "deny", "10.2.0.0/16"), (100, "allow", "0.0.0.0/0")):
        osaka.create_network_acl_entry(
            NetworkAclId=acl, RuleNumber=number, Protocol="-1", RuleAction=action, Egress=False, CidrBlock=cidr
        )
    association = osaka.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])[
        "NetworkAcls"
    ][0]["Associations"]
    association_id = next(a["NetworkAclAssociationId"] for a in association if a["SubnetId"] == subnet)
    osaka.replace_network_acl_association(AssociationId=association_id, NetworkAclId=acl)

    applied = w.reconcile()
    assert applied["paths"]["osaka-bind"]["10.1.111.10"] == {"udp": "network acl", "tcp": "network acl"}
    assert network.blocked == {
        Flow("127.2.10.0/24", "127.1.111.10", "udp", 15303),
        Flow("127.2.10.0/24", "127.1.111.10", "tcp", 15303),
    }
    # The Tokyo path and the on-prem server are untouched.
    assert applied["paths"]["tokyo-resolver"]["10.0.111.100"] == {"udp": "open", "tcp": "open"}


def test_a_stopped_bind_forwarder_and_a_deleted_endpoint_cut_their_paths(world, topology) -> None:
    w, network, deployment = world
    ec2(topology, "osaka").stop_instances(InstanceIds=[deployment.ids["instance:osaka-bind"]])
    boto3.client("route53resolver", region_name="ap-northeast-1").delete_resolver_endpoint(
        ResolverEndpointId=deployment.ids["endpoint:tokyo-resolver"]
    )
    applied = w.reconcile()
    assert applied["paths"]["osaka-bind"]["10.1.111.10"]["udp"].startswith("instance ")
    assert applied["paths"]["tokyo-resolver"]["10.0.111.101"] == {"udp": "endpoint missing", "tcp": "endpoint missing"}
    assert {f.dst for f in network.blocked} == {"127.1.111.10", "127.0.111.100", "127.0.111.101"}
    assert applied["paths"]["onprem-dns"]["10.2.10.10"] == {"udp": "open", "tcp": "open"}


def test_an_endpoint_address_whose_interface_is_gone_is_cut_alone(world, topology) -> None:
    """Resolver still lists the address ATTACHED, but nothing holds it: AWS drops what is sent there, so
    the twin cuts that address (a silent drop: the client times out) and leaves the endpoint's other one."""
    w, network, _ = world
    tokyo = ec2(topology, "tokyo")
    eni = tokyo.describe_network_interfaces(
        Filters=[{"Name": "addresses.private-ip-address", "Values": ["10.0.111.101"]}])["NetworkInterfaces"][0]
    tokyo.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    applied = w.reconcile()
    gone = "endpoint address's network interface gone"
    assert applied["paths"]["tokyo-resolver"]["10.0.111.101"] == {"udp": gone, "tcp": gone}
    assert applied["paths"]["tokyo-resolver"]["10.0.111.100"] == {"udp": "open", "tcp": "open"}
    assert {f.dst for f in network.blocked} == {"127.0.111.101"}
    tokyo.create_network_interface(SubnetId=eni["SubnetId"], PrivateIpAddress="10.0.111.101")
    assert w.reconcile()["paths"]["tokyo-resolver"]["10.0.111.101"] == {"udp": "open", "tcp": "open"}
    assert network.blocked == frozenset()


def test_nothing_built_means_everything_is_cut(moto_aws: None, topology) -> None:
    network = RecordingNetwork()
    applied = World(topology, Clients(), network, {}).reconcile()
    assert len(network.blocked) == 2 * len(dns_targets(topology))
    assert {f.dport for f in network.blocked} == {53}
    assert applied["paths"]["onprem-dns"]["10.2.10.10"]["udp"] == "vpc missing"


def test_run_reconciles_in_the_background_until_stopped(world) -> None:
    w, network, _ = world
    w.run(interval=0.05)
    deadline = time.monotonic() + 10
    while len(network.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    w.stop()
    assert len(network.calls) >= 2
    calls = len(network.calls)
    time.sleep(0.2)
    assert len(network.calls) == calls


def test_local_addresses_are_the_loopback_images(topology) -> None:
    w = World(topology, Clients(), RecordingNetwork(), {})
    assert w.local_addresses() == [
        "127.0.110.10",
        "127.0.111.100",
        "127.0.111.101",
        "127.1.110.10",
        "127.1.111.10",
        "127.2.10.10",
    ]


# --- routing: the route tables decide too ----------------------------------------------------------


def route_table(topology, vpc: str, name: str) -> dict:
    tables = ec2(topology, vpc).describe_route_tables(
        Filters=[{"Name": "tag:regionha:deployment", "Values": [topology.deployment]},
                 {"Name": "tag:regionha:name", "Values": [name]}]
    )["RouteTables"]
    return tables[0]


def test_deleting_the_client_route_to_tokyo_cuts_the_tokyo_paths_only(world, topology) -> None:
    w, network, _ = world
    assert w.reconcile()["blocked"] == []
    c1 = route_table(topology, "singapore", "C1-rt")
    ec2(topology, "singapore").delete_route(RouteTableId=c1["RouteTableId"], DestinationCidrBlock="10.0.0.0/16")

    applied = w.reconcile()
    reason = applied["paths"]["tokyo-resolver"]["10.0.111.100"]["udp"]
    # The default route to the internet gateway matches now, and an IGW carries no private traffic.
    assert reason == "route: route table C1-rt: an internet gateway does not carry traffic to 10.0.111.100"
    # Server-A's port sits behind the same route.
    assert applied["node_paths"]["Server-A"].startswith("route: route table C1-rt:")
    assert applied["node_paths"]["Server-B"] == "open"
    assert {f.dst for f in network.blocked} == {"127.0.111.100", "127.0.111.101", "127.0.110.10"}
    assert Flow("127.2.10.0/24", "127.0.110.10", "tcp", 80) in network.blocked
    assert applied["paths"]["osaka-bind"]["10.1.111.10"] == {"udp": "open", "tcp": "open"}


def test_a_missing_return_route_is_a_cut_too(world, topology) -> None:
    w, network, _ = world
    b3 = route_table(topology, "osaka", "B3-rt")
    ec2(topology, "osaka").delete_route(RouteTableId=b3["RouteTableId"], DestinationCidrBlock="10.2.0.0/16")
    applied = w.reconcile()
    assert applied["paths"]["osaka-bind"]["10.1.111.10"]["tcp"] == (
        "route: no way back: route table B3-rt: no route to 10.2.10.10"
    )
    assert {f.dst for f in network.blocked} == {"127.1.111.10"}


def test_a_route_to_a_deleted_peering_cuts_both_paths_it_carried(world, topology) -> None:
    w, network, _ = world
    sg = ec2(topology, "singapore")
    pcx = route_table(topology, "singapore", "C1-rt")["Routes"]
    tokyo_pcx = next(r["VpcPeeringConnectionId"] for r in pcx if r.get("DestinationCidrBlock") == "10.0.0.0/16")
    sg.delete_vpc_peering_connection(VpcPeeringConnectionId=tokyo_pcx)
    applied = w.reconcile()
    assert applied["paths"]["tokyo-resolver"]["10.0.111.101"]["udp"].startswith("route: route table C1-rt: peering ")
    assert {f.dst for f in network.blocked} == {"127.0.111.100", "127.0.111.101", "127.0.110.10"}


def test_a_route_through_the_peer_vpc_is_not_transitive(world, topology) -> None:
    # Osaka reaches Tokyo's 10.0/16 over tokyo-osaka; the client site cannot ride on it via Osaka.
    w, _, _ = world
    c1 = route_table(topology, "singapore", "C1-rt")
    osaka_pcx = next(
        r["VpcPeeringConnectionId"] for r in c1["Routes"] if r.get("DestinationCidrBlock") == "10.1.0.0/16"
    )
    singapore = ec2(topology, "singapore")
    singapore.delete_route(RouteTableId=c1["RouteTableId"], DestinationCidrBlock="10.0.0.0/16")
    singapore.create_route(RouteTableId=c1["RouteTableId"], DestinationCidrBlock="10.0.0.0/15",
                           VpcPeeringConnectionId=osaka_pcx)
    applied = w.reconcile()
    assert "not transitive" in applied["paths"]["tokyo-resolver"]["10.0.111.100"]["udp"]
    assert applied["paths"]["osaka-bind"]["10.1.111.10"]["udp"] == "open"



def test_the_first_boot_install_needs_egress_to_the_repositories(world, topology) -> None:
    w, _, deployment = world
    osaka = ec2(topology, "osaka")
    instance = osaka.describe_instances(InstanceIds=[deployment.ids["instance:osaka-bind"]])["Reservations"][0][
        "Instances"
    ][0]
    # The reference topology gives B3 an S3 gateway endpoint (built by ConvergeRoutes).
    assert w.package_install(instance) == "installed"

    vpce = osaka.describe_vpc_endpoints()["VpcEndpoints"][0]["VpcEndpointId"]
    osaka.delete_vpc_endpoints(VpcEndpointIds=[vpce])
    replacement = {**instance, "InstanceId": "i-0replacement"}
    verdict = w.package_install(replacement)
    assert verdict == "dnf cannot reach the repositories: route table B3-rt: no route to 52.219.0.1"
    # Decided once, at the first boot: the first instance keeps what it installed.
    assert w.package_install(instance) == "installed"


def test_a_node_port_the_security_group_no_longer_admits_is_a_silent_drop(world, topology) -> None:
    w, network, deployment = world
    ec2(topology, "osaka").revoke_security_group_ingress(
        GroupId=deployment.ids["sg:osaka/ClusterNode"], IpPermissions=[perm("tcp", 80, 80, "10.2.10.0/24")]
    )
    applied = w.reconcile()
    assert applied["node_paths"]["Server-B"] == "security group"
    assert network.blocked == {Flow("127.2.10.0/24", "127.1.110.10", "tcp", 80)}
