"""Alarm warm-up periods (CloudWatch user guide, "Alarm warm-up periods"): the rule, the local evaluator,
and what it is for: a fresh build's alarms do not page.

The rule as pure functions (``alarm_rules.WarmUp``/``window_filled``/``warm_up_over``), then the local
evaluator against moto (INSUFFICIENT_DATA and no action during warm-up, ``EvaluationState`` IN_WARM_UP,
the end at the duration, no restart on an update), then the build's own alarms (``converge_watch``)
on a real canary probing real DNS servers and node services on loopback, on one manual clock:

GIVEN the build's first canary round fails (the nodes' services are not up yet) and the schedule's
first round comes 71 s later (as in the demo log that motivated this), WHEN the alarms are made right
after that round, THEN nothing pages (without the warm-up, the same run pages: the control), and every
canary alarm is OK once the data fills its window; GIVEN a path that is really dead, THEN its path-down
alarm still fires once its warm-up ends, and only it.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from regionha.aws import Clients
from regionha.converge import watch as converge_watch_module
from regionha.converge.watch import WatchSettings, converge_watch
from regionha.errors import ConfigurationError
from regionha.local.aws.alarm_rules import (
    ALARM,
    IN_WARM_UP,
    INSUFFICIENT_DATA,
    OK,
    WarmUp,
    warm_up_over,
    window_filled,
)
from regionha.local.clock import ManualClock
from regionha.local.host.nodes import NodeService
from regionha.watch import canary, metrics, rounds
from regionha.watch.alarms import (
    CANARY_SILENT,
    FAST_PERIOD,
    alarm_name,
    canary_alarm_intents,
    composite_name,
    path_down,
    warm_up_for,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from dnsfake import FakeDNSServer, answer, drop  # noqa: E402
from localmode import local_mode  # noqa: E402, F401 - autouse fixture

REGION = "ap-southeast-1"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


# --- the rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"WarmUpPeriodDurationInMinutes": 0}, "1 to 2880"),
        ({"WarmUpPeriodDurationInMinutes": 2881}, "1 to 2880"),
        ({"WarmUpPeriodDurationInMinutes": 5.5}, "integer"),
        ({"WarmUpPeriodDurationInMinutes": True}, "integer"),
        ({"OnlyStartEvaluatingAfterWarmUpPeriodEnds": True}, "WarmUpPeriodDurationInMinutes"),
        ({"WarmUpPeriodDurationInMinutes": 5, "OnlyStartEvaluatingAfterWarmUpPeriodEnds": "yes"}, "boolean"),
        ({"WarmUpPeriodDurationInMinutes": 5, "Minutes": 5}, "unknown field"),
        ([5], "structure"),
    ],
)
def test_a_malformed_warm_up_is_refused(config, error):
    with pytest.raises(ConfigurationError, match=error):
        WarmUp.from_api(config)


def test_a_warm_up_reads_back_as_it_was_given():
    assert WarmUp.from_api(None) is None
    assert WarmUp.from_api({"WarmUpPeriodDurationInMinutes": 2880}) == WarmUp(2880, False)
    config = {"WarmUpPeriodDurationInMinutes": 1, "OnlyStartEvaluatingAfterWarmUpPeriodEnds": True}
    assert WarmUp.from_api(config).to_api() == config


def test_the_guides_example_fills_its_window_15_minutes_after_the_first_datapoint():
    # The guide: 5-minute periods, 3 evaluation periods, created at 10:00, publishing from 10:04 (every
    # minute): the window is full "at about 10:19". On whole periods: at 10:20, one period later, never before.
    created = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    first = created + timedelta(minutes=4)
    warm_up = WarmUp(60)
    ended = None
    for minute in range(1, 40):
        now = created + timedelta(minutes=minute)
        end = now.replace(minute=now.minute - now.minute % 5)  # periods end on 5-minute boundaries
        starts = [end - timedelta(minutes=5 * (5 - i)) for i in range(5)]  # the range: N + 2 periods
        has_data = [s + timedelta(minutes=5) > first and s < now for s in starts]
        if warm_up_over(warm_up, created, now, window_filled(has_data, 3)):
            ended = now
            break
    assert ended == created + timedelta(minutes=20)


@pytest.mark.parametrize(
    ("has_data", "filled"),
    [
        ("- 1 1 1 1 1 1 1", True),  # published before the window, and in its newest period
        ("- - 1 1 1 1 1 1", False),  # publishing began inside the window's oldest period: one more
        ("- - - - - - - 1", False),  # only the newest period: the window is not covered yet
        ("1 - - - - - - -", False),  # nothing in the newest period (the schedule is late)
        ("1 - - - - - - 1", True),  # gaps inside the window do not matter
        ("- 1 - - 1 - - 1", True),
        ("- - 1 - - - - 1", False),  # the oldest window period is not "before" it
    ],
)
def test_the_window_is_filled_by_data_before_it_and_in_its_newest_period(has_data, filled):
    flags = [c == "1" for c in has_data.split()]
    assert window_filled(flags, 6) is filled


def test_the_warm_up_ends_at_its_duration_or_early_once_filled():
    created = T0
    warm_up = WarmUp(4)
    assert not warm_up_over(warm_up, created, created + timedelta(minutes=3, seconds=59), False)
    assert warm_up_over(warm_up, created, created + timedelta(minutes=4), False)
    assert warm_up_over(warm_up, created, created + timedelta(seconds=70), True)
    # OnlyStartEvaluatingAfterWarmUpPeriodEnds: the whole duration, even with a full window.
    assert not warm_up_over(WarmUp(4, True), created, created + timedelta(minutes=3), True)


def test_each_alarm_warms_up_long_enough_for_its_window_to_fill_from_the_schedule():
    # The schedule's first run (a minute), the window and the period before it, a minute of late data.
    assert warm_up_for(FAST_PERIOD, 6) == 4
    assert warm_up_for(60, 1) == 4 == CANARY_SILENT.warm_up_minutes
    assert warm_up_for(60, 3) == 6
    for intent in canary_alarm_intents(_topology()):
        window = intent.period * intent.evaluation_periods
        assert intent.warm_up_minutes * 60 >= 60 + window + intent.period + 60, intent.suffix
        assert intent.warm_up_configuration() == {
            "WarmUpPeriodDurationInMinutes": intent.warm_up_minutes,
            "OnlyStartEvaluatingAfterWarmUpPeriodEnds": False}


def _topology():
    from regionha.topology import load_topology

    return load_topology()


# --- the local evaluator ----------------------------------------------------------------------------


class Alarms:
    """One breaching-on-missing alarm (like canary-silent) on moto and the evaluator holding warm-ups."""

    def __init__(self, store):
        self.store = store
        store.clock = ManualClock(T0)
        store.regions = [REGION]
        self.cw = boto3.client("cloudwatch", region_name=REGION)
        sns = boto3.client("sns", region_name=REGION)
        self.topic = sns.create_topic(Name="pages")["TopicArn"]

    def put(self, name="silent", **extra):
        self.cw.put_metric_alarm(
            AlarmName=name, Namespace="Test", MetricName="Heartbeat", Statistic="Sum", Period=60,
            EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="LessThanThreshold",
            TreatMissingData="breaching", AlarmActions=[self.topic], OKActions=[self.topic], **extra)

    def publish(self, minute: float, value: float = 1.0):
        self.cw.put_metric_data(Namespace="Test", MetricData=[
            {"MetricName": "Heartbeat", "Value": value, "Timestamp": T0 + timedelta(minutes=minute)}])

    def at(self, minutes: float):
        self.store.clock.advance((T0 + timedelta(minutes=minutes) - self.store.clock.now()).total_seconds())
        return self.store.tick()

    def described(self, name="silent"):
        return self.cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]

    def actions(self, name="silent"):
        return self.store.history(name, REGION, "Action")


def test_during_warm_up_the_alarm_stays_insufficient_data_and_runs_no_action(moto_aws):
    # GIVEN a breaching-on-missing alarm with a 3-minute warm-up and no data at all
    a = Alarms(moto_aws)
    a.put(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 3})
    # WHEN its minutes pass empty
    for minute in (0, 1, 2, 2.9):
        assert a.at(minute) == []
        # THEN it stays INSUFFICIENT_DATA, says IN_WARM_UP, and runs nothing
        described = a.described()
        assert described["StateValue"] == INSUFFICIENT_DATA and described["EvaluationState"] == IN_WARM_UP
        assert described["WarmUpConfiguration"] == {"WarmUpPeriodDurationInMinutes": 3,
                                                    "OnlyStartEvaluatingAfterWarmUpPeriodEnds": False}
    assert a.actions() == []
    # AND at the end of its duration it evaluates as any alarm: missing data breaching, ALARM and a page
    (change,) = a.at(3)
    assert change.new_state == ALARM and "EvaluationState" not in a.described()
    assert len(a.actions()) == 1


def test_the_warm_up_ends_early_once_the_data_fills_the_window(moto_aws):
    a = Alarms(moto_aws)
    a.put(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 30})
    a.publish(0.5)  # the minute it was created
    assert a.at(1) == []  # the window (the minute 0) holds data, but nothing before it
    a.publish(1.5)
    (change,) = a.at(2)
    assert change.new_state == OK
    # OnlyStartEvaluatingAfterWarmUpPeriodEnds: data or not, the whole duration.
    a.put("patient", WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 5,
                                          "OnlyStartEvaluatingAfterWarmUpPeriodEnds": True})
    for minute in range(2, 7):
        a.publish(minute + 0.5)
    assert [c.alarm_name for c in a.at(6.5)] == []
    assert a.described("patient")["EvaluationState"] == IN_WARM_UP
    assert [(c.alarm_name, c.new_state) for c in a.at(7)] == [("patient", OK)]


def test_a_warm_up_happens_once_at_creation_and_an_update_never_restarts_it(moto_aws):
    a = Alarms(moto_aws)
    a.put(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 2})
    # An update during the warm-up changes it, measured from the creation, not restarted.
    a.at(1)
    a.put(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 3})
    assert a.at(2.5) == [] and a.described()["EvaluationState"] == IN_WARM_UP
    assert [c.new_state for c in a.at(3)] == [ALARM]
    # An update afterwards (a rebuild) starts none: the alarm keeps evaluating.
    a.put(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 10})
    a.publish(3.5)
    assert [c.new_state for c in a.at(4)] == [OK] and "EvaluationState" not in a.described()
    # A deleted and recreated alarm is a new alarm: it warms up again.
    a.cw.delete_alarms(AlarmNames=["silent"])
    a.put(WarmUpConfiguration={"WarmUpPeriodDurationInMinutes": 2})
    assert a.at(5) == [] and a.described()["EvaluationState"] == IN_WARM_UP
    # And an update during a warm-up that drops it ends it.
    a.put()
    assert [c.new_state for c in a.at(5.5)] == [OK] and "WarmUpConfiguration" not in a.described()


# --- the build's alarms after a fresh build ---------------------------------------------------------


class FreshBuild:
    """The build's tail on one manual clock: FirstCanaryRound (the nodes' services not up yet), the
    alarms made by ConvergeWatch, then the schedule's rounds from ``first_schedule``; the alarms are
    evaluated at every 10-second boundary, as CloudWatch evaluates high-resolution alarms."""

    def __init__(self, store, topology, stack: ExitStack, *, dead: str | None = None):
        self.store, self.topology = store, topology
        self.clock = ManualClock(T0)
        store.clock, store.regions = self.clock, [REGION]
        self.cw = boto3.client("cloudwatch", region_name=REGION)
        a = topology.primary
        self.truth = canary.Truth(str(a.ip), topology.dns.record.ttl, a.name)
        self.servers = {}
        for i, target in enumerate(canary.canary_targets(topology)):
            action = drop() if target.path == dead else answer(str(a.ip))
            server = stack.enter_context(FakeDNSServer(action, address=f"127.0.55.{i + 1}"))
            self.servers[target.path] = (server.address, server.port)
        self.nodes = {}
        self.services = []
        for i, node in enumerate(topology.nodes):
            service = NodeService(node.name, f"127.0.82.{i + 1}", 0)
            service.start()  # to learn its port; it is down (booting) until boot()
            service.stop()
            stack.callback(service.stop)
            self.services.append(service)
            self.nodes[node.name] = (service.host, service.port)

    def boot(self) -> None:
        for service in self.services:
            service.start()

    def advance_to(self, when: datetime) -> None:
        while True:
            now = self.clock.now()
            boundary = datetime.fromtimestamp((now.timestamp() // FAST_PERIOD + 1) * FAST_PERIOD, UTC)
            if boundary > when:
                break
            self.clock.advance((boundary - now).total_seconds())
            self.store.tick()
        self.clock.advance(max(0.0, (when - self.clock.now()).total_seconds()))

    def round_once(self, slot: datetime) -> canary.CanaryRun:
        started = time.monotonic()
        run = canary.run_canary(self.topology, self.truth, servers=self.servers, node_addresses=self.nodes,
                                timeout=0.3)
        self.advance_to(self.clock.now() + timedelta(seconds=time.monotonic() - started))
        metrics.put_metric_data(canary.metrics(run), self.cw, timestamp=slot)
        return run

    def run(self, *, first_round: float = 28, alarms_at: float = 35, first_schedule: float = 99,
            minutes: int = 6) -> None:
        self.advance_to(T0 + timedelta(seconds=first_round))
        first = self.round_once(self.clock.now())
        assert not first.all_succeeded  # the nodes' services are not up yet
        self.advance_to(T0 + timedelta(seconds=alarms_at))
        converge_watch(self.topology, Clients(), WatchSettings(region=REGION))
        self.boot()
        for minute in range(minutes):
            start = T0 + timedelta(seconds=first_schedule + 60 * minute)
            self.advance_to(start)
            rounds.run_rounds(start, self.round_once, now=self.clock.now,
                              sleep=lambda s: self.advance_to(self.clock.now() + timedelta(seconds=s)))

    def pages(self) -> dict[str, datetime]:
        """Alarm -> when it first went to ALARM."""
        out = {}
        names = [a["AlarmName"] for a in self.cw.describe_alarms()["MetricAlarms"]]
        for name in [*names, composite_name(self.topology.deployment)]:
            for item in reversed(self.store.history(name, REGION, "StateUpdate")):
                if item["HistorySummary"].endswith(f"to {ALARM}"):
                    out[name] = item["Timestamp"]
                    break
        return out

    def states(self) -> dict[str, str]:
        return {a["AlarmName"]: a["StateValue"] for a in self.cw.describe_alarms()["MetricAlarms"]}


def _canary_alarms(topology) -> set[str]:
    """The alarms the canary's own datapoints feed (coverage and interconnect have other sources)."""
    return {alarm_name(topology.deployment, i.suffix) for i in canary_alarm_intents(topology)
            if not i.suffix.startswith("onprem-coverage-")}


