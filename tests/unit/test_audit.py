"""The readiness audit's judgement, pure: a world synthesised from the topology, then one drift at a time.

GIVEN a world that matches the reference topology exactly (ids invented, no AWS, no moto),
WHEN one thing drifts,
THEN ``audit`` reports exactly that drift, with its kind, resource and reason; a clean world gives none.
"""

from __future__ import annotations

import copy

import pytest

from regionha.topology import Failover
from regionha.watch import audit

NOW = 1_000_000.0


def clean_world(topology) -> dict:
    """What a finished build of ``topology`` looks like to describe_world."""
    world = {"vpcs": {}, "peerings": {}, "instances": {}, "resolver_endpoints": {}, "fence": None, "lock": None,
             "faults": [], "now": NOW}
    for p in topology.peerings:
        world["peerings"][p.name] = {"id": f"pcx-{p.name}", "status": "active", "requester_vpc": f"vpc-{p.requester}",
                                     "accepter_vpc": f"vpc-{p.accepter}"}
    for inst in audit.expected_instances(topology):
        world["instances"][inst["name"]] = {
            "id": f"i-{inst['name']}", "state": "running", "subnet_id": f"subnet-{inst['subnet']}",
            "private_ip": inst["ip"] or "10.99.0.1", "public_ip": "198.51.100.7" if inst["nat"] else None,
            "security_groups": [f"sg-{inst['vpc']}-{inst['sg']}"], "http_tokens": "required",
            "eni": f"eni-{inst['name']}"}
    for vpc in topology.vpcs:
        tables = {}
        for rt in vpc.route_tables:
            routes = [{"DestinationCidrBlock": str(vpc.cidr), "GatewayId": "local", "Origin": "CreateRouteTable",
                       "State": "active"}]
            for r in rt.routes:
                if r.target == "igw":
                    target = {"GatewayId": f"igw-{vpc.name}"}
                elif r.target == "nat":
                    target = {"NetworkInterfaceId": f"eni-{vpc.nat_instance.name}"}
                else:
                    target = {"VpcPeeringConnectionId": f"pcx-{r.peering}"}
                routes.append({"DestinationCidrBlock": str(r.destination), **target, "Origin": "CreateRoute",
                               "State": "active"})
            tables[rt.name] = {"id": f"rtb-{rt.name}", "routes": routes}
        table_of = {s: f"rtb-{rt.name}" for rt in vpc.route_tables for s in rt.subnets}
        world["vpcs"][vpc.name] = {
            "id": f"vpc-{vpc.name}", "cidr": str(vpc.cidr),
            "internet_gateway": f"igw-{vpc.name}" if vpc.internet_gateway else None,
            "subnets": {s.name: {"id": f"subnet-{s.name}", "cidr": str(s.cidr), "az": s.az,
                                 "route_table": table_of.get(s.name)} for s in vpc.subnets},
            "route_tables": tables,
            "security_groups": {sg.name: {"id": f"sg-{vpc.name}-{sg.name}",
                                          "ingress": [list(audit._rule_key(i)) for i in sg.ingress]}
                                for sg in audit._security_groups(vpc)},
            "network_acls": [{"NetworkAclId": f"acl-{vpc.name}", "Tags": [], "Entries": [
                {"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "Egress": False, "CidrBlock": "0.0.0.0/0"},
                {"RuleNumber": 32767, "Protocol": "-1", "RuleAction": "deny", "Egress": False,
                 "CidrBlock": "0.0.0.0/0"}]}],
        }
    world["zone"] = {"id": "Z1", "vpcs": sorted(f"vpc-{v}" for v in topology.dns.zone_vpcs)}
    for path in topology.forwarder_paths:
        if path.kind == "resolver_endpoint":
            world["resolver_endpoints"][path.name] = {
                "id": f"rslvr-in-{path.name}", "status": "OPERATIONAL", "direction": "INBOUND",
                "security_groups": [f"sg-{path.vpc}-{path.security_group}"],
                "ips": [{"ip": str(a.ip), "subnet_id": f"subnet-{a.subnet}", "status": "ATTACHED", "eni": True}
                        for a in path.ips]}
    world["record"] = [{"type": "A", "ttl": topology.dns.record.ttl, "values": [str(topology.primary.ip)]}]
    world["controller"] = {"function": "FailoverController", "found": True,
                           "rules": {"HealthCheck": "ENABLED", "InstanceStateChange": "ENABLED"}}
    return world


def deny(rule, cidr="10.2.10.0/24", protocol="17", port=53):
    entry = {"RuleNumber": rule, "Protocol": protocol, "RuleAction": "deny", "Egress": False, "CidrBlock": cidr}
    if protocol != "-1":
        entry["PortRange"] = {"From": port, "To": port}
    return entry


def drop_route(destination):
    def change(w):
        routes = w["vpcs"]["osaka"]["route_tables"]["B2-rt"]["routes"]
        routes[:] = [r for r in routes if r["DestinationCidrBlock"] != destination]
    return change


def set_in(*path_and_value):
    *path, value = path_and_value

    def change(w):
        node = w
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def delete_in(*path):
    def change(w):
        node = w
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return change


def orphan_deny(w):
    acl = w["vpcs"]["osaka"]["network_acls"][0]
    acl["Entries"].append(deny(64))
    acl["Tags"] = [{"Key": "regionha:drill", "Value": "drill-9 cuts osaka-bind"}]


def hand_made_cut(w):
    w["vpcs"]["osaka"]["network_acls"][0]["Entries"].append(deny(91, protocol="-1"))


def foreign_deny(w):
    w["vpcs"]["osaka"]["network_acls"][0]["Entries"].append(deny(90, cidr="10.9.0.0/16", protocol="6", port=22))


def blackhole(w):
    route = next(r for r in w["vpcs"]["tokyo"]["route_tables"]["A2-rt"]["routes"]
                 if r["DestinationCidrBlock"] == "10.1.0.0/16")
    route["State"] = "blackhole"


def other_peering(w):
    route = next(r for r in w["vpcs"]["tokyo"]["route_tables"]["A1-rt"]["routes"]
                 if r["DestinationCidrBlock"] == "10.1.0.0/16")
    route["VpcPeeringConnectionId"] = "pcx-onprem-tokyo"


def extra_route(w):
    w["vpcs"]["tokyo"]["route_tables"]["A3-rt"]["routes"].append(
        {"DestinationCidrBlock": "192.168.0.0/16", "GatewayId": "igw-tokyo", "Origin": "CreateRoute",
         "State": "active"})


def revoke_rule(w):
    w["vpcs"]["tokyo"]["security_groups"]["InboundEndpoint"]["ingress"].remove(["udp", 53, 53, "10.2.10.0/24"])


def open_rule(w):
    w["vpcs"]["tokyo"]["security_groups"]["ClusterNode"]["ingress"].append(["tcp", 22, 22, "0.0.0.0/0"])


def extra_endpoint_ip(w):
    w["resolver_endpoints"]["tokyo-resolver"]["ips"].append(
        {"ip": "10.0.111.102", "subnet_id": "subnet-A3", "status": "ATTACHED", "eni": True})


def zone_extra(w):
    w["zone"]["vpcs"].append("vpc-singapore")


DRIFTS = [
    # (what, change, kind, resource, reason fragment)
    ("VPC deleted", delete_in("vpcs", "singapore"), "vpc-missing", "singapore", "no VPC tagged regionha-ref/singapore"),
    ("VPC CIDR", set_in("vpcs", "tokyo", "cidr", "10.9.0.0/16"), "vpc-drift", "tokyo", "expected 10.0.0.0/16"),
    ("IGW detached", set_in("vpcs", "tokyo", "internet_gateway", None), "vpc-drift", "tokyo",
     "internet gateway tokyo-igw missing"),
    ("subnet deleted", delete_in("vpcs", "tokyo", "subnets", "A3"), "subnet-missing", "tokyo/A3", "10.0.111.0/24"),
    ("subnet AZ", set_in("vpcs", "osaka", "subnets", "B1", "az", "ap-northeast-3b"), "subnet-drift", "osaka/B1",
     "expected 10.1.10.0/24 in ap-northeast-3a"),
    ("route table deleted", delete_in("vpcs", "osaka", "route_tables", "B3-rt"), "route-table-missing",
     "osaka/B3-rt", "no route table"),
    ("subnet on the main table", set_in("vpcs", "osaka", "subnets", "B2", "route_table", None),
     "route-table-association", "osaka/B2", "uses the main route table"),
    ("peering route deleted", drop_route("10.0.0.0/16"), "route-missing", "osaka/B2-rt 10.0.0.0/16",
     "no route via peering tokyo-osaka (osaka -> tokyo)"),
    ("NAT route deleted", drop_route("0.0.0.0/0"), "route-missing", "osaka/B2-rt 0.0.0.0/0",
     "no route via NAT instance nat-osaka"),
    ("route to a dead peering", blackhole, "route-target", "tokyo/A2-rt 10.1.0.0/16", "blackhole via pcx-tokyo-osaka"),
    ("route via another peering", other_peering, "route-target", "tokyo/A1-rt 10.1.0.0/16",
     "via pcx-onprem-tokyo, expected peering tokyo-osaka (tokyo -> osaka)"),
    ("hand-added route", extra_route, "route-extra", "tokyo/A3-rt 192.168.0.0/16", "declared by no topology row"),
    ("peering deleted", delete_in("peerings", "onprem-osaka"), "peering-missing", "peering onprem-osaka",
     "no live peering singapore -> osaka"),
    ("peering not active", set_in("peerings", "tokyo-osaka", "status", "pending-acceptance"), "peering-inactive",
     "peering tokyo-osaka", "is pending-acceptance, expected active"),
    ("security group deleted", delete_in("vpcs", "singapore", "security_groups", "OnPremDns"),
     "security-group-missing", "singapore/OnPremDns", "no security group"),
    ("DNS rule revoked", revoke_rule, "security-group-rule-missing", "tokyo/InboundEndpoint",
     "lacks ingress udp/53<-10.2.10.0/24"),
    ("rule added", open_rule, "security-group-rule-extra", "tokyo/ClusterNode", "undeclared ingress tcp/22<-0.0.0.0/0"),
    ("orphaned drill entry", orphan_deny, "nacl-deny", "osaka/acl-osaka rule 64",
     "deny 10.2.10.0/24 udp/53 inbound left by a drill (no fault recorded)"),
    ("someone's deny in the range", foreign_deny, "nacl-deny", "osaka/acl-osaka rule 90", "made by no drill"),
    ("hand-made cut in the range, no drill marker", hand_made_cut, "nacl-deny", "osaka/acl-osaka rule 91",
     "deny 10.2.10.0/24 all inbound in the drill's reserved range 60-99, made by no drill"),
    ("zone deleted", set_in("zone", None), "zone-missing", "zone cluster.local.", "no private hosted zone"),
    ("zone association lost", set_in("zone", "vpcs", ["vpc-tokyo"]), "zone-association", "zone cluster.local.",
     "not associated with osaka (vpc-osaka)"),
    ("zone association added", zone_extra, "zone-association", "zone cluster.local.",
     "also associated with vpc-singapore"),
    ("endpoint deleted", delete_in("resolver_endpoints", "tokyo-resolver"), "resolver-endpoint-missing",
     "resolver-endpoint tokyo-resolver", "no inbound endpoint InboundTest"),
    ("endpoint degraded", set_in("resolver_endpoints", "tokyo-resolver", "status", "ACTION_NEEDED"),
     "resolver-endpoint-status", "resolver-endpoint tokyo-resolver", "is ACTION_NEEDED, expected OPERATIONAL"),
    ("endpoint security group swapped", set_in("resolver_endpoints", "tokyo-resolver", "security_groups", ["sg-x"]),
     "resolver-endpoint-status", "resolver-endpoint tokyo-resolver", "expected InboundEndpoint"),
    ("endpoint IP detached", set_in("resolver_endpoints", "tokyo-resolver", "ips", 1, "status", "DETACHING"),
     "resolver-endpoint-ip", "resolver-endpoint tokyo-resolver 10.0.111.101", "status DETACHING"),
    ("endpoint IP's interface gone", set_in("resolver_endpoints", "tokyo-resolver", "ips", 0, "eni", False),
     "resolver-endpoint-ip", "resolver-endpoint tokyo-resolver 10.0.111.100", "no network interface"),
    ("endpoint IP removed", delete_in("resolver_endpoints", "tokyo-resolver", "ips", 0), "resolver-endpoint-ip",
     "resolver-endpoint tokyo-resolver 10.0.111.100", "not an address of rslvr-in-tokyo-resolver"),
    ("endpoint IP added", extra_endpoint_ip, "resolver-endpoint-ip", "resolver-endpoint tokyo-resolver 10.0.111.102",
     "does not declare"),
    ("instance terminated", delete_in("instances", "osaka-bind"), "instance-missing", "instance osaka-bind",
     "no live instance"),
    ("node stopped", set_in("instances", "Server-B", "state", "stopped"), "instance-state", "instance Server-B",
     "i-Server-B is stopped, expected running"),
    ("node re-addressed", set_in("instances", "Server-A", "private_ip", "10.0.110.11"), "instance-drift",
     "instance Server-A", "private IP 10.0.110.11, expected 10.0.110.10"),
    ("node security group swapped", set_in("instances", "Server-A", "security_groups", ["sg-other"]),
     "instance-drift", "instance Server-A", "lack ClusterNode"),
    ("IMDSv1 allowed", set_in("instances", "onprem-dns", "http_tokens", "optional"), "instance-imdsv2",
     "instance onprem-dns", "HttpTokens is optional"),
    ("public IP on a node", set_in("instances", "Server-A", "public_ip", "203.0.113.9"), "instance-public-ip",
     "instance Server-A", "public IP 203.0.113.9"),
    ("record deleted", set_in("record", []), "record-missing", "record sample.cluster.local.", "no A record"),
    ("record made a CNAME", set_in("record", [{"type": "CNAME", "ttl": 60, "values": ["x.example."]}]),
     "record-type", "record sample.cluster.local.", "is CNAME, expected A"),
    ("record moved behind the controller's back", set_in("record", 0, "values", ["10.1.110.10"]), "record-value",
     "record sample.cluster.local.", "names 10.1.110.10 (Server-B), but no failover happened: the primary Server-A"),
    ("record to a stranger", set_in("record", 0, "values", ["10.0.110.99"]), "record-value",
     "record sample.cluster.local.", "names 10.0.110.99 (no node)"),
    ("record with two values", set_in("record", 0, "values", ["10.0.110.10", "10.1.110.10"]), "record-value",
     "record sample.cluster.local.", "holds 2 values"),
    ("record TTL drifted", set_in("record", 0, "ttl", 120), "record-ttl", "record sample.cluster.local.",
     "TTL 120 s, expected 60 s"),
    ("record TTL far too long", set_in("record", 0, "ttl", 86400), "record-ttl", "record sample.cluster.local.",
     "TTL 86400 s, expected 60 s, over the RTO budget of 300 s"),
    ("controller deleted", set_in("controller", "found", False), "controller-missing",
     "controller FailoverController", "function is gone"),
    ("controller's schedule disabled", set_in("controller", "rules", "HealthCheck", "DISABLED"),
     "controller-disabled", "controller FailoverController", "rule HealthCheck is DISABLED"),
    ("no rule starts the controller", set_in("controller", "rules", {}), "controller-disabled",
     "controller FailoverController", "no EventBridge rule starts it"),
]


def test_a_clean_world_has_no_finding(topology):
    assert audit.audit(topology, clean_world(topology)) == []


@pytest.mark.parametrize(("what", "change", "kind", "resource", "reason"), DRIFTS, ids=[d[0] for d in DRIFTS])
def test_each_drift_is_one_finding_that_names_it(topology, what, change, kind, resource, reason):
    world = clean_world(topology)
    change(world)

    findings = audit.audit(topology, copy.deepcopy(world))

    assert [(f.kind, f.resource) for f in findings] == [(kind, resource)], [str(f) for f in findings]
    assert reason in findings[0].reason
    assert kind in audit.KINDS
    assert "\n" not in str(findings[0])


def test_every_kind_is_covered_by_a_drift():
    assert {d[2] for d in DRIFTS} == set(audit.KINDS)


def test_the_record_must_name_the_fences_node_after_a_failover(topology):
    world = clean_world(topology)
    world["fence"] = {"active": "Server-B", "generation": 4}
    assert [f.reason for f in audit.audit(topology, world)] == [
        "names 10.0.110.10 (Server-A), but the fence (generation 4) says Server-B (10.1.110.10)"]

    world["record"][0]["values"] = ["10.1.110.10"]
    assert audit.audit(topology, world) == []


def test_the_controller_is_judged_only_when_described_and_only_in_builtin_mode(topology):
    world = clean_world(topology)
    world["controller"] = None  # describe_world was not given the controller
    assert audit.audit(topology, world) == []

    external = topology.model_copy(update={"failover": Failover(mode="external")})
    world = clean_world(external)
    world["controller"]["found"] = False  # external mode: the cluster software moves the record
    assert audit.audit(external, world) == []


def test_in_external_mode_any_node_will_do_but_no_stranger(topology):
    external = topology.model_copy(update={"failover": Failover(mode="external")})
    world = clean_world(external)
    world["record"][0]["values"] = ["10.1.110.10"]
    assert audit.audit(external, world) == []

    world["record"][0]["values"] = ["10.1.110.11"]
    assert [f.kind for f in audit.audit(external, world)] == ["record-value"]


def path_fault_item(execution, nacl="acl-osaka"):
    return {"kind": "path", "target": "osaka-bind", "execution": execution, "cidr": "10.2.10.0/24",
            "entries": [{"nacl": nacl, "rule": 64, "protocol": "17"}, {"nacl": nacl, "rule": 65, "protocol": "6"}]}


def test_a_running_drills_cut_and_stopped_node_are_not_drift_but_a_dead_drills_are(topology):
    world = clean_world(topology)
    world["vpcs"]["osaka"]["network_acls"][0]["Entries"] += [deny(64), deny(65, protocol="6")]
    world["instances"]["Server-B"]["state"] = "stopped"
    world["faults"] = [path_fault_item("drill-1"),
                       {"kind": "node", "target": "Server-B", "execution": "drill-1", "instance_id": "i-Server-B"}]
    world["lock"] = {"holder": "drill-1", "expires_at": NOW + 60}
    assert audit.audit(topology, world) == []

    world["lock"] = {"holder": "drill-1", "expires_at": NOW - 1}  # expired: nobody runs
    found = audit.audit(topology, world)
    assert sorted(f.kind for f in found) == ["instance-state", "nacl-deny", "nacl-deny"]
    assert "recorded by drill drill-1, which holds no lock" in found[0].reason

    world["lock"] = {"holder": "drill-2", "expires_at": NOW + 60}  # another drill runs: not its faults
    assert len(audit.audit(topology, world)) == 3


def test_datapoints_are_one_per_kind_and_a_total(topology):
    findings = [audit.Finding("record-ttl", "r", "x"), audit.Finding("nacl-deny", "a", "y"),
                audit.Finding("nacl-deny", "b", "z")]

    points = audit.datapoints("dep", findings)

    by_kind = {p.dimensions.get("Kind"): p.value for p in points}
    assert by_kind.pop(None) == 3.0
    assert by_kind == {k: (2.0 if k == "nacl-deny" else 1.0 if k == "record-ttl" else 0.0) for k in audit.KINDS}
    assert all(p.name == "AuditFindings" and p.dimensions["Deployment"] == "dep" for p in points)
