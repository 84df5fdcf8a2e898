"""DNS converge operations against moto: zone, Resolver endpoint, record, drift, re-runs, teardown."""

from __future__ import annotations

from dataclasses import dataclass

import boto3
import pytest

from regionha import record
from regionha.aws import Clients, tag_spec, tags
from regionha.converge.dns import (
    converge_private_zone,
    converge_resolver_endpoint,
    read_record,
    resolver_endpoint_status,
    teardown_dns,
    upsert_record,
)
from regionha.errors import ConfigurationError, TransientError

TOKYO, OSAKA, SINGAPORE = "ap-northeast-1", "ap-northeast-3", "ap-southeast-1"
RUN = "run-0001"


@dataclass
class Network:
    """What the EC2 converge step would have built, made here directly with the same tags."""

    vpcs: dict[str, str]  # topology VPC name -> id
    subnets: dict[str, str]  # topology subnet name -> id
    security_groups: dict[tuple[str, str], str]  # (vpc name, group name) -> id


def build_network(topology, vpc_names=("tokyo", "osaka")) -> Network:
    """Only what the DNS operations look up: the zone's VPCs, the endpoint's subnets and security group."""
    vpcs, subnets, groups = {}, {}, {}
    endpoint = topology.forwarder_paths[0]
    for vpc in (topology.vpc(n) for n in vpc_names):
        ec2 = boto3.client("ec2", region_name=vpc.region)
        vpc_id = ec2.create_vpc(
            CidrBlock=str(vpc.cidr), TagSpecifications=tag_spec("vpc", topology.deployment, vpc.name)
        )["Vpc"]["VpcId"]
        vpcs[vpc.name] = vpc_id
        if vpc.name != endpoint.vpc:
            continue
        for s in {e.subnet for e in endpoint.ips}:
            subnets[s] = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=str(vpc.subnet(s).cidr),
                AvailabilityZone=vpc.subnet(s).az,
                TagSpecifications=tag_spec("subnet", topology.deployment, s),
            )["Subnet"]["SubnetId"]
        groups[(vpc.name, endpoint.security_group)] = ec2.create_security_group(
            VpcId=vpc_id,
            GroupName=endpoint.security_group,
            Description="DNS from the on-prem DNS server only",
            TagSpecifications=tag_spec("security-group", topology.deployment, endpoint.security_group),
        )["GroupId"]
    return Network(vpcs, subnets, groups)


@pytest.fixture
def network(moto_aws, topology) -> Network:
    return build_network(topology)


@pytest.fixture
def network3(moto_aws, topology) -> Network:
    """Also the Singapore VPC, for an association that does not belong."""
    return build_network(topology, ("tokyo", "osaka", "singapore"))


@pytest.fixture
def clients(call_counter) -> Clients:
    # Created after the counter is registered: a client copies the session's event hooks when made.
    return Clients()


def r53():
    return boto3.client("route53", region_name="us-east-1")


def resolver(region=TOKYO):
    return boto3.client("route53resolver", region_name=region)


def our_zone_id(topology) -> str:
    zones = [z for z in r53().list_hosted_zones()["HostedZones"] if z["Name"] == topology.dns.zone_fqdn]
    tagged = [
        z
        for z in zones
        if {"Key": "regionha:deployment", "Value": topology.deployment}
        in r53().list_tags_for_resource(ResourceType="hostedzone", ResourceId=z["Id"].split("/")[-1])["ResourceTagSet"][
            "Tags"
        ]
    ]
    assert len(tagged) == 1
    return tagged[0]["Id"].split("/")[-1]


def zone_vpcs(zone_id: str) -> set[tuple[str, str]]:
    return {(v["VPCRegion"], v["VPCId"]) for v in r53().get_hosted_zone(Id=zone_id)["VPCs"]}


def endpoint_ips(endpoint_id: str) -> set[tuple[str, str]]:
    ips = resolver().list_resolver_endpoint_ip_addresses(ResolverEndpointId=endpoint_id)["IpAddresses"]
    return {(ip["SubnetId"], ip["Ip"]) for ip in ips}


def build(topology, clients) -> list:
    outcomes = converge_private_zone(topology, clients, RUN)
    outcomes += converge_resolver_endpoint(topology, "tokyo-resolver", clients, RUN)
    outcomes += upsert_record(topology, clients, "10.0.110.10", poll_seconds=0.01)
    return outcomes


# --- build --------------------------------------------------------------------------------------------


