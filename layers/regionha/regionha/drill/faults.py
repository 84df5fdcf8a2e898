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
Every step is idempotent, so the drill's own restore and the scheduled sweeper (regionha.drill.sweeper) may both run,
twice, in any order. An item that outlived its ``expires_at``, or whose execution is no longer running,
is the sweeper's to restore: an execution stopped from the console leaves nothing behind for long.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import time
from collections.abc import Callable
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


# What drills left behind is regionha.drill.sweeper's; its names stay importable from here (PEP 562,
# loaded on first use: the sweeper imports this module).
_SWEEPER_NAMES = frozenset({"entry_text", "reserved_denies", "drill_shaped", "drill_tagged", "left_by_drill",
                            "recorded_entries", "left_in_reserved_range", "sweep_orphans", "sweep_all_orphans",
                            "sweep"})


def __getattr__(name: str) -> Any:
    if name in _SWEEPER_NAMES:
        return getattr(importlib.import_module("regionha.drill.sweeper"), name)
    raise AttributeError(f"module 'regionha.drill.faults' has no attribute {name!r}")
