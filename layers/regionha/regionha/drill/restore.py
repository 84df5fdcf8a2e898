"""Putting back what a drill broke: restore faults (each independently: paths first, then nodes, waiting
until each node is healthy), fail back to the primary (built-in mode), check every path; say in a
critical SNS notice what could not be put back. Idempotent: the state machine's Restore state, its
RestoreFailed state and the scheduled sweeper may all run, in any order.

IAM: as regionha.drill.faults' restore (ec2:StartInstances, ec2:DeleteNetworkAclEntry, ec2:DeleteTags,
ssm:SendCommand), route53:ChangeResourceRecordSets/GetChange (failback, built-in mode), sns:Publish.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.drill import faults
from regionha.drill.judge import TRUTH, health_text
from regionha.drill.planner import expect_paths, path_labels
from regionha.drill.probing import Prober
from regionha.drill.steps import NODE, PATH, DrillStepFailed
from regionha.errors import ConfigurationError, TransientError
from regionha.watch import canary

if TYPE_CHECKING:
    from regionha.topology import Topology


class Restorer(Prober):
    """Restore, failback and the critical notice; ``_switch`` moves the record (built-in mode)."""

    def _restore_faults(self, selected: list[dict[str, Any]], step: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Restore each fault (independently), wait for stopped nodes to be healthy, forget the restored.
        Returns (what was done, what is left broken)."""
        bounds = self.bounds
        record = self.load()
        done, broken = [], []
        for fault in sorted(selected, key=lambda f: f["kind"] != PATH):  # paths first: quick and safe
            try:
                outcome = faults.restore_fault(self.clients, fault)
                if fault["kind"] == NODE:
                    health = self._wait_healthy(fault["target"], bounds.rejoin_timeout)
                    outcome["health"] = health_text(health)
                    if not health["healthy"]:
                        broken.append(f"node {fault['target']} not healthy: {health_text(health)}")
                        done.append({"fault": faults.describe_fault(fault), **outcome})
                        continue
                else:
                    left = faults.remaining_entries(self.clients, fault)
                    if left:
                        broken.append(f"path {fault['target']}: NACL entries left: {', '.join(left)}")
                        continue
                self.store.forget(fault)
                record["events"].append({"t": round(time.time(), 3), "step": step, "event": "restore",
                                         "kind": fault["kind"], "target": fault["target"]})
                done.append({"fault": faults.describe_fault(fault), **outcome})
            except (ClientError, TransientError, ConfigurationError) as e:
                broken.append(f"{faults.describe_fault(fault)}: {type(e).__name__}: {e}")
        return done, broken

    def _restored_paths(self, step: str) -> dict[str, float]:
        """Canary label -> when its cut was restored, for the paths ``step`` restored."""
        labels = path_labels(self.topology)
        return {label: e["t"] for e in self.load()["events"]
                if e["event"] == "restore" and e["kind"] == PATH and e["step"] == step
                for label in labels.get(e["target"], [])}

    def restore(self, error: Any = None) -> dict[str, Any]:
        """Put everything back; idempotent; never raises for what it could not fix (it reports it)."""
        record = self.load()
        if error:
            record["error"] = error
        started = time.time()
        recorded = self.store.faults(self.execution)
        done, broken = self._restore_faults(recorded, "restore")
        result: dict[str, Any] = {"ok": False, "restored": done, "left_broken": broken, "failback": None}
        ran = bool(record.get("plan")) and self.settings is not None
        if not ran and not recorded:
            # Preflight refused: nothing was broken, so nothing is put back (not even the record).
            result |= {"ok": True, "note": "no step ran: nothing to restore", "seconds": 0.0}
            record["restore"] = result
            self.save()
            return {"ok": True, "left_broken": []}
        try:
            topology = self.topology
            settings = self.settings
            if settings is not None and settings.failback and not broken and ran:
                result["failback"] = self._failback(topology)
            if settings is not None and ran:
                try:
                    settled = self.observe("restore", expect_paths(topology, TRUTH), measure=False,
                                           timeout=settings.step_timeout, hold=False, stop_on_critical=False,
                                           restored=self._restored_paths("restore"))
                    result["paths"] = settled["last"]
                except DrillStepFailed as e:
                    broken.append(str(e))
        except (ConfigurationError, TransientError, ClientError) as e:
            broken.append(f"{type(e).__name__}: {e}")
        result["ok"] = not broken
        result["seconds"] = round(time.time() - started, 3)
        record["restore"] = result
        self.save()
        if broken:
            self.notify_critical(broken)
        return {"ok": result["ok"], "left_broken": broken}

    def _failback(self, topology: Topology) -> dict[str, Any]:
        primary = topology.primary.name
        truth = canary.read_truth(topology, self.clients)
        if truth.node == primary:
            return {"action": "none", "record": primary}
        if topology.failover.mode != "builtin":
            return {"action": "left to the cluster software (external mode)", "record": truth.node}
        health = self._wait_healthy(primary, self.bounds.rejoin_timeout)
        if not health["healthy"]:
            raise TransientError(f"failback: {primary} is not healthy: {health_text(health)}")
        self._switch(primary)
        return {"action": "moved", "from": truth.node, "to": primary}

    def restore_failed(self, error: Any, step_error: Any = None) -> dict[str, Any]:
        """Restore itself died: say loudly what is still recorded as broken."""
        left = [faults.describe_fault(f) for f in self.store.faults(self.execution)]
        broken = left or ["restore failed before it could check the faults"]
        record = self.load()
        if step_error and not record.get("error"):
            record["error"] = step_error
        record["restore"] = {"ok": False, "left_broken": broken, "error": error}
        self.save()
        self.notify_critical(broken, error)
        return {"ok": False, "left_broken": broken}

    def notify_critical(self, broken: list[str], error: Any = None) -> None:
        """IAM: sns:Publish."""
        if not self.env.topic:
            return
        lines = [f"CRITICAL: regionha drill {self.execution} on {self.deployment} could not restore everything.",
                 "Left broken:", *[f"- {b}" for b in broken]]
        if error:
            lines.append(f"restore error: {error}")
        lines.append("The scheduled fault sweeper retries recorded faults; check the deployment now.")
        self.clients.client("sns", self.env.region).publish(
            TopicArn=self.env.topic, Subject=f"CRITICAL: regionha drill left faults on {self.deployment}"[:100],
            Message="\n".join(lines))

    def _switch(self, node: str) -> None:
        """Point the record at ``node`` (built-in mode only): fenced like the failover controller's moves
        when that is available, so the controller sees the move as a newer generation."""
        try:
            from regionha.failover import manual_switch
        except ImportError:
            manual_switch = None
        if manual_switch is not None:
            manual_switch(self.topology, self.clients, node, table=self.env.table, table_region=self.env.region,
                          reason=f"drill {self.execution}")
        else:
            from regionha.converge.dns import upsert_record

            upsert_record(self.topology, self.clients, str(self.topology.node(node).ip))
