"""Provisioning a SAM template into moto (in-process), intrinsic resolution, and handler binding."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local.aws.intrinsics import NO_VALUE, Intrinsics
from regionha.local.aws.lambdas import HandlerRegistry, LocalFunction
from regionha.local.aws.provision import provision
from regionha.local.aws.sam import translate

MINI_SAM = Path(__file__).parents[1] / "fixtures" / "mini-sam" / "template.yaml"
REGION = "ap-southeast-1"
ACCOUNT = "123456789012"


@pytest.fixture
def clients(moto_aws: None) -> Clients:
    return Clients()


def write_template(directory: Path, body: str) -> Path:
    path = directory / "template.yaml"
    path.write_text(textwrap.dedent(body))
    return path


# ---- the fixture template, end to end


def test_provisions_every_resource_with_intrinsics_resolved(clients: Clients) -> None:
    stack = provision(clients, MINI_SAM, stack_name="mini", region=REGION)

    table = "mini-StateTable"
    record = stack.functions["RecordStepFunction"]
    assert record.name == "mini-RecordStepFunction"
    assert record.arn == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:mini-RecordStepFunction"
    assert record.code_dir == MINI_SAM.parent / "functions" / "record_step"
    assert record.environment == {
        "STATE_TABLE": table,
        "DEPLOYMENT": "mini",
        "NAME_PREFIX": f"mini-{REGION}",  # Fn::Join with AWS::Region
        "LOG_LEVEL": "DEBUG",  # Fn::If on IsProd (false by default)
        "POWERTOOLS_SERVICE_NAME": "mini",
        "POWERTOOLS_METRICS_NAMESPACE": "mini/mini",  # Fn::Sub with AWS::StackName
    }
    # Globals apply, the function's own Timeout wins over them.
    assert (record.timeout, record.memory) == (10, 256)
    assert stack.functions["RefuseStepFunction"].timeout == 3

    lambda_ = clients.client("lambda", REGION)
    config = lambda_.get_function(FunctionName=record.name)["Configuration"]
    assert config["Environment"]["Variables"]["STATE_TABLE"] == table
    assert config["Role"] == stack.attribute("RecordStepFunctionRole", "Arn")
    assert [layer["Arn"] for layer in config["Layers"]] == [
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:mini-shared:1"]

    # DefinitionSubstitutions (GetAtt and Ref) are applied before the state machine is created.
    sm_arn = stack.state_machines["mini-flow"]
    definition = json.loads(clients.client("stepfunctions", REGION)
                            .describe_state_machine(stateMachineArn=sm_arn)["definition"])
    assert definition["States"]["RefuseStep"]["Resource"] == stack.functions["RefuseStepFunction"].arn
    assert definition["States"]["RecordStart"]["Parameters"]["FunctionName"] == record.arn
    assert definition["States"]["ReadStart"]["Parameters"]["TableName"] == table

    alarm = clients.client("cloudwatch", REGION).describe_alarms(AlarmNames=["mini-flow-failed"])["MetricAlarms"][0]
    assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": sm_arn}]
    assert alarm["AlarmActions"] == [stack.topics["mini-AlertTopic"]]
    assert stack.alarms["mini-flow-composite"]["AlarmRule"] == 'ALARM("mini-flow-failed")'

    body = json.loads(clients.client("cloudwatch", REGION).get_dashboard(
        DashboardName="mini-FlowDashboard")["DashboardBody"])
    widget = body["widgets"][0]["properties"]
    assert widget == {"title": "mini flow",  # Fn::Select, via a Fn::Sub variable map
                      "alarms": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:mini-flow-failed"]}

    assert clients.ssm(REGION).get_parameter(Name="/mini/state-table")["Parameter"]["Value"] == table
    assert clients.client("dynamodb", REGION).describe_time_to_live(TableName=table)[
        "TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"

    heartbeat = stack.rules["mini-RecordStepFunctionHeartbeat"]
    assert heartbeat.schedule_expression == "rate(5 minutes)"
    assert heartbeat.targets[0]["Arn"] == record.arn
    assert json.loads(heartbeat.targets[0]["Input"]) == {"run": "heartbeat", "step": "beat"}
    assert stack.rules["mini-MiniFlowNightly"].state == "DISABLED"

    subscriptions = clients.client("sns", REGION).list_subscriptions_by_topic(
        TopicArn=stack.topics["mini-AlertTopic"])["Subscriptions"]
    assert {(s["Protocol"], s["Endpoint"]) for s in subscriptions} == {
        ("email", "oncall@example.invalid"), ("lambda", record.arn)}

    assert stack.resources["ArchiveBucket"].skipped == "condition IsProd is false"
    assert stack.outputs == {"MiniFlowArn": sm_arn, "StateTableName": table}


def test_parameter_override_switches_conditions(clients: Clients) -> None:
    stack = provision(clients, MINI_SAM, stack_name="Mini_Prod", region=REGION,
                      parameters={"Environment": "prod"})

    bucket = stack.physical_id("ArchiveBucket")
    assert bucket == "mini-prod-archivebucket"  # S3 names are lowercase, no underscores
    assert clients.client("s3", REGION).get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert stack.functions["RecordStepFunction"].environment["LOG_LEVEL"] == "INFO"
    assert stack.outputs["ArchiveBucketName"] == bucket


def test_provisioning_twice_creates_nothing_new(clients: Clients) -> None:
    first = provision(clients, MINI_SAM, stack_name="mini", region=REGION)
    second = provision(clients, MINI_SAM, stack_name="mini", region=REGION)

    assert second.resources == first.resources
    assert len(clients.client("lambda", REGION).list_functions()["Functions"]) == 2
    assert len(clients.client("lambda", REGION).list_layer_versions(LayerName="mini-shared")["LayerVersions"]) == 1
    assert len(clients.client("stepfunctions", REGION).list_state_machines()["stateMachines"]) == 1
    assert len(clients.client("sns", REGION).list_subscriptions()["Subscriptions"]) == 2
    assert len(clients.client("events", REGION).list_rules()["Rules"]) == 2
    assert len(clients.client("iam", REGION).list_roles()["Roles"]) == 4


def test_bad_parameter_override_is_refused(clients: Clients) -> None:
    with pytest.raises(ConfigurationError, match="not one of"):
        provision(clients, MINI_SAM, stack_name="mini", parameters={"Environment": "staging"})
    with pytest.raises(ConfigurationError, match="undeclared"):
        provision(clients, MINI_SAM, stack_name="mini", parameters={"Nope": "x"})


# ---- drift and template errors fail loudly


def test_unknown_resource_type_fails_with_its_name(clients: Clients, tmp_path: Path) -> None:
    template = write_template(tmp_path, """
        Resources:
          Vpc:
            Type: AWS::EC2::VPC
            Properties: {CidrBlock: 10.0.0.0/16}
    """)
    with pytest.raises(ConfigurationError, match="AWS::EC2::VPC is not emulated"):
        provision(clients, template, stack_name="drift")


def test_unresolved_definition_substitution_fails(clients: Clients, tmp_path: Path) -> None:
    (tmp_path / "flow.asl.json").write_text(json.dumps(
        {"StartAt": "Go", "States": {"Go": {"Type": "Task", "Resource": "${MissingArn}", "End": True}}}))
    template = write_template(tmp_path, """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Flow:
            Type: AWS::Serverless::StateMachine
            Properties:
              DefinitionUri: flow.asl.json
              DefinitionSubstitutions: {OtherArn: x}
    """)
    with pytest.raises(ConfigurationError, match=r"unresolved substitutions \['\$\{MissingArn\}'\]"):
        provision(clients, template, stack_name="subs")


def test_missing_code_directory_fails_at_translation(tmp_path: Path) -> None:
    template = write_template(tmp_path, """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: functions/nowhere/, Handler: app.lambda_handler, Runtime: python3.13}
    """)
    with pytest.raises(ConfigurationError, match="functions/nowhere/"):
        translate(template)


def test_long_default_names_are_shortened_within_api_limits(clients: Clients, tmp_path: Path) -> None:
    template = write_template(tmp_path, """
        Resources:
          AVeryLongLogicalIdForARoleThatWouldNotFitInSixtyFourCharactersOnce:
            Type: AWS::IAM::Role
            Properties:
              AssumeRolePolicyDocument: {Version: "2012-10-17", Statement: []}
    """)
    stack = provision(clients, template, stack_name="a-long-stack-name")
    name = stack.physical_id("AVeryLongLogicalIdForARoleThatWouldNotFitInSixtyFourCharactersOnce")
    assert len(name) == 64
    assert clients.client("iam", REGION).get_role(RoleName=name)["Role"]["RoleName"] == name


# ---- intrinsic functions


def make_intrinsics(conditions: dict | None = None) -> Intrinsics:
    resources = {"Table": ("tbl", {"Arn": "arn:table/tbl"}), "Topic": ("arn:topic", {"TopicName": "topic"})}

    def attribute(logical_id: str, name: str) -> object:
        return resources[logical_id][1][name]

    return Intrinsics(
        pseudo={"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": "st",
                "AWS::Partition": "aws"},
        parameters={"Env": "prod", "Zones": ["a", "b"]},
        conditions=conditions or {"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}},
        mappings={"Sizes": {"prod": {"Memory": 512}}},
        resource_ref=lambda logical_id: resources[logical_id][0],
        resource_attribute=attribute,
    )


@pytest.mark.parametrize(("expression", "expected"), [
    ({"Ref": "Table"}, "tbl"),
    ({"Ref": "Env"}, "prod"),
    ({"Ref": "AWS::Region"}, REGION),
    ({"Fn::GetAtt": ["Table", "Arn"]}, "arn:table/tbl"),
    ({"Fn::GetAtt": "Topic.TopicName"}, "topic"),
    ({"Fn::Sub": "${AWS::StackName}-${Table}-${Table.Arn}"}, "st-tbl-arn:table/tbl"),
    ({"Fn::Sub": ["${A}/${Env}", {"A": {"Ref": "Topic"}}]}, "arn:topic/prod"),
    ({"Fn::Sub": "${!Literal}-${Env}"}, "${Literal}-prod"),
    ({"Fn::Join": [",", [{"Ref": "Env"}, "x"]]}, "prod,x"),
    ({"Fn::Join": ["", {"Ref": "Zones"}]}, "ab"),
    ({"Fn::Select": ["1", {"Ref": "Zones"}]}, "b"),
    ({"Fn::Select": [0, {"Fn::Split": ["/", "p/q"]}]}, "p"),
    ({"Fn::If": ["IsProd", "big", "small"]}, "big"),
    ({"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Memory"]}, 512),
    ({"Fn::GetAZs": ""}, [f"{REGION}a", f"{REGION}b", f"{REGION}c"]),
    ([1, {"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, 2]}], [1]),
    ({"Keep": 1, "Drop": {"Ref": "AWS::NoValue"}}, {"Keep": 1}),
])
def test_intrinsic_functions(expression: object, expected: object) -> None:
    assert make_intrinsics().resolve(expression) == expected


@pytest.mark.parametrize(("condition", "expected"), [
    ({"Fn::Equals": [{"Ref": "Env"}, "prod"]}, True),
    ({"Fn::Not": [{"Fn::Equals": [{"Ref": "Env"}, "prod"]}]}, False),
    ({"Fn::And": [{"Condition": "IsProd"}, {"Fn::Equals": ["a", "a"]}]}, True),
    ({"Fn::Or": [{"Fn::Equals": ["a", "b"]}, {"Fn::Equals": [1, "1"]}]}, True),
])
def test_conditions(condition: dict, expected: bool) -> None:
    intrinsics = make_intrinsics({"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}, "Tested": condition})
    assert intrinsics.condition("Tested") is expected


def test_unsupported_intrinsic_fails_loudly() -> None:
    with pytest.raises(ConfigurationError, match="Fn::ImportValue"):
        make_intrinsics().resolve({"Fn::ImportValue": "shared-vpc"})
    assert make_intrinsics().ref("AWS::NoValue") is NO_VALUE


# ---- binding handlers to the provisioned functions


def test_registry_binds_handlers_and_imports_each_under_its_own_module(clients: Clients) -> None:
    stack = provision(clients, MINI_SAM, stack_name="mini", region=REGION)
    registry = HandlerRegistry.from_template(MINI_SAM, region=REGION)
    functions = {f.logical_id: f for f in registry.bind(stack)}

    record, refuse = functions["RecordStepFunction"], functions["RefuseStepFunction"]
    assert record.module_name != refuse.module_name  # both files are app.py
    assert record.load().__module__ == record.module_name
    assert refuse.load().__module__ == refuse.module_name
    assert registry.lookup(record.arn, "us-east-1") is record  # the ARN's region wins
    assert registry.lookup(f"{ACCOUNT}:function:{record.name}:$LATEST", REGION) is record
    assert registry.lookup(record.name, "ap-northeast-1") is None
    assert record.environment["STATE_TABLE"] == "mini-StateTable"
    assert record.role_arn == stack.functions["RecordStepFunction"].role_arn and ":role/" in record.role_arn


def test_each_handler_sees_only_its_own_functions_environment(clients: Clients, tmp_path: Path) -> None:
    # GIVEN two functions giving one variable different values and each a variable of its own
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(
            "import os\n"
            "SEEN_AT_IMPORT = os.environ.get('MODE')\n"
            "def lambda_handler(event, context):\n"
            "    return {'mode': os.environ.get('MODE'), 'import': SEEN_AT_IMPORT,\n"
            "            'only_one': os.getenv('ONLY_ONE'), 'only_two': 'ONLY_TWO' in os.environ,\n"
            "            'name': os.environ['AWS_LAMBDA_FUNCTION_NAME']}\n")
    template = write_template(tmp_path, """
        Transform: AWS::Serverless-2016-10-31
        Globals:
          Function: {Runtime: python3.13, Handler: app.lambda_handler}
        Resources:
          One:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: one/, Environment: {Variables: {MODE: fast, ONLY_ONE: x}}}
          Two:
            Type: AWS::Serverless::Function
            Properties: {CodeUri: two/, Environment: {Variables: {MODE: slow, ONLY_TWO: y}}}
    """)
    stack = provision(clients, template, stack_name="own-env")
    functions = {f.logical_id: f for f in HandlerRegistry.from_template(template).bind(stack)}

    # WHEN both run
    one = json.loads(functions["One"].invoke(b"{}").payload)
    two = json.loads(functions["Two"].invoke(b"{}").payload)

    # THEN each saw its own values (at import too), never the other's, and none leaked into the process
    assert one == {"mode": "fast", "import": "fast", "only_one": "x", "only_two": False,
                   "name": "own-env-One"}
    assert two == {"mode": "slow", "import": "slow", "only_one": None, "only_two": True,
                   "name": "own-env-Two"}
    assert "MODE" not in os.environ and "ONLY_ONE" not in os.environ


def local_function(tmp_path: Path, source: str, timeout: float = 3) -> LocalFunction:
    (tmp_path / "app.py").write_text(textwrap.dedent(source))
    return LocalFunction(logical_id="Fn", name="st-Fn", arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:st-Fn",
                         region=REGION, code_dir=tmp_path, handler="app.lambda_handler", timeout=timeout,
                         memory=128, environment={})


def test_invoke_passes_a_lambda_context_and_returns_json(tmp_path: Path) -> None:
    function = local_function(tmp_path, """
        def lambda_handler(event, context):
            return {"echo": event, "name": context.function_name, "arn": context.invoked_function_arn,
                    "memory": context.memory_limit_in_mb, "request": context.aws_request_id,
                    "remaining": context.get_remaining_time_in_millis()}
    """)
    outcome = function.invoke(b'{"a": 1}', request_id="req-1")

    assert outcome.error_type is None
    result = json.loads(outcome.payload)
    assert result["echo"] == {"a": 1}
    assert (result["name"], result["arn"], result["memory"], result["request"]) == (
        "st-Fn", function.arn, 128, "req-1")
    assert 0 < result["remaining"] <= 3000


@pytest.mark.parametrize(("source", "error_type"), [
    ("class StepRefused(Exception):\n    pass\ndef lambda_handler(event, context):\n    raise StepRefused('no')\n",
     "StepRefused"),
    ("def lambda_handler(event, context):\n    return object()\n", "Runtime.MarshalError"),
    ("import not_a_module_anywhere\n", "Runtime.ImportModuleError"),
])
def test_invoke_reports_errors_like_lambda(tmp_path: Path, source: str, error_type: str) -> None:
    outcome = local_function(tmp_path, source).invoke(b"{}")

    body = json.loads(outcome.payload)
    assert outcome.error_type == body["errorType"] == error_type
    assert isinstance(body["stackTrace"], list)


def test_a_handler_running_past_its_timeout_fails_as_lambda_reports_it(tmp_path: Path) -> None:
    # GIVEN a handler that sleeps past its 0.3 s Timeout, then would make an AWS call
    function = local_function(tmp_path, """
        import time
        import boto3
        CALLED = []
        def lambda_handler(event, context):
            time.sleep(1.0)
            CALLED.append(True)
            boto3.client("sts", region_name="us-east-1").get_caller_identity()
    """, timeout=0.3)

    # WHEN it is invoked
    started = time.monotonic()
    outcome = function.invoke(b"{}", request_id="req-9")
    answered_after = time.monotonic() - started

    # THEN the caller gets Lambda's timeout error at the deadline, not when the handler would have ended
    body = json.loads(outcome.payload)
    assert outcome.timed_out and outcome.error_type == body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"] == "RequestId: req-9 Error: Task timed out after 0.30 seconds"
    assert answered_after < 1.0
    # and the late handler is stopped: it never gets to run the rest of its code
    time.sleep(1.2)
    assert function.load().__globals__["CALLED"] == []
