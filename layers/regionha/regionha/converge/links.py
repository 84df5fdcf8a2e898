"""A real on-prem site's given links (``client.links``): its virtual private gateways on our VPCs.

regionha builds none of a link: the customer gateway, the Site-to-Site VPN connection or the Direct
Connect virtual interface exist, and end on a virtual private gateway (VGW) the user made. A VGW can
carry traffic only for the one VPC it is attached to, and regionha makes that VPC, so the build
attaches the given VGW to it (``converge_link_attachments``) and routes the site over it
(``link:<name>`` routes, ``converge.routes``); the teardown detaches it and never deletes it.

AWS docs followed: EC2 API Reference "AttachVpnGateway", "DetachVpnGateway" (wait for ``detached``
before deleting the VPC or attaching another), "VpcAttachment" (attaching | attached | detaching |
detached); Site-to-Site VPN User Guide "Virtual private gateway" (one VPC at a time).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from regionha.converge import Outcome
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Link, Topology

LIVE = ("attaching", "attached")


def links_of(topology: Topology, vpc_name: str) -> list[tuple[int, Link]]:
    """(index in client.links, link) of the given links landing in ``vpc_name``; none for a VPC site."""
    if not topology.client.onprem:
        return []
    return [(i, lk) for i, lk in enumerate(topology.client.links) if lk.vpc == vpc_name]


def describe_gateway(ec2: Any, link: Link, field: str) -> dict[str, Any]:
    """The given VGW; ConfigurationError (a human must fix the topology or make the link) when EC2 does
    not know it in this region or it is being deleted. IAM: ec2:DescribeVpnGateways."""
    try:
        found = ec2.describe_vpn_gateways(VpnGatewayIds=[link.gateway_id])["VpnGateways"]
    except ClientError as e:
        if e.response["Error"]["Code"] in ("InvalidVpnGatewayID.NotFound", "InvalidVpnGatewayID.Malformed"):
            found = []
        else:
            raise
    if not found or found[0].get("State") in ("deleting", "deleted"):
        state = found[0]["State"] if found else "not found"
        raise ConfigurationError(
            f"{field}.gateway_id: virtual private gateway {link.gateway_id} of link {link.name} is {state} in "
            f"{ec2.meta.region_name}: links are given, not built; make the VPN or Direct Connect link's gateway "
            "there first (docs/onprem.md)"
        )
    return found[0]


def attachment(gateway: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway's live VPC attachment (attaching or attached), if any."""
    return next((a for a in gateway.get("VpcAttachments", []) if a.get("State") in LIVE), None)


def converge_link_attachments(topology: Topology, vpc_name: str, vpc_id: str, clients: Any) -> list[Outcome]:
    """Attach each given VGW landing in ``vpc_name`` to the built VPC ``vpc_id``.

    Attached to another VPC: ConfigurationError naming the link (regionha never moves a gateway the
    user may be using elsewhere). IAM: ec2:DescribeVpnGateways, ec2:AttachVpnGateway.
    """
    region = topology.region_of(vpc_name)
    ec2 = clients.ec2(region)
    outcomes = []
    for i, link in links_of(topology, vpc_name):
        gateway = describe_gateway(ec2, link, f"client.links[{i}]")
        current = attachment(gateway)
        if current is not None and current["VpcId"] != vpc_id:
            raise ConfigurationError(
                f"client.links[{i}].gateway_id: virtual private gateway {link.gateway_id} is attached to "
                f"{current['VpcId']}, not to VPC {vpc_name} ({vpc_id}); detach it there first"
            )
        if current is None:
            ec2.attach_vpn_gateway(VpcId=vpc_id, VpnGatewayId=link.gateway_id)
            outcomes.append(Outcome("link_attachment", link.name, "created", link.gateway_id, region))
        else:
            outcomes.append(Outcome("link_attachment", link.name, "unchanged", link.gateway_id, region))
    return outcomes


def link_route_target(topology: Topology, link_name: str, clients: Any) -> tuple[str, str]:
    """CreateRoute's target for a ``link:<name>`` route: the VGW, once attached (``GatewayId``).
    NotReadyError while it is still attaching. IAM: ec2:DescribeVpnGateways."""
    index, link = next((i, lk) for i, lk in enumerate(topology.client.links) if lk.name == link_name)
    gateway = describe_gateway(clients.ec2(topology.region_of(link.vpc)), link, f"client.links[{index}]")
    current = attachment(gateway)
    if current is None or current["State"] != "attached":
        state = current["State"] if current else "detached"
        raise NotReadyError(f"link {link.name}: gateway {link.gateway_id} is {state}, routes need it attached")
    return ("GatewayId", link.gateway_id)


def detach_links(topology: Topology, vpc_name: str, vpc_id: str | None, clients: Any) -> list[Outcome]:
    """Teardown: detach each given VGW from this deployment's VPC (never delete it: it is the user's).

    NotReadyError until every attachment is ``detached`` (EC2 refuses to delete a VPC before). A
    gateway gone or attached elsewhere is left alone. IAM: ec2:DescribeVpnGateways, ec2:DetachVpnGateway.
    """
    region = topology.region_of(vpc_name)
    ec2 = clients.ec2(region)
    outcomes = []
    for i, link in links_of(topology, vpc_name):
        try:
            gateway = describe_gateway(ec2, link, f"client.links[{i}]")
        except ConfigurationError:
            outcomes.append(Outcome("link_attachment", link.name, "absent", link.gateway_id, region))
            continue
        mine = [a for a in gateway.get("VpcAttachments", []) if a.get("VpcId") == vpc_id]
        live = [a for a in mine if a.get("State") in LIVE]
        if live:
            ec2.detach_vpn_gateway(VpcId=vpc_id, VpnGatewayId=link.gateway_id)
            outcomes.append(Outcome("link_attachment", link.name, "deleted", link.gateway_id, region))
            mine = [a for a in describe_gateway(ec2, link, f"client.links[{i}]").get("VpcAttachments", [])
                    if a.get("VpcId") == vpc_id]
        if any(a.get("State") != "detached" for a in mine):
            raise NotReadyError(f"link {link.name}: gateway {link.gateway_id} still detaching from {vpc_id}")
        if not live:
            outcomes.append(Outcome("link_attachment", link.name, "absent", link.gateway_id, region))
    return outcomes
