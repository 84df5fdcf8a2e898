"""Converge one VPC: the VPC, its subnets, Internet Gateway, route tables and security groups.

Routes are not added here (``converge.routes`` and ``converge.instances.converge_nat`` do that,
once the peerings and the NAT instance exist). Every resource is found by its tags, so this module
also holds the tag lookups the other EC2 converge modules share.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import TAG_NAME, deployment_filter, tag_spec, tag_value
from regionha.converge import Outcome
from regionha.converge.links import detach_links
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Ingress, SecurityGroup, Topology, Vpc

# Errors that mean "something still depends on it": an ENI of a terminating instance, a Resolver
# endpoint in the subnet. Worth a retry of the teardown step, not a human.
DEPENDENCY_ERRORS = ("DependencyViolation", "InvalidNetworkInterface.InUse")


def igw_name(vpc_name: str) -> str:
    return f"{vpc_name}-igw"


def vpc_filter(vpc_id: str) -> dict[str, Any]:
    return {"Name": "vpc-id", "Values": [vpc_id]}


def paginate(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def only(found: list[dict[str, Any]], what: str, id_key: str) -> dict[str, Any] | None:
    """The single resource a lookup found; two with one logical name is a mess a human must sort out."""
    if len(found) > 1:
        ids = ", ".join(r[id_key] for r in found)
        raise ConfigurationError(f"{what}: {len(found)} resources carry this name ({ids}); delete the extra ones")
    return found[0] if found else None


def find_vpc(ec2: Any, deployment: str, vpc_name: str) -> dict[str, Any] | None:
    """IAM: ec2:DescribeVpcs."""
    found = list(paginate(ec2, "describe_vpcs", "Vpcs", Filters=deployment_filter(deployment, vpc_name)))
    return only(found, f"vpc {vpc_name}", "VpcId")


def require_vpc_id(topology: Topology, vpc_name: str, clients: Any) -> str:
    """The VPC's id; before ``converge_vpc`` made it, NotReadyError (the build may run VPCs in parallel)."""
    vpc = find_vpc(clients.ec2(topology.region_of(vpc_name)), topology.deployment, vpc_name)
    if vpc is None:
        raise NotReadyError(f"vpc {vpc_name}: not built yet (ConvergeNetwork must run first)")
    return vpc["VpcId"]


def find_internet_gateway(ec2: Any, deployment: str, vpc_name: str) -> dict[str, Any] | None:
    """IAM: ec2:DescribeInternetGateways."""
    found = list(
        paginate(
            ec2,
            "describe_internet_gateways",
            "InternetGateways",
            Filters=deployment_filter(deployment, igw_name(vpc_name)),
        )
    )
    return only(found, f"internet gateway of {vpc_name}", "InternetGatewayId")


def route_tables_by_name(ec2: Any, deployment: str, vpc_id: str) -> dict[str, dict[str, Any]]:
    """This deployment's route tables of one VPC, by logical name. IAM: ec2:DescribeRouteTables."""
    found = paginate(
        ec2,
        "describe_route_tables",
        "RouteTables",
        Filters=[vpc_filter(vpc_id), *deployment_filter(deployment)],
    )
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rt in found:
        by_name.setdefault(tag_value(rt, TAG_NAME) or "", []).append(rt)
    return {
        name: rt
        for name, rts in by_name.items()
        if (rt := only(rts, f"route table {name}", "RouteTableId")) is not None
    }


