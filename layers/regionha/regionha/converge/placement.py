"""Network placement of the canary: CloudFormation owns the function, the build owns the network.

The canary function (RunCanaryFunction) must run inside the client site's network, whose subnet the
build makes after the stack exists. Who writes the function's VpcConfig decides whether a later
``sam deploy`` and a build can undo each other; here only CloudFormation does:

- template.yaml gives the function ``VpcConfig`` from two stack parameters, ``ClientSubnetId`` and
  ``CanarySecurityGroupId`` (empty: no VpcConfig);
- the build (``place_canary``) converges the tagged "Canary" security group in the client VPC (no
  ingress: nothing connects to the canary) and reports the two values and whether the function
  already runs there; it never calls UpdateFunctionConfiguration. The operator (or CI) then runs
  ``sam deploy --parameter-overrides ClientSubnetId=… CanarySecurityGroupId=…`` once; every later
  deploy keeps them (samconfig.toml), every later build finds them unchanged;
- teardown first requires the function out of the client VPC (``require_canary_unplaced``: deploy
  with both parameters empty), then waits, bounded, until Lambda has released its network interfaces
  there (``lambda_enis_released``; they go asynchronously, often many minutes) before deleting the
  subnet, the group and the VPC.

A real on-prem site (``client.kind: onprem``) has no client VPC: the canary runs there as the on-prem
agent (``regionha canary run --publish``, docs/onprem.md), the function stays outside any VPC, and
placement, unplacement and the ENI wait have nothing to do.
"""

from __future__ import annotations

import math
from typing import Any

from botocore.exceptions import ClientError

from regionha.aws import tag_spec
from regionha.converge import Outcome
from regionha.converge.network import find_security_group, find_subnet, find_vpc, paginate, require_vpc_id
from regionha.errors import ConfigurationError, NotReadyError
from regionha.topology import Topology
from regionha.waits import check_ready

CANARY_GROUP = "Canary"
_ALL_EGRESS = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
# How long Lambda may take to delete a function's hyperplane ENIs after its VpcConfig is removed:
# the Terraform AWS provider waits up to 45 minutes, as the Lambda team told its maintainers.
ENI_RELEASE_SECONDS = 45 * 60
LAMBDA_ENI_DESCRIPTION = "AWS Lambda VPC ENI"
AGENT_COMMAND = ("run the canary on the site as the on-prem agent: regionha canary run --publish "
                 "(agent/regionha-canary.service, docs/onprem.md)")
SUBNET_PARAMETER = "ClientSubnetId"
GROUP_PARAMETER = "CanarySecurityGroupId"


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
    return config.get("VpcConfig") or {}


def deploy_command(subnet_id: str, group_id: str) -> str:
    """The ``sam deploy`` that puts the canary function where the build says (or, empty, takes it out)."""
    return f"sam deploy --parameter-overrides {SUBNET_PARAMETER}={subnet_id} {GROUP_PARAMETER}={group_id}"


def place_canary(topology: Topology, clients: Any, function_name: str, run_id: str) -> list[Outcome]:
    """Converge the "Canary" security group; report whether the function runs in the client subnet.

    The last outcome, kind ``function_vpc_config``, is ``unchanged`` when the stack's VpcConfig already
    names that subnet and group, else ``absent`` (``canary_placement`` says which parameters to deploy).
    Writes nothing to the function. ``run_id`` is accepted like every converge step's.
    Raises NotReadyError before the client VPC or subnet exists.

    IAM: ec2:DescribeVpcs, ec2:DescribeSubnets, ec2:DescribeSecurityGroups,
    ec2:DescribeSecurityGroupRules, ec2:CreateSecurityGroup, ec2:CreateTags,
    ec2:RevokeSecurityGroupIngress, ec2:AuthorizeSecurityGroupEgress, lambda:GetFunctionConfiguration.
    """
    return place(topology, clients, function_name)[0]


def canary_placement(topology: Topology, clients: Any, function_name: str) -> dict[str, Any]:
    """``{"status": "placed"|"pending", "parameters": {ClientSubnetId, CanarySecurityGroupId},
    "command": "sam deploy …"}`` after converging the group (as ``place_canary``; same IAM)."""
    return place(topology, clients, function_name)[1]