def test_zone_is_private_tagged_and_associated_with_exactly_the_two_cluster_vpcs(topology, network, clients):
    outcomes = converge_private_zone(topology, clients, RUN)

    zone_id = our_zone_id(topology)
    zone = r53().get_hosted_zone(Id=zone_id)["HostedZone"]
    assert zone["Config"]["PrivateZone"] is True
    assert zone_vpcs(zone_id) == {(TOKYO, network.vpcs["tokyo"]), (OSAKA, network.vpcs["osaka"])}
    zone_tags = r53().list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id)["ResourceTagSet"]
    assert {(t["Key"], t["Value"]) for t in tags(topology.deployment, topology.dns.zone)} <= {
        (t["Key"], t["Value"]) for t in zone_tags["Tags"]
    }
    assert [(o.kind, o.action) for o in outcomes] == [
        ("hosted_zone", "created"),
        ("zone_vpc_association", "created"),
        ("zone_vpc_association", "created"),
    ]


def test_endpoint_is_inbound_with_the_fixed_ips_in_subnet_a3_and_the_inbound_sg(topology, network, clients):
    outcomes = converge_resolver_endpoint(topology, "tokyo-resolver", clients, RUN)

    (ep,) = resolver().list_resolver_endpoints()["ResolverEndpoints"]
    assert [(o.kind, o.name, o.action) for o in outcomes] == [
        ("resolver_endpoint", "tokyo-resolver", "created"),
        ("resolver_endpoint_ip", "tokyo-resolver:10.0.111.100", "created"),
        ("resolver_endpoint_ip", "tokyo-resolver:10.0.111.101", "created"),
    ]
    assert (outcomes[0].id, outcomes[0].region) == (ep["Id"], TOKYO)
    assert ep["Name"] == "InboundTest"
    assert ep["Direction"] == "INBOUND"
    assert ep["HostVPCId"] == network.vpcs["tokyo"]
    assert ep["SecurityGroupIds"] == [network.security_groups[("tokyo", "InboundEndpoint")]]
    a3 = network.subnets["A3"]
    assert endpoint_ips(ep["Id"]) == {(a3, "10.0.111.100"), (a3, "10.0.111.101")}
    ep_tags = resolver().list_tags_for_resource(ResourceArn=ep["Arn"])["Tags"]
    assert {"Key": "regionha:name", "Value": "tokyo-resolver"} in ep_tags
    assert resolver_endpoint_status(topology, "tokyo-resolver", clients) == "OPERATIONAL"


def test_record_points_at_the_node_with_the_topology_ttl(topology, network, clients):
    converge_private_zone(topology, clients, RUN)

    outcomes = upsert_record(topology, clients, "10.0.110.10", poll_seconds=0.01)

    assert [(o.kind, o.name, o.action) for o in outcomes] == [("record", "sample.cluster.local.", "created")]
    assert read_record(topology, clients) == {"name": "sample.cluster.local.", "ip": "10.0.110.10", "ttl": 60}
    sets = r53().list_resource_record_sets(HostedZoneId=our_zone_id(topology))["ResourceRecordSets"]
    (a,) = [s for s in sets if s["Type"] == "A"]
    assert (a["Name"], a["TTL"], a["ResourceRecords"]) == ("sample.cluster.local.", 60, [{"Value": "10.0.110.10"}])


def test_second_run_makes_no_mutating_call(topology, network, clients, call_counter):
    first = build(topology, clients)
    assert call_counter.mutating, "the first run must write, or this test proves nothing"
    call_counter.calls.clear()

    second = build(topology, clients)

    assert call_counter.mutating == []
    assert {o.action for o in second} == {"unchanged"}
    assert [(o.kind, o.name) for o in second] == [(o.kind, o.name) for o in first]


# --- drift --------------------------------------------------------------------------------------------


def test_zone_drift_is_fixed(topology, network3, clients):
    network = network3
    converge_private_zone(topology, clients, RUN)
    zone_id = our_zone_id(topology)
    # GIVEN an extra VPC associated and the zone's name tag removed by hand
    r53().associate_vpc_with_hosted_zone(
        HostedZoneId=zone_id, VPC={"VPCRegion": SINGAPORE, "VPCId": network.vpcs["singapore"]}
    )
    r53().change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id, RemoveTagKeys=["regionha:name"])

    outcomes = converge_private_zone(topology, clients, RUN)

    assert zone_vpcs(zone_id) == {(TOKYO, network.vpcs["tokyo"]), (OSAKA, network.vpcs["osaka"])}
    assert ("hosted_zone", "updated") in [(o.kind, o.action) for o in outcomes]
    assert ("zone_vpc_association", network.vpcs["singapore"], "deleted") in [
        (o.kind, o.id, o.action) for o in outcomes
    ]
    assert our_zone_id(topology) == zone_id


