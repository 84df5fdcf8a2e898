"""Drill faults: what a drill breaks, written down before it is broken, and put back.

Two kinds of fault, each a state-table item (``pk`` = deployment, ``sk`` = ``fault#<execution>#<kind>#<target>``)
written **before** the fault is applied, with an expiry:

- ``node``: a cluster node fails. Its EC2 instance is stopped (built-in mode), or a cluster-manager
  action runs on it through SSM Run Command (external mode with a ``cluster_action``, e.g. a group move).
- ``path``: a region's forwarder path is cut. Network ACL deny entries (inbound, DNS over UDP and TCP
  or all traffic, from the client network) go onto the NACL of every subnet the path lives in, at rule
  numbers in a reserved range, so that they sort before the NACL's allow rules and can never be
  mistaken for someone else's entries. A rule number of the range already used by an entry that is
  not exactly ours is refused, never overwritten; so is a cut that a lower-numbered allow entry would
  shadow (it would not take). The NACL carries a ``regionha:drill`` tag while cut.

  NACL entries are evaluated lowest number first, and a default NACL allows everything at rule 100:
  the reserved range is therefore 60-99, below it (a range like 32000-32099 would never take effect).

Restoring reads only the item: it removes exactly the entries it lists (only while they are still the
ones we made), starts the instance (or runs the action's ``restore_commands``), then deletes the item.
Every step is idempotent, so the drill's own restore and the scheduled sweeper (``sweep``) may both run,
twice, in any order. An item that outlived its ``expires_at``, or whose execution is no longer running,
is the sweeper's to restore: an execution stopped from the console leaves nothing behind for long.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from regionha.aws import deployment_filter
from regionha.drill.steps import CUTS, NODE, PATH
from regionha.errors import ConfigurationError, TransientError

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology

FAULT_PREFIX = "fault#"
# Reserved NACL rule numbers, one block per forwarder path: below 100, the default NACL's allow-all
# and the console's first suggested number, because the lowest matching number decides.
RULE_FIRST, RULE_LAST, RULES_PER_PATH = 60, 99, 4
DNS_PORT = 53
DRILL_TAG = "regionha:drill"
_PROTOCOLS = {"dns": ("17", "6"), "all": ("-1",)}
_MAX_PAGES = 100
# Instance states from which StartInstances works / into which StopInstances leads.
_STOPPED, _STOPPING = "stopped", "stopping"


def _code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


# --- the fault items ---------------------------------------------------------------------------------


def fault_key(execution: str, kind: str, target: str) -> str:
    return f"{FAULT_PREFIX}{execution}#{kind}#{target}"


@dataclass(frozen=True)
class FaultStore:
    """The fault items of one deployment in the state table.

    IAM: dynamodb:PutItem, dynamodb:Query, dynamodb:DeleteItem on the state table; the sweeper also
    dynamodb:Scan.
    """

    clients: Clients
    table: str
    region: str
    deployment: str

    @property
    def _ddb(self) -> Any:
        return self.clients.client("dynamodb", self.region)

    def record(self, fault: dict[str, Any], *, ttl_seconds: float, now: float | None = None) -> dict[str, Any]:
        """Write the fault item (before the fault exists); returns it with ``sk`` and ``expires_at``."""
        now = time.time() if now is None else now
        item = {
            **fault,
            "deployment": self.deployment,
            "sk": fault_key(fault["execution"], fault["kind"], fault["target"]),
            "recorded_at": now,
            "expires_at": now + ttl_seconds,
        }
        self._ddb.put_item(TableName=self.table, Item=_to_item(self.deployment, item))
        return item

    def faults(self, execution: str | None = None) -> list[dict[str, Any]]:
        prefix = FAULT_PREFIX + (f"{execution}#" if execution else "")
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": self.deployment}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        for _ in range(_MAX_PAGES):
            page = self._ddb.query(**kwargs)
            out += [_from_item(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return out

    def forget(self, fault: dict[str, Any]) -> None:
        self._ddb.delete_item(TableName=self.table, Key={"pk": {"S": self.deployment}, "sk": {"S": fault["sk"]}})


def _to_item(deployment: str, fault: dict[str, Any]) -> dict[str, Any]:
    return {
        "pk": {"S": deployment},
        "sk": {"S": fault["sk"]},
        "kind": {"S": fault["kind"]},
        "execution": {"S": fault["execution"]},
        "expires_at": {"N": str(int(fault["expires_at"]))},
        "body": {"S": json.dumps(fault, sort_keys=True)},
    }


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return json.loads(item["body"]["S"])


def all_faults(clients: Clients, table: str, region: str) -> list[dict[str, Any]]:
    """Every deployment's fault items (the sweeper does not know the deployments). IAM: dynamodb:Scan."""
    ddb = clients.client("dynamodb", region)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(sk, :prefix)",
        "ExpressionAttributeValues": {":prefix": {"S": FAULT_PREFIX}},
        "ConsistentRead": True,
    }
    out: list[dict[str, Any]] = []
    for _ in range(_MAX_PAGES):
        page = ddb.scan(**kwargs)
        out += [_from_item(i) for i in page.get("Items", [])]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return out