def require_route_table(tables: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in tables:
        raise NotReadyError(f"route table {name}: not built yet (ConvergeNetwork must run first)")
    return tables[name]


def find_security_group(ec2: Any, deployment: str, vpc_id: str, name: str) -> dict[str, Any] | None:
    """IAM: ec2:DescribeSecurityGroups."""
    found = list(
        paginate(
            ec2,
            "describe_security_groups",
            "SecurityGroups",
            Filters=[vpc_filter(vpc_id), *deployment_filter(deployment, name)],
        )
    )
    return only(found, f"security group {name}", "GroupId")


def find_subnet(ec2: Any, deployment: str, vpc_id: str, name: str) -> dict[str, Any] | None:
    """IAM: ec2:DescribeSubnets."""
    found = list(
        paginate(
            ec2,
            "describe_subnets",
            "Subnets",
            Filters=[vpc_filter(vpc_id), *deployment_filter(deployment, name)],
        )
    )
    return only(found, f"subnet {name}", "SubnetId")


def converge_vpc(topology: Topology, vpc_name: str, clients: Any, run_id: str) -> list[Outcome]:
    """Converge one VPC with its subnets, IGW, route tables (no routes) and security groups.

    ``run_id`` is unused today: none of these EC2 create calls takes a ClientToken, and tagging at
    creation makes the describe-first lookup find what an interrupted run already made.

    IAM: ec2:DescribeVpcs, ec2:CreateVpc, ec2:DescribeVpcAttribute, ec2:ModifyVpcAttribute,
    ec2:DescribeSubnets, ec2:CreateSubnet, ec2:ModifySubnetAttribute, ec2:DescribeInternetGateways,
    ec2:CreateInternetGateway, ec2:AttachInternetGateway, ec2:DescribeRouteTables,
    ec2:CreateRouteTable, ec2:AssociateRouteTable, ec2:ReplaceRouteTableAssociation,
    ec2:DescribeSecurityGroups, ec2:CreateSecurityGroup, ec2:DescribeSecurityGroupRules,
    ec2:AuthorizeSecurityGroupIngress, ec2:RevokeSecurityGroupIngress, ec2:CreateTags.
    """
    vpc = topology.vpc(vpc_name)
    ec2 = clients.ec2(vpc.region)
    vpc_id, outcomes = _converge_vpc_itself(ec2, topology.deployment, vpc)
    subnet_ids, subnet_outcomes = _converge_subnets(ec2, topology.deployment, vpc, vpc_id)
    outcomes += subnet_outcomes
    if vpc.internet_gateway:
        outcomes += _converge_internet_gateway(ec2, topology.deployment, vpc, vpc_id)
    outcomes += _converge_route_tables(ec2, topology.deployment, vpc, vpc_id, subnet_ids)
    for sg in vpc.security_groups:
        outcomes += converge_security_group(ec2, topology.deployment, vpc.region, vpc_id, sg)
    return outcomes


def _converge_vpc_itself(ec2: Any, deployment: str, vpc: Vpc) -> tuple[str, list[Outcome]]:
    found = find_vpc(ec2, deployment, vpc.name)
    if found is None:
        created = ec2.create_vpc(CidrBlock=str(vpc.cidr), TagSpecifications=tag_spec("vpc", deployment, vpc.name))
        vpc_id, action = created["Vpc"]["VpcId"], "created"
    else:
        vpc_id, action = found["VpcId"], "unchanged"
        if found["CidrBlock"] != str(vpc.cidr):
            raise ConfigurationError(
                f"vpc {vpc.name}: {vpc_id} has CIDR {found['CidrBlock']}, the topology says {vpc.cidr}; "
                "a VPC's primary CIDR cannot change: tear the VPC down to rebuild it"
            )
    # Resolver endpoints and the private hosted zone need both attributes; one attribute per call.
    for attribute, key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        if not ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=attribute)[key]["Value"]:
            ec2.modify_vpc_attribute(VpcId=vpc_id, **{key: {"Value": True}})
            action = "updated" if action == "unchanged" else action
    return vpc_id, [Outcome("vpc", vpc.name, action, vpc_id, vpc.region)]


