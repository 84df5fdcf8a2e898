"""The drill: the article's acceptance procedure (and two smaller scenarios) as repeatable, measured steps.

A drill never builds: it reads the deployment's topology from the saved inventory. The drill state
machine (statemachines/drill.asl.json) calls ``run_action`` once per state:

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
- ``report``: the JSON report (+ HTML when ``regionha.drill.report`` is present) to S3, a summary to
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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.drill import faults
from regionha.errors import ConfigurationError, RegionhaError, TransientError
from regionha.watch import alarms as deployment_alarms
from regionha.watch import canary, metrics

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology

# How long preflight re-checks a node that missed its first check before refusing the drill (s).
PREFLIGHT_SETTLE_SECONDS = 20.0

SCENARIOS = ("acceptance", "fail-active-node", "cut-path")
LOCK_SK = "drill-lock"
RECORD_PREFIX = "drill#"
PASSED, FAILED = "PASSED", "FAILED"
ALARM, OK_STATE = "ALARM", "OK"
# What an expectation may say besides a node name.
CUT = "cut"  # the path must not answer
TRUTH = "record"  # the path must answer the record's node, and that node must answer
NOT_ANSWERING = frozenset({"timeout", "network_error"})
# A Lambda runs at most 900 s; a step must fit with room for reading and writing its record.
MAX_STEP_SECONDS = 840
_DESCRIBE_ALARMS_MAX = 100


class DrillStepFailed(RegionhaError):
    """A step did not reach what it expects within its bound: the drill fails (after restore)."""


class DrillAborted(RegionhaError):
    """A stop condition fired (a critical alarm while a path still resolved): restore, then FAILED."""


# --- input and environment -------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillSettings:
    """The drill's input. Every bound is an input so that tests and the local runtime can shorten it."""

    deployment: str
    scenario: str = "acceptance"
    region_path: str | None = None
    poll_interval: float = 0.5
    step_timeout: float = 120.0
    failback: bool = True
    # How long a fault is held after the expected state, for its alarms to go to ALARM.
    alarm_timeout: float = 300.0
    # How long check_alarms waits for the watched alarms to be OK again after restore.
    alarm_ok_timeout: float = 420.0
    rejoin_timeout: float = 300.0
    probe_timeout: float | None = None
    fault_ttl: float = 3600.0
    lock_ttl: float = 7200.0
    cut: str = "dns"
    cluster_action: dict[str, Any] | None = None
    # The recovery budget is the record's TTL plus this: how long the failover may take to notice a
    # failed node (the health-check interval covers a lost EC2 state-change event).
    detection_seconds: float = 60.0

    @classmethod
    def from_input(cls, data: Mapping[str, Any], default_deployment: str | None) -> DrillSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(
                f"drill input: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: v for k, v in data.items() if v is not None}
        values.setdefault("deployment", default_deployment)
        if not values.get("deployment"):
            raise ConfigurationError("drill input: no deployment given and the DEPLOYMENT variable is not set")
        try:
            settings = cls(**values)
        except TypeError as e:
            raise ConfigurationError(f"drill input: {e}") from e
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigurationError(f"scenario must be one of {', '.join(SCENARIOS)}, not {self.scenario!r}")
        if self.scenario == "cut-path" and not self.region_path:
            raise ConfigurationError("scenario cut-path needs region_path: the forwarder path to cut")
        for name in ("poll_interval", "step_timeout", "alarm_timeout", "alarm_ok_timeout", "rejoin_timeout",
                     "fault_ttl", "lock_ttl", "detection_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, not {value!r}")
        if not 0 < self.poll_interval <= 60:
            raise ConfigurationError(f"poll_interval must be in (0, 60] seconds, not {self.poll_interval}")
        if self.step_timeout + self.alarm_timeout > MAX_STEP_SECONDS or self.rejoin_timeout > MAX_STEP_SECONDS:
            raise ConfigurationError(
                f"step_timeout + alarm_timeout and rejoin_timeout must each fit in {MAX_STEP_SECONDS} s (one Lambda)")
        if self.alarm_ok_timeout > MAX_STEP_SECONDS:
            raise ConfigurationError(f"alarm_ok_timeout must be at most {MAX_STEP_SECONDS} s")
        if self.probe_timeout is not None and not 0 < self.probe_timeout <= 30:
            raise ConfigurationError(f"probe_timeout must be in (0, 30] seconds, not {self.probe_timeout}")
        if self.cut not in faults.CUTS:
            raise ConfigurationError(f"cut must be one of {', '.join(faults.CUTS)}, not {self.cut!r}")
        if not isinstance(self.failback, bool):
            raise ConfigurationError(f"failback must be true or false, not {self.failback!r}")
        if self.cluster_action is not None and not isinstance(self.cluster_action, dict):
            raise ConfigurationError("cluster_action must be an object: {document, commands, restore_commands}")
        if self.fault_ttl < self.step_timeout + self.alarm_timeout:
            raise ConfigurationError("fault_ttl must outlast a step (step_timeout + alarm_timeout)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (value or "").split(",") if n.strip())


@dataclass(frozen=True)
class DrillEnv:
    """Where the drill keeps things, from the function's environment (template.yaml)."""

    table: str
    region: str
    bucket: str | None = None
    topic: str | None = None
    deployment: str | None = None
    watch_alarms: tuple[str, ...] = ()
    critical_alarms: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> DrillEnv:
        table = environ.get("STATE_TABLE")
        if not table:
            raise ConfigurationError("environment variable STATE_TABLE is not set (see template.yaml)")
        return cls(
            table=table,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "ap-southeast-1",
            bucket=environ.get("REPORTS_BUCKET") or None,
            topic=environ.get("NOTICES_TOPIC") or None,
            deployment=environ.get("DEPLOYMENT") or None,
            watch_alarms=_names(environ.get("DRILL_WATCH_ALARMS")),
            critical_alarms=_names(environ.get("CRITICAL_ALARMS")),
        )


@dataclass
class ProbeOverrides:
    """Redirect probes (path label / node name -> host, port), as ``canary.run_canary`` takes them:
    for tests, and for a drill run from a host that reaches the paths through port forwards."""

    servers: dict[str, tuple[str, int]] = field(default_factory=dict)
    node_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)


PROBE_OVERRIDES = ProbeOverrides()


# --- the lock ----------------------------------------------------------------------------------------


def acquire_lock(clients: Clients, env: DrillEnv, deployment: str, holder: str, *, ttl: float,
                 execution_arn: str | None = None, now: float | None = None) -> None:
    """Take the deployment's drill lock, or raise ConfigurationError naming who holds it.

    Succeeds when no lock exists, the lock expired, or ``holder`` already holds it (a retry).
    IAM: dynamodb:PutItem, dynamodb:GetItem.
    """
    now = time.time() if now is None else now
    ddb = clients.client("dynamodb", env.region)
    try:
        ddb.put_item(
            TableName=env.table,
            Item={"pk": {"S": deployment}, "sk": {"S": LOCK_SK}, "holder": {"S": holder},
                  "execution_arn": {"S": execution_arn or ""}, "acquired_at": {"N": str(int(now))},
                  "expires_at": {"N": str(int(now + ttl))}},
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR holder = :me",
            ExpressionAttributeValues={":now": {"N": str(int(now))}, ":me": {"S": holder}},
        )
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        held = read_lock(clients, env, deployment) or {}
        raise ConfigurationError(
            f"another drill holds the lock of {deployment}: {held.get('holder', '?')} until "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(held.get('expires_at', 0)))}") from e


