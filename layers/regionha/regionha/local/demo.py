"""``regionha local demo``: the whole product, locally, in one command, with a report.

Phases: start the runtime → build (the build state machine) → resolve the record through every
forwarder path and the on-prem resolver, from the client site → teardown (the teardown state
machine) → stop. Every phase is timed; the JSON report says what happened, and the exit code
says whether all of it worked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionha import netguard
from regionha.canary import client_source, run_canary, truth_from_record
from regionha.converge.dns import read_record
from regionha.topology import Topology


@dataclass
class Phase:
    name: str
    ok: bool
    start: float
    end: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "seconds": round(self.end - self.start, 3),
            **self.detail,
        }


class Demo:
    """Runs the phases in order; a failed phase still lets teardown and stop run."""

    def __init__(self, runtime: Any, say: Callable[[str], None]):
        self.runtime = runtime
        self.say = say
        self.phases: list[Phase] = []
        self.report: dict[str, Any] = {"deployment": runtime.topology.deployment}

    def phase(self, name: str, fn: Callable[[], tuple[bool, dict[str, Any]]]) -> bool:
        self.say(f"▶ {name}")
        start = time.time()
        try:
            ok, detail = fn()
        except Exception as e:  # a phase that raises is a failed phase, reported, not a traceback
            ok, detail = False, {"error": f"{type(e).__name__}: {e}"}
        phase = Phase(name, ok, start, time.time(), detail)
        self.phases.append(phase)
        mark = "✔" if ok else "✘"
        self.say(f"{mark} {name} ({phase.end - phase.start:.1f} s){'' if ok else ': ' + _why(detail)}")
        return ok

    def build(self) -> tuple[bool, dict[str, Any]]:
        execution = self.runtime.build()
        self.report["build"] = execution.to_json()
        if execution.status != "SUCCEEDED":
            return False, {"status": execution.status, "error": execution.error, "cause": execution.cause}
        self.runtime.settle()
        summary = _summaries(execution.output)
        self.say(f"  built: {summary}")
        return True, {"status": execution.status, "execution": execution.name, "summary": summary}

    def resolve(self) -> tuple[bool, dict[str, Any]]:
        """Every path, probed from the client site's address, must answer the primary node's IP and
        that node must answer as itself."""
        topology: Topology = self.runtime.topology
        truth = truth_from_record(topology, read_record(topology, self.runtime.clients))
        run = run_canary(topology, truth, source=client_source(topology))
        for p in run.paths:
            mark = "✔" if p.success else "✘"
            self.say(
                f"  {mark} {p.path:<28} {p.outcome:<12} {','.join(p.answers) or '-':<14} "
                f"node={p.node or '-':<9} {p.latency_ms:7.1f} ms"
            )
        self.report["resolve"] = run.to_json()
        ok = truth.node == topology.primary.name and all(p.success for p in run.paths)
        return ok, {"truth": truth.ip, "node": truth.node, "paths": {p.path: p.success for p in run.paths}}

    def teardown(self) -> tuple[bool, dict[str, Any]]:
        execution = self.runtime.teardown()
        self.report["teardown"] = execution.to_json()
        ok = execution.status == "SUCCEEDED"
        return ok, {"status": execution.status, "error": execution.error, "cause": execution.cause}

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.phase("start the local runtime", lambda: (self.runtime.start() is not None, {}))
        try:
            if self.phases[-1].ok and self.phase("build (build state machine)", self.build):
                self.phase("resolve through every forwarder path", self.resolve)
            if self.phases[-1].name != "start the local runtime" or self.phases[-1].ok:
                self.phase("teardown (teardown state machine)", self.teardown)
        finally:
            self.phase("stop the local runtime", lambda: (self.runtime.stop() is None, {}))
        self.report["phases"] = [p.to_json() for p in self.phases]
        self.report["ok"] = all(p.ok for p in self.phases)
        self.report["seconds"] = round(time.time() - started, 3)
        self.report["local_addresses"] = {
            "onprem": netguard.to_local(str(self.runtime.topology.client.dns_server.ip)),
        }
        return self.report


def _summaries(output: Any) -> dict[str, int]:
    """Created/updated/unchanged counts over every step report of a build's output."""
    totals: dict[str, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("summary"), dict):
                for k, v in value["summary"].items():
                    totals[k] = totals.get(k, 0) + int(v)
                return
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(output)
    return totals


def _why(detail: dict[str, Any]) -> str:
    for key in ("error", "cause", "status"):
        if detail.get(key):
            return str(detail[key])[:300]
    return json.dumps(detail)[:300]


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
