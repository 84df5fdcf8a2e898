"""Judging a drill (pure: no AWS): does a path sample meet its expectation, when did a path recover
and to which node, how long may that take, and did the drill pass.

Words: an *expectation* is what a step wants of a path (a node name, ``CUT``: no answer, ``TRUTH``: the
record's node, answering); a *sample* is one probe of one path in one round (the canary's JSON for a
path: outcome, answer, node, node_reachable, success); a path's *recovery* is the time from when its
answer had to change (the fault was applied, or its cut was restored) to its first sample that met the
expectation, keyed ``path@node`` by the node that sample named.

The recovery budget: the record's TTL (every resolver on the way caches the answer at most that long,
BIND's ``max-cache-ttl``), plus the failover's detection time, plus the on-prem resolver's forwarder
fallback: BIND sends a query to one forwarder at a time and gives a silent one
``BIND_FORWARDER_RETRY_SECONDS`` before the next (lib/dns/resolver.c ``fctx_setretryinterval``: 0.8 s
the first two times through the list, plus its RTT fudge of at least 50 ms), so with cut forwarders an
answer can take that long per cut forwarder address after a cache miss.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from regionha.drill.proof import fault_windows
from regionha.drill.steps import PREFLIGHT

PASSED, FAILED = "PASSED", "FAILED"
# What an expectation may say besides a node name.
CUT = "cut"  # the path must not answer
TRUTH = "record"  # the path must answer the record's node, and that node must answer
NOT_ANSWERING = frozenset({"timeout", "network_error"})
# BIND 9's first retry interval over its forwarder list (0.8 s) plus its minimum RTT fudge (50 ms).
BIND_FORWARDER_RETRY_SECONDS = 0.85


def meets(want: str, sample: Mapping[str, Any]) -> bool:
    """Does one path sample show what the expectation wants?"""
    if want == CUT:
        return sample.get("outcome") in NOT_ANSWERING
    if want == TRUTH:
        return bool(sample.get("success"))
    return sample.get("node") == want and bool(sample.get("node_reachable"))


def forwarder_fallback_seconds(cut_addresses: int) -> float:
    """Worst case for one answer of the on-prem resolver while ``cut_addresses`` of its forwarder
    addresses are silent: BIND tries each of them first, one retry interval each (s)."""
    return round(max(0, cut_addresses) * BIND_FORWARDER_RETRY_SECONDS, 3)


def recovery_budget(ttl: float, detection: float, cut_addresses: int = 0) -> dict[str, float]:
    """How long a path may take to name the expected node after a fault (s): the record's TTL plus the
    failover's detection plus the forwarder fallback. Shape: {ttl, detection, forwarder_fallback, seconds}."""
    fallback = forwarder_fallback_seconds(cut_addresses)
    return {"ttl": ttl, "detection": detection, "forwarder_fallback": fallback,
            "seconds": round(ttl + detection + fallback, 3)}


def measured_paths(expect: Mapping[str, str], fault_time: float | None, answer_before: str | None,
                   restored: Mapping[str, float] | None = None) -> dict[str, float]:
    """Path label -> when its answer had to start changing: after a fault, the paths expected to name
    another node than the record named before it (not cut, not merely "the record"); after a restore,
    the paths whose cut was restored (label -> restore time)."""
    since = {label: fault_time for label, want in expect.items()
             if fault_time is not None and want not in (CUT, TRUTH, answer_before)}
    return since | dict(restored or {})


@dataclass
class RecoveryClock:
    """The first sample of each path that met its expectation, fed one round at a time, and the
    recoveries it makes. The node of a recovery is the node *that* sample named: a later sample of
    the same path (a timeout while the on-prem resolver falls back over a cut forwarder, during the
    hold for alarms) says nothing about when or where the path recovered."""

    expect: Mapping[str, str]
    since: Mapping[str, float]
    met: dict[str, dict[str, Any]] = field(default_factory=dict)

    def feed(self, t: float, samples: Mapping[str, Mapping[str, Any]]) -> None:
        """One round: path label -> its sample (taken at ``t``)."""
        for label, want in self.expect.items():
            if label not in self.met and want != CUT and label in samples and meets(want, samples[label]):
                self.met[label] = {"t": t, "node": samples[label].get("node")}

    def entries(self, step: str, *, reached: bool, after: str) -> list[dict[str, Any]]:
        """One entry per measured path: {step, path, node, seconds, after}; seconds None (and no node)
        when it had to change and did not within the bound. A path the step reached without a sample
        of its own meeting it (never the case for a measured path, which the step waits for) is skipped."""
        out = []
        for label, t0 in self.since.items():
            first = self.met.get(label)
            if first is None and reached:
                continue
            out.append({"step": step, "path": label, "node": first["node"] if first else None,
                        "seconds": round(max(0.0, first["t"] - t0), 3) if first else None, "after": after})
        return out