def place(topology: Topology, clients: Any, function_name: str) -> tuple[list[Outcome], dict[str, Any]]:
    """``place_canary``'s outcomes and ``canary_placement``'s report from one pass."""
    client = topology.client
    if client.onprem:
        return [], {"status": "agent", "parameters": {SUBNET_PARAMETER: "", GROUP_PARAMETER: ""},
                    "command": AGENT_COMMAND}
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
    have = _vpc_config(clients.client("lambda", region), function_name)
    placed = (sorted(have.get("SubnetIds") or []) == [subnet["SubnetId"]]
              and sorted(have.get("SecurityGroupIds") or []) == [group_id])
    outcomes.append(
        Outcome("function_vpc_config", function_name, "unchanged" if placed else "absent", subnet["SubnetId"], region)
    )
    placement = {
        "status": "placed" if placed else "pending",
        "parameters": {SUBNET_PARAMETER: subnet["SubnetId"], GROUP_PARAMETER: group_id},
        "command": deploy_command(subnet["SubnetId"], group_id),
    }
    return outcomes, placement


def require_canary_unplaced(topology: Topology, clients: Any, function_name: str) -> list[Outcome]:
    """Teardown's first check: the canary function must not run in the client VPC any more (its
    network interfaces would hold the subnet and the group). ConfigurationError says how to take it
    out; a missing function counts as out.

    IAM: lambda:GetFunctionConfiguration, ec2:DescribeVpcs, ec2:DescribeSubnets.
    """
    if topology.client_vpc is None:  # an on-prem site: the canary is the agent, never in a VPC of ours
        return [Outcome("function_vpc_config", function_name, "absent")]
    region = topology.region_of(topology.client.vpc)
    _function_region(function_name, region)
    try:
        have = _vpc_config(clients.client("lambda", region), function_name)
    except ConfigurationError:
        return [Outcome("function_vpc_config", function_name, "absent", region=region)]
    ec2 = clients.ec2(region)
    vpc = find_vpc(ec2, topology.deployment, topology.client.vpc)
    in_client_vpc = set()
    if vpc is not None and have.get("SubnetIds"):
        subnets = paginate(ec2, "describe_subnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
        in_client_vpc = {s["SubnetId"] for s in subnets} & set(have["SubnetIds"])
    if in_client_vpc:
        raise ConfigurationError(
            f"canary function {function_name} still runs in the client VPC ({', '.join(have['SubnetIds'])}): "
            f"take it out first with `{deploy_command('', '')}` (CloudFormation owns its VpcConfig), "
            "then run the teardown again"
        )
    return [Outcome("function_vpc_config", function_name, "absent", region=region)]


def lambda_enis(topology: Topology, clients: Any) -> list[dict[str, Any]]:
    """Lambda's network interfaces still in the client VPC: ``InterfaceType`` lambda (hyperplane ENIs),
    or the ``AWS Lambda VPC ENI`` description Lambda gives them. IAM: ec2:DescribeVpcs,
    ec2:DescribeNetworkInterfaces."""
    if topology.client_vpc is None:
        return []
    region = topology.region_of(topology.client.vpc)
    ec2 = clients.ec2(region)
    vpc = find_vpc(ec2, topology.deployment, topology.client.vpc)
    if vpc is None:
        return []
    enis = paginate(ec2, "describe_network_interfaces", "NetworkInterfaces",
                    Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    return [e for e in enis
            if e.get("InterfaceType") == "lambda" or str(e.get("Description", "")).startswith(LAMBDA_ENI_DESCRIPTION)]


def eni_release_polls(topology: Topology) -> int:
    """Polls of ``waits.poll_seconds`` that cover Lambda's ENI release (at least ``waits.max_polls``)."""
    return max(topology.waits.max_polls, math.ceil(ENI_RELEASE_SECONDS / max(topology.waits.poll_seconds, 1)))


def lambda_enis_released(topology: Topology, clients: Any, attempt: int) -> dict[str, Any]:
    """One poll of teardown's bounded wait for Lambda to delete its ENIs in the client VPC:
    ``{"ready", "attempt", "statuses"}``; WaitTimeoutError after ``eni_release_polls`` polls.
    IAM: as ``lambda_enis``."""
    statuses = {e["NetworkInterfaceId"]: e.get("Status", "in-use") for e in lambda_enis(topology, clients)}
    return check_ready(
        "Lambda network interfaces in the client VPC",
        statuses or {"client vpc": "released"},
        ready="released",
        attempt=attempt,
        max_polls=eni_release_polls(topology),
    )
