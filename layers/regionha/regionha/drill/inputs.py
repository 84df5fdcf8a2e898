"""The drill's input and environment: the settings an execution starts with (every bound is one),
where the drill keeps things (the function's environment), and one typed model per task the drill
state machine sends the drill function (``parse_task``).

Errors: ConfigurationError with a specific message for any bad input, before any AWS call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from regionha.aws import stack_region
from regionha.drill.steps import CUT_PATH, CUTS, SCENARIOS
from regionha.errors import ConfigurationError

# A Lambda runs at most 900 s; a step must fit with room for reading and writing its record.
MAX_STEP_SECONDS = 840

@dataclass(frozen=True)
class DrillSettings:
    """The drill's input. Every bound is an input so that tests and the local runtime can shorten it."""

    deployment: str
    scenario: str = "acceptance"
    region_path: str | None = None
    poll_interval: float = 0.5
    # How long an observing step may take to reach what it expects (s). None: the step's recovery
    # budget (regionha.drill.judge.recovery_budget: TTL + detection + forwarder fallback), derived at run time.
    step_timeout: float | None = None
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
        if self.scenario == CUT_PATH and not self.region_path:
            raise ConfigurationError("scenario cut-path needs region_path: the forwarder path to cut")
        for name in ("poll_interval", "step_timeout", "alarm_timeout", "alarm_ok_timeout", "rejoin_timeout",
                     "fault_ttl", "lock_ttl", "detection_seconds"):
            value = getattr(self, name)
            if value is None and name == "step_timeout":
                continue  # derived per step
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"{name} must be a number >= 0, not {value!r}")
        if not 0 < self.poll_interval <= 60:
            raise ConfigurationError(f"poll_interval must be in (0, 60] seconds, not {self.poll_interval}")
        if self.step_bound_max + self.alarm_timeout > MAX_STEP_SECONDS or self.rejoin_timeout > MAX_STEP_SECONDS:
            raise ConfigurationError(
                f"step_timeout + alarm_timeout and rejoin_timeout must each fit in {MAX_STEP_SECONDS} s (one Lambda)")
        if self.alarm_ok_timeout > MAX_STEP_SECONDS:
            raise ConfigurationError(f"alarm_ok_timeout must be at most {MAX_STEP_SECONDS} s")
        if self.probe_timeout is not None and not 0 < self.probe_timeout <= 30:
            raise ConfigurationError(f"probe_timeout must be in (0, 30] seconds, not {self.probe_timeout}")
        if self.cut not in CUTS:
            raise ConfigurationError(f"cut must be one of {', '.join(CUTS)}, not {self.cut!r}")
        if not isinstance(self.failback, bool):
            raise ConfigurationError(f"failback must be true or false, not {self.failback!r}")
        if self.cluster_action is not None and not isinstance(self.cluster_action, dict):
            raise ConfigurationError("cluster_action must be an object: {document, commands, restore_commands}")
        if self.fault_ttl < self.step_bound_max + self.alarm_timeout:
            raise ConfigurationError("fault_ttl must outlast a step (step_timeout + alarm_timeout)")

    @property
    def step_bound_max(self) -> float:
        """The longest an observing step may take (s): step_timeout, or what a derived bound is capped at."""
        return self.step_timeout if self.step_timeout is not None else MAX_STEP_SECONDS - self.alarm_timeout

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
            region=stack_region(environ),
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


# --- the state machine's tasks ---------------------------------------------------------------------------

# Keys of the execution's state that the state machine writes (results and caught errors): the rest
# of the state is the drill's input.
STATE_KEYS = ("drill", "error", "last_step", "restore", "restore_error", "restore_failed_error", "alarms",
              "alarms_error", "report", "report_error", "lock", "lock_error")


class ExecutionState(BaseModel):
    """The execution's state (``$``): the drill's input at the top, ``drill`` (the context preflight
    returns: execution, settings, plan ids) and what earlier states caught (``error``, ``restore_error``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    drill: dict[str, Any] = Field(default_factory=dict)
    error: Any = None
    restore_error: Any = None

    def drill_input(self) -> dict[str, Any]:
        """The drill's own input: every key the state machine did not write."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in STATE_KEYS}

    def context(self, default_deployment: str | None) -> dict[str, Any]:
        context = dict(self.drill)
        if "settings" not in context:
            # Preflight refused the input itself: report what can be reported.
            context["deployment"] = (self.model_extra or {}).get("deployment") or default_deployment
        return context


class _Task(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: ExecutionState = Field(default_factory=ExecutionState)


class PreflightTask(_Task):
    """Validate the input, take the lock, check nodes and paths, plan."""

    action: Literal["preflight"]


class StepTask(_Task):
    """Run one planned step (its id: regionha.drill.steps)."""

    action: Literal["step"]
    step: Annotated[str, Field(min_length=1)]


class RestoreTask(_Task):
    """Put everything back; ``state.error`` is what ended the steps, if anything."""

    action: Literal["restore"]


class RestoreFailedTask(_Task):
    """Restore itself died (``state.restore_error``): say loudly what is left broken."""

    action: Literal["restore_failed"]


class CheckAlarmsTask(_Task):
    action: Literal["check_alarms"]


class ReportTask(_Task):
    action: Literal["report"]


class ReleaseLockTask(_Task):
    action: Literal["release_lock"]


DrillTask = Annotated[
    PreflightTask | StepTask | RestoreTask | RestoreFailedTask | CheckAlarmsTask | ReportTask | ReleaseLockTask,
    Field(discriminator="action"),
]
_TASK_ADAPTER: TypeAdapter[Any] = TypeAdapter(DrillTask)


def parse_task(event: Any) -> PreflightTask | StepTask | RestoreTask | RestoreFailedTask | CheckAlarmsTask \
        | ReportTask | ReleaseLockTask:
    """The typed task of one drill state: ``{"action", "step"?, "state": <the execution's state>}``.

    Raises ConfigurationError naming the field (``drill task input: state: ...``).
    """
    try:
        return _TASK_ADAPTER.validate_python(event)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
                             for err in e.errors())
        raise ConfigurationError(f"drill task input: {problems}") from e