def read_lock(clients: Clients, env: DrillEnv, deployment: str) -> dict[str, Any] | None:
    item = clients.client("dynamodb", env.region).get_item(
        TableName=env.table, Key={"pk": {"S": deployment}, "sk": {"S": LOCK_SK}}, ConsistentRead=True).get("Item")
    if not item:
        return None
    return {"holder": item["holder"]["S"], "expires_at": float(item["expires_at"]["N"])}


def release_lock(clients: Clients, env: DrillEnv, deployment: str, holder: str) -> bool:
    """Delete the lock only if ``holder`` holds it; True if it did. IAM: dynamodb:DeleteItem."""
    try:
        clients.client("dynamodb", env.region).delete_item(
            TableName=env.table, Key={"pk": {"S": deployment}, "sk": {"S": LOCK_SK}},
            ConditionExpression="holder = :me", ExpressionAttributeValues={":me": {"S": holder}})
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def sweep_locks(clients: Clients, env: DrillEnv, *, now: float | None = None,
                execution_status: Callable[[str], str | None] | None = None) -> list[dict[str, Any]]:
    """Release drill locks that expired or whose execution is no longer running (stopped from the
    console), so the next drill need not wait for the lock's expiry. IAM: dynamodb:Scan,
    dynamodb:DeleteItem, states:DescribeExecution."""
    now = time.time() if now is None else now
    ddb = clients.client("dynamodb", env.region)
    kwargs: dict[str, Any] = {"TableName": env.table, "FilterExpression": "sk = :lock",
                              "ExpressionAttributeValues": {":lock": {"S": LOCK_SK}}, "ConsistentRead": True}
    released = []
    for _ in range(100):
        page = ddb.scan(**kwargs)
        for item in page.get("Items", []):
            holder, arn = item["holder"]["S"], item.get("execution_arn", {}).get("S")
            why = "expired" if float(item["expires_at"]["N"]) < now else None
            if why is None and arn and execution_status is not None:
                status = execution_status(arn)
                why = f"execution {status.lower()}" if status not in (None, "RUNNING") else None
            if why and release_lock(clients, env, item["pk"]["S"], holder):
                released.append({"deployment": item["pk"]["S"], "holder": holder, "reason": why})
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return released


