"""Where a command that drives the stack runs, the way the AWS CLI decides it.

- **Where**: AWS (a boto3 session from ``--profile``) or a running local runtime (``--local-state FILE``,
  the state file ``regionha local up`` writes; fixed credentials, a loopback endpoint).
- **Region**, first found: ``--region``; the region of an ARN the command was given; ``AWS_REGION``;
  ``AWS_DEFAULT_REGION``; the profile's ``region`` (the AWS CLI's order; botocore itself does not read
  ``AWS_REGION``).
- **State machines** from the CloudFormation stack's outputs (``--stack-name``, default ``regionha``):
  ``BuildStateMachineArn``, ``TeardownStateMachineArn``, ``DrillStateMachineArn``, ``StateTableName``;
  locally from the state file.

Errors are ``CommandError`` (exit 2) with what to do.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from regionha.cli.errors import explain, message_of
from regionha.cli.output import CommandError, add_output_argument

STACK_NAME = "regionha"


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
        raise CommandError(f"cannot read stack {stack} in {target.region}: {message_of(e)} "
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
    add_output_argument(parser)
