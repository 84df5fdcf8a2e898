"""EventBridge emulation: pattern matching, schedules, target input, EC2 state-change events."""

from __future__ import annotations

import io
import json
import time
import zipfile
from datetime import UTC, datetime

import boto3
import pytest

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local.aws.event_patterns import pattern_matches
from regionha.local.aws.events import (
    EC2_STATE_CHANGE,
    DeliveryLog,
    Ec2StateChangeEmitter,
    EventBus,
    ScheduleRunner,
    json_path,
    lifecycle_path,
    render_input,
)
from regionha.local.aws.schedule_expressions import Cron, Rate, parse_schedule
from regionha.local.clock import CompressedClock, ManualClock

REGION = "ap-northeast-1"
T0 = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
EVENT = {
    "source": "aws.ec2",
    "detail-type": EC2_STATE_CHANGE,
    "region": REGION,
    "resources": ["arn:aws:ec2:ap-northeast-1:123456789012:instance/i-1"],
    "detail": {
        "instance-id": "i-1",
        "state": "stopped",
        "count": 5,
        "flag": True,
        "ip": "10.1.2.3",
        "tags": ["a", "b"],
        "nested": {"deep": "value"},
        "items": [{"name": "x", "size": 1}, {"name": "y", "size": 2}],
        "nothing": None,
    },
}


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({"source": ["aws.ec2"]}, True),
        ({"source": ["aws.s3", "aws.ec2"]}, True),
        ({"source": ["aws.s3"]}, False),
        ({"detail": {"state": ["stopped"]}}, True),
        ({"detail": {"state": ["running"]}}, False),
        ({"detail": {"nested": {"deep": ["value"]}}}, True),
        ({"detail": {"nested": {"deep": ["other"]}}}, False),
        ({"detail": {"tags": ["b"]}}, True),  # an array in the event matches when any element does
        ({"detail": {"tags": ["c"]}}, False),
        ({"detail": {"count": [5]}}, True),
        ({"detail": {"count": ["5"]}}, False),  # a string does not equal a number
        ({"detail": {"flag": [True]}}, True),
        ({"detail": {"flag": [1]}}, False),  # JSON true is not 1
        ({"detail": {"nothing": [None]}}, True),
        ({"detail": {"state": [{"prefix": "sto"}]}}, True),
        ({"detail": {"state": [{"prefix": "run"}]}}, False),
        ({"detail": {"state": [{"prefix": {"equals-ignore-case": "STO"}}]}}, True),
        ({"detail": {"state": [{"suffix": "ped"}]}}, True),
        ({"detail": {"state": [{"equals-ignore-case": "STOPPED"}]}}, True),
        ({"detail": {"state": [{"wildcard": "s*d"}]}}, True),
        ({"detail": {"state": [{"wildcard": "r*"}]}}, False),
        ({"detail": {"state": [{"anything-but": "running"}]}}, True),
        ({"detail": {"state": [{"anything-but": ["stopped", "running"]}]}}, False),
        ({"detail": {"state": [{"anything-but": {"prefix": "sto"}}]}}, False),
        ({"detail": {"missing": [{"anything-but": "x"}]}}, False),  # anything-but needs the field
        ({"detail": {"state": [{"exists": True}]}}, True),
        ({"detail": {"missing": [{"exists": True}]}}, False),
        ({"detail": {"missing": [{"exists": False}]}}, True),
        ({"detail": {"state": [{"exists": False}]}}, False),
        ({"detail": {"nested": [{"exists": True}]}}, False),  # exists looks at leaves only
        ({"detail": {"count": [{"numeric": [">", 0, "<=", 5]}]}}, True),
        ({"detail": {"count": [{"numeric": ["<", 5]}]}}, False),
        ({"detail": {"state": [{"numeric": [">", 0]}]}}, False),
        ({"detail": {"ip": [{"cidr": "10.0.0.0/8"}]}}, True),
        ({"detail": {"ip": [{"cidr": "192.168.0.0/16"}]}}, False),
        ({"detail": {"items": {"name": ["y"], "size": [2]}}}, True),
        ({"detail": {"items": {"name": ["x"], "size": [2]}}}, False),  # fields of one array element
        ({"$or": [{"source": ["aws.s3"]}, {"detail": {"state": ["stopped"]}}]}, True),
        ({"$or": [{"source": ["aws.s3"]}, {"detail": {"state": ["running"]}}]}, False),
        ({"source": ["aws.ec2"], "detail": {"state": ["running"]}}, False),  # every field must match
        ({}, True),
    ],
)
def test_pattern_matches(pattern, matches):
    assert pattern_matches(pattern, EVENT) is matches


