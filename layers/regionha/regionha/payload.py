"""State-machine payloads: what every regionha Lambda receives and how it reads it.

Each task of a state machine carries the validated topology (``topology``: its JSON form, small
enough for a Step Functions payload) and the run id (the execution name, so idempotency tokens are
stable across Lambda retries of one run). Reading them here keeps the handlers thin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from regionha.aws import Clients
from regionha.aws import stack_region as stack_region  # re-exported: handlers read it from here
from regionha.errors import ConfigurationError
from regionha.topology import Topology, TopologyError, load_topology, parse_topology


@dataclass(frozen=True)
class Task:
    """One task's input: the topology, the run id and the task's own parameters."""

    topology: Topology
    run_id: str
    params: dict[str, Any]

    def param(self, key: str, default: Any = ...) -> Any:
        if key in self.params:
            return self.params[key]
        if default is ...:
            raise ConfigurationError(f"task input is missing {key!r}")
        return default


def topology_from_event(event: dict[str, Any]) -> Topology:
    """The topology of an event: inline JSON (``topology``), a shipped file name or the default.

    Raises ``ConfigurationError`` (never retried) with every problem of the file.
    """
    try:
        if isinstance(event.get("topology"), dict):
            return parse_topology(event["topology"], "input.topology")
        if event.get("topology_file"):
            name = str(event["topology_file"])
            if "/" in name or not name.endswith(".yaml"):
                raise ConfigurationError(f"topology_file: {name!r} is not a shipped topology file name")
            from importlib import resources

            path = resources.files("regionha.topologies").joinpath(name)
            if not path.is_file():
                raise ConfigurationError(f"topology_file: no shipped topology named {name!r}")
            return load_topology(str(path))
        return load_topology()
    except TopologyError as e:
        raise ConfigurationError(str(e)) from e


def task_from_event(event: dict[str, Any]) -> Task:
    if not isinstance(event, dict):
        raise ConfigurationError(f"task input must be a JSON object, not {type(event).__name__}")
    params = {k: v for k, v in event.items() if k not in ("topology", "topology_file", "run_id")}
    return Task(topology_from_event(event), str(event.get("run_id") or "manual"), params)


def clients() -> Clients:
    """boto3 clients for handlers: the real endpoints on AWS, the emulator's when AWS_ENDPOINT_URL is set."""
    return Clients(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def require_env(name: str) -> str:
    """An environment variable the template sets; ConfigurationError (not retried) when it is missing."""
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set (see template.yaml)")
    return value
