"""The defect catalogue of ``regionha prove``: each defect is how to inject it into a built local
deployment, and which catchers of the watch are expected to notice it.

A defect is data (``Defect``): a name, a one-line title, an ``inject(lab) -> undo`` function that
breaks the running world the way a person, a script or a bad day would (the same API calls, or the
same named config a box would run), and the expected catchers:

- ``alarms``: glob patterns (``fnmatch``) of the alarm names expected to go to ALARM (canary and
  stack alarms; ``*`` matches the deployment's prefix), e.g. ``"*-path-down-osaka-bind"``;
- ``findings``: the readiness audit's finding kinds (``regionha.watch.audit.KINDS``) expected in the
  scheduled audit's ``AuditFindings`` metric;
- ``drill``: the acceptance drill's expected verdict on the broken world (``"FAILED"``), or None
  when the drill is not expected to say anything;
- ``awaiting``: a catcher that is expected but does not catch yet (and why), so that the matrix
  says honestly why it is missing;
- ``repaired_by``: the part of the product that removes the defect on its own (e.g. the fault
  sweeper); its inject sets ``lab.present`` (a function: is the defect still there?) and the matrix
  shows when it was gone.

``undo`` puts back exactly what ``inject`` changed; when that is a converge (the build state
machine), the defect says ``rebuild=True`` instead and its undo may do nothing. Users add their
own defects in a Python file with a module-level ``DEFECTS`` list (``regionha prove --catalogue
FILE``); see docs/prove.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regionha import netguard
from regionha.aws import Clients, deployment_filter
from regionha.topology import Topology

Undo = Callable[[], None]


@dataclass(frozen=True)
class Defect:
    """One defect kind: ``inject(lab)`` breaks the world and returns its undo."""

    name: str
    title: str
    inject: Callable[[Lab], Undo]
    alarms: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    drill: str | None = None
    rebuild: bool = False
    awaiting: str = ""
    repaired_by: str = ""

    @property
    def control(self) -> bool:
        """The clean control: nothing expected, nothing may fire."""
        return not (self.alarms or self.findings)


@dataclass
class Lab:
    """What an inject function gets: the running local runtime, its topology and AWS clients, and
    small helpers to find the deployment's resources by their ``regionha:name`` tag."""

    runtime: Any
    topology: Topology
    clients: Clients
    # Set by an inject whose defect the product may repair on its own: whether it is still there.
    present: Callable[[], bool] | None = None

    def ec2(self, vpc: str) -> Any:
        return self.clients.ec2(self.topology.region_of(vpc))

    def tagged(self, vpc: str, kind: str, name: str) -> dict[str, Any]:
        """The deployment's ``kind`` (route-table, security-group, subnet, instance) named ``name``."""
        call, key = {"route-table": ("describe_route_tables", "RouteTables"),
                     "security-group": ("describe_security_groups", "SecurityGroups"),
                     "subnet": ("describe_subnets", "Subnets"),
                     "instance": ("describe_instances", "Reservations")}[kind]
        found = getattr(self.ec2(vpc), call)(Filters=deployment_filter(self.topology.deployment, name))[key]
        if kind == "instance":
            found = [i for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]
        if not found:
            raise LookupError(f"{kind} {name} of {self.topology.deployment} not found in {vpc}")
        return found[0]

    def zone_id(self) -> str:
        from regionha.record import zone_id_or_raise

        return zone_id_or_raise(self.clients.route53(), self.topology)

    def upsert_record(self, ip: str, ttl: int) -> None:
        """UPSERT the record as a person in the console would: no fence, no controller."""
        self.clients.route53().change_resource_record_sets(HostedZoneId=self.zone_id(), ChangeBatch={"Changes": [{
            "Action": "UPSERT", "ResourceRecordSet": {"Name": self.topology.dns.record.name, "Type": "A", "TTL": ttl,
                                                      "ResourceRecords": [{"Value": ip}]}}]})

    def reload_named(self, server: str, edit: Callable[[str], str]) -> Undo:
        """Reload the running ``named`` of BIND server ``server`` with its config passed through
        ``edit`` (what a hand edit on the box does); the undo reloads regionha's render."""
        fleet = self.runtime.fleet
        process = fleet.processes.get(server)
        if process is None:
            raise LookupError(f"no named runs for {server}")
        spec = next(s for s, _, _ in fleet.servers() if s.name == server)
        render = fleet._render_local(spec)
        process.reload(lambda files: edit(render(files)))
        return lambda: process.reload(render)


def _record_ip(lab: Lab) -> str:
    return str(lab.topology.primary.ip)


# --- the defects --------------------------------------------------------------------------------------