# --- the plan ------------------------------------------------------------------------------------------


def path_labels(topology: Topology) -> dict[str, list[str]]:
    """Forwarder path name (and ``onprem``) -> the canary's labels of its addresses."""
    out: dict[str, list[str]] = {}
    for target in canary.canary_targets(topology):
        out.setdefault(target.forwarder, []).append(target.path)
    return out


def _region_paths(topology: Topology, node_name: str) -> list[str]:
    vpc = topology.node(node_name).vpc
    paths = [p.name for p in topology.forwarder_paths if p.vpc == vpc]
    if not paths:
        raise ConfigurationError(f"acceptance: no forwarder path in {vpc}, the region of {node_name}, to cut")
    return paths


def _expect(topology: Topology, default: str, cut: Iterable[str] = ()) -> dict[str, str]:
    labels = path_labels(topology)
    cut = set(cut)
    return {label: (CUT if forwarder in cut else default) for forwarder, ls in labels.items() for label in ls}


def _standby(topology: Topology, active: str) -> str:
    return next(n.name for n in topology.nodes if n.name != active)


def plan(topology: Topology, settings: DrillSettings, active: str | None) -> list[dict[str, Any]]:
    """The steps of the scenario, in order; the state machine runs exactly these ids in this order."""
    primary = topology.primary.name
    if settings.scenario == "acceptance":
        secondary = _standby(topology, primary)
        primary_paths, secondary_paths = _region_paths(topology, primary), _region_paths(topology, secondary)
        fail_primary = [{"kind": faults.NODE, "target": primary}] + [
            {"kind": faults.PATH, "target": p} for p in primary_paths]
        fail_secondary = [{"kind": faults.NODE, "target": secondary}] + [
            {"kind": faults.PATH, "target": p} for p in secondary_paths]
        return [
            {"id": "ensure-primary", "kind": "ensure_node", "node": primary,
             "name": f"1 ensure the record names {primary}"},
            {"id": "verify-primary", "kind": "observe", "expect": _expect(topology, primary),
             "name": f"2 every path reaches {primary}"},
            {"id": "fail-primary", "kind": "inject", "faults": fail_primary,
             "name": f"3 fail {primary}, cut {', '.join(primary_paths)}"},
            {"id": "observe-secondary", "kind": "observe", "measure": True,
             "expect": _expect(topology, secondary, primary_paths),
             "name": f"4 on-prem reaches {secondary} through {', '.join(secondary_paths)}"},
            {"id": "rejoin-primary", "kind": "rejoin", "faults": fail_primary,
             "name": f"5 start {primary}, restore {', '.join(primary_paths)}"},
            {"id": "fail-secondary", "kind": "inject", "faults": fail_secondary,
             "name": f"6 fail {secondary}, cut {', '.join(secondary_paths)}"},
            {"id": "observe-primary", "kind": "observe", "measure": True,
             "expect": _expect(topology, primary, secondary_paths),
             "name": f"7 on-prem reaches {primary} through {', '.join(primary_paths)}"},
        ] + _further_nodes(topology, primary, secondary, fail_secondary)
    if active is None:
        raise ConfigurationError("the record names no node of the topology: nothing to drill against")
    if settings.scenario == "fail-active-node":
        standby = _standby(topology, active)
        return [
            {"id": "fail-active", "kind": "inject", "faults": [{"kind": faults.NODE, "target": active}],
             "name": f"fail the active node {active}"},
            {"id": "observe-moved", "kind": "observe", "measure": True, "expect": _expect(topology, standby),
             "name": f"every path reaches {standby}"},
        ]
    path = settings.region_path
    if path not in {p.name for p in topology.forwarder_paths}:
        known = ", ".join(p.name for p in topology.forwarder_paths)
        raise ConfigurationError(f"region_path {path!r} is not a forwarder path (paths: {known})")
    return [
        {"id": "cut-path", "kind": "inject", "faults": [{"kind": faults.PATH, "target": path}],
         "name": f"cut {path}"},
        {"id": "observe-cut", "kind": "observe", "measure": True, "expect": _expect(topology, active, [path]),
         "name": f"on-prem still reaches {active}, {path} does not answer"},
    ]