def test_a_fresh_build_does_not_page_though_its_first_round_failed_and_the_schedule_is_late(moto_aws, topology):
    # GIVEN the first round fails (nodes booting) and the schedule's first round comes 71 s later
    with ExitStack() as stack:
        build = FreshBuild(moto_aws, topology, stack)
        # WHEN the build makes its alarms right after that round and the canary runs for 6 minutes
        build.run()
        pages, states = build.pages(), build.states()
    # THEN nothing paged, and every alarm the canary feeds has left its warm-up, OK
    assert pages == {}
    assert {n: states[n] for n in _canary_alarms(topology) if states[n] != OK} == {}
    print(f"\nfresh build, first round failed, schedule 71 s late: {len(_canary_alarms(topology))} alarms OK, "
          f"0 pages")


def test_without_the_warm_up_the_same_fresh_build_pages(moto_aws, topology, monkeypatch):
    # The control: the alarms as before (no WarmUpConfiguration) page on the same run.
    plain = converge_watch_module.metric_alarm_params

    def without_warm_up(*args, **kwargs):
        params = plain(*args, **kwargs)
        params.pop("WarmUpConfiguration")
        return params

    monkeypatch.setattr(converge_watch_module, "metric_alarm_params", without_warm_up)
    with ExitStack() as stack:
        build = FreshBuild(moto_aws, topology, stack)
        build.run(minutes=2)
        pages = build.pages()
    dep = topology.deployment
    assert alarm_name(dep, CANARY_SILENT.suffix) in pages and composite_name(dep) in pages
    assert alarm_name(dep, path_down("osaka-bind").suffix) in pages


def test_a_dead_path_still_alarms_once_its_warm_up_ends(moto_aws, topology):
    # GIVEN a fresh build whose osaka-bind path never answers
    dead = "osaka-bind"
    with ExitStack() as stack:
        build = FreshBuild(moto_aws, topology, stack, dead=dead)
        build.run(minutes=4)
        pages = build.pages()
        warm = {n for n in _canary_alarms(topology) if moto_aws.in_warm_up(REGION, n)}
    # THEN its path-down alarm fires (once its failing datapoints fill the window), and only it
    name = alarm_name(topology.deployment, path_down(dead).suffix)
    assert set(pages) == {name} and warm == set()
    after_schedule = (pages[name] - (T0 + timedelta(seconds=99))).total_seconds()
    print(f"\ndead path {dead} after a fresh build: path-down ALARM {after_schedule:.0f} s after the schedule's "
          f"first round")
    # Within the window plus two rounds of the schedule's first round, not at the end of the duration.
    assert after_schedule <= 60 + 30
