"""``regionha drill start|report``: run the drill state machine and read its report.

``start`` starts an execution of the drill state machine, in AWS (the ARN from ``--state-machine-arn``
or the ``DrillStateMachineArn`` output of the CloudFormation stack) or in a running local runtime
(``--local-state``, the file ``regionha local up`` writes), follows its history until it ends and
prints the report's summary. ``report`` renders the report of a finished execution.

The drill's ``Report`` state puts the report JSON in S3 and leaves ``{"status", "recovery_seconds",
"json": "s3://..."}`` at ``$.report``; an execution that ends in ``DrillFailed`` has no output at all.
So the report is looked for in the execution output, then in the outputs of its states (newest
first): a whole report inline, else the S3 object the ``json`` pointer names, else (``--bucket``)
``reports/<deployment>/<execution name>.json``, else the bare status and recovery figures.

Exit codes: 0 the drill PASSED, 1 it FAILED (or ended without a report, or is still running when the
wait runs out), 2 the command could not run (bad arguments, no state machine, no such execution).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

SCENARIOS = ("acceptance", "fail-active-node", "cut-path")
STACK_NAME = "regionha"
STACK_OUTPUT = "DrillStateMachineArn"
LOCAL_STATE_MACHINE = "DrillStateMachine"
# Beyond the state machine's own TimeoutSeconds, how long to keep watching for its final events.
WAIT_GRACE_SECONDS = 60.0
# A state machine without TimeoutSeconds is watched this long at most.
DEFAULT_WAIT_SECONDS = 3600.0


class InvalidInput(Exception):
    """The command cannot run as asked; the message says why (exit 2)."""


@dataclass(frozen=True)
class Target:
    """Where the drill runs: a boto3 Step Functions client and, if known, the state machine."""

    sfn: Any
    clients: Any
    region: str
    state_machine_arn: str | None
    where: str  # "AWS" or "local runtime at <endpoint>"


# -- finding the state machine --------------------------------------------------------------------------


def _region_of(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[3] if len(parts) > 4 and parts[0] == "arn" and parts[3] else None


def read_local_state(path: Path) -> dict[str, Any]:
    """The state file of ``regionha local up``, checked: a loopback endpoint, a region, state machines."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"local state file {path} does not exist; start the runtime with "
                           "`regionha local up` (it writes out/local-state.json)") from None
    except (OSError, ValueError) as e:
        raise InvalidInput(f"local state file {path} cannot be read as JSON: {e}") from None
    if not isinstance(state, dict):
        raise InvalidInput(f"local state file {path}: expected a JSON object")
    endpoint, region = state.get("endpoint_url"), state.get("region")
    if not isinstance(endpoint, str) or not isinstance(region, str) or not region:
        raise InvalidInput(f"local state file {path}: needs endpoint_url and region")
    host = urlparse(endpoint).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # The local runtime listens on loopback only; anything else is not a local runtime.
        raise InvalidInput(f"local state file {path}: endpoint_url {endpoint} is not a loopback address")
    if not isinstance(state.get("state_machines"), dict):
        raise InvalidInput(f"local state file {path}: needs state_machines")
    return state


def _local_target(path: Path, arn: str | None) -> Target:
    import boto3

    from regionha.aws import Clients

    state = read_local_state(path)
    arn = arn or state["state_machines"].get(LOCAL_STATE_MACHINE)
    if state.get("netns"):
        # The runtime's loopback lives in its own network namespace: talk to it from in there.
        from regionha.local.netns import Namespace, NamespaceError

        try:
            Namespace(state["netns"]).enter()
        except NamespaceError as e:
            raise InvalidInput(f"local state file {path}: cannot enter namespace {state['netns']}: {e}; "
                               "is the runtime still up (and are you root)?") from None
    # The emulated AWS checks no signature; fixed credentials keep a real profile out of it.
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name=state["region"])
    clients = Clients(session=session, endpoint_url=state["endpoint_url"])
    return Target(clients.client("stepfunctions", state["region"]), clients, state["region"], arn,
                  f"local runtime at {state['endpoint_url']}")


def _aws_target(region: str | None, arn: str | None) -> Target:
    import boto3

    from regionha.aws import Clients

    region = region or _region_of(arn) or boto3.session.Session().region_name
    if not region:
        raise InvalidInput("no region: give --region (or a full --state-machine-arn)")
    clients = Clients()
    return Target(clients.client("stepfunctions", region), clients, region, arn, "AWS")


def target_for(args: argparse.Namespace, arn: str | None) -> Target:
    if args.local_state is not None:
        return _local_target(args.local_state, arn)
    return _aws_target(args.region, arn)


