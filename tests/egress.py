"""Test helper: the egress ConvergeRoutes gives a VPC before any instance is launched in it."""

from __future__ import annotations

from regionha.aws import Clients, deployment_filter
from regionha.converge.network import find_internet_gateway, route_tables_by_name
from regionha.converge.routes import converge_gateway_endpoints
from regionha.topology import Topology


def give_egress(topology: Topology, clients: Clients, vpc_name: str = "osaka", run_id: str = "run-1") -> None:
    """The IGW default routes of the VPC's public route tables and its gateway endpoints (no peering
    routes: those need active peerings)."""
    ec2 = clients.ec2(topology.region_of(vpc_name))
    vpc_id = ec2.describe_vpcs(Filters=deployment_filter(topology.deployment, vpc_name))["Vpcs"][0]["VpcId"]
    igw = find_internet_gateway(ec2, topology.deployment, vpc_name)["InternetGatewayId"]
    tables = route_tables_by_name(ec2, topology.deployment, vpc_id)
    for rt in topology.vpc(vpc_name).route_tables:
        if any(r.target == "igw" for r in rt.routes):
            ec2.create_route(RouteTableId=tables[rt.name]["RouteTableId"], DestinationCidrBlock="0.0.0.0/0",
                             GatewayId=igw)
    converge_gateway_endpoints(topology, vpc_name, clients, run_id)
