"""The inventory: what a build made, found by tags, saved where canaries, failover and drills read it.

Read-only by construction (describe/list/get calls only), except ``save_inventory`` and
``delete_inventory`` which write the state table item.
"""

from __future__ import annotations

import json
import time
from typing import Any

from regionha.aws import TAG_NAME, Clients, deployment_filter, tag_value
from regionha.record import read_record, zone_summary
from regionha.topology import Topology

INVENTORY_SK = "inventory"


def _by_name(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {tag_value(r, TAG_NAME): r for r in resources if tag_value(r, TAG_NAME)}


def collect_inventory(topology: Topology, clients: Clients) -> dict[str, Any]:
    """Describe everything the deployment's tags name. IAM: ec2:Describe*, route53:List*/Get*,
    route53resolver:ListResolverEndpoints, route53resolver:ListResolverEndpointIpAddresses."""
    dep = topology.deployment
    inv: dict[str, Any] = {
        "deployment": dep,
        "collected_at": time.time(),
        # Scheduled canaries, failover and drills start from this, not from a state machine input.
        "topology": topology.to_json(),
        "vpcs": {},
        "peerings": {},
        "instances": {},
        "zone": None,
        "resolver_endpoints": {},
        "record": None,
    }
    for vpc in topology.vpcs:
        ec2 = clients.ec2(vpc.region)
        found = _by_name(ec2.describe_vpcs(Filters=deployment_filter(dep, vpc.name))["Vpcs"])
        if vpc.name not in found:
            continue
        vpc_id = found[vpc.name]["VpcId"]
        in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}, *deployment_filter(dep)]
        subnets = _by_name(ec2.describe_subnets(Filters=in_vpc)["Subnets"])
        acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkAcls"]
        acl_of = {a["SubnetId"]: acl["NetworkAclId"] for acl in acls for a in acl.get("Associations", [])}
        inv["vpcs"][vpc.name] = {
            "region": vpc.region,
            "id": vpc_id,
            "subnets": {
                n: {"id": s["SubnetId"], "cidr": s["CidrBlock"], "network_acl": acl_of.get(s["SubnetId"])}
                for n, s in subnets.items()
            },
            "security_groups": {
                n: g["GroupId"]
                for n, g in _by_name(ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]).items()
            },
            "route_tables": {
                n: t["RouteTableId"]
                for n, t in _by_name(ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]).items()
            },
        }
        reservations = ec2.describe_instances(Filters=in_vpc)["Reservations"]
        for inst in (i for r in reservations for i in r["Instances"]):
            name = tag_value(inst, TAG_NAME)
            state = inst["State"]["Name"]
            if not name or state in ("terminated", "shutting-down"):
                continue
            inv["instances"][name] = {
                "id": inst["InstanceId"],
                "region": vpc.region,
                "vpc": vpc.name,
                "state": state,
                "private_ip": inst.get("PrivateIpAddress"),
                "role": tag_value(inst, "regionha:role"),
            }
    for peering in topology.peerings:
        region = topology.region_of(peering.requester)
        # moto ignores Filters on this call (and AWS returns deleted ones for a while): filter here.
        for pcx in clients.ec2(region).describe_vpc_peering_connections()["VpcPeeringConnections"]:
            status = pcx["Status"]["Code"]
            if (
                tag_value(pcx, TAG_NAME) == peering.name
                and tag_value(pcx, "regionha:deployment") == dep
                and status not in ("deleted", "rejected", "failed", "expired")
            ):
                inv["peerings"][peering.name] = {
                    "id": pcx["VpcPeeringConnectionId"],
                    "status": status,
                    "requester_region": pcx["RequesterVpcInfo"].get("Region"),
                    "accepter_region": pcx["AccepterVpcInfo"].get("Region"),
                }
    inv["zone"] = zone_summary(topology, clients)
    for path in topology.forwarder_paths:
        if path.kind != "resolver_endpoint":
            continue
        resolver = clients.route53resolver(topology.region_of(path.vpc))
        for ep in resolver.list_resolver_endpoints()["ResolverEndpoints"]:
            if ep["Name"] != path.endpoint_name or ep["Direction"] != "INBOUND":
                continue
            ips = resolver.list_resolver_endpoint_ip_addresses(ResolverEndpointId=ep["Id"])["IpAddresses"]
            inv["resolver_endpoints"][path.name] = {
                "id": ep["Id"],
                "region": topology.region_of(path.vpc),
                "status": ep["Status"],
                "ips": sorted(a["Ip"] for a in ips),
            }
    if inv["zone"]:
        inv["record"] = read_record(topology, clients)
    return inv


def save_inventory(clients: Clients, table: str, region: str, inventory: dict[str, Any]) -> bool:
    """Write the inventory unless the saved one says the same; True if it wrote.

    IAM: dynamodb:GetItem, dynamodb:PutItem on the state table.
    """
    saved = load_inventory(clients, table, region, inventory["deployment"])
    if saved is not None and _same(saved, inventory):
        return False  # a re-run with nothing changed writes nothing
    clients.client("dynamodb", region).put_item(
        TableName=table,
        Item={
            "pk": {"S": inventory["deployment"]},
            "sk": {"S": INVENTORY_SK},
            "body": {"S": json.dumps(inventory, sort_keys=True)},
        },
    )
    return True


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(inv: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in inv.items() if k != "collected_at"}

    return json.loads(json.dumps(strip(a), sort_keys=True)) == json.loads(json.dumps(strip(b), sort_keys=True))


def load_inventory(clients: Clients, table: str, region: str, deployment: str) -> dict[str, Any] | None:
    """IAM: dynamodb:GetItem on the state table."""
    item = clients.client("dynamodb", region).get_item(
        TableName=table, Key={"pk": {"S": deployment}, "sk": {"S": INVENTORY_SK}}, ConsistentRead=True
    ).get("Item")
    return json.loads(item["body"]["S"]) if item else None


def delete_inventory(clients: Clients, table: str, region: str, deployment: str) -> None:
    """IAM: dynamodb:DeleteItem on the state table."""
    clients.client("dynamodb", region).delete_item(
        TableName=table, Key={"pk": {"S": deployment}, "sk": {"S": INVENTORY_SK}}
    )
