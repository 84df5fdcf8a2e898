"""Where the product runs, read from its own invocation's environment variables, never from a switch.

On AWS none of these variables is set: cloud addresses are dialled as they are and time is real time.
The local runtime sets them on every function it emulates (the way Lambda sets ``AWS_REGION``), and on
what ``regionha local exec`` runs:

- ``REGIONHA_LOCAL=1``: cloud addresses map onto loopback and only loopback may be reached
  (:mod:`regionha.netguard`);
- ``REGIONHA_CLOCK=<emulated ISO time>@<monotonic seconds>x<rate>``: the runtime's emulated clock, as
  an anchor (the emulated time at one ``time.monotonic()`` reading) and how many emulated seconds pass
  per real one. ``CLOCK_MONOTONIC`` is one clock for the whole machine, so every thread and process
  of the runtime reads the same emulated time from it.

Code that needs either asks :func:`current` when it needs it (in the local runtime ``os.environ`` is
the invoking function's own), or takes an :class:`Environment` passed in (tests, benchmarks).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from regionha.errors import ConfigurationError

LOCAL_ENV = "REGIONHA_LOCAL"
CLOCK_ENV = "REGIONHA_CLOCK"


class Clock(Protocol):
    def now(self) -> datetime:
        """The time, timezone-aware UTC."""
        ...

    def real_seconds(self, seconds: float) -> float:
        """How many real seconds ``seconds`` of this clock take."""
        ...


@dataclass(frozen=True)
class AnchoredClock:
    """A clock running ``rate`` times faster than real time: ``at`` when ``time.monotonic()`` read ``monotonic``."""

    at: datetime
    monotonic: float
    rate: float

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigurationError(f"{CLOCK_ENV}: the rate must be positive, got {self.rate}")
        if self.at.tzinfo is None:
            raise ConfigurationError(f"{CLOCK_ENV}: the time needs a timezone, got {self.at.isoformat()}")

    @classmethod
    def of(cls, clock: Clock) -> AnchoredClock:
        """The same time line as ``clock`` (one whose speed is constant, e.g. a compressed clock)."""
        real = clock.real_seconds(1.0)
        if not real > 0:
            raise ConfigurationError("a clock that does not move in real time cannot be handed on as a variable")
        return cls(clock.now().astimezone(UTC), time.monotonic(), 1.0 / real)

    @classmethod
    def parse(cls, text: str) -> AnchoredClock:
        """``2026-11-30T15:00:00+00:00@12345.678x20`` -> the clock; ConfigurationError if malformed."""
        try:
            at, rest = text.strip().split("@", 1)
            monotonic, rate = rest.split("x", 1)
            return cls(datetime.fromisoformat(at), float(monotonic), float(rate))
        except ValueError as e:
            raise ConfigurationError(
                f"{CLOCK_ENV}={text!r}: expected <ISO time with zone>@<monotonic seconds>x<rate>"
            ) from e

    def __str__(self) -> str:
        return f"{self.at.isoformat()}@{self.monotonic!r}x{self.rate!r}"

    def now(self) -> datetime:
        return self.at + timedelta(seconds=(time.monotonic() - self.monotonic) * self.rate)

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.rate


@dataclass(frozen=True)
class Environment:
    """What differs where the product runs. The default is AWS: real addresses, real time."""

    local: bool = False  # cloud addresses map onto loopback; nothing else may be reached
    clock: Clock | None = None  # None: real time

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """Read ``REGIONHA_LOCAL`` and ``REGIONHA_CLOCK`` (default: ``os.environ``); ConfigurationError
        if the clock is malformed."""
        env = os.environ if environ is None else environ
        text = env.get(CLOCK_ENV)
        return cls(local=env.get(LOCAL_ENV) == "1", clock=AnchoredClock.parse(text) if text else None)

    def variables(self) -> dict[str, str]:
        """The environment variables that give this environment (what the local runtime sets)."""
        out = {LOCAL_ENV: "1"} if self.local else {}
        if self.clock is not None:
            out[CLOCK_ENV] = str(self.clock if isinstance(self.clock, AnchoredClock) else AnchoredClock.of(self.clock))
        return out

    def now(self) -> datetime:
        """This environment's time, timezone-aware UTC."""
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this environment's time (emulated seconds on an emulated clock)."""
        time.sleep(self.clock.real_seconds(seconds) if self.clock is not None else seconds)


def current() -> Environment:
    """The environment of the running invocation, read now from ``os.environ``."""
    return Environment.from_environ()
