"""``regionha local demo``: the whole product, locally, in one command, with a report.

Phases: start the runtime → build (the build state machine) → resolve the record through every
forwarder path and the on-prem resolver, from the client site → canary (scheduled runs on the healthy
deployment, the alarms the build made) → acceptance drill (which cuts paths and stops nodes, and
proves that their alarms go to ALARM and back to OK while the critical alarm stays OK) → teardown
(the teardown state machine) → stop. Every phase is timed; the JSON report says what happened, and the
exit code says whether all of it worked.

The output is a short progress list: one line per phase with what it showed, and one line per drill
step as it ends (read live from the execution history). The drill's own report is kept under
``out/`` (``drill-report.json`` and ``drill-report.html``, the page the drill stored in S3) because the
emulated bucket is gone after teardown. Scheduled rules are disabled while the build runs, so that
nothing scheduled fires before the build has saved its inventory (as an operator would do on AWS)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from regionha import netguard
from regionha.aws import deployment_filter
from regionha.cli.executions import details, new_events, outcome_counts
from regionha.converge.dns import read_record
from regionha.converge.watch import interconnect_alarm_names
from regionha.topology import Topology
from regionha.watch.alarms import (
    alarm_name,
    alarm_prefix,
    canary_alarm_intents,
    composite_name,
    dashboard_name,
    path_down,
    watched_alarm_names,
)
from regionha.watch.canary import canary_targets, client_source, run_canary, truth_from_record


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

    def __init__(self, runtime: Any, say: Callable[[str], None], out_dir: Path = Path("out")):
        self.runtime = runtime
        self.say = say
        self.out_dir = Path(out_dir)
        self.phases: list[Phase] = []
        self.report: dict[str, Any] = {"deployment": runtime.topology.deployment}
        self._said = ""  # the one-line summary of the running phase
        self._schedules_since: datetime | None = None
        # The runtime's own progress is for `local up`; here only what needs action is shown.
        runtime.progress = lambda text: say(f"  {text}") if text.startswith("removed") else None

    def phase(self, name: str, fn: Callable[[], tuple[bool, dict[str, Any]]]) -> bool:
        start = time.time()
        self._said = ""
        try:
            ok, detail = fn()
        except Exception as e:  # a phase that raises is a failed phase, reported, not a traceback
            ok, detail = False, {"error": f"{type(e).__name__}: {e}"}
        phase = Phase(name, ok, start, time.time(), detail)
        self.phases.append(phase)
        mark = "✔" if ok else "✘"
        what = self._said if ok else _why(detail)
        self.say(f"{mark} {name} ({phase.end - phase.start:.1f} s)" + (f": {what}" if what else ""))
        return ok

    def start(self) -> tuple[bool, dict[str, Any]]:
        rt = self.runtime
        started = rt.start() is not None
        self._said = (f"{len(rt.stack.functions)} functions, {len(rt.stack.state_machines)} state machines; "
                      f"DNS and nodes on loopback, clock {rt.compression:g}x")
        return started, {}

    def build(self) -> tuple[bool, dict[str, Any]]:
        with held_schedules(self.runtime) as paused:
            execution = self.runtime.build()
        self._schedules_since = self.runtime.clock.now()  # the canary's clean minutes count from here
        self.report["build"] = execution.to_json()
        if execution.status != "SUCCEEDED":
            return False, {"status": execution.status, "error": execution.error, "cause": execution.cause}
        self.runtime.settle()
        summary = outcome_counts(execution.output)
        first = first_round_text((execution.output or {}).get("first_canary_round"))
        self._said = ", ".join(f"{v} {k}" for k, v in sorted(summary.items()) if v) + (
            f"; {len(paused)} schedules held until the inventory was saved" if paused else "") + f"; {first}"
        return True, {"status": execution.status, "execution": execution.name, "summary": summary,
                      "first_canary_round": first}

    def resolve(self) -> tuple[bool, dict[str, Any]]:
        """Every path, probed from the client site's address, must answer the primary node's IP and
        that node must answer as itself."""
        topology: Topology = self.runtime.topology
        truth = truth_from_record(topology, read_record(topology, self.runtime.clients))
        run = run_canary(topology, truth, source=client_source(topology))
        for p in run.paths:
            if not p.success:
                self.say(f"  ✘ {p.path}: {p.outcome} {','.join(p.answers) or '-'} node={p.node or '-'}")
        self.report["resolve"] = run.to_json()
        ok = truth.node == topology.primary.name and all(p.success for p in run.paths)
        good = sum(p.success for p in run.paths)
        self._said = (f"{good} of {len(run.paths)} probe targets (each forwarder path address, the on-prem "
                      f"resolver) answer {truth.node} ({truth.ip}), and its service port answers")
        return ok, {"truth": truth.ip, "node": truth.node, "paths": {p.path: p.success for p in run.paths}}

    def canary(self) -> tuple[bool, dict[str, Any]]:
        """The scheduled canary for a few emulated minutes on the healthy deployment: it runs every
        minute, raises no alarm, the alarms the build made are the ones the topology calls for, and the
        ones the drill proves have left their warm-up, OK (else "no alarm fired" would prove nothing).
        It lasts until that is shown (``CLEAN_RUNS``), bounded.

        That a cut path's alarm goes to ALARM and back to OK while the critical alarm stays OK is proven
        once, by the drill that follows (its alarm proof), not twice."""
        rt = self.runtime
        topology: Topology = rt.topology
        # The schedules run since the build ended (the resolve phase ran meanwhile): count from there.
        since = self._schedules_since or rt.clock.now()
        drilled = watched_alarm_names(topology)
        # Until CLEAN_RUNS scheduled runs have passed and the drill's alarms have left their warm-up, OK
        # (a window after the schedule's first round): no fixed wait past what proves it.
        evaluated = self._evaluated_ok(drilled, since, CLEAN_MINUTES + WARM_UP_GRACE_MINUTES)
        runs = len([d for d in _canary_runs(rt) if d.time >= since])
        fired = [t for t in rt.alarm_transitions(since) if t["new"] == "ALARM"]
        critical = composite_name(topology.deployment)
        # The alarms are the build's, made from the topology (ConvergeWatch): one per path and node.
        made = sorted(n for n in rt.alarm_states() if n.startswith(alarm_prefix(topology.deployment)))
        wanted = sorted([alarm_name(topology.deployment, i.suffix) for i in canary_alarm_intents(topology)]
                        + interconnect_alarm_names(topology) + [critical])
        detail: dict[str, Any] = {
            "clean_runs": runs,
            "clean_alarms_fired": fired,
            "critical_fired": [t for t in fired if t["alarm"] == critical],
            "alarms_made": made,
            "alarms_missing": sorted(set(wanted) - set(made)),
            "alarms_unexpected": sorted(set(made) - set(wanted)),
            # The drill's alarms out of their warm-up and OK; the others may still be warming up.
            "drilled_alarms_not_ok": {n: s for n, s in evaluated.items() if s != "OK"},
            "alarms_in_warm_up": self._in_warm_up(),
        }
        self.report["canary"] = detail
        self._said = (f"{runs} runs, {len(fired)} alarms fired, {len(drilled) - len(detail['drilled_alarms_not_ok'])}"
                      f" of {len(drilled)} path and node alarms out of warm-up and OK; the build made {len(made)} "
                      f"alarms ({len(canary_targets(topology))} probe targets, {len(topology.nodes)} nodes) and the "
                      f"dashboard {dashboard_name(topology.deployment)}")
        return (runs >= CLEAN_RUNS and not fired and made == wanted
                and not detail["drilled_alarms_not_ok"]), detail

    def _describe_alarms(self) -> dict[str, dict[str, Any]]:
        rt = self.runtime
        cw = rt.clients.client("cloudwatch", rt.region)
        return {a["AlarmName"]: a for page in cw.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=alarm_prefix(rt.topology.deployment)) for a in page["MetricAlarms"]}

    def _in_warm_up(self) -> list[str]:
        return sorted(n for n, a in self._describe_alarms().items() if a.get("EvaluationState") == "IN_WARM_UP")

    def _evaluated_ok(self, names: list[str], since: datetime, minutes: float) -> dict[str, str]:
        """Wait until ``CLEAN_RUNS`` scheduled canary runs have passed since ``since`` and every alarm of
        ``names`` is OK (so out of its warm-up), at most ``minutes`` emulated minutes after ``since``;
        their states (IN_WARM_UP for one still warming up)."""
        rt = self.runtime
        end = since + timedelta(minutes=minutes)
        while True:
            alarms = self._describe_alarms()
            states = {n: ("IN_WARM_UP" if (alarms.get(n) or {}).get("EvaluationState") == "IN_WARM_UP"
                          else (alarms.get(n) or {}).get("StateValue", "missing")) for n in names}
            runs = len([d for d in _canary_runs(rt) if d.time >= since])
            if (runs >= CLEAN_RUNS and all(v == "OK" for v in states.values())) or rt.clock.now() >= end:
                return states
            time.sleep(0.25)

    def drill(self) -> tuple[bool, dict[str, Any]]:
        """The article's acceptance procedure as the drill state machine runs it, on this runtime;
        one line per step as it ends, its report kept under ``out_dir``."""
        rt = self.runtime
        execution = self._run_drill(drill_input(rt.topology, rt.compression))
        report = drill_report_of(rt, execution)
        recovery = report.get("recovery_seconds") or {}
        kept = self._keep_report(rt, execution, report)
        self.report["drill"] = {
            "status": report.get("status", "FAILED"),
            "execution": execution.name,
            "execution_status": execution.status,
            "steps": [
                {"name": s.get("name"), "ok": bool(s.get("ok")), "start": s.get("start"), "end": s.get("end")}
                for s in report.get("steps", [])
            ],
            # Keyed as the drill keys it (path@node): the same figures as its report page.
            "recovery_seconds": recovery,
            "budget": report.get("budget"),
            "alarm_proof": report.get("alarm_proof"),
            "alarms": report.get("alarms"),
            "restore": report.get("restore"),
            "error": report.get("error") or execution.error,
            **kept,
        }
        from regionha.drill.report import budget

        limit, _ = budget(report)
        figures = [v for v in recovery.values() if isinstance(v, int | float)]
        span = (f"recovery {min(figures):.1f}–{max(figures):.1f} s" if figures else "no recovery measured") + (
            f" (budget {limit:g} s)" if limit is not None else "")
        self._said = f"{self.report['drill']['status']}, {span}; {_alarm_proof_text(report)}"
        if kept.get("report_html"):
            self._said += f"; report {kept['report_html']}"
        ok = self.report["drill"]["status"] == "PASSED"
        return ok, {"status": self.report["drill"]["status"], "recovery_seconds": recovery,
                    "error": self.report["drill"]["error"]}

    def _run_drill(self, payload: dict[str, Any], timeout: float = 600.0) -> Any:
        """Start the drill and print each of its steps as it ends (from the execution history)."""
        from regionha.local.runtime import Execution

        rt = self.runtime
        sfn = rt.clients.client("stepfunctions", rt.region)
        name = f"drill-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        arn = sfn.start_execution(stateMachineArn=rt.state_machine_arn("DrillStateMachine"), name=name,
                                  input=json.dumps(payload))["executionArn"]
        entered: dict[str, Any] = {}
        last_id = 0
        read_at = 0.0
        while True:
            desc = sfn.describe_execution(executionArn=arn)
            # The emulator returns the whole history on every call (its JSON grows with every step), in
            # the process the handlers run in: read it once a second, and once more at the end.
            ended = desc["status"] != "RUNNING"
            if not ended and time.monotonic() - read_at < HISTORY_SECONDS:
                time.sleep(STATUS_SECONDS)
                continue
            read_at = time.monotonic()
            for event in new_events(sfn, arn, last_id):
                last_id = event["id"]
                kind, info = event.get("type", ""), details(event)
                if kind == "TaskStateEntered":
                    entered[info.get("name")] = event["timestamp"]
                elif kind == "TaskStateExited" and info.get("name") in entered:
                    took = (event["timestamp"] - entered.pop(info["name"])).total_seconds()
                    self.say(f"  · {info['name']} ({took:.1f} s)")
                elif kind in ("LambdaFunctionFailed", "TaskFailed"):
                    from regionha.drill.report import error_text

                    self.say(f"  ✘ {error_text({'Error': info.get('error'), 'Cause': info.get('cause')}, 160)}")
            if ended:
                break
            if time.monotonic() - started > timeout:
                sfn.stop_execution(executionArn=arn, error="LocalTimeout", cause=f"over {timeout} s")
                desc = sfn.describe_execution(executionArn=arn)
                break
        output = json.loads(desc["output"]) if desc.get("output") else None
        return Execution("drill", name, arn, desc["status"], time.monotonic() - started, output,
                         desc.get("error"), desc.get("cause"))

    def _keep_report(self, rt: Any, execution: Any, report: dict[str, Any]) -> dict[str, str | None]:
        """Copy the drill's report (JSON, and the HTML page it stored) to ``out_dir``: the bucket goes
        with the teardown."""
        from regionha.drill.report import render_html

        self.out_dir.mkdir(parents=True, exist_ok=True)
        json_path, html_path = self.out_dir / "drill-report.json", self.out_dir / "drill-report.html"
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        page = None
        pointer = str((execution.output or {}).get("html") or "")
        if pointer.startswith("s3://"):
            bucket, _, key = pointer[5:].partition("/")
            page = rt.clients.client("s3", rt.region).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        html_path.write_text(page or render_html(report), encoding="utf-8")
        return {"report_json": str(json_path), "report_html": str(html_path)}

    def teardown(self) -> tuple[bool, dict[str, Any]]:
        # Nothing is left to watch: scheduled functions, and the controller told of the nodes the teardown
        # terminates, would only fail on what the teardown removes.
        set_schedules(self.runtime, enabled=False, events_too=True)
        # ... and one already running (the controller checks the nodes for the rest of its minute).
        self.runtime.aws.wait_for_events(10)
        execution = self.runtime.teardown()
        self.report["teardown"] = execution.to_json()
        ok = execution.status == "SUCCEEDED"
        return ok, {"status": execution.status, "error": execution.error, "cause": execution.cause}

    def run(self, on_stop: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """All phases; ``on_stop()`` is called just before the runtime stops (the CLI stops taking
        signals as interruptions there, so that stopping is never cut short)."""
        started = time.time()
        topology: Topology = self.runtime.topology
        addresses = len(canary_targets(topology)) - 1  # every target but the on-prem resolver
        self.say(f"regionha local demo: deployment {topology.deployment}, {len(topology.forwarder_paths)} forwarder "
                 f"paths ({addresses} addresses) and the on-prem resolver, record TTL {topology.dns.record.ttl} s; "
                 f"about a minute")
        self.phase("start the local runtime", self.start)
        try:
            if self.phases[-1].ok and self.phase("build (build state machine)", self.build):
                self.phase("resolve through every forwarder path", self.resolve)
                self.phase("canary: scheduled runs on the healthy deployment", self.canary)
                self.phase("drill: the acceptance procedure (drill state machine)", self.drill)
            if self.phases[-1].name != "start the local runtime" or self.phases[-1].ok:
                self.phase("teardown (teardown state machine)", self.teardown)
        finally:
            on_stop()
            self.phase("stop the local runtime", lambda: (self.runtime.stop() is None, {}))
        self.report["phases"] = [p.to_json() for p in self.phases]
        self.report["ok"] = all(p.ok for p in self.phases)
        self.report["seconds"] = round(time.time() - started, 3)
        self.report["local_addresses"] = {
            "onprem": netguard.to_local(str(self.runtime.topology.client.dns_server.ip)),
        }
        return self.report


# The clean phase: at least this many scheduled canary runs (one an emulated minute) on the healthy
# deployment, none raising an alarm, and the drill's alarms out of their warm-up and OK; given up on
# after CLEAN_MINUTES + WARM_UP_GRACE_MINUTES emulated minutes (a failed phase then).
CLEAN_RUNS = 3
CLEAN_MINUTES = 4
WARM_UP_GRACE_MINUTES = 2
# How often the drill's execution history is read for its progress lines (each line carries the step's
# own times from the history, so a later read changes no figure).
HISTORY_SECONDS = 1.0
# How often the drill's status is read between history reads: each read is a request the emulator
# serves in this process, competing with the drill's own Lambdas for the two cores.
STATUS_SECONDS = 0.5


def set_schedules(rt: Any, *, enabled: bool, events_too: bool = False) -> list[str]:
    """Disable (or enable again) the scheduled rules of the runtime's region (with ``events_too``, the
    event-pattern rules as well: EC2 state changes to the controller); their names.

    IAM: events:ListRules, events:DisableRule, events:EnableRule.
    """
    events = rt.clients.client("events", rt.region)
    names = [r["Name"] for page in events.get_paginator("list_rules").paginate()
             for r in page["Rules"] if events_too or r.get("ScheduleExpression")]
    for name in names:
        (events.enable_rule if enabled else events.disable_rule)(Name=name)
    return names


@contextlib.contextmanager
def held_schedules(rt: Any) -> Iterator[list[str]]:
    """Scheduled rules disabled for the block (a build): before the build has saved its inventory the
    canary, the health check and the audit can only fail, as an operator on AWS would avoid too."""
    names = set_schedules(rt, enabled=False)
    try:
        yield names
    finally:
        set_schedules(rt, enabled=True)


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


def drill_input(topology: Topology, compression: float = 20.0) -> dict[str, Any]:
    """Bounds fit for the local runtime: every wait is an input of the drill."""
    ttl = topology.dns.record.ttl
    return {
        # The health check runs every emulated minute: that many real seconds at this compression.
        "detection_seconds": round(60 / compression, 3),
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


def _alarm_proof_text(report: dict[str, Any]) -> str:
    """One phrase from the drill's alarm proof: which path alarms fired during their cuts and cleared,
    and whether a critical alarm fired."""
    alarms = report.get("alarms") or {}
    cut = sorted({a["path"].split("/")[0] for a in alarms.values()
                  if not a.get("critical") and a.get("path") and a.get("fired_during_fault")})
    cleared = all(a.get("ok_after_restore") for a in alarms.values() if not a.get("critical"))
    critical = [n for n, a in alarms.items() if a.get("critical") and a.get("fired")]
    if not alarms:
        return "no alarm checked"
    return (f"alarms of the cut paths ({', '.join(cut) or 'none'}) ALARM then {'OK' if cleared else 'NOT OK'}, "
            f"critical {'FIRED: ' + ', '.join(critical) if critical else 'stayed OK'}")


def first_round_text(result: Any) -> str:
    """The build's FirstCanaryRound in a phrase: how many rounds until everything answered, or that it
    never did (the alarms warm up either way; a path or node still down pages once its window fills)."""
    if not isinstance(result, dict):
        return "no first canary round"
    if result.get("Error"):
        return f"first canary round failed: {result['Error']}"
    rounds = result.get("rounds", 0)
    if result.get("all_succeeded"):
        return f"every path and node answered the first canary round ({rounds} round{'s' * (rounds != 1)})"
    down = sorted(p for p, ok in (result.get("paths") or {}).items() if not ok)
    return f"first canary round: {', '.join(down) or 'a node'} still failing after {rounds} rounds"


def _why(detail: dict[str, Any]) -> str:
    for key in ("error", "cause", "status"):
        if detail.get(key):
            return str(detail[key])[:300]
    return json.dumps(detail)[:300]


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
