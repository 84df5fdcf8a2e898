"""CloudWatch alarm evaluation against moto: M of N, missing data, operators, history, actions, composites."""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local import clock as clock_module
from regionha.local.aws.alarm_rules import ALARM, INSUFFICIENT_DATA, OK, AlarmRule, evaluate_range
from regionha.local.aws.alarms import AlarmEvaluator, put_metric_data
from regionha.local.aws.events import EventBus
from regionha.local.clock import CompressedClock, ManualClock

REGION = "ap-northeast-1"
T0 = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
NS = "Regionha/Test"
DIMS = [{"Name": "Node", "Value": "A1"}]
RETAIN = "retain"


def _range(text: str) -> list[bool | None]:
    return [{"0": False, "X": True, "-": None}[c] for c in text.split()]


# The two tables of "Configuring how CloudWatch alarms treat missing data" (range 5, N = 3),
# columns MISSING, IGNORE, BREACHING, NOT BREACHING.
DOC_TABLES = [
    (3, "0 - X - X", (OK, OK, OK, OK)),
    (3, "0 - - - -", (OK, OK, OK, OK)),
    (3, "- - - - -", (INSUFFICIENT_DATA, RETAIN, ALARM, OK)),
    (3, "0 X X - X", (ALARM, ALARM, ALARM, ALARM)),
    (3, "- - X - -", (ALARM, RETAIN, ALARM, OK)),
    (2, "0 - X - X", (ALARM, ALARM, ALARM, ALARM)),
    (2, "0 0 X 0 X", (ALARM, ALARM, ALARM, ALARM)),
    (2, "0 - X - -", (OK, OK, ALARM, OK)),
    (2, "- - - - 0", (OK, OK, ALARM, OK)),
    (2, "- - - X -", (ALARM, RETAIN, ALARM, OK)),
]


@pytest.mark.parametrize(("m", "points", "expected"), DOC_TABLES)
@pytest.mark.parametrize("current", [OK, ALARM, INSUFFICIENT_DATA])
def test_evaluate_range_follows_the_cloudwatch_guide(m, points, expected, current):
    for treat, want in zip(("missing", "ignore", "breaching", "notBreaching"), expected, strict=True):
        got = evaluate_range(_range(points), 3, m, treat, current).state
        assert got == (current if want == RETAIN else want), (points, m, treat)


def test_evaluate_range_fills_only_the_newest_missing_periods():
    result = evaluate_range(_range("0 - X - -"), 3, 3, "breaching", OK)
    assert result.filled == (4,) and result.used == (0, 2, 4) and result.breaching == 2
    assert result.state == OK
    # A breach too recent to confirm keeps the state instead of flapping to OK.
    assert evaluate_range(_range("- - - - X"), 3, 3, "missing", INSUFFICIENT_DATA).state == INSUFFICIENT_DATA
    with pytest.raises(ConfigurationError):
        evaluate_range(_range("- - -"), 3, 4, "missing", OK)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('ALARM("a")', True),
        ("ALARM(a) AND ALARM(b)", False),
        ("ALARM(a) OR ALARM(b)", True),
        ("NOT ALARM(b)", True),
        ("OK(b) AND INSUFFICIENT_DATA(c)", True),
        ("ALARM(a) OR ALARM(b) AND OK(c)", True),  # AND binds tighter than OR
        ("(ALARM(a) OR ALARM(b)) AND OK(c)", False),
        ("TRUE AND NOT FALSE", True),
        ('ALARM("arn:aws:cloudwatch:ap-northeast-1:123456789012:alarm:a")', True),
    ],
)
def test_alarm_rule(rule, expected):
    states = {
        "a": ALARM,
        "b": OK,
        "c": INSUFFICIENT_DATA,
        "arn:aws:cloudwatch:ap-northeast-1:123456789012:alarm:a": ALARM,
    }
    assert AlarmRule.parse(rule).evaluate(states.get) is expected


@pytest.mark.parametrize("rule", ["ALARM(a) AND", "ALARM(a", "BOGUS(a)", "AT_LEAST(2, ALARM, (a, b))", ""])
def test_bad_alarm_rules_are_refused(rule):
    with pytest.raises(ConfigurationError):
        AlarmRule.parse(rule)


