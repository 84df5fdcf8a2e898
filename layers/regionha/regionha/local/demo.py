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
from regionha.alarms import (
    alarm_name,
    alarm_prefix,
    canary_alarm_intents,
    composite_name,
    dashboard_name,
    path_down,
)
from regionha.aws import deployment_filter
from regionha.canary import canary_targets, client_source, run_canary, truth_from_record
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

    def canary(self) -> tuple[bool, dict[str, Any]]:
        """The scheduled canary for a few emulated minutes: a clean run raises no alarm; a cut path's
        alarm goes to ALARM and back to OK after restore while the critical alarm stays OK."""
        rt = self.runtime
        topology: Topology = rt.topology
        since = rt.clock.now()
        runs_before = len(_canary_runs(rt))
        rt.wait_emulated(CLEAN_MINUTES)
        runs = len(_canary_runs(rt)) - runs_before
        fired = [t for t in rt.alarm_transitions(since) if t["new"] == "ALARM"]
        self.say(f"  clean run: {runs} scheduled canary runs in {CLEAN_MINUTES} emulated minutes, "
                 f"{len(fired)} alarms fired")
        detail: dict[str, Any] = {"clean_runs": runs, "clean_alarms_fired": fired}
        ok = runs >= CLEAN_MINUTES - 1 and not fired
        # The alarms are the build's, made from the topology (ConvergeWatch): one per path and node.
        made = sorted(n for n in rt.alarm_states() if n.startswith(alarm_prefix(topology.deployment)))
        wanted = sorted([alarm_name(topology.deployment, i.suffix) for i in canary_alarm_intents(topology)]
                        + [composite_name(topology.deployment)])
        self.say(f"  the build made {len(made)} alarms for {len(canary_targets(topology))} paths and "
                 f"{len(topology.nodes)} nodes, and the dashboard {dashboard_name(topology.deployment)}")
        detail["alarms_made"] = made
        ok = ok and made == wanted

        names = [p.name for p in topology.forwarder_paths]
        path = CUT_PATH if CUT_PATH in names else names[-1]
        alarm = path_alarm_name(topology, path)
        critical = composite_name(topology.deployment)
        self.say(f"  cutting forwarder path {path} (network ACL deny from the client network)")
        cut_at = rt.clock.now()
        set_path_cut(rt, path, cut=True)
        try:
            alarmed = rt.wait_alarm(alarm, "ALARM", minutes=6)
            states = rt.alarm_states()
            self.say(f"  {alarm}: {states.get(alarm)}; {critical}: {states.get(critical)}")
        finally:
            set_path_cut(rt, path, cut=False)
        restored = rt.wait_alarm(alarm, "OK", minutes=6)
        after = rt.alarm_states()
        critical_fired = [t for t in rt.alarm_transitions(cut_at) if t["alarm"] == critical and t["new"] == "ALARM"]
        self.say(f"  restored: {alarm}: {after.get(alarm)}; critical fired: {bool(critical_fired)}")
        detail.update(
            {
                "cut_path": path,
                "path_alarm": alarm,
                "path_alarm_fired": alarmed,
                "path_alarm_ok_after_restore": restored,
                "critical_fired": critical_fired,
                "transitions": rt.alarm_transitions(since),
            }
        )
        self.report["canary"] = detail
        return ok and alarmed and restored and not critical_fired, {
            k: v for k, v in detail.items() if k != "transitions"
        }

    def drill(self) -> tuple[bool, dict[str, Any]]:
        """The article's acceptance procedure as the drill state machine runs it, on this runtime."""
        rt = self.runtime
        execution = rt.run_state_machine("DrillStateMachine", drill_input(rt.topology), kind="drill", timeout=600)
        report = drill_report_of(rt, execution)
        recovery = _recovery_by_path(report)
        self.report["drill"] = {
            "status": report.get("status", "FAILED"),
            "execution": execution.name,
            "execution_status": execution.status,
            "steps": [
                {"name": s.get("name"), "ok": bool(s.get("ok")), "start": s.get("start"), "end": s.get("end")}
                for s in report.get("steps", [])
            ],
            "recovery_seconds": recovery,
            "recovery_by_step": report.get("recovery_seconds", {}),
            "alarm_proof": report.get("alarm_proof"),
            "alarms": report.get("alarms"),
            "restore": report.get("restore"),
            "error": report.get("error") or execution.error,
            "report_json": (execution.output or {}).get("json"),
            "report_html": (execution.output or {}).get("html"),
        }
        for s in report.get("steps", []):
            seconds = (s.get("end") or 0) - (s.get("start") or 0)
            self.say(f"  {'✔' if s.get('ok') else '✘'} {s.get('name')} ({max(seconds, 0):.1f} s)")
        for path, seconds in recovery.items():
            self.say(f"  recovery {path}: {seconds:.2f} s")
        self.say(f"  drill {self.report['drill']['status']}")
        ok = self.report["drill"]["status"] == "PASSED"
        return ok, {"status": self.report["drill"]["status"], "recovery_seconds": recovery,
                    "error": self.report["drill"]["error"]}

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
                self.phase("canary: scheduled runs, alarms on a cut path", self.canary)
                self.phase("drill: the acceptance procedure (drill state machine)", self.drill)
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