@pytest.mark.parametrize(
    "pattern",
    [
        {"source": "aws.ec2"},  # a bare value, not an array
        {"source": []},
        {"detail": {"state": [{"no-such-filter": 1}]}},
        {"detail": {"count": [{"numeric": [">"]}]}},
    ],
)
def test_bad_patterns_are_refused(pattern):
    with pytest.raises(ConfigurationError):
        pattern_matches(pattern, EVENT)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("rate(1 minute)", T0, datetime(2024, 1, 1, 0, 1, tzinfo=UTC)),
        ("rate(5 minutes)", datetime(2024, 1, 1, 0, 7, tzinfo=UTC), datetime(2024, 1, 1, 0, 12, tzinfo=UTC)),
        ("rate(2 hours)", T0, datetime(2024, 1, 1, 2, 0, tzinfo=UTC)),
        ("rate(1 day)", T0, datetime(2024, 1, 2, 0, 0, tzinfo=UTC)),
        ("cron(0/15 * * * ? *)", datetime(2024, 1, 1, 0, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 15, tzinfo=UTC)),
        ("cron(0 10 * * ? *)", T0, datetime(2024, 1, 1, 10, 0, tzinfo=UTC)),
        # 1 Jan 2024 is a Monday; day-of-week counts SUN=1, so MON-FRI is 2-6.
        ("cron(30 9 ? * SAT *)", T0, datetime(2024, 1, 6, 9, 30, tzinfo=UTC)),
        ("cron(0 0 ? * 1 *)", T0, datetime(2024, 1, 7, 0, 0, tzinfo=UTC)),
        ("cron(0 8 L * ? *)", T0, datetime(2024, 1, 31, 8, 0, tzinfo=UTC)),
        ("cron(0 8 ? * 2#2 *)", T0, datetime(2024, 1, 8, 8, 0, tzinfo=UTC)),
        ("cron(0 8 ? * 6L *)", T0, datetime(2024, 1, 26, 8, 0, tzinfo=UTC)),
        ("cron(0 0 1 JAN ? 2025)", T0, datetime(2025, 1, 1, 0, 0, tzinfo=UTC)),
        ("cron(0 0 1 JAN ? 2023)", T0, None),
    ],
)
def test_schedule_next_fire(expression, after, expected):
    assert parse_schedule(expression).next_after(after, after) == expected


@pytest.mark.parametrize(
    "expression", ["rate(0 minutes)", "rate(5 weeks)", "cron(0 10 * * *)", "cron(0 10 * * 1 *)", "cron(0 8 15W * ? *)"]
)
def test_bad_schedules_are_refused(expression):
    with pytest.raises(ConfigurationError):
        parse_schedule(expression)


def test_rate_counts_from_its_anchor():
    rate = Rate(300)
    anchor = datetime(2024, 1, 1, 0, 2, tzinfo=UTC)
    assert rate.next_after(datetime(2024, 1, 1, 0, 7, tzinfo=UTC), anchor) == datetime(2024, 1, 1, 0, 12, tzinfo=UTC)
    assert isinstance(parse_schedule("cron(* * * * ? *)"), Cron)


def test_render_input_variants():
    event = {"id": "e1", "time": "2024-01-01T00:00:00Z", "detail": {"instance-id": "i-1", "n": 3}}
    rule_arn = "arn:aws:events:ap-northeast-1:123456789012:rule/r1"
    assert json.loads(render_input({}, event, rule_arn)) == event
    assert render_input({"Input": '{"fixed": 1}'}, event, rule_arn) == '{"fixed": 1}'
    assert json.loads(render_input({"InputPath": "$.detail"}, event, rule_arn)) == event["detail"]
    transformer = {
        "InputPathsMap": {"id": "$.detail.instance-id", "n": "$.detail.n", "none": "$.detail.absent"},
        "InputTemplate": '{"instance": "<id>", "count": <n>, "text": "<id> x<n>", "rule": "<aws.events.rule-name>"}',
    }
    assert json.loads(render_input({"InputTransformer": transformer}, event, rule_arn)) == {
        "instance": "i-1",
        "count": 3,
        "text": "i-1 x3",
        "rule": "r1",
    }
    plain = {"InputPathsMap": {"id": "$.detail.instance-id"}, "InputTemplate": '"instance <id> stopped"'}
    assert json.loads(render_input({"InputTransformer": plain}, event, rule_arn)) == "instance i-1 stopped"
    assert json_path({"a": [{"b": 2}]}, "$.a[0].b") == 2
    assert json_path({"a": []}, "$.a[0].b") is None


