"""The drill: the article's acceptance procedure (and two smaller scenarios) as repeatable, measured steps.

A drill never builds: it reads the deployment's topology from the saved inventory. The drill state
machine (statemachines/drill.asl.json) sends one typed task per state (``inputs.parse_task``), which
``runner.run_task`` runs:

- ``preflight``: validate the input, take the drill lock (a conditional write), refuse unless every
  node is healthy (instance running, service port answering as itself) and every path resolves to
  the record's truth; write the drill record (state table, ``sk = drill#<execution>``) with the plan.
- ``step``: one planned step. ``ensure_node`` (the record names a node), ``observe`` (probe every
  path until each shows what the step expects, bounded), ``inject`` (record, then apply, faults),
  ``rejoin`` (restore some faults and wait until the node and the paths are back).
- ``restore``: always, after the last step or any failure: restore every fault of the execution,
  wait for the nodes, fail back (built-in mode), check every path. Idempotent. What it cannot put
  back is named in a critical SNS notice. ``restore_failed`` says the same when restore itself died.
- ``check_alarms``: wait (bounded) until the watched alarms are OK again, then judge the alarm proof.
- ``report``: the JSON report and its HTML page to S3, a summary to
  SNS, metrics DrillPassed and RecoverySeconds. ``release_lock``: give the lock back.

Measuring: every round probes every path (the canary's probe library) and samples the alarms; each
path's sample goes to the timeline. Recovery of a path = the fault's time until the first sample
that names the expected node while that node answers as itself. A cut path must stop answering.

Alarms: the deployment's own, which the build made from the topology (``regionha.watch.alarms``: each
path's and node's alarm are watched, the critical composite's children judge the critical
condition), plus the stack's ``DRILL_WATCH_ALARMS`` and ``CRITICAL_ALARMS`` (comma-separated
names). A watched alarm belongs to the path named by its ``Path`` dimension (the path-down alarms
carry one), else to the path whose label, "/" written "-", ends its name
(``<prefix>-path-down-<label>``). Cutting a path expects that path's alarms to go to ALARM during the
fault and back to OK after restore. A critical alarm going to ALARM while a path still resolves
correctly aborts the drill (restore, then FAILED).

IAM (drill function): dynamodb:GetItem/PutItem/DeleteItem/Query on the state table; route53 reads
(ListHostedZonesByName, ListTagsForResources, ListResourceRecordSets) and, built-in mode only,
ChangeResourceRecordSets and GetChange; ec2:DescribeInstances/StopInstances/StartInstances,
ec2:DescribeVpcs/DescribeSubnets/DescribeNetworkAcls/CreateNetworkAclEntry/DeleteNetworkAclEntry,
ec2:CreateTags/DeleteTags; ssm:SendCommand (external mode cluster actions); cloudwatch:DescribeAlarms;
s3:PutObject/GetObject on the reports bucket; sns:Publish on the notices topic.

The package, one job per module (pure ones marked):

- ``steps`` (pure): the catalogue: scenarios, step ids = ASL state names in kebab-case, fault kinds.
- ``inputs``: DrillSettings (the input), DrillEnv (the environment), one typed model per task.
- ``lock``: the drill lock in the state table.
- ``planner`` (pure): a scenario's steps for a topology (``plan``).
- ``judge`` (pure): expectations, recovery (``RecoveryClock``), its budget, the report JSON.
- ``proof`` (pure): the alarm proof.
- ``store``: the drill's record and timeline; ``probing``: health, samples, ``observe``;
  ``restore``: restore, failback, the critical notice; ``publish``: alarms check, report, lock release;
  ``runner``: preflight, the steps, ``run_task``.
- ``faults``: what a drill breaks and how it is put back.
- ``report``: the report's figures and text (SNS, CLI); ``timeline``: its SVG timeline and legend;
  ``page``: its HTML page.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers
    from regionha.drill import faults
    from regionha.drill.inputs import (
        MAX_STEP_SECONDS,
        PROBE_OVERRIDES,
        DrillEnv,
        DrillSettings,
        ProbeOverrides,
        parse_task,
    )
    from regionha.drill.judge import (
        CUT,
        FAILED,
        NOT_ANSWERING,
        PASSED,
        TRUTH,
        RecoveryClock,
        compose_report,
        meets,
        recovery_budget,
        recovery_key,
    )
    from regionha.drill.lock import LOCK_SK, acquire_lock, read_lock, release_lock, sweep_locks
    from regionha.drill.planner import expect_paths, path_labels, plan
    from regionha.drill.probing import Round
    from regionha.drill.proof import ALARM, OK_STATE, alarm_path, alarm_proof, in_alarm_during
    from regionha.drill.publish import render_html, summary
    from regionha.drill.runner import PREFLIGHT_SETTLE_SECONDS, Drill, run_action, run_task
    from regionha.drill.steps import ACCEPTANCE_STEPS, SCENARIOS, DrillAborted, DrillStepFailed
    from regionha.drill.store import RECORD_PREFIX

# Names kept importable from ``regionha.drill`` (handlers, the CLI, the local runtime, tests), loaded on
# first use (PEP 562) so that importing a pure module (planner, judge, proof, steps) loads no AWS SDK.
_EXPORTS = {
    "MAX_STEP_SECONDS": "inputs",
    "PROBE_OVERRIDES": "inputs",
    "DrillEnv": "inputs",
    "DrillSettings": "inputs",
    "ProbeOverrides": "inputs",
    "parse_task": "inputs",
    "CUT": "judge",
    "FAILED": "judge",
    "NOT_ANSWERING": "judge",
    "PASSED": "judge",
    "TRUTH": "judge",
    "RecoveryClock": "judge",
    "compose_report": "judge",
    "meets": "judge",
    "recovery_budget": "judge",
    "recovery_key": "judge",
    "LOCK_SK": "lock",
    "acquire_lock": "lock",
    "read_lock": "lock",
    "release_lock": "lock",
    "sweep_locks": "lock",
    "expect_paths": "planner",
    "path_labels": "planner",
    "plan": "planner",
    "Round": "probing",
    "ALARM": "proof",
    "OK_STATE": "proof",
    "alarm_path": "proof",
    "alarm_proof": "proof",
    "in_alarm_during": "proof",
    "render_html": "publish",
    "summary": "publish",
    "PREFLIGHT_SETTLE_SECONDS": "runner",
    "Drill": "runner",
    "run_action": "runner",
    "run_task": "runner",
    "ACCEPTANCE_STEPS": "steps",
    "SCENARIOS": "steps",
    "DrillAborted": "steps",
    "DrillStepFailed": "steps",
    "RECORD_PREFIX": "store",
}


def __getattr__(name: str) -> Any:
    if name == "faults":
        return importlib.import_module("regionha.drill.faults")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'regionha.drill' has no attribute {name!r}")
    return getattr(importlib.import_module(f"regionha.drill.{module}"), name)


__all__ = [
    "ACCEPTANCE_STEPS", "ALARM", "CUT", "FAILED", "LOCK_SK", "MAX_STEP_SECONDS", "NOT_ANSWERING", "OK_STATE",
    "PASSED", "PREFLIGHT_SETTLE_SECONDS", "PROBE_OVERRIDES", "RECORD_PREFIX", "SCENARIOS", "TRUTH", "Drill",
    "DrillAborted", "DrillEnv", "DrillSettings", "DrillStepFailed", "ProbeOverrides", "RecoveryClock", "Round",
    "acquire_lock", "alarm_path", "alarm_proof", "compose_report", "expect_paths", "faults", "in_alarm_during",
    "meets", "parse_task", "path_labels", "plan", "read_lock", "recovery_budget", "recovery_key", "release_lock",
    "render_html", "run_action", "run_task", "summary", "sweep_locks",
]
