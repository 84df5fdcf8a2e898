"""One clock in the local runtime: DNS caches, the controller's waits and the alarms all run on the
emulated time, so a compressed clock does not let an alarm outrun a record's TTL (issue 14 item 5)."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

import dns.rcode
import pytest
import test_vpcdns as vpcdns_world
from test_vpcdns import REGION, _udp

from regionha import failover
from regionha.local.aws.vpcdns import VpcResolver
from regionha.local.clock import CompressedClock, ManualClock, real_ttl
from regionha.watch import metrics

world = vpcdns_world.world


@pytest.mark.parametrize(
    ("compression", "ttl", "real"),
    [(1, 60, 60), (20, 60, 3), (20, 900, 45), (20, 3, 1), (60, 1, 1), (20, 0, 0)],
)
def test_a_ttl_lasts_its_emulated_seconds(compression, ttl, real):
    assert real_ttl(CompressedClock(compression), ttl) == real


def test_the_vpc_resolver_answers_ttls_on_the_runtime_clock(world):
    # GIVEN the local runtime's VPC resolver on a clock 20x faster than real
    clock = CompressedClock(20)
    server = VpcResolver(
        REGION, lambda: world.vpc_id, world.route53, [("127.0.0.1", 0)], cache_seconds=0,
        ttl=functools.partial(real_ttl, clock),
    )
    server.start()
    try:
        # THEN a record of TTL 42 s (emulated) is cached 3 real seconds, 42 emulated ones
        found = _udp(server, "sample.cluster.local.")
        assert found.answer[0].ttl == 3
        # and a negative answer (SOA 900 s) 45 real seconds, not 900
        missing = _udp(server, "nothere.cluster.local.")
        assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority[0].ttl == 45
        # while the zone data itself is untouched (a second answer is scaled once, not twice)
        assert _udp(server, "sample.cluster.local.").answer[0].ttl == 3
    finally:
        server.stop()


def test_controller_waits_follow_the_runtime_clock(monkeypatch):
    """The controller's re-check interval (5 s) is emulated time locally: at 20x it takes 0.25 s, so
    confirming a failure does not outlast the alarms that judge the failover."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = CompressedClock(20)
    metrics.set_clock(clock.now, clock.real_seconds)
    try:
        failover.ControllerSettings().sleep(5.0)
    finally:
        metrics.set_clock(None)
    failover.ControllerSettings().sleep(5.0)
    assert slept == [0.25, 5.0]


def test_a_manual_clock_never_sleeps_for_real(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = ManualClock(datetime(2024, 5, 1, tzinfo=UTC))
    metrics.set_clock(clock.now, clock.real_seconds)
    try:
        metrics.sleep(5)
    finally:
        metrics.set_clock(None)
    assert slept == [0.0]
