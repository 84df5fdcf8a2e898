"""regionha.environment: what differs where the product runs, read from the invocation's variables."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from regionha.environment import CLOCK_ENV, LOCAL_ENV, AnchoredClock, Environment
from regionha.errors import ConfigurationError


def test_nothing_set_is_aws_real_addresses_and_real_time():
    env = Environment.from_environ({})
    assert env == Environment() and not env.local and env.clock is None
    assert abs((env.now() - datetime.now(UTC)).total_seconds()) < 5
    assert env.variables() == {}


def test_the_variables_round_trip():
    clock = AnchoredClock(datetime(2024, 5, 1, tzinfo=UTC), time.monotonic(), 20.0)
    variables = Environment(local=True, clock=clock).variables()
    assert variables[LOCAL_ENV] == "1"
    assert Environment.from_environ(variables) == Environment(local=True, clock=clock)


def test_an_anchored_clock_runs_rate_times_faster():
    clock = AnchoredClock(datetime(2024, 5, 1, tzinfo=UTC), time.monotonic() - 2.0, 30.0)
    assert clock.now() - datetime(2024, 5, 1, tzinfo=UTC) >= timedelta(seconds=60)
    assert clock.real_seconds(60) == 2.0


@pytest.mark.parametrize(
    "text", ["", "2024-05-01T00:00:00+00:00", "2024-05-01T00:00:00+00:00@1x0", "2024-05-01T00:00:00@1x2",
             "yesterday@1x2", "2024-05-01T00:00:00+00:00@nowx2"],
)
def test_a_malformed_clock_is_a_configuration_error(text):
    with pytest.raises(ConfigurationError, match=CLOCK_ENV):
        Environment.from_environ({CLOCK_ENV: text or " "})


def test_only_1_turns_local_mode_on():
    assert not Environment.from_environ({LOCAL_ENV: "true"}).local
    assert Environment.from_environ({LOCAL_ENV: "1"}).local