def test_record_changed_by_hand_is_written_back(topology, network, clients, call_counter):
    converge_private_zone(topology, clients, RUN)
    upsert_record(topology, clients, "10.0.110.10", poll_seconds=0.01)
    r53().change_resource_record_sets(
        HostedZoneId=our_zone_id(topology),
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": "sample.cluster.local.",
                        "Type": "A",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": "10.9.9.9"}],
                    },
                }
            ]
        },
    )
    call_counter.calls.clear()

    outcomes = upsert_record(topology, clients, "10.0.110.10", poll_seconds=0.01)

    assert [o.action for o in outcomes] == ["updated"]
    assert read_record(topology, clients) == {"name": "sample.cluster.local.", "ip": "10.0.110.10", "ttl": 60}
    assert call_counter.mutating == [("route-53", "ChangeResourceRecordSets")]


def test_endpoint_ip_and_name_drift_is_fixed(topology, network, clients):
    converge_resolver_endpoint(topology, "tokyo-resolver", clients, RUN)
    (ep,) = resolver().list_resolver_endpoints()["ResolverEndpoints"]
    a3 = network.subnets["A3"]
    # GIVEN .101 swapped for .102 and the endpoint renamed by hand
    resolver().associate_resolver_endpoint_ip_address(
        ResolverEndpointId=ep["Id"], IpAddress={"SubnetId": a3, "Ip": "10.0.111.102"}
    )
    ips = resolver().list_resolver_endpoint_ip_addresses(ResolverEndpointId=ep["Id"])["IpAddresses"]
    (ip101,) = [ip["IpId"] for ip in ips if ip["Ip"] == "10.0.111.101"]
    resolver().disassociate_resolver_endpoint_ip_address(
        ResolverEndpointId=ep["Id"], IpAddress={"IpId": ip101, "SubnetId": a3, "Ip": "10.0.111.101"}
    )
    resolver().update_resolver_endpoint(ResolverEndpointId=ep["Id"], Name="renamed")

    outcomes = converge_resolver_endpoint(topology, "tokyo-resolver", clients, RUN)

    assert endpoint_ips(ep["Id"]) == {(a3, "10.0.111.100"), (a3, "10.0.111.101")}
    assert resolver().get_resolver_endpoint(ResolverEndpointId=ep["Id"])["ResolverEndpoint"]["Name"] == "InboundTest"
    assert sorted((o.name, o.action) for o in outcomes) == [
        ("tokyo-resolver", "updated"),
        ("tokyo-resolver:10.0.111.100", "unchanged"),
        ("tokyo-resolver:10.0.111.101", "created"),
        ("tokyo-resolver:10.0.111.102", "deleted"),
    ]


def test_zone_created_but_not_yet_tagged_is_adopted_not_duplicated(topology, network, clients):
    # GIVEN a run cut short between CreateHostedZone and ChangeTagsForResource
    converge_private_zone(topology, clients, RUN)
    zone_id = our_zone_id(topology)
    r53().change_tags_for_resource(
        ResourceType="hostedzone", ResourceId=zone_id, RemoveTagKeys=["regionha:deployment", "regionha:name", "Name"]
    )

    converge_private_zone(topology, clients, "run-0002")

    assert our_zone_id(topology) == zone_id
    assert len(r53().list_hosted_zones()["HostedZones"]) == 1


def test_another_deployments_zone_of_the_same_name_is_left_alone(topology, network3, clients):
    network = network3
    other = (
        r53()
        .create_hosted_zone(
            Name="cluster.local.",
            CallerReference="someone-else",
            VPC={"VPCRegion": SINGAPORE, "VPCId": network.vpcs["singapore"]},
            HostedZoneConfig={"PrivateZone": True, "Comment": "not ours"},
        )["HostedZone"]["Id"]
        .split("/")[-1]
    )
    r53().change_tags_for_resource(
        ResourceType="hostedzone", ResourceId=other, AddTags=[{"Key": "regionha:deployment", "Value": "other"}]
    )

    converge_private_zone(topology, clients, RUN)
    ours = our_zone_id(topology)
    teardown_dns(topology, clients)

    assert ours != other
    assert [z["Id"].split("/")[-1] for z in r53().list_hosted_zones()["HostedZones"]] == [other]
    assert zone_vpcs(other) == {(SINGAPORE, network.vpcs["singapore"])}


# --- bounded wait and refusals ------------------------------------------------------------------------


@pytest.fixture
def pending_changes(monkeypatch, call_counter):
    """Route 53 reporting every change PENDING (moto is INSYNC at once), and sleeps that return at once."""
    sleeps: list[float] = []
    monkeypatch.setattr(record.time, "sleep", sleeps.append)
    state = {"pending_polls": 10**9}

    def pending(parsed, **kwargs):
        change = parsed.get("ChangeInfo")
        if change and state["pending_polls"] > 0:
            state["pending_polls"] -= 1
            change["Status"] = "PENDING"

    session = boto3.DEFAULT_SESSION
    for op in ("ChangeResourceRecordSets", "GetChange"):
        session.events.register(f"after-call.route-53.{op}", pending)
    yield state, sleeps
    for op in ("ChangeResourceRecordSets", "GetChange"):
        session.events.unregister(f"after-call.route-53.{op}", pending)