def stack_state_machine(cloudformation: Any, stack: str) -> str:
    """The drill state machine's ARN from the stack outputs. IAM: cloudformation:DescribeStacks."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        raise InvalidInput(f"cannot read stack {stack}: {e}; give --state-machine-arn") from None
    for output in (stacks[0].get("Outputs") or []) if stacks else []:
        if output.get("OutputKey") == STACK_OUTPUT:
            return output["OutputValue"]
    raise InvalidInput(f"stack {stack} has no output {STACK_OUTPUT}; deploy the drill or give --state-machine-arn")


# -- following an execution ----------------------------------------------------------------------------


def drill_input(args: argparse.Namespace) -> dict[str, Any]:
    """The execution input: the scenario, and for ``cut-path`` the path to cut (``region_path``)."""
    if args.scenario == "cut-path" and not args.path:
        raise InvalidInput("--scenario cut-path needs --path NAME (the forwarder path to cut)")
    if args.path and args.scenario != "cut-path":
        raise InvalidInput(f"--path applies to --scenario cut-path only, not {args.scenario}")
    payload: dict[str, Any] = {"scenario": args.scenario}
    if args.path:
        payload["region_path"] = args.path
    return payload


def execution_name() -> str:
    # Names are unique per state machine for 90 days; the suffix keeps two starts in one second apart.
    return f"drill-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:4]}"


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
    drill's history is not read again on every poll (an emulator that ignores ``reverseOrder``
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


def _details(event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


def _one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Progress:
    """Turns history events into lines: a state entered or exited, a failure, the end."""

    def __init__(self, started: datetime, say: Callable[[str], None]):
        self._started = started
        self._say = say
        self._entered: dict[str, datetime] = {}
        self._current: str | None = None

    def _at(self, event: dict[str, Any]) -> str:
        stamp = event.get("timestamp")
        offset = (stamp - self._started).total_seconds() if isinstance(stamp, datetime) else 0.0
        return f"{offset:+8.1f}s"

    def show(self, event: dict[str, Any]) -> None:
        kind, details = event.get("type", ""), _details(event)
        name = details.get("name")
        if kind.endswith("StateEntered") and name:
            self._entered[name], self._current = event.get("timestamp"), name
            self._say(f"{self._at(event)}  enter {name}")
        elif kind.endswith("StateExited") and name:
            entered, stamp = self._entered.pop(name, None), event.get("timestamp")
            took = (f" ({(stamp - entered).total_seconds():.1f} s)"
                    if isinstance(entered, datetime) and isinstance(stamp, datetime) else "")
            self._say(f"{self._at(event)}  exit  {name}{took}")
        elif kind == "ExecutionStarted":
            self._say(f"{self._at(event)}  execution started")
        elif kind == "ExecutionSucceeded":
            self._say(f"{self._at(event)}  execution SUCCEEDED")
        elif kind.endswith(("Failed", "TimedOut", "Aborted")):
            where = f" in {self._current}" if self._current and not kind.startswith("Execution") else ""
            from regionha.drill_report import error_text

            error, cause = details.get("error"), details.get("cause")
            text = error_text({"Error": error, "Cause": cause}) if error or cause else ""
            self._say(f"{self._at(event)}  {kind}{where}" + (f": {text}" if text else ""))


def follow(sfn: Any, execution_arn: str, bound: float, say: Callable[[str], None],
           poll: float) -> dict[str, Any]:
    """Print the execution's history as it grows until it ends or ``bound`` seconds pass.

    Returns the last DescribeExecution. IAM: states:DescribeExecution, states:GetExecutionHistory.
    """
    desc = sfn.describe_execution(executionArn=execution_arn)
    progress = Progress(desc["startDate"], say)
    deadline = time.monotonic() + bound
    last_id = 0
    while True:
        desc = sfn.describe_execution(executionArn=execution_arn)
        for event in new_events(sfn, execution_arn, last_id):
            progress.show(event)
            last_id = event["id"]
        if desc["status"] != "RUNNING" or time.monotonic() >= deadline:
            return desc
        time.sleep(poll)


# -- the report ----------------------------------------------------------------------------------------


def _parsed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _nested(value: Any, depth: int = 2) -> Iterator[dict[str, Any]]:
    """The value and the objects a level or two down (``{"report": ...}``, a Lambda ``Payload``)."""
    value = _parsed(value)
    if isinstance(value, dict):
        yield value
        if depth > 0:
            for nested in value.values():
                yield from _nested(nested, depth - 1)


def _verdict(value: dict[str, Any]) -> bool:
    return value.get("status") in ("PASSED", "FAILED")


def report_in(value: Any) -> dict[str, Any] | None:
    """A whole report: a verdict with steps, scenario or timeline."""
    return next((v for v in _nested(value) if _verdict(v) and ("steps" in v or "scenario" in v
                                                                or "timeline" in v)), None)


def pointer_in(value: Any) -> str | None:
    """The ``s3://bucket/key`` of a stored report, as the Report state leaves it."""
    return next((v["json"] for v in _nested(value) if _verdict(v) and isinstance(v.get("json"), str)
                 and v["json"].startswith("s3://")), None)


