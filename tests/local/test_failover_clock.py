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
from regionha.environment import CLOCK_ENV, Environment
from regionha.errors import ConfigurationError
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


@pytest.mark.serial  # a real DNS query with a short timeout: alone, not beside a loaded second worker
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
    confirming a failure does not outlast the alarms that judge the failover. The clock comes from the
    invocation's environment (REGIONHA_CLOCK, as the runtime sets it on every function)."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.delenv(CLOCK_ENV, raising=False)
    failover.ControllerSettings().sleep(5.0)
    monkeypatch.setenv(CLOCK_ENV, Environment(clock=CompressedClock(20)).variables()[CLOCK_ENV])
    failover.ControllerSettings().sleep(5.0)
    assert slept == [5.0, 0.25]


def test_the_environment_carries_the_runtime_clock_to_its_functions():
    # GIVEN the runtime's clock, 20x, started a day ago (emulated)
    clock = CompressedClock(20, start=datetime(2024, 5, 1, tzinfo=UTC))
    # WHEN a function reads it back from its environment variables
    env = Environment.from_environ(Environment(local=True, clock=clock).variables())
    # THEN it is local and reads the same emulated time (within a few real ms x 20)
    assert env.local
    assert abs((env.now() - clock.now()).total_seconds()) < 0.5
    assert env.clock.real_seconds(60) == 3.0
    assert abs((metrics.now() - datetime.now(UTC)).total_seconds()) < 5  # nothing else was switched


def test_a_manual_clock_never_sleeps_for_real(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    Environment(clock=ManualClock(datetime(2024, 5, 1, tzinfo=UTC))).sleep(5)
    assert slept == [0.0]
    # and, never moving in real time, it cannot be handed to a function as a variable
    with pytest.raises(ConfigurationError):
        Environment(clock=ManualClock()).variables()
