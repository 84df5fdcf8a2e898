"""What the commands that drive the stack's state machines share, the way the AWS CLI does it.

- **Where**: AWS (a boto3 session from ``--profile``) or a running local runtime (``--local-state FILE``,
  the state file ``regionha local up`` writes; fixed credentials, a loopback endpoint).
- **Region**, first found: ``--region``; the region of an ARN the command was given; ``AWS_REGION``;
  ``AWS_DEFAULT_REGION``; the profile's ``region`` (the AWS CLI's order; botocore itself does not read
  ``AWS_REGION``).
- **State machines** from the CloudFormation stack's outputs (``--stack-name``, default ``regionha``):
  ``BuildStateMachineArn``, ``TeardownStateMachineArn``, ``DrillStateMachineArn``, ``StateTableName``;
  locally from the state file.
- **Output**: ``--output text`` (default) prints progress and a summary on stdout; ``--output json``
  prints one JSON document on stdout and the progress on stderr, so ``| jq`` works while you watch.
- **Progress**: one line per state as it is entered and left (from GetExecutionHistory), a spinner
  with the elapsed time while waiting; colour on a terminal, plain text otherwise (``rich`` decides;
  ``NO_COLOR`` is honoured).
- **Errors**: missing credentials and AccessDenied are named as such, with what to do.

Exit codes: 0 success, 1 the execution failed (or is still running when the wait runs out), 2 the
command could not run (bad input, no stack, no credentials, access denied).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
STACK_NAME = "regionha"
# Beyond a state machine's own TimeoutSeconds, how long to keep watching for its final events.
WAIT_GRACE_SECONDS = 60.0
# A state machine without TimeoutSeconds is watched this long at most.
DEFAULT_WAIT_SECONDS = 3600.0
_ACCESS_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
                  "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException")


class CommandError(Exception):
    """The command cannot run as asked; the message says why (exit 2)."""


# -- where ---------------------------------------------------------------------------------------------


def region_of(arn: str | None) -> str | None:
    """The region field of an ARN (``arn:aws:states:REGION:ACCOUNT:...``), else None."""
    parts = (arn or "").split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


def read_local_state(path: Path) -> dict[str, Any]:
    """The state file of ``regionha local up``, checked: a loopback endpoint, a region, state machines."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CommandError(f"local state file {path} does not exist; start the runtime with "
                           "`regionha local up` (it writes out/local-state.json)") from None
    except (OSError, ValueError) as e:
        raise CommandError(f"local state file {path} cannot be read as JSON: {e}") from None
    if not isinstance(state, dict):
        raise CommandError(f"local state file {path}: expected a JSON object")
    endpoint, region = state.get("endpoint_url"), state.get("region")
    if not isinstance(endpoint, str) or not isinstance(region, str) or not region:
        raise CommandError(f"local state file {path}: needs endpoint_url and region")
    host = urlparse(endpoint).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # The local runtime listens on loopback only; anything else is not a local runtime.
        raise CommandError(f"local state file {path}: endpoint_url {endpoint} is not a loopback address")
    if not isinstance(state.get("state_machines"), dict):
        raise CommandError(f"local state file {path}: needs state_machines")
    return state


def enter_namespace(name: str, path: Path) -> None:
    """Move this (single-threaded CLI) process into the local runtime's network namespace: its loopback
    addresses exist only in there (regionha.local.host.netns)."""
    from regionha.local.host.netns import Namespace, NamespaceError

    try:
        Namespace(name).enter()
    except NamespaceError as e:
        raise CommandError(f"local state file {path}: cannot enter namespace {name}: {e}; "
                           "is the runtime still up (and are you root)?") from None


@dataclass(frozen=True)
class Target:
    """Where a command runs: a client factory, the region, and the local state when local."""

    clients: Any
    region: str
    where: str  # "AWS (profile P, region R)" or "local runtime at <endpoint>"
    local_state: dict[str, Any] | None = None
    local_state_path: Path | None = None

    @property
    def sfn(self) -> Any:
        return self.clients.client("stepfunctions", self.region)

    @property
    def local(self) -> bool:
        return self.local_state is not None


def resolve_region(explicit: str | None, arn: str | None, profile: str | None) -> str | None:
    """``--region``, the ARN's region, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's region."""
    found = explicit or region_of(arn) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session(profile_name=profile).region_name
    except ProfileNotFound as e:
        raise CommandError(f"{e}; list your profiles with `aws configure list-profiles`") from None


