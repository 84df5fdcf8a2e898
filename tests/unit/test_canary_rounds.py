"""The dispatcher's canary rounds: one per 10-second slot of its minute, on whatever clock it is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from regionha.errors import ConfigurationError
from regionha.watch.rounds import event_time, run_rounds

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Clock:
    """A manual clock (product tests do not import the local runtime's)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.at += timedelta(seconds=seconds)


def offsets(results) -> list[float]:
    return [(r.at - T0).total_seconds() for r in results]


def test_six_rounds_a_minute_each_at_its_slot():
    clock = Clock(T0)
    seen = []
    done = run_rounds(T0, lambda slot: seen.append((slot, clock.now())), now=clock.now, sleep=clock.sleep)
    assert offsets(done) == [0, 10, 20, 30, 40, 50]
    assert all(slot == at for slot, at in seen)  # each round starts at its slot, not before
    assert clock.now() < T0 + timedelta(seconds=60)  # never into the next schedule's minute


def test_a_slow_round_skips_the_slots_it_overran_instead_of_bunching():
    clock = Clock(T0)

    def round_once(slot):
        if slot == T0 + timedelta(seconds=10):
            clock.at += timedelta(seconds=25)  # a silent path and a slow node check

    done = run_rounds(T0, round_once, now=clock.now, sleep=clock.sleep)
    # The round of slot 10 ended at 35: slot 20 is gone, slot 30 runs late (in its period), then 40, 50.
    assert offsets(done) == [0, 10, 30, 40, 50]


def test_the_builds_first_rounds_stop_at_the_first_that_finds_everything_answering():
    # The nodes' services answer from the third round on (they were starting): three rounds, not six.
    clock = Clock(T0)
    up_at = T0 + timedelta(seconds=20)
    done = run_rounds(T0, lambda slot: {"all_succeeded": slot >= up_at}, now=clock.now, sleep=clock.sleep,
                      until=lambda r: r["all_succeeded"])
    assert offsets(done) == [0, 10, 20]
    # Never up: the bound (one minute of rounds), each at its slot.
    clock = Clock(T0)
    never = run_rounds(T0, lambda slot: {"all_succeeded": False}, now=clock.now, sleep=clock.sleep,
                       until=lambda r: r["all_succeeded"])
    assert len(never) == 6


def test_a_late_start_runs_only_the_slots_left():
    clock = Clock(T0 + timedelta(seconds=42))
    done = run_rounds(T0, lambda slot: None, now=clock.now, sleep=clock.sleep)
    assert offsets(done) == [40, 50]


@pytest.mark.parametrize(("interval", "span"), [(0, 60), (-1, 60), (61, 60)])
def test_bad_intervals_are_configuration_errors(interval, span):
    with pytest.raises(ConfigurationError, match="interval"):
        run_rounds(T0, lambda slot: None, now=lambda: T0, sleep=lambda s: None, interval=interval, span=span)


@pytest.mark.parametrize(("event", "expected"), [
    ({"time": "2026-01-05T09:00:00Z"}, T0),
    ({"time": "2026-01-05T09:00:00+00:00"}, T0),
    ({"time": "2026-01-05T09:00:00"}, T0),
    ({"time": "yesterday"}, None),
    ({}, None),
    (None, None),
])
def test_event_time(event, expected):
    assert event_time(event) == expected
