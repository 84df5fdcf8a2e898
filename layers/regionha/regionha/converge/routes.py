"""Converge the routes of one VPC's route tables: the IGW and peering targets.

Routes with target ``nat`` are ``converge_nat``'s (they need the NAT instance's ENI); this module
keeps them, and removes any other route someone added by hand to a regionha route table.
"""

from __future__ import annotations

from typing import Any

from regionha.converge import Outcome
from regionha.converge.network import (
    find_internet_gateway,
    igw_name,
    require_route_table,
    require_vpc_id,
    route_tables_by_name,
)
from regionha.converge.peering import find_peering
from regionha.errors import NotReadyError
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


def converge_routes(topology: Topology, vpc_name: str, clients: Any) -> list[Outcome]:
    """Every route with target ``igw`` or ``peering:<name>`` in every route table of one VPC.

    Routes to a peering need it active (NotReadyError before). Routes no topology row names are
    deleted; ``local`` and propagated routes are never touched.
    IAM: ec2:DescribeVpcs, ec2:DescribeRouteTables, ec2:DescribeInternetGateways,
    ec2:DescribeVpcPeeringConnections, ec2:CreateRoute, ec2:ReplaceRoute, ec2:DeleteRoute.
    """
    vpc = topology.vpc(vpc_name)
    ec2 = clients.ec2(vpc.region)
    vpc_id = require_vpc_id(topology, vpc_name, clients)
    tables = route_tables_by_name(ec2, topology.deployment, vpc_id)
    targets: dict[str, tuple[str, str]] = {}

    def target_of(target: str, peering: str | None) -> tuple[str, str]:
        if target not in targets:
            if peering is None:
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
    return outcomes


def table_outcome(table: dict[str, Any], name: str, routes: list[Outcome], region: str) -> Outcome:
    """One line per route table: ``updated`` when any of its routes changed, so drift shows at a glance."""
    action = "unchanged" if all(o.action == "unchanged" for o in routes) else "updated"
    return Outcome("route_table_routes", name, action, table["RouteTableId"], region)