def _converge_subnets(ec2: Any, deployment: str, vpc: Vpc, vpc_id: str) -> tuple[dict[str, str], list[Outcome]]:
    existing: dict[str, list[dict[str, Any]]] = {}
    for s in paginate(ec2, "describe_subnets", "Subnets", Filters=[vpc_filter(vpc_id), *deployment_filter(deployment)]):
        existing.setdefault(tag_value(s, TAG_NAME) or "", []).append(s)
    ids: dict[str, str] = {}
    outcomes = []
    for subnet in vpc.subnets:
        found = only(existing.get(subnet.name, []), f"subnet {subnet.name}", "SubnetId")
        if found is None:
            found = ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=str(subnet.cidr),
                AvailabilityZone=subnet.az,
                TagSpecifications=tag_spec("subnet", deployment, subnet.name),
            )["Subnet"]
            action = "created"
        else:
            action = "unchanged"
            if (found["CidrBlock"], found["AvailabilityZone"]) != (str(subnet.cidr), subnet.az):
                raise ConfigurationError(
                    f"subnet {subnet.name}: {found['SubnetId']} is {found['CidrBlock']} in "
                    f"{found['AvailabilityZone']}, the topology says {subnet.cidr} in {subnet.az}; a subnet "
                    "cannot move: tear it down to rebuild it"
                )
        if bool(found.get("MapPublicIpOnLaunch")) != subnet.public:
            ec2.modify_subnet_attribute(SubnetId=found["SubnetId"], MapPublicIpOnLaunch={"Value": subnet.public})
            action = "updated" if action == "unchanged" else action
        ids[subnet.name] = found["SubnetId"]
        outcomes.append(Outcome("subnet", subnet.name, action, found["SubnetId"], vpc.region))
    return ids, outcomes


def _converge_internet_gateway(ec2: Any, deployment: str, vpc: Vpc, vpc_id: str) -> list[Outcome]:
    name = igw_name(vpc.name)
    found = find_internet_gateway(ec2, deployment, vpc.name)
    if found is None:
        found = ec2.create_internet_gateway(TagSpecifications=tag_spec("internet-gateway", deployment, name))[
            "InternetGateway"
        ]
        outcomes = [Outcome("internet_gateway", name, "created", found["InternetGatewayId"], vpc.region)]
    else:
        outcomes = [Outcome("internet_gateway", name, "unchanged", found["InternetGatewayId"], vpc.region)]
    igw_id = found["InternetGatewayId"]
    attached = [a["VpcId"] for a in found.get("Attachments", []) if a.get("State") != "detached"]
    if vpc_id in attached:
        outcomes.append(Outcome("internet_gateway_attachment", name, "unchanged", igw_id, vpc.region))
    elif attached:
        raise ConfigurationError(f"internet gateway {name}: {igw_id} is attached to {attached[0]}, not to {vpc_id}")
    else:
        ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
        outcomes.append(Outcome("internet_gateway_attachment", name, "created", igw_id, vpc.region))
    return outcomes


def _converge_route_tables(
    ec2: Any, deployment: str, vpc: Vpc, vpc_id: str, subnet_ids: dict[str, str]
) -> list[Outcome]:
    # One dedicated, tagged table per topology route table: the main table stays AWS's default,
    # so a subnet that loses its association falls back to "local only", never to our routes.
    outcomes = []
    tables = route_tables_by_name(ec2, deployment, vpc_id)
    for rt in vpc.route_tables:
        if rt.name in tables:
            outcomes.append(Outcome("route_table", rt.name, "unchanged", tables[rt.name]["RouteTableId"], vpc.region))
        else:
            tables[rt.name] = ec2.create_route_table(
                VpcId=vpc_id, TagSpecifications=tag_spec("route-table", deployment, rt.name)
            )["RouteTable"]
            outcomes.append(Outcome("route_table", rt.name, "created", tables[rt.name]["RouteTableId"], vpc.region))
    # Which table each subnet is explicitly associated with, ours or anyone's in this VPC.
    current: dict[str, tuple[str, str]] = {}
    for table in paginate(ec2, "describe_route_tables", "RouteTables", Filters=[vpc_filter(vpc_id)]):
        for assoc in table.get("Associations", []):
            if assoc.get("SubnetId") and assoc.get("AssociationState", {}).get("State") != "disassociated":
                current[assoc["SubnetId"]] = (table["RouteTableId"], assoc["RouteTableAssociationId"])
    for rt in vpc.route_tables:
        rt_id = tables[rt.name]["RouteTableId"]
        for subnet in rt.subnets:
            subnet_id = subnet_ids[subnet]
            name = f"{rt.name}:{subnet}"
            if subnet_id not in current:
                ec2.associate_route_table(RouteTableId=rt_id, SubnetId=subnet_id)
                action = "created"
            elif current[subnet_id][0] != rt_id:
                ec2.replace_route_table_association(AssociationId=current[subnet_id][1], RouteTableId=rt_id)
                action = "updated"
            else:
                action = "unchanged"
            outcomes.append(Outcome("route_table_association", name, action, rt_id, vpc.region))
    return outcomes


