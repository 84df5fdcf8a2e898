"""Bounded waits driven by a state machine: Wait → check → Choice, with the counter carried here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from regionha.errors import ConfigurationError, WaitTimeoutError


def check_ready(
    what: str,
    statuses: dict[str, str],
    *,
    ready: str,
    attempt: int,
    max_polls: int,
    failed: Iterable[str] = (),
) -> dict[str, Any]:
    """One poll of a bounded wait.

    Returns ``{"ready", "attempt", "statuses"}`` for the Choice state; raises
    ``ConfigurationError`` at once when a resource reached a failed status (waiting cannot help),
    and ``WaitTimeoutError`` when the last allowed poll still finds something not ready.
    """
    attempt += 1
    bad = {k: v for k, v in statuses.items() if v in set(failed)}
    if bad:
        raise ConfigurationError(f"{what}: failed: {bad}")
    is_ready = all(v == ready for v in statuses.values())
    if not is_ready and attempt >= max_polls:
        waiting = {k: v for k, v in statuses.items() if v != ready}
        raise WaitTimeoutError(f"{what}: still not {ready} after {attempt} polls: {waiting}")
    return {"ready": is_ready, "attempt": attempt, "statuses": statuses}
