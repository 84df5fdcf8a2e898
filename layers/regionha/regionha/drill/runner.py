"""The drill's steps and the state machine's entry point: preflight (input, lock, healthy nodes, every
path on the record, the plan), one planned step at a time (``ensure_node``, ``observe``, ``inject``,
``rejoin``), and ``run_task``, which runs one typed task (regionha.drill.inputs) on a ``Drill``.

IAM: as regionha.drill (its docstring lists the drill function's actions).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.drill import faults, sweeper
from regionha.drill.inputs import (
    CheckAlarmsTask,
    DrillEnv,
    DrillSettings,
    PreflightTask,
    ReleaseLockTask,
    ReportTask,
    RestoreFailedTask,
    RestoreTask,
    StepTask,
    parse_task,
)
from regionha.drill.judge import TRUTH, brief, health_text, recovery_budget
from regionha.drill.lock import acquire_lock
from regionha.drill.planner import cut_addresses, expect_paths, plan
from regionha.drill.proof import ALARM
from regionha.drill.publish import Publisher
from regionha.drill.restore import Restorer
from regionha.drill.steps import ACCEPTANCE, ACCEPTANCE_STEPS, NODE, PREFLIGHT, DrillStepFailed
from regionha.errors import ConfigurationError, RegionhaError
from regionha.watch import canary

if TYPE_CHECKING:
    from collections.abc import Mapping

    from regionha.aws import Clients

# How long preflight re-checks a node that missed its first check before refusing the drill (s).
PREFLIGHT_SETTLE_SECONDS = 20.0


class Drill(Restorer, Publisher):
    """One execution's drill: its topology, settings and record; one method per state machine action."""

    def preflight(self, execution_arn: str | None) -> dict[str, Any]:
        assert self.settings is not None
        record = self.load()
        step = {"id": PREFLIGHT, "name": PREFLIGHT, "ok": False, "start": time.time(), "end": None, "detail": {}}
        record["steps"].append(step)
        try:
            acquire_lock(self.clients, self.env, self.deployment, self.execution, ttl=self.settings.lock_ttl,
                         execution_arn=execution_arn)
            topology = self.topology
            record |= {"mode": topology.failover.mode, "primary": topology.primary.name}
            health = {n.name: self.node_health(n.name) for n in topology.nodes}
            # A node just started (a previous drill's restore, a deploy) may take a few seconds to answer:
            # one missed check is re-checked, as the failover controller does, within a bound.
            settle_by = time.time() + min(self.settings.step_bound_max, PREFLIGHT_SETTLE_SECONDS)
            while not all(h["healthy"] for h in health.values()) and time.time() < settle_by:
                time.sleep(self.settings.poll_interval)
                health |= {name: self.node_health(name) for name, h in health.items() if not h["healthy"]}
            sick = [f"{n}: {health_text(h)}" for n, h in health.items() if not h["healthy"]]
            if sick:
                raise ConfigurationError(f"preflight: not every node is healthy: {'; '.join(sick)}"
                                         + self._left_broken())
            r = self._settled_round("preflight", tries=3)
            wrong = [f"{s['path']}: {brief(s)}" for s in r.samples if not s["success"]]
            if wrong:
                raise ConfigurationError(f"preflight: not every path resolves to the record ({r.truth}): "
                                         + "; ".join(wrong) + self._left_broken())
            leftovers = [f["sk"] for f in self.store.faults()]
            if leftovers:
                raise ConfigurationError(f"preflight: faults of earlier drills are still recorded: {leftovers}; "
                                         "wait for the sweeper or restore them first" + self._left_broken())
            record["alarm_baseline"] = dict(r.alarms)
            record["alarm_paths"] = self._alarm_paths()
            record["active_at_start"] = r.truth
            ttl = topology.dns.record.ttl
            record["plan"] = plan(topology, self.settings, r.truth)
            # The slowest step's recovery budget: the one with the most forwarder addresses cut.
            record["budget"] = recovery_budget(ttl, self.settings.detection_seconds,
                                               max((cut_addresses(s) for s in record["plan"]), default=0))
            step["ok"] = True
            step["detail"] = {"truth": r.truth, "mode": topology.failover.mode,
                              "nodes": {n: h["state"] for n, h in health.items()},
                              "critical_alarms_in_alarm": [n for n in self.alarms.critical_alarms
                                                           if r.alarms.get(n) == ALARM]}
        except Exception as e:
            step["detail"] = {"error": f"{type(e).__name__}: {e}"}
            raise
        finally:
            step["end"] = time.time()
            self.save()
        return self.context()

    def _left_broken(self) -> str:
        """What earlier drills left, for a refusal to name: recorded node faults, and every deny entry
        in the reserved NACL range, recorded or not. IAM: ec2:DescribeVpcs, ec2:DescribeNetworkAcls."""
        try:
            recorded = self.store.faults()
            lines = [f"{faults.describe_fault(f)} left by drill {f.get('execution')}" for f in recorded
                     if f["kind"] == NODE]
            lines += sweeper.left_in_reserved_range(self.topology, self.clients, recorded)
        except (ClientError, RegionhaError) as e:
            return f"; could not look for what drills left behind: {e}"
        return "; left broken: " + "; ".join(lines) if lines else ""

    def context(self) -> dict[str, Any]:
        """The small state the state machine carries ($.drill)."""
        assert self.settings is not None
        return {"execution": self.execution, "execution_arn": self.execution_arn, "deployment": self.deployment,
                "scenario": self.settings.scenario, "settings": self.settings.to_json(),
                "steps": [s["id"] for s in self.load()["plan"]],
                # Steps beyond the state machine's named acceptance states, run one at a time by its Map.
                "more_steps": [s["id"] for s in self.load()["plan"]
                               if self.settings.scenario == ACCEPTANCE and s["id"] not in ACCEPTANCE_STEPS]}

    def run_step(self, step_id: str) -> dict[str, Any]:
        record = self.load()
        spec = next((s for s in record["plan"] if s["id"] == step_id), None)
        if spec is None:
            raise ConfigurationError(
                f"step {step_id!r} is not in this drill's plan ({[s['id'] for s in record['plan']]})")
        step = {"id": step_id, "name": spec["name"], "ok": False, "start": time.time(), "end": None, "detail": {}}
        record["steps"] = [s for s in record["steps"] if s["id"] != step_id] + [step]  # a retry replaces
        try:
            step["detail"] = getattr(self, f"_step_{spec['kind']}")(spec)
            step["ok"] = True
        except Exception as e:
            step["detail"] = {**step["detail"], "error": f"{type(e).__name__}: {e}"}
            raise
        finally:
            step["end"] = time.time()
            self.save()
        return {"step": step_id, "ok": True}

    def _step_ensure_node(self, spec: dict[str, Any]) -> dict[str, Any]:
        node = spec["node"]
        truth = canary.read_truth(self.topology, self.clients)
        if truth.node == node:
            return {"record": truth.ip, "changed": False}
        if self.topology.failover.mode != "builtin":
            raise ConfigurationError(
                f"external mode: the record names {truth.node or truth.ip}, not {node}; regionha never writes it: "
                f"move the failover group to {node} with the cluster software, then start the drill again")
        health = self.node_health(node)
        if not health["healthy"]:
            raise DrillStepFailed(f"{node} is not healthy ({health_text(health)}): cannot name it in the record")
        self._switch(node)
        return {"record": str(self.topology.node(node).ip), "changed": True, "was": truth.node}

    def _step_observe(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.settings is not None
        return self.observe(spec["id"], spec["expect"], measure=bool(spec.get("measure")),
                            timeout=self.settings.step_timeout, hold=bool(spec.get("measure")))

    def _step_inject(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.settings is not None
        record = self.load()
        prepared = []
        for want in spec["faults"]:
            if want["kind"] == NODE:
                fault = faults.node_fault(self.topology, self.clients, want["target"], self.settings.cluster_action)
            else:
                fault = faults.path_fault(self.topology, self.clients, want["target"], self.settings.cut)
                faults.check_path_fault(self.clients, fault)  # refuse before anything is broken
            prepared.append(fault)
        existing = {f["sk"]: f for f in self.store.faults(self.execution)}
        if not any(f.get("step") == spec["id"] and f.get("applied_at") for f in existing.values()):
            # What every path answered before this fault: only a path whose answer must change recovers.
            record["answer_before_fault"] = canary.read_truth(self.topology, self.clients).node
        applied, first = [], None
        for fault in prepared:
            fault = {**fault, "execution": self.execution, "execution_arn": self.execution_arn, "step": spec["id"]}
            key = faults.fault_key(self.execution, fault["kind"], fault["target"])
            if key in existing and existing[key].get("applied_at"):
                # A retry: the fault is in place; a cluster action must not run twice.
                fault, outcome = existing[key], {"already": True}
            else:
                fault = self.store.record(fault, ttl_seconds=self.settings.fault_ttl)
                outcome = faults.apply_fault(self.clients, fault)
            if not fault.get("applied_at"):
                fault["applied_at"] = time.time()
                self.store.record(fault, ttl_seconds=fault["expires_at"] - fault["recorded_at"],
                                  now=fault["recorded_at"])
                record["events"].append({"t": round(fault["applied_at"], 3), "step": spec["id"], "event": "fault",
                                         "kind": fault["kind"], "target": fault["target"]})
            first = fault["applied_at"] if first is None else min(first, fault["applied_at"])
            applied.append({"fault": faults.describe_fault(fault), **outcome})
        record["fault_time"] = first
        return {"faults": applied, "fault_time": first}

    def _step_rejoin(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.settings is not None
        wanted = {(f["kind"], f["target"]) for f in spec["faults"]}
        selected = [f for f in self.store.faults(self.execution) if (f["kind"], f["target"]) in wanted]
        done, broken = self._restore_faults(selected, spec["id"])
        if broken:
            raise DrillStepFailed(f"{spec['id']}: {'; '.join(broken)}")
        # Back to normal before the next fault: every path answers the record and its node answers.
        settled = self.observe(spec["id"], expect_paths(self.topology, TRUTH), measure=False,
                               timeout=self.settings.step_timeout, hold=False, stop_on_critical=False,
                               restored=self._restored_paths(spec["id"]))
        return {"restored": done, "settled": settled["last"]}


def run_task(task: Any, clients: Clients, env: DrillEnv) -> dict[str, Any]:
    """Run one typed task of the drill state machine (regionha.drill.inputs.parse_task) and return the
    state's small result. Errors keep their classes for the state machine's Retry and Catch."""
    state = task.state
    context = state.context(env.deployment)
    if isinstance(task, PreflightTask):
        settings = DrillSettings.from_input(state.drill_input(), env.deployment)
        context |= {"settings": settings.to_json()}
        return Drill(clients, env, context).preflight(context.get("execution_arn"))
    drill = Drill(clients, env, context)
    if isinstance(task, StepTask):
        return drill.run_step(task.step)
    if isinstance(task, RestoreTask):
        return drill.restore(state.error)
    if isinstance(task, RestoreFailedTask):
        return drill.restore_failed(state.restore_error, state.error)
    if isinstance(task, CheckAlarmsTask):
        return drill.check_alarms()
    if isinstance(task, ReportTask):
        return drill.report()
    if isinstance(task, ReleaseLockTask):
        return drill.release()
    raise ConfigurationError(f"not a drill task: {type(task).__name__}")


def run_action(action: str, event: Mapping[str, Any], clients: Clients, env: DrillEnv) -> dict[str, Any]:
    """``run_task`` from the raw event: ``{"action", "step"?, "state": the execution's state}``."""
    return run_task(parse_task({**event, "action": action}), clients, env)