def verdict_in(value: Any) -> dict[str, Any] | None:
    """A bare verdict (the Report state's summary, or MarkReportFailed's ``{"status": "FAILED"}``)."""
    return next((v for v in _nested(value) if _verdict(v)), None)


def _history_outputs(sfn: Any, execution_arn: str) -> Iterator[Any]:
    """State outputs and failure causes, newest first."""
    for event in reversed(new_events(sfn, execution_arn, 0)):
        details = _details(event)
        for key in ("output", "cause"):
            if details.get(key):
                yield details[key]


def _s3_object(clients: Any, region: str, url: str) -> dict[str, Any] | None:
    """A report stored at ``s3://bucket/key``. IAM: s3:GetObject."""
    from botocore.exceptions import ClientError

    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        body = clients.client("s3", region).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except ClientError as e:
        print(f"regionha drill: cannot read the report {url}: {e}", file=sys.stderr)
        return None
    return report_in(body)


def _s3_report(clients: Any, region: str, bucket: str, name: str) -> dict[str, Any] | None:
    """``reports/<deployment>/<name>.json`` in the bucket. IAM: s3:ListBucket, s3:GetObject."""
    s3 = clients.client("s3", region)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="reports/"):
        for item in page.get("Contents") or []:
            if item["Key"].endswith(f"/{name}.json"):
                return _s3_object(clients, region, f"s3://{bucket}/{item['Key']}")
    return None


def find_report(target: Target, desc: dict[str, Any], bucket: str | None = None) -> dict[str, Any] | None:
    """The execution's report (see the module docstring for where it is looked for)."""
    verdict = None

    def places() -> Iterator[Any]:
        yield desc.get("output")
        yield from _history_outputs(target.sfn, desc["executionArn"])

    for value in places():
        report = report_in(value)
        if report is None and (url := pointer_in(value)):
            report = _s3_object(target.clients, target.region, url)
        if report is not None:
            return report
        verdict = verdict or verdict_in(value)
    if bucket:
        report = _s3_report(target.clients, target.region, bucket, desc["name"])
        if report is not None:
            return report
    if verdict is not None:
        # Only the verdict survived (no bucket, or the report could not be stored): say so in the report.
        return {"status": verdict["status"], "execution": desc["name"],
                "recovery_seconds": verdict.get("recovery_seconds") or {},
                "error": verdict.get("error") or "only the verdict is known: the full report was not stored"}
    return None


def write_outputs(report: dict[str, Any], json_path: Path | None, html_path: Path | None,
                  say: Callable[[str], None]) -> None:
    from regionha.drill_report import render_html

    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        say(f"report JSON: {json_path}")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
        say(f"report HTML: {html_path}")