def test_wait_for_insync_is_bounded_and_transient(topology, network, call_counter, pending_changes):
    _, sleeps = pending_changes
    clients = Clients()
    converge_private_zone(topology, clients, RUN)
    call_counter.calls.clear()

    with pytest.raises(TransientError, match="PENDING after 10 s"):
        upsert_record(topology, clients, "10.0.110.10", wait_seconds=10, poll_seconds=2)

    assert sleeps == [2, 2, 2, 2, 2]
    assert call_counter.calls.count(("route-53", "GetChange")) == 5


def test_wait_returns_once_the_change_is_insync(topology, network, call_counter, pending_changes):
    state, sleeps = pending_changes
    state["pending_polls"] = 3  # the change response and two GetChange
    clients = Clients()
    converge_private_zone(topology, clients, RUN)

    outcomes = upsert_record(topology, clients, "10.0.110.10", wait_seconds=60, poll_seconds=2)

    assert [o.action for o in outcomes] == ["created"]
    assert sleeps == [2, 2, 2]


def test_upsert_refuses_what_is_not_an_ipv4_address(topology, clients):
    for ip in ("10.0.110", "sample", "::1"):
        with pytest.raises(ConfigurationError, match="not an IPv4 address"):
            upsert_record(topology, clients, ip)


def test_operations_without_their_prerequisites_say_what_is_missing(topology, moto_aws, clients):
    with pytest.raises(ConfigurationError, match="VPC tokyo .* not found"):
        converge_private_zone(topology, clients, RUN)
    with pytest.raises(ConfigurationError, match="zone cluster.local. .* not found"):
        upsert_record(topology, clients, "10.0.110.10")
    with pytest.raises(ConfigurationError, match="not a Resolver endpoint"):
        converge_resolver_endpoint(topology, "osaka-bind", clients, RUN)
    assert read_record(topology, clients) is None
    assert resolver_endpoint_status(topology, "tokyo-resolver", clients) == "missing"
    assert {o.action for o in teardown_dns(topology, clients)} == {"absent"}


def test_endpoint_needs_its_security_group(topology, moto_aws, clients):
    ec2 = boto3.client("ec2", region_name=TOKYO)
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=tag_spec("vpc", topology.deployment, "tokyo"))[
        "Vpc"
    ]["VpcId"]
    ec2.create_subnet(
        VpcId=vpc_id, CidrBlock="10.0.111.0/24", TagSpecifications=tag_spec("subnet", topology.deployment, "A3")
    )

    with pytest.raises(ConfigurationError, match="security group InboundEndpoint of VPC tokyo"):
        converge_resolver_endpoint(topology, "tokyo-resolver", clients, RUN)


# --- teardown -----------------------------------------------------------------------------------------


def test_teardown_leaves_nothing_and_a_second_teardown_writes_nothing(topology, network, clients, call_counter):
    build(topology, clients)
    r53().change_resource_record_sets(
        HostedZoneId=our_zone_id(topology),
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": "by-hand.cluster.local.",
                        "Type": "CNAME",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "sample.cluster.local."}],
                    },
                }
            ]
        },
    )

    outcomes = teardown_dns(topology, clients)

    assert r53().list_hosted_zones()["HostedZones"] == []
    for region in (TOKYO, OSAKA, SINGAPORE):
        assert resolver(region).list_resolver_endpoints()["ResolverEndpoints"] == []
    assert sorted((o.kind, o.name) for o in outcomes if o.action == "deleted") == [
        ("hosted_zone", "cluster.local."),
        ("record", "by-hand.cluster.local.:CNAME"),
        ("record", "sample.cluster.local.:A"),
        ("resolver_endpoint", "tokyo-resolver"),
        ("zone_vpc_association", f"cluster.local.:{network.vpcs['osaka']}"),
    ]
    assert resolver_endpoint_status(topology, "tokyo-resolver", clients) == "missing"

    call_counter.calls.clear()
    again = teardown_dns(topology, clients)
    assert call_counter.mutating == []
    assert {(o.kind, o.action) for o in again} == {("resolver_endpoint", "absent"), ("hosted_zone", "absent")}


def test_teardown_of_a_half_built_deployment(topology, network, clients):
    # GIVEN a build that stopped after the zone, before the endpoint and the record
    converge_private_zone(topology, clients, RUN)

    outcomes = teardown_dns(topology, clients)

    assert r53().list_hosted_zones()["HostedZones"] == []
    assert ("resolver_endpoint", "absent") in [(o.kind, o.action) for o in outcomes]
    assert ("hosted_zone", "deleted") in [(o.kind, o.action) for o in outcomes]