RuleKey = tuple[str, int, int, str]


def _rule_key(ingress: Ingress) -> RuleKey:
    cidr = str(ingress.cidr)
    if ingress.protocol == "all":
        return ("-1", -1, -1, cidr)
    if ingress.protocol == "icmp":
        # For ICMP the port field is the ICMP type; every code of it.
        return ("icmp", -1 if ingress.port is None else ingress.port, -1, cidr)
    if ingress.port is None:
        return (ingress.protocol, 0, 65535, cidr)
    return (ingress.protocol, ingress.port, ingress.port, cidr)


def _existing_rule_key(rule: dict[str, Any]) -> RuleKey | None:
    """The key of a described rule; None for rules the topology cannot express (SG or prefix-list sources)."""
    if "CidrIpv4" not in rule:
        return None
    protocol = rule["IpProtocol"]
    if protocol == "-1":
        return ("-1", -1, -1, rule["CidrIpv4"])
    return (protocol, rule.get("FromPort", -1), rule.get("ToPort", -1), rule["CidrIpv4"])


def _rule_label(key: RuleKey) -> str:
    protocol, low, high, cidr = key
    if protocol == "-1":
        return f"all<-{cidr}"
    ports = str(low) if low == high else f"{low}-{high}"
    return f"{protocol}/{ports}<-{cidr}"


def converge_security_group(ec2: Any, deployment: str, region: str, vpc_id: str, sg: SecurityGroup) -> list[Outcome]:
    """One security group whose ingress is exactly the topology's; egress stays AWS's default.

    The group belongs to regionha (tagged), so every ingress rule in it is regionha's to manage:
    rules the topology does not list are revoked, whoever added them.
    IAM: ec2:DescribeSecurityGroups, ec2:CreateSecurityGroup, ec2:DescribeSecurityGroupRules,
    ec2:AuthorizeSecurityGroupIngress, ec2:RevokeSecurityGroupIngress, ec2:CreateTags.
    """
    found = find_security_group(ec2, deployment, vpc_id, sg.name)
    if found is None:
        group_id = ec2.create_security_group(
            VpcId=vpc_id,
            GroupName=sg.name,
            Description=sg.description,
            TagSpecifications=tag_spec("security-group", deployment, sg.name),
        )["GroupId"]
        group_action = "created"
    else:
        group_id = found["GroupId"]
        group_action = "unchanged"
    existing: dict[RuleKey | None, list[str]] = {}
    for rule in paginate(
        ec2,
        "describe_security_group_rules",
        "SecurityGroupRules",
        Filters=[{"Name": "group-id", "Values": [group_id]}],
    ):
        if not rule["IsEgress"]:
            existing.setdefault(_existing_rule_key(rule), []).append(rule["SecurityGroupRuleId"])
    wanted = list(dict.fromkeys(_rule_key(i) for i in sg.ingress))
    rule_outcomes = []
    stray = [rule_id for key, ids in existing.items() if key not in wanted for rule_id in ids]
    # A duplicate of a wanted rule (same key twice) is stray too, all but the first.
    stray += [rule_id for key in wanted for rule_id in existing.get(key, [])[1:]]
    if stray:
        ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=stray)
        rule_outcomes += [Outcome("security_group_rule", f"{sg.name}:{rid}", "deleted", rid, region) for rid in stray]
    for key in wanted:
        name = f"{sg.name}:{_rule_label(key)}"
        if existing.get(key):
            rule_outcomes.append(Outcome("security_group_rule", name, "unchanged", existing[key][0], region))
            continue
        protocol, low, high, cidr = key
        permission: dict[str, Any] = {"IpProtocol": protocol, "IpRanges": [{"CidrIp": cidr}]}
        if protocol != "-1":
            permission.update(FromPort=low, ToPort=high)
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[permission],
            TagSpecifications=tag_spec("security-group-rule", deployment, name),
        )
        rule_outcomes.append(Outcome("security_group_rule", name, "created", None, region))
    if group_action == "unchanged" and any(o.action != "unchanged" for o in rule_outcomes):
        group_action = "updated"
    return [Outcome("security_group", sg.name, group_action, group_id, region), *rule_outcomes]


