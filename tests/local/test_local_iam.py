"""The local runtime's IAM evaluation (regionha.local.aws.iam), table-driven against AWS's documented rules.

IAM User Guide: "Policy evaluation logic" (explicit deny wins, default deny), "Condition operators"
(absent keys, IfExists, ForAllValues/ForAnyValue, negated operators), and the Service Authorization
Reference for action names.
"""

from __future__ import annotations

import pytest

from regionha.errors import ConfigurationError
from regionha.local.aws.iam_policy import RequestResource, action_name, condition_holds, evaluate
from regionha.local.aws.iam_requests import RequestBuilder

ZONE = "arn:aws:route53:::hostedzone/Z123"


@pytest.mark.parametrize(("service", "operation", "action"), [
    ("lambda", "Invoke", "lambda:InvokeFunction"),
    ("s3", "ListObjectsV2", "s3:ListBucket"),
    ("s3", "HeadObject", "s3:GetObject"),
    ("stepfunctions", "DescribeExecution", "states:DescribeExecution"),
    ("route53", "ListTagsForResources", "route53:ListTagsForResources"),  # not ListTagsForResource
    ("ec2", "CreateSecurityGroup", "ec2:CreateSecurityGroup"),
    ("sts", "GetCallerIdentity", None),
])
def test_operations_map_to_the_reference_actions(service, operation, action):
    assert action_name(service, operation) == action


def test_an_operation_the_reference_does_not_know_fails_loudly():
    with pytest.raises(ConfigurationError, match="no action ec2:TeleportInstances"):
        action_name("ec2", "TeleportInstances")


@pytest.mark.parametrize(("operator", "wanted", "context", "holds"), [
    ("StringEquals", ["a"], {"k": ["a"]}, True),
    ("StringEquals", ["a"], {}, False),                      # absent key: no match
    ("StringNotEquals", ["a"], {}, True),                    # negated operator, absent key: true
    ("StringEqualsIfExists", ["a"], {}, True),
    ("StringLike", ["reg*"], {"k": ["regionha"]}, True),
    ("ForAllValues:StringEquals", ["UPSERT"], {"k": ["UPSERT", "DELETE"]}, False),
    ("ForAllValues:StringEquals", ["UPSERT"], {"k": ["UPSERT"]}, True),
    ("ForAllValues:StringEquals", ["UPSERT"], {}, True),     # vacuously true
    ("ForAnyValue:StringEquals", ["A"], {}, False),
    ("Null", ["true"], {}, True),
    ("Null", ["false"], {"k": ["x"]}, True),
    ("Bool", [True], {"k": ["true"]}, True),
])
def test_condition_operators(operator, wanted, context, holds):
    assert condition_holds(operator, "k", wanted, context) is holds


def test_an_explicit_deny_wins_and_nothing_allowed_is_denied():
    allow = {"Statement": [{"Effect": "Allow", "Action": "route53:*", "Resource": "*"}]}
    deny = {"Statement": [{"Effect": "Deny", "Action": "route53:ChangeResourceRecordSets", "Resource": ZONE}]}

    assert evaluate([allow], "route53:ChangeResourceRecordSets", [RequestResource(ZONE)]).allowed
    decision = evaluate([allow, deny], "route53:ChangeResourceRecordSets", [RequestResource(ZONE)])
    assert not decision.allowed and decision.explicit_deny
    assert not evaluate([], "route53:GetHostedZone", [RequestResource(ZONE)]).allowed


def test_every_resource_of_a_request_must_be_allowed():
    policy = {"Statement": [{"Effect": "Allow", "Action": "ec2:CreateSecurityGroup",
                             "Resource": "arn:aws:ec2:*:123456789012:security-group/*"}]}
    new_group = RequestResource("arn:aws:ec2:ap-northeast-1:123456789012:security-group/*", tags={})
    vpc = RequestResource("arn:aws:ec2:ap-northeast-1:123456789012:vpc/vpc-0123456789abcdef0", tags={})

    decision = evaluate([policy], "ec2:CreateSecurityGroup", [new_group, vpc])
    assert not decision.allowed and decision.resource == vpc.arn


def test_resource_tags_feed_the_resource_tag_condition_keys():
    policy = {"Statement": [{"Effect": "Allow", "Action": "ec2:StopInstances", "Resource": "*",
                             "Condition": {"StringEquals": {"aws:ResourceTag/regionha:deployment": "ref"}}}]}
    ours = RequestResource("arn:aws:ec2:r:1:instance/i-1", tags={"regionha:deployment": "ref"})
    theirs = RequestResource("arn:aws:ec2:r:1:instance/i-2", tags={"regionha:deployment": "other"})

    assert evaluate([policy], "ec2:StopInstances", [ours]).allowed
    assert not evaluate([policy], "ec2:StopInstances", [theirs]).allowed


def test_a_record_change_carries_route53s_condition_keys():
    request = RequestBuilder("123456789012").build("route53", "ChangeResourceRecordSets", {
        "HostedZoneId": "/hostedzone/Z123",
        "ChangeBatch": {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {"Name": "Sample.Cluster.Local.",
                                                                                "Type": "A"}}]},
    }, "us-east-1")

    assert request.action == "route53:ChangeResourceRecordSets"
    assert [r.arn for r in request.resources] == [ZONE]
    assert request.context["route53:changeresourcerecordsetsactions"] == ["UPSERT"]
    assert request.context["route53:changeresourcerecordsetsrecordtypes"] == ["A"]
    assert request.context["route53:changeresourcerecordsetsnormalizedrecordnames"] == ["sample.cluster.local"]


def test_deleting_a_resolver_endpoint_needs_its_dependent_actions():
    request = RequestBuilder("123456789012").build(
        "route53resolver", "DeleteResolverEndpoint", {"ResolverEndpointId": "rslvr-in-1"}, "ap-northeast-1")

    assert {a for a, _, _ in request.situational} == {"ec2:DeleteNetworkInterface", "ec2:DescribeNetworkInterfaces"}
