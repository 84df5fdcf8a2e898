"""The interconnect watched, end to end in the local runtime: the real template's probe functions on their
schedule, the twin's routes/peerings deciding node-to-node packets, the alarms on the emulated clock,
and the failover controller's refusal.

One runtime for the module; the tests run in file order: a clean run has no alarm, then the cluster
peering's routes are deleted, then the peering itself.
"""

from __future__ import annotations

import json

import pytest

from regionha.aws import deployment_filter
from regionha.watch.alarms import alarm_name
from regionha.watch.interconnect import probe_interconnect

pytestmark = [pytest.mark.integration, pytest.mark.serial]

PEERING = "tokyo-osaka"


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


@pytest.fixture(scope="module")
def runtime(start_runtime):
    return start_runtime(settle=True)


def alarms(runtime) -> dict[str, str]:
    dep = runtime.topology.deployment
    return {pair: alarm_name(dep, f"interconnect-down-{pair}") for pair in ("Server-A-to-Server-B",
                                                                           "Server-B-to-Server-A")}


def peering_routes(runtime) -> list[tuple[object, str, str, str]]:
    """(ec2, route table id, destination, pcx id) of every route over the cluster peering."""
    topology = runtime.topology
    out = []
    for vpc in ("tokyo", "osaka"):
        ec2 = runtime.clients.ec2(topology.region_of(vpc))
        tables = ec2.describe_route_tables(Filters=deployment_filter(topology.deployment))["RouteTables"]
        for table in tables:
            for route in table["Routes"]:
                pcx = route.get("VpcPeeringConnectionId")
                if pcx and route["DestinationCidrBlock"] in ("10.0.0.0/16", "10.1.0.0/16") and \
                        table["VpcId"] in _vpc_ids(runtime):
                    out.append((ec2, table["RouteTableId"], route["DestinationCidrBlock"], pcx))
    return out


def _vpc_ids(runtime) -> set[str]:
    ids = set()
    for vpc in ("tokyo", "osaka"):
        ec2 = runtime.clients.ec2(runtime.topology.region_of(vpc))
        found = ec2.describe_vpcs(Filters=deployment_filter(runtime.topology.deployment, vpc))["Vpcs"]
        ids |= {v["VpcId"] for v in found}
    return ids


def test_a_clean_run_has_no_interconnect_alarm(runtime):
    assert runtime.world.last["interconnect"] == {"Server-A->Server-B": "open", "Server-B->Server-A": "open"}
    assert [(r.source, r.target, r.outcome) for r in probe_interconnect(runtime.topology)] == [
        ("Server-A", "Server-B", "answered"), ("Server-B", "Server-A", "answered")]
    # The scheduled dispatcher and probe publish; three emulated minutes of data leave both alarms OK.
    for name in alarms(runtime).values():
        assert runtime.wait_alarm(name, "OK", minutes=6), runtime.alarm_states().get(name)
    # Started, not finished: the nested probe/controller may still be returning when its effect shows.
    invoked = {f.split(":")[-1] for f in runtime.aws.invoked_functions()}
    assert {"regionha-DispatchInterconnectFunction", "regionha-ProbeInterconnectFunction"} <= invoked
    assert not [t for t in runtime.alarm_transitions() if "interconnect" in t["alarm"] and t["new"] == "ALARM"]


def test_deleting_only_the_node_subnets_routes_cuts_the_interconnect(runtime):
    """The nodes' subnets (A2, B2) lose their peering routes; their default route leads to their NAT
    instance, whose subnet still routes over the peering. The NAT masquerades, and the peer's reply, sent
    through the peer's own NAT, comes back masqueraded again and matches no connection: on AWS the
    heartbeat times out, and so does the relay's dial here (it was "answered" before the twin's router
    followed the reply to the NAT), and the alarms fire."""
    topology = runtime.topology
    node_tables = {t["RouteTableId"] for t in _node_tables(runtime)}
    routes = [r for r in peering_routes(runtime) if r[1] in node_tables]
    assert len(routes) == 2
    for ec2, table, destination, _ in routes:
        ec2.delete_route(RouteTableId=table, DestinationCidrBlock=destination)
    try:
        runtime.settle()
        verdicts = runtime.world.last["interconnect"]
        assert all("arrives masqueraded, matching no connection" in v for v in verdicts.values()), verdicts
        assert [(r.source, r.target, r.outcome) for r in probe_interconnect(topology, timeout=1.0)] == [
            ("Server-A", "Server-B", "timeout"), ("Server-B", "Server-A", "timeout")]
        for name in alarms(runtime).values():
            assert runtime.wait_alarm(name, "ALARM", minutes=6), runtime.alarm_states().get(name)
    finally:
        for ec2, table, destination, pcx in routes:
            ec2.create_route(RouteTableId=table, DestinationCidrBlock=destination, VpcPeeringConnectionId=pcx)
        runtime.settle()
    assert runtime.world.last["interconnect"] == {"Server-A->Server-B": "open", "Server-B->Server-A": "open"}


