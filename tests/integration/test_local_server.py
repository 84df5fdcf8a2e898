"""The emulated AWS: a moto server in this process that runs the template's real handlers.

No root and no BIND needed: everything listens on 127.0.0.1, so these tests carry no marker.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from regionha.local.aws.provision import Stack
from regionha.local.aws.server import LocalAws

MINI_SAM = Path(__file__).parents[1] / "fixtures" / "mini-sam" / "template.yaml"
REPO_TEMPLATE = Path(__file__).parents[2] / "template.yaml"
REGION = "ap-southeast-1"


@pytest.fixture
def local_aws(aws_credentials: None) -> Iterator[LocalAws]:
    # Function-scoped on purpose: the autouse credentials fixture removes AWS_ENDPOINT_URL before each
    # test, and a handler without it would call real AWS (LocalAws refuses to run it then, see below).
    with LocalAws() as aws:
        yield aws


@pytest.fixture
def mini(local_aws: LocalAws) -> Stack:
    return local_aws.deploy(MINI_SAM, stack_name="mini", region=REGION)


def wait_for_execution(sfn: object, execution_arn: str, attempts: int = 300) -> dict:
    """Bounded poll: 300 x 0.1 s; the whole flow takes about 1.5 s (one 1 s retry interval)."""
    for _ in range(attempts):
        execution = sfn.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.1)
    return execution


def items_of_run(aws: LocalAws, stack: Stack, run: str) -> dict[str, dict]:
    dynamodb = aws.clients().client("dynamodb", REGION)
    items = dynamodb.query(TableName=stack.outputs["StateTableName"], KeyConditionExpression="pk = :run",
                           ExpressionAttributeValues={":run": {"S": run}})["Items"]
    return {item["sk"]["S"]: item for item in items}


def test_state_machine_runs_the_real_handlers_and_catches_by_class_name(local_aws: LocalAws, mini: Stack) -> None:
    sfn = local_aws.clients().client("stepfunctions", REGION)

    started = sfn.start_execution(stateMachineArn=mini.state_machines["mini-flow"], name="run-1",
                                  input=json.dumps({"run": "run-1", "transient_attempts": 1}))
    execution = wait_for_execution(sfn, started["executionArn"])

    assert execution["status"] == "SUCCEEDED", execution
    output = json.loads(execution["output"])
    assert output["RefuseStepError"]["Error"] == "ConfigurationError"
    assert json.loads(output["RefuseStepError"]["Cause"])["errorMessage"] == \
        "run run-1 asks for something retrying cannot fix"
    # The aws-sdk integration read what the first handler wrote, through the substituted table name.
    assert output["ReadStart"] == {"function": "mini-RecordStepFunction"}

    items = items_of_run(local_aws, mini, "run-1")
    assert items["start"]["function"]["S"] == "mini-RecordStepFunction"
    assert items["start"]["prefix"]["S"] == f"mini-{REGION}"  # the stack's resolved environment
    assert items["refused"]["error"]["S"] == "ConfigurationError"
    assert items["refuse-attempts"]["attempts"]["N"] == "2"  # TransientError retried once, then refused

    refusals = [i.error_type for i in local_aws.invocations if i.function == "mini-RefuseStepFunction"]
    assert refusals == ["TransientError", "ConfigurationError"]
    assert all(i.ended >= i.started for i in local_aws.invocations)


def test_invoke_request_response_event_and_unknown(local_aws: LocalAws, mini: Stack) -> None:
    lambda_ = local_aws.clients().client("lambda", REGION)
    record = mini.functions["RecordStepFunction"]

    ok = lambda_.invoke(FunctionName=record.name, Payload=json.dumps({"run": "direct", "step": "one"}))
    assert "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"run": "direct", "step": "one",
                                                "recorded_by": "mini-RecordStepFunction"}

    failed = lambda_.invoke(FunctionName=mini.functions["RefuseStepFunction"].arn,
                            Payload=json.dumps({"run": "direct"}))
    assert failed["FunctionError"] == "Unhandled"
    body = json.loads(failed["Payload"].read())
    assert body["errorType"] == "ConfigurationError"
    assert any("refuse_step/app.py" in frame for frame in body["stackTrace"])

    queued = lambda_.invoke(FunctionName=record.name, InvocationType="Event",
                            Payload=json.dumps({"run": "direct", "step": "async"}))
    assert queued["StatusCode"] == 202
    assert local_aws.wait_for_events(timeout=30)
    assert "async" in items_of_run(local_aws, mini, "direct")
    assert [i.invocation_type for i in local_aws.invocations] == ["RequestResponse", "RequestResponse", "Event"]
    assert local_aws.invoked_functions() >= {"mini-RecordStepFunction", "mini-RefuseStepFunction"}

    with pytest.raises(ClientError) as refused:
        lambda_.invoke(FunctionName="mini-NoSuchFunction", Payload=b"{}")
    assert refused.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_handlers_do_not_run_without_the_local_endpoint(local_aws: LocalAws, mini: Stack,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # No retries: the refusal is a 500, which botocore would otherwise retry with backoff.
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    lambda_ = session.client("lambda", region_name=REGION, endpoint_url=local_aws.endpoint_url,
                             config=Config(retries={"total_max_attempts": 1}))
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.ap-southeast-1.amazonaws.com")

    with pytest.raises(ClientError, match="AWS_ENDPOINT_URL_DYNAMODB"):
        lambda_.invoke(FunctionName=mini.functions["RecordStepFunction"].name,
                       Payload=json.dumps({"run": "x", "step": "y"}))
    assert local_aws.invocations == []
    assert local_aws.invoked_functions() == set()


def test_deploying_twice_into_the_server_duplicates_nothing(local_aws: LocalAws, mini: Stack) -> None:
    again = local_aws.deploy(MINI_SAM, stack_name="mini", region=REGION)

    assert again.resources == mini.resources
    clients = local_aws.clients()
    assert len(clients.client("lambda", REGION).list_functions()["Functions"]) == 2
    assert len(clients.client("stepfunctions", REGION).list_state_machines()["stateMachines"]) == 1
    assert len(clients.client("sns", REGION).list_subscriptions()["Subscriptions"]) == 2


def test_stop_frees_the_port_and_restores_the_environment(aws_credentials: None) -> None:
    from moto.core.config import default_user_config

    aws = LocalAws().start()
    port = aws.port
    assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint_url == f"http://127.0.0.1:{port}"
    assert os.environ["MOTO_PORT"] == str(port)
    assert aws.clients().client("sts", REGION).get_caller_identity()["Account"] == "123456789012"
    with pytest.raises(RuntimeError, match="already running"):
        LocalAws().start()

    aws.stop()
    aws.stop()  # idempotent

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # would raise EADDRINUSE if the server still held it
    assert "AWS_ENDPOINT_URL" not in os.environ
    assert default_user_config["stepfunctions"]["execute_state_machine"] is False
    with LocalAws() as again:  # a second one can start once the first has stopped
        assert again.port


@pytest.mark.skipif(not REPO_TEMPLATE.exists(), reason="template.yaml at the repository root is not written yet")
def test_repository_template_provisions(local_aws: LocalAws) -> None:
    stack = local_aws.deploy(REPO_TEMPLATE, stack_name="regionha", region=REGION)

    assert stack.functions, "the template defines no function"
    assert stack.state_machines, "the template defines no state machine"
    for function in stack.functions.values():
        local = local_aws.function(function.arn)
        assert local is not None, function.name
        assert callable(local.load()), function.name  # the handler imports in the local runtime


def test_metric_alarm_warm_up_goes_through_the_api_as_cloudwatchs(local_aws: LocalAws) -> None:
    # moto ignores WarmUpConfiguration: the CloudWatch middleware checks it, records it in the runtime's
    # evaluator and adds it (and EvaluationState IN_WARM_UP) to DescribeAlarms, as CloudWatch does.
    from datetime import UTC, datetime

    from regionha.local.aws.alarms import AlarmEvaluator
    from regionha.local.clock import ManualClock

    local_aws.composite_alarms = AlarmEvaluator(local_aws.clients(), [REGION],
                                                ManualClock(datetime(2026, 1, 5, tzinfo=UTC)))
    cw = local_aws.clients().client("cloudwatch", REGION)
    alarm = {"AlarmName": "warm", "Namespace": "Test", "MetricName": "Up", "Statistic": "Minimum", "Period": 60,
             "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "LessThanThreshold"}
    with pytest.raises(ClientError, match="1 to 2880") as refused:
        cw.put_metric_alarm(**alarm, WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 2881})
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert cw.describe_alarms(AlarmNames=["warm"])["MetricAlarms"] == []  # refused before moto stored it

    cw.put_metric_alarm(**alarm, WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 4})
    (described,) = cw.describe_alarms(AlarmNamePrefix="wa")["MetricAlarms"]
    assert described["WarmUpConfiguration"] == {"WarmUpPeriodDurationInMinutes": 4,
                                                "OnlyStartEvaluatingAfterWarmUpPeriodEnds": False}
    assert described["EvaluationState"] == "IN_WARM_UP"
    cw.delete_alarms(AlarmNames=["warm"])
    assert not local_aws.composite_alarms.in_warm_up(REGION, "warm")