# --- against moto -----------------------------------------------------------------------------


class World:
    """moto resources for one test: a topic whose notifications land in a queue, and a clock."""

    def __init__(self, clock=None):
        self.clock = clock or ManualClock(T0)
        self.clients = Clients()
        self.cw = boto3.client("cloudwatch", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.topic = sns.create_topic(Name="alarms")["TopicArn"]
        self.queue = self.sqs.create_queue(QueueName="alarm-notifications")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=queue_arn)
        self.evaluator = AlarmEvaluator(self.clients, [REGION], self.clock)

    def alarm(self, name="node-down", metric="Failures", **kwargs):
        params = {
            "AlarmName": name,
            "Namespace": NS,
            "MetricName": metric,
            "Dimensions": DIMS,
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 3,
            "Threshold": 10.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "AlarmActions": [self.topic],
            "OKActions": [self.topic],
            "InsufficientDataActions": [self.topic],
            **kwargs,
        }
        self.cw.put_metric_alarm(**params)

    def publish(self, period: int, value: float, metric="Failures"):
        """A datapoint in the middle of period ``period`` (minutes after T0)."""
        self.cw.put_metric_data(
            Namespace=NS,
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": DIMS,
                    "Value": value,
                    "Timestamp": T0 + timedelta(minutes=period, seconds=30),
                }
            ],
        )

    def at(self, minutes: float):
        """Advance the manual clock to T0 + minutes and evaluate."""
        self.clock.advance((T0 + timedelta(minutes=minutes) - self.clock.now()).total_seconds())
        return self.evaluator.tick()

    def state(self, name="node-down") -> str:
        return self.cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]

    def notifications(self) -> list[dict]:
        out = []
        while msgs := self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", []):
            for m in msgs:
                envelope = json.loads(m["Body"])
                out.append({"Subject": envelope.get("Subject"), **json.loads(envelope["Message"])})
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        return out


def test_three_of_three_alarm_cycle_history_and_notifications(moto_aws):
    # GIVEN a new 3-of-3 alarm: moto says OK, AWS says INSUFFICIENT_DATA, and no data yet
    w = World()
    w.alarm()
    assert w.at(0) == [] and w.state() == INSUFFICIENT_DATA

    # WHEN three breaching periods complete
    for period in range(3):
        w.publish(period, 20)
    assert w.at(2) == []  # two complete breaching periods are not three
    (change,) = w.at(3)

    # THEN the alarm goes to ALARM, once, with an AWS-shaped reason, history and notification
    assert (change.old_state, change.new_state) == (INSUFFICIENT_DATA, ALARM)
    described = w.cw.describe_alarms(AlarmNames=["node-down"])["MetricAlarms"][0]
    assert described["StateValue"] == ALARM
    assert described["StateReason"].startswith("Threshold Crossed: 3 out of the last 3 datapoints")
    reason_data = json.loads(described["StateReasonData"])
    assert reason_data["recentDatapoints"] == [20.0, 20.0, 20.0] and reason_data["threshold"] == 10.0
    assert w.at(3.5) == []  # no change, no second notification

    # AND a non-breaching period brings it back to OK
    w.publish(3, 1)
    (change,) = w.at(4)
    assert change.new_state == OK

    updates = w.evaluator.history("node-down", item_type="StateUpdate")
    assert [u["HistorySummary"] for u in updates] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from INSUFFICIENT_DATA to ALARM",
    ]
    assert updates[0]["Timestamp"] == T0 + timedelta(minutes=4)
    assert json.loads(updates[1]["HistoryData"])["newState"]["stateValue"] == ALARM
    assert len(w.evaluator.history("node-down", item_type="Action")) == 2

    notes = w.notifications()
    assert [(n["OldStateValue"], n["NewStateValue"]) for n in notes] == [(INSUFFICIENT_DATA, ALARM), (ALARM, OK)]
    first = notes[0]
    assert first["Subject"] == 'ALARM: "node-down" in Asia Pacific (Tokyo)'
    assert first["AlarmName"] == "node-down" and first["Region"] == "Asia Pacific (Tokyo)"
    assert first["StateChangeTime"] == "2024-01-01T00:03:00.000+0000"
    assert first["AlarmArn"] == f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:node-down"
    assert first["Trigger"]["MetricName"] == "Failures" and first["Trigger"]["Statistic"] == "MAXIMUM"
    assert first["Trigger"]["Dimensions"] == [{"value": "A1", "name": "Node"}]


