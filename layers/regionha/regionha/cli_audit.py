"""``regionha audit``: the readiness audit from the command line, against AWS or a local runtime.

Reads the topology the build saved with its inventory (like the scheduled ``AuditDeploymentFunction``),
describes the world (read-only calls) and prints one line per finding: ``KIND RESOURCE: REASON``.

Where: AWS by default (``--region``, ``--profile``; the state table and the deployment from the
CloudFormation stack's output ``StateTableName`` and parameter ``Deployment``, or ``--table`` and
``--deployment``), or a running local runtime (``--local-state FILE``, written by ``regionha local up``).

Exit codes: 0 no finding, 1 findings, 2 the audit could not run (bad arguments, no stack, no build).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_CLEAN, EXIT_FINDINGS, EXIT_INVALID = 0, 1, 2
STACK_NAME = "regionha"
# The local runtime names a template resource <stack>-<logical id> (regionha.local.provision).
LOCAL_TABLE_SUFFIX = "-StateTable"


class InvalidInput(Exception):
    """The audit cannot run as asked; the message says why (exit 2)."""


def _stack_settings(cloudformation: Any, stack: str) -> tuple[str | None, str | None]:
    """(state table, deployment) from the stack. IAM: cloudformation:DescribeStacks."""
    from botocore.exceptions import ClientError

    try:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        raise InvalidInput(f"cannot read stack {stack}: {e}; give --table and --deployment") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in (found[0].get("Outputs") or [])} if found else {}
    parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in (found[0].get("Parameters") or [])} \
        if found else {}
    return outputs.get("StateTableName"), parameters.get("Deployment")


def _aws(args: argparse.Namespace) -> tuple[Any, str, str, str]:
    import boto3

    from regionha.aws import Clients

    session = boto3.session.Session(profile_name=args.profile) if args.profile else boto3.session.Session()
    region = args.region or session.region_name
    if not region:
        raise InvalidInput("no region: give --region (the region of the regionha stack)")
    clients = Clients(session=session)
    table, deployment = args.table, args.deployment
    if not table or not deployment:
        stack_table, stack_deployment = _stack_settings(clients.client("cloudformation", region), args.stack)
        table, deployment = table or stack_table, deployment or stack_deployment
    if not table or not deployment:
        raise InvalidInput(f"stack {args.stack} names no StateTableName output or Deployment parameter; "
                           "give --table and --deployment")
    return clients, region, table, deployment


def _local(args: argparse.Namespace) -> tuple[Any, str, str, str]:
    import boto3

    from regionha.aws import Clients
    from regionha.cli_drill import InvalidInput as StateFileError
    from regionha.cli_drill import read_local_state

    try:
        state = read_local_state(args.local_state)
    except StateFileError as e:
        raise InvalidInput(str(e)) from None
    region = state["region"]
    # The emulated AWS checks no signature; fixed credentials keep a real profile out of it.
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region)
    clients = Clients(session=session, endpoint_url=state["endpoint_url"])
    deployment = args.deployment or state.get("deployment")
    table = args.table
    if not table:
        tables = [t for t in clients.client("dynamodb", region).list_tables()["TableNames"]
                  if t.endswith(LOCAL_TABLE_SUFFIX)]
        if len(tables) != 1:
            raise InvalidInput(f"local runtime at {state['endpoint_url']}: expected one *{LOCAL_TABLE_SUFFIX} "
                               f"table, found {tables}; give --table")
        table = tables[0]
    if not deployment:
        raise InvalidInput(f"local state file {args.local_state} names no deployment; give --deployment")
    return clients, region, table, deployment


def cmd_audit(args: argparse.Namespace) -> int:
    """IAM: those of ``regionha.audit.describe_world``, dynamodb:GetItem, and cloudformation:DescribeStacks
    without --table/--deployment."""
    from botocore.exceptions import BotoCoreError, ClientError

    from regionha import audit, canary
    from regionha.errors import ConfigurationError

    try:
        clients, region, table, deployment = _local(args) if args.local_state is not None else _aws(args)
        topology = canary.deployment_topology(clients, table, region, deployment)
        findings = audit.audit(topology, audit.describe_world(topology, clients, table=table, table_region=region))
    except (InvalidInput, ConfigurationError) as e:
        print(f"regionha audit: {e}", file=sys.stderr)
        return EXIT_INVALID
    except (BotoCoreError, ClientError) as e:
        print(f"regionha audit: cannot read the deployment: {e}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps({"deployment": deployment, "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        for finding in findings:
            print(finding)
        print(f"{deployment}: {len(findings)} finding{'s' if len(findings) != 1 else ''}", file=sys.stderr)
    return EXIT_FINDINGS if findings else EXIT_CLEAN


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="compare the built world with the topology (read-only), one line per finding",
        description="Readiness audit: describe the deployment (read-only calls) and compare it with the topology "
        "its build saved. Prints KIND RESOURCE: REASON per finding. Exit 0 none, 1 findings, 2 could not run.")
    parser.add_argument("--local-state", type=Path, metavar="FILE",
                        help="audit the local runtime of this state file (written by `regionha local up`)")
    parser.add_argument("--region", help="the region of the regionha stack (default: the profile's)")
    parser.add_argument("--profile", help="the AWS profile to use (default: the environment's credentials)")
    parser.add_argument("--stack", default=STACK_NAME, help=f"CloudFormation stack name (default {STACK_NAME})")
    parser.add_argument("--table", help="the state table (default: the stack's StateTableName output)")
    parser.add_argument("--deployment", help="the deployment (default: the stack's Deployment parameter)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(handler=cmd_audit)
