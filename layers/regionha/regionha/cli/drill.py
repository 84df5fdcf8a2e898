"""``regionha drill start|report``: run the drill state machine, and read its report.

``start`` starts an execution of the drill state machine (AWS: the ``DrillStateMachineArn`` output of
the stack, or ``--state-machine-arn``; or a running local runtime with ``--local-state``), follows its
history live until it ends and prints the report's summary. Every key of the drill's input
(``regionha.drill.DrillSettings``) is a flag: ``--scenario``, ``--path`` (``region_path``),
``--step-timeout``, ``--poll-interval``, ``--alarm-timeout``... A flag left out is left out of the input,
so the state machine's own default applies. The input is checked offline first (exit 2, no AWS call).

On AWS a drill breaks a live deployment, so ``start`` first prints what it will break, computed
read-only from the deployment (the topology its build saved, the node the record names now, the
instances and network ACLs found by their tags): the instances it will stop and the NACL deny entries
it will add, in which VPC and region. Then it asks for confirmation; ``--yes`` skips the question,
``--dry-run`` prints the plan and changes nothing. Without a terminal to ask on, it refuses unless
``--yes`` is given.

``report`` reads the report of a finished execution. The drill's ``Report`` state puts the report JSON
in S3 and leaves ``{"status", "recovery_seconds", "json": "s3://..."}`` at ``$.report``; an execution
that ends in ``DrillFailed`` has no output at all. So the report is looked for in the execution output,
then in the outputs of its states (newest first): a whole report inline, else the S3 object the
``json`` pointer names, else (``--bucket``) ``reports/<deployment>/<execution name>.json``, else the
bare status and recovery figures.

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
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from regionha.cli.aws import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    Out,
    Target,
    add_target_arguments,
    describe_stack,
    execution_json,
    execution_name,
    explain,
    follow,
    guarded,
    new_events,
    one_line,
    positive,
    region_of,
    state_machine,
    target_for,
    wait_bound,
)
from regionha.cli.aws import details as _details
from regionha.drill.steps import SCENARIOS

EXIT_PASSED = EXIT_OK
LOCAL_STATE_MACHINE = "DrillStateMachine"
# The CLI's flag for an input key, where it is not the key itself.
_FLAG_NAMES = {"region_path": "--path"}
_HELP = {
    "deployment": "the deployment to drill (default: the drill function's DEPLOYMENT, the stack's parameter)",
    "scenario": "acceptance (the article's 7 steps, default), fail-active-node, or cut-path (needs --path)",
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
}


def _settings_fields() -> list[dataclasses.Field[Any]]:
    from regionha.drill import DrillSettings

    return list(dataclasses.fields(DrillSettings))


def flag_of(key: str) -> str:
    return _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


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
        raise CommandError("--scenario cut-path needs --path NAME (the forwarder path to cut)")
    if payload.get("region_path") and payload.get("scenario") != "cut-path":
        raise CommandError(f"--path applies to --scenario cut-path only, not {payload.get('scenario')}")
    try:
        # The deployment is the drill function's unless given; any name checks the rest.
        DrillSettings.from_input(payload, payload.get("deployment") or "-")
    except ConfigurationError as e:
        message = str(e)
        for f in _settings_fields():
            message = message.replace(f.name, flag_of(f.name)) if f.name in message else message
        raise CommandError(message) from None
    return payload


# -- the plan: what a drill will break --------------------------------------------------------------


def drill_plan(target: Target, args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    """What the drill will break, read-only: per inject step, the faults with instance ids and NACL entries.

    ``{"deployment", "active", "steps": [{"id", "name", "kind", "faults": [...]}]}``; node faults carry
    ``instance_id`` and ``region``, path faults ``region``, ``vpc``, ``cidr`` and ``entries``
    (``nacl``, ``rule``, ``protocol``). CommandError when the deployment cannot be read.
    """
    from regionha import drill
    from regionha.converge.dns import read_record
    from regionha.drill import faults
    from regionha.errors import ConfigurationError
    from regionha.watch.canary import deployment_topology

    stack = describe_stack(target, args.stack_name)
    table = args.state_table or stack.outputs.get("StateTableName") or _local_table(target)
    deployment = payload.get("deployment") or stack.parameters.get("Deployment")
    if not table or not deployment:
        raise CommandError(f"stack {stack.name} names no StateTableName output or Deployment parameter; "
                           "give --state-table and --deployment")
    try:
        topology = deployment_topology(target.clients, table, target.region, deployment)
        settings = drill.DrillSettings.from_input(payload, deployment)
        record = read_record(topology, target.clients)
        active = next((n.name for n in topology.nodes if record and str(n.ip) == record["ip"]), None)
        steps = []
        for spec in drill.plan(topology, settings, active):
            found = []
            for fault in spec.get("faults") or []:
                if spec["kind"] != "inject":
                    continue
                if fault["kind"] == faults.NODE:
                    found.append(faults.node_fault(topology, target.clients, fault["target"], settings.cluster_action))
                else:
                    path = faults.path_fault(topology, target.clients, fault["target"], settings.cut)
                    path["vpc"] = next(p.vpc for p in topology.forwarder_paths if p.name == fault["target"])
                    found.append(path)
            steps.append({"id": spec["id"], "name": spec["name"], "kind": spec["kind"], "faults": found})
    except ConfigurationError as e:
        raise CommandError(f"cannot plan the drill: {e}") from None
    return {"deployment": deployment, "mode": topology.failover.mode, "active": active,
            "record": record, "scenario": settings.scenario, "steps": steps}


def _local_table(target: Target) -> str | None:
    """The local runtime's state table (the stack's ``StateTable``), when it can be told apart."""
    if not target.local:
        return None
    tables = target.clients.client("dynamodb", target.region).list_tables().get("TableNames") or []
    named = [t for t in tables if t.endswith("StateTable")]
    return (named or tables)[0] if len(named or tables) == 1 else None


def plan_lines(plan: dict[str, Any]) -> Iterator[str]:
    yield (f"drill {plan['scenario']} on deployment {plan['deployment']} ({plan['mode']} mode); "
           f"the record names {plan['active'] or 'no node'}")
    for step in plan["steps"]:
        if not step["faults"]:
            continue
        yield f"  {step['name']}:"
        for f in step["faults"]:
            if f["kind"] == "node" and f.get("method") == "ssm":
                yield (f"    run {f['document']} on {f['instance_id']} ({f['target']}, {f['region']}): "
                       f"{'; '.join(f['commands'])}")
            elif f["kind"] == "node":
                yield f"    stop instance {f['instance_id']} ({f['target']}, {f['region']})"
            else:
                for e in f["entries"]:
                    protocol = {"17": "UDP 53", "6": "TCP 53", "-1": "all traffic"}.get(e["protocol"], e["protocol"])
                    yield (f"    add NACL entry {e['nacl']} rule {e['rule']}: inbound deny {protocol} from "
                           f"{f['cidr']} (path {f['target']}, VPC {f['vpc']}, {f['region']})")
    yield "  every fault is restored after the last step or any failure (the sweeper restores what a stopped"
    yield "  execution leaves behind); see docs/drill.md"


def confirm(out: Out, args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise CommandError("a drill breaks the live deployment: confirm on a terminal, or pass --yes "
                           "(--dry-run prints the plan only)")
    from rich.prompt import Confirm

    return Confirm.ask("Start this drill?", console=out.console, default=False)



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


def write_outputs(report: dict[str, Any], json_path: Path | None, html_path: Path | None, out: Out) -> None:
    from regionha.drill.report import render_html

    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        out.line(f"report JSON: {json_path}")
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(report), encoding="utf-8")
        out.line(f"report HTML: {html_path}")


def conclude(target: Target, desc: dict[str, Any], args: argparse.Namespace, out: Out,
             extra: dict[str, Any] | None = None) -> int:
    from regionha.drill.report import summary_text

    document: dict[str, Any] = {"execution": execution_json(desc), "report": None} | (extra or {})
    if desc["status"] == "RUNNING":
        out.text(f"execution {desc['executionArn']} is still RUNNING; no report yet "
                 f"(read it later with `regionha drill report {desc['executionArn']}`)", "yellow")
        out.result(document)
        return EXIT_FAILED
    report = find_report(target, desc, getattr(args, "bucket", None))
    document["report"] = report
    out.result(document)
    if report is None:
        reason = ": ".join(one_line(p) for p in (desc.get("error"), desc.get("cause")) if p)
        out.text(f"execution {desc['status']} without a drill report" + (f" ({reason})" if reason else ""),
                 "bold red")
        return EXIT_FAILED
    passed = report.get("status") == "PASSED" and desc["status"] == "SUCCEEDED"
    for i, text in enumerate(summary_text(report).splitlines()):
        out.text(text, ("bold green" if passed else "bold red") if i == 0 else None)
    write_outputs(report, args.report_json, args.html, out)
    return EXIT_PASSED if passed else EXIT_FAILED


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
    outputs.add_argument("--report-json", type=Path, metavar="PATH", help="also write the report JSON here")
    outputs.add_argument("--html", type=Path, metavar="PATH", help="also write the report as an HTML page here")

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
