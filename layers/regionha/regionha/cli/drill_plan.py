"""What a drill will break, read-only, before it starts: the plan ``regionha drill start`` prints (and
``--dry-run`` stops at), and the confirmation it asks for on AWS.

IAM: cloudformation:DescribeStacks; dynamodb:GetItem (state table), route53:ListHostedZonesByName,
ListTagsForResources, ListResourceRecordSets, ec2:DescribeInstances, DescribeVpcs, DescribeSubnets,
DescribeNetworkAcls.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from regionha.cli.output import CommandError, Out
from regionha.cli.target import Target, describe_stack


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