def controller_absent(lab: Lab) -> Undo:
    """Every EventBridge rule that starts the failover controller disabled: no health check runs and no
    EC2 state change reaches it (as if it was never deployed or someone switched it off)."""
    events = lab.clients.client("events", lab.runtime.region)
    arn = lab.runtime.stack.physical_id("FailoverControllerFunction")
    function_arn = lab.clients.client("lambda", lab.runtime.region).get_function(FunctionName=arn)[
        "Configuration"]["FunctionArn"]
    names = events.list_rule_names_by_target(TargetArn=function_arn)["RuleNames"]
    for name in names:
        events.disable_rule(Name=name)

    def undo() -> None:
        for name in names:
            events.enable_rule(Name=name)
    return undo


def ttl_far_too_long(lab: Lab) -> Undo:
    """The record's TTL set to a day: after a failover on-prem caches serve the old node that long."""
    lab.upsert_record(_record_ip(lab), 86400)
    return lambda: lab.upsert_record(_record_ip(lab), lab.topology.dns.record.ttl)


def record_ttl_drifted(lab: Lab) -> Undo:
    """The record's TTL changed by hand to 5 minutes (the topology says otherwise)."""
    lab.upsert_record(_record_ip(lab), 300)
    return lambda: lab.upsert_record(_record_ip(lab), lab.topology.dns.record.ttl)


def dns_rule_revoked(lab: Lab) -> Undo:
    """The Resolver endpoint's security group loses its DNS-over-UDP rule from the client network."""
    path = next(p for p in lab.topology.forwarder_paths if p.kind == "resolver_endpoint")
    group = lab.tagged(path.vpc, "security-group", path.security_group)["GroupId"]
    permission = {"IpProtocol": "udp", "FromPort": 53, "ToPort": 53,
                  "IpRanges": [{"CidrIp": str(lab.topology.client.cidr)}]}
    lab.ec2(path.vpc).revoke_security_group_ingress(GroupId=group, IpPermissions=[permission])
    return lambda: lab.ec2(path.vpc).authorize_security_group_ingress(GroupId=group, IpPermissions=[permission])


def forwarder_misconfigured(lab: Lab) -> Undo:
    """A BIND forwarder path's named.conf forwards the cluster zone to a wrong address (a typo in the
    VPC resolver's address): the path answers SERVFAIL."""
    path = next(p for p in lab.topology.forwarder_paths if p.kind == "bind")
    resolver = netguard.to_local(lab.topology.vpc(path.vpc).resolver_ip())
    wrong = resolver.rsplit(".", 1)[0] + ".99"
    return lab.reload_named(path.name, lambda conf: conf.replace(f"{{ {resolver} port", f"{{ {wrong} port"))


def _interconnect_tables(lab: Lab) -> list[tuple[str, str, str]]:
    """(vpc, route table, destination) of the routes the cluster nodes use to reach each other."""
    out = []
    for node in lab.topology.nodes:
        vpc = lab.topology.vpc(node.vpc)
        table = next(t for t in vpc.route_tables if node.subnet in t.subnets)
        for peer in lab.topology.nodes:
            if peer.vpc != node.vpc:
                dest = str(lab.topology.vpc(peer.vpc).cidr)
                if any(str(r.destination) == dest for r in table.routes):
                    out.append((node.vpc, table.name, dest))
    return out


def interconnect_route_gone(lab: Lab) -> Undo:
    """The routes between the cluster nodes' subnets over the peering deleted (both directions): DNS
    still works, the cluster's heartbeat and mirror disk do not."""
    removed = []
    for vpc, table_name, dest in _interconnect_tables(lab):
        table = lab.tagged(vpc, "route-table", table_name)
        route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == dest)
        lab.ec2(vpc).delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock=dest)
        removed.append((vpc, table["RouteTableId"], dest, route["VpcPeeringConnectionId"]))

    def undo() -> None:
        for vpc, table_id, dest, pcx in removed:
            lab.ec2(vpc).create_route(RouteTableId=table_id, DestinationCidrBlock=dest, VpcPeeringConnectionId=pcx)
    return undo


def interconnect_peering_gone(lab: Lab) -> Undo:
    """The peering between the cluster nodes' VPCs deleted; the build makes a new one (rebuild)."""
    from regionha.converge.peering import find_peering

    nodes_vpcs = {n.vpc for n in lab.topology.nodes}
    peering = next(p for p in lab.topology.peerings if {p.requester, p.accepter} == nodes_vpcs)
    pcx = find_peering(lab.topology, peering.name, lab.clients)
    if pcx is None:
        raise LookupError(f"peering {peering.name} not found")
    lab.ec2(peering.requester).delete_vpc_peering_connection(VpcPeeringConnectionId=pcx["VpcPeeringConnectionId"])
    return lambda: None


def record_moved(lab: Lab) -> Undo:
    """The record moved by hand to the standby node, behind the controller's back (no failover, no
    fence): on-prem agrees with it, the standby answers, so every probe still passes."""
    standby = next(n for n in lab.topology.nodes if n.name != lab.topology.primary.name)
    lab.upsert_record(str(standby.ip), lab.topology.dns.record.ttl)
    return lambda: lab.upsert_record(_record_ip(lab), lab.topology.dns.record.ttl)


