"""``regionha build``, ``teardown`` and ``drill start`` against the real template in moto, in-process.

GIVEN template.yaml provisioned into moto (our real handlers answering Lambda Invoke, moto's ASL
interpreter running the real state machines) and a CloudFormation stack whose outputs name them, as
``sam deploy`` leaves it; WHEN the commands run as a user would; THEN they start the right state
machine with the right input, show each state, and say clearly what went wrong. Nothing but AWS is
stubbed (and AWS only by moto).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from regionha import drill
from regionha.cli import main
from regionha.cli import target as cli_target
from regionha.topology import load_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inprocess import STACK_REGION, handlers_in_process  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies/reference.yaml"

CLOUD_REGIONS = ("ap-northeast-1", "ap-northeast-3", "ap-southeast-1")


def fast_topology(tmp_path: Path) -> Path:
    """The reference deployment with no wait between polls (moto answers at once)."""
    data = yaml.safe_load(REFERENCE.read_text())
    data["waits"] = {"poll_seconds": 0, "max_polls": 5}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The provisioned template, a CloudFormation stack naming its state machines, one build done."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": STACK_REGION,
                           "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION"):
            mp.delenv(key, raising=False)
        # The build runs a canary round (FirstCanaryRound) in this process: its EMF lines (Lambda's stdout,
        # CloudWatch Logs on AWS) would land on the CLI's stdout; PutMetricData, as in the local runtime.
        mp.setenv("REGIONHA_METRICS_SINK", "cloudwatch")
        config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
        from composites import installed

        # moto has no composite alarms: the local runtime's evaluator holds them (tests/composites.py).
        with mock_aws(config=config), installed(CLOUD_REGIONS), handlers_in_process() as (provisioned, _):
            outputs = {key: provisioned.physical_id(lid) for key, lid in (
                ("BuildStateMachineArn", "BuildStateMachine"), ("TeardownStateMachineArn", "TeardownStateMachine"),
                ("DrillStateMachineArn", "DrillStateMachine"), ("StateTableName", "StateTable"))}
            template = {
                "Parameters": {"Deployment": {"Type": "String", "Default": "regionha-ref"}},
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()},
            }
            boto3.client("cloudformation", region_name=STACK_REGION).create_stack(
                StackName="regionha", TemplateBody=json.dumps(template))
            topology = fast_topology(tmp_path_factory.mktemp("topology"))
            code = main(["build", "--topology", str(topology), "--refresh", "0.05"])
            assert code == 0
            yield provisioned, topology


def executions(provisioned: Any, logical_id: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", region_name=STACK_REGION)
    found = sfn.list_executions(stateMachineArn=provisioned.physical_id(logical_id))["executions"]
    return [sfn.describe_execution(executionArn=e["executionArn"]) for e in found]


def test_build_passes_the_topology_inline_and_shows_each_state(stack: Any, capsys) -> None:
    provisioned, topology = stack
    capsys.readouterr()

    code = main(["build", "--topology", str(topology), "--refresh", "0.05"])

    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("started build build-") and lines[0].endswith(f"in AWS (region {STACK_REGION})")
    progress = [line.split(maxsplit=1)[1] for line in lines if line.strip().startswith("+")]
    # One line as each state starts and one as it ends, in order.
    assert progress.index("enter ValidateTopology") < progress.index("enter SaveInventory")
    assert any(p.startswith("exit  SaveInventory (") for p in progress)
    assert progress[-1] == "execution SUCCEEDED"
    summary = next(line for line in lines if line.startswith("build SUCCEEDED in "))
    assert "unchanged" in summary
    # CloudFormation owns the canary's VpcConfig: the build says, once, how to place it.
    assert lines[-1].startswith("canary not in the client network yet; run once: sam deploy --parameter-overrides "
                                "ClientSubnetId=subnet-")
    newest = max(executions(provisioned, "BuildStateMachine"), key=lambda d: d["startDate"])
    assert json.loads(newest["input"]) == {"topology": load_topology(topology).to_json()}


def test_an_invalid_topology_exits_2_with_the_validators_lines_and_no_aws_call(
        stack: Any, tmp_path: Path, capsys, call_log: list[str]) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(REFERENCE.read_text())
    data["nodes"][0]["vpc"] = "atlantis"
    bad.write_text(yaml.safe_dump(data))
    capsys.readouterr()

    code = main(["build", "--topology", str(bad)])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"{bad}: nodes")
    assert "atlantis" in captured.err
    assert captured.out == ""
    assert call_log == []


def test_output_json_puts_one_document_on_stdout_and_progress_on_stderr(stack: Any, capsys) -> None:
    provisioned, topology = stack
    capsys.readouterr()

    code = main(["build", "--topology", str(topology), "--refresh", "0.05", "--output", "json"])

    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 0
    assert document["status"] == "SUCCEEDED" and document["name"].startswith("build-")
    assert set(document["summary"]) >= {"unchanged"}
    assert "enter ValidateTopology" in captured.err


def test_drill_dry_run_prints_what_it_would_break_and_starts_nothing(stack: Any, capsys) -> None:
    provisioned, _ = stack
    ec2 = boto3.client("ec2", region_name="ap-northeast-1")
    server_a = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "tag:regionha:name", "Values": ["Server-A"]}])["Reservations"] for i in r["Instances"]]
    nacls = {a["NetworkAclId"] for a in ec2.describe_network_acls()["NetworkAcls"]}
    before = len(executions(provisioned, "DrillStateMachine"))
    capsys.readouterr()

    code = main(["drill", "start", "--dry-run", "--step-timeout", "30"])

    out = capsys.readouterr().out
    assert code == 0
    assert "drill acceptance on deployment regionha-ref (builtin mode); the record names Server-A" in out
    assert f"stop instance {server_a[0]} (Server-A, ap-northeast-1)" in out
    entries = [line for line in out.splitlines() if "add NACL entry" in line]
    assert any("path tokyo-resolver, VPC tokyo, ap-northeast-1" in e and "deny UDP 53 from 10.2.10.0/24" in e
               for e in entries)
    assert any("path osaka-bind, VPC osaka, ap-northeast-3" in e for e in entries)
    assert any(nacl in entries[0] for nacl in nacls)
    assert out.rstrip().endswith("dry run: nothing was started")
    assert len(executions(provisioned, "DrillStateMachine")) == before
    # Nothing was broken: no entry in the reserved rule numbers, the instance still running.
    assert not [e for a in ec2.describe_network_acls()["NetworkAcls"] for e in a["Entries"]
                if 60 <= e["RuleNumber"] <= 99]
    assert ec2.describe_instances(InstanceIds=server_a)["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_drill_dry_run_json_gives_the_plan(stack: Any, capsys) -> None:
    capsys.readouterr()

    code = main(["drill", "start", "--dry-run", "--scenario", "cut-path", "--region-path", "osaka-bind", "--cut", "all",
                 "--output", "json"])

    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["input"] == {"scenario": "cut-path", "region_path": "osaka-bind", "cut": "all"}
    faults = [f for s in document["plan"]["steps"] for f in s["faults"]]
    assert [(f["kind"], f["target"]) for f in faults] == [("path", "osaka-bind")]
    assert [e["protocol"] for e in faults[0]["entries"]] == ["-1"]


def test_a_drill_on_aws_is_not_started_without_confirmation(stack: Any, capsys, monkeypatch) -> None:
    provisioned, _ = stack
    before = len(executions(provisioned, "DrillStateMachine"))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    capsys.readouterr()

    code = main(["drill", "start"])

    captured = capsys.readouterr()
    assert code == 2
    assert "stop instance" in captured.out  # the plan is shown first
    assert "confirm on a terminal, or pass --yes" in captured.err
    assert len(executions(provisioned, "DrillStateMachine")) == before


def test_every_drill_input_is_a_flag_and_reaches_the_execution_input(stack: Any, capsys) -> None:
    provisioned, _ = stack
    argv = ["drill", "start", "--yes", "--no-wait", "--scenario", "cut-path", "--region-path", "osaka-bind",
            "--deployment", "regionha-ref", "--poll-interval", "0.25", "--step-timeout", "30", "--no-failback",
            "--alarm-timeout", "5", "--alarm-ok-timeout", "6", "--rejoin-timeout", "7", "--probe-timeout", "1.5",
            "--fault-ttl", "600", "--lock-ttl", "900", "--cut", "dns", "--detection-seconds", "30",
            "--cluster-action", '{"commands": ["pcs node standby"]}']
    given = {a.removeprefix("--").removeprefix("no-").replace("-", "_") for a in argv if a.startswith("--")}
    fields = {f for f in drill.DrillSettings.__dataclass_fields__}
    assert fields - {"region_path"} <= given  # a new input without a flag fails here
    capsys.readouterr()

    code = main(argv)

    assert code == 0
    newest = max(executions(provisioned, "DrillStateMachine"), key=lambda d: d["startDate"])
    sent = json.loads(newest["input"])
    assert sent == {"scenario": "cut-path", "region_path": "osaka-bind", "deployment": "regionha-ref",
                    "poll_interval": 0.25, "step_timeout": 30.0, "failback": False, "alarm_timeout": 5.0,
                    "alarm_ok_timeout": 6.0, "rejoin_timeout": 7.0, "probe_timeout": 1.5, "fault_ttl": 600.0,
                    "lock_ttl": 900.0, "cut": "dns", "cluster_action": {"commands": ["pcs node standby"]},
                    "detection_seconds": 30.0}
    drill.DrillSettings.from_input(sent, None)  # what the drill itself accepts
    sfn = boto3.client("stepfunctions", region_name=STACK_REGION)
    while sfn.describe_execution(executionArn=newest["executionArn"])["status"] == "RUNNING":
        time.sleep(0.1)  # no node answers here: its preflight refuses, it releases its lock and ends


@pytest.mark.parametrize(("argv", "message"), [
    (["--step-timeout", "900"], "--step-timeout + --alarm-timeout and --rejoin-timeout must each fit in 840 s"),
    (["--poll-interval", "0"], "--poll-interval must be in (0, 60] seconds"),
    (["--scenario", "cut-path"], "--scenario cut-path needs --region-path NAME"),
])
def test_bad_drill_input_exits_2_before_any_aws_call(argv: list[str], message: str, capsys,
                                                     call_log: list[str]) -> None:
    code = main(["drill", "start", "--yes", *argv])

    assert code == 2
    assert message in capsys.readouterr().err
    assert call_log == []


def test_teardown_tears_down_the_topology_the_build_saved(stack: Any, capsys) -> None:
    provisioned, topology = stack
    capsys.readouterr()

    code = main(["teardown", "--refresh", "0.05", "--stack-name", "regionha"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "tearing down deployment regionha-ref as its last build saved it" in out
    assert out.rstrip().splitlines()[-1].startswith("teardown SUCCEEDED")
    newest = max(executions(provisioned, "TeardownStateMachine"), key=lambda d: d["startDate"])
    assert json.loads(newest["input"])["topology"]["waits"] == {"poll_seconds": 0, "max_polls": 5}
    assert not boto3.client("ec2", region_name="ap-northeast-1").describe_vpcs(
        Filters=[{"Name": "tag:regionha:deployment", "Values": ["regionha-ref"]}])["Vpcs"]
    # Built again, for the tests that run after this one in any order.
    assert main(["build", "--topology", str(topology), "--refresh", "0.05"]) == 0


# -- region, credentials, access -----------------------------------------------------------------------


@pytest.mark.parametrize(("explicit", "arn", "env", "profile_region", "want"), [
    ("eu-west-1", "arn:aws:states:us-east-2:1:execution:d:x", {"AWS_REGION": "ap-south-1"}, "sa-east-1", "eu-west-1"),
    (None, "arn:aws:states:us-east-2:1:execution:d:x", {"AWS_REGION": "ap-south-1"}, "sa-east-1", "us-east-2"),
    (None, None, {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "ca-central-1"}, "sa-east-1", "ap-south-1"),
    (None, None, {"AWS_DEFAULT_REGION": "ca-central-1"}, "sa-east-1", "ca-central-1"),
    (None, None, {}, "sa-east-1", "sa-east-1"),
    (None, None, {}, None, None),
])
def test_the_region_comes_from_flag_arn_environment_then_profile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explicit: str | None, arn: str | None,
        env: dict[str, str], profile_region: str | None, want: str | None) -> None:
    config = tmp_path / "config"
    config.write_text("[profile ops]\n" + (f"region = {profile_region}\n" if profile_region else ""))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    assert cli_target.resolve_region(explicit, arn, "ops") == want


def test_drill_report_takes_the_region_from_the_arn(moto_aws: None, monkeypatch, capsys) -> None:
    sfn = boto3.client("stepfunctions", region_name="eu-west-1")
    arn = sfn.create_state_machine(name="d", roleArn="arn:aws:iam::123456789012:role/r", definition=json.dumps(
        {"StartAt": "R", "States": {"R": {"Type": "Pass", "Result": {"status": "PASSED", "scenario": "x"},
                                          "End": True}}}))["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="x")["executionArn"]
    while sfn.describe_execution(executionArn=execution)["status"] == "RUNNING":
        pass
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-1")

    code = main(["drill", "report", execution])

    assert code == 0
    assert capsys.readouterr().out.startswith("regionha drill PASSED")


def test_missing_credentials_are_named_as_such(moto_aws: None, tmp_path: Path, monkeypatch, capsys) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))

    code = main(["build", "--region", STACK_REGION])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("regionha build: no AWS credentials found: run `aws configure`")


def test_an_unknown_profile_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))

    code = main(["teardown", "--profile", "nobody", "--region", STACK_REGION])

    assert code == 2
    assert "The config profile (nobody) could not be found" in capsys.readouterr().err


def test_access_denied_is_named_with_the_refused_action(moto_aws: None, monkeypatch, capsys) -> None:
    from moto.core import set_initial_no_auth_action_count

    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "cloudformation:DescribeStacks", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    sfn = boto3.client("stepfunctions", region_name=STACK_REGION)
    arn = sfn.create_state_machine(name="build", roleArn="arn:aws:iam::123456789012:role/r", definition=json.dumps(
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)

    @set_initial_no_auth_action_count(0)
    def run() -> int:
        return main(["build", "--state-machine-arn", arn])

    code = run()

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("regionha build: access denied: StartExecution was refused (")
    assert not sfn.list_executions(stateMachineArn=arn)["executions"]


@pytest.fixture
def call_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every AWS API call any boto3 session makes (botocore's before-call event, on every new client)."""
    calls: list[str] = []
    original = boto3.session.Session.client

    def client(self: Any, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)
        made.meta.events.register("before-call.*.*", lambda event_name, **_: calls.append(event_name))
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    os.environ.pop("AWS_PROFILE", None)
    yield calls
