"""``regionha drill start|report``: run the drill state machine, and read its report.

``start`` starts an execution of the drill state machine (AWS: the ``DrillStateMachineArn`` output of
the stack, or ``--state-machine-arn``; or a running local runtime with ``--local-state``), follows its
history live until it ends and prints the report's summary. Every key of the drill's input
(``regionha.drill.DrillSettings``) is a flag: ``--scenario``, ``--region-path``,
``--step-timeout``, ``--poll-interval``, ``--alarm-timeout``... A flag left out is left out of the input,
so the state machine's own default applies. The input is checked offline first (exit 2, no AWS call).

On AWS a drill breaks a live deployment, so ``start`` first prints what it will break, computed
read-only from the deployment (the topology its build saved, the node the record names now, the
instances and network ACLs found by their tags): the instances it will stop and the NACL deny entries
it will add, in which VPC and region. Then it asks for confirmation; ``--yes`` skips the question,
``--dry-run`` prints the plan and changes nothing. Without a terminal to ask on, it refuses unless
``--yes`` is given.

``report`` reads the report of a finished execution (where it is looked for: ``regionha.cli.drill_report``).

Exit codes: 0 the drill PASSED (or the dry run printed its plan), 1 it FAILED (or ended without a
report, or is still running when the wait runs out, or confirmation was declined), 2 the command
could not run (bad input, no state machine, no credentials, access denied).

IAM: cloudformation:DescribeStacks; states:StartExecution, DescribeExecution, GetExecutionHistory,
DescribeStateMachine; for the plan dynamodb:GetItem (state table), route53:ListHostedZonesByName,
ListTagsForResources, ListResourceRecordSets, ec2:DescribeInstances, DescribeVpcs, DescribeSubnets,
DescribeNetworkAcls; s3:GetObject (and s3:ListBucket with --bucket) for stored reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from regionha.cli.drill_plan import confirm, drill_plan, plan_lines
from regionha.cli.drill_report import conclude
from regionha.cli.errors import explain, guarded
from regionha.cli.executions import execution_name, follow, wait_bound
from regionha.cli.output import EXIT_FAILED, EXIT_OK, CommandError, Out, positive
from regionha.cli.target import Target, add_target_arguments, region_of, state_machine, target_for
from regionha.drill.steps import SCENARIOS

LOCAL_STATE_MACHINE = "DrillStateMachine"
_HELP = {
    "deployment": "the deployment to drill (default: the drill function's DEPLOYMENT, the stack's parameter)",
    "scenario": "acceptance (the article's 7 steps, default), fail-active-node, or cut-path (needs --region-path)",
    "region_path": "the forwarder path to cut (cut-path only)",
    "poll_interval": "seconds between probe rounds of an observing step (default 0.5)",
    "step_timeout": "seconds a step may take to reach what it expects (default: its recovery budget)",
    "failback": "move the record back to the primary after restore (built-in mode; default yes)",
    "alarm_timeout": "seconds a fault is held for its alarms to go to ALARM (default 300)",
    "alarm_ok_timeout": "seconds to wait after restore for the watched alarms to be OK (default 420)",
    "rejoin_timeout": "seconds a restored node and its paths may take to be back (default 300)",
    "probe_timeout": "seconds one DNS probe may take (default: the topology's canary timeout)",
    "fault_ttl": "seconds after which the sweeper restores a fault left behind (default 3600)",
    "lock_ttl": "seconds after which a drill lock left behind is released (default 7200)",
    "cut": "how a path is cut: dns (deny UDP+TCP 53 from the client network, default) or all traffic",
    "cluster_action": "external mode: JSON (or @FILE) {document, commands, restore_commands} run by SSM",
    "detection_seconds": "seconds the failover may take to notice a failed node, for the recovery budget "
                         "(default 60)",
}


def _settings_fields() -> list[dataclasses.Field[Any]]:
    from regionha.drill import DrillSettings

    return list(dataclasses.fields(DrillSettings))


def flag_of(key: str) -> str:
    """The flag of a drill input key: the key itself (``region_path`` -> ``--region-path``), one name per idea."""
    return "--" + key.replace("_", "-")


def _json_object(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per key of the drill's input model, named after it (``step_timeout`` -> ``--step-timeout``)."""
    group = parser.add_argument_group("drill input (left out: the drill's default)")
    for f in _settings_fields():
        flag, dest, text = flag_of(f.name), f"input_{f.name}", _HELP.get(f.name, f.name)
        if f.name == "scenario":
            group.add_argument(flag, dest=dest, choices=SCENARIOS, default="acceptance", help=text)
        elif f.name == "failback":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.name == "cut":
            group.add_argument(flag, dest=dest, choices=("dns", "all"), default=None, help=text)
        elif f.name == "cluster_action":
            group.add_argument(flag, dest=dest, type=_json_object, default=None, metavar="JSON", help=text)
        elif "float" in str(f.type):
            group.add_argument(flag, dest=dest, type=float, default=None, metavar="S", help=text)
        else:
            group.add_argument(flag, dest=dest, default=None, metavar=f.name.split("_")[-1].upper(), help=text)


def drill_input(args: argparse.Namespace) -> dict[str, Any]:
    """The execution input from the flags given, checked as the drill will check it (no AWS call)."""
    from regionha.drill import DrillSettings
    from regionha.errors import ConfigurationError

    payload = {f.name: getattr(args, f"input_{f.name}") for f in _settings_fields()
               if getattr(args, f"input_{f.name}", None) is not None}
    if payload.get("scenario") == "cut-path" and not payload.get("region_path"):
        raise CommandError("--scenario cut-path needs --region-path NAME (the forwarder path to cut)")
    if payload.get("region_path") and payload.get("scenario") != "cut-path":
        raise CommandError(f"--region-path applies to --scenario cut-path only, not {payload.get('scenario')}")
    try:
        # The deployment is the drill function's unless given; any name checks the rest.
        DrillSettings.from_input(payload, payload.get("deployment") or "-")
    except ConfigurationError as e:
        message = str(e)
        for f in _settings_fields():
            message = message.replace(f.name, flag_of(f.name)) if f.name in message else message
        raise CommandError(message) from None
    return payload


