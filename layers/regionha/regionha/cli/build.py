"""``regionha build`` and ``regionha teardown``: run the stack's build or teardown state machine and watch it.

``build --topology F`` checks F offline first (exit 2 with the validator's ``FILE: field: message``
lines, no AWS call), then passes it inline (``{"topology": <dict>}``) in the execution input; without
``--topology`` the build converges the shipped reference deployment (``{"topology_file": ...}``).
``teardown`` tears down ``--topology F`` if given, else the topology the last build saved with its
inventory (the stack's ``StateTableName`` output, key = the stack's ``Deployment`` parameter), else
the reference deployment: a teardown must remove what was built, not what the default says.

Flags, region and output: see ``regionha.cli.target`` and ``regionha.cli.output``. Exit 0 SUCCEEDED,
1 failed/timed out/aborted or still running when the wait runs out (``--no-wait`` returns at once with 0),
2 could not start.

IAM: cloudformation:DescribeStacks (without --state-machine-arn), states:StartExecution,
states:DescribeExecution, states:GetExecutionHistory, states:DescribeStateMachine; teardown without
--topology also dynamodb:GetItem on the state table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from regionha.cli.errors import guarded
from regionha.cli.executions import execution_json, execution_name, follow, outcome_counts, wait_bound
from regionha.cli.output import EXIT_FAILED, EXIT_INVALID, EXIT_OK, Out, positive
from regionha.cli.target import Target, add_target_arguments, describe_stack, state_machine, target_for
from regionha.topology import DEFAULT_TOPOLOGY, TopologyError, _one_line, load_topology


def topology_input(path: Path | None, out: Out, prog: str) -> dict[str, Any] | int:
    """The execution input for ``--topology``: validated offline; exit code 2 (lines on stderr) if invalid."""
    if path is None:
        return {"topology_file": DEFAULT_TOPOLOGY}
    try:
        topology = load_topology(path)
    except TopologyError as e:
        for problem in e.problems:
            out.errors.print(f"{e.source}: {problem.field}: {_one_line(problem.message)}", markup=False)
        return EXIT_INVALID
    return {"topology": topology.to_json()}


def saved_topology(target: Target, args: argparse.Namespace) -> dict[str, Any] | None:
    """The topology the last build saved with its inventory, or None (no table output, no build)."""
    from regionha.inventory import load_inventory

    if target.local:
        return None
    stack = describe_stack(target, args.stack_name)
    table, deployment = stack.outputs.get("StateTableName"), stack.parameters.get("Deployment")
    if not table or not deployment:
        return None
    inventory = load_inventory(target.clients, table, target.region, deployment)
    return (inventory or {}).get("topology") or None


def run(args: argparse.Namespace, kind: str, logical_id: str) -> int:
    out = Out(args.output)
    holder: dict[str, Target] = {}

    def body() -> int:
        payload = topology_input(args.topology, out, f"regionha {kind}")
        if isinstance(payload, int):
            return payload
        target = holder["t"] = target_for(args, args.state_machine_arn)
        arn = state_machine(target, args, logical_id)
        if kind == "teardown" and args.topology is None and (saved := saved_topology(target, args)):
            payload = {"topology": saved}
            out.line(f"tearing down deployment {saved.get('deployment')} as its last build saved it")
        name = execution_name(kind)
        started = target.sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
        execution_arn = started["executionArn"]
        out.line(f"started {kind} {name} in {target.where}", "bold")
        out.line(f"  execution {execution_arn}", "dim")
        if args.no_wait:
            out.text(f"  watch it with `aws stepfunctions describe-execution --execution-arn {execution_arn}`")
            out.result({"execution_arn": execution_arn, "name": name, "status": "RUNNING"})
            return EXIT_OK
        try:
            desc = follow(target.sfn, execution_arn, wait_bound(target.sfn, arn), out, args.refresh)
        except KeyboardInterrupt:
            # The execution goes on; only the watching stops (stop it with StopExecution if you mean to).
            out.line(f"stopped watching; the {kind} goes on: {execution_arn}", "yellow")
            return EXIT_FAILED
        document = execution_json(desc) | {"summary": outcome_counts(execution_json(desc)["output"])}
        out.result(document)
        return conclude(out, kind, document)

    return guarded(f"regionha {kind}", out, body, lambda: holder.get("t"))


def conclude(out: Out, kind: str, document: dict[str, Any]) -> int:
    status = document["status"]
    took = f" in {document['seconds']:.1f} s" if document.get("seconds") is not None else ""
    if status == "SUCCEEDED":
        counts = ", ".join(f"{v} {k}" for k, v in sorted(document["summary"].items()))
        out.text(f"{kind} SUCCEEDED{took}" + (f": {counts}" if counts else ""), "bold green")
        placement = ((document.get("output") or {}).get("canary") or {}).get("placement") or {}
        if kind == "build" and placement.get("status") == "agent":  # an on-prem site (docs/onprem.md)
            out.text(f"on-prem site: {placement.get('command')}", "yellow")
        elif kind == "build" and placement.get("status") not in (None, "placed"):
            # CloudFormation owns the canary's VpcConfig: one stack update puts it in the client network.
            out.text(f"canary not in the client network yet; run once: {placement.get('command')}", "yellow")
        return EXIT_OK
    if status == "RUNNING":
        out.text(f"{kind} is still RUNNING; watching stopped at the state machine's timeout", "yellow")
        return EXIT_FAILED
    reason = ": ".join(str(p) for p in (document.get("error"), document.get("cause")) if p)
    from regionha.drill.report import error_text

    out.text(f"{kind} {status}{took}" + (f": {error_text(reason)}" if reason else ""), "bold red")
    return EXIT_FAILED


def cmd_build(args: argparse.Namespace) -> int:
    return run(args, "build", "BuildStateMachine")


def cmd_teardown(args: argparse.Namespace) -> int:
    return run(args, "teardown", "TeardownStateMachine")


def add_execution_arguments(parser: argparse.ArgumentParser, output_key: str) -> None:
    parser.add_argument("--state-machine-arn", metavar="ARN",
                        help=f"the state machine (default: output {output_key} of the stack)")
    parser.add_argument("--no-wait", action="store_true", help="print the execution ARN and return at once")
    parser.add_argument("--refresh", type=positive, default=2.0, metavar="S",
                        help="seconds between reads of the execution history (default 2)")


def register(subparsers: Any) -> None:
    for kind, handler, verb in (("build", cmd_build, "converge the deployment to the topology"),
                                ("teardown", cmd_teardown, "remove everything the build made")):
        parser = subparsers.add_parser(
            kind, help=f"{verb} (runs the stack's {kind} state machine and shows its progress)",
            description=f"Start the {kind} state machine of the stack (AWS, or --local-state), print each "
            "state as it is entered and left, and a summary at the end. Exit 0 SUCCEEDED, 1 failed or "
            "still running, 2 could not start.")
        parser.add_argument("--topology", type=Path, metavar="FILE",
                            help="topology YAML, checked offline first (default: " + (
                                "the shipped reference deployment)" if kind == "build"
                                else "the topology the last build saved, else the reference deployment)"))
        add_target_arguments(parser)
        add_execution_arguments(parser, f"{kind.capitalize()}StateMachineArn")
        parser.set_defaults(handler=handler)