CLEAN_MINUTES = 4
CUT_PATH = "osaka-bind"


def path_alarm_name(topology: Topology, path_label: str) -> str:
    """The per-path alarm's name, as the build's ConvergeWatch names it."""
    return alarm_name(topology.deployment, path_down(path_label).suffix)


def _canary_runs(rt: Any) -> list[Any]:
    return [d for d in rt.schedules.log.all() if "Canary" in d.rule and d.ok]


def set_path_cut(rt: Any, path_name: str, *, cut: bool, topology: Topology | None = None) -> None:
    """Deny (or allow again) the client network on a forwarder path's subnet network ACL (of the
    runtime's topology, or of ``topology``: another deployment built in the same runtime)."""
    topology = topology or rt.topology
    path = next(p for p in topology.forwarder_paths if p.name == path_name)
    subnets = {e.subnet for e in path.ips} if path.kind == "resolver_endpoint" else {path.subnet}
    ec2 = rt.clients.ec2(topology.region_of(path.vpc))
    acls = {}
    for subnet in sorted(subnets):
        found = ec2.describe_subnets(Filters=deployment_filter(topology.deployment, subnet))["Subnets"]
        subnet_id = found[0]["SubnetId"]
        acl = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])[
            "NetworkAcls"
        ][0]
        acls[acl["NetworkAclId"]] = acl  # an endpoint's subnets may share one network ACL
    for acl in acls.values():
        if cut:
            ec2.create_network_acl_entry(
                NetworkAclId=acl["NetworkAclId"], RuleNumber=DEMO_RULE, Protocol="-1", RuleAction="deny",
                Egress=False, CidrBlock=str(topology.client.cidr),
            )
        else:
            ec2.delete_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=DEMO_RULE, Egress=False)
    rt.settle()


# Below the default network ACL's allow-all rule 100: entries are evaluated in rule-number order.
DEMO_RULE = 91


def drill_input(topology: Topology) -> dict[str, Any]:
    """Bounds fit for the local runtime: every wait is an input of the drill."""
    ttl = topology.dns.record.ttl
    return {
        "scenario": "acceptance",
        "poll_interval": 0.25,
        # The on-prem resolver caches for the TTL; the controller's hold-down runs on the emulated clock.
        "step_timeout": ttl + 30,
        "alarm_timeout": 30,
        "alarm_ok_timeout": 30,
        "rejoin_timeout": 30,
        "probe_timeout": 0.5,
        "failback": True,
    }


def drill_report_of(rt: Any, execution: Any) -> dict[str, Any]:
    """The drill's report: its JSON in the reports bucket, named by the execution's output."""
    pointer = str((execution.output or {}).get("json") or "")
    if pointer.startswith("s3://"):
        bucket, _, key = pointer[5:].partition("/")
    else:  # a failed execution ends in a Fail state, which has no output: the report has its usual key
        bucket = rt.stack.physical_id("ReportsBucket")
        key = f"reports/{rt.topology.deployment}/{execution.name}.json"
    try:
        body = rt.clients.client("s3", rt.region).get_object(Bucket=bucket, Key=key)["Body"].read()
    except rt.clients.client("s3", rt.region).exceptions.NoSuchKey:
        return {"status": "FAILED", "error": execution.error or "the drill wrote no report", "steps": []}
    return json.loads(body)


def _recovery_by_path(report: dict[str, Any]) -> dict[str, float]:
    """Path → the longest recovery the drill measured on it (a path can recover more than once)."""
    out: dict[str, float] = {}
    for r in report.get("recovery", []):
        out[r["path"]] = max(out.get(r["path"], 0.0), float(r["seconds"]))
    return out


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