def endpoint_address_gone(lab: Lab) -> Undo:
    """The network interface behind one Resolver endpoint address deleted (Resolver still lists the
    address as ATTACHED)."""
    path = next(p for p in lab.topology.forwarder_paths if p.kind == "resolver_endpoint")
    ip = path.ips[-1]
    ec2 = lab.ec2(path.vpc)
    eni = ec2.describe_network_interfaces(
        Filters=[{"Name": "addresses.private-ip-address", "Values": [str(ip.ip)]}])["NetworkInterfaces"][0]
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
    subnet = lab.tagged(path.vpc, "subnet", ip.subnet)["SubnetId"]
    groups = [g["GroupId"] for g in eni.get("Groups") or []]
    return lambda: ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress=str(ip.ip), Groups=groups)


def onprem_forwarders_drifted(lab: Lab) -> Undo:
    """The on-prem resolver's forwarder list lost one region's BIND path (a config edit on the box):
    the other region still answers, so every canary probe passes until that region fails."""
    path = next(p for p in lab.topology.forwarder_paths if p.kind == "bind")
    gone = " ".join(f"{netguard.to_local(a)} port 53;" for a in path.addresses())
    return lab.reload_named(lab.topology.client.dns_server.name, lambda conf: conf.replace(f" {gone}", ""))


def drill_fault_left_behind(lab: Lab) -> Undo:
    """A drill's path cut (its NACL deny entries and marker tag) left with no fault item recording it,
    as a drill killed between its cut and its restore leaves it."""
    from regionha.drill import faults

    path = next(p for p in lab.topology.forwarder_paths if p.kind == "bind")
    fault = faults.path_fault(lab.topology, lab.clients, path.name)
    faults.apply_path_fault(lab.clients, fault, "drill-prove-killed")
    lab.present = lambda: bool(faults.remaining_entries(lab.clients, fault))

    def undo() -> None:
        faults.restore_path_fault(lab.clients, fault)
    return undo


def clean(lab: Lab) -> Undo:
    """Nothing changed: the control. Any alarm or finding here is a false alarm."""
    return lambda: None


# A catcher expected but not catching yet: the interconnect probe (interconnect-down-<a>-to-<b>) fires when the
# peering is gone, not when only the routes between the nodes' subnets are (12 emulated minutes watched).
INTERCONNECT_ROUTES = "interconnect: its probe does not notice the node subnets' routes gone (issue 13 item 2)"

DEFECTS: list[Defect] = [
    Defect("clean", "clean control (nothing injected)", clean),
    Defect("controller-absent", "failover controller absent (its rules disabled)", controller_absent,
           findings=("controller-disabled",), drill="FAILED"),
    # The drill passes: every named regionha renders caps its cache at the topology's TTL.
    Defect("ttl-far-too-long", "record TTL far too long (a day)", ttl_far_too_long, findings=("record-ttl",)),
    Defect("dns-rule-revoked", "DNS security-group rule revoked (Resolver endpoint)", dns_rule_revoked,
           alarms=("*-path-down-tokyo-resolver-*",), findings=("security-group-rule-missing",), drill="FAILED"),
    Defect("forwarder-misconfigured", "BIND forwarder misconfigured (wrong upstream)", forwarder_misconfigured,
           alarms=("*-path-down-osaka-bind",), drill="FAILED"),
    Defect("interconnect-route-gone", "interconnect routes between the nodes deleted", interconnect_route_gone,
           alarms=("*-interconnect-down-*",), findings=("route-missing",), awaiting=INTERCONNECT_ROUTES),
    Defect("interconnect-peering-gone", "interconnect peering deleted", interconnect_peering_gone,
           alarms=("*-interconnect-down-*",), findings=("peering-missing",), rebuild=True),
    Defect("record-moved", "record moved to the standby behind the controller's back", record_moved,
           findings=("record-value",)),
    Defect("record-ttl-drifted", "record TTL drifted (5 minutes)", record_ttl_drifted, findings=("record-ttl",)),
    # The twin, like AWS, stops answering on the address whose interface is gone: its path alarm fires too.
    Defect("endpoint-address-gone", "one Resolver endpoint address's interface gone", endpoint_address_gone,
           alarms=("*-path-down-tokyo-resolver-10.0.111.101",), findings=("resolver-endpoint-ip",)),
    Defect("onprem-forwarders-drifted", "on-prem forwarder list drifted (one region's path gone)",
           onprem_forwarders_drifted, alarms=("*-onprem-coverage-osaka-bind",), drill="FAILED"),
    # The fault sweeper (every 5 minutes) removes the entries; the audit (every 5 minutes) reports them
    # when it runs first; the path alarm needs 2 of 3 minutes. Which comes first is the schedules' phase.
    Defect("drill-fault-left-behind", "a drill's path cut left behind (no fault recorded)", drill_fault_left_behind,
           alarms=("*-path-down-osaka-bind",), repaired_by="fault sweeper"),
]
