"""Detection within 30 s (issue 13 item 4), on one clock: the canary's rounds, its real probes, the
datapoints and the alarm evaluation all read the same emulated clock.

GIVEN the deployment's alarms as the build makes them (``converge.watch.metric_alarm_params`` of every
intent), the local alarm evaluator (CloudWatch's evaluation rules) evaluating them every 10 s of
emulated time, and the dispatcher's round loop (``watch.rounds.run_rounds``) probing real scripted DNS
servers and node services on loopback: the clock jumps over idle waits but runs with real time while a
round probes (a silent path costs its real probe timeout), so no duration is compressed away.

WHEN a forwarder path goes silent at any moment of a round's interval, THEN its path-down alarm (and
only it) goes to ALARM within 30 s; WHEN nothing breaks for an hour of emulated time (360 rounds),
THEN no alarm ever goes to ALARM. Prints the detection figures.
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
from regionha.converge.watch import WatchSettings, metric_alarm_params
from regionha.local.aws.alarms import ALARM, AlarmEvaluator
from regionha.local.clock import ManualClock
from regionha.local.host.nodes import NodeService
from regionha.watch import canary, metrics, rounds
from regionha.watch.alarms import FAST_PERIOD, alarm_name, canary_alarm_intents, path_down

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from dnsfake import FakeDNSServer, answer, drop  # noqa: E402
from localmode import local_mode  # noqa: E402, F401 - autouse fixture

REGION = "ap-southeast-1"
# A minute boundary: EventBridge's rate(1 minute) fires on it, CloudWatch's periods are aligned to it.
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CUT = "osaka-bind"
WARM_UP = 3


class Watch:
    """The deployment's alarms on moto, the evaluator, the site's servers, all on one manual clock."""

    def __init__(self, topology, stack: ExitStack, cut_at: datetime | None):
        self.topology = topology
        self.clock = ManualClock(T0)
        self.cut_at = cut_at
        # A fresh stack's canary-silent alarm rightly fires before the first runs: evaluation starts
        # once the canary has a few minutes of history, as in a deployment that has been running.
        self.evaluating = False
        cw = boto3.client("cloudwatch", region_name=REGION)
        for intent in canary_alarm_intents(topology):
            cw.put_metric_alarm(**metric_alarm_params(topology, intent, WatchSettings(region=REGION)))
        self.cw = cw
        self.evaluator = AlarmEvaluator(Clients(), [REGION], self.clock)
        a = topology.primary
        self.truth = canary.Truth(str(a.ip), topology.dns.record.ttl, a.name)
        healthy, silent = answer(str(a.ip)), drop()

        def path_action(label: str):
            if label != CUT:
                return healthy
            return lambda q, t: silent(q, t) if self.cut_at and self.clock.now() >= self.cut_at else healthy(q, t)

        self.servers = {}
        for i, target in enumerate(canary.canary_targets(topology)):
            server = stack.enter_context(FakeDNSServer(path_action(target.path), address=f"127.0.54.{i + 1}"))
            self.servers[target.path] = (server.address, server.port)
        self.nodes = {}
        for i, node in enumerate(topology.nodes):
            service = NodeService(node.name, f"127.0.81.{i + 1}", 0)
            service.start()
            stack.callback(service.stop)
            self.nodes[node.name] = (service.host, service.port)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, evaluating the alarms at every 10-second boundary (CloudWatch's
        evaluation of high-resolution alarms)."""
        end = self.clock.now() + timedelta(seconds=seconds)
        while True:
            now = self.clock.now()
            boundary = datetime.fromtimestamp((now.timestamp() // FAST_PERIOD + 1) * FAST_PERIOD, UTC)
            if boundary > end:
                break
            self.clock.advance((boundary - now).total_seconds())
            if self.evaluating:
                self.evaluator.tick()
        self.clock.advance(max(0.0, (end - self.clock.now()).total_seconds()))

    def round_once(self, slot: datetime) -> canary.CanaryRun:
        started = time.monotonic()
        run = canary.run_canary(self.topology, self.truth, servers=self.servers, node_addresses=self.nodes)
        # The probes' real duration passes on the one clock (a silent path costs its probe timeout).
        self.advance(time.monotonic() - started)
        metrics.put_metric_data(canary.metrics(run), self.cw, timestamp=slot)
        return run

    def minutes(self, n: int) -> None:
        """Run the canary for ``n`` scheduled minutes after a warm-up of ``WARM_UP`` minutes."""
        for minute in range(WARM_UP + n):
            self.evaluating = minute >= WARM_UP
            start = T0 + timedelta(minutes=minute)
            self.advance(max(0.0, (start - self.clock.now()).total_seconds()))
            rounds.run_rounds(start, self.round_once, now=self.clock.now, sleep=self.advance)

    def alarmed(self) -> dict[str, datetime]:
        """Alarm name -> when it first went to ALARM (emulated time)."""
        out = {}
        for alarm in self.cw.describe_alarms()["MetricAlarms"]:
            for item in reversed(self.evaluator.history(alarm["AlarmName"], REGION, "StateUpdate")):
                if item["HistorySummary"].endswith(f"to {ALARM}"):
                    out[alarm["AlarmName"]] = item["Timestamp"]
                    break
        return out


@pytest.mark.parametrize("offset", [0.5, 3.0, 6.0, 9.5])
def test_a_silent_path_alarms_within_30_seconds(moto_aws, topology, offset):
    # GIVEN a path that goes silent `offset` seconds after a round's slot, after a clean warm-up
    cut_at = T0 + timedelta(minutes=WARM_UP, seconds=offset)
    with ExitStack() as stack:
        watch = Watch(topology, stack, cut_at)
        # WHEN the canary keeps running its rounds
        watch.minutes(1)
        alarmed = watch.alarmed()
    # THEN the path's alarm fires within 30 s, and nothing else fires
    name = alarm_name(topology.deployment, path_down(CUT).suffix)
    assert set(alarmed) == {name}, alarmed
    seconds = (alarmed[name] - cut_at).total_seconds()
    print(f"\npath {CUT} silent {offset:g} s after a round: path-down ALARM after {seconds:.1f} s")
    assert 0 < seconds <= 30


def test_a_clean_hour_raises_no_alarm(moto_aws, topology):
    with ExitStack() as stack:
        watch = Watch(topology, stack, cut_at=None)
        watch.minutes(60)
        alarmed = watch.alarmed()
        datapoints = watch.cw.get_metric_statistics(
            Namespace=metrics.NAMESPACE, MetricName="CanaryHeartbeat", Statistics=["SampleCount"], Period=3600,
            Dimensions=[{"Name": "Deployment", "Value": topology.deployment}],
            StartTime=T0 + timedelta(minutes=WARM_UP), EndTime=T0 + timedelta(minutes=WARM_UP + 60))["Datapoints"]
    assert alarmed == {}
    rounds_run = int(sum(d["SampleCount"] for d in datapoints))
    print(f"\na clean hour: {rounds_run} canary rounds, 0 alarms")
    assert rounds_run == 360