def recovery_key(entry: Mapping[str, Any]) -> str:
    """How a recovery is keyed in ``recovery_seconds`` (report, demo, metrics): ``path@node``, or the
    bare path when it did not recover."""
    return f"{entry['path']}@{entry['node']}" if entry.get("node") else str(entry["path"])


def brief(sample: Mapping[str, Any] | None) -> str:
    """One path sample in a few words, for errors and step details."""
    if not sample:
        return "no sample"
    text = f"{sample.get('outcome')} {sample.get('answer') or ''}".strip()
    if sample.get("node"):
        text += f" ({sample['node']} {'answers' if sample.get('node_reachable') else 'silent'})"
    return text


def health_text(health: Mapping[str, Any]) -> str:
    """A node's health (regionha.drill.probing node_health) in a few words."""
    if health.get("healthy"):
        return "healthy"
    if health.get("state") != "running":
        return f"instance {health.get('state')}"
    return f"service {health.get('error') or 'answered as ' + str(health.get('answered_as'))}"


def unmet(expect: Mapping[str, str], last: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Path label -> what it wanted and what it last showed, for every path not meeting its expectation."""
    return {label: f"want {want}, saw {brief(last.get(label))}" for label, want in expect.items()
            if not (label in last and meets(want, last[label]))}


def all_met(expect: Mapping[str, str], last: Mapping[str, Mapping[str, Any]]) -> bool:
    return not unmet(expect, last)


def cut_labels(expect: Mapping[str, str]) -> list[str]:
    return [label for label, want in expect.items() if want == CUT]


def compose_report(record: Mapping[str, Any], timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """The report JSON. PASSED only if preflight and every planned step passed, restore left nothing
    broken, the alarm proof holds, and no error was caught."""
    steps = []
    for s in record.get("steps", []):
        step = {k: s.get(k) for k in ("id", "name", "ok", "start", "end", "detail")}
        if step["end"] is None:  # the Lambda died mid-step (timeout): the step did not pass
            step["ok"] = False
        steps.append(step)
    done = {s["id"] for s in steps if s["ok"]}
    planned = [p["id"] for p in record.get("plan", [])]
    not_run = [p for p in planned if p not in {s["id"] for s in steps}]
    restore = record.get("restore") or {"ok": False, "left_broken": ["restore did not run"]}
    proof = record.get("alarm_proof") or {"checked": False, "ok": False, "note": "alarms were not checked"}
    recovery: dict[str, float | None] = {}
    for r in record.get("recovery", []):
        key = recovery_key(r)
        # A path can recover more than once to the same node: the slowest counts.
        if key not in recovery or r["seconds"] is None or (recovery[key] is not None
                                                           and r["seconds"] > recovery[key]):
            recovery[key] = r["seconds"]
    passed = (bool(planned) and PREFLIGHT in done and all(p in done for p in planned) and bool(restore.get("ok"))
              and bool(proof.get("ok")) and not record.get("error"))
    ended = max([time.time()] + [s["end"] for s in steps if s.get("end")])
    return {
        "status": PASSED if passed else FAILED,
        "scenario": record.get("scenario"),
        "deployment": record.get("deployment"),
        "execution": record.get("execution"),
        "mode": record.get("mode"),
        "started_at": record.get("started_at"),
        "ended_at": ended,
        "steps": steps,
        "not_run": not_run,
        "recovery_seconds": recovery,
        "recovery": record.get("recovery", []),
        "budget": record.get("budget"),
        "faults": fault_windows(record),
        "timeline": timeline,
        "alarms": record.get("alarms") or {},
        "alarm_proof": proof,
        "restore": restore,
        "error": record.get("error"),
    }


