"""Converge the routes of one VPC's route tables: the IGW and peering targets, and the gateway endpoints.

Routes with target ``nat`` are ``converge_nat``'s (they need the NAT instance's ENI); this module
keeps them, and removes any other route someone added by hand to a regionha route table.

Gateway endpoints (``vpc.gateway_endpoints``) give private subnets the egress their instances'
package installs need without a default route: the Amazon Linux 2023 repositories are served from
S3 in each region (``al2023-repos-<region>-….s3.dualstack.<region>.amazonaws.com``), so an S3 gateway
endpoint's prefix-list route in the subnet's table is enough for ``dnf install`` (Amazon VPC
PrivateLink guide, "Gateway endpoints for Amazon S3"; no charge for gateway endpoints).
"""

from __future__ import annotations

from typing import Any

from regionha.aws import TAG_NAME, tag_spec, tag_value
from regionha.converge import Outcome, idempotency_token
from regionha.converge.links import converge_link_attachments, link_route_target
from regionha.converge.network import (
    find_internet_gateway,
    igw_name,
    live_endpoints,
    only,
    require_route_table,
    require_vpc_id,
    route_tables_by_name,
)
from regionha.converge.peering import find_peering
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Topology

# How DescribeRouteTables names a route's target, most specific first: an ENI route to an
# instance also carries the InstanceId.
TARGET_KEYS = (
    "VpcPeeringConnectionId",
    "NetworkInterfaceId",
    "NatGatewayId",
    "TransitGatewayId",
    "VpcEndpointId",
    "CarrierGatewayId",
    "LocalGatewayId",
    "EgressOnlyInternetGatewayId",
    "GatewayId",
    "InstanceId",
)


def route_target(route: dict[str, Any]) -> tuple[str, str] | None:
    return next(((k, route[k]) for k in TARGET_KEYS if route.get(k)), None)


def converge_route(
    ec2: Any, table: dict[str, Any], table_name: str, destination: str, target: tuple[str, str], region: str
) -> Outcome:
    """One route of a described table: create it, or replace its target if it drifted.

    IAM: ec2:CreateRoute, ec2:ReplaceRoute.
    """
    name = f"{table_name}:{destination}"
    current = next((r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == destination), None)
    key, value = target
    if current is None:
        ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock=destination, **{key: value})
        return Outcome("route", name, "created", value, region)
    if route_target(current) == target:
        return Outcome("route", name, "unchanged", value, region)
    ec2.replace_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock=destination, **{key: value})
    return Outcome("route", name, "updated", value, region)


def converge_routes(topology: Topology, vpc_name: str, clients: Any, run_id: str = "manual") -> list[Outcome]:
    """Every route with target ``igw``, ``peering:<name>`` or ``link:<name>`` in every route table of one
    VPC, and the VPC's gateway endpoints (``converge_gateway_endpoints``). An on-prem site's given links
    landing in this VPC are attached first (``converge.links``), their routes go to the gateway.

    Routes to a peering need it active (NotReadyError before). Routes no topology row names are
    deleted; ``local``, propagated and gateway endpoint (prefix-list) routes are never touched here.
    IAM: ec2:DescribeVpcs, ec2:DescribeRouteTables, ec2:DescribeInternetGateways,
    ec2:DescribeVpcPeeringConnections, ec2:CreateRoute, ec2:ReplaceRoute, ec2:DeleteRoute, and those of
    ``converge_gateway_endpoints`` and ``converge.links.converge_link_attachments``.
    """
    vpc = topology.vpc(vpc_name)
    ec2 = clients.ec2(vpc.region)
    vpc_id = require_vpc_id(topology, vpc_name, clients)
    tables = route_tables_by_name(ec2, topology.deployment, vpc_id)
    targets: dict[str, tuple[str, str]] = {}
    links = converge_link_attachments(topology, vpc_name, vpc_id, clients)

    def target_of(target: str, peering: str | None) -> tuple[str, str]:
        if target not in targets:
            if target.startswith("link:"):
                targets[target] = link_route_target(topology, target.split(":", 1)[1], clients)
            elif peering is None:
                igw = find_internet_gateway(ec2, topology.deployment, vpc_name)
                if igw is None:
                    raise NotReadyError(f"internet gateway {igw_name(vpc_name)}: not built yet")
                targets[target] = ("GatewayId", igw["InternetGatewayId"])
            else:
                pcx = find_peering(topology, peering, clients)
                if pcx is None or pcx["Status"]["Code"] != "active":
                    state = "missing" if pcx is None else pcx["Status"]["Code"]
                    raise NotReadyError(f"peering {peering}: {state}, routes need it active")
                targets[target] = ("VpcPeeringConnectionId", pcx["VpcPeeringConnectionId"])
        return targets[target]

    outcomes = []
    for rt in vpc.route_tables:
        table = require_route_table(tables, rt.name)
        routes = []
        for route in rt.routes:
            if route.target == "nat":
                continue
            target = target_of(route.target, route.peering)
            routes.append(converge_route(ec2, table, rt.name, str(route.destination), target, vpc.region))
        wanted = {str(r.destination) for r in rt.routes}
        for current in table.get("Routes", []):
            destination = current.get("DestinationCidrBlock")
            added = current.get("Origin") == "CreateRoute" and current.get("GatewayId") != "local"
            if added and destination and destination not in wanted:
                ec2.delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock=destination)
                routes.append(Outcome("route", f"{rt.name}:{destination}", "deleted", None, vpc.region))
        outcomes += [table_outcome(table, rt.name, routes, vpc.region), *routes]
    return links + outcomes + converge_gateway_endpoints(topology, vpc_name, clients, run_id)


