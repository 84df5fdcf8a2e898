"""One combined end-to-end flow of a topology in the local runtime, and what a deployment left behind.

The flow: build (the build state machine, which also makes the alarms and dashboard from the
topology) → the canary, scheduled, with a cut path's alarm firing and clearing → the acceptance drill
PASSED → teardown (the teardown state machine) leaving nothing of the deployment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from regionha.aws import TAG_DEPLOYMENT, deployment_filter, tag_value
from regionha.converge.events import rule_name
from regionha.inventory import load_inventory
from regionha.local.demo import drill_input, drill_report_of, set_path_cut
from regionha.netguard import to_local
from regionha.topology import Topology
from regionha.watch.alarms import alarm_name, alarm_prefix, canary_alarm_intents, composite_name, dashboard_name
from regionha.watch.canary import client_source
from regionha.watch.interconnect import interconnect_alarm_intents


def leftovers(rt: Any, topology: Topology) -> dict[str, list[str]]:
    """Everything of ``topology.deployment`` that still exists in the emulated account (empty: nothing)."""
    out: dict[str, list[str]] = {}
    dep = topology.deployment
    for region in sorted({v.region for v in topology.vpcs}):
        ec2 = rt.clients.ec2(region)
        found = [v["VpcId"] for v in ec2.describe_vpcs(Filters=deployment_filter(dep))["Vpcs"]]
        found += [s["SubnetId"] for s in ec2.describe_subnets(Filters=deployment_filter(dep))["Subnets"]]
        found += [g["GroupId"] for g in ec2.describe_security_groups(Filters=deployment_filter(dep))["SecurityGroups"]]
        found += [i["InstanceId"] for r in ec2.describe_instances(Filters=deployment_filter(dep))["Reservations"]
                  for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")]
        # Tags judged here: moto 5.2.5 ignores DescribeVpcPeeringConnections' filters (the product does too).
        found += [p["VpcPeeringConnectionId"] for p in ec2.describe_vpc_peering_connections()["VpcPeeringConnections"]
                  if tag_value(p, TAG_DEPLOYMENT) == dep
                  and p["Status"]["Code"] not in ("deleted", "rejected", "failed")]
        endpoints = rt.clients.route53resolver(region).list_resolver_endpoints()["ResolverEndpoints"]
        found += [e["Id"] for e in endpoints if e["Name"] in {p.endpoint_name for p in topology.forwarder_paths
                                                              if p.kind == "resolver_endpoint"}]
        rules = rt.clients.client("events", region).list_rules(NamePrefix=rule_name(topology))["Rules"]
        found += [r["Name"] for r in rules if r["Name"] == rule_name(topology)]
        if found:
            out[region] = found
    zones = rt.clients.route53().list_hosted_zones_by_name(DNSName=topology.dns.zone_fqdn)["HostedZones"]
    zones = [z["Id"] for z in zones if z["Name"] == topology.dns.zone_fqdn]
    if zones:
        out["route53"] = zones
    cw = rt.clients.client("cloudwatch", rt.region)
    alarms = cw.describe_alarms(AlarmNamePrefix=alarm_prefix(dep), AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    mine = [a["AlarmName"] for a in alarms["MetricAlarms"]
            if {"Name": "Deployment", "Value": dep} in a.get("Dimensions", [])]
    mine += [a["AlarmName"] for a in alarms["CompositeAlarms"] if a["AlarmName"] == composite_name(dep)]
    mine += [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]
             if d["DashboardName"] == dashboard_name(dep)]
    if mine:
        out["cloudwatch"] = mine
    if load_inventory(rt.clients, rt.stack.physical_id("StateTable"), rt.region, dep) is not None:
        out["inventory"] = [dep]
    return out


def watch_made(rt: Any, topology: Topology) -> dict[str, Any]:
    """The alarms and dashboard the build made for ``topology``, against what its topology wants."""
    cw = rt.clients.client("cloudwatch", rt.region)
    dep = topology.deployment
    found = cw.describe_alarms(AlarmNamePrefix=alarm_prefix(dep), AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    return {
        "metric": sorted(a["AlarmName"] for a in found["MetricAlarms"]
                         if {"Name": "Deployment", "Value": dep} in a.get("Dimensions", [])),
        "wanted": sorted(alarm_name(dep, i.suffix)
                         for i in [*canary_alarm_intents(topology), *interconnect_alarm_intents(topology)]),
        "composite": [a["AlarmName"] for a in found["CompositeAlarms"] if a["AlarmName"] == composite_name(dep)],
        "dashboard": [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]
                      if d["DashboardName"] == dashboard_name(dep)],
    }


def cut_path_alarm(rt: Any, topology: Topology, path: str, *, minutes: float = 6) -> dict[str, Any]:
    """Cut ``path`` (network ACL deny from the client network) until its alarm fires, restore it, and
    wait for OK; the composite critical alarm must stay quiet meanwhile."""
    from regionha.local.demo import path_alarm_name

    labels = _labels(topology, path)
    alarms = [path_alarm_name(topology, label) for label in labels]
    since = rt.clock.now()
    set_path_cut(rt, path, cut=True, topology=topology)
    try:
        fired = {a: rt.wait_alarm(a, "ALARM", minutes=minutes) for a in alarms}
    finally:
        set_path_cut(rt, path, cut=False, topology=topology)
    cleared = {a: rt.wait_alarm(a, "OK", minutes=minutes) for a in alarms}
    critical = [t for t in rt.alarm_transitions(since)
                if t["alarm"] == composite_name(topology.deployment) and t["new"] == "ALARM"]
    return {"alarms": alarms, "fired": fired, "cleared": cleared, "critical_fired": critical}


def _labels(topology: Topology, path: str) -> list[str]:
    from regionha.watch.canary import canary_targets

    return [t.path for t in canary_targets(topology) if t.forwarder == path]


def acceptance_drill(rt: Any, topology: Topology, **overrides: Any) -> dict[str, Any]:
    payload = {**drill_input(topology), "deployment": topology.deployment, **overrides}
    execution = rt.run_state_machine("DrillStateMachine", payload, kind="drill", timeout=600)
    report = drill_report_of(rt, execution)
    report["execution_status"] = execution.status
    return report


@contextlib.contextmanager
def second_deployment(rt: Any, topology: Topology) -> Iterator[Any]:
    """The loopback world of a second deployment built in the same runtime (its nodes, VPC resolvers,
    BIND servers and network cuts), as LocalRuntime.start() makes the first one's; stopped on exit.

    The stack's scheduled consumers (canary, failover controller) watch the stack's own deployment;
    a second deployment has a stack of its own on AWS (docs/topologies.md)."""
    from regionha.local.aws.vpcdns import VpcResolver, vpc_id_by_tags
    from regionha.local.host.network import LocalNetwork
    from regionha.local.host.nodes import NodeService
    from regionha.local.runtime import DNS_PORT, BindFleet
    from regionha.local.world import World

    # The runtime's own network state directory: a second one would take the first's addresses for debris.
    network = LocalNetwork(rt.netns.directory / "localnet")
    nodes = {n.name: NodeService(n.name, to_local(n.ip), n.port) for n in topology.nodes}
    world = World(topology, rt.clients, network, nodes)
    resolvers: list[Any] = []
    fleet = BindFleet(topology, rt.clients, rt.workdir / topology.deployment)
    try:
        world.ensure_addresses()
        for address in [to_local(v.resolver_ip()) for v in topology.vpcs] + [to_local(client_source(topology))]:
            network.add_address(address)
        for vpc in topology.vpcs:
            listen = [(to_local(vpc.resolver_ip()), DNS_PORT)]
            listen += [(to_local(ip), DNS_PORT) for p in topology.forwarder_paths
                       if p.kind == "resolver_endpoint" and p.vpc == vpc.name for ip in p.addresses()]
            resolver = VpcResolver(vpc.region, vpc_id_by_tags(rt.clients.ec2(vpc.region), topology.deployment,
                                                               vpc.name), rt.clients.route53(), listen, name=vpc.name)
            resolver.start()
            resolvers.append(resolver)
        world.run(0.2)
        fleet.run(0.2)
        world.reconcile()
        fleet.reconcile()
        yield world
    finally:
        fleet.stop()
        world.stop()
        for resolver in resolvers:
            resolver.stop()
        for node in nodes.values():
            node.stop()
        network.close()


def resolve_all(rt: Any, topology: Topology, *, within: float = 0.0) -> dict[str, bool]:
    """A canary run of ``topology`` from its client site: path label -> success. With ``within`` (real
    seconds), runs again until every path succeeds or the bound passes, and returns the last run."""
    import time

    from regionha.converge.dns import read_record
    from regionha.watch.canary import run_canary, truth_from_record

    deadline = time.monotonic() + within
    while True:
        truth = truth_from_record(topology, read_record(topology, rt.clients))
        run = run_canary(topology, truth, source=client_source(topology))
        result = {p.path: p.success for p in run.paths}
        if all(result.values()) or time.monotonic() >= deadline:
            return result
        time.sleep(1.0)
