"""Probing during a drill: node health, one round of samples (every path through the canary's probe
library, the record, the alarms), and ``observe``, the bounded loop every observing step, rejoin and
restore use. Judging is regionha.drill.judge's; this module only measures and records.

IAM: ec2:DescribeInstances, cloudwatch:DescribeAlarms, lambda:InvokeFunction (the canary function,
when ``PROBE_FUNCTION`` is set; on a real on-prem site sqs:GetQueueUrl, sqs:SendMessage and
dynamodb:GetItem instead: the on-prem agent probes), route53 reads of the record (canary.read_truth).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regionha.drill import faults
from regionha.drill.inputs import PROBE_OVERRIDES
from regionha.drill.judge import CUT, RecoveryClock, all_met, brief, cut_labels, measured_paths, recovery_budget, unmet
from regionha.drill.planner import path_labels
from regionha.drill.proof import ALARM, alarm_path
from regionha.drill.steps import PATH, DrillAborted, DrillStepFailed
from regionha.drill.store import DrillBase
from regionha.errors import TransientError
from regionha.watch import agent_requests, canary

_DESCRIBE_ALARMS_MAX = 100


@dataclass
class Round:
    t: float
    samples: list[dict[str, Any]]
    alarms: dict[str, str]
    truth: str | None


class Prober(DrillBase):
    """The drill's probing and alarm sampling."""

    def _probe_timeout(self) -> float | None:
        return self.settings.probe_timeout if self.settings else None

    def node_health(self, node_name: str) -> dict[str, Any]:
        """Instance running and the service port answering as the node itself. IAM: ec2:DescribeInstances."""
        node = self.topology.node(node_name)
        instance = faults.node_instance(self.topology, self.clients, node_name)
        state = instance["State"]["Name"]
        health = {"node": node_name, "instance": instance["InstanceId"], "state": state, "reachable": False,
                  "answered_as": None}
        if state == "running" and os.environ.get("PROBE_FUNCTION"):
            # The service port is only reachable from the client site: ask the canary there.
            check = self._probe(canary.Truth(None, None, None))["nodes"][node_name]
            health |= {"reachable": check["reachable"], "answered_as": check["name"], "error": check["error"]}
        elif state == "running":
            host, port = PROBE_OVERRIDES.node_addresses.get(node_name, (None, node.port))
            check = canary.check_node(str(node.ip), port, self._probe_timeout() or self.topology.canary.timeout_seconds,
                                      connect_to=host)
            health |= {"reachable": check.reachable, "answered_as": check.name, "error": check.error}
        health["healthy"] = state == "running" and health["reachable"] and health["answered_as"] == node_name
        return health

    def _probe(self, truth: canary.Truth) -> dict[str, Any]:
        """One canary run's JSON, from the client site.

        With ``PROBE_FUNCTION`` set (on AWS: the canary function, placed in the client network) the
        probes run there, invoked synchronously; this function itself stays outside any VPC, where
        the AWS APIs it drives are. On a real on-prem site they run in the on-prem agent instead (a
        probe request, ``regionha.watch.agent_requests``; ``AgentDidNotAnswer``, a TransientError,
        when it does not answer in time). Without it, they run here (tests, hosts on the client network).
        IAM: lambda:InvokeFunction on the canary function; on-prem: sqs:GetQueueUrl, sqs:SendMessage,
        dynamodb:GetItem on the probe reply table.
        """
        topology = self.topology
        function = os.environ.get("PROBE_FUNCTION")
        if function and topology.client.onprem:
            # A real on-prem site: no function of ours runs there; its on-prem agent probes for us.
            return agent_requests.ask_agent(
                topology, agent_requests.CANARY, clients=self.clients, region=self.env.region,
                timeout=self._probe_timeout() or topology.canary.timeout_seconds,
                truth={"ip": truth.ip, "ttl": truth.ttl, "node": truth.node})
        if not function:
            return canary.run_canary(
                topology, truth, timeout=self._probe_timeout(), source=canary.client_source(topology),
                servers=PROBE_OVERRIDES.servers or None, node_addresses=PROBE_OVERRIDES.node_addresses or None,
            ).to_json()
        payload = {"topology": topology.to_json(), "truth": {"ip": truth.ip, "ttl": truth.ttl, "node": truth.node},
                   "timeout": self._probe_timeout(), "emit_metrics": False}
        response = self.clients.client("lambda", self.env.region).invoke(
            FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(payload))
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise TransientError(f"probing through {function} failed: {body}")
        return body

    def sample(self, step: str) -> Round:
        """One round: the record, every path, the alarms."""
        truth = canary.read_truth(self.topology, self.clients)
        t = time.time()
        run = self._probe(truth)
        samples = [
            {"t": round(t, 3), "step": step, "path": p["path"], "outcome": p["outcome"],
             "answer": p["answers"][0] if p["answers"] else None, "node": p["node"],
             "node_reachable": p["node_reachable"], "success": p["success"], "latency_ms": p["latency_ms"]}
            for p in run["paths"]
        ]
        return Round(t, samples, self.alarm_states(), truth.node)

    def alarm_states(self) -> dict[str, str]:
        """IAM: cloudwatch:DescribeAlarms."""
        names = list(dict.fromkeys(self.alarms.watch_alarms + self.alarms.critical_alarms))
        if not names:
            return {}
        cw = self.clients.client("cloudwatch", self.env.region)
        states: dict[str, str] = {}
        for i in range(0, len(names), _DESCRIBE_ALARMS_MAX):
            for alarm in cw.describe_alarms(AlarmNames=names[i:i + _DESCRIBE_ALARMS_MAX]).get("MetricAlarms", []):
                states[alarm["AlarmName"]] = alarm["StateValue"]
        return states

    def _alarm_paths(self) -> dict[str, str | None]:
        if not self.alarms.watch_alarms:
            return {}
        cw = self.clients.client("cloudwatch", self.env.region)
        labels = [label for ls in path_labels(self.topology).values() for label in ls]
        found = {}
        names = list(self.alarms.watch_alarms)
        for i in range(0, len(names), _DESCRIBE_ALARMS_MAX):
            for alarm in cw.describe_alarms(AlarmNames=names[i:i + _DESCRIBE_ALARMS_MAX]).get("MetricAlarms", []):
                found[alarm["AlarmName"]] = alarm_path(alarm, labels)
        # An alarm CloudWatch does not know is kept (path from its name), so the proof can say it is missing.
        return {n: found.get(n, alarm_path({"AlarmName": n}, labels)) for n in names}

    def _log_alarms(self, step: str, t: float, states: Mapping[str, str]) -> None:
        record = self.load()
        for name, state in states.items():
            if record["alarm_last"].get(name) != state:
                record["alarm_log"].append({"t": round(t, 3), "step": step, "alarm": name, "state": state})
                record["alarm_last"][name] = state

    def _critical_firing(self, states: Mapping[str, str]) -> list[str]:
        baseline = self.load()["alarm_baseline"]
        return [n for n in self.alarms.critical_alarms if states.get(n) == ALARM and baseline.get(n) != ALARM]

    def _expected_alarms(self) -> dict[str, float]:
        """Watched alarms that the active path faults must fire -> the fault's start time."""
        record = self.load()
        labels = path_labels(self.topology)
        out = {}
        for fault in self.store.faults(self.execution):
            if fault["kind"] != PATH:
                continue
            fault_labels = set(labels.get(fault["target"], []))
            for name, label in record["alarm_paths"].items():
                if label in fault_labels:
                    out[name] = fault.get("applied_at") or fault["recorded_at"]
        return out

    def observe(self, step: str, expect: Mapping[str, str], *, measure: bool, timeout: float | None,
                hold: bool = True, stop_on_critical: bool = True,
                restored: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Probe every ``poll_interval`` until every path meets its expectation, then hold the faults
        (bounded by ``alarm_timeout``) until the alarms they must fire are seen in ALARM.

        Recovery is measured only for paths whose answer had to change (judge.measured_paths): with
        ``measure``, the paths expected to name another node than the record named when the fault was
        injected (from the fault); with ``restored`` (label -> restore time), paths that were cut (from
        their restore). A recovery ends at the path's first sample naming the expected node. A path
        that had to change and did not within the bound is recorded as not recovered (seconds None).
        The bound is ``timeout`` (the input's step_timeout), or when None ``step_bound``.

        Raises DrillStepFailed at the bound, DrillAborted on the stop condition (only while faults
        are in place: undoing them must never stop half-way because an alarm has not cleared yet).
        Samples are saved to the timeline whatever happens.
        """
        settings = self.bounds
        record = self.load()
        since = measured_paths(expect, record.get("fault_time") if measure else None,
                               record.get("answer_before_fault"), restored)
        if timeout is None:
            timeout = self.step_bound(expect, detection=measure)
        clock = RecoveryClock(expect, since)
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        reached_at: float | None = None
        expected_alarms = self._expected_alarms() if hold else {}
        last: dict[str, dict[str, Any]] = {}
        # Every round lasts at least poll_interval, so the deadlines end the loop before this count does.
        max_rounds = int((timeout + settings.alarm_timeout) / settings.poll_interval) + 2
        entries: list[dict[str, Any]] = []
        try:
            for _ in range(max_rounds):
                round_started = time.monotonic()
                r = self.sample(step)
                samples += r.samples
                self._log_alarms(step, r.t, r.alarms)
                last = {s["path"]: s for s in r.samples}
                clock.feed(r.t, last)
                firing = self._critical_firing(r.alarms)
                still_right = [s["path"] for s in r.samples if expect.get(s["path"]) != CUT and s["success"]]
                if stop_on_critical and firing and still_right:
                    raise DrillAborted(
                        f"{step}: critical alarm(s) {', '.join(firing)} went to ALARM while "
                        f"{', '.join(still_right)} still resolved correctly")
                if reached_at is None and all_met(expect, last):
                    reached_at = time.monotonic()
                if reached_at is not None:
                    # In ALARM now, during the fault: an alarm an earlier fault left in ALARM counts too.
                    seen = {name for name in expected_alarms if r.alarms.get(name) == ALARM}
                    if set(expected_alarms) <= seen or time.monotonic() - reached_at >= settings.alarm_timeout:
                        break
                elif time.monotonic() - started >= timeout:
                    break
                self.sleep(max(0.0, settings.poll_interval - (time.monotonic() - round_started)))
            if reached_at is None:
                raise DrillStepFailed(f"{step}: not reached within {timeout:g} s: {unmet(expect, last)}")
        finally:
            self._save_timeline(step, samples)
            entries = clock.entries(step, reached=reached_at is not None, after="restore" if restored else "fault")
            record["recovery"].extend(entries)
        alarms_seen = sorted({a["alarm"] for a in record["alarm_log"] if a["state"] == ALARM
                              and a["t"] >= expected_alarms.get(a["alarm"], float("inf"))})
        return {"recovery_seconds": {e["path"]: e["seconds"] for e in entries},
                "rounds": len({s["t"] for s in samples}), "bound_seconds": timeout,
                "expected_alarms": sorted(expected_alarms), "alarms_seen": alarms_seen,
                "last": {k: brief(v) for k, v in last.items()}}

    def step_bound(self, expect: Mapping[str, str], *, detection: bool) -> float:
        """How long a step observing ``expect`` may take when the input gives no step_timeout (s): the
        recovery budget (judge.recovery_budget) of the record's TTL, the failover's detection time when
        a node was failed (``detection``), and the on-prem resolver's fallback over this step's cut
        forwarder addresses; at least three rounds; at most what fits one Lambda with the alarm hold."""
        settings = self.bounds
        budget = recovery_budget(self.topology.dns.record.ttl, settings.detection_seconds if detection else 0.0,
                                 len(cut_labels(expect)))["seconds"]
        probe = settings.probe_timeout or self.topology.canary.timeout_seconds
        return min(max(budget, 3 * (settings.poll_interval + probe)), settings.step_bound_max)

    def _settled_round(self, step: str, tries: int) -> Round:
        """A round in which every path succeeds, or the last of ``tries`` (a resolver's first query
        after idling may need its second try)."""
        samples: list[dict[str, Any]] = []
        r = self.sample(step)
        samples += r.samples
        for _ in range(tries - 1):
            if all(s["success"] for s in r.samples):
                break
            self.sleep(self.settings.poll_interval if self.settings else 0.5)
            r = self.sample(step)
            samples += r.samples
        self._log_alarms(step, r.t, r.alarms)
        self._save_timeline(step, samples)
        return r

    def _wait_healthy(self, node: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        health = self.node_health(node)
        while not health["healthy"] and time.monotonic() < deadline:
            self.sleep(self.bounds.poll_interval)
            health = self.node_health(node)
        return health