# --- teardown ---------------------------------------------------------------------------------


def delete_resource(what: str, call: Any, **kwargs: Any) -> None:
    """Run one delete call; a dependency still in the way is worth a retry, a vanished resource is done."""
    try:
        call(**kwargs)
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code.endswith("NotFound") or code == "Gateway.NotAttached":
            return
        if code in DEPENDENCY_ERRORS:
            raise NotReadyError(f"{what}: {e.response['Error'].get('Message', code)}") from e
        raise


def live_endpoints(ec2: Any, deployment: str, vpc_id: str) -> list[dict[str, Any]]:
    """This deployment's gateway endpoints in one VPC that are not (being) deleted.
    IAM: ec2:DescribeVpcEndpoints."""
    found = paginate(ec2, "describe_vpc_endpoints", "VpcEndpoints",
                     Filters=[vpc_filter(vpc_id), *deployment_filter(deployment)])
    return [e for e in found if e.get("State", "").lower() not in ("deleted", "deleting", "failed", "rejected")]


def teardown_gateway_endpoints(ec2: Any, deployment: str, vpc_id: str, region: str) -> list[Outcome]:
    """Delete this deployment's endpoints of one VPC (before its route tables).
    IAM: ec2:DescribeVpcEndpoints, ec2:DeleteVpcEndpoints."""
    outcomes = []
    for e in live_endpoints(ec2, deployment, vpc_id):
        delete_resource(f"gateway endpoint {e['VpcEndpointId']}", ec2.delete_vpc_endpoints,
                        VpcEndpointIds=[e["VpcEndpointId"]])
        name = tag_value(e, TAG_NAME) or ""
        outcomes.append(Outcome("gateway_endpoint", name, "deleted", e["VpcEndpointId"], region))
    return outcomes


