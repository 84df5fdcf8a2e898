"""Emulated time for the local runtime: a compressible clock, a manual one for tests, a ticking thread.

Everything the local runtime emulates (schedules, alarm periods, metric timestamps) reads one
clock, so that with ``compression=60`` one emulated minute passes in one real second and the
periods, the schedules and the timestamps of published metrics all still line up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

logger = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime:
        """The emulated time, timezone-aware UTC."""
        ...

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long ``emulated_seconds`` of emulated time takes in real time."""
        ...


class CompressedClock:
    """Emulated time running ``compression`` times faster than real time, from ``start``.

    Monotonic underneath, so a wall-clock step (NTP) cannot make emulated time jump backwards.
    """

    def __init__(self, compression: float = 1.0, start: datetime | None = None):
        if compression <= 0:
            raise ValueError(f"compression must be positive, got {compression}")
        self.compression = compression
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self.compression)

    def real_seconds(self, emulated_seconds: float) -> float:
        return emulated_seconds / self.compression


class ManualClock:
    """A clock that moves only when told to: deterministic tests advance it explicitly."""

    def __init__(self, start: datetime | None = None):
        self._now = (start or datetime(2024, 1, 1, tzinfo=UTC)).astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0.0, **kwargs: float) -> datetime:
        """Move forward by ``seconds`` (and/or timedelta keywords: ``minutes=5``); returns the new time."""
        step = timedelta(seconds=seconds, **kwargs)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += step
            return self._now

    def real_seconds(self, emulated_seconds: float) -> float:
        return 0.0


def real_ttl(clock: Clock, ttl: int) -> int:
    """A DNS TTL (emulated seconds) as the real seconds a real cache (named) keeps it, so that caches
    expire on the clock the alarms and schedules run on: at 20x, a 60 s record lives 3 real seconds.
    Never below 1 s (caches count whole seconds), and 0 stays 0 (do not cache)."""
    if ttl <= 0:
        return 0
    return max(1, math.ceil(clock.real_seconds(ttl)))


def iso(t: datetime) -> str:
    """AWS's event time format: UTC, whole seconds, a ``Z`` suffix."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ticker:
    """Calls ``tick()`` every ``interval`` real seconds in a thread, until ``stop()``.

    A failing tick is logged and the loop goes on: the moto server may be restarting, and one
    lost evaluation is what AWS would also tolerate.
    """

    interval: float = 0.25

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime | None = None) -> object:
        raise NotImplementedError

    def run(self) -> None:
        """Tick until ``stop()``; blocks (``start()`` runs it in a daemon thread)."""
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("%s tick failed", type(self).__name__)
            self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the loop after the tick in progress; ``start()`` may be called again afterwards."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
