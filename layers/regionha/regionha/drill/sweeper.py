"""What drills left behind, found and put back: the scheduled sweeper (``sweep``: fault items that
outlived their expiry or their execution), orphaned NACL entries (``sweep_orphans``: a drill's deny
entry whose fault item is gone), and the reserved-range entries a refused preflight names
(``left_in_reserved_range``). Reads only the state table and the NACLs; restores through
regionha.drill.faults, so the drill's own restore and the sweeper may both run, in any order.

Nothing is put back silently: ``swept_datapoints`` turns what was restored or removed into the metric
``DrillFaultSwept`` (dimensions Deployment, Kind: ``path``, ``node`` or ``orphaned-entry``), published
by the scheduled function through ``regionha.watch.metrics`` beside a warning per item: a drill left
something broken until the sweeper came (docs/runbook.md, "A drill fault was swept").

IAM: dynamodb:Scan/Query/DeleteItem on the state table, ec2:DescribeVpcs, ec2:DescribeNetworkAcls,
ec2:DeleteNetworkAclEntry, ec2:DeleteTags, and what restoring a fault needs (regionha.drill.faults).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.aws import deployment_filter
from regionha.drill.faults import (
    _MAX_PAGES,
    DRILL_TAG,
    RULE_FIRST,
    RULE_LAST,
    FaultStore,
    _code,
    _ours,
    all_faults,
    restore_fault,
)
from regionha.drill.steps import NODE, PATH
from regionha.errors import TransientError
from regionha.watch.metrics import Datapoint

SWEPT_METRIC = "DrillFaultSwept"
ORPHANED_ENTRY = "orphaned-entry"  # the Kind of a drill's NACL entry no fault item recorded

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology

# --- entries in the reserved range, recorded or not ----------------------------------------------------


def entry_text(entry: dict[str, Any]) -> str:
    """One NACL entry as a person reads it: ``deny 10.2.10.0/24 udp/53 inbound``."""
    protocol = {"-1": "all", "6": "tcp", "17": "udp", "1": "icmp"}.get(str(entry.get("Protocol")),
                                                                        f"protocol {entry.get('Protocol')}")
    ports = entry.get("PortRange") or {}
    if protocol != "all" and ports.get("From") is not None:
        low, high = ports["From"], ports.get("To", ports["From"])
        protocol += f"/{low}" if low == high else f"/{low}-{high}"
    direction = "outbound" if entry.get("Egress") else "inbound"
    return f"{entry.get('RuleAction')} {entry.get('CidrBlock') or entry.get('Ipv6CidrBlock')} {protocol} {direction}"


def reserved_denies(acl: dict[str, Any]) -> list[dict[str, Any]]:
    """The deny entries of a described NACL whose rule number is in the drill's reserved range."""
    return sorted(
        (e for e in acl.get("Entries", [])
         if e.get("RuleAction") == "deny" and RULE_FIRST <= int(e["RuleNumber"]) <= RULE_LAST),
        key=lambda e: (bool(e.get("Egress")), int(e["RuleNumber"])),
    )


def drill_shaped(entry: dict[str, Any], cidr: str) -> bool:
    """Is this reserved-range entry one a drill makes (inbound deny from the client network, DNS or
    all traffic)? On a NACL with the drill marker it is a drill's, recorded or not (``left_by_drill``)."""
    if not RULE_FIRST <= int(entry["RuleNumber"]) <= RULE_LAST:
        return False
    return any(_ours(entry, {"protocol": p}, cidr) for p in ("17", "6", "-1"))


def drill_tagged(acl: dict[str, Any]) -> bool:
    """Does the described NACL carry the marker a drill puts on what it cuts?"""
    return any(t.get("Key") == DRILL_TAG for t in acl.get("Tags") or [])


def left_by_drill(acl: dict[str, Any], entry: dict[str, Any], cidr: str) -> bool:
    """A drill's entry, recorded or not: drill-shaped, on a NACL that carries the drill marker. An
    untagged NACL's entries are someone else's (a hand-made cut), whatever their shape."""
    return drill_tagged(acl) and drill_shaped(entry, cidr)