def teardown_vpc(topology: Topology, vpc_name: str, clients: Any) -> list[Outcome]:
    """Delete one VPC and what the build put in it, in reverse build order; only this deployment's.

    Instances must be gone first (``teardown_instances``); an instance still shutting down makes
    this step raise NotReadyError (retry), any other instance in the VPC is a ConfigurationError.
    Works on a half-built VPC: whatever is not there is reported ``absent``.
    IAM: ec2:DescribeVpcs, ec2:DescribeInstances, ec2:DescribeRouteTables,
    ec2:DisassociateRouteTable, ec2:DeleteRouteTable, ec2:DescribeSecurityGroups,
    ec2:DeleteSecurityGroup, ec2:DescribeSubnets, ec2:DeleteSubnet, ec2:DescribeInternetGateways,
    ec2:DetachInternetGateway, ec2:DeleteInternetGateway, ec2:DeleteVpc, ec2:DescribeVpcEndpoints,
    ec2:DeleteVpcEndpoints, ec2:DescribeVpnGateways, ec2:DetachVpnGateway.
    """
    vpc = topology.vpc(vpc_name)
    ec2 = clients.ec2(vpc.region)
    deployment = topology.deployment
    vpcs = list(paginate(ec2, "describe_vpcs", "Vpcs", Filters=deployment_filter(deployment, vpc_name)))
    outcomes: list[Outcome] = []
    for found in vpcs:
        outcomes += _teardown_vpc_contents(ec2, deployment, vpc, found["VpcId"])
    # The IGW is looked up by its name, not through the VPC: a run interrupted between creating and
    # attaching it leaves it detached.
    for igw in paginate(
        ec2,
        "describe_internet_gateways",
        "InternetGateways",
        Filters=deployment_filter(deployment, igw_name(vpc_name)),
    ):
        igw_id = igw["InternetGatewayId"]
        for attachment in igw.get("Attachments", []):
            delete_resource(
                f"internet gateway {igw_id}",
                ec2.detach_internet_gateway,
                InternetGatewayId=igw_id,
                VpcId=attachment["VpcId"],
            )
        delete_resource(f"internet gateway {igw_id}", ec2.delete_internet_gateway, InternetGatewayId=igw_id)
        outcomes.append(Outcome("internet_gateway", igw_name(vpc_name), "deleted", igw_id, vpc.region))
    for found in vpcs:
        # An on-prem site's given gateways: detached, never deleted (converge.links).
        outcomes += detach_links(topology, vpc_name, found["VpcId"], clients)
        delete_resource(f"vpc {vpc_name} ({found['VpcId']})", ec2.delete_vpc, VpcId=found["VpcId"])
        outcomes.append(Outcome("vpc", vpc_name, "deleted", found["VpcId"], vpc.region))
    expected = [("vpc", vpc_name)]
    if vpc.internet_gateway:
        expected.append(("internet_gateway", igw_name(vpc_name)))
    expected += [("route_table", rt.name) for rt in vpc.route_tables]
    expected += [("security_group", sg.name) for sg in vpc.security_groups]
    expected += [("subnet", s.name) for s in vpc.subnets]
    seen = {(o.kind, o.name) for o in outcomes}
    outcomes += [Outcome(kind, name, "absent", None, vpc.region) for kind, name in expected if (kind, name) not in seen]
    return outcomes


def _teardown_vpc_contents(ec2: Any, deployment: str, vpc: Vpc, vpc_id: str) -> list[Outcome]:
    in_vpc = [vpc_filter(vpc_id)]
    instances = [
        i
        for r in paginate(ec2, "describe_instances", "Reservations", Filters=in_vpc)
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    if any(i["State"]["Name"] == "shutting-down" for i in instances):
        raise NotReadyError(f"vpc {vpc.name}: instances still shutting down")
    if instances:
        ids = ", ".join(i["InstanceId"] for i in instances)
        raise ConfigurationError(f"vpc {vpc.name}: instances still in it ({ids}); terminate them first")
    # A gateway endpoint holds routes in the route tables that go next.
    outcomes = teardown_gateway_endpoints(ec2, deployment, vpc_id, vpc.region)
    mine = [*in_vpc, *deployment_filter(deployment)]
    for rt in paginate(ec2, "describe_route_tables", "RouteTables", Filters=mine):
        for assoc in rt.get("Associations", []):
            if not assoc.get("Main"):
                delete_resource(
                    f"route table association {assoc['RouteTableAssociationId']}",
                    ec2.disassociate_route_table,
                    AssociationId=assoc["RouteTableAssociationId"],
                )
        delete_resource(f"route table {rt['RouteTableId']}", ec2.delete_route_table, RouteTableId=rt["RouteTableId"])
        outcomes.append(
            Outcome("route_table", tag_value(rt, TAG_NAME) or "", "deleted", rt["RouteTableId"], vpc.region)
        )
    for sg in paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=mine):
        delete_resource(f"security group {sg['GroupId']}", ec2.delete_security_group, GroupId=sg["GroupId"])
        outcomes.append(Outcome("security_group", tag_value(sg, TAG_NAME) or "", "deleted", sg["GroupId"], vpc.region))
    for subnet in paginate(ec2, "describe_subnets", "Subnets", Filters=mine):
        delete_resource(f"subnet {subnet['SubnetId']}", ec2.delete_subnet, SubnetId=subnet["SubnetId"])
        outcomes.append(Outcome("subnet", tag_value(subnet, TAG_NAME) or "", "deleted", subnet["SubnetId"], vpc.region))
    return outcomes
