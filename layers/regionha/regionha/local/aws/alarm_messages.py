"""What a CloudWatch alarm says when its state changes, worded and shaped as CloudWatch does: the state
reason text, the SNS notification, the "CloudWatch Alarm State Change" EventBridge event and the
event a Lambda alarm action receives (CloudWatch user guide, "Alarm events and EventBridge" and
"Using Amazon CloudWatch alarms" > Lambda alarm actions)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import botocore.loaders

from regionha.local.aws.alarm_rules import (
    ALARM,
    INSUFFICIENT_DATA,
    RangeEvaluation,
)
from regionha.local.clock import iso

# --- formatting like CloudWatch ---------------------------------------------------------------


def aws_timestamp(t: datetime) -> str:
    """CloudWatch's notification time format: 2024-01-01T00:05:00.000+0000."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


@cache
def region_description(region: str) -> str:
    """The long region name CloudWatch puts in notifications ("Asia Pacific (Tokyo)")."""
    data = botocore.loaders.create_loader().load_data("endpoints")
    for partition in data["partitions"]:
        if region in partition.get("regions", {}):
            return partition["regions"][region].get("description", region)
    return region


def _short_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%d/%m/%y %H:%M:%S")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _was(n: int) -> str:
    return "was" if n == 1 else "were"


@dataclass(frozen=True)
class StateChange:
    region: str
    alarm_name: str
    alarm_type: str  # MetricAlarm | CompositeAlarm
    old_state: str
    new_state: str
    reason: str
    time: datetime


def metric_reason(
    result: RangeEvaluation,
    values: list[float | None],
    start: datetime,
    period: int,
    words: str,
    threshold: float,
    m: int,
    old: str,
    treat: str,
) -> str:
    real = [i for i in reversed(result.used) if values[i] is not None]
    if result.state == INSUFFICIENT_DATA:
        return f"Insufficient Data: {_plural(len(result.used), 'datapoint')} {_was(len(result.used))} unknown."
    shown = ", ".join(f"{values[i]} ({_short_time(start + timedelta(seconds=period * i))})" for i in real)
    counted = result.breaching if result.state == ALARM else len(result.used) - result.breaching
    verb = _was(counted)
    negation = "" if result.state == ALARM else "not "
    text = (
        f"Threshold Crossed: {counted} out of the last {len(result.used)} datapoints [{shown}] "
        f"{verb} {negation}{words} the threshold ({threshold})"
    )
    if result.filled:
        text += (
            f" and {_plural(len(result.filled), 'missing datapoint')} {_was(len(result.filled))} treated as [{treat}]"
        )
    if result.state == ALARM:
        text += f" (minimum {_plural(m, 'datapoint')} for {old} -> ALARM transition)"
    return text + "."


def notification_message(alarm: dict[str, Any], change: StateChange) -> dict[str, Any]:
    """The JSON CloudWatch publishes to an SNS alarm action."""
    arn = alarm["AlarmArn"]
    msg: dict[str, Any] = {
        "AlarmName": change.alarm_name,
        "AlarmDescription": alarm.get("AlarmDescription"),
        "AWSAccountId": arn.split(":")[4],
        "AlarmConfigurationUpdatedTimestamp": aws_timestamp(
            alarm.get("AlarmConfigurationUpdatedTimestamp") or change.time
        ),
        "NewStateValue": change.new_state,
        "NewStateReason": change.reason,
        "StateChangeTime": aws_timestamp(change.time),
        "Region": region_description(change.region),
        "AlarmArn": arn,
        "OldStateValue": change.old_state,
        "OKActions": alarm.get("OKActions") or [],
        "AlarmActions": alarm.get("AlarmActions") or [],
        "InsufficientDataActions": alarm.get("InsufficientDataActions") or [],
    }
    if change.alarm_type == "CompositeAlarm":
        msg["AlarmRule"] = alarm["AlarmRule"]
        return msg
    trigger: dict[str, Any] = {
        "Period": alarm.get("Period"),
        "EvaluationPeriods": alarm["EvaluationPeriods"],
        "DatapointsToAlarm": alarm.get("DatapointsToAlarm") or alarm["EvaluationPeriods"],
        "ComparisonOperator": alarm["ComparisonOperator"],
        "Threshold": alarm["Threshold"],
        "TreatMissingData": alarm.get("TreatMissingData") or "missing",
        "EvaluateLowSampleCountPercentile": alarm.get("EvaluateLowSampleCountPercentile") or "",
    }
    if alarm.get("Metrics"):
        trigger["Metrics"] = alarm["Metrics"]
    else:
        trigger.update(
            {
                "MetricName": alarm["MetricName"],
                "Namespace": alarm["Namespace"],
                "StatisticType": "Statistic",
                "Statistic": alarm["Statistic"].upper(),
                "Unit": alarm.get("Unit"),
                "Dimensions": [{"value": d["Value"], "name": d["Name"]} for d in alarm.get("Dimensions") or []],
            }
        )
    msg["Trigger"] = trigger
    return msg


def state_change_event(alarm: dict[str, Any], change: StateChange, reason_data: dict[str, Any]) -> dict[str, Any]:
    """EventBridge's "CloudWatch Alarm State Change" event."""
    arn = alarm["AlarmArn"]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch",
        "account": arn.split(":")[4],
        "time": iso(change.time),
        "region": change.region,
        "resources": [arn],
        "detail": _alarm_data(alarm, change, reason_data),
    }


def _alarm_data(alarm: dict[str, Any], change: StateChange, reason_data: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"description": alarm.get("AlarmDescription")}
    if change.alarm_type == "CompositeAlarm":
        config["alarmRule"] = alarm["AlarmRule"]
    elif alarm.get("Metrics"):
        config["metrics"] = alarm["Metrics"]
    else:
        config["metrics"] = [
            {
                "id": "m1",
                "metricStat": {
                    "metric": {
                        "namespace": alarm["Namespace"],
                        "name": alarm["MetricName"],
                        "dimensions": {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []},
                    },
                    "period": alarm["Period"],
                    "stat": alarm["Statistic"],
                },
                "returnData": True,
            }
        ]
    return {
        "alarmName": change.alarm_name,
        "state": {
            "value": change.new_state,
            "reason": change.reason,
            "reasonData": json.dumps(reason_data),
            "timestamp": aws_timestamp(change.time),
        },
        "previousState": {"value": change.old_state},
        "configuration": config,
    }


def lambda_alarm_event(alarm: dict[str, Any], change: StateChange, reason_data: dict[str, Any]) -> dict[str, Any]:
    """The event CloudWatch invokes a Lambda alarm action with."""
    arn = alarm["AlarmArn"]
    return {
        "source": "aws.cloudwatch",
        "alarmArn": arn,
        "accountId": arn.split(":")[4],
        "time": aws_timestamp(change.time),
        "region": change.region,
        "alarmData": _alarm_data(alarm, change, reason_data),
    }