def _further_nodes(topology: Topology, primary: str, secondary: str,
                   fail_secondary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Acceptance with more than two nodes (``ACCEPTANCE_MORE_STEPS`` of the plan): after the article's
    seven steps the record names the primary again; rejoin the secondary, then fail each further node in
    turn with its region's paths cut, observe on-prem still reaching the primary through the others, and
    rejoin it (the last one is put back by restore, as the secondary is in the two-node procedure)."""
    others = [n.name for n in topology.nodes if n.name not in (primary, secondary)]
    if not others:
        return []
    steps: list[dict[str, Any]] = [
        {"id": "rejoin-secondary", "kind": "rejoin", "faults": fail_secondary,
         "name": f"8 start {secondary}, restore {', '.join(_region_paths(topology, secondary))}"}]
    number = 9
    for i, node in enumerate(others):
        paths = _region_paths(topology, node)
        fail = [{"kind": faults.NODE, "target": node}] + [{"kind": faults.PATH, "target": p} for p in paths]
        steps += [
            {"id": f"fail-node-{node}", "kind": "inject", "faults": fail,
             "name": f"{number} fail {node}, cut {', '.join(paths)}"},
            {"id": f"observe-node-{node}", "kind": "observe", "measure": True,
             "expect": _expect(topology, primary, paths),
             "name": f"{number + 1} on-prem still reaches {primary} while {node} is down"},
        ]
        number += 2
        if i < len(others) - 1:
            steps.append({"id": f"rejoin-node-{node}", "kind": "rejoin", "faults": fail,
                          "name": f"{number} start {node}, restore {', '.join(paths)}"})
            number += 1
    return steps


# The acceptance steps the state machine names one state each; further steps (more than two nodes)
# run in its RunMoreSteps Map, in plan order.
ACCEPTANCE_STEPS = ("ensure-primary", "verify-primary", "fail-primary", "observe-secondary", "rejoin-primary",
                    "fail-secondary", "observe-primary")


# --- judging samples (pure) ---------------------------------------------------------------------------


def meets(want: str, sample: Mapping[str, Any]) -> bool:
    """Does one path sample show what the expectation wants?"""
    if want == CUT:
        return sample.get("outcome") in NOT_ANSWERING
    if want == TRUTH:
        return bool(sample.get("success"))
    return sample.get("node") == want and bool(sample.get("node_reachable"))


def alarm_path(alarm: Mapping[str, Any], labels: Iterable[str]) -> str | None:
    """The path label a watched alarm belongs to: its Path dimension, else its name's suffix."""
    for d in alarm.get("Dimensions") or []:
        if d.get("Name") == "Path":
            return str(d.get("Value"))
    name = str(alarm.get("AlarmName") or "")
    for label in sorted(labels, key=len, reverse=True):
        if name.endswith("-path-down-" + label.replace("/", "-")):
            return label
    return None


# --- the drill -------------------------------------------------------------------------------------


@dataclass
class Round:
    t: float
    samples: list[dict[str, Any]]
    alarms: dict[str, str]
    truth: str | None


class Drill:
    """One execution's drill: its topology, settings and record; one method per state machine action."""

    def __init__(self, clients: Clients, env: DrillEnv, context: Mapping[str, Any], *,
                 topology: Topology | None = None, record: dict[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.clients = clients
        self.env = env
        self.execution = str(context.get("execution") or "manual")
        self.execution_arn = context.get("execution_arn")
        self.settings = DrillSettings.from_input(context["settings"], env.deployment) if "settings" in context \
            else None
        self.deployment = self.settings.deployment if self.settings else (context.get("deployment")
                                                                          or env.deployment or "?")
        self._topology = topology
        self._alarm_env: DrillEnv | None = None
        self.record = record
        self.sleep = sleep

    # -- storage ------------------------------------------------------------------------------------

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = canary.deployment_topology(self.clients, self.env.table, self.env.region,
                                                        self.deployment)
        return self._topology

    @property
    def alarms(self) -> DrillEnv:
        """The environment with the deployment's own alarms added: the build made them from the
        topology (regionha.converge.watch), so their names follow from it (regionha.watch.alarms)."""
        if self._alarm_env is None:
            try:
                topology = self.topology
            except ConfigurationError:
                return self.env  # no inventory: only the stack's alarms can be named
            watch = tuple(dict.fromkeys(self.env.watch_alarms
                                        + tuple(deployment_alarms.watched_alarm_names(topology))))
            critical = tuple(dict.fromkeys(self.env.critical_alarms
                                           + tuple(deployment_alarms.critical_members(topology))))
            self._alarm_env = replace(self.env, watch_alarms=watch, critical_alarms=critical)
        return self._alarm_env

    @property
    def store(self) -> faults.FaultStore:
        return faults.FaultStore(self.clients, self.env.table, self.env.region, self.deployment)

    @property
    def _ddb(self) -> Any:
        return self.clients.client("dynamodb", self.env.region)

    def load(self) -> dict[str, Any]:
        if self.record is None:
            item = self._ddb.get_item(
                TableName=self.env.table,
                Key={"pk": {"S": self.deployment}, "sk": {"S": RECORD_PREFIX + self.execution}},
                ConsistentRead=True).get("Item")
            self.record = json.loads(item["body"]["S"]) if item else self._blank()
        return self.record

    def save(self) -> None:
        self._ddb.put_item(TableName=self.env.table, Item={
            "pk": {"S": self.deployment}, "sk": {"S": RECORD_PREFIX + self.execution},
            "body": {"S": json.dumps(self.load(), sort_keys=True, default=str)}})

    def _blank(self) -> dict[str, Any]:
        return {"execution": self.execution, "execution_arn": self.execution_arn, "deployment": self.deployment,
                "scenario": self.settings.scenario if self.settings else None,
                "settings": self.settings.to_json() if self.settings else None, "started_at": time.time(),
                "plan": [], "steps": [], "recovery": [], "events": [], "alarm_log": [], "alarm_last": {},
                "alarm_baseline": {}, "alarm_paths": {}, "timeline_keys": [], "timeline_inline": [],
                "fault_time": None}

    def _save_timeline(self, step: str, samples: list[dict[str, Any]]) -> None:
        record = self.load()
        if not samples:
            return
        if self.env.bucket:
            key = f"reports/{self.deployment}/{self.execution}/timeline/{len(record['timeline_keys']):02d}-{step}.json"
            self.clients.client("s3", self.env.region).put_object(
                Bucket=self.env.bucket, Key=key, Body=json.dumps(samples).encode(), ContentType="application/json")
            record["timeline_keys"].append(key)
        else:
            record["timeline_inline"].extend(samples)

    def timeline(self) -> list[dict[str, Any]]:
        record = self.load()
        samples = list(record.get("timeline_inline") or [])
        s3 = self.clients.client("s3", self.env.region)
        for key in record.get("timeline_keys") or []:
            samples += json.loads(s3.get_object(Bucket=self.env.bucket, Key=key)["Body"].read())
        return sorted(samples, key=lambda s: s.get("t", 0))

    # -- probing -------------------------------------------------------------------------------------

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
        the AWS APIs it drives are. Without it, they run here (tests, hosts on the client network).
        IAM: lambda:InvokeFunction on the canary function.
        """
        topology = self.topology
        function = os.environ.get("PROBE_FUNCTION")
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
            if fault["kind"] != faults.PATH:
                continue
            fault_labels = set(labels.get(fault["target"], []))
            for name, label in record["alarm_paths"].items():
                if label in fault_labels:
                    out[name] = fault.get("applied_at") or fault["recorded_at"]
        return out

    def observe(self, step: str, expect: Mapping[str, str], *, measure: bool, timeout: float,
                hold: bool = True, stop_on_critical: bool = True,
                restored: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Probe every ``poll_interval`` until every path meets its expectation, then hold the faults
        (bounded by ``alarm_timeout``) until the alarms they must fire are seen in ALARM.

        Recovery is measured only for paths whose answer had to change: with ``measure``, the paths
        expected to name another node than the record named when the fault was injected (from the
        fault); with ``restored`` (label -> restore time), paths that were cut (from their restore).
        A path that had to change and did not is recorded as not recovered (seconds None).

        Raises DrillStepFailed at ``timeout``, DrillAborted on the stop condition (only while faults
        are in place: undoing them must never stop half-way because an alarm has not cleared yet).
        Samples are saved to the timeline whatever happens.
        """
        assert self.settings is not None
        record = self.load()
        fault_time = record.get("fault_time") if measure else None
        before = record.get("answer_before_fault")
        since = {label: fault_time for label, want in expect.items()
                 if fault_time is not None and want not in (CUT, TRUTH, before)}
        since |= dict(restored or {})
        first_ok: dict[str, float] = {}
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        reached_at: float | None = None
        expected_alarms = self._expected_alarms() if hold else {}
        last: dict[str, dict[str, Any]] = {}
        # Every round lasts at least poll_interval, so the deadlines end the loop before this count does.
        max_rounds = int((timeout + self.settings.alarm_timeout) / self.settings.poll_interval) + 2
        try:
            for _ in range(max_rounds):
                round_started = time.monotonic()
                r = self.sample(step)
                samples += r.samples
                self._log_alarms(step, r.t, r.alarms)
                last = {s["path"]: s for s in r.samples}
                for label, want in expect.items():
                    if label not in first_ok and want != CUT and label in last and meets(want, last[label]):
                        first_ok[label] = r.t
                firing = self._critical_firing(r.alarms)
                still_right = [s["path"] for s in r.samples if expect.get(s["path"]) != CUT and s["success"]]
                if stop_on_critical and firing and still_right:
                    raise DrillAborted(
                        f"{step}: critical alarm(s) {', '.join(firing)} went to ALARM while "
                        f"{', '.join(still_right)} still resolved correctly")
                met = all(label in last and meets(want, last[label]) for label, want in expect.items())
                if met and reached_at is None:
                    reached_at = time.monotonic()
                if reached_at is not None:
                    # In ALARM now, during the fault: an alarm an earlier fault left in ALARM counts too.
                    seen = {name for name in expected_alarms if r.alarms.get(name) == ALARM}
                    if set(expected_alarms) <= seen or time.monotonic() - reached_at >= self.settings.alarm_timeout:
                        break
                elif time.monotonic() - started >= timeout:
                    break
                self.sleep(max(0.0, self.settings.poll_interval - (time.monotonic() - round_started)))
            if reached_at is None:
                missing = {label: f"want {want}, saw {_brief(last.get(label))}" for label, want in expect.items()
                           if not (label in last and meets(want, last[label]))}
                raise DrillStepFailed(f"{step}: not reached within {timeout:g} s: {missing}")
        finally:
            self._save_timeline(step, samples)
            recovery = self._record_recovery(step, since, first_ok, last, reached_at is not None,
                                             "restore" if restored else "fault")
        alarms_seen = sorted({a["alarm"] for a in record["alarm_log"] if a["state"] == ALARM
                              and a["t"] >= expected_alarms.get(a["alarm"], float("inf"))})
        return {"recovery_seconds": recovery, "rounds": len({s["t"] for s in samples}),
                "expected_alarms": sorted(expected_alarms), "alarms_seen": alarms_seen,
                "last": {k: _brief(v) for k, v in last.items()}}

    def _record_recovery(self, step: str, since: Mapping[str, float], first_ok: Mapping[str, float],
                         last: Mapping[str, dict[str, Any]], reached: bool, after: str) -> dict[str, float | None]:
        """Append one recovery entry per measured path: {step, path, node, seconds, after}."""
        record = self.load()
        recovery: dict[str, float | None] = {}
        for label, t0 in since.items():
            if label in first_ok:
                recovery[label] = round(max(0.0, first_ok[label] - t0), 3)
            elif reached:
                continue  # met without a sample of its own in time: nothing to measure
            else:
                recovery[label] = None  # it had to change and did not within the bound
            node = (last.get(label) or {}).get("node") if label in first_ok else None
            record["recovery"].append({"step": step, "path": label, "node": node, "seconds": recovery[label],
                                       "after": after})
        return recovery

    # -- actions --------------------------------------------------------------------------------------

    def preflight(self, execution_arn: str | None) -> dict[str, Any]:
        assert self.settings is not None
        record = self.load()
        step = {"id": "preflight", "name": "preflight", "ok": False, "start": time.time(), "end": None, "detail": {}}
        record["steps"].append(step)
        try:
            acquire_lock(self.clients, self.env, self.deployment, self.execution, ttl=self.settings.lock_ttl,
                         execution_arn=execution_arn)
            topology = self.topology
            record |= {"mode": topology.failover.mode, "primary": topology.primary.name}
            health = {n.name: self.node_health(n.name) for n in topology.nodes}
            # A node just started (a previous drill's restore, a deploy) may take a few seconds to answer:
            # one missed check is re-checked, as the failover controller does, within a bound.
            settle_by = time.time() + min(self.settings.step_timeout, PREFLIGHT_SETTLE_SECONDS)
            while not all(h["healthy"] for h in health.values()) and time.time() < settle_by:
                time.sleep(self.settings.poll_interval)
                health |= {name: self.node_health(name) for name, h in health.items() if not h["healthy"]}
            sick = [f"{n}: {_health_text(h)}" for n, h in health.items() if not h["healthy"]]
            if sick:
                raise ConfigurationError(f"preflight: not every node is healthy: {'; '.join(sick)}"
                                         + self._left_broken())
            r = self._settled_round("preflight", tries=3)
            wrong = [f"{s['path']}: {_brief(s)}" for s in r.samples if not s["success"]]
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
            record["budget"] = {"ttl": ttl, "detection": self.settings.detection_seconds,
                                "seconds": ttl + self.settings.detection_seconds}
            record["plan"] = plan(topology, self.settings, r.truth)
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
                     if f["kind"] == faults.NODE]
            lines += faults.left_in_reserved_range(self.topology, self.clients, recorded)
        except (ClientError, RegionhaError) as e:
            return f"; could not look for what drills left behind: {e}"
        return "; left broken: " + "; ".join(lines) if lines else ""

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

    def context(self) -> dict[str, Any]:
        """The small state the state machine carries ($.drill)."""
        assert self.settings is not None
        return {"execution": self.execution, "execution_arn": self.execution_arn, "deployment": self.deployment,
                "scenario": self.settings.scenario, "settings": self.settings.to_json(),
                "steps": [s["id"] for s in self.load()["plan"]],
                # Steps beyond the state machine's named acceptance states, run one at a time by its Map.
                "more_steps": [s["id"] for s in self.load()["plan"]
                               if self.settings.scenario == "acceptance" and s["id"] not in ACCEPTANCE_STEPS]}

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
            raise DrillStepFailed(f"{node} is not healthy ({_health_text(health)}): cannot name it in the record")
        self._switch(node)
        return {"record": str(self.topology.node(node).ip), "changed": True, "was": truth.node}

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

    def _step_observe(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.settings is not None
        return self.observe(spec["id"], spec["expect"], measure=bool(spec.get("measure")),
                            timeout=self.settings.step_timeout, hold=bool(spec.get("measure")))

    def _step_inject(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.settings is not None
        record = self.load()
        prepared = []
        for want in spec["faults"]:
            if want["kind"] == faults.NODE:
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

    def _restore_faults(self, selected: list[dict[str, Any]], step: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Restore each fault (independently), wait for stopped nodes to be healthy, forget the restored.
        Returns (what was done, what is left broken)."""
        bounds = self.bounds
        record = self.load()
        done, broken = [], []
        for fault in sorted(selected, key=lambda f: f["kind"] != faults.PATH):  # paths first: quick and safe
            try:
                outcome = faults.restore_fault(self.clients, fault)
                if fault["kind"] == faults.NODE:
                    health = self._wait_healthy(fault["target"], bounds.rejoin_timeout)
                    outcome["health"] = _health_text(health)
                    if not health["healthy"]:
                        broken.append(f"node {fault['target']} not healthy: {_health_text(health)}")
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
                if e["event"] == "restore" and e["kind"] == faults.PATH and e["step"] == step
                for label in labels.get(e["target"], [])}

    @property
    def bounds(self) -> DrillSettings:
        """The drill's settings, or the defaults when preflight never accepted an input."""
        return self.settings or DrillSettings(deployment=self.deployment)

    def _wait_healthy(self, node: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        health = self.node_health(node)
        while not health["healthy"] and time.monotonic() < deadline:
            self.sleep(self.bounds.poll_interval)
            health = self.node_health(node)
        return health

    def _step_rejoin(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.settings is not None
        wanted = {(f["kind"], f["target"]) for f in spec["faults"]}
        selected = [f for f in self.store.faults(self.execution) if (f["kind"], f["target"]) in wanted]
        done, broken = self._restore_faults(selected, spec["id"])
        if broken:
            raise DrillStepFailed(f"{spec['id']}: {'; '.join(broken)}")
        # Back to normal before the next fault: every path answers the record and its node answers.
        settled = self.observe(spec["id"], _expect(self.topology, TRUTH), measure=False,
                               timeout=self.settings.step_timeout, hold=False, stop_on_critical=False,
                               restored=self._restored_paths(spec["id"]))
        return {"restored": done, "settled": settled["last"]}

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
                    settled = self.observe("restore", _expect(topology, TRUTH), measure=False,
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
            raise TransientError(f"failback: {primary} is not healthy: {_health_text(health)}")
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

    def check_alarms(self) -> dict[str, Any]:
        """Wait (bounded) for the watched alarms to be OK again, then judge the alarm proof."""
        record = self.load()
        names = list(self.alarms.watch_alarms)
        timeout = self.settings.alarm_ok_timeout if self.settings else 0
        poll = self.settings.poll_interval if self.settings else 1.0
        deadline = time.monotonic() + timeout
        states = self.alarm_states()
        self._log_alarms("check-alarms", time.time(), states)
        while any(states.get(n) != OK_STATE for n in names if n in states) and time.monotonic() < deadline:
            self.sleep(poll)
            states = self.alarm_states()
            self._log_alarms("check-alarms", time.time(), states)
        proof = alarm_proof(record, self.alarms, states)
        record["alarms"] = proof["alarms"]
        record["alarm_proof"] = proof["summary"]
        self.save()
        return proof["summary"]

    def report(self) -> dict[str, Any]:
        record = self.load()
        report = compose_report(record, self.timeline())
        base = f"reports/{self.deployment}/{self.execution}"
        out: dict[str, Any] = {"status": report["status"], "recovery_seconds": report["recovery_seconds"]}
        if self.env.bucket:
            s3 = self.clients.client("s3", self.env.region)
            s3.put_object(Bucket=self.env.bucket, Key=f"{base}.json", ContentType="application/json",
                          Body=json.dumps(report, indent=1, default=str).encode())
            out["json"] = f"s3://{self.env.bucket}/{base}.json"
            html = render_html(report)
            if html is not None:
                s3.put_object(Bucket=self.env.bucket, Key=f"{base}.html", ContentType="text/html; charset=utf-8",
                              Body=html.encode())
                out["html"] = f"s3://{self.env.bucket}/{base}.html"
            else:
                out["html"] = None  # regionha.drill.report is not installed: JSON only
        if self.env.topic:
            subject, text = summary(report)
            where = out.get("json") or "(no reports bucket)"
            self.clients.client("sns", self.env.region).publish(
                TopicArn=self.env.topic, Subject=subject, Message=f"{text}\nreport: {where}")
        dims = {"Deployment": self.deployment}
        points = [metrics.Datapoint("DrillPassed", float(report["status"] == PASSED), "Count", dims)]
        points += [metrics.Datapoint("RecoverySeconds", r["seconds"], "Seconds", dims | {"Path": r["path"]})
                   for r in record.get("recovery", []) if r["seconds"] is not None]
        metrics.emit(points, region=self.env.region, cloudwatch=self.clients.client("cloudwatch", self.env.region))
        return out

    def release(self) -> dict[str, Any]:
        released = release_lock(self.clients, self.env, self.deployment, self.execution)
        return {"released": released}


def _brief(sample: Mapping[str, Any] | None) -> str:
    if not sample:
        return "no sample"
    text = f"{sample.get('outcome')} {sample.get('answer') or ''}".strip()
    if sample.get("node"):
        text += f" ({sample['node']} {'answers' if sample.get('node_reachable') else 'silent'})"
    return text


def _health_text(health: Mapping[str, Any]) -> str:
    if health.get("healthy"):
        return "healthy"
    if health.get("state") != "running":
        return f"instance {health.get('state')}"
    return f"service {health.get('error') or 'answered as ' + str(health.get('answered_as'))}"


# --- alarm proof and report (pure) ----------------------------------------------------------------------


def _fault_windows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
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
    windows = _fault_windows(record)
    log = record.get("alarm_log", [])
    alarm_paths: Mapping[str, str | None] = record.get("alarm_paths") or {}
    alarms: dict[str, dict[str, Any]] = {}
    for name in env.watch_alarms:
        label = alarm_paths.get(name)
        cuts = [w for w in windows if w["kind"] == faults.PATH and label and label.split("/")[0] == w["target"]]
        seen = [a["state"] for a in log if a["alarm"] == name]
        fired = any(_in_alarm_during(log, name, w) for w in cuts)
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


def _in_alarm_during(log: list[dict[str, Any]], name: str, window: Mapping[str, Any]) -> bool:
    """Was alarm ``name`` in ALARM at some moment of ``window``: it went there during the window, or
    it already was when the window opened (an earlier fault's effect, e.g. a failover's stale answers,
    can have fired it just before the cut)."""
    entries = [a for a in log if a["alarm"] == name]
    before = [a for a in entries if a["t"] < window["start"]]
    if before and before[-1]["state"] == ALARM:
        return True
    return any(a["state"] == ALARM and window["start"] <= a["t"] and (window["end"] is None or a["t"] <= window["end"])
               for a in entries)


def recovery_key(entry: Mapping[str, Any]) -> str:
    """How a recovery is keyed in ``recovery_seconds`` (report, demo, metrics): ``path@node``, or the
    bare path when it never answered a node."""
    return f"{entry['path']}@{entry['node']}" if entry.get("node") else str(entry["path"])


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
    passed = (bool(planned) and "preflight" in done and all(p in done for p in planned) and bool(restore.get("ok"))
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
        "faults": _fault_windows(record),
        "timeline": timeline,
        "alarms": record.get("alarms") or {},
        "alarm_proof": proof,
        "restore": restore,
        "error": record.get("error"),
    }


def render_html(report: dict[str, Any]) -> str | None:
    try:
        from regionha.drill import report as drill_report
    except ImportError:
        return None
    return drill_report.render_html(report)


def summary(report: dict[str, Any]) -> tuple[str, str]:
    """(SNS subject, text)."""
    try:
        from regionha.drill import report as drill_report

        return drill_report.summary_subject(report), drill_report.summary_text(report)
    except (ImportError, AttributeError):
        subject = f"regionha drill {report['status']}: {report.get('scenario')} on {report.get('deployment')}"
        lines = [subject] + [f"{'ok ' if s['ok'] else 'FAIL'} {s['name']}" for s in report["steps"]]
        lines += [f"recovery {p}: {s} s" for p, s in report["recovery_seconds"].items()]
        return subject[:100], "\n".join(lines)


# --- the state machine's entry point ------------------------------------------------------------------

_STATE_KEYS = ("drill", "error", "last_step", "restore", "restore_error", "restore_failed_error", "alarms",
               "alarms_error", "report", "report_error", "lock", "lock_error")


def run_action(action: str, event: Mapping[str, Any], clients: Clients, env: DrillEnv) -> dict[str, Any]:
    """One state of the drill state machine: ``event`` = {"action", "step"?, "state": the execution's state}."""
    state = event.get("state") or {}
    if not isinstance(state, Mapping):
        raise ConfigurationError("drill task input: state must be an object")
    context = dict(state.get("drill") or {})
    if action == "preflight":
        raw = {k: v for k, v in state.items() if k not in _STATE_KEYS}
        settings = DrillSettings.from_input(raw, env.deployment)
        context |= {"settings": settings.to_json()}
        return Drill(clients, env, context).preflight(context.get("execution_arn"))
    if "settings" not in context:
        # Preflight refused the input itself: report what can be reported.
        context["deployment"] = state.get("deployment") or env.deployment
    drill = Drill(clients, env, context)
    if action == "step":
        return drill.run_step(str(event.get("step")))
    if action == "restore":
        return drill.restore(state.get("error"))
    if action == "restore_failed":
        return drill.restore_failed(state.get("restore_error"), state.get("error"))
    if action == "check_alarms":
        return drill.check_alarms()
    if action == "report":
        return drill.report()
    if action == "release_lock":
        return drill.release()
    raise ConfigurationError(f"unknown drill action {action!r}")
