"""The readiness audit: the built world compared with the topology, read-only, one finding per drift.

Like Route 53 ARC's readiness checks, for this topology: two halves, so that the judgement is tested
without any AWS at all.

- ``describe_world(topology, clients, ...)`` makes only Describe/List/Get calls and returns the
  *world*: a JSON-shaped dict of what exists (see ``World`` below for its shape).
- ``audit(topology, world)`` is pure: it returns a ``Finding`` (kind, resource, one-line reason) for
  every way the world differs from what the topology says it must be.

Finding kinds (``KINDS``; each is the ``Kind`` dimension of the ``AuditFindings`` metric):

============================== ==================================================================
vpc-missing / vpc-drift        a VPC is gone; its CIDR differs or its internet gateway is gone
subnet-missing / subnet-drift  a subnet is gone; its CIDR or AZ differs
route-table-missing            a route table is gone
route-table-association        a subnet is not associated with the route table the topology names
route-missing / route-target   a declared route row is absent; it points elsewhere or is a blackhole
route-extra                    a route nobody declared, in one of the deployment's route tables
peering-missing / -inactive    a peering is gone; it is not ``active`` (or joins other VPCs)
security-group-missing         a security group is gone
security-group-rule-missing    an ingress rule the topology declares is absent
security-group-rule-extra      an ingress rule the topology does not declare
nacl-deny                      a deny entry in the drill's reserved range 60-99 that no running
                               drill owns (a running drill = the lock holder's recorded faults)
zone-missing / zone-association the private zone is gone; a VPC association is missing or extra
resolver-endpoint-missing      a Resolver inbound endpoint is gone
resolver-endpoint-status       not OPERATIONAL, not INBOUND, or other security groups
resolver-endpoint-ip           an address is missing, extra, not ATTACHED, or no network interface
                               holds it any more
instance-missing               an instance (node, BIND server, on-prem resolver, NAT) is gone
instance-state                 not running (unless a running drill stopped it)
instance-drift                 another private IP, subnet or security groups
instance-imdsv2                IMDSv2 not required
instance-public-ip             a public IP on anything but a NAT instance
record-missing / record-type   the record is gone; the name holds another type than A
record-value                   not the active node (built-in: the fence's node, else the primary;
                               external: any node), or several values
record-ttl                     the TTL differs from the topology's
controller-missing             built-in mode: the failover controller function is gone
controller-disabled            built-in mode: a rule that starts the controller (its health-check
                               schedule, the EC2 state changes) is disabled, or none is left
============================== ==================================================================

AWS docs followed: EC2 API Reference (DescribeRouteTables route ``State`` "blackhole",
DescribeNetworkAcls entries, DescribeInstances ``MetadataOptions.HttpTokens``), Route 53 Resolver
API Reference (ResolverEndpoint ``Status``, IpAddressResponse ``Status`` "ATTACHED"), Route 53 API
Reference (GetHostedZone ``VPCs``, ListResourceRecordSets), Lambda API Reference (GetFunction),
EventBridge API Reference (ListRuleNamesByTarget, DescribeRule ``State``).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from regionha.aws import TAG_NAME, deployment_filter, tag_value
from regionha.converge.network import (
    _existing_rule_key,
    _rule_key,
    _rule_label,
    find_internet_gateway,
    find_vpc,
    igw_name,
    paginate,
    vpc_filter,
)
from regionha.converge.routes import route_target
from regionha.drill import faults as drill_faults
from regionha.topology import Ingress, SecurityGroup

if TYPE_CHECKING:
    from regionha.aws import Clients
    from regionha.topology import Topology, Vpc

KINDS = (
    "vpc-missing", "vpc-drift",
    "subnet-missing", "subnet-drift",
    "route-table-missing", "route-table-association",
    "route-missing", "route-target", "route-extra",
    "peering-missing", "peering-inactive",
    "security-group-missing", "security-group-rule-missing", "security-group-rule-extra",
    "nacl-deny",
    "zone-missing", "zone-association",
    "resolver-endpoint-missing", "resolver-endpoint-status", "resolver-endpoint-ip",
    "instance-missing", "instance-state", "instance-drift", "instance-imdsv2", "instance-public-ip",
    "record-missing", "record-type", "record-value", "record-ttl",
    "controller-missing", "controller-disabled",
)
METRIC = "AuditFindings"
# Live instance states, best first: of several instances with one name (a replaced one), the best counts.
_STATE_RANK = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3, "shutting-down": 4}

World = dict[str, Any]
"""What ``describe_world`` returns (every key optional; absent = not found)::

    {"vpcs": {vpc: {"id", "cidr", "internet_gateway": id | None,
                    "subnets": {name: {"id", "cidr", "az", "route_table": id | None}},
                    "route_tables": {name: {"id", "routes": [DescribeRouteTables route, ...]}},
                    "security_groups": {name: {"id", "ingress": [[protocol, from, to, cidr] | None]}},
                    "network_acls": [DescribeNetworkAcls NetworkAcl, ...]}},
     "peerings": {name: {"id", "status", "requester_vpc", "accepter_vpc"}},
     "instances": {name: {"id", "state", "subnet_id", "private_ip", "public_ip", "security_groups",
                          "http_tokens", "eni"}},
     "zone": {"id", "vpcs": [vpc id]} | None,
     "resolver_endpoints": {path: {"id", "status", "direction", "security_groups",
                                   "ips": [{"ip", "subnet_id", "status", "eni": bool}]}},
     "record": [{"type", "ttl", "values"}] (every record set of the record's name),
     "fence": {"active", "generation"} | None, "lock": {"holder", "expires_at"} | None,
     "faults": [fault item], "now": epoch seconds,
     "controller": {"function", "found": bool, "rules": {rule name: "ENABLED" | "DISABLED" | ...}} | None
                   (None: not described)}
"""


@dataclass(frozen=True)
class Finding:
    """One drift: its kind (one of ``KINDS``), the resource (stable names, ids where useful) and why."""

    kind: str
    resource: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.resource}: {self.reason}"

    def to_json(self) -> dict[str, str]:
        return asdict(self)


# --- the judgement (pure) ------------------------------------------------------------------------------


def audit(topology: Topology, world: World) -> list[Finding]:
    """Every way ``world`` differs from ``topology``, in a stable order. No I/O."""
    findings: list[Finding] = []
    vpcs = world.get("vpcs") or {}
    instances = world.get("instances") or {}
    drill_nacl, drill_instances = _running_drill(world)
    for vpc in topology.vpcs:
        seen = vpcs.get(vpc.name)
        if seen is None:
            findings.append(Finding("vpc-missing", vpc.name, f"no VPC tagged {topology.deployment}/{vpc.name} in "
                                                              f"{vpc.region}"))
            continue
        findings += _vpc(topology, vpc, seen, world, instances)
        findings += _nacls(topology, vpc, seen, world, drill_nacl)
    findings += _peerings(topology, world, vpcs)
    findings += _instances(topology, instances, vpcs, drill_instances)
    findings += _zone(topology, world, vpcs)
    findings += _endpoints(topology, world, vpcs)
    findings += _record(topology, world)
    findings += _controller(topology, world)
    return findings


def _running_drill(world: World) -> tuple[set[tuple[str, int]], set[str]]:
    """NACL entries and instances that the drill holding the lock recorded as its faults."""
    lock = world.get("lock")
    if not lock or float(lock.get("expires_at", 0)) < float(world.get("now") or time.time()):
        return set(), set()
    mine = [f for f in world.get("faults") or [] if f.get("execution") == lock.get("holder")]
    return set(drill_faults.recorded_entries(mine)), {f["instance_id"] for f in mine if f.get("instance_id")}


def _vpc(topology: Topology, vpc: Vpc, seen: dict[str, Any], world: World, instances: dict[str, Any]) -> list[Finding]:
    out = []
    if seen.get("cidr") != str(vpc.cidr):
        out.append(Finding("vpc-drift", vpc.name, f"{seen.get('id')} has CIDR {seen.get('cidr')}, expected {vpc.cidr}"))
    if vpc.internet_gateway and not seen.get("internet_gateway"):
        out.append(Finding("vpc-drift", vpc.name, f"internet gateway {igw_name(vpc.name)} missing or detached"))
    subnets = seen.get("subnets") or {}
    for subnet in vpc.subnets:
        have = subnets.get(subnet.name)
        if have is None:
            out.append(Finding("subnet-missing", f"{vpc.name}/{subnet.name}", f"no subnet {subnet.cidr} tagged so"))
        elif (have.get("cidr"), have.get("az")) != (str(subnet.cidr), subnet.az):
            out.append(Finding("subnet-drift", f"{vpc.name}/{subnet.name}",
                               f"{have.get('id')} is {have.get('cidr')} in {have.get('az')}, expected {subnet.cidr} "
                               f"in {subnet.az}"))
    tables = seen.get("route_tables") or {}
    for rt in vpc.route_tables:
        table = tables.get(rt.name)
        resource = f"{vpc.name}/{rt.name}"
        if table is None:
            out.append(Finding("route-table-missing", resource, "no route table tagged so"))
            continue
        for name in rt.subnets:
            have = subnets.get(name)
            if have is not None and have.get("route_table") != table["id"]:
                now = have.get("route_table") or "the main route table (local routes only)"
                out.append(Finding("route-table-association", f"{vpc.name}/{name}",
                                   f"uses {now}, expected {rt.name} ({table['id']})"))
        out += _routes(topology, vpc, rt.name, rt.routes, table, seen, world, instances)
    groups = seen.get("security_groups") or {}
    for sg in _security_groups(vpc):
        out += _security_group(vpc, sg, groups.get(sg.name))
    return out


def _routes(topology: Topology, vpc: Vpc, table_name: str, routes: Iterable[Any], table: dict[str, Any],
            seen: dict[str, Any], world: World, instances: dict[str, Any]) -> list[Finding]:
    out = []
    have = {r.get("DestinationCidrBlock"): r for r in table.get("routes") or [] if r.get("DestinationCidrBlock")}
    for route in routes:
        destination = str(route.destination)
        resource = f"{vpc.name}/{table_name} {destination}"
        want, what = _expected_target(topology, vpc, route, seen, world, instances)
        current = have.get(destination)
        if current is None:
            out.append(Finding("route-missing", resource, f"no route via {what}"))
            continue
        target = route_target(current)
        if current.get("State") == "blackhole":
            out.append(Finding("route-target", resource, f"blackhole via {target[1] if target else '?'} "
                                                         f"(expected {what})"))
        elif want is not None and (target is None or target[1] != want):
            out.append(Finding("route-target", resource, f"via {target[1] if target else 'nothing'}, "
                                                         f"expected {what}"))
    wanted = {str(r.destination) for r in routes}
    for destination, current in sorted(have.items()):
        if current.get("Origin") == "CreateRoute" and current.get("GatewayId") != "local" and destination not in wanted:
            target = route_target(current)
            out.append(Finding("route-extra", f"{vpc.name}/{table_name} {destination}",
                               f"via {target[1] if target else '?'}, declared by no topology row"))
    return out


def _expected_target(topology: Topology, vpc: Vpc, route: Any, seen: dict[str, Any], world: World,
                     instances: dict[str, Any]) -> tuple[str | None, str]:
    """(expected target id or None when it cannot be known, how to say it)."""
    if route.target == "igw":
        return seen.get("internet_gateway"), f"internet gateway {igw_name(vpc.name)}"
    if route.target == "nat":
        nat = vpc.nat_instance.name if vpc.nat_instance else "?"
        return (instances.get(nat) or {}).get("eni"), f"NAT instance {nat}"
    if route.link is not None:  # an on-prem site's given link: its virtual private gateway
        link = topology.client.link(route.link)
        return link.gateway_id, f"link {link.name} ({link.gateway_id})"
    name = route.peering
    peer = next((v.name for v in topology.vpcs if v.name != vpc.name
                 and v.cidr.overlaps(ipaddress.ip_network(route.destination))), "?")
    pcx = (world.get("peerings") or {}).get(name) or {}
    return pcx.get("id"), f"peering {name} ({vpc.name} -> {peer})"


def _security_groups(vpc: Vpc) -> list[SecurityGroup]:
    groups = list(vpc.security_groups)
    if vpc.nat_instance:  # as converge_nat makes it
        groups.append(SecurityGroup(name=f"{vpc.nat_instance.name}-sg", ingress=[Ingress(protocol="all",
                                                                                          cidr=vpc.cidr)]))
    return groups


def _security_group(vpc: Vpc, sg: SecurityGroup, have: dict[str, Any] | None) -> list[Finding]:
    resource = f"{vpc.name}/{sg.name}"
    if have is None:
        return [Finding("security-group-missing", resource, "no security group tagged so")]
    existing = [tuple(k) if k is not None else None for k in have.get("ingress") or []]
    wanted = list(dict.fromkeys(_rule_key(i) for i in sg.ingress))
    out = [Finding("security-group-rule-missing", resource, f"{have['id']} lacks ingress {_rule_label(key)}")
           for key in wanted if key not in existing]
    for key in existing:
        if key not in wanted:
            label = _rule_label(key) if key is not None else "from a security group or prefix list"
            out.append(Finding("security-group-rule-extra", resource, f"{have['id']} has undeclared ingress {label}"))
    return out


def _nacls(topology: Topology, vpc: Vpc, seen: dict[str, Any], world: World,
           drill_owned: set[tuple[str, int]]) -> list[Finding]:
    out = []
    cidr = str(topology.client.cidr)
    recorded = drill_faults.recorded_entries(world.get("faults") or [])
    for acl in seen.get("network_acls") or []:
        nacl = acl["NetworkAclId"]
        for entry in drill_faults.reserved_denies(acl):
            key = (nacl, int(entry["RuleNumber"]))
            if key in drill_owned:
                continue
            if key in recorded:
                why = f"recorded by drill {recorded[key].get('execution')}, which holds no lock: restore it"
            elif drill_faults.left_by_drill(acl, entry, cidr):
                why = "left by a drill (no fault recorded): the fault sweeper removes it"
            else:
                why = (f"in the drill's reserved range {drill_faults.RULE_FIRST}-{drill_faults.RULE_LAST}, made by "
                       "no drill: move it above 99")
            out.append(Finding("nacl-deny", f"{vpc.name}/{nacl} rule {key[1]}",
                               f"{drill_faults.entry_text(entry)} {why}"))
    return out



def _peerings(topology: Topology, world: World, vpcs: dict[str, Any]) -> list[Finding]:
    out = []
    seen = world.get("peerings") or {}
    for p in topology.peerings:
        have = seen.get(p.name)
        resource = f"peering {p.name}"
        if have is None:
            out.append(Finding("peering-missing", resource, f"no live peering {p.requester} -> {p.accepter}"))
            continue
        if have.get("status") != "active":
            out.append(Finding("peering-inactive", resource, f"{have.get('id')} is {have.get('status')}, "
                                                               "expected active"))
        want = ((vpcs.get(p.requester) or {}).get("id"), (vpcs.get(p.accepter) or {}).get("id"))
        got = (have.get("requester_vpc"), have.get("accepter_vpc"))
        if None not in want and got != want:
            out.append(Finding("peering-inactive", resource, f"{have.get('id')} joins {got[0]} -> {got[1]}, "
                                                               f"expected {want[0]} -> {want[1]}"))
    return out


def expected_instances(topology: Topology) -> list[dict[str, Any]]:
    """Every instance the topology has: name, VPC, subnet, private IP (None: any), security group, NAT?"""
    out = [{"name": n.name, "vpc": n.vpc, "subnet": n.subnet, "ip": str(n.ip), "sg": n.security_group, "nat": False}
           for n in topology.nodes]
    out += [{"name": p.name, "vpc": p.vpc, "subnet": p.subnet, "ip": str(p.ip), "sg": p.security_group, "nat": False}
            for p in topology.forwarder_paths if p.kind == "bind"]
    if topology.client_vpc is not None:  # a real on-prem site's DNS server is the user's
        server = topology.client.dns_server
        out.append({"name": server.name, "vpc": topology.client.vpc, "subnet": server.subnet, "ip": str(server.ip),
                    "sg": server.security_group, "nat": False})
    out += [{"name": v.nat_instance.name, "vpc": v.name, "subnet": v.nat_instance.subnet, "ip": None,
             "sg": f"{v.nat_instance.name}-sg", "nat": True} for v in topology.vpcs if v.nat_instance]
    return out


def _instances(topology: Topology, instances: dict[str, Any], vpcs: dict[str, Any],
               drill_instances: set[str]) -> list[Finding]:
    out = []
    for want in expected_instances(topology):
        name = want["name"]
        have = instances.get(name)
        resource = f"instance {name}"
        if have is None:
            out.append(Finding("instance-missing", resource, f"no live instance tagged so in {want['vpc']}"))
            continue
        iid = have.get("id")
        if have.get("state") != "running" and iid not in drill_instances:
            out.append(Finding("instance-state", resource, f"{iid} is {have.get('state')}, expected running"))
        vpc = vpcs.get(want["vpc"]) or {}
        subnet_id = ((vpc.get("subnets") or {}).get(want["subnet"]) or {}).get("id")
        sg_id = ((vpc.get("security_groups") or {}).get(want["sg"]) or {}).get("id")
        drift = []
        if want["ip"] is not None and have.get("private_ip") != want["ip"]:
            drift.append(f"private IP {have.get('private_ip')}, expected {want['ip']}")
        if subnet_id and have.get("subnet_id") != subnet_id:
            drift.append(f"subnet {have.get('subnet_id')}, expected {want['subnet']} ({subnet_id})")
        if sg_id and sg_id not in (have.get("security_groups") or []):
            drift.append(f"security groups {', '.join(have.get('security_groups') or []) or 'none'} lack "
                         f"{want['sg']} ({sg_id})")
        if drift:
            out.append(Finding("instance-drift", resource, f"{iid}: " + "; ".join(drift)))
        if have.get("http_tokens") != "required":
            out.append(Finding("instance-imdsv2", resource, f"{iid} HttpTokens is {have.get('http_tokens')}, "
                                                              "expected required (IMDSv2)"))
        if have.get("public_ip") and not want["nat"]:
            out.append(Finding("instance-public-ip", resource, f"{iid} has public IP {have['public_ip']}"))
    return out


def _zone(topology: Topology, world: World, vpcs: dict[str, Any]) -> list[Finding]:
    zone = world.get("zone")
    resource = f"zone {topology.dns.zone_fqdn}"
    if not zone:
        return [Finding("zone-missing", resource, f"no private hosted zone of {topology.deployment}")]
    out = []
    associated = set(zone.get("vpcs") or [])
    wanted = {(vpcs.get(v) or {}).get("id"): v for v in topology.dns.zone_vpcs}
    for vpc_id, name in wanted.items():
        if vpc_id is not None and vpc_id not in associated:
            out.append(Finding("zone-association", resource, f"not associated with {name} ({vpc_id})"))
    for vpc_id in sorted(associated - set(wanted)):
        out.append(Finding("zone-association", resource, f"also associated with {vpc_id}, which zone_vpcs "
                                                           "does not name"))
    return out


def _endpoints(topology: Topology, world: World, vpcs: dict[str, Any]) -> list[Finding]:
    out = []
    seen = world.get("resolver_endpoints") or {}
    for path in topology.forwarder_paths:
        if path.kind != "resolver_endpoint":
            continue
        resource = f"resolver-endpoint {path.name}"
        have = seen.get(path.name)
        if have is None:
            out.append(Finding("resolver-endpoint-missing", resource, f"no inbound endpoint {path.endpoint_name} "
                                                                        "tagged so"))
            continue
        eid = have.get("id")
        if have.get("status") != "OPERATIONAL":
            out.append(Finding("resolver-endpoint-status", resource, f"{eid} is {have.get('status')}, expected "
                                                                       "OPERATIONAL"))
        if have.get("direction") != "INBOUND":
            out.append(Finding("resolver-endpoint-status", resource, f"{eid} is {have.get('direction')}, expected "
                                                                       "INBOUND"))
        vpc = vpcs.get(path.vpc) or {}
        sg_id = ((vpc.get("security_groups") or {}).get(path.security_group) or {}).get("id")
        if sg_id and list(have.get("security_groups") or []) != [sg_id]:
            out.append(Finding("resolver-endpoint-status", resource,
                               f"{eid} has security groups {have.get('security_groups')}, expected "
                               f"{path.security_group} ({sg_id})"))
        ips = {a["ip"]: a for a in have.get("ips") or []}
        subnets = vpc.get("subnets") or {}
        for want in path.ips:
            ip = str(want.ip)
            a = ips.get(ip)
            res = f"{resource} {ip}"
            if a is None:
                out.append(Finding("resolver-endpoint-ip", res, f"not an address of {eid}"))
                continue
            if a.get("status") != "ATTACHED":
                out.append(Finding("resolver-endpoint-ip", res, f"status {a.get('status')}, expected ATTACHED"))
            if not a.get("eni"):
                out.append(Finding("resolver-endpoint-ip", res, "no network interface holds this address"))
            subnet_id = (subnets.get(want.subnet) or {}).get("id")
            if subnet_id and a.get("subnet_id") != subnet_id:
                out.append(Finding("resolver-endpoint-ip", res, f"in subnet {a.get('subnet_id')}, expected "
                                                                  f"{want.subnet} ({subnet_id})"))
        for ip in sorted(set(ips) - {str(w.ip) for w in path.ips}):
            out.append(Finding("resolver-endpoint-ip", f"{resource} {ip}", f"an address of {eid} the topology "
                                                                             "does not declare"))
    return out


def expected_node(topology: Topology, fence: dict[str, Any] | None) -> str | None:
    """The node the record must name: built-in mode, the fence's active node (the primary before any
    move); external mode, None (the cluster software decides: any node)."""
    if topology.failover.mode != "builtin":
        return None
    active = (fence or {}).get("active")
    return active if active in {n.name for n in topology.nodes} else topology.primary.name


def _record(topology: Topology, world: World) -> list[Finding]:
    record = topology.dns.record
    resource = f"record {record.name}"
    sets = world.get("record") or []
    if world.get("zone") is None:
        return []  # zone-missing says it
    a = next((s for s in sets if s.get("type") == "A"), None)
    if a is None:
        if sets:
            types = ", ".join(sorted({str(s.get("type")) for s in sets}))
            return [Finding("record-type", resource, f"is {types}, expected A")]
        return [Finding("record-missing", resource, "no A record in the zone")]
    out = []
    values = list(a.get("values") or [])
    ips = {str(n.ip): n.name for n in topology.nodes}
    want = expected_node(topology, world.get("fence"))
    fence = world.get("fence") or {}
    if len(values) != 1:
        out.append(Finding("record-value", resource, f"holds {len(values)} values {values}, expected one node"))
    elif want is not None and values[0] != str(topology.node(want).ip):
        named = ips.get(values[0], "no node")
        why = (f"the fence (generation {fence.get('generation')}) says {want}" if fence.get("active")
               else f"no failover happened: the primary {want}")
        out.append(Finding("record-value", resource, f"names {values[0]} ({named}), but {why} "
                                                       f"({topology.node(want).ip})"))
    elif want is None and values[0] not in ips:
        out.append(Finding("record-value", resource, f"names {values[0]}, the address of no node"))
    if a.get("ttl") != record.ttl:
        budget = topology.failover.rto_budget_seconds
        over = (f", over the RTO budget of {budget} s: a resolver that does not cap it serves the old node that "
                "long after a failover") if isinstance(a.get("ttl"), int) and a["ttl"] > budget else ""
        out.append(Finding("record-ttl", resource, f"TTL {a.get('ttl')} s, expected {record.ttl} s{over}"))
    return out


def _controller(topology: Topology, world: World) -> list[Finding]:
    """Built-in mode moves the record only while the controller runs: absent or switched off, the first
    node failure is an outage that no canary sees coming (every probe passes until then)."""
    seen = world.get("controller")
    if seen is None or topology.failover.mode != "builtin":
        return []
    resource = f"controller {seen.get('function')}"
    if not seen.get("found"):
        return [Finding("controller-missing", resource, "the failover controller function is gone: no failover "
                                                        "will happen")]
    rules = seen.get("rules") or {}
    if not rules:
        return [Finding("controller-disabled", resource, "no EventBridge rule starts it: no health check runs and "
                                                         "no EC2 state change reaches it")]
    return [Finding("controller-disabled", resource, f"rule {name} is {state}: "
                                                     "it does not start the failover controller")
            for name, state in sorted(rules.items()) if state != "ENABLED"]


# --- the world (read-only AWS calls) --------------------------------------------------------------------


def describe_world(topology: Topology, clients: Clients, *, table: str | None = None,
                   table_region: str | None = None, now: float | None = None,
                   controller: str | None = None) -> World:
    """Describe what the deployment's tags name, plus (with ``table``) the fence, the drill lock and the
    fault items, and (with ``controller``, the failover controller's function name or ARN, in the
    table's region) whether it exists and which EventBridge rules start it. Read-only by construction.

    IAM: ec2:DescribeVpcs, ec2:DescribeInternetGateways, ec2:DescribeSubnets, ec2:DescribeRouteTables,
    ec2:DescribeSecurityGroups, ec2:DescribeSecurityGroupRules, ec2:DescribeNetworkAcls,
    ec2:DescribeVpcPeeringConnections, ec2:DescribeInstances, ec2:DescribeNetworkInterfaces,
    route53:ListHostedZonesByName, route53:ListTagsForResources, route53:GetHostedZone,
    route53:ListResourceRecordSets, route53resolver:ListResolverEndpoints,
    route53resolver:ListTagsForResource, route53resolver:ListResolverEndpointIpAddresses,
    dynamodb:GetItem and dynamodb:Query on the state table; with ``controller``: lambda:GetFunction,
    events:ListRuleNamesByTarget, events:DescribeRule.
    """
    world: World = {"vpcs": {}, "peerings": {}, "instances": {}, "zone": None, "resolver_endpoints": {},
                    "record": [], "fence": None, "lock": None, "faults": [],
                    "now": time.time() if now is None else now}
    dep = topology.deployment
    for vpc in topology.vpcs:
        found = find_vpc(clients.ec2(vpc.region), dep, vpc.name)
        if found is not None:
            world["vpcs"][vpc.name] = _describe_vpc(clients.ec2(vpc.region), dep, vpc, found)
    for region in dict.fromkeys(v.region for v in topology.vpcs):
        world["instances"].update(_describe_instances(clients.ec2(region), dep))
    world["peerings"] = _describe_peerings(topology, clients)
    world["zone"], world["record"] = _describe_zone(topology, clients)
    world["resolver_endpoints"] = _describe_endpoints(topology, clients, world["vpcs"])
    if table:
        _describe_state(topology, clients, table, table_region or "us-east-1", world)
    if controller:
        world["controller"] = _describe_controller(clients, controller, table_region or "us-east-1")
    return world


def _describe_controller(clients: Clients, function: str, region: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    try:
        arn = clients.client("lambda", region).get_function(FunctionName=function)["Configuration"]["FunctionArn"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        return {"function": function, "found": False, "rules": {}}
    events = clients.client("events", region)
    names = list(paginate(events, "list_rule_names_by_target", "RuleNames", TargetArn=arn))
    return {"function": function, "found": True,
            "rules": {name: events.describe_rule(Name=name).get("State") for name in names}}


def _describe_vpc(ec2: Any, dep: str, vpc: Vpc, found: dict[str, Any]) -> dict[str, Any]:
    vpc_id = found["VpcId"]
    igw = find_internet_gateway(ec2, dep, vpc.name)
    attached = igw is not None and any(a.get("VpcId") == vpc_id and a.get("State") in ("available", "attached")
                                       for a in igw.get("Attachments", []))
    ours = [vpc_filter(vpc_id), *deployment_filter(dep)]
    all_tables = list(paginate(ec2, "describe_route_tables", "RouteTables", Filters=[vpc_filter(vpc_id)]))
    association = {a["SubnetId"]: t["RouteTableId"] for t in all_tables for a in t.get("Associations", [])
                   if a.get("SubnetId") and a.get("AssociationState", {}).get("State", "associated") == "associated"}
    subnets = {tag_value(s, TAG_NAME): {"id": s["SubnetId"], "cidr": s["CidrBlock"], "az": s["AvailabilityZone"],
                                        "route_table": association.get(s["SubnetId"])}
               for s in paginate(ec2, "describe_subnets", "Subnets", Filters=ours) if tag_value(s, TAG_NAME)}
    tables = {tag_value(t, TAG_NAME): {"id": t["RouteTableId"], "routes": t.get("Routes", [])}
              for t in all_tables if tag_value(t, "regionha:deployment") == dep and tag_value(t, TAG_NAME)}
    groups = {tag_value(g, TAG_NAME): {"id": g["GroupId"], "ingress": []}
              for g in paginate(ec2, "describe_security_groups", "SecurityGroups", Filters=ours)
              if tag_value(g, TAG_NAME)}
    by_id = {g["id"]: g for g in groups.values()}
    if by_id:
        for rule in paginate(ec2, "describe_security_group_rules", "SecurityGroupRules",
                             Filters=[{"Name": "group-id", "Values": sorted(by_id)}]):
            if not rule["IsEgress"] and rule["GroupId"] in by_id:
                key = _existing_rule_key(rule)
                by_id[rule["GroupId"]]["ingress"].append(list(key) if key is not None else None)
    acls = list(paginate(ec2, "describe_network_acls", "NetworkAcls", Filters=[vpc_filter(vpc_id)]))
    return {"id": vpc_id, "cidr": found["CidrBlock"],
            "internet_gateway": igw["InternetGatewayId"] if igw is not None and attached else None,
            "subnets": subnets, "route_tables": tables, "security_groups": groups, "network_acls": acls}


def _describe_instances(ec2: Any, dep: str) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for reservation in paginate(ec2, "describe_instances", "Reservations", Filters=deployment_filter(dep)):
        for inst in reservation["Instances"]:
            name, state = tag_value(inst, TAG_NAME), inst["State"]["Name"]
            if not name or state not in _STATE_RANK:
                continue
            if name in best and _STATE_RANK[best[name]["state"]] <= _STATE_RANK[state]:
                continue
            enis = inst.get("NetworkInterfaces") or []
            primary = next((n for n in enis if n.get("Attachment", {}).get("DeviceIndex", 0) == 0), None)
            best[name] = {"id": inst["InstanceId"], "state": state, "subnet_id": inst.get("SubnetId"),
                          "private_ip": inst.get("PrivateIpAddress"), "public_ip": inst.get("PublicIpAddress"),
                          # The primary interface's groups are the instance's (the build sets them there).
                          "security_groups": sorted(g["GroupId"] for g in (primary or inst).get(
                              "Groups" if primary else "SecurityGroups", [])),
                          "http_tokens": (inst.get("MetadataOptions") or {}).get("HttpTokens"),
                          "eni": primary["NetworkInterfaceId"] if primary else None}
    return best


def _describe_peerings(topology: Topology, clients: Clients) -> dict[str, dict[str, Any]]:
    from regionha.converge.peering import find_peering

    out = {}
    for p in topology.peerings:
        pcx = find_peering(topology, p.name, clients)
        if pcx is None:
            # A failed or rejected one says more than "missing"; deleted ones are history.
            ec2 = clients.ec2(topology.region_of(p.requester))
            dead = [x for x in paginate(ec2, "describe_vpc_peering_connections", "VpcPeeringConnections")
                    if tag_value(x, TAG_NAME) == p.name and tag_value(x, "regionha:deployment") == topology.deployment
                    and x["Status"]["Code"] not in ("deleted", "deleting")]
            pcx = dead[-1] if dead else None
        if pcx is not None:
            out[p.name] = {"id": pcx["VpcPeeringConnectionId"], "status": pcx["Status"]["Code"],
                           "requester_vpc": pcx["RequesterVpcInfo"].get("VpcId"),
                           "accepter_vpc": pcx["AccepterVpcInfo"].get("VpcId")}
    return out


def _describe_zone(topology: Topology, clients: Clients) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    from regionha.converge.dns import _find_zone, _zone_id

    r53 = clients.route53()
    found = _find_zone(r53, topology)
    if found is None:
        return None, []
    zone_id = _zone_id(found[0])
    vpcs = r53.get_hosted_zone(Id=zone_id).get("VPCs", [])
    name = topology.dns.record.name
    page = r53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name, MaxItems="10")
    sets = [{"type": s["Type"], "ttl": s.get("TTL"), "values": [r["Value"] for r in s.get("ResourceRecords", [])]}
            for s in page["ResourceRecordSets"] if s["Name"].lower() == name.lower()]
    return {"id": zone_id, "vpcs": sorted(v["VPCId"] for v in vpcs)}, sets


def _describe_endpoints(topology: Topology, clients: Clients, vpcs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from regionha.converge.dns import _find_endpoint

    out = {}
    for path in topology.forwarder_paths:
        if path.kind != "resolver_endpoint":
            continue
        region = topology.region_of(path.vpc)
        rr = clients.route53resolver(region)
        found = _find_endpoint(rr, topology, path.name)
        if found is None:
            continue
        ep = found[0]
        ips = [{"ip": a.get("Ip"), "subnet_id": a.get("SubnetId"), "status": a.get("Status"), "eni": False}
               for a in paginate(rr, "list_resolver_endpoint_ip_addresses", "IpAddresses", ResolverEndpointId=ep["Id"])]
        vpc_id = (vpcs.get(path.vpc) or {}).get("id") or ep.get("HostVPCId")
        if ips and vpc_id:
            # Resolver does not say when the network interface behind an address is gone: EC2 does.
            held = {addr["PrivateIpAddress"]
                    for eni in paginate(clients.ec2(region), "describe_network_interfaces", "NetworkInterfaces",
                                        Filters=[vpc_filter(vpc_id), {"Name": "addresses.private-ip-address",
                                                                      "Values": [a["ip"] for a in ips]}])
                    for addr in eni.get("PrivateIpAddresses", [])}
            for a in ips:
                a["eni"] = a["ip"] in held
        out[path.name] = {"id": ep["Id"], "status": ep.get("Status"), "direction": ep.get("Direction"),
                          "security_groups": list(ep.get("SecurityGroupIds") or []), "ips": ips}
    return out


def _describe_state(topology: Topology, clients: Clients, table: str, region: str, world: World) -> None:
    from regionha.drill import DrillEnv, read_lock
    from regionha.failover import read_fence

    fence = read_fence(clients.client("dynamodb", region), table, topology.deployment)
    world["fence"] = {"active": fence.active, "generation": fence.generation} if fence.generation else None
    world["lock"] = read_lock(clients, DrillEnv(table=table, region=region), topology.deployment)
    world["faults"] = drill_faults.FaultStore(clients, table, region, topology.deployment).faults()


# --- publishing -----------------------------------------------------------------------------------------


def datapoints(deployment: str, findings: Iterable[Finding]) -> list[Any]:
    """``AuditFindings`` per kind (every kind, zeros included, so each graph and alarm has data) and the
    total (dimensions Deployment, Kind / Deployment)."""
    from regionha.watch.metrics import Datapoint

    findings = list(findings)
    counts = {kind: 0 for kind in KINDS}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    points = [Datapoint(METRIC, float(n), "Count", {"Deployment": deployment, "Kind": kind})
              for kind, n in counts.items()]
    return [*points, Datapoint(METRIC, float(len(findings)), "Count", {"Deployment": deployment})]