# -- commands ------------------------------------------------------------------------------------------


def cmd_drill_start(args: argparse.Namespace) -> int:
    out = Out(args.output)
    holder: dict[str, Target] = {}

    def body() -> int:
        payload = drill_input(args)
        target = holder["t"] = target_for(args, args.state_machine_arn)
        arn = state_machine(target, args, LOCAL_STATE_MACHINE)
        plan = None
        if args.dry_run or not target.local:
            try:
                plan = drill_plan(target, args, payload)
            except CommandError as e:
                if args.dry_run or not args.yes:
                    raise
                # --yes on a stack whose deployment cannot be read: the drill's preflight will say why.
                out.line(f"no plan shown: {e}", "yellow")
            if plan is not None:
                for i, text in enumerate(plan_lines(plan)):
                    out.line(text, "bold" if i == 0 else None)
        if args.dry_run:
            out.result({"plan": plan, "input": payload, "state_machine_arn": arn})
            out.text("dry run: nothing was started")
            return EXIT_OK
        if not target.local and not confirm(out, args):
            out.line("not started")
            return EXIT_FAILED
        name = execution_name("drill")
        started = target.sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
        execution_arn = started["executionArn"]
        what = payload["scenario"] + (f" {payload['region_path']}" if payload.get("region_path") else "")
        out.line(f"started {name} ({what}) in {target.where}", "bold")
        out.line(f"  execution {execution_arn}", "dim")
        if args.no_wait:
            out.text(f"  read its report with `regionha drill report {execution_arn}` once it has ended")
            out.result({"execution": {"execution_arn": execution_arn, "name": name, "status": "RUNNING"},
                        "plan": plan})
            return EXIT_OK
        try:
            desc = follow(target.sfn, execution_arn, wait_bound(target.sfn, arn), out, args.refresh)
        except KeyboardInterrupt:
            # The execution goes on (and restores after itself); only the watching stops.
            out.line(f"stopped watching; the drill goes on and restores what it broke: {execution_arn}", "yellow")
            out.line(f"  to stop it: aws stepfunctions stop-execution --execution-arn {execution_arn} "
                     "(the sweeper then restores its faults; see docs/drill.md)")
            return EXIT_FAILED
        return conclude(target, desc, args, out, {"plan": plan})

    return guarded("regionha drill", out, body, lambda: holder.get("t"))


def cmd_drill_report(args: argparse.Namespace) -> int:
    out = Out(args.output)
    holder: dict[str, Target] = {}

    def body() -> int:
        if args.local_state is None and region_of(args.execution_arn) is None:
            raise CommandError(f"{args.execution_arn!r} is not an execution ARN (arn:aws:states:REGION:...)")
        target = holder["t"] = target_for(args, args.execution_arn)
        from botocore.exceptions import ClientError

        try:
            desc = target.sfn.describe_execution(executionArn=args.execution_arn)
        except ClientError as e:
            if explain(e, target) is not None:
                raise
            raise CommandError(f"cannot read execution {args.execution_arn}: {e}") from None
        return conclude(target, desc, args, out)

    return guarded("regionha drill", out, body, lambda: holder.get("t"))


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("drill", help="run the failover drill and read its report")
    commands = group.add_subparsers(dest="drill_command", required=True, metavar="COMMAND")
    outputs = argparse.ArgumentParser(add_help=False)
    outputs.add_argument("--report-json", type=Path, metavar="FILE", help="also write the report JSON to FILE")
    outputs.add_argument("--report-html", "--html", dest="report_html", type=Path, metavar="FILE",
                         help="also write the report as an HTML page to FILE")

    start = commands.add_parser(
        "start", parents=[outputs],
        help="show what a drill will break, start it, follow it, print its report",
        description="Print what the drill will break and ask (on AWS), start an execution of the drill state "
        "machine, print each state as it is entered and left, and the report's summary at the end. Exit 0 "
        "when the drill PASSED, 1 when it FAILED or was not confirmed, 2 when it could not start.",
    )
    add_target_arguments(start)
    add_input_arguments(start)
    start.add_argument("--state-machine-arn", metavar="ARN",
                       help="the drill state machine (default: output DrillStateMachineArn of the stack)")
    start.add_argument("--state-table", metavar="NAME",
                       help="the state table holding the inventory, for the plan (default: output StateTableName)")
    start.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    start.add_argument("--dry-run", action="store_true", help="print what the drill would break; start nothing")
    start.add_argument("--no-wait", action="store_true", help="print the execution ARN and return at once")
    start.add_argument("--refresh", type=positive, default=2.0, metavar="S",
                       help="seconds between reads of the execution history (default 2)")
    start.set_defaults(handler=cmd_drill_start)

    report = commands.add_parser(
        "report", parents=[outputs],
        help="print (and render) the report of a finished drill execution",
        description="Read a finished drill execution's report and print its summary; write JSON/HTML if "
        "asked. Exit 0 when it PASSED, 1 when it FAILED or has no report yet, 2 when the execution cannot "
        "be read.",
    )
    report.add_argument("execution_arn", metavar="EXECUTION_ARN")
    add_target_arguments(report, stack=False)
    report.add_argument("--bucket", help="also look for reports/<deployment>/<execution>.json in this S3 bucket")
    report.set_defaults(handler=cmd_drill_report)
