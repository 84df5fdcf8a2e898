"""Network placement of the canary against moto: the build converges the group and reports the stack
parameters, never writes the function; teardown requires it out and waits, bounded, for its ENIs."""

from __future__ import annotations

import io
import zipfile

import boto3
import pytest

from regionha.aws import Clients, tag_spec
from regionha.converge.placement import (
    CANARY_GROUP,
    canary_placement,
    eni_release_polls,
    lambda_enis_released,
    place_canary,
    require_canary_unplaced,
)
from regionha.errors import ConfigurationError, NotReadyError, WaitTimeoutError

SINGAPORE = "ap-southeast-1"
FUNCTION = "regionha-RunCanaryFunction"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def lambda_handler(event, context):\n    return {}\n")
    return buf.getvalue()


@pytest.fixture
def function(moto_aws) -> str:
    role = boto3.client("iam").create_role(
        RoleName="canary", AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}'
    )["Role"]["Arn"]
    return boto3.client("lambda", region_name=SINGAPORE).create_function(
        FunctionName=FUNCTION, Runtime="python3.13", Role=role, Handler="app.lambda_handler",
        Code={"ZipFile": _zip()},
    )["FunctionArn"]


@pytest.fixture
def client_site(moto_aws, topology) -> dict[str, str]:
    """The client VPC and subnet C1, tagged as ConvergeNetwork tags them."""
    ec2 = boto3.client("ec2", region_name=SINGAPORE)
    vpc = ec2.create_vpc(CidrBlock="10.2.0.0/16", TagSpecifications=tag_spec("vpc", topology.deployment,
                                                                              "singapore"))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(
        VpcId=vpc, CidrBlock="10.2.10.0/24", AvailabilityZone="ap-southeast-1a",
        TagSpecifications=tag_spec("subnet", topology.deployment, "C1"),
    )["Subnet"]["SubnetId"]
    return {"vpc": vpc, "subnet": subnet}


def vpc_config() -> dict:
    config = boto3.client("lambda", region_name=SINGAPORE).get_function_configuration(FunctionName=FUNCTION)
    return config.get("VpcConfig") or {}


def canary_group(vpc: str) -> dict:
    groups = boto3.client("ec2", region_name=SINGAPORE).describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "tag:regionha:name", "Values": [CANARY_GROUP]}]
    )["SecurityGroups"]
    (group,) = groups
    return group


def deploy_with(subnet: str, group: str) -> None:
    """What ``sam deploy --parameter-overrides ClientSubnetId=… CanarySecurityGroupId=…`` does to the function."""
    config = {"SubnetIds": [subnet] if subnet else [], "SecurityGroupIds": [group] if group else []}
    boto3.client("lambda", region_name=SINGAPORE).update_function_configuration(FunctionName=FUNCTION,
                                                                                 VpcConfig=config)


def test_the_build_converges_the_group_and_reports_the_stack_parameters(topology, function, client_site,
                                                                          call_counter):
    outcomes = place_canary(topology, Clients(), FUNCTION, "run-1")

    group = canary_group(client_site["vpc"])
    assert group["IpPermissions"] == []
    assert any(p["IpProtocol"] == "-1" for p in group["IpPermissionsEgress"])
    assert [(o.kind, o.action) for o in outcomes] == [("security_group", "created"),
                                                      ("function_vpc_config", "absent")]
    # The build never writes the function: CloudFormation owns its VpcConfig.
    assert not [c for c in call_counter.mutating if c[0] == "lambda"]
    assert not vpc_config().get("SubnetIds")
    placement = canary_placement(topology, Clients(), FUNCTION)
    assert placement == {
        "status": "pending",
        "parameters": {"ClientSubnetId": client_site["subnet"], "CanarySecurityGroupId": group["GroupId"]},
        "command": f"sam deploy --parameter-overrides ClientSubnetId={client_site['subnet']} "
                   f"CanarySecurityGroupId={group['GroupId']}",
    }


def test_after_the_deploy_the_placement_is_unchanged_and_a_rebuild_writes_nothing(topology, function,
                                                                                 client_site, call_counter):
    place_canary(topology, Clients(), function, "run-1")
    deploy_with(client_site["subnet"], canary_group(client_site["vpc"])["GroupId"])
    call_counter.calls.clear()

    outcomes = place_canary(topology, Clients(), function, "run-2")
    assert {o.action for o in outcomes} == {"unchanged"}
    assert call_counter.mutating == []
    assert canary_placement(topology, Clients(), FUNCTION)["status"] == "placed"


def test_inbound_rule_on_the_canary_group_is_revoked(topology, function, client_site):
    place_canary(topology, Clients(), FUNCTION, "run-1")
    group = canary_group(client_site["vpc"])
    boto3.client("ec2", region_name=SINGAPORE).authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )

    outcomes = place_canary(topology, Clients(), FUNCTION, "run-2")
    assert (outcomes[0].kind, outcomes[0].action) == ("security_group", "updated")
    assert canary_group(client_site["vpc"])["IpPermissions"] == []


def test_teardown_refuses_while_the_function_is_in_the_client_vpc_and_says_how(topology, function, client_site):
    place_canary(topology, Clients(), FUNCTION, "run-1")
    deploy_with(client_site["subnet"], canary_group(client_site["vpc"])["GroupId"])

    with pytest.raises(ConfigurationError, match=r"still runs in the client VPC .*sam deploy --parameter-overrides "
                                                 r"ClientSubnetId= CanarySecurityGroupId="):
        require_canary_unplaced(topology, Clients(), FUNCTION)
    deploy_with("", "")
    assert [o.action for o in require_canary_unplaced(topology, Clients(), FUNCTION)] == ["absent"]


def test_teardown_waits_for_lambda_to_release_its_enis_and_gives_up_bounded(topology, client_site):
    ec2 = boto3.client("ec2", region_name=SINGAPORE)
    assert lambda_enis_released(topology, Clients(), 0) == {
        "ready": True, "attempt": 1, "statuses": {"client vpc": "released"}
    }
    # What Lambda leaves behind (moto ignores InterfaceType=lambda; the description is Lambda's too).
    eni = ec2.create_network_interface(SubnetId=client_site["subnet"], InterfaceType="lambda",
                                       Description=f"AWS Lambda VPC ENI-{FUNCTION}-0f1e")["NetworkInterface"]
    waiting = lambda_enis_released(topology, Clients(), 1)
    assert (waiting["ready"], waiting["attempt"]) == (False, 2)
    # 45 minutes of polls at the topology's poll interval, never fewer than waits.max_polls.
    assert eni_release_polls(topology) == 45 * 60 // topology.waits.poll_seconds
    with pytest.raises(WaitTimeoutError, match="Lambda network interfaces in the client VPC"):
        lambda_enis_released(topology, Clients(), eni_release_polls(topology) - 1)
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    assert lambda_enis_released(topology, Clients(), 2)["ready"] is True


def test_placement_before_the_network_exists_is_not_ready(topology, function):
    with pytest.raises(NotReadyError):
        place_canary(topology, Clients(), FUNCTION, "run-1")


def test_function_in_another_region_is_a_configuration_error(topology, moto_aws):
    arn = "arn:aws:lambda:us-east-1:123456789012:function:RunCanary"
    with pytest.raises(ConfigurationError, match="client site's region"):
        place_canary(topology, Clients(), arn, "run-1")


def test_missing_function_is_a_configuration_error(topology, client_site):
    with pytest.raises(ConfigurationError, match="deploy the stack first"):
        place_canary(topology, Clients(), "nope", "run-1")
