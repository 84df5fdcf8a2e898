"""A drill's report read for people: its figures (recoveries, the budget, failed steps) and its text
(SNS subject and message, the CLI's summary); the HTML page is regionha.drill.page.

The input is the drill's report JSON (``status``, ``steps``, ``recovery_seconds``, ``recovery``,
``budget``, ``timeline``, ``faults``, ``alarms``, ``restore``, ``error``). Reports come from executions
that may have been stopped half way, so every key may be missing or null: the page then says so
instead of failing. Every piece of text from the report is escaped; the SVG is well-formed XML.

Recovery is measured only for paths whose answer had to change (to another node after a fault, or
back after a cut was restored) and is compared with the budget: the record's TTL plus the failover's
detection time plus the on-prem resolver's forwarder fallback (regionha.drill.judge). Times are
seconds from the drill's start.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass
from typing import Any


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _utc(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _status(report: dict[str, Any]) -> str:
    status = str(report.get("status") or "UNKNOWN").upper()
    return status if status in ("PASSED", "FAILED") else "UNKNOWN"


def _duration(report: dict[str, Any]) -> float | None:
    start, end = _num(report.get("started_at")), _num(report.get("ended_at"))
    return end - start if start is not None and end is not None else None


def _detail(detail: Any, limit: int = 160) -> str:
    if detail is None or detail == "" or detail == {}:
        return ""
    text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(value: Any, limit: int = 300) -> str:
    """An error as one line: a Step Functions ``{"Error", "Cause"}`` whose cause is a Lambda error JSON
    becomes ``Error: errorMessage`` (its stack trace dropped); anything else its JSON."""
    if isinstance(value, str):
        parsed = _maybe_json(value)
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            return _detail(f"{parsed.get('errorType') or 'Error'}: {parsed['errorMessage']}", limit)
        return _detail(" ".join(value.split()), limit)
    if isinstance(value, dict):
        name = value.get("Error") or value.get("error")
        cause = value.get("Cause") if "Cause" in value else value.get("cause")
        if name is not None or cause is not None:
            text = error_text(cause, limit) if cause is not None else ""
            if name and text.startswith(f"{name}: "):
                return text
            return _detail(": ".join(str(p) for p in (name, text) if p), limit)
    return _detail(value, limit)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _recovery(report: dict[str, Any]) -> dict[str, float | None]:
    return {str(k): _num(v) for k, v in _mapping(report.get("recovery_seconds")).items()}


@dataclass(frozen=True)
class Recovery:
    """One measured recovery: a path (canary label) answered ``node`` ``seconds`` after the fault."""

    key: str  # as in recovery_seconds: ``path`` or ``path@node``
    path: str
    node: str | None
    seconds: float | None
    step: str | None = None
    after: str = "fault"  # measured from the fault, or from the restore of the path's cut


def recoveries(report: dict[str, Any]) -> list[Recovery]:
    """``recovery_seconds`` as (path, node, seconds), with the measuring step and what it was measured
    from (``after``) taken from ``recovery`` when given."""
    known = {(str(r.get("path")), str(r.get("node") or None)): r for r in _dicts(report.get("recovery"))}
    out = []
    for key, seconds in _recovery(report).items():
        path, at, node = key.rpartition("@")
        path, node = (path, node) if at and path else (key, None)
        entry = known.get((path, str(node)), {})
        out.append(Recovery(key, path, node, seconds, None if entry.get("step") is None else str(entry["step"]),
                            "restore" if entry.get("after") == "restore" else "fault"))
    return out


def budget(report: dict[str, Any]) -> tuple[float | None, str]:
    """(seconds, how it is made up) of the recovery budget: the record's TTL plus detection plus the
    on-prem resolver's forwarder fallback (regionha.drill.judge.recovery_budget)."""
    b = _mapping(report.get("budget"))
    seconds = _num(b.get("seconds"))
    terms = [("TTL", _num(b.get("ttl"))), ("detection", _num(b.get("detection")))]
    if _num(b.get("forwarder_fallback")):  # none when no forwarder address was cut
        terms.append(("forwarder fallback", _num(b.get("forwarder_fallback"))))
    parts = " + ".join(f"{name} {v:g} s" for name, v in terms if v is not None)
    return seconds, parts


def _recovery_caption(r: Recovery) -> str:
    if r.after == "restore":
        return f"{r.path} back after its cut" + (f" → {r.node}" if r.node else "")
    return f"{r.path} → {r.node}" if r.node else r.path


def _transitions(seen: Any) -> list[str]:
    """Alarm states as seen, each run of one state once: OK, OK, ALARM, OK -> OK, ALARM, OK."""
    out: list[str] = []
    for state in seen if isinstance(seen, list) else []:
        if not out or out[-1] != str(state):
            out.append(str(state))
    return out


def _names(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else ""


def failed_steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _dicts(report.get("steps")) if s.get("ok") is not True]


def summary_text(report: dict[str, Any]) -> str:
    """A few plain lines for SNS and terminals: verdict, recovery per path, failed steps, alarms, error."""
    report = _mapping(report)
    lines = [
        f"regionha drill {_status(report)}: scenario {report.get('scenario') or '?'}, "
        f"deployment {report.get('deployment') or '?'}, execution {report.get('execution') or '?'}, "
        f"took {_seconds(_duration(report))}"
    ]
    recovery = _recovery(report)
    limit, parts = budget(report)
    if recovery:
        over = [k for k, s in recovery.items() if s is not None and limit is not None and s > limit]
        lines.append("recovery: " + ", ".join(
            f"{path} {_seconds(s) if s is not None else 'not recovered'}" for path, s in recovery.items()
        ) + (f" (budget {_seconds(limit)}: {parts}" + (f"; OVER: {', '.join(over)})" if over else ")")
             if limit is not None else ""))
    failed = failed_steps(report)
    for step in failed:
        detail = _detail(step.get("detail"), 200)
        lines.append(f"failed step: {step.get('name') or '?'}" + (f": {detail}" if detail else ""))
    not_run = _names(report.get("not_run"))
    if not_run:
        lines.append(f"not run: {not_run}")
    bad_alarms = [
        f"{name} (expected {_mapping(a).get('expected') or '?'}, saw "
        f"{' → '.join(_transitions(_mapping(a).get('seen'))) or 'nothing'})"
        for name, a in _mapping(report.get("alarms")).items() if _mapping(a).get("ok") is not True
    ]
    if bad_alarms:
        lines.append("alarm checks failed: " + "; ".join(bad_alarms))
    restore = _mapping(report.get("restore"))
    if restore and restore.get("ok") is False:
        broken = _names(restore.get("left_broken")) or error_text(restore.get("error") or restore)
        lines.append(f"RESTORE INCOMPLETE: {broken}" + (
            f" ({error_text(restore['error'])})" if restore.get("error") and restore.get("left_broken") else ""))
    if report.get("error"):
        lines.append(f"error: {error_text(report['error'])}")
    return "\n".join(lines)


def summary_subject(report: dict[str, Any]) -> str:
    """An SNS subject (at most 100 characters, one line)."""
    report = _mapping(report)
    text = f"regionha drill {_status(report)}: {report.get('scenario') or '?'} on {report.get('deployment') or '?'}"
    return " ".join(text.split())[:100]


# -- the timeline picture ------------------------------------------------------------------------------


def render_html(report: dict[str, Any]) -> str:
    """The report's self-contained HTML page (regionha.drill.page.render_html)."""
    from regionha.drill.page import render_html as render

    return render(report)
