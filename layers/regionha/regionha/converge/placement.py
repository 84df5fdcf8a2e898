"""Network placement of the canary: the RunCanary function inside the client site's network.

The stack (template.yaml) creates the function without a VpcConfig, because the client VPC does not
exist until a build made it. The build then calls ``place_canary``: a tagged security group "Canary"
in the client VPC (no ingress: nothing ever connects to the canary) and the function's VpcConfig set
to the subnet of the client site's DNS server with that group. Probes then leave from an address of
the client subnet, which the forwarder paths' security groups (DNS from the client subnet only) and
the nodes' groups admit, exactly as they admit the client. Teardown calls ``unplace_canary`` before
the client VPC goes, so that Lambda releases its network interfaces in that subnet.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import tag_spec
from regionha.converge import Outcome
from regionha.converge.network import find_security_group, find_subnet, paginate, require_vpc_id
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Topology

CANARY_GROUP = "Canary"
_ALL_EGRESS = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}


def _function_region(function_name: str, region: str) -> None:
    # A function's VpcConfig can only name subnets of its own region.
    if function_name.startswith("arn:"):
        parts = function_name.split(":")
        if len(parts) < 7 or parts[2] != "lambda":
            raise ConfigurationError(f"{function_name!r} is not a Lambda function ARN")
        if parts[3] != region:
            raise ConfigurationError(
                f"canary function {function_name} is in {parts[3]}, but the client site's VPC is in "
                f"{region}: deploy the stack in the client site's region"
            )


def _converge_group(ec2: Any, deployment: str, region: str, vpc_id: str) -> tuple[str, list[Outcome]]:
    found = find_security_group(ec2, deployment, vpc_id, CANARY_GROUP)
    if found is None:
        group_id = ec2.create_security_group(
            VpcId=vpc_id,
            GroupName=CANARY_GROUP,
            Description="regionha canary: outbound probes only",
            TagSpecifications=tag_spec("security-group", deployment, CANARY_GROUP),
        )["GroupId"]
        action = "created"
    else:
        group_id, action = found["GroupId"], "unchanged"
    rules = list(paginate(ec2, "describe_security_group_rules", "SecurityGroupRules",
                          Filters=[{"Name": "group-id", "Values": [group_id]}]))
    # Nothing connects to the canary; any inbound rule is drift (or a hole someone opened).
    ingress = [r["SecurityGroupRuleId"] for r in rules if not r["IsEgress"]]
    if ingress:
        ec2.revoke_security_group_ingress(GroupId=group_id, SecurityGroupRuleIds=ingress)
    has_all_egress = any(
        r["IsEgress"] and r.get("IpProtocol") == "-1" and r.get("CidrIpv4") == "0.0.0.0/0" for r in rules
    )
    if not has_all_egress:
        ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=[_ALL_EGRESS])
    if action == "unchanged" and (ingress or not has_all_egress):
        action = "updated"
    return group_id, [Outcome("security_group", CANARY_GROUP, action, group_id, region)]


def _vpc_config(lam: Any, function_name: str) -> dict[str, Any]:
    try:
        config = lam.get_function_configuration(FunctionName=function_name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise ConfigurationError(
                f"canary function {function_name} not found: deploy the stack first"
            ) from e
        raise
    if config.get("LastUpdateStatus") == "InProgress":
        raise NotReadyError(
            f"canary function {function_name}: an earlier configuration update is in progress"
        )
    return config.get("VpcConfig") or {}


def _set_vpc_config(lam: Any, function_name: str, subnets: list[str], groups: list[str]) -> None:
    try:
        lam.update_function_configuration(
            FunctionName=function_name, VpcConfig={"SubnetIds": subnets, "SecurityGroupIds": groups}
        )
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ResourceConflictException":
            raise NotReadyError(f"canary function {function_name}: busy with another update") from e
        raise


def place_canary(topology: Topology, clients: Any, function_name: str, run_id: str) -> list[Outcome]:
    """Converge the "Canary" security group and the function's VpcConfig (client DNS server's subnet).

    Writes nothing when both are already so. ``run_id`` is accepted like every converge step's, but
    no call here takes an idempotency token: the group is found by its tags before it is created.
    Raises NotReadyError before the client VPC or subnet exists, or while the function is updating.

    IAM: ec2:DescribeVpcs, ec2:DescribeSubnets, ec2:DescribeSecurityGroups,
    ec2:DescribeSecurityGroupRules, ec2:CreateSecurityGroup, ec2:CreateTags,
    ec2:RevokeSecurityGroupIngress, ec2:AuthorizeSecurityGroupEgress, lambda:GetFunctionConfiguration,
    lambda:UpdateFunctionConfiguration (Lambda also checks the caller's ec2:DescribeSecurityGroups,
    ec2:DescribeSubnets, ec2:DescribeVpcs, and the function role's ENI permissions).
    """
    client = topology.client
    region = topology.region_of(client.vpc)
    _function_region(function_name, region)
    if any(g.name == CANARY_GROUP for g in topology.vpc(client.vpc).security_groups):
        raise ConfigurationError(
            f"vpc {client.vpc}: security group name {CANARY_GROUP!r} is reserved for the canary"
        )
    ec2 = clients.ec2(region)
    vpc_id = require_vpc_id(topology, client.vpc, clients)
    subnet = find_subnet(ec2, topology.deployment, vpc_id, client.dns_server.subnet)
    if subnet is None:
        raise NotReadyError(
            f"subnet {client.dns_server.subnet}: not built yet (ConvergeNetwork must run first)"
        )
    group_id, outcomes = _converge_group(ec2, topology.deployment, region, vpc_id)

    lam = clients.client("lambda", region)
    have = _vpc_config(lam, function_name)
    want_subnets, want_groups = [subnet["SubnetId"]], [group_id]
    unchanged = (sorted(have.get("SubnetIds") or []) == want_subnets
                 and sorted(have.get("SecurityGroupIds") or []) == want_groups)
    if unchanged:
        action = "unchanged"
    else:
        _set_vpc_config(lam, function_name, want_subnets, want_groups)
        action = "updated"
    return [*outcomes, Outcome("function_vpc_config", function_name, action, subnet["SubnetId"], region)]


def unplace_canary(topology: Topology, clients: Any, function_name: str) -> list[Outcome]:
    """Take the function out of the client VPC, so teardown can delete the subnet and the group.

    Lambda releases its network interfaces asynchronously (minutes on AWS): deleting the "Canary" group
    or the subnet fails with DependencyViolation until then, which teardown retries.

    IAM: lambda:GetFunctionConfiguration, lambda:UpdateFunctionConfiguration.
    """
    region = topology.region_of(topology.client.vpc)
    _function_region(function_name, region)
    lam = clients.client("lambda", region)
    try:
        have = _vpc_config(lam, function_name)
    except ConfigurationError:
        return [Outcome("function_vpc_config", function_name, "absent", region=region)]
    if not have.get("SubnetIds") and not have.get("SecurityGroupIds"):
        return [Outcome("function_vpc_config", function_name, "unchanged", region=region)]
    _set_vpc_config(lam, function_name, [], [])
    return [Outcome("function_vpc_config", function_name, "deleted", region=region)]
