"""State-machine payloads: what every regionha Lambda receives, as one typed model per task.

Each task of a build or teardown state machine carries the validated topology (``topology``: its JSON
form, small enough for a Step Functions payload) and the run id (the execution name, so idempotency
tokens are stable across Lambda retries of one run), plus the task's own parameters, typed here by one
pydantic model per task (the ``Parameters``/``ItemSelector`` of its ASL state). ``parse_task`` reads
an event against a model; every fault becomes one ``ConfigurationError`` (never retried) naming the
field, before any AWS call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from regionha.aws import Clients
from regionha.aws import stack_region as stack_region  # re-exported: handlers read it from here
from regionha.errors import ConfigurationError
from regionha.topology import Topology, TopologyError, load_topology, parse_topology
from regionha.topology.model import Name

# Keys every task shares; the rest of an event are the task's own parameters.
COMMON_KEYS = ("topology", "topology_file", "run_id")


class Params(BaseModel):
    """A task's own parameters: unknown keys refused (an ASL typo fails the task, it is not ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Attempt(Params):
    # The bounded waits' poll counter ($.attempt), compared with topology.waits.max_polls.
    attempt: int = Field(default=0, ge=0)


# --- one model per task (the ASL state that sends it in brackets) ---------------------------------


class NoParams(Params):
    """ValidateTopology's inner input (its ``topology``/``topology_file`` only), SaveInventory."""


class VpcTask(Params):
    """ConvergeNetwork, ConvergeVpcRoutes, ConvergeNatInstance: one VPC of the topology, by name."""

    vpc: Name


class RequestPeering(Params):
    action: Literal["request"]
    peering: Name


class AcceptPeering(Params):
    action: Literal["accept"]
    peering: Name


class CheckPeerings(Attempt):
    action: Literal["status"]


PeeringTask = Annotated[RequestPeering | AcceptPeering | CheckPeerings, Field(discriminator="action")]


class AssociatePrivateZone(Params):
    action: Literal["zone"]


class ConvergeResolverEndpoint(Params):
    action: Literal["endpoint"]
    path: Name


class CheckEndpoints(Attempt):
    action: Literal["endpoint_status"]


class CheckEndpointsGone(Attempt):
    action: Literal["endpoints_gone"]


DnsTask = Annotated[
    AssociatePrivateZone | ConvergeResolverEndpoint | CheckEndpoints | CheckEndpointsGone,
    Field(discriminator="action"),
]


class ConvergeInstances(Params):
    """ConvergeBindServers (``bind``: the regions' BIND forwarders, then an on-prem DNS server on EC2)
    and ConvergeNodes (``node``)."""

    role: Literal["bind", "node"]


class PlaceCanary(Params):
    action: Literal["place"]
    function_name: str = Field(min_length=1)


class UnplaceCanary(Params):
    action: Literal["unplace"]
    function_name: str = Field(min_length=1)


class CheckLambdaEnisReleased(Attempt):
    action: Literal["enis_released"]


PlacementTask = Annotated[PlaceCanary | UnplaceCanary | CheckLambdaEnisReleased, Field(discriminator="action")]


class TeardownFamily(Params):
    """TeardownDns, TeardownInstances, TeardownPeerings, DeleteInventory."""

    family: Literal["dns", "instances", "peerings", "inventory"]


class TeardownVpc(Params):
    family: Literal["vpc"]
    vpc: Name


class StandDownControllers(Attempt):
    """StandDownControllers: mark the failover fences, then poll until no write permit is running."""

    family: Literal["controllers"]


TeardownTask = Annotated[TeardownFamily | TeardownVpc | StandDownControllers, Field(discriminator="family")]

class ScheduledRun(BaseModel):
    """AuditDeployment's input: EventBridge's "Scheduled Event" (its ``time``: when the schedule
    fired), or ``{}`` for a run by hand. Anything else is a wiring mistake, refused."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    detail_type: Literal["Scheduled Event"] | None = Field(default=None, alias="detail-type")
    source: Literal["aws.events"] | None = None
    time: str | None = None


def parse_scheduled(event: Any, task: str) -> ScheduledRun:
    """``event`` as a scheduled run of ``task``; ConfigurationError naming the field otherwise."""
    if not isinstance(event, dict):
        raise ConfigurationError(f"{task}: input must be a JSON object, not {type(event).__name__}")
    try:
        return _adapter(ScheduledRun).validate_python(event)
    except ValidationError as e:
        raise ConfigurationError(f"{task}: " + "; ".join(_problems(e, tagged=False))) from e


# --- reading an event ----------------------------------------------------------------------------

P = TypeVar("P")


@dataclass(frozen=True)
class Task(Generic[P]):
    """One task's input: the topology, the run id and the task's own parameters.

    ``input``: the parameters as the task's typed model (``parse_task``); ``params``: the same as a
    plain dict (``param``, for handlers not yet typed).
    """

    topology: Topology
    run_id: str
    params: dict[str, Any]
    input: P | None = None

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
        if event.get("topology") is not None:
            raise ConfigurationError(f"topology: must be a mapping, not {type(event['topology']).__name__}")
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


def task_from_event(event: dict[str, Any]) -> Task[Any]:
    """An untyped task (``Task.param``): the topology and run id read, the rest kept as a dict."""
    if not isinstance(event, dict):
        raise ConfigurationError(f"task input must be a JSON object, not {type(event).__name__}")
    params = {k: v for k, v in event.items() if k not in COMMON_KEYS}
    return Task(topology_from_event(event), str(event.get("run_id") or "manual"), params)


def parse_task(event: Any, model: Any, task: str) -> Task[Any]:
    """``event`` read as ``task``'s input: its parameters validated by ``model`` (a ``Params`` class or
    an ``Annotated`` union discriminated by ``action``/``family``) before the topology is parsed.

    Raises ``ConfigurationError`` naming the task and every faulty field (``action``, ``vpc``, ...),
    then the topology's problems; nothing is called on AWS before this returns.
    """
    if not isinstance(event, dict):
        raise ConfigurationError(f"{task}: task input must be a JSON object, not {type(event).__name__}")
    params = {k: v for k, v in event.items() if k not in COMMON_KEYS}
    try:
        typed = _adapter(model).validate_python(params)
    except ValidationError as e:
        raise ConfigurationError(f"{task}: " + "; ".join(_problems(e, tagged=get_origin(model) is Annotated))) from e
    return Task(topology_from_event(event), str(event.get("run_id") or "manual"), params, typed)


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    # Building a TypeAdapter compiles a validator: once per model per process (a warm Lambda reuses it).
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def _problems(err: ValidationError, *, tagged: bool) -> list[str]:
    out = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        ctx = e.get("ctx") or {}
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field = str(ctx.get("discriminator", "")).strip("'")
            if e["type"] == "union_tag_invalid":
                out.append(f"{field}: unknown value {ctx.get('tag')!r} (one of {ctx.get('expected_tags')})")
            else:
                out.append(f"{field}: required field is missing")
            continue
        # A tagged union's location starts with the member's tag ("request"), not a field of the input.
        field = ".".join(loc[1:] if tagged else loc) or "(input)"
        msg = {"extra_forbidden": "unknown key", "missing": "required field is missing"}.get(e["type"], e["msg"])
        out.append(f"{field}: {msg}")
    return out


def clients() -> Clients:
    """boto3 clients for handlers: the real endpoints on AWS, the emulator's when AWS_ENDPOINT_URL is set."""
    return Clients(endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def require_env(name: str) -> str:
    """An environment variable the template sets; ConfigurationError (not retried) when it is missing."""
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set (see template.yaml)")
    return value