def conclude(target: Target, desc: dict[str, Any], args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from regionha.drill_report import summary_text

    if desc["status"] == "RUNNING":
        say(f"execution {desc['executionArn']} is still RUNNING; no report yet "
            f"(read it later with `regionha drill report {desc['executionArn']}`)")
        return EXIT_FAILED
    report = find_report(target, desc, getattr(args, "bucket", None))
    if report is None:
        reason = ": ".join(_one_line(p) for p in (desc.get("error"), desc.get("cause")) if p)
        say(f"execution {desc['status']} without a drill report" + (f" ({reason})" if reason else ""))
        return EXIT_FAILED
    say(summary_text(report))
    write_outputs(report, args.json, args.html, say)
    return EXIT_PASSED if report.get("status") == "PASSED" and desc["status"] == "SUCCEEDED" else EXIT_FAILED


# -- commands ------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, flush=True)


def _fail(text: str) -> int:
    print(f"regionha drill: {text}", file=sys.stderr)
    return EXIT_INVALID


def cmd_drill_start(args: argparse.Namespace) -> int:
    """IAM: states:StartExecution, states:DescribeExecution, states:GetExecutionHistory,
    states:DescribeStateMachine, and cloudformation:DescribeStacks without --state-machine-arn."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        payload = drill_input(args)
        target = target_for(args, args.state_machine_arn)
        arn = target.state_machine_arn
        if arn is None:
            if args.local_state is not None:
                raise InvalidInput(f"local state file {args.local_state} names no {LOCAL_STATE_MACHINE}; "
                                   "is the drill in the template?")
            arn = stack_state_machine(target.clients.client("cloudformation", target.region), args.stack)
        name = execution_name()
        try:
            started = target.sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
        except ClientError as e:
            raise InvalidInput(f"cannot start {arn}: {e}") from None
    except InvalidInput as e:
        return _fail(str(e))
    except BotoCoreError as e:
        return _fail(f"cannot reach Step Functions: {e}")
    execution_arn = started["executionArn"]
    _say(f"started {name} ({args.scenario}{' ' + args.path if args.path else ''}) in {target.where}")
    _say(f"  execution {execution_arn}")
    if args.no_wait:
        _say(f"  follow it with `regionha drill report {execution_arn}` once it has ended")
        return EXIT_PASSED
    try:
        desc = follow(target.sfn, execution_arn, wait_bound(target.sfn, arn), _say, args.poll_interval)
    except KeyboardInterrupt:
        # The execution goes on (and restores after itself); only the watching stops.
        _say(f"stopped watching; the drill goes on: {execution_arn}")
        return EXIT_FAILED
    return conclude(target, desc, args, _say)


def cmd_drill_report(args: argparse.Namespace) -> int:
    """IAM: states:DescribeExecution, states:GetExecutionHistory (s3:ListBucket, s3:GetObject with --bucket)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if args.local_state is None and _region_of(args.execution_arn) is None and args.region is None:
            raise InvalidInput(f"{args.execution_arn!r} is not an execution ARN (arn:aws:states:REGION:...)")
        target = target_for(args, None)
        desc = target.sfn.describe_execution(executionArn=args.execution_arn)
    except InvalidInput as e:
        return _fail(str(e))
    except ClientError as e:
        return _fail(f"cannot read execution {args.execution_arn}: {e}")
    except BotoCoreError as e:
        return _fail(f"cannot reach Step Functions: {e}")
    return conclude(target, desc, args, _say)


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("drill", help="run the failover drill and read its report")
    commands = group.add_subparsers(dest="drill_command", required=True, metavar="COMMAND")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--local-state", type=Path, metavar="FILE",
                       help="run against the local runtime of this state file (written by `regionha local up`)")
    where.add_argument("--region", help="the region of the state machine (default: from the ARN or the profile)")
    outputs = argparse.ArgumentParser(add_help=False)
    outputs.add_argument("--json", type=Path, metavar="PATH", help="write the report JSON here")
    outputs.add_argument("--html", type=Path, metavar="PATH", help="write the report as an HTML page here")

    start = commands.add_parser(
        "start", parents=[where, outputs],
        help="start a drill, show its progress, print its report",
        description="Start an execution of the drill state machine, print each state as it is entered and "
        "left, and the report's summary at the end. Exit 0 when the drill PASSED, 1 when it FAILED, 2 when "
        "it could not start.",
    )
    start.add_argument("--scenario", choices=SCENARIOS, default="acceptance",
                       help="acceptance (the 7 steps, default), fail-active-node, or cut-path (needs --path)")
    start.add_argument("--path", metavar="NAME", help="the forwarder path to cut (cut-path only)")
    start.add_argument("--state-machine-arn", metavar="ARN",
                       help=f"the drill state machine (default: output {STACK_OUTPUT} of the stack)")
    start.add_argument("--stack", default=STACK_NAME, help=f"CloudFormation stack name (default {STACK_NAME})")
    start.add_argument("--no-wait", action="store_true", help="print the execution ARN and return at once")
    start.add_argument("--poll-interval", type=_positive, default=2.0, metavar="S",
                       help="seconds between history reads (default 2)")
    start.set_defaults(handler=cmd_drill_start)

    report = commands.add_parser(
        "report", parents=[where, outputs],
        help="print (and render) the report of a finished drill execution",
        description="Read a finished drill execution's report and print its summary; write JSON/HTML if "
        "asked. Exit 0 when it PASSED, 1 when it FAILED or has no report yet, 2 when the execution cannot "
        "be read.",
    )
    report.add_argument("execution_arn", metavar="EXECUTION_ARN")
    report.add_argument("--bucket", help="also look for reports/<deployment>/<execution>.json in this S3 bucket")
    report.set_defaults(handler=cmd_drill_report)