@pytest.mark.parametrize(
    ("n", "m", "values", "expected"),
    [
        (3, 3, [20, 20, 20], ALARM),
        (3, 3, [20, 1, 20], OK),
        (3, 2, [20, 1, 20], ALARM),
        (3, 2, [1, 1, 20], OK),
        (3, 1, [1, 1, 20], ALARM),
        (1, 1, [20, 20, 1], OK),  # only the newest period counts
    ],
)
def test_m_out_of_n(moto_aws, n, m, values, expected):
    w = World()
    w.alarm(EvaluationPeriods=n, DatapointsToAlarm=m)
    w.at(0)
    for period, v in enumerate(values):
        w.publish(period, v)
    w.at(len(values))
    assert w.state() == expected


@pytest.mark.parametrize(
    ("treat", "expected"),
    [("missing", INSUFFICIENT_DATA), ("ignore", ALARM), ("breaching", ALARM), ("notBreaching", OK)],
)
def test_treat_missing_data_when_the_metric_stops(moto_aws, treat, expected):
    # GIVEN an alarm in ALARM after three breaching periods
    w = World()
    w.alarm(TreatMissingData=treat)
    w.at(0)
    for period in range(3):
        w.publish(period, 20)
    w.at(3)
    assert w.state() == ALARM
    # WHEN no data arrives for a whole evaluation range (5 periods)
    w.at(8)
    # THEN the treatment decides
    assert w.state() == expected


@pytest.mark.parametrize(
    ("operator", "states"),
    [
        ("GreaterThanThreshold", (OK, OK, ALARM)),
        ("GreaterThanOrEqualToThreshold", (OK, ALARM, ALARM)),
        ("LessThanThreshold", (ALARM, OK, OK)),
        ("LessThanOrEqualToThreshold", (ALARM, ALARM, OK)),
    ],
)
def test_comparison_operators(moto_aws, operator, states):
    w = World()
    for value in (9, 10, 11):
        name = f"{operator}-{value}"
        w.alarm(name=name, metric=name, EvaluationPeriods=1, ComparisonOperator=operator)
        w.publish(0, value, metric=name)
    w.at(1)
    assert tuple(w.state(f"{operator}-{v}") for v in (9, 10, 11)) == states


def test_actions_disabled_changes_state_without_notifying(moto_aws):
    w = World()
    w.alarm(EvaluationPeriods=1, ActionsEnabled=False)
    w.at(0)
    w.publish(0, 20)
    (change,) = w.at(1)
    assert change.new_state == ALARM and w.state() == ALARM
    assert len(w.evaluator.history("node-down", item_type="StateUpdate")) == 1
    assert w.evaluator.history("node-down", item_type="Action") == []
    assert w.notifications() == []


def test_a_manual_set_alarm_state_lasts_until_the_next_evaluation(moto_aws):
    w = World()
    w.alarm(EvaluationPeriods=1, TreatMissingData="notBreaching")
    w.at(1)
    assert w.state() == OK
    w.cw.set_alarm_state(AlarmName="node-down", StateValue=ALARM, StateReason="drill")
    (change,) = w.at(1.5)
    assert (change.old_state, change.new_state) == (ALARM, OK)