def endpoint_name(vpc_name: str, service: str) -> str:
    return f"{vpc_name}-{service}-endpoint"


def service_name(region: str, service: str) -> str:
    """The endpoint service of an AWS service in a region, e.g. ``com.amazonaws.ap-northeast-3.s3``."""
    return f"com.amazonaws.{region}.{service}"


def converge_gateway_endpoints(topology: Topology, vpc_name: str, clients: Any, run_id: str) -> list[Outcome]:
    """One gateway endpoint per ``vpc.gateway_endpoints`` entry, its route tables exactly those named;
    a regionha endpoint the topology no longer names is deleted.

    Drifted route tables are fixed with ModifyVpcEndpoint (EC2 adds/removes the prefix-list routes).
    IAM: ec2:DescribeVpcEndpoints, ec2:CreateVpcEndpoint, ec2:ModifyVpcEndpoint, ec2:DeleteVpcEndpoints,
    ec2:CreateTags, ec2:DescribeRouteTables.
    """
    vpc = topology.vpc(vpc_name)
    ec2 = clients.ec2(vpc.region)
    vpc_id = require_vpc_id(topology, vpc_name, clients)
    existing: dict[str, list[dict[str, Any]]] = {}
    for e in live_endpoints(ec2, topology.deployment, vpc_id):
        existing.setdefault(tag_value(e, TAG_NAME) or "", []).append(e)
    wanted_names = set()
    tables = route_tables_by_name(ec2, topology.deployment, vpc_id) if vpc.gateway_endpoints else {}
    outcomes = []
    for endpoint in vpc.gateway_endpoints:
        name = endpoint_name(vpc_name, endpoint.service)
        wanted_names.add(name)
        want = {require_route_table(tables, t)["RouteTableId"] for t in endpoint.route_tables}
        found = only(existing.get(name, []), f"gateway endpoint {name}", "VpcEndpointId")
        if found is None:
            created = ec2.create_vpc_endpoint(
                VpcEndpointType="Gateway",
                VpcId=vpc_id,
                ServiceName=service_name(vpc.region, endpoint.service),
                RouteTableIds=sorted(want),
                TagSpecifications=tag_spec("vpc-endpoint", topology.deployment, name),
                ClientToken=idempotency_token(topology.deployment, name, run_id),
            )["VpcEndpoint"]
            outcomes.append(Outcome("gateway_endpoint", name, "created", created["VpcEndpointId"], vpc.region))
            continue
        if found.get("ServiceName") != service_name(vpc.region, endpoint.service):
            raise ConfigurationError(
                f"gateway endpoint {name}: {found['VpcEndpointId']} serves {found.get('ServiceName')}; "
                "delete it to rebuild"
            )
        have = set(found.get("RouteTableIds") or [])
        if have == want:
            outcomes.append(Outcome("gateway_endpoint", name, "unchanged", found["VpcEndpointId"], vpc.region))
            continue
        changes: dict[str, Any] = {}
        if want - have:
            changes["AddRouteTableIds"] = sorted(want - have)
        if have - want:
            changes["RemoveRouteTableIds"] = sorted(have - want)
        ec2.modify_vpc_endpoint(VpcEndpointId=found["VpcEndpointId"], **changes)
        outcomes.append(Outcome("gateway_endpoint", name, "updated", found["VpcEndpointId"], vpc.region))
    for name, endpoints in existing.items():
        if name not in wanted_names:
            ids = [e["VpcEndpointId"] for e in endpoints]
            ec2.delete_vpc_endpoints(VpcEndpointIds=ids)
            outcomes += [Outcome("gateway_endpoint", name, "deleted", i, vpc.region) for i in ids]
    return outcomes


def table_outcome(table: dict[str, Any], name: str, routes: list[Outcome], region: str) -> Outcome:
    """One line per route table: ``updated`` when any of its routes changed, so drift shows at a glance."""
    action = "unchanged" if all(o.action == "unchanged" for o in routes) else "updated"
    return Outcome("route_table_routes", name, action, table["RouteTableId"], region)