def _node_tables(runtime) -> list[dict]:
    """The route tables of the cluster nodes' subnets."""
    topology = runtime.topology
    out = []
    for node in topology.nodes:
        table = next(t for t in topology.vpc(node.vpc).route_tables if node.subnet in t.subnets)
        ec2 = runtime.clients.ec2(topology.region_of(node.vpc))
        out += ec2.describe_route_tables(Filters=deployment_filter(topology.deployment, table.name))["RouteTables"]
    return out


def test_deleting_the_peering_routes_fires_the_alarm_of_both_directions(runtime):
    routes = peering_routes(runtime)
    # A1/A2/A3 in Tokyo and B1/B2/B3 in Osaka each carry one route over the cluster peering.
    assert len(routes) == 6
    for ec2, table, destination, _ in routes:
        ec2.delete_route(RouteTableId=table, DestinationCidrBlock=destination)
    runtime.settle()

    verdicts = runtime.world.last["interconnect"]
    assert all(v.startswith("route: route table") for v in verdicts.values()), verdicts
    # The relay's packet is dropped silently, as the VPC router drops it: a timeout, not a refusal.
    assert [(r.source, r.target, r.outcome) for r in probe_interconnect(runtime.topology, timeout=1.0)] == [
        ("Server-A", "Server-B", "timeout"), ("Server-B", "Server-A", "timeout")]
    for name in alarms(runtime).values():
        assert runtime.wait_alarm(name, "ALARM", minutes=6), runtime.alarm_states().get(name)


def test_deleting_the_peering_too_keeps_it_cut_and_the_controller_refuses_the_isolated_node(runtime):
    from regionha.converge.dns import read_record
    from regionha.watch import metrics

    assert peering_routes(runtime) == []  # gone since the previous test
    tokyo = runtime.clients.ec2(runtime.topology.region_of("tokyo"))
    live = [p for p in tokyo.describe_vpc_peering_connections()["VpcPeeringConnections"]
            if {"Key": "regionha:name", "Value": PEERING} in p.get("Tags", []) and p["Status"]["Code"] == "active"]
    assert len(live) == 1
    tokyo.delete_vpc_peering_connection(VpcPeeringConnectionId=live[0]["VpcPeeringConnectionId"])
    runtime.settle()
    assert all(v != "open" for v in runtime.world.last["interconnect"].values())
    # Waited for, not read at once: in one CI clone a single relay probe right after the deletion
    # answered "refused" (counted reachable) and turned the alarm OK for a period; the cause in the twin
    # is not found yet (closing note). The cut must still be alarmed within a few minutes.
    for name in alarms(runtime).values():
        assert runtime.wait_alarm(name, "ALARM", minutes=4), runtime.alarm_states().get(name)

    # Server-A's service dies while its instance runs (the twin's reconciler paused, so that it does
    # not restart it): the clients lose it, its peer region cannot tell (the interconnect is gone), so
    # a failover to Server-B is due; but Server-B cannot reach Server-A, which still runs.
    runtime.world.stop()
    runtime.nodes["Server-A"].stop()
    try:
        # The real controller function, as its schedule invokes it: on AWS and here its refusal asks
        # Server-B's relay through ProbeInterconnectFunction (INTERCONNECT_FUNCTION).
        event = {"version": "0", "id": "ic-refusal", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": metrics.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "region": runtime.region, "resources": [], "detail": {}}
        response = runtime.clients.client("lambda", runtime.region).invoke(
            FunctionName="regionha-FailoverControllerFunction", Payload=json.dumps(event))
        result = json.loads(response["Payload"].read())
        assert not response.get("FunctionError"), result
        decision = result["decision"]
        assert (decision["action"], decision["target"], decision["needed"]) == ("refuse", "Server-B", True), result
        assert "refused: Server-B cannot reach Server-A (timeout" in decision["reason"]
        assert "cluster.requires_interconnect" in decision["reason"]
        assert not result["moved"]
        assert read_record(runtime.topology, runtime.clients)["ip"] == "10.0.110.10"
        cw = runtime.clients.client("cloudwatch", runtime.region)
        series = cw.list_metrics(Namespace="regionha", MetricName="InterconnectRefusal")["Metrics"]
        assert {"Name": "Node", "Value": "Server-B"} in [d for m in series for d in m["Dimensions"]]
    finally:
        runtime.nodes["Server-A"].start()
        runtime.world.run(runtime.reconcile_interval)