def test_composite_alarm_follows_its_children(moto_aws):
    # GIVEN two node alarms and a composite "A1 down and A2 not down"
    w = World()
    w.alarm(name="A1-down", metric="A1", EvaluationPeriods=1, TreatMissingData="notBreaching", AlarmActions=[])
    w.alarm(name="A2-down", metric="A2", EvaluationPeriods=1, TreatMissingData="notBreaching", AlarmActions=[])
    w.evaluator.put_composite_alarm(
        REGION,
        AlarmName="failover-needed",
        AlarmRule='ALARM("A1-down") AND NOT ALARM("A2-down")',
        AlarmActions=[w.topic],
    )
    w.evaluator.put_composite_alarm(REGION, AlarmName="dangling", AlarmRule="ALARM(nope)")
    w.at(1)
    (composite,) = w.evaluator.describe_composite_alarms(REGION)[:1]
    assert composite["StateValue"] == OK
    w.notifications()

    # WHEN A1 breaches
    w.publish(1, 20, metric="A1")
    changes = w.at(2)

    # THEN the composite goes to ALARM and notifies with its rule
    assert [(c.alarm_name, c.new_state) for c in changes] == [("A1-down", ALARM), ("failover-needed", ALARM)]
    (note,) = [n for n in w.notifications() if n["AlarmName"] == "failover-needed"]
    assert note["NewStateValue"] == ALARM and note["AlarmRule"] == 'ALARM("A1-down") AND NOT ALARM("A2-down")'
    assert w.evaluator.history("failover-needed", item_type="StateUpdate")[0]["HistorySummary"] == (
        "Alarm updated from OK to ALARM"
    )

    # AND when A2 breaches too, the composite returns to OK
    w.publish(2, 20, metric="A1")
    w.publish(2, 20, metric="A2")
    changes = w.at(3)
    assert ("failover-needed", OK) in [(c.alarm_name, c.new_state) for c in changes]
    states = {c["AlarmName"]: c["StateValue"] for c in w.evaluator.describe_composite_alarms(REGION)}
    assert states == {"failover-needed": OK, "dangling": INSUFFICIENT_DATA}


def test_state_changes_reach_eventbridge_rules(moto_aws):
    w = World()
    bus = EventBus(w.clients, w.clock)
    w.evaluator = AlarmEvaluator(w.clients, [REGION], w.clock, event_bus=bus)
    events = boto3.client("events", region_name=REGION)
    pattern = {"source": ["aws.cloudwatch"], "detail": {"state": {"value": ["ALARM"]}}}
    events.put_rule(Name="on-alarm", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="on-alarm", Targets=[{"Id": "q", "Arn": w.topic}])
    w.alarm(EvaluationPeriods=1, ActionsEnabled=False)
    w.at(0)
    w.publish(0, 20)
    w.at(1)
    (note,) = w.notifications()  # the EventBridge event, forwarded by the rule to the topic
    assert note["detail-type"] == "CloudWatch Alarm State Change"
    assert note["detail"]["alarmName"] == "node-down" and note["detail"]["previousState"]["value"] == INSUFFICIENT_DATA


def test_compressed_time_lines_up_published_metrics_and_periods(moto_aws, monkeypatch):
    # GIVEN a 60x clock: one real second is one emulated minute (real time is faked, no sleeping)
    real = types.SimpleNamespace(t=1000.0)
    monkeypatch.setattr(clock_module, "time", types.SimpleNamespace(monotonic=lambda: real.t))
    clock = CompressedClock(compression=60, start=T0)
    w = World(clock)
    w.alarm(EvaluationPeriods=1)

    # WHEN a handler publishes a breaching datapoint half a real second in, stamped by the clock
    real.t += 0.5
    put_metric_data(w.clients, clock, REGION, NS, [{"MetricName": "Failures", "Dimensions": DIMS, "Value": 20}])
    real.t += 0.4
    w.evaluator.tick()
    assert w.state() == INSUFFICIENT_DATA  # emulated 00:00:54: the period is not over

    # THEN one real second after the start the 60 s period is complete and the alarm fires
    real.t += 0.1
    (change,) = w.evaluator.tick()
    assert change.new_state == ALARM and change.time == T0 + timedelta(minutes=1)


def test_unsupported_alarms_are_skipped(moto_aws, caplog):
    w = World()
    w.cw.put_metric_alarm(
        AlarmName="p99",
        Namespace=NS,
        MetricName="Latency",
        ExtendedStatistic="p99",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    assert w.at(5) == []
    assert "percentile" in caplog.text
