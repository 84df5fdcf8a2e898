"""EC2 teardown against moto: reverse order, tag-driven, works on a half-built deployment."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from regionha.aws import Clients, deployment_filter, tag_value
from regionha.converge import Outcome
from regionha.converge.instances import converge_instance, converge_nat, teardown_instances
from regionha.converge.network import converge_vpc, teardown_vpc
from regionha.converge.peering import accept_peering, request_peering, teardown_peerings
from regionha.converge.routes import converge_routes
from regionha.errors import ConfigurationError
from regionha.topology import Topology, parse_topology

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from egress import give_egress  # noqa: E402

RUN = "run-1"
REGIONS = ("ap-northeast-1", "ap-northeast-3", "ap-southeast-1")


@pytest.fixture
def clients(moto_aws: None) -> Clients:
    return Clients()


def teardown(topology: Topology, clients: Clients) -> list[Outcome]:
    """The teardown state machine's EC2 steps, in its order."""
    outcomes = teardown_instances(topology, clients) + teardown_peerings(topology, clients)
    return outcomes + [o for v in topology.vpcs for o in teardown_vpc(topology, v.name, clients)]


def leftovers(deployment: str) -> dict[str, list[str]]:
    """Every EC2 resource still tagged with this deployment, by region and kind (empty: clean)."""
    found: dict[str, list[str]] = {}
    for region in REGIONS:
        ec2 = boto3.client("ec2", region_name=region)
        mine = deployment_filter(deployment)
        ids = [v["VpcId"] for v in ec2.describe_vpcs(Filters=mine)["Vpcs"]]
        ids += [s["SubnetId"] for s in ec2.describe_subnets(Filters=mine)["Subnets"]]
        ids += [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=mine)["RouteTables"]]
        ids += [g["GroupId"] for g in ec2.describe_security_groups(Filters=mine)["SecurityGroups"]]
        ids += [i["InternetGatewayId"] for i in ec2.describe_internet_gateways(Filters=mine)["InternetGateways"]]
        ids += [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=mine)["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]
        ids += [
            p["VpcPeeringConnectionId"]
            for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
            if tag_value(p, "regionha:deployment") == deployment and p["Status"]["Code"] not in ("deleted", "deleting")
        ]
        if ids:
            found[region] = ids
    return found


def build_everything(topology: Topology, clients: Clients) -> None:
    for vpc in topology.vpcs:
        converge_vpc(topology, vpc.name, clients, RUN)
    for p in topology.peerings:
        request_peering(topology, p.name, clients, RUN)
        accept_peering(topology, p.name, clients)
    for vpc in topology.vpcs:
        converge_routes(topology, vpc.name, clients)
        converge_nat(topology, vpc.name, clients, RUN)
    for node in topology.nodes:
        converge_instance(
            topology, name=node.name, vpc_name=node.vpc, subnet=node.subnet, ip=str(node.ip),
            security_group=node.security_group, role="node", user_data="", clients=clients, run_id=RUN,
        )  # fmt: skip


def test_teardown_of_a_full_build_leaves_nothing_tagged(
    topology: Topology, clients: Clients, call_counter: Any
) -> None:
    build_everything(topology, clients)
    assert leftovers(topology.deployment)

    outcomes = teardown(topology, clients)

    assert leftovers(topology.deployment) == {}
    deleted = {(o.kind, o.name) for o in outcomes if o.action == "deleted"}
    assert {("instance", "Server-A"), ("instance", "nat-tokyo"), ("peering", "tokyo-osaka")} <= deleted
    assert {("vpc", "tokyo"), ("internet_gateway", "osaka-igw"), ("security_group", "nat-osaka-sg")} <= deleted
    # The BIND servers were never built: reported, not an error.
    assert {(o.name, o.action) for o in outcomes if o.kind == "instance" and o.name.endswith("dns")} == {
        ("onprem-dns", "absent")
    }

    # A second teardown finds nothing and writes nothing.
    call_counter.calls.clear()
    again = teardown(topology, clients)
    assert {o.action for o in again} == {"absent"}
    assert call_counter.mutating == []


def test_teardown_of_a_half_built_deployment(topology: Topology, clients: Clients) -> None:
    # GIVEN a build that died midway: Tokyo complete, Osaka without its IGW attached and security
    # groups, a peering requested but never accepted, Singapore never started
    converge_vpc(topology, "tokyo", clients, RUN)
    events = clients.ec2("ap-northeast-3").meta.events

    def die(**kwargs: Any) -> None:
        raise RuntimeError("the build died here")

    events.register("before-call.ec2.AttachInternetGateway", die)
    try:
        with pytest.raises(RuntimeError):
            converge_vpc(topology, "osaka", clients, RUN)
    finally:
        events.unregister("before-call.ec2.AttachInternetGateway", die)
    # The half-built Osaka VPC is enough to request a peering from it.
    request_peering(topology, "tokyo-osaka", clients, RUN)

    outcomes = teardown(topology, clients)

    assert leftovers(topology.deployment) == {}
    actions = {(o.kind, o.name, o.region): o.action for o in outcomes}
    tokyo, osaka, singapore = REGIONS
    assert actions[("peering", "tokyo-osaka", osaka)] == "deleted"  # pending acceptance: the requester deletes it
    assert actions[("internet_gateway", "osaka-igw", osaka)] == "deleted"  # never attached
    assert actions[("security_group", "InboundEndpoint", tokyo)] == "deleted"
    assert actions[("security_group", "InboundEndpoint", osaka)] == "absent"  # the build died before it
    assert actions[("vpc", "singapore", singapore)] == "absent"
    assert actions[("peering", "onprem-osaka", singapore)] == "absent"


def test_teardown_only_touches_this_deployment(topology: Topology, clients: Clients) -> None:
    other = parse_topology({**topology.to_json(), "deployment": "someone-else"})
    converge_vpc(other, "singapore", clients, RUN)
    converge_vpc(topology, "singapore", clients, RUN)

    teardown_vpc(topology, "singapore", clients)

    assert leftovers(topology.deployment) == {}
    assert len(leftovers(other.deployment)["ap-southeast-1"]) == 1 + 1 + 1 + 1 + 1  # vpc, subnet, rt, sg, igw


def test_vpc_with_instances_left_is_refused_and_roles_are_honoured(topology: Topology, clients: Clients) -> None:
    converge_vpc(topology, "osaka", clients, RUN)
    give_egress(topology, clients)
    converge_nat(topology, "osaka", clients, RUN)

    with pytest.raises(ConfigurationError, match="terminate them first"):
        teardown_vpc(topology, "osaka", clients)
    # Tearing down the nodes alone leaves the NAT instance running.
    assert {o.action for o in teardown_instances(topology, clients, roles=("node",))} == {"absent"}
    assert [tag_value(i, "regionha:role") for i in _running(topology)] == ["nat"]

    (nat,) = teardown_instances(topology, clients, roles=("nat",))[:1]

    assert (nat.kind, nat.name, nat.action) == ("instance", "nat-osaka", "deleted")
    assert _running(topology) == []
    assert "deleted" in {o.action for o in teardown_vpc(topology, "osaka", clients)}
    assert leftovers(topology.deployment) == {}


def _running(topology: Topology) -> list[dict[str, Any]]:
    ec2 = boto3.client("ec2", region_name="ap-northeast-3")
    reservations = ec2.describe_instances(Filters=deployment_filter(topology.deployment))["Reservations"]
    return [i for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]