def test_lifecycle_paths():
    assert lifecycle_path("running", "stopped") == ["stopping", "stopped"]
    assert lifecycle_path("stopped", "running") == ["pending", "running"]
    assert lifecycle_path("running", "terminated") == ["shutting-down", "terminated"]
    assert lifecycle_path(None, "running") == ["pending", "running"]
    assert lifecycle_path("stopped", "stopped") == []


# --- against moto -----------------------------------------------------------------------------


def _queue(name: str) -> tuple[str, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _drain(url: str) -> list[dict]:
    sqs = boto3.client("sqs", region_name=REGION)
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _function(name: str) -> str:
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    fn = boto3.client("lambda", region_name=REGION).create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="app.lambda_handler",
        Code={"ZipFile": buf.getvalue()},
    )
    return fn["FunctionArn"]


def test_rate_rule_fires_once_per_period_to_lambda_states_and_sqs(moto_aws):
    # GIVEN a rate(5 minutes) rule with a Lambda, a state machine and a queue as targets
    clock = ManualClock(T0)
    events = boto3.client("events", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    url, queue_arn = _queue("sched")
    fn_arn = _function("tick-fn")
    sm_arn = sfn.create_state_machine(
        name="tick-sm",
        roleArn="arn:aws:iam::123456789012:role/sfn",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
    )["stateMachineArn"]
    rule_arn = events.put_rule(Name="every-5", ScheduleExpression="rate(5 minutes)")["RuleArn"]
    events.put_targets(
        Rule="every-5",
        Targets=[{"Id": "fn", "Arn": fn_arn}, {"Id": "sm", "Arn": sm_arn}, {"Id": "q", "Arn": queue_arn}],
    )
    events.put_rule(Name="off", ScheduleExpression="rate(1 minute)", State="DISABLED")
    events.put_targets(Rule="off", Targets=[{"Id": "q", "Arn": queue_arn}])
    invocations = []

    def watch(request, **kwargs):
        invocations.append((request.headers["X-Amz-Invocation-Type"].decode(), json.loads(request.body)))

    session = boto3.DEFAULT_SESSION
    session.events.register("before-send.lambda.Invoke", watch)
    try:
        runner = ScheduleRunner(Clients(), [REGION], clock)
        # WHEN the runner sees the rule at T0 and 17 emulated minutes pass, ticking now and then
        runner.tick()
        for minutes in (4, 6, 3, 4):
            clock.advance(minutes=minutes)
            runner.tick()
    finally:
        session.events.unregister("before-send.lambda.Invoke", watch)

    # THEN it fired at 5, 10 and 15 minutes, to every target, with the scheduled event
    times = ["2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z", "2024-01-01T00:15:00Z"]
    messages = _drain(url)
    assert [m["time"] for m in messages] == times
    assert all(m["detail-type"] == "Scheduled Event" and m["resources"] == [rule_arn] for m in messages)
    assert [(kind, body["time"]) for kind, body in invocations] == [("Event", t) for t in times]
    executions = sfn.list_executions(stateMachineArn=sm_arn)["executions"]
    assert len(executions) == 3
    assert {
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["time"] for e in executions
    } == set(times)
    assert len(runner.log.all("every-5")) == 9 and all(d.ok for d in runner.log.all())
    assert runner.log.all("off") == []


def test_a_failing_target_is_recorded_not_raised(moto_aws):
    clock = ManualClock(T0)
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="broken", ScheduleExpression="rate(1 minute)")
    events.put_targets(Rule="broken", Targets=[{"Id": "gone", "Arn": "arn:aws:sqs:ap-northeast-1:123456789012:gone"}])
    runner = ScheduleRunner(Clients(), [REGION], clock)
    runner.tick()
    clock.advance(minutes=1)
    (delivery,) = runner.tick()
    assert not delivery.ok and delivery.error


def test_runner_thread_fires_on_a_compressed_clock(moto_aws):
    # One emulated minute per 10 real milliseconds; wait (bounded) for the first firing.
    clock = CompressedClock(compression=6000)
    events = boto3.client("events", region_name=REGION)
    url, queue_arn = _queue("fast")
    events.put_rule(Name="fast", ScheduleExpression="rate(1 minute)")
    events.put_targets(Rule="fast", Targets=[{"Id": "q", "Arn": queue_arn}])
    runner = ScheduleRunner(Clients(), [REGION], clock, interval=0.01)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while not runner.log.all("fast") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        runner.stop()
    assert runner.log.all("fast")
    assert _drain(url)


