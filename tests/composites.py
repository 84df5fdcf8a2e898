"""Composite alarms and warm-ups under ``mock_aws``: moto 5.2.5 has no PutCompositeAlarm and ignores
PutMetricAlarm's WarmUpConfiguration, so, as the local runtime's middleware does (local/server.py), the
calls go to an AlarmEvaluator that holds them; here through botocore's events of one session instead of
the server.

PutCompositeAlarm defines it there; DeleteAlarms deletes its composites there (one per call, as
CloudWatch) and passes the other names on to moto; DescribeAlarms asked for composites gets them added,
filtered by AlarmNames/AlarmNamePrefix. PutMetricAlarm's warm-up is recorded there, and DescribeAlarms'
metric alarms get their WarmUpConfiguration/EvaluationState from there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from regionha.aws import Clients
from regionha.local.aws.alarms import AlarmEvaluator
from regionha.local.clock import ManualClock


def install(session: Any, regions: tuple[str, ...]) -> tuple[AlarmEvaluator, Callable[[], None]]:
    """Route the session's composite-alarm calls to a new evaluator; returns it and an uninstaller."""
    store = AlarmEvaluator(Clients(session=session), regions, ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))

    def region_of(context: dict[str, Any]) -> str:
        return context["client_region"]

    def before(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"] or b"{}")
        if model.name == "PutMetricAlarm":
            store.put_metric_alarm(region_of(context), **body)
            return None
        if model.name == "PutCompositeAlarm":
            store.put_composite_alarm(region_of(context), **body)
            return AWSResponse(params["url"], 200, {}, None), {}
        rest = store.delete_composite_alarms(region_of(context), body.get("AlarmNames") or [])
        store.delete_metric_alarms(region_of(context), rest)
        if not rest:
            return AWSResponse(params["url"], 200, {}, None), {}
        params["body"] = json.dumps({**body, "AlarmNames": rest}).encode()
        return None

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "CompositeAlarm" in (params.get("AlarmTypes") or []):
            context["composite_filter"] = (params.get("AlarmNames"), params.get("AlarmNamePrefix"))

    def after(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        for alarm in parsed.get("MetricAlarms", []):
            alarm.update(store.metric_alarm_extras(region_of(context), alarm["AlarmName"]))
        if "composite_filter" not in context:
            return
        names, prefix = context["composite_filter"]
        parsed["CompositeAlarms"] = [*parsed.get("CompositeAlarms", []), *[
            c for c in store.describe_composite_alarms(region_of(context))
            if (not names or c["AlarmName"] in names) and (not prefix or c["AlarmName"].startswith(prefix))]]

    hooks = [("before-call.cloudwatch.PutCompositeAlarm", before), ("before-call.cloudwatch.DeleteAlarms", before),
             ("before-call.cloudwatch.PutMetricAlarm", before),
             ("before-parameter-build.cloudwatch.DescribeAlarms", remember),
             ("after-call.cloudwatch.DescribeAlarms", after)]
    for name, fn in hooks:
        # Last, so that a call counter on before-call.*.* still sees these calls.
        session.events.register_last(name, fn)

    def uninstall() -> None:
        for name, fn in hooks:
            session.events.unregister(name, fn)

    return store, uninstall


@contextlib.contextmanager
def installed(regions: tuple[str, ...]) -> Iterator[AlarmEvaluator]:
    """``install`` on boto3's default session for the ``with`` block."""
    session = boto3.DEFAULT_SESSION or boto3.setup_default_session() or boto3.DEFAULT_SESSION
    store, uninstall = install(session, regions)
    try:
        yield store
    finally:
        uninstall()