def target_for(args: argparse.Namespace, arn: str | None = None) -> Target:
    """The target of ``--local-state`` or of AWS with ``--profile``/``--region``. No AWS call."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    from regionha.aws import Clients

    if getattr(args, "local_state", None) is not None:
        state = read_local_state(args.local_state)
        if state.get("netns"):
            enter_namespace(state["netns"], args.local_state)
        # The emulated AWS checks no signature; fixed credentials keep a real profile out of it.
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=state["region"])
        return Target(Clients(session=session, endpoint_url=state["endpoint_url"]), state["region"],
                      f"local runtime at {state['endpoint_url']}", state, args.local_state)
    profile = getattr(args, "profile", None)
    region = resolve_region(getattr(args, "region", None), arn, profile)
    if not region:
        raise CommandError("no region: give --region, set AWS_REGION, or set a region in your profile "
                           "(`aws configure set region REGION`)")
    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as e:
        raise CommandError(f"{e}; list your profiles with `aws configure list-profiles`") from None
    where = f"AWS ({'profile ' + profile + ', ' if profile else ''}region {region})"
    return Target(Clients(session=session), region, where)


# -- the stack -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackInfo:
    """A stack's outputs and parameters (``Deployment``...)."""

    name: str
    outputs: dict[str, str]
    parameters: dict[str, str]

    def output(self, key: str, hint: str) -> str:
        if key not in self.outputs:
            raise CommandError(f"stack {self.name} has no output {key}; {hint}")
        return self.outputs[key]


