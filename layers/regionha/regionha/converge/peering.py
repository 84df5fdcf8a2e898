"""Converge cross-region VPC peerings: requested in the requester's region, accepted in the accepter's.

A peering is found by its tags on the requester side; the accepter side only learns the pcx id
from there (EC2 does not copy tags across regions), so ``accept_peering`` tags its side itself.
moto's DescribeVpcPeeringConnections ignores Filters, and so does this module: it reads them all
and filters locally.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import TAG_DEPLOYMENT, TAG_NAME, tag_spec, tag_value, tags
from regionha.converge import Outcome
from regionha.converge.network import delete_resource, paginate, require_vpc_id
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Topology

# States of a peering that is, or is becoming, usable. Everything else (failed, rejected, expired,
# deleted, deleting) is history: a new request is needed.
LIVE_STATES = ("initiating-request", "pending-acceptance", "provisioning", "active")


def _ours(pcx: dict[str, Any], deployment: str, name: str | None = None) -> bool:
    return tag_value(pcx, TAG_DEPLOYMENT) == deployment and (name is None or tag_value(pcx, TAG_NAME) == name)


def live_peerings(ec2: Any, deployment: str, name: str | None = None) -> list[dict[str, Any]]:
    """This deployment's live peerings visible in one region. IAM: ec2:DescribeVpcPeeringConnections."""
    return [
        pcx
        for pcx in paginate(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
        if pcx["Status"]["Code"] in LIVE_STATES and _ours(pcx, deployment, name)
    ]


def find_peering(topology: Topology, peering_name: str, clients: Any) -> dict[str, Any] | None:
    """The live peering named so, seen from its requester's region."""
    peering = topology.peering(peering_name)
    ec2 = clients.ec2(topology.region_of(peering.requester))
    found = live_peerings(ec2, topology.deployment, peering_name)
    if len(found) > 1:
        ids = ", ".join(p["VpcPeeringConnectionId"] for p in found)
        raise ConfigurationError(f"peering {peering_name}: {len(found)} live peerings carry this name ({ids})")
    return found[0] if found else None


def request_peering(topology: Topology, peering_name: str, clients: Any, run_id: str) -> list[Outcome]:
    """Request the peering from the requester VPC to the accepter VPC (PeerRegion = accepter's region).

    CreateVpcPeeringConnection takes no idempotency token: tagging at creation plus the
    describe-first lookup is what keeps a retried request from making a second one.
    IAM: ec2:DescribeVpcs, ec2:DescribeVpcPeeringConnections, ec2:CreateVpcPeeringConnection,
    ec2:CreateTags.
    """
    peering = topology.peering(peering_name)
    region = topology.region_of(peering.requester)
    requester_id = require_vpc_id(topology, peering.requester, clients)
    accepter_id = require_vpc_id(topology, peering.accepter, clients)
    found = find_peering(topology, peering_name, clients)
    if found is not None:
        actual = (found["RequesterVpcInfo"]["VpcId"], found["AccepterVpcInfo"]["VpcId"])
        if actual != (requester_id, accepter_id):
            raise ConfigurationError(
                f"peering {peering_name}: {found['VpcPeeringConnectionId']} joins {actual[0]} to "
                f"{actual[1]}, expected {requester_id} ({peering.requester}) to {accepter_id} "
                f"({peering.accepter}); delete it"
            )
        return [Outcome("peering", peering_name, "unchanged", found["VpcPeeringConnectionId"], region)]
    created = clients.ec2(region).create_vpc_peering_connection(
        VpcId=requester_id,
        PeerVpcId=accepter_id,
        PeerRegion=topology.region_of(peering.accepter),
        TagSpecifications=tag_spec("vpc-peering-connection", topology.deployment, peering_name),
    )["VpcPeeringConnection"]
    return [Outcome("peering", peering_name, "created", created["VpcPeeringConnectionId"], region)]


def accept_peering(topology: Topology, peering_name: str, clients: Any) -> list[Outcome]:
    """Accept the peering in the accepter's region; nothing to do once it is active.

    Raises NotReadyError while the request has not reached the accepter region yet.
    IAM: ec2:DescribeVpcPeeringConnections, ec2:AcceptVpcPeeringConnection, ec2:CreateTags.
    """
    peering = topology.peering(peering_name)
    region = topology.region_of(peering.accepter)
    requested = find_peering(topology, peering_name, clients)
    if requested is None:
        raise NotReadyError(f"peering {peering_name}: not requested yet (RequestPeering must run first)")
    pcx_id = requested["VpcPeeringConnectionId"]
    ec2 = clients.ec2(region)
    try:
        seen = ec2.describe_vpc_peering_connections(VpcPeeringConnectionIds=[pcx_id])["VpcPeeringConnections"]
    except ClientError as e:
        if e.response["Error"]["Code"] == "InvalidVpcPeeringConnectionID.NotFound":
            seen = []
        else:
            raise
    if not seen:
        raise NotReadyError(f"peering {peering_name}: {pcx_id} not visible in {region} yet")
    pcx = seen[0]
    status = pcx["Status"]["Code"]
    outcomes = []
    if status in ("active", "provisioning"):
        outcomes.append(Outcome("peering_acceptance", peering_name, "unchanged", pcx_id, region))
    elif status == "pending-acceptance":
        ec2.accept_vpc_peering_connection(VpcPeeringConnectionId=pcx_id)
        outcomes.append(Outcome("peering_acceptance", peering_name, "created", pcx_id, region))
    elif status == "initiating-request":
        raise NotReadyError(f"peering {peering_name}: {pcx_id} is still {status}")
    else:
        raise ConfigurationError(f"peering {peering_name}: {pcx_id} is {status} in {region}; request it again")
    # Tag the accepter's side too, so that the accepter region alone shows whose peering it is.
    if not _ours(pcx, topology.deployment, peering_name):
        ec2.create_tags(Resources=[pcx_id], Tags=tags(topology.deployment, peering_name))
    return outcomes


def peering_status(topology: Topology, peering_name: str, clients: Any) -> str:
    """The requester side's status code ("pending-acceptance", "active", ...) or "missing".

    A read-only probe. IAM: ec2:DescribeVpcPeeringConnections.
    """
    found = find_peering(topology, peering_name, clients)
    if found is not None:
        return found["Status"]["Code"]
    # A peering that failed or was rejected is not live, but its state says more than "missing".
    peering = topology.peering(peering_name)
    ec2 = clients.ec2(topology.region_of(peering.requester))
    dead = [
        pcx
        for pcx in paginate(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
        if _ours(pcx, topology.deployment, peering_name) and pcx["Status"]["Code"] not in ("deleted", "deleting")
    ]
    return dead[-1]["Status"]["Code"] if dead else "missing"


def teardown_peerings(topology: Topology, clients: Any) -> list[Outcome]:
    """Delete every live peering of this deployment, seen from any region of the topology.

    Deleted from the requester's side: only the requester can delete one still pending acceptance.
    IAM: ec2:DescribeVpcPeeringConnections, ec2:DeleteVpcPeeringConnection.
    """
    regions = list(dict.fromkeys(v.region for v in topology.vpcs))
    outcomes = []
    done: set[str] = set()
    for region in regions:
        for pcx in live_peerings(clients.ec2(region), topology.deployment):
            pcx_id = pcx["VpcPeeringConnectionId"]
            if pcx_id in done:
                continue
            owner = pcx.get("RequesterVpcInfo", {}).get("Region") or region
            delete_resource(
                f"peering {pcx_id}",
                clients.ec2(owner).delete_vpc_peering_connection,
                VpcPeeringConnectionId=pcx_id,
            )
            done.add(pcx_id)
            outcomes.append(Outcome("peering", tag_value(pcx, TAG_NAME) or "", "deleted", pcx_id, owner))
    seen = {o.name for o in outcomes}
    outcomes += [
        Outcome("peering", p.name, "absent", None, topology.region_of(p.requester))
        for p in topology.peerings
        if p.name not in seen
    ]
    return outcomes
