"""CloudWatch alarm evaluation, which moto does not do: states, history, actions, composite alarms.

Time design: the evaluator works in **emulated time**. It reads ``clock.now()``, cuts the
evaluation range into the alarm's own ``Period`` (unchanged, e.g. 60 s) on epoch-aligned
boundaries of emulated time, and queries ``get_metric_data`` for that range. Whoever publishes
metrics in the local runtime stamps them with the same clock (``put_metric_data`` below does),
so with ``compression=60`` a 60 s period passes in one real second and the datapoints still fall
into the periods the evaluator reads. Periods are never divided by the compression, so alarm
definitions from the template are used as they are.

Evaluation follows the CloudWatch user guide ("Configuring how CloudWatch alarms treat missing
data"): only completed periods are read; the evaluation range is ``EvaluationPeriods + 2``
periods (the guide's examples: 3 periods, range 5); with at least N real datapoints the newest N
decide; with fewer, the real ones are all used and the newest missing periods fill the rest by
``TreatMissingData``; with ``missing``/``ignore`` a lone breaching datapoint alarms only once it
is at least ``DatapointsToAlarm`` periods old and nothing in range contradicts it ("avoiding
premature transitions"; until then the state is kept: our reading, the guide names no state).
``evaluate_range`` is that rule as a pure function, tested against the guide's tables.

Warm-up (user guide, "Alarm warm-up periods"): an alarm created with a ``WarmUpConfiguration`` stays
INSUFFICIENT_DATA, runs no action and reports ``EvaluationState`` IN_WARM_UP until its duration has
passed (emulated time, from its creation) or, unless OnlyStartEvaluatingAfterWarmUpPeriodEnds, until
the data fills its evaluation window (``alarm_rules.window_filled``: the newest period holds a
datapoint and a period before the window does). The guide: the warm-up applies once, at creation; an
update during it may change it (or, without one, end it), an update after it never starts another.
moto ignores the parameter, so the server's CloudWatch middleware hands PutMetricAlarm, DeleteAlarms
and DescribeAlarms' metric alarms to ``put_metric_alarm``/``delete_metric_alarms``/``metric_alarm_extras``.

moto gaps worked around here:
- a new alarm is OK/"Unchecked" in moto but INSUFFICIENT_DATA in AWS: the evaluator moves it to
  INSUFFICIENT_DATA first, so its first evaluation is a real transition that runs its actions;
- moto keeps no alarm history (``describe_alarm_history`` is missing): ``history()`` keeps it;
- moto cannot store composite alarms (``PutCompositeAlarm`` is not implemented and the
  ``AlarmRule`` is dropped): define them with ``AlarmEvaluator.put_composite_alarm``; any that
  ``describe_alarms`` does return are evaluated as well.
Not emulated: percentiles (``ExtendedStatistic``; moto computes none), anomaly-detection bands,
EC2/Auto Scaling/SSM actions. Such alarms are skipped and logged once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from regionha.aws import Clients
from regionha.errors import ConfigurationError
from regionha.local.aws.alarm_messages import (
    StateChange,
    aws_timestamp,
    lambda_alarm_event,
    metric_reason,
    notification_message,
    region_description,
    state_change_event,
)
from regionha.local.aws.alarm_rules import (
    ALARM,
    COMPARISON_OPERATORS,
    EXTRA_RANGE_PERIODS,
    IN_WARM_UP,
    INSUFFICIENT_DATA,
    OK,
    AlarmRule,
    WarmUp,
    evaluate_range,
    warm_up_over,
    window_filled,
)
from regionha.local.clock import Clock, Ticker

logger = logging.getLogger(__name__)

UNCHECKED = "Unchecked: Initial alarm creation"


def put_metric_data(
    clients: Clients, clock: Clock, region: str, namespace: str, metric_data: list[dict[str, Any]]
) -> None:
    """``cloudwatch.put_metric_data`` with every datum stamped in emulated time unless it has a Timestamp.

    The local runtime's metric publishers must go through this (or stamp ``clock.now()``
    themselves), or their datapoints land outside the periods the evaluator reads.
    IAM: ``cloudwatch:PutMetricData``.
    """
    now = clock.now()
    data = [{"Timestamp": now, **d} for d in metric_data]
    clients.client("cloudwatch", region).put_metric_data(Namespace=namespace, MetricData=data)


# --- the evaluator ----------------------------------------------------------------------------


@dataclass
class _Composite:
    region: str
    definition: dict[str, Any]
    rule: AlarmRule
    state: str = INSUFFICIENT_DATA
    reason: str = UNCHECKED
    reason_data: str = "{}"
    updated: datetime | None = None


@dataclass
class _MetricAlarmRecord:
    """What moto does not keep of a metric alarm: its warm-up and when it was created (emulated)."""

    created: datetime
    warm_up: WarmUp | None
    warming: bool  # in its warm-up now


class AlarmEvaluator(Ticker):
    """Evaluates the metric and composite alarms of ``regions`` on each ``tick``.

    On a state change: ``cloudwatch.set_alarm_state`` (metric alarms), a history item, a
    "CloudWatch Alarm State Change" event on ``event_bus`` when given (EventBridge gets it
    whatever ActionsEnabled says), and, when ActionsEnabled, the new state's actions: SNS topics
    get CloudWatch's alarm notification JSON, Lambda functions its alarm event.
    IAM: ``cloudwatch:DescribeAlarms``, ``cloudwatch:GetMetricData``, ``cloudwatch:SetAlarmState``,
    ``sns:Publish``, ``lambda:InvokeFunction``.
    """

    def __init__(
        self,
        clients: Clients,
        regions: Iterable[str],
        clock: Clock,
        event_bus: Any | None = None,
        interval: float = 0.5,
    ):
        super().__init__()
        self.clients = clients
        self.regions = list(regions)
        self.clock = clock
        self.event_bus = event_bus  # an events.EventBus (anything with put(event))
        self.interval = interval
        self._history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._composites: dict[tuple[str, str], _Composite] = {}
        self._skipped: set[tuple[str, str]] = set()
        self._lock = threading.RLock()  # tick() from the thread and put_composite_alarm from callers
        # Warm-ups, by (region, name). A lock of their own, never held across a call to moto: tick()
        # holds _lock while its own requests pass the server's middleware, which reads these.
        self._metric: dict[tuple[str, str], _MetricAlarmRecord] = {}
        self._metric_lock = threading.Lock()

    # -- public API --

    def history(self, alarm_name: str, region: str | None = None, item_type: str | None = None) -> list[dict[str, Any]]:
        """DescribeAlarmHistory-shaped items, newest first (``item_type``: StateUpdate, Action, ...)."""
        with self._lock:
            items = [
                item
                for (r, name), hist in self._history.items()
                if name == alarm_name and (region is None or r == region)
                for item in hist
            ]
        items = [i for i in items if item_type is None or i["HistoryItemType"] == item_type]
        return sorted(items, key=lambda i: i["Timestamp"], reverse=True)

    def put_composite_alarm(self, region: str, **kwargs: Any) -> None:
        """Defines a composite alarm with PutCompositeAlarm's parameters (moto cannot store one)."""
        rule = AlarmRule.parse(kwargs["AlarmRule"])
        name = kwargs["AlarmName"]
        account = kwargs.pop("AccountId", "123456789012")
        definition = {
            "AlarmName": name,
            "AlarmArn": f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
            "AlarmDescription": kwargs.get("AlarmDescription"),
            "AlarmRule": rule.text,
            "ActionsEnabled": kwargs.get("ActionsEnabled", True),
            "AlarmActions": list(kwargs.get("AlarmActions", [])),
            "OKActions": list(kwargs.get("OKActions", [])),
            "InsufficientDataActions": list(kwargs.get("InsufficientDataActions", [])),
            "AlarmConfigurationUpdatedTimestamp": self.clock.now(),
        }
        with self._lock:
            old = self._composites.get((region, name))
            comp = _Composite(region, definition, rule, updated=self.clock.now())
            if old is not None:  # an update keeps the state, as PutCompositeAlarm does
                comp.state, comp.reason, comp.reason_data = old.state, old.reason, old.reason_data
            self._composites[(region, name)] = comp
            self._record(
                region,
                name,
                "CompositeAlarm",
                "ConfigurationUpdate",
                f'Alarm "{name}" {"updated" if old else "created"}',
                {"type": "Create"},
            )

    def describe_composite_alarms(self, region: str) -> list[dict[str, Any]]:
        """The composite alarms defined here, shaped like DescribeAlarms' CompositeAlarms.

        Takes no lock: the emulated API's DescribeAlarms answers from here while ``tick`` (holding the
        lock) waits for that very answer; a snapshot of the dict is consistent enough for a read."""
        return [
            {
                **c.definition,
                "StateValue": c.state,
                "StateReason": c.reason,
                "StateReasonData": c.reason_data,
                "StateUpdatedTimestamp": c.updated,
            }
            for (r, _), c in list(self._composites.items())
            if r == region
        ]

    def delete_composite_alarms(self, region: str, names: Iterable[str]) -> list[str]:
        """DeleteAlarms' part for the composites held here; returns the names that are not (moto's).

        As CloudWatch: at most one composite per call, and not one that another composite's rule
        names (DeleteAlarms in the CloudWatch API reference); raises ConfigurationError otherwise.
        """
        names = list(names)
        with self._lock:
            mine = [n for n in names if (region, n) in self._composites]
            if len(mine) > 1:
                raise ConfigurationError(
                    f"DeleteAlarms: at most one composite alarm per call, got {len(mine)}: {', '.join(mine)}")
            for name in mine:
                users = [c.definition["AlarmName"] for (r, other), c in self._composites.items()
                         if r == region and other != name
                         and any(ref == name or ref.endswith(f":alarm:{name}") for ref in c.rule.references)]
                if users:
                    raise ConfigurationError(
                        f"DeleteAlarms: composite alarm {name} is in the rule of {', '.join(users)}")
                del self._composites[(region, name)]
                self._record(region, name, "CompositeAlarm", "ConfigurationUpdate", f'Alarm "{name}" deleted',
                             {"type": "Delete"})
        return [n for n in names if n not in mine]

    def put_metric_alarm(self, region: str, **params: Any) -> None:
        """PutMetricAlarm's part moto ignores: ``WarmUpConfiguration``. ConfigurationError when it is
        malformed (CloudWatch's ValidationError; call this before moto stores the alarm).

        A new name starts its warm-up now (emulated time); an update during the warm-up replaces it
        (none: it ends), an update afterwards only records the configuration."""
        warm_up = WarmUp.from_api(params.get("WarmUpConfiguration"))
        key, now = (region, params["AlarmName"]), self.clock.now()
        with self._metric_lock:
            record = self._metric.get(key)
            if record is None:
                self._metric[key] = _MetricAlarmRecord(now, warm_up, warming=warm_up is not None)
                return
            record.warm_up = warm_up
            record.warming = record.warming and warm_up is not None

    def delete_metric_alarms(self, region: str, names: Iterable[str]) -> None:
        """DeleteAlarms: forget these alarms (a new alarm of the same name warms up again)."""
        with self._metric_lock:
            for name in names:
                self._metric.pop((region, name), None)

    def metric_alarm_extras(self, region: str, name: str) -> dict[str, Any]:
        """DescribeAlarms' fields of a metric alarm that moto lacks: ``WarmUpConfiguration`` (when it has
        one) and ``EvaluationState`` IN_WARM_UP (during its warm-up)."""
        with self._metric_lock:
            record = self._metric.get((region, name))
            if record is None or record.warm_up is None:
                return {}
            return {"WarmUpConfiguration": record.warm_up.to_api(),
                    **({"EvaluationState": IN_WARM_UP} if record.warming else {})}

    def in_warm_up(self, region: str, name: str) -> bool:
        with self._metric_lock:
            record = self._metric.get((region, name))
            return record is not None and record.warming

    def tick(self, now: datetime | None = None) -> list[StateChange]:
        now = now or self.clock.now()
        changes: list[StateChange] = []
        with self._lock:
            for region in self.regions:
                changes.extend(self._tick_region(region, now))
        return changes

    # -- metric alarms --

    def _describe(self, region: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cw = self.clients.client("cloudwatch", region)
        metric, composite = [], []
        for page in cw.get_paginator("describe_alarms").paginate(AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
            metric.extend(page.get("MetricAlarms", []))
            composite.extend(page.get("CompositeAlarms", []))
        return metric, composite

    def _tick_region(self, region: str, now: datetime) -> list[StateChange]:
        metric_alarms, moto_composites = self._describe(region)
        states: dict[str, str] = {}
        changes: list[StateChange] = []
        for alarm in metric_alarms:
            change = self._evaluate_metric_alarm(region, alarm, now)
            if change:
                changes.append(change)
            state = change.new_state if change else self._current(alarm)
            states[alarm["AlarmName"]] = states[alarm["AlarmArn"]] = state
        for alarm in moto_composites:
            key = (region, alarm["AlarmName"])
            if key not in self._composites:
                self.put_composite_alarm(region, **{k: v for k, v in alarm.items() if k in _COMPOSITE_PARAMS})
        changes.extend(self._evaluate_composites(region, states, now))
        return changes

    @staticmethod
    def _current(alarm: dict[str, Any]) -> str:
        if alarm["StateValue"] == OK and alarm.get("StateReason") == UNCHECKED:
            return INSUFFICIENT_DATA
        return alarm["StateValue"]

    def _unsupported(self, alarm: dict[str, Any]) -> str | None:
        if alarm.get("ExtendedStatistic"):
            return "percentile statistics (ExtendedStatistic)"
        if alarm.get("ThresholdMetricId"):
            return "anomaly detection bands (ThresholdMetricId)"
        if alarm.get("ComparisonOperator") not in COMPARISON_OPERATORS:
            return f"ComparisonOperator {alarm.get('ComparisonOperator')}"
        if not alarm.get("Metrics") and not alarm.get("Statistic"):
            return "an alarm without Statistic or Metrics"
        return None

    def _evaluate_metric_alarm(self, region: str, alarm: dict[str, Any], now: datetime) -> StateChange | None:
        name = alarm["AlarmName"]
        why = self._unsupported(alarm)
        if why:
            if (region, name) not in self._skipped:
                logger.warning("alarm %s in %s not evaluated: %s is not emulated", name, region, why)
                self._skipped.add((region, name))
            return None
        cw = self.clients.client("cloudwatch", region)
        current = alarm["StateValue"]
        if self._current(alarm) != current:
            # AWS starts a new alarm in INSUFFICIENT_DATA; moto says OK. Align silently, as AWS
            # records no state update for the creation itself.
            cw.set_alarm_state(AlarmName=name, StateValue=INSUFFICIENT_DATA, StateReason=UNCHECKED)
            self._record(
                region, name, "MetricAlarm", "ConfigurationUpdate", f'Alarm "{name}" created', {"type": "Create"}
            )
            current = INSUFFICIENT_DATA

        n = int(alarm["EvaluationPeriods"])
        m = int(alarm.get("DatapointsToAlarm") or n)
        treat = alarm.get("TreatMissingData") or "missing"
        period, values, start = self._datapoints(cw, alarm, n + EXTRA_RANGE_PERIODS, now)
        if self._still_warming(region, name, n, values, now):
            return None  # INSUFFICIENT_DATA, no action (the alignment above made it so)
        compare, words = COMPARISON_OPERATORS[alarm["ComparisonOperator"]]
        threshold = float(alarm["Threshold"])
        range_ = [None if v is None else compare(v, threshold) for v in values]
        result = evaluate_range(range_, n, m, treat, current)
        if result.state == current:
            return None
        reason = metric_reason(result, values, start, period, words, threshold, m, current, treat)
        reason_data = {
            "version": "1.0",
            "queryDate": aws_timestamp(now),
            "startDate": aws_timestamp(start + timedelta(seconds=period * min(result.used, default=0))),
            "period": period,
            "recentDatapoints": [values[i] for i in result.used if values[i] is not None],
            "threshold": threshold,
            "evaluatedDatapoints": [
                {"timestamp": aws_timestamp(start + timedelta(seconds=period * i)), "value": values[i]}
                for i in reversed(result.used)
                if values[i] is not None
            ],
        }
        if alarm.get("Statistic"):
            reason_data["statistic"] = alarm["Statistic"]
        cw.set_alarm_state(
            AlarmName=name, StateValue=result.state, StateReason=reason[:1023], StateReasonData=json.dumps(reason_data)
        )
        change = StateChange(region, name, "MetricAlarm", current, result.state, reason, now)
        self._after_change(alarm, change, reason_data)
        return change

    def _still_warming(self, region: str, name: str, n: int, values: list[float | None], now: datetime) -> bool:
        """Whether the alarm is in its warm-up at ``now``; ends it (once and for all) when it is over."""
        with self._metric_lock:
            record = self._metric.get((region, name))
            if record is None or not record.warming or record.warm_up is None:
                return False
            filled = window_filled([v is not None for v in values], n)
            if not warm_up_over(record.warm_up, record.created, now, filled):
                return True
            record.warming = False
        why = "its evaluation window filled" if now < record.warm_up.ends_at(record.created) else (
            f"{record.warm_up.minutes} min passed")
        logger.debug("alarm %s in %s: warm-up over (%s)", name, region, why)
        return False

    def _datapoints(
        self, cw: Any, alarm: dict[str, Any], periods: int, now: datetime
    ) -> tuple[int, list[float | None], datetime]:
        """One value per period of the evaluation range (oldest first), None where there is no data."""
        queries, period = _queries(alarm)
        epoch = now.timestamp()
        end = datetime.fromtimestamp(epoch - epoch % period, UTC)
        start = end - timedelta(seconds=period * periods)
        resp = cw.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
        values: list[float | None] = [None] * periods
        wanted = next(q["Id"] for q in queries if q.get("ReturnData", True))
        for result in resp["MetricDataResults"]:
            if result["Id"] != wanted:
                continue
            for ts, v in zip(result["Timestamps"], result["Values"], strict=True):
                i = int((ts.timestamp() - start.timestamp()) // period)
                if 0 <= i < periods and v is not None:
                    values[i] = float(v)
        return period, values, start

    # -- composite alarms --

    def _evaluate_composites(self, region: str, states: dict[str, str], now: datetime) -> list[StateChange]:
        comps = [c for (r, _), c in self._composites.items() if r == region]
        for c in comps:
            states[c.definition["AlarmName"]] = states[c.definition["AlarmArn"]] = c.state
        changes: list[StateChange] = []
        # Composites may reference composites: repeat until nothing moves (bounded by their number).
        for _ in range(len(comps) + 1):
            moved = False
            for c in comps:
                change = self._evaluate_composite(c, states, now)
                if change:
                    changes.append(change)
                    states[c.definition["AlarmName"]] = states[c.definition["AlarmArn"]] = c.state
                    moved = True
            if not moved:
                break
        return changes

    def _evaluate_composite(self, c: _Composite, states: dict[str, str], now: datetime) -> StateChange | None:
        missing = [ref for ref in c.rule.references if ref not in states]
        if missing:
            # A rule naming an alarm that does not exist cannot be decided.
            new, reason = INSUFFICIENT_DATA, f"Unknown alarm(s) in the rule: {', '.join(missing)}"
        else:
            fired = c.rule.evaluate(states.get)
            new = ALARM if fired else OK
            children = ", ".join(f"{ref} is {states[ref]}" for ref in dict.fromkeys(c.rule.references))
            reason = f"AlarmRule evaluated to {'TRUE' if fired else 'FALSE'}" + (f": {children}" if children else "")
        if new == c.state:
            return None
        old = c.state
        reason_data = {
            "triggeringAlarms": [
                {"name": ref, "state": {"value": states.get(ref)}} for ref in dict.fromkeys(c.rule.references)
            ]
        }
        c.state, c.reason, c.reason_data, c.updated = new, reason, json.dumps(reason_data), now
        change = StateChange(c.region, c.definition["AlarmName"], "CompositeAlarm", old, new, reason, now)
        self._after_change(c.definition, change, reason_data)
        return change

    # -- after a change: history, EventBridge, actions --

    def _record(
        self, region: str, name: str, alarm_type: str, item_type: str, summary: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        item = {
            "AlarmName": name,
            "AlarmType": alarm_type,
            "Timestamp": self.clock.now(),
            "HistoryItemType": item_type,
            "HistorySummary": summary,
            "HistoryData": json.dumps(data),
        }
        with self._lock:
            self._history.setdefault((region, name), []).append(item)
        return item

    def _after_change(self, alarm: dict[str, Any], change: StateChange, reason_data: dict[str, Any]) -> None:
        region, name = change.region, change.alarm_name
        self._record(
            region,
            name,
            change.alarm_type,
            "StateUpdate",
            f"Alarm updated from {change.old_state} to {change.new_state}",
            {
                "version": "1.0",
                "oldState": {"stateValue": change.old_state},
                "newState": {
                    "stateValue": change.new_state,
                    "stateReason": change.reason,
                    "stateReasonData": reason_data,
                },
            },
        )
        if self.event_bus is not None:
            try:
                self.event_bus.put(state_change_event(alarm, change, reason_data))
            except Exception:
                logger.exception("alarm %s: EventBridge delivery failed", name)
        if not alarm.get("ActionsEnabled", True):
            return
        actions = {ALARM: "AlarmActions", OK: "OKActions", INSUFFICIENT_DATA: "InsufficientDataActions"}
        for arn in alarm.get(actions[change.new_state]) or []:
            self._run_action(alarm, change, arn, reason_data)

    def _run_action(self, alarm: dict[str, Any], change: StateChange, arn: str, reason_data: dict[str, Any]) -> None:
        service = arn.split(":")[2] if arn.count(":") >= 5 else ""
        try:
            if service == "sns":
                message = notification_message(alarm, change)
                subject = f'{change.new_state}: "{change.alarm_name}" in {region_description(change.region)}'
                self.clients.client("sns", arn.split(":")[3]).publish(
                    TopicArn=arn, Subject=subject[:100], Message=json.dumps(message)
                )
            elif service == "lambda":
                payload = lambda_alarm_event(alarm, change, reason_data)
                self.clients.client("lambda", arn.split(":")[3]).invoke(
                    FunctionName=arn, InvocationType="Event", Payload=json.dumps(payload).encode()
                )
            else:
                raise ConfigurationError(f"alarm action {arn} is not emulated by the local runtime")
        except Exception as e:
            logger.warning("alarm %s: action %s failed: %s", change.alarm_name, arn, e)
            self._record(
                change.region,
                change.alarm_name,
                change.alarm_type,
                "Action",
                f"Failed to execute action {arn}",
                {"actionState": "Failed", "error": repr(e)},
            )
            return
        self._record(
            change.region,
            change.alarm_name,
            change.alarm_type,
            "Action",
            f"Successfully executed action {arn}",
            {"actionState": "Succeeded"},
        )


_COMPOSITE_PARAMS = {
    "AlarmName",
    "AlarmRule",
    "AlarmDescription",
    "ActionsEnabled",
    "AlarmActions",
    "OKActions",
    "InsufficientDataActions",
}


def _queries(alarm: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The GetMetricData queries of an alarm and its period."""
    if alarm.get("Metrics"):
        queries = [dict(q) for q in alarm["Metrics"]]
        periods = [q["MetricStat"]["Period"] for q in queries if "MetricStat" in q] + [
            q["Period"] for q in queries if q.get("Period")
        ]
        if not periods:
            raise ConfigurationError(f"alarm {alarm['AlarmName']}: no period in its Metrics")
        return queries, int(min(periods))
    stat: dict[str, Any] = {
        "Metric": {
            "Namespace": alarm["Namespace"],
            "MetricName": alarm["MetricName"],
            "Dimensions": alarm.get("Dimensions") or [],
        },
        "Period": int(alarm["Period"]),
        "Stat": alarm["Statistic"],
    }
    if alarm.get("Unit"):
        stat["Unit"] = alarm["Unit"]
    return [{"Id": "m1", "MetricStat": stat, "ReturnData": True}], int(alarm["Period"])


