"""Where one drill execution keeps what it did: its item in the state table (``pk`` = deployment,
``sk`` = ``drill#<execution>``, a JSON body: plan, steps, faults' events, recoveries, alarm log), its
timeline of path samples (S3 objects under the report's key, or inline without a bucket), and the
deployment it drills (topology from the saved inventory, the alarms the build made from it).

``DrillBase`` is the root of the drill's classes: probing (regionha.drill.probing), restore
(regionha.drill.restore), publishing (regionha.drill.publish) and the steps (regionha.drill.runner).
IAM: dynamodb:GetItem/PutItem on the state table, s3:PutObject/GetObject on the reports bucket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from regionha.drill import faults
from regionha.drill.inputs import DrillEnv, DrillSettings
from regionha.errors import ConfigurationError
from regionha.watch import alarms as deployment_alarms
from regionha.watch import canary

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology

RECORD_PREFIX = "drill#"


class DrillBase:
    """One execution's drill: its topology, settings and record (the state-table item)."""

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


    @property
    def bounds(self) -> DrillSettings:
        """The drill's settings, or the defaults when preflight never accepted an input."""
        return self.settings or DrillSettings(deployment=self.deployment)
