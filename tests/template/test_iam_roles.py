"""The roles of template.yaml, proven by the local runtime's IAM and timeouts (mutation tests).

GIVEN template.yaml (or a copy with one mutation) provisioned in-process with every handler's AWS
calls authorised against its own function's role (regionha.local.aws.iam),
WHEN the build, a drifted re-build and the teardown run through the real state machines,
THEN what AWS would refuse is refused here too, by the function and action AWS would name; and the
fixed roles refuse nothing the flows need.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inprocess import STACK_REGION, TEMPLATE, run_execution, stack_in_process  # noqa: E402
from regionha.topology import load_topology  # noqa: E402

REPO = TEMPLATE.parent
TOKYO, OSAKA = "ap-northeast-1", "ap-northeast-3"
DEPLOYMENT = "regionha-ref"


def template_copy(tmp_path: Path, mutate: Any) -> Path:
    """template.yaml as JSON beside links to the code it names, after `mutate(resources)`."""
    from inprocess import load_template

    template = load_template(TEMPLATE)
    mutate(template["Resources"])
    for name in ("functions", "layers", "statemachines"):
        (tmp_path / name).symlink_to(REPO / name)
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    return path


def topology_input() -> dict:
    from regionha.topology import load_topology

    topology = load_topology()
    topology = topology.model_copy(update={"waits": topology.waits.model_copy(update={"poll_seconds": 0})})
    return {"topology": topology.to_json()}


def run(stack, logical_id: str, name: str) -> dict:
    return run_execution(stack, logical_id, topology_input(), name, timeout=180)


def failed_steps(desc: dict) -> list[tuple[str, str, str]]:
    """(state, error, cause) of every Lambda task that failed in an execution."""
    sfn = boto3.client("stepfunctions", region_name=STACK_REGION)
    events = sfn.get_execution_history(executionArn=desc["executionArn"], maxResults=1000)["events"]
    entered: dict[int, str] = {e["id"]: e["stateEnteredEventDetails"]["name"]
                               for e in events if e["type"] == "TaskStateEntered"}
    failures = []
    for event in events:
        if event["type"] == "LambdaFunctionFailed":
            details = event["lambdaFunctionFailedEventDetails"]
            state = next((entered[i] for i in sorted(entered, reverse=True) if i < event["id"]), "?")
            failures.append((state, details.get("error", ""), details.get("cause", "")))
    return failures


@contextlib.contextmanager
def in_process(template: Path = TEMPLATE, audit: bool = False) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        if audit:
            mp.setenv("REGIONHA_LOCAL_IAM", "audit")
        else:
            mp.delenv("REGIONHA_LOCAL_IAM", raising=False)
        with stack_in_process((TOKYO, OSAKA, STACK_REGION), template=template) as (stack, _):
            yield stack


# ---- mutation: one action less, the build fails at that step, as on AWS


def test_without_change_resource_record_sets_the_build_fails_at_the_record_step(aws_credentials, tmp_path):
    def drop_change_record_sets(resources: dict) -> None:
        for policy in resources["UpsertRecordFunction"]["Properties"]["Policies"]:
            for statement in policy.get("Statement", []):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                statement["Action"] = [a for a in actions if a != "route53:ChangeResourceRecordSets"]
            policy["Statement"] = [s for s in policy.get("Statement", []) if s["Action"]]

    with in_process(template_copy(tmp_path, drop_change_record_sets)) as stack:
        desc = run(stack, "BuildStateMachine", "build-mutated")
        refusals, failures = stack.iam.refusals, failed_steps(desc)

    assert desc["status"] == "FAILED"
    state, error, cause = failures[-1]
    assert state == "UpsertRecord" and error == "ClientError"
    assert "(AccessDenied) when calling the ChangeResourceRecordSets operation" in cause
    assert ("assumed-role/regionha-UpsertRecordFunctionRole/regionha-UpsertRecordFunction is not authorized "
            "to perform: route53:ChangeResourceRecordSets on resource: arn:aws:route53:::hostedzone/") in cause
    assert {(f, a) for f, a, _ in refusals} == {("regionha-UpsertRecordFunction", "route53:ChangeResourceRecordSets")}


# ---- mutation: a step that outlives its function's Timeout


def test_a_step_past_its_timeout_fails_the_build_with_sandbox_timedout(aws_credentials, tmp_path):
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "app.py").write_text("import time\n\ndef lambda_handler(event, context):\n    time.sleep(3)\n"
                                 "    return {'valid': True}\n")

    def slow_validation(resources: dict) -> None:
        props = resources["ValidateTopologyFunction"]["Properties"]
        props["CodeUri"], props["Timeout"] = str(slow), 1

    with in_process(template_copy(tmp_path, slow_validation)) as stack:
        started = time.monotonic()
        desc = run(stack, "BuildStateMachine", "build-slow")
        took = time.monotonic() - started
        failures = failed_steps(desc)

    assert desc["status"] == "FAILED"
    state, error, cause = failures[-1]
    assert (state, error) == ("ValidateTopology", "Sandbox.Timedout")
    assert json.loads(cause)["errorMessage"].endswith("Error: Task timed out after 1.00 seconds")
    print(f"build failed on the timed-out step after {took:.1f} s")


# ---- the five IAM failures of issue 11: caught on the old roles, gone on the fixed ones


def _restore_old_roles(resources: dict) -> None:
    """Today's roles less exactly the actions issue 11 found missing (ISSUE_11_FAILURES): the old roles'
    gaps, while what later features added (gateway endpoints, alarms, ...) stays granted."""
    for function, action in ISSUE_11_FAILURES:
        policies = resources[function.removeprefix("regionha-")]["Properties"]["Policies"]
        for policy in policies:
            if not isinstance(policy, dict) or "Statement" not in policy:
                continue
            kept = []
            for statement in policy["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                rest = [a for a in actions if a != action]
                if rest:
                    kept.append({**copy.deepcopy(statement), "Action": rest})
            policy["Statement"] = kept


def _instances(role: str) -> list[dict]:
    found = []
    for region in (TOKYO, OSAKA, STACK_REGION):
        ec2 = boto3.client("ec2", region_name=region)
        for reservation in ec2.describe_instances(Filters=[
                {"Name": "tag:regionha:deployment", "Values": [DEPLOYMENT]},
                {"Name": "tag:regionha:role", "Values": [role]},
                {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]:
            found += [{**i, "Region": region} for i in reservation["Instances"]]
    return found


def inject_drift() -> None:
    """What drift repair exists for: a stray route, a stray NAT ingress rule, IMDSv1 back on, a NAT
    instance's user-data changed, a node's restart mark left behind, a renamed Resolver endpoint."""
    ec2 = boto3.client("ec2", region_name=TOKYO)
    tagged = [{"Name": "tag:regionha:deployment", "Values": [DEPLOYMENT]}]
    table = ec2.describe_route_tables(Filters=tagged)["RouteTables"][0]
    igw = ec2.describe_internet_gateways(Filters=tagged)["InternetGateways"][0]["InternetGatewayId"]
    ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="192.0.2.0/24", GatewayId=igw)

    nat = _instances("nat")[0]
    nat_ec2 = boto3.client("ec2", region_name=nat["Region"])
    nat_name = next(t["Value"] for t in nat["Tags"] if t["Key"] == "regionha:name")
    nat_group = nat_ec2.describe_security_groups(Filters=[
        {"Name": "tag:regionha:deployment", "Values": [DEPLOYMENT]},
        {"Name": "tag:regionha:name", "Values": [f"{nat_name}-sg"]}])["SecurityGroups"][0]["GroupId"]
    nat_ec2.authorize_security_group_ingress(GroupId=nat_group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 2222, "ToPort": 2222, "IpRanges": [{"CidrIp": "198.51.100.0/24"}]}])
    nat_ec2.modify_instance_metadata_options(InstanceId=nat["InstanceId"], HttpTokens="optional")
    nat_ec2.modify_instance_attribute(InstanceId=nat["InstanceId"], Attribute="userData",
                                      Value=base64.b64encode(b"#!/bin/sh\necho drift\n").decode())

    node = _instances("node")[0]
    node_ec2 = boto3.client("ec2", region_name=node["Region"])
    node_ec2.modify_instance_metadata_options(InstanceId=node["InstanceId"], HttpTokens="optional")
    node_ec2.create_tags(Resources=[node["InstanceId"]], Tags=[{"Key": "regionha:restarting", "Value": "true"}])

    resolver = boto3.client("route53resolver", region_name=TOKYO)
    endpoint = resolver.list_resolver_endpoints()["ResolverEndpoints"][0]
    resolver.update_resolver_endpoint(ResolverEndpointId=endpoint["Id"], Name="renamed-by-hand")


# The failures the issue lists, by function: what the old roles lacked for the first build, a re-run,
# drift repair and the first teardown.
ISSUE_11_FAILURES = {
    # 1. ConvergeNat creates its own security group
    ("regionha-ConvergeNatFunction", "ec2:CreateSecurityGroup"),
    ("regionha-ConvergeNatFunction", "ec2:DescribeSecurityGroupRules"),
    ("regionha-ConvergeNatFunction", "ec2:AuthorizeSecurityGroupIngress"),
    # 2. the zone lookup's route53:ListTagsForResources (plural), granted nowhere
    ("regionha-UpsertRecordFunction", "route53:ListTagsForResources"),
    # (SaveInventory's zone lookup now reads one zone's tags with the singular ListTagsForResource.)
    ("regionha-ConvergeDnsFunction", "route53:ListTagsForResources"),
    ("regionha-TeardownResourcesFunction", "route53:ListTagsForResources"),
    # 3. teardown: the dependent action of deleting a Resolver endpoint
    ("regionha-TeardownResourcesFunction", "ec2:DeleteNetworkInterface"),
    # 4. drift repair
    ("regionha-ConvergeRoutesFunction", "ec2:DeleteRoute"),
    ("regionha-ConvergeInstancesFunction", "ec2:ModifyInstanceMetadataOptions"),
    ("regionha-ConvergeInstancesFunction", "ec2:DeleteTags"),
    ("regionha-ConvergeDnsFunction", "route53resolver:UpdateResolverEndpoint"),
    # 5. ConvergeNat's own drift repair: stop/start for new user-data, revoke a stray rule
    ("regionha-ConvergeNatFunction", "ec2:StopInstances"),
    ("regionha-ConvergeNatFunction", "ec2:StartInstances"),
    ("regionha-ConvergeNatFunction", "ec2:RevokeSecurityGroupIngress"),
    ("regionha-ConvergeNatFunction", "ec2:ModifyInstanceMetadataOptions"),
}


def build_drift_rebuild_teardown(template: Path) -> tuple[set[tuple[str, str]], list[dict]]:
    """The flows in audit mode (every refusal listed, none enforced): (refused (function, action), runs)."""
    with in_process(template, audit=True) as stack:
        runs = [run(stack, "BuildStateMachine", "build-1")]
        inject_drift()
        runs.append(run(stack, "BuildStateMachine", "build-2"))
        runs.append(run(stack, "TeardownStateMachine", "teardown-1"))
        return {(f, a) for f, a, _ in stack.iam.refusals}, runs


def test_the_issue_11_failures_are_caught_on_the_old_roles(aws_credentials, tmp_path):
    refused, _ = build_drift_rebuild_teardown(template_copy(tmp_path, _restore_old_roles))

    assert ISSUE_11_FAILURES - refused == set()


def test_the_fixed_roles_refuse_nothing_the_build_drift_repair_and_teardown_need(aws_credentials):
    refused, runs = build_drift_rebuild_teardown(TEMPLATE)

    assert [r["status"] for r in runs] == ["SUCCEEDED"] * 3
    assert refused == set()


def test_the_old_roles_stop_the_first_enforced_build_at_converge_nat(aws_credentials, tmp_path):
    with in_process(template_copy(tmp_path, _restore_old_roles)) as stack:
        desc = run(stack, "BuildStateMachine", "build-old")
        failures = failed_steps(desc)

    assert desc["status"] == "FAILED"
    state, error, cause = failures[-1]
    assert (state, error) == ("ConvergeNatInstance", "ClientError")
    assert "(UnauthorizedOperation) when calling the CreateSecurityGroup operation" in cause
    assert "regionha-ConvergeNatFunction is not authorized to perform: ec2:CreateSecurityGroup" in cause


# ---- ssm:SendCommand: only the deployment's nodes, only the cluster action's document


@pytest.mark.parametrize("function", ["RunDrillStepFunction", "SweepFaultsFunction"])
def test_send_command_reaches_only_tagged_nodes_and_the_named_document(aws_credentials, function):
    with in_process() as stack:
        ec2 = boto3.client("ec2", region_name=TOKYO)
        # The AMI the nodes run: the SSM public parameter the topology names (as converge.instances).
        image = boto3.client("ssm", region_name=TOKYO).get_parameter(
            Name=load_topology().instances.ami_parameter)["Parameter"]["Value"]

        def instance(tags: list[dict]) -> str:
            spec = [{"ResourceType": "instance", "Tags": tags}] if tags else []
            return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                     TagSpecifications=spec)["Instances"][0]["InstanceId"]

        ours = instance([{"Key": "regionha:deployment", "Value": DEPLOYMENT}])
        other = instance([{"Key": "regionha:deployment", "Value": "someone-else"}])
        untagged = instance([])
        role = stack.functions[function].role_arn

        def allowed(instance_id: str, document: str) -> bool:
            params = {"InstanceIds": [instance_id], "DocumentName": document}
            return stack.iam.judge(role, "ssm", "SendCommand", params, TOKYO).allowed

        assert allowed(ours, "AWS-RunShellScript")
        assert not allowed(other, "AWS-RunShellScript")
        assert not allowed(untagged, "AWS-RunShellScript")
        assert not allowed(ours, "AWS-RunPowerShellScript")


def test_the_failover_controller_has_no_vpc_access(aws_credentials):
    with in_process() as stack:
        role = stack.functions["FailoverControllerFunction"].role_arn
        decision = stack.iam.judge(role, "ec2", "CreateNetworkInterface", {"SubnetId": "subnet-0123456789abcdef0"},
                                   STACK_REGION)

    assert not decision.allowed and decision.action == "ec2:CreateNetworkInterface"