def describe_stack(target: Target, stack: str) -> StackInfo:
    """IAM: cloudformation:DescribeStacks. Locally, the state file stands for the stack."""
    if target.local_state is not None:
        machines = target.local_state.get("state_machines") or {}
        outputs = {f"{lid}Arn": arn for lid, arn in machines.items()}
        outputs |= {k: v for k, v in (target.local_state.get("outputs") or {}).items() if isinstance(v, str)}
        deployment = target.local_state.get("deployment")
        return StackInfo(str(target.local_state_path), outputs,
                         {"Deployment": deployment} if isinstance(deployment, str) else {})
    from botocore.exceptions import ClientError

    try:
        stacks = target.clients.client("cloudformation", target.region).describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        if explain(e, target) is not None:
            raise
        raise CommandError(f"cannot read stack {stack} in {target.region}: {_message(e)} "
                           "(deployed with `sam deploy`? give --stack-name or --region)") from None
    found = stacks[0] if stacks else {}
    return StackInfo(stack, {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs") or []},
                     {p["ParameterKey"]: p.get("ParameterValue", "") for p in found.get("Parameters") or []})


def state_machine(target: Target, args: argparse.Namespace, logical_id: str) -> str:
    """``--state-machine-arn``, else the stack output ``<logical_id>Arn`` (locally: the state file)."""
    if getattr(args, "state_machine_arn", None):
        return args.state_machine_arn
    key = f"{logical_id}Arn"
    if target.local_state is not None:
        arn = (target.local_state.get("state_machines") or {}).get(logical_id)
        if not arn:
            raise CommandError(f"local state file {target.local_state_path} names no {logical_id}; "
                               "is it in the template?")
        return arn
    return describe_stack(target, args.stack_name).output(key, "deploy the current template or give "
                                                               "--state-machine-arn")


# -- errors ----------------------------------------------------------------------------------------------


def _code(e: Any) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _message(e: Any) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Message", "")) or str(e)


def explain(e: BaseException, target: Target | None = None) -> str | None:
    """A clear one-line message for the AWS errors a user can fix, else None."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
        SSOTokenLoadError,
        TokenRetrievalError,
        UnauthorizedSSOTokenError,
    )

    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: run `aws configure` (or `aws sso login --profile NAME` and pass "
                "--profile NAME), or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(e, SSOTokenLoadError | UnauthorizedSSOTokenError | TokenRetrievalError):
        return f"the SSO session has expired or is missing: run `aws sso login` ({e})"
    if isinstance(e, ProfileNotFound):
        return f"{e}; list your profiles with `aws configure list-profiles`"
    if isinstance(e, NoRegionError):
        return "no region: give --region, set AWS_REGION, or set a region in your profile"
    if isinstance(e, EndpointConnectionError):
        where = target.where if target else "AWS"
        return f"cannot reach {where}: {e}"
    if isinstance(e, ClientError):
        operation = getattr(e, "operation_name", "?")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if _code(e) in _ACCESS_DENIED or status == 403:
            why = f"{_code(e)}: {_message(e)}" if _code(e) in _ACCESS_DENIED else f"HTTP {status}"
            return (f"access denied: {operation} was refused ({one_line(why, 200)}); the credentials in use "
                    "need that permission (who they are: `aws sts get-caller-identity`)")
    return None


# -- output ----------------------------------------------------------------------------------------------


class Out:
    """Where a command writes: progress lines (stdout in text mode, stderr in json mode), the result.

    ``rich`` decides colour and the spinner: both only on a terminal, plain lines otherwise.
    """

    def __init__(self, output: str = "text"):
        from rich.console import Console

        self.json = output == "json"
        self.console = Console(file=sys.stderr if self.json else sys.stdout, highlight=False, emoji=False,
                               soft_wrap=True)
        self.errors = Console(file=sys.stderr, highlight=False, emoji=False, soft_wrap=True)

    def line(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""))

    def text(self, text: str, style: str | None = None) -> None:
        """A line of the text result (nothing in json mode: the JSON document says it)."""
        if not self.json:
            self.line(text, style)

    def result(self, document: dict[str, Any]) -> None:
        """The JSON document on stdout (json mode only)."""
        if self.json:
            sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
            sys.stdout.flush()

    def error(self, prog: str, text: str) -> int:
        from rich.text import Text

        self.errors.print(Text(f"{prog}: {text}", style="bold red"))
        return EXIT_INVALID

    def waiting(self, label: Callable[[], str]) -> Any:
        """A spinner showing ``label()`` on a terminal; nothing otherwise."""
        if not self.console.is_terminal:
            return None
        status = self.console.status(label(), spinner="dots")
        status.start()
        return status


def add_target_arguments(parser: argparse.ArgumentParser, *, stack: bool = True) -> None:
    """--profile, --region, --local-state, --stack-name, --output: the same meaning in every command."""
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or the default profile)")
    parser.add_argument("--region", help="AWS region (default: from the ARN given, then AWS_REGION, "
                        "AWS_DEFAULT_REGION, the profile's region)")
    parser.add_argument("--local-state", type=Path, metavar="FILE",
                        help="drive the local runtime of this state file (written by `regionha local up`) "
                        "instead of AWS")
    if stack:
        parser.add_argument("--stack-name", "--stack", dest="stack_name", default=STACK_NAME,
                            help=f"the CloudFormation stack whose outputs name the state machines "
                            f"(default {STACK_NAME})")
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text (default): progress and a summary; json: one JSON document on stdout, "
                        "progress on stderr")


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


# -- executions ------------------------------------------------------------------------------------------


def execution_name(kind: str) -> str:
    # Names are unique per state machine for 90 days; the suffix keeps two starts in one second apart.
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:4]}"


def wait_bound(sfn: Any, state_machine_arn: str) -> float:
    """How long to follow an execution: the state machine's TimeoutSeconds plus a grace.

    IAM: states:DescribeStateMachine.
    """
    try:
        definition = json.loads(sfn.describe_state_machine(stateMachineArn=state_machine_arn)["definition"])
        timeout = definition.get("TimeoutSeconds")
    except (ValueError, KeyError, AttributeError):
        timeout = None
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout) + WAIT_GRACE_SECONDS
    return DEFAULT_WAIT_SECONDS


def new_events(sfn: Any, execution_arn: str, after_id: int) -> list[dict[str, Any]]:
    """History events with an id above ``after_id``, oldest first. IAM: states:GetExecutionHistory.

    Reads newest first and stops at the first page that reaches back to ``after_id``, so a long
    execution's history is not read again on every poll (an emulator that ignores ``reverseOrder``
    returns everything at once, which this handles the same way).
    """
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "reverseOrder": True, "maxResults": 100}
    while True:
        page = sfn.get_execution_history(**kwargs)
        batch = page.get("events") or []
        events += [e for e in batch if e["id"] > after_id]
        if any(e["id"] <= after_id for e in batch) or not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    return sorted(events, key=lambda e: e["id"])


def details(event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


def one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Progress:
    """Turns history events into lines: a state entered or left, a failure, the end.

    ``say(text, style)``; styles are rich style names (used only on a terminal).
    """

    def __init__(self, started: datetime, say: Callable[[str, str | None], None]):
        self._started = started
        self._say = say
        # Map iterations enter a state several times at once: each exit pairs with the oldest entry.
        self._entered: dict[str, list[datetime]] = {}
        self.current: str | None = None

    def _at(self, event: dict[str, Any]) -> str:
        stamp = event.get("timestamp")
        offset = (stamp - self._started).total_seconds() if isinstance(stamp, datetime) else 0.0
        return f"{offset:+8.1f}s"

    def show(self, event: dict[str, Any]) -> None:
        kind, info = event.get("type", ""), details(event)
        name = info.get("name")
        if kind.endswith("StateEntered") and name:
            self._entered.setdefault(name, []).append(event.get("timestamp"))
            self.current = name
            self._say(f"{self._at(event)}  enter {name}", None)
        elif kind.endswith("StateExited") and name:
            waiting, stamp = self._entered.get(name) or [], event.get("timestamp")
            entered = waiting.pop(0) if waiting else None
            took = (f" ({(stamp - entered).total_seconds():.1f} s)"
                    if isinstance(entered, datetime) and isinstance(stamp, datetime) else "")
            self._say(f"{self._at(event)}  exit  {name}{took}", "green")
            if self.current == name:
                self.current = None
        elif kind == "ExecutionStarted":
            self._say(f"{self._at(event)}  execution started", "dim")
        elif kind == "ExecutionSucceeded":
            self._say(f"{self._at(event)}  execution SUCCEEDED", "bold green")
        elif kind.endswith(("Failed", "TimedOut", "Aborted")):
            from regionha.drill.report import error_text

            where = f" in {self.current}" if self.current and not kind.startswith("Execution") else ""
            error, cause = info.get("error"), info.get("cause")
            text = error_text({"Error": error, "Cause": cause}) if error or cause else ""
            self._say(f"{self._at(event)}  {kind}{where}" + (f": {text}" if text else ""), "bold red")


def follow(sfn: Any, execution_arn: str, bound: float, out: Out, poll: float) -> dict[str, Any]:
    """Print the execution's history as it grows until it ends or ``bound`` seconds pass.

    Returns the last DescribeExecution. IAM: states:DescribeExecution, states:GetExecutionHistory.
    """
    desc = sfn.describe_execution(executionArn=execution_arn)
    progress = Progress(desc["startDate"], out.line)
    clock = time.monotonic()
    deadline = clock + bound

    def label() -> str:
        doing = f"in {progress.current}" if progress.current else "waiting"
        return f"{desc['name']}: {doing} · {time.monotonic() - clock:.0f} s"

    status = out.waiting(label)
    last_id = 0
    try:
        while True:
            desc = sfn.describe_execution(executionArn=execution_arn)
            for event in new_events(sfn, execution_arn, last_id):
                progress.show(event)
                last_id = event["id"]
            if desc["status"] != "RUNNING" or time.monotonic() >= deadline:
                return desc
            if status is not None:
                status.update(label())
            time.sleep(poll)
    finally:
        if status is not None:
            status.stop()


def execution_json(desc: dict[str, Any]) -> dict[str, Any]:
    """A DescribeExecution as JSON: its output parsed, times as ISO strings, seconds it took."""
    started, stopped = desc.get("startDate"), desc.get("stopDate")
    output = desc.get("output")
    with contextlib.suppress(ValueError):
        output = json.loads(output) if isinstance(output, str) else output
    return {
        "execution_arn": desc.get("executionArn"),
        "name": desc.get("name"),
        "status": desc.get("status"),
        "started": started.isoformat() if isinstance(started, datetime) else started,
        "stopped": stopped.isoformat() if isinstance(stopped, datetime) else stopped,
        "seconds": round((stopped - started).total_seconds(), 3)
        if isinstance(started, datetime) and isinstance(stopped, datetime) else None,
        "output": output,
        "error": desc.get("error"),
        "cause": desc.get("cause"),
    }


def outcome_counts(output: Any) -> dict[str, int]:
    """Created/updated/unchanged/deleted counts over every step report (``summary``) of an output."""
    totals: dict[str, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("summary"), dict):
                for k, v in value["summary"].items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        totals[k] = totals.get(k, 0) + int(v)
                return
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(output)
    return totals


def guarded(prog: str, out: Out, body: Callable[[], int], target: Callable[[], Target | None] = lambda: None) -> int:
    """Run a command body; CommandError and the AWS errors a user can fix become exit 2 with a message."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return body()
    except CommandError as e:
        return out.error(prog, str(e))
    except (BotoCoreError, ClientError) as e:
        message = explain(e, target())
        if message is None:
            if isinstance(e, ClientError):
                message = f"{getattr(e, 'operation_name', 'AWS call')} failed: {_code(e)}: {_message(e)}"
            else:
                message = f"AWS call failed: {e}"
        return out.error(prog, message)
