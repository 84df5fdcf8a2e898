"""``regionha audit``: the readiness audit from the command line, against AWS or a local runtime.

Reads the topology the build saved with its inventory (like the scheduled ``AuditDeploymentFunction``),
describes the world (read-only calls) and prints one line per finding: ``KIND RESOURCE: REASON``.

Where: AWS by default (``--profile``, ``--region``, ``--stack-name``: the state table and the deployment
from the CloudFormation stack's output ``StateTableName`` and parameter ``Deployment``, or ``--table`` and
``--deployment``), or a running local runtime (``--local-state FILE``, written by ``regionha local up``).
The flags mean what they mean in ``regionha build``/``drill`` (``regionha.cli.target``, ``regionha.cli.output``).

The failover controller (its ``controller-missing``/``controller-disabled`` kinds) is the one the scheduled
audit checks: ``--controller FUNCTION``, else the stack's output ``FailoverControllerFunctionName`` (locally:
the emulator's one ``*-FailoverControllerFunction`` in the region).

Exit codes: 0 no finding, 1 findings, 2 the audit could not run (bad arguments, no stack, no build).
"""

from __future__ import annotations

import argparse
from typing import Any

from regionha.cli.errors import guarded
from regionha.cli.output import CommandError, Out
from regionha.cli.target import Target, add_target_arguments, describe_stack, target_for

EXIT_CLEAN, EXIT_FINDINGS = 0, 1
# The local runtime names a template resource <stack>-<logical id> (regionha.local.aws.provision).
LOCAL_TABLE_SUFFIX = "-StateTable"
LOCAL_CONTROLLER_SUFFIX = "-FailoverControllerFunction"
CONTROLLER_OUTPUT = "FailoverControllerFunctionName"


def _table_and_deployment(target: Target, args: argparse.Namespace) -> tuple[str, str]:
    """The state table and deployment: flags, else the stack (locally: the state file and the emulator).

    IAM: cloudformation:DescribeStacks (AWS, without --table/--deployment).
    """
    table, deployment = args.table, args.deployment
    if target.local:
        deployment = deployment or target.local_state.get("deployment")
        if not table:
            names = target.clients.client("dynamodb", target.region).list_tables()["TableNames"]
            tables = [t for t in names if t.endswith(LOCAL_TABLE_SUFFIX)]
            if len(tables) != 1:
                raise CommandError(f"{target.where}: expected one *{LOCAL_TABLE_SUFFIX} table, found "
                                           f"{tables}; give --table")
            table = tables[0]
        if not deployment:
            raise CommandError(f"local state file {args.local_state} names no deployment; give --deployment")
        return table, deployment
    if not table or not deployment:
        stack = describe_stack(target, args.stack_name)
        table = table or stack.outputs.get("StateTableName")
        deployment = deployment or stack.parameters.get("Deployment")
    if not table or not deployment:
        raise CommandError(f"stack {args.stack_name} names no StateTableName output or Deployment "
                                   "parameter; give --table and --deployment")
    return table, deployment


def _controller(target: Target, args: argparse.Namespace) -> str:
    """The failover controller's function: ``--controller``, else the stack's output (locally: the emulator's
    one function named ``*-FailoverControllerFunction`` in the region).

    IAM: cloudformation:DescribeStacks (AWS, without --controller); locally lambda:ListFunctions.
    """
    if args.controller:
        return args.controller
    if target.local:
        pages = target.clients.client("lambda", target.region).get_paginator("list_functions").paginate()
        names = [f["FunctionName"] for page in pages for f in page["Functions"]]
        found = [n for n in names if n.endswith(LOCAL_CONTROLLER_SUFFIX)]
        if len(found) != 1:
            raise CommandError(f"{target.where}: expected one *{LOCAL_CONTROLLER_SUFFIX} function, found "
                               f"{found}; give --controller")
        return found[0]
    function = describe_stack(target, args.stack_name).outputs.get(CONTROLLER_OUTPUT)
    if not function:
        raise CommandError(f"stack {args.stack_name} has no {CONTROLLER_OUTPUT} output (deployed before it "
                           "existed? `sam deploy` again); give --controller")
    return function


def cmd_audit(args: argparse.Namespace) -> int:
    """IAM: those of ``regionha.watch.audit.describe_world`` (with its controller's: lambda:GetFunction,
    events:ListRuleNamesByTarget, events:DescribeRule), dynamodb:GetItem, and cloudformation:DescribeStacks
    without --table/--deployment or --controller (locally lambda:ListFunctions)."""
    out = Out(args.output)
    found: dict[str, Target] = {}

    def body() -> int:
        from regionha.errors import ConfigurationError
        from regionha.watch import audit, canary

        target = found["target"] = target_for(args)
        table, deployment = _table_and_deployment(target, args)
        try:
            topology = canary.deployment_topology(target.clients, table, target.region, deployment)
        except ConfigurationError as e:
            raise CommandError(str(e)) from None
        # The stack's failover controller, as the scheduled audit checks it (controller-missing/-disabled).
        try:
            controller: str | None = _controller(target, args)
        except CommandError as e:
            if target.local or not (args.table and args.deployment):
                raise
            # Table and deployment given by hand, no stack to read: audit the rest, and say what is not.
            out.errors.print(f"the failover controller is not checked ({e})")
            controller = None
        world = audit.describe_world(topology, target.clients, table=table, table_region=target.region,
                                     controller=controller)
        findings = audit.audit(topology, world)
        out.result({"deployment": deployment, "findings": [f.to_json() for f in findings]})
        for finding in findings:
            out.text(str(finding))
        if not out.json:
            out.errors.print(f"{deployment}: {len(findings)} finding{'s' if len(findings) != 1 else ''}")
        return EXIT_FINDINGS if findings else EXIT_CLEAN

    return guarded("regionha audit", out, body, lambda: found.get("target"))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="compare the built world with the topology (read-only), one line per finding",
        description="Readiness audit: describe the deployment (read-only calls) and compare it with the topology "
        "its build saved. Prints KIND RESOURCE: REASON per finding. Exit 0 none, 1 findings, 2 could not run.")
    add_target_arguments(parser)
    parser.add_argument("--table", help="the state table (default: the stack's StateTableName output)")
    parser.add_argument("--deployment", help="the deployment (default: the stack's Deployment parameter)")
    parser.add_argument("--controller", metavar="FUNCTION",
                        help="the failover controller's function name or ARN (default: the stack's "
                        f"{CONTROLLER_OUTPUT} output)")
    parser.set_defaults(handler=cmd_audit)