# --- nodes ---------------------------------------------------------------------------------------------


def node_instance(topology: Topology, clients: Clients, node_name: str) -> dict[str, Any]:
    """The node's instance, found by its tags (the liveliest one if a replaced one lingers).

    IAM: ec2:DescribeInstances.
    """
    node = topology.node(node_name)
    ec2 = clients.ec2(topology.region_of(node.vpc))
    reservations = ec2.describe_instances(Filters=deployment_filter(topology.deployment, node.name))["Reservations"]
    instances = [i for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    if not instances:
        raise ConfigurationError(f"node {node.name}: no instance of deployment {topology.deployment}; build first")
    rank = {"running": 0, "pending": 1, _STOPPING: 2, _STOPPED: 3}
    return min(instances, key=lambda i: rank.get(i["State"]["Name"], 9))


def node_fault(
    topology: Topology, clients: Clients, node_name: str, cluster_action: dict[str, Any] | None
) -> dict[str, Any]:
    """What failing ``node_name`` means in this deployment: stop its instance, or (external mode
    with a ``cluster_action``) run that action on it through SSM."""
    node = topology.node(node_name)
    instance = node_instance(topology, clients, node_name)
    fault: dict[str, Any] = {
        "kind": NODE,
        "target": node.name,
        "region": topology.region_of(node.vpc),
        "instance_id": instance["InstanceId"],
        "method": "stop",
    }
    if topology.failover.mode == "external" and cluster_action:
        commands = cluster_action.get("commands")
        if not isinstance(commands, list) or not commands or not all(isinstance(c, str) for c in commands):
            raise ConfigurationError("cluster_action.commands must be a non-empty list of shell commands")
        restore = cluster_action.get("restore_commands") or []
        if not isinstance(restore, list) or not all(isinstance(c, str) for c in restore):
            raise ConfigurationError("cluster_action.restore_commands must be a list of shell commands")
        fault |= {
            "method": "ssm",
            "document": str(cluster_action.get("document") or "AWS-RunShellScript"),
            "commands": commands,
            "restore_commands": restore,
        }
    return fault


def apply_node_fault(clients: Clients, fault: dict[str, Any]) -> dict[str, Any]:
    """IAM: ec2:StopInstances, or ssm:SendCommand."""
    if fault["method"] == "ssm":
        command = clients.ssm(fault["region"]).send_command(
            InstanceIds=[fault["instance_id"]],
            DocumentName=fault["document"],
            Parameters={"commands": fault["commands"]},
            Comment=f"regionha drill: fail {fault['target']}"[:100],
        )["Command"]
        return {"command_id": command["CommandId"]}
    state = clients.ec2(fault["region"]).stop_instances(InstanceIds=[fault["instance_id"]])["StoppingInstances"]
    return {"state": state[0]["CurrentState"]["Name"] if state else None}


def instance_state(clients: Clients, region: str, instance_id: str) -> str:
    """IAM: ec2:DescribeInstances."""
    reservations = clients.ec2(region).describe_instances(InstanceIds=[instance_id])["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    return instances[0]["State"]["Name"] if instances else "terminated"


def restore_node_fault(
    clients: Clients,
    fault: dict[str, Any],
    *,
    stop_wait_seconds: float = 60,
    poll_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Start the stopped instance (after it finished stopping, bounded), or run the SSM restore
    commands. Does not wait for the node's service: the caller judges health its own way.

    IAM: ec2:DescribeInstances, ec2:StartInstances, ssm:SendCommand.
    """
    if fault["method"] == "ssm":
        if not fault.get("restore_commands"):
            return {"action": "none", "note": "the cluster action has no restore_commands"}
        command = clients.ssm(fault["region"]).send_command(
            InstanceIds=[fault["instance_id"]],
            DocumentName=fault["document"],
            Parameters={"commands": fault["restore_commands"]},
            Comment=f"regionha drill: restore {fault['target']}"[:100],
        )["Command"]
        return {"action": "ssm", "command_id": command["CommandId"]}
    region, instance_id = fault["region"], fault["instance_id"]
    state = instance_state(clients, region, instance_id)
    # StartInstances refuses a stopping instance; a counted loop waits for it to settle.
    for _ in range(max(1, int(stop_wait_seconds / poll_seconds))):
        if state != _STOPPING:
            break
        sleep(poll_seconds)
        state = instance_state(clients, region, instance_id)
    if state == _STOPPING:
        raise TransientError(f"{fault['target']}: instance {instance_id} still stopping after {stop_wait_seconds} s")
    if state != _STOPPED:
        return {"action": "none", "state": state}
    try:
        clients.ec2(region).start_instances(InstanceIds=[instance_id])
    except ClientError as e:
        if _code(e) == "IncorrectInstanceState":
            raise TransientError(f"{fault['target']}: cannot start {instance_id} yet: {e}") from e
        raise
    return {"action": "started", "instance_id": instance_id}


# --- forwarder paths -----------------------------------------------------------------------------------


def _path_subnets(topology: Topology, path_name: str) -> tuple[str, list[str]]:
    path = next((p for p in topology.forwarder_paths if p.name == path_name), None)
    if path is None:
        known = ", ".join(p.name for p in topology.forwarder_paths)
        raise ConfigurationError(f"no forwarder path named {path_name!r} (paths: {known})")
    subnets = sorted({ip.subnet for ip in path.ips}) if path.kind == "resolver_endpoint" else [path.subnet]
    return path.vpc, subnets


def rule_block(topology: Topology, path_name: str) -> list[int]:
    """The reserved rule numbers of one path: a fixed block, so a retry finds its own entries again."""
    index = [p.name for p in topology.forwarder_paths].index(path_name)
    first = RULE_FIRST + index * RULES_PER_PATH
    if first + RULES_PER_PATH - 1 > RULE_LAST:
        raise ConfigurationError(f"too many forwarder paths for the reserved NACL rules {RULE_FIRST}-{RULE_LAST}")
    return list(range(first, first + RULES_PER_PATH))


def path_fault(topology: Topology, clients: Clients, path_name: str, cut: str = "dns") -> dict[str, Any]:
    """The NACL entries that cut ``path_name`` off from the client network.

    IAM: ec2:DescribeVpcs, ec2:DescribeSubnets, ec2:DescribeNetworkAcls.
    """
    if cut not in CUTS:
        raise ConfigurationError(f"cut must be one of {', '.join(CUTS)}, not {cut!r}")
    vpc_name, subnet_names = _path_subnets(topology, path_name)
    region = topology.region_of(vpc_name)
    ec2 = clients.ec2(region)
    vpcs = ec2.describe_vpcs(Filters=deployment_filter(topology.deployment, vpc_name))["Vpcs"]
    if not vpcs:
        raise ConfigurationError(f"path {path_name}: VPC {vpc_name} of {topology.deployment} not found; build first")
    vpc_id = vpcs[0]["VpcId"]
    nacls: list[str] = []
    for subnet_name in subnet_names:
        subnets = ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, *deployment_filter(topology.deployment, subnet_name)]
        )["Subnets"]
        if not subnets:
            raise ConfigurationError(f"path {path_name}: subnet {subnet_name} not found; build first")
        acls = ec2.describe_network_acls(
            Filters=[{"Name": "association.subnet-id", "Values": [subnets[0]["SubnetId"]]}]
        )["NetworkAcls"]
        if not acls:
            raise ConfigurationError(f"path {path_name}: subnet {subnet_name} has no network ACL")
        if acls[0]["NetworkAclId"] not in nacls:
            nacls.append(acls[0]["NetworkAclId"])
    rules = rule_block(topology, path_name)
    entries = [
        {"nacl": nacl, "rule": rules[i], "protocol": protocol}
        for nacl in nacls
        for i, protocol in enumerate(_PROTOCOLS[cut])
    ]
    return {
        "kind": PATH,
        "target": path_name,
        "region": region,
        "cidr": str(topology.client.cidr),
        "cut": cut,
        "entries": entries,
    }


def _ours(have: dict[str, Any], entry: dict[str, Any], cidr: str) -> bool:
    """Is the NACL entry at our rule number exactly the deny we make?"""
    if have.get("Egress") or have.get("RuleAction") != "deny" or have.get("CidrBlock") != cidr:
        return False
    if str(have.get("Protocol")) != entry["protocol"]:
        return False
    if entry["protocol"] == "-1":
        return True
    ports = have.get("PortRange") or {}
    return ports.get("From") == DNS_PORT and ports.get("To") == DNS_PORT


def _inbound(ec2: Any, nacl: str) -> dict[int, dict[str, Any]] | None:
    try:
        acls = ec2.describe_network_acls(NetworkAclIds=[nacl])["NetworkAcls"]
    except ClientError as e:
        if _code(e) in ("InvalidNetworkAclID.NotFound", "InvalidNetworkAclId.NotFound"):
            return None
        raise
    if not acls:
        return None
    return {int(e["RuleNumber"]): e for e in acls[0].get("Entries", []) if not e.get("Egress")}


def _shadows(have: dict[str, Any], entry: dict[str, Any], cidr: str) -> bool:
    """Would ``have`` (a lower-numbered entry) let DNS from ``cidr`` in before our deny is reached?"""
    if have.get("Egress") or have.get("RuleAction") != "allow" or not have.get("CidrBlock"):
        return False
    if not ipaddress.ip_network(have["CidrBlock"], strict=False).overlaps(ipaddress.ip_network(cidr, strict=False)):
        return False
    protocol = str(have.get("Protocol"))
    if protocol != "-1" and entry["protocol"] not in ("-1", protocol):
        return False
    ports = have.get("PortRange") or {}
    return protocol == "-1" or ports.get("From") is None or ports["From"] <= DNS_PORT <= ports.get("To", 65535)


def check_path_fault(clients: Clients, fault: dict[str, Any]) -> None:
    """Refuse (ConfigurationError) when a reserved rule number is taken by an entry that is not ours,
    or when an allow entry numbered below ours would let the client's DNS through anyway."""
    ec2 = clients.ec2(fault["region"])
    for entry in fault["entries"]:
        entries = _inbound(ec2, entry["nacl"]) or {}
        have = entries.get(entry["rule"])
        if have is not None and not _ours(have, entry, fault["cidr"]):
            raise ConfigurationError(
                f"network ACL {entry['nacl']}: rule {entry['rule']} (reserved for regionha drills, "
                f"{RULE_FIRST}-{RULE_LAST}) is taken by another entry: {have.get('RuleAction')} "
                f"{have.get('CidrBlock')} protocol {have.get('Protocol')}; remove it or move it"
            )
        shadow = [n for n, e in entries.items() if n < entry["rule"] and _shadows(e, entry, fault["cidr"])]
        if shadow:
            raise ConfigurationError(
                f"network ACL {entry['nacl']}: rule {min(shadow)} allows {fault['cidr']} before the drill's deny "
                f"at {entry['rule']}: the cut would not take; renumber that rule above {RULE_LAST}"
            )


def apply_path_fault(clients: Clients, fault: dict[str, Any], execution: str) -> dict[str, Any]:
    """Create the deny entries that are missing (a retry finds its own and leaves them).

    IAM: ec2:DescribeNetworkAcls, ec2:CreateNetworkAclEntry, ec2:CreateTags.
    """
    check_path_fault(clients, fault)
    ec2 = clients.ec2(fault["region"])
    created = 0
    for entry in fault["entries"]:
        if entry["rule"] in (_inbound(ec2, entry["nacl"]) or {}):
            continue
        kwargs: dict[str, Any] = {
            "NetworkAclId": entry["nacl"],
            "RuleNumber": entry["rule"],
            "Protocol": entry["protocol"],
            "RuleAction": "deny",
            "Egress": False,
            "CidrBlock": fault["cidr"],
        }
        if entry["protocol"] != "-1":
            kwargs["PortRange"] = {"From": DNS_PORT, "To": DNS_PORT}
        ec2.create_network_acl_entry(**kwargs)
        created += 1
    nacls = sorted({e["nacl"] for e in fault["entries"]})
    ec2.create_tags(Resources=nacls, Tags=[{"Key": DRILL_TAG, "Value": f"{execution} cuts {fault['target']}"}])
    return {"created": created, "nacls": nacls}


def restore_path_fault(clients: Clients, fault: dict[str, Any]) -> dict[str, Any]:
    """Delete exactly our entries; an entry someone replaced meanwhile is left and reported.

    IAM: ec2:DescribeNetworkAcls, ec2:DeleteNetworkAclEntry, ec2:DeleteTags.
    """
    ec2 = clients.ec2(fault["region"])
    deleted, foreign = 0, []
    for entry in fault["entries"]:
        have = (_inbound(ec2, entry["nacl"]) or {}).get(entry["rule"])
        if have is None:
            continue
        if not _ours(have, entry, fault["cidr"]):
            foreign.append(f"{entry['nacl']} rule {entry['rule']}")
            continue
        try:
            ec2.delete_network_acl_entry(NetworkAclId=entry["nacl"], RuleNumber=entry["rule"], Egress=False)
            deleted += 1
        except ClientError as e:
            if _code(e) != "InvalidNetworkAclEntry.NotFound":
                raise
    for nacl in sorted({e["nacl"] for e in fault["entries"]}):
        try:
            ec2.delete_tags(Resources=[nacl], Tags=[{"Key": DRILL_TAG}])
        except ClientError as e:
            if not _code(e).startswith("InvalidNetworkAclID"):
                raise
    return {"deleted": deleted, "foreign": foreign}


def remaining_entries(clients: Clients, fault: dict[str, Any]) -> list[str]:
    """Our entries still present (what a failed restore leaves broken)."""
    ec2 = clients.ec2(fault["region"])
    left = []
    for entry in fault["entries"]:
        have = (_inbound(ec2, entry["nacl"]) or {}).get(entry["rule"])
        if have is not None and _ours(have, entry, fault["cidr"]):
            left.append(f"{entry['nacl']} rule {entry['rule']}")
    return left


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


def apply_fault(clients: Clients, fault: dict[str, Any]) -> dict[str, Any]:
    if fault["kind"] == NODE:
        return apply_node_fault(clients, fault)
    return apply_path_fault(clients, fault, fault["execution"])


def restore_fault(clients: Clients, fault: dict[str, Any], **node_kwargs: Any) -> dict[str, Any]:
    if fault["kind"] == NODE:
        return restore_node_fault(clients, fault, **node_kwargs)
    return restore_path_fault(clients, fault)


def describe_fault(fault: dict[str, Any]) -> str:
    if fault["kind"] == NODE:
        how = "stopped" if fault.get("method") == "stop" else "cluster action"
        return f"node {fault['target']} ({fault.get('instance_id')}, {how})"
    return f"path {fault['target']} cut ({len(fault.get('entries', []))} NACL entries in {fault.get('region')})"


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
            results.append({"fault": fault["sk"], "reason": why, "restored": False, "error": str(e)})
            continue
        store.forget(fault)
        results.append({"fault": fault["sk"], "reason": why, "restored": True, "outcome": outcome})
    return results
