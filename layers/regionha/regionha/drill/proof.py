"""The alarm proof (pure): did each watched alarm go to ALARM while its path was cut and come back to
OK after restore, and did a critical alarm fire during the drill.

A watched alarm belongs to the path named by its ``Path`` dimension (the path-down alarms carry one),
else to the path whose label, "/" written "-", ends its name (``<prefix>-path-down-<label>``). Cutting a
path expects that path's alarms to go to ALARM during the fault and back to OK after restore; an alarm
already in ALARM when the cut began counts (an earlier fault's effect, e.g. a failover's stale answers,
can fire it just before). A critical alarm counts as fired only if it was not in ALARM at preflight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from regionha.drill.steps import PATH

if TYPE_CHECKING:
    from regionha.drill.inputs import DrillEnv

ALARM, OK_STATE = "ALARM", "OK"


def alarm_path(alarm: Mapping[str, Any], labels: Iterable[str]) -> str | None:
    """The path label a watched alarm (DescribeAlarms' MetricAlarm) belongs to: its Path dimension,
    else its name's suffix; None when neither says."""
    for d in alarm.get("Dimensions") or []:
        if d.get("Name") == "Path":
            return str(d.get("Value"))
    name = str(alarm.get("AlarmName") or "")
    for label in sorted(labels, key=len, reverse=True):
        if name.endswith("-path-down-" + label.replace("/", "-")):
            return label
    return None


def fault_windows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each fault's [start, end] from the drill's events (end None: never restored)."""
    windows: list[dict[str, Any]] = []
    for e in record.get("events", []):
        if e["event"] == "fault":
            windows.append({"kind": e["kind"], "target": e["target"], "start": e["t"], "end": None})
        else:
            open_ = [w for w in windows if w["kind"] == e["kind"] and w["target"] == e["target"] and w["end"] is None]
            if open_:
                open_[-1]["end"] = e["t"]
    return windows


def alarm_proof(record: Mapping[str, Any], env: DrillEnv, final: Mapping[str, str]) -> dict[str, Any]:
    """Per watched alarm: must it fire (its path was cut), was it seen in ALARM during that cut, is it
    OK after restore; per critical alarm: did it go to ALARM during the drill."""
    windows = fault_windows(record)
    log = record.get("alarm_log", [])
    alarm_paths: Mapping[str, str | None] = record.get("alarm_paths") or {}
    alarms: dict[str, dict[str, Any]] = {}
    for name in env.watch_alarms:
        label = alarm_paths.get(name)
        cuts = [w for w in windows if w["kind"] == PATH and label and label.split("/")[0] == w["target"]]
        seen = [a["state"] for a in log if a["alarm"] == name]
        fired = any(in_alarm_during(log, name, w) for w in cuts)
        missing = name not in final
        ok_after = final.get(name) == OK_STATE
        expected = "ALARM during the cut, then OK" if cuts else "OK after restore"
        entry = {"path": label, "critical": False, "expected": expected,
                 "seen": seen, "fired_during_fault": fired, "ok_after_restore": ok_after, "final": final.get(name),
                 "missing": missing}
        entry["ok"] = (not missing) and ok_after and (fired or not cuts)
        alarms[name] = entry
    baseline = record.get("alarm_baseline") or {}
    critical_fired = []
    for name in env.critical_alarms:
        seen = [a["state"] for a in log if a["alarm"] == name]
        fired = any(a["alarm"] == name and a["state"] == ALARM for a in log) and baseline.get(name) != ALARM
        if fired:
            critical_fired.append(name)
        alarms[name] = {"path": None, "critical": True, "expected": "never ALARM", "seen": seen,
                        "fired": fired, "final": final.get(name), "ok": not fired}
    checked = bool(env.watch_alarms or env.critical_alarms)
    summary = {"checked": checked, "ok": all(a["ok"] for a in alarms.values()),
               "critical_fired": critical_fired,
               "note": None if checked else "DRILL_WATCH_ALARMS and CRITICAL_ALARMS are empty: alarms not checked"}
    return {"alarms": alarms, "summary": summary}


def in_alarm_during(log: list[dict[str, Any]], name: str, window: Mapping[str, Any]) -> bool:
    """Was alarm ``name`` in ALARM at some moment of ``window``: it went there during the window, or
    it already was when the window opened (an earlier fault's effect, e.g. a failover's stale answers,
    can have fired it just before the cut)."""
    entries = [a for a in log if a["alarm"] == name]
    before = [a for a in entries if a["t"] < window["start"]]
    if before and before[-1]["state"] == ALARM:
        return True
    return any(a["state"] == ALARM and window["start"] <= a["t"] and (window["end"] is None or a["t"] <= window["end"])
               for a in entries)