def recorded_entries(fault_items: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """(nacl, rule) -> the path fault item that lists it."""
    return {(e["nacl"], int(e["rule"])): f for f in fault_items if f.get("kind") == PATH for e in f.get("entries", [])}


def left_in_reserved_range(
    topology: Topology, clients: Clients, fault_items: Iterable[dict[str, Any]] = ()
) -> list[str]:
    """One line per deny entry in the reserved range of the deployment's NACLs, saying whose it is:
    what a refused preflight names as left broken.

    IAM: ec2:DescribeVpcs, ec2:DescribeNetworkAcls.
    """
    recorded = recorded_entries(fault_items)
    cidr = str(topology.client.cidr)
    lines = []
    for vpc in topology.vpcs:
        ec2 = clients.ec2(vpc.region)
        for found in ec2.describe_vpcs(Filters=deployment_filter(topology.deployment, vpc.name))["Vpcs"]:
            acls = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [found["VpcId"]]}])["NetworkAcls"]
            for acl in acls:
                for entry in reserved_denies(acl):
                    key = (acl["NetworkAclId"], int(entry["RuleNumber"]))
                    if key in recorded:
                        whose = f"of drill {recorded[key].get('execution')} (fault recorded)"
                    elif left_by_drill(acl, entry, cidr):
                        whose = "left by a drill (no fault recorded)"
                    else:
                        whose = f"in the drill's reserved range {RULE_FIRST}-{RULE_LAST}, made by no drill"
                    lines.append(f"nacl {key[0]} ({vpc.name}) rule {key[1]} {entry_text(entry)} {whose}")
    return lines


