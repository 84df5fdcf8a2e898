"""Canary rounds within one scheduled minute: sub-minute probing on a one-minute schedule.

EventBridge schedules run at most once a minute, but a path going down must be seen within 30 s. So
the dispatcher, started once a minute, runs a round every ``interval`` seconds (10 s) until the next
schedule is due: each round reads the record (the truth) again, so a failover in the middle of a
minute never makes the following rounds judge the paths against an old value, and runs the canary
stamped with the round's own slot time, at which its datapoints land in the 10-second periods of the
alarms (``regionha.watch.alarms.FAST_PERIOD``).

Slots are ``start + k * interval``; a round that overruns its slot (a silently dropping path costs a
probe timeout) makes the loop skip the slots already past instead of bunching rounds, and the loop
never starts a round at or after ``start + span`` (the next schedule's own first round). The
dispatcher hands each round to a thread of its own (``round_once`` returns a future), so rounds
overlap rather than skip when a probe is slow. Time comes
from the caller (``now``/``sleep``), so the same loop runs on the real clock in Lambda and on the
local runtime's emulated one, and is tested with a manual clock.

Nothing here calls AWS: no IAM actions are needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from regionha.errors import ConfigurationError

ROUND_SECONDS = 10.0
SPAN_SECONDS = 60.0


@dataclass(frozen=True)
class RoundResult:
    """One round: its slot time and what the round function returned."""

    at: datetime
    result: Any


def slots(interval: float = ROUND_SECONDS, span: float = SPAN_SECONDS) -> int:
    """How many rounds one schedule runs: the slots ``start + k * interval`` below ``start + span``."""
    return math.ceil(span / interval)


def run_rounds(
    start: datetime,
    round_once: Callable[[datetime], Any],
    *,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    interval: float = ROUND_SECONDS,
    span: float = SPAN_SECONDS,
    until: Callable[[Any], bool] | None = None,
) -> list[RoundResult]:
    """Call ``round_once(slot)`` once per free slot ``start + k * interval`` below ``start + span``
    (with ``until``: and stop after the first round whose result satisfies it).

    Waits (``sleep``, seconds of the ``now`` clock) until each slot; a slot already past when the
    previous round ends is skipped. Returns the rounds run, in order. An exception of ``round_once``
    propagates (the caller decides whether a failed round ends the minute). ConfigurationError when
    ``interval`` or ``span`` is not positive or ``interval`` exceeds ``span``.
    """
    if not 0 < interval <= span:
        raise ConfigurationError(f"canary rounds: interval {interval} s must be positive and at most the span "
                                 f"{span} s")
    rounds: list[RoundResult] = []
    count = slots(interval, span)
    k = 0
    while k < count:
        slot = start + timedelta(seconds=k * interval)
        wait = (slot - now()).total_seconds()
        if wait > 0:
            sleep(wait)
        elif wait <= -interval:
            # Overran: this slot is gone; go on with the next one still ahead.
            k += int(-wait // interval)
            continue
        rounds.append(RoundResult(slot, round_once(slot)))
        if until is not None and until(rounds[-1].result):
            break
        k += 1
    return rounds


def event_time(event: Any) -> datetime | None:
    """The ``time`` of a scheduled event (or of a dispatched canary round), None when absent or unreadable.

    EventBridge stamps a scheduled event with the schedule's time; the local runtime's emulated clock
    stamps it there too, so rounds and their datapoints follow the clock the alarms run on."""
    text = event.get("time") if isinstance(event, dict) else None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=UTC)