def test_ec2_stop_emits_stopping_then_stopped_to_matching_rules_only(moto_aws):
    # GIVEN a running instance and two rules: one for stopping/stopped, one for terminated
    clock = ManualClock(T0)
    events = boto3.client("events", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    stop_url, stop_arn = _queue("stops")
    term_url, term_arn = _queue("terminations")
    base = {"source": ["aws.ec2"], "detail-type": [EC2_STATE_CHANGE]}
    events.put_rule(Name="on-stop", EventPattern=json.dumps({**base, "detail": {"state": ["stopping", "stopped"]}}))
    events.put_targets(Rule="on-stop", Targets=[{"Id": "q", "Arn": stop_arn}])
    events.put_rule(Name="on-terminate", EventPattern=json.dumps({**base, "detail": {"state": ["terminated"]}}))
    events.put_targets(Rule="on-terminate", Targets=[{"Id": "q", "Arn": term_arn}])
    instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    log = DeliveryLog()
    emitter = Ec2StateChangeEmitter(Clients(), [REGION], EventBus(Clients(), clock, log=log))
    assert emitter.tick() == []  # the first look only learns the states

    # WHEN the instance is stopped
    ec2.stop_instances(InstanceIds=[instance])
    emitted = emitter.tick()

    # THEN stopping and stopped, in that order, reach the matching rule's target only
    assert [e["detail"]["state"] for e in emitted] == ["stopping", "stopped"]
    received = _drain(stop_url)
    assert [(m["detail"]["instance-id"], m["detail"]["state"]) for m in received] == [
        (instance, "stopping"),
        (instance, "stopped"),
    ]
    assert received[0]["resources"] == [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance}"]
    assert received[0]["source"] == "aws.ec2" and received[0]["time"] == "2024-01-01T00:00:00Z"
    assert _drain(term_url) == []
    assert [d.rule for d in log.all()] == ["on-stop", "on-stop"]

    # AND starting it again gives pending then running (no rule matches those)
    ec2.start_instances(InstanceIds=[instance])
    assert [e["detail"]["state"] for e in emitter.tick()] == ["pending", "running"]
    assert emitter.tick() == []


def test_event_bus_put_delivers_custom_events_to_enabled_matching_rules(moto_aws):
    clock = ManualClock(T0)
    events = boto3.client("events", region_name=REGION)
    url, arn = _queue("custom")
    pattern = json.dumps({"source": ["regionha.drill"], "detail": {"phase": [{"prefix": "cut"}]}})
    events.put_rule(Name="drill", EventPattern=pattern)
    events.put_targets(Rule="drill", Targets=[{"Id": "q", "Arn": arn, "InputPath": "$.detail"}])
    events.put_rule(Name="drill-off", EventPattern=pattern, State="DISABLED")
    events.put_targets(Rule="drill-off", Targets=[{"Id": "q", "Arn": arn}])
    bus = EventBus(Clients(), clock)
    deliveries = bus.put(
        {"source": "regionha.drill", "detail-type": "Drill", "region": REGION, "detail": {"phase": "cut-A"}}
    )
    bus.put({"source": "regionha.drill", "detail-type": "Drill", "region": REGION, "detail": {"phase": "heal"}})
    assert [d.rule for d in deliveries] == ["drill"]
    assert _drain(url) == [{"phase": "cut-A"}]


def test_a_rule_targeting_another_regions_bus_forwards_the_event_there(moto_aws):
    """EC2 sends state changes only to its own region's bus; a forwarding rule carries them to the stack's."""
    clock = ManualClock(T0)
    far = "ap-northeast-3"  # the node's region; REGION's bus is the stack's
    url, arn = _queue("forwarded")
    boto3.client("events", region_name=far).put_rule(
        Name="forward-ec2", EventPattern=json.dumps({"source": ["aws.ec2"]})
    )
    boto3.client("events", region_name=far).put_targets(
        Rule="forward-ec2", Targets=[{"Id": "bus", "Arn": f"arn:aws:events:{REGION}:123456789012:event-bus/default"}]
    )
    events = boto3.client("events", region_name=REGION)
    events.put_rule(Name="ec2-here", EventPattern=json.dumps({"source": ["aws.ec2"], "region": [far]}))
    events.put_targets(Rule="ec2-here", Targets=[{"Id": "q", "Arn": arn, "InputPath": "$.detail"}])

    EventBus(Clients(), clock).put(
        {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "region": far,
         "detail": {"instance-id": "i-1", "state": "stopped"}}
    )

    assert _drain(url) == [{"instance-id": "i-1", "state": "stopped"}]
