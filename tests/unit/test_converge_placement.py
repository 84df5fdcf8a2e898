"""Network placement of the canary function against moto: group, VpcConfig, re-runs, drift, removal."""

from __future__ import annotations

import io
import zipfile

import boto3
import pytest

from regionha.aws import Clients, tag_spec
from regionha.converge.placement import CANARY_GROUP, place_canary, unplace_canary
from regionha.errors import ConfigurationError, NotReadyError

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
    return boto3.client("lambda", region_name=SINGAPORE).get_function_configuration(FunctionName=FUNCTION)[
        "VpcConfig"
    ]


def canary_group(vpc: str) -> dict:
    groups = boto3.client("ec2", region_name=SINGAPORE).describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "tag:regionha:name", "Values": [CANARY_GROUP]}]
    )["SecurityGroups"]
    (group,) = groups
    return group


def test_place_canary_in_the_client_subnet_with_an_egress_only_group(topology, function, client_site):
    outcomes = place_canary(topology, Clients(), FUNCTION, "run-1")

    group = canary_group(client_site["vpc"])
    assert group["IpPermissions"] == []
    assert any(p["IpProtocol"] == "-1" for p in group["IpPermissionsEgress"])
    config = vpc_config()
    assert config["SubnetIds"] == [client_site["subnet"]]
    assert config["SecurityGroupIds"] == [group["GroupId"]]
    assert [(o.kind, o.action) for o in outcomes] == [("security_group", "created"),
                                                      ("function_vpc_config", "updated")]


def test_second_placement_writes_nothing(topology, function, client_site, call_counter):
    place_canary(topology, Clients(), function, "run-1")
    call_counter.calls.clear()

    outcomes = place_canary(topology, Clients(), function, "run-2")
    assert {o.action for o in outcomes} == {"unchanged"}
    assert call_counter.mutating == []


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


def test_unplace_takes_the_function_out_of_the_vpc(topology, function, client_site):
    place_canary(topology, Clients(), FUNCTION, "run-1")

    assert [o.action for o in unplace_canary(topology, Clients(), FUNCTION)] == ["deleted"]
    assert not vpc_config().get("SubnetIds")
    assert [o.action for o in unplace_canary(topology, Clients(), FUNCTION)] == ["unchanged"]


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