def sweep_orphans(
    clients: Clients,
    deployment: str,
    client_cidr: str,
    vpcs: Iterable[tuple[str, str]],
    *,
    lock_held: bool,
    fault_items: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Delete the drill entries (``left_by_drill``) of the reserved range in the NACLs of ``vpcs``
    ((region, vpc id) pairs) that no remaining fault item lists, and the NACL's drill tag with its last one.

    Nothing is touched while a drill holds the deployment's lock (``lock_held``): its entries may be
    recorded a moment after they are made. An entry that is not a drill's is never deleted.

    IAM: ec2:DescribeNetworkAcls, ec2:DeleteNetworkAclEntry, ec2:DeleteTags.
    """
    if lock_held:
        return []
    recorded = recorded_entries(fault_items)
    removed = []
    for region, vpc_id in vpcs:
        ec2 = clients.ec2(region)
        for acl in ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkAcls"]:
            nacl = acl["NetworkAclId"]
            if not drill_tagged(acl):
                continue
            denies = reserved_denies(acl)
            orphans = [e for e in denies
                       if drill_shaped(e, client_cidr) and (nacl, int(e["RuleNumber"])) not in recorded]
            for entry in orphans:
                try:
                    ec2.delete_network_acl_entry(NetworkAclId=nacl, RuleNumber=entry["RuleNumber"], Egress=False)
                except ClientError as e:
                    if _code(e) != "InvalidNetworkAclEntry.NotFound":
                        raise
                removed.append({"deployment": deployment, "region": region, "nacl": nacl,
                                "rule": int(entry["RuleNumber"]), "entry": entry_text(entry)})
            # The marker goes with the last drill entry; a recorded one keeps it.
            if len(orphans) == len([e for e in denies if drill_shaped(e, client_cidr)]):
                ec2.delete_tags(Resources=[nacl], Tags=[{"Key": DRILL_TAG}])
    return removed


def sweep_all_orphans(
    clients: Clients, table: str, region: str, *, lock_held: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """``sweep_orphans`` for every deployment with a saved inventory (its VPC ids and client network),
    sparing the entries of the fault items still recorded after the fault sweep.

    IAM: dynamodb:Scan, and those of ``sweep_orphans``.
    """
    from regionha.inventory import INVENTORY_SK

    ddb = clients.client("dynamodb", region)
    kwargs: dict[str, Any] = {"TableName": table, "FilterExpression": "sk = :inventory",
                              "ExpressionAttributeValues": {":inventory": {"S": INVENTORY_SK}}, "ConsistentRead": True}
    inventories: list[dict[str, Any]] = []
    for _ in range(_MAX_PAGES):
        page = ddb.scan(**kwargs)
        inventories += [json.loads(i["body"]["S"]) for i in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    remaining = all_faults(clients, table, region) if inventories else []
    removed: list[dict[str, Any]] = []
    for inv in inventories:
        deployment = inv["deployment"]
        vpcs = [(v["region"], v["id"]) for v in (inv.get("vpcs") or {}).values()]
        removed += sweep_orphans(
            clients, deployment, str(inv["topology"]["client"]["cidr"]), vpcs, lock_held=lock_held(deployment),
            fault_items=[f for f in remaining if f.get("deployment") == deployment])
    return removed


# --- applying and restoring any fault -----------------------------------------------------------------


# --- the sweeper -----------------------------------------------------------------------------------


def sweep(
    clients: Clients,
    table: str,
    region: str,
    *,
    now: float | None = None,
    execution_status: Callable[[str], str | None] | None = None,
    faults: Iterable[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Restore and forget every fault that expired, or whose execution is no longer running.

    ``execution_status(arn)`` returns a Step Functions execution's status (None: unknown); without it
    only the expiry counts. A fault whose restore fails stays for the next sweep.

    IAM: dynamodb:Scan, dynamodb:DeleteItem, states:DescribeExecution, and the restore actions
    (ec2:DescribeNetworkAcls, ec2:DeleteNetworkAclEntry, ec2:DeleteTags, ec2:DescribeInstances,
    ec2:StartInstances, ssm:SendCommand).
    """
    now = time.time() if now is None else now
    results = []
    for fault in faults if faults is not None else all_faults(clients, table, region):
        why = None
        if fault["expires_at"] <= now:
            why = "expired"
        elif execution_status is not None and fault.get("execution_arn"):
            status = execution_status(fault["execution_arn"])
            if status is not None and status != "RUNNING":
                why = f"execution {status.lower()}"
        if why is None:
            continue
        store = FaultStore(clients, table, region, fault["deployment"])
        try:
            # Do not wait for a stopping instance here: the next sweep starts it.
            outcome = restore_fault(clients, fault, stop_wait_seconds=0) if fault["kind"] == NODE else (
                restore_fault(clients, fault))
        except (ClientError, TransientError) as e:
            results.append({"fault": fault["sk"], "deployment": fault["deployment"], "kind": fault["kind"],
                            "reason": why, "restored": False, "error": str(e)})
            continue
        store.forget(fault)
        results.append({"fault": fault["sk"], "deployment": fault["deployment"], "kind": fault["kind"],
                        "reason": why, "restored": True, "outcome": outcome})
    return results


def swept_datapoints(swept: Iterable[dict[str, Any]], orphans: Iterable[dict[str, Any]] = ()) -> list[Datapoint]:
    """``DrillFaultSwept`` per deployment and kind: the faults ``sweep`` restored (kind ``path`` or ``node``;
    a failed restore is not counted, it pages through the notices topic) and the orphaned entries
    ``sweep_orphans`` removed (kind ``orphaned-entry``). Count, standard resolution; none when nothing
    was swept (no datapoint rather than a zero: the metric's alarm, if any, treats missing as not breaching)."""
    counts = Counter((s["deployment"], s["kind"]) for s in swept if s.get("restored"))
    counts.update((o["deployment"], ORPHANED_ENTRY) for o in orphans)
    return [Datapoint(SWEPT_METRIC, float(n), "Count", {"Deployment": deployment, "Kind": kind})
            for (deployment, kind), n in sorted(counts.items())]
