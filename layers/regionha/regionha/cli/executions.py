"""Following a state machine's execution: its name, how long to watch, its history as progress lines,
and its description as JSON.

Progress is one line per state as it is entered and left (from GetExecutionHistory), a spinner with the
elapsed time while waiting (``Out.waiting``).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from regionha.cli.output import Out

# Beyond a state machine's own TimeoutSeconds, how long to keep watching for its final events.
WAIT_GRACE_SECONDS = 60.0
# A state machine without TimeoutSeconds is watched this long at most.
DEFAULT_WAIT_SECONDS = 3600.0


def execution_name(kind: str) -> str:
    # Names are unique per state machine for 90 days; the suffix keeps two starts in one second apart.
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:4]}"


def wait_bound(sfn: Any, state_machine_arn: str) -> float:
    """How long to follow an execution: the state machine's TimeoutSeconds plus a grace.

    IAM: states:DescribeStateMachine.
    """
    try:
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=state_machine_arn)["definition"])
        timeout = definition.get("TimeoutSeconds")
    except (ValueError, KeyError, AttributeError):
        timeout = None
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout) + WAIT_GRACE_SECONDS
    return DEFAULT_WAIT_SECONDS


def new_events(sfn: Any, execution_arn: str, after_id: int) -> list[dict[str, Any]]:
    """History events with an id above ``after_id``, oldest first. IAM: states:GetExecutionHistory.

    Reads newest first and stops at the first page that reaches back to ``after_id``, so a long
    execution's history is not read again on every poll (an emulator that ignores ``reverseOrder``
    returns everything at once, which this handles the same way).
    """
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "reverseOrder": True, "maxResults": 100}
    while True:
        page = sfn.get_execution_history(**kwargs)
        batch = page.get("events") or []
        events += [e for e in batch if e["id"] > after_id]
        if any(e["id"] <= after_id for e in batch) or not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    return sorted(events, key=lambda e: e["id"])


def details(event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


class Progress:
    """Turns history events into lines: a state entered or left, a failure, the end.

    ``say(text, style)``; styles are rich style names (used only on a terminal).
    """

    def __init__(self, started: datetime, say: Callable[[str, str | None], None]):
        self._started = started
        self._say = say
        # Map iterations enter a state several times at once: each exit pairs with the oldest entry.
        self._entered: dict[str, list[datetime]] = {}
        self.current: str | None = None

    def _at(self, event: dict[str, Any]) -> str:
        stamp = event.get("timestamp")
        offset = (stamp - self._started).total_seconds() if isinstance(stamp, datetime) else 0.0
        return f"{offset:+8.1f}s"

    def show(self, event: dict[str, Any]) -> None:
        kind, info = event.get("type", ""), details(event)
        name = info.get("name")
        if kind.endswith("StateEntered") and name:
            self._entered.setdefault(name, []).append(event.get("timestamp"))
            self.current = name
            self._say(f"{self._at(event)}  enter {name}", None)
        elif kind.endswith("StateExited") and name:
            waiting, stamp = self._entered.get(name) or [], event.get("timestamp")
            entered = waiting.pop(0) if waiting else None
            took = (f" ({(stamp - entered).total_seconds():.1f} s)"
                    if isinstance(entered, datetime) and isinstance(stamp, datetime) else "")
            self._say(f"{self._at(event)}  exit  {name}{took}", "green")
            if self.current == name:
                self.current = None
        elif kind == "ExecutionStarted":
            self._say(f"{self._at(event)}  execution started", "dim")
        elif kind == "ExecutionSucceeded":
            self._say(f"{self._at(event)}  execution SUCCEEDED", "bold green")
        elif kind.endswith(("Failed", "TimedOut", "Aborted")):
            from regionha.drill.report import error_text

            where = f" in {self.current}" if self.current and not kind.startswith("Execution") else ""
            error, cause = info.get("error"), info.get("cause")
            text = error_text({"Error": error, "Cause": cause}) if error or cause else ""
            self._say(f"{self._at(event)}  {kind}{where}" + (f": {text}" if text else ""), "bold red")


def follow(sfn: Any, execution_arn: str, bound: float, out: Out, poll: float) -> dict[str, Any]:
    """Print the execution's history as it grows until it ends or ``bound`` seconds pass.

    Returns the last DescribeExecution. IAM: states:DescribeExecution, states:GetExecutionHistory.
    """
    desc = sfn.describe_execution(executionArn=execution_arn)
    progress = Progress(desc["startDate"], out.line)
    clock = time.monotonic()
    deadline = clock + bound

    def label() -> str:
        doing = f"in {progress.current}" if progress.current else "waiting"
        return f"{desc['name']}: {doing} · {time.monotonic() - clock:.0f} s"

    status = out.waiting(label)
    last_id = 0
    try:
        while True:
            desc = sfn.describe_execution(executionArn=execution_arn)
            for event in new_events(sfn, execution_arn, last_id):
                progress.show(event)
                last_id = event["id"]
            if desc["status"] != "RUNNING" or time.monotonic() >= deadline:
                return desc
            if status is not None:
                status.update(label())
            time.sleep(poll)
    finally:
        if status is not None:
            status.stop()


def execution_json(desc: dict[str, Any]) -> dict[str, Any]:
    """A DescribeExecution as JSON: its output parsed, times as ISO strings, seconds it took."""
    started, stopped = desc.get("startDate"), desc.get("stopDate")
    output = desc.get("output")
    with contextlib.suppress(ValueError):
        output = json.loads(output) if isinstance(output, str) else output
    return {
        "execution_arn": desc.get("executionArn"),
        "name": desc.get("name"),
        "status": desc.get("status"),
        "started": started.isoformat() if isinstance(started, datetime) else started,
        "stopped": stopped.isoformat() if isinstance(stopped, datetime) else stopped,
        "seconds": round((stopped - started).total_seconds(), 3)
        if isinstance(started, datetime) and isinstance(stopped, datetime) else None,
        "output": output,
        "error": desc.get("error"),
        "cause": desc.get("cause"),
    }


def outcome_counts(output: Any) -> dict[str, int]:
    """Created/updated/unchanged/deleted counts over every step report (``summary``) of an output."""
    totals: dict[str, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("summary"), dict):
                for k, v in value["summary"].items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        totals[k] = totals.get(k, 0) + int(v)
                return
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(output)
    return totals
