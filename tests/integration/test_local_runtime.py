"""The local runtime end to end: the real template, state machines, handlers and named on loopback.

One runtime per module (start + build takes seconds); the tests run in file order and the last one
stops it and checks that nothing is left behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from regionha import netguard
from regionha.local.host import netns
from regionha.topology import load_topology
from regionha.watch.canary import client_source

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from polling import until  # noqa: E402

TTL = 60  # the topology's; named keeps it 3 real seconds on the 20x clock (one clock)


@pytest.fixture
def aws_credentials() -> None:
    """The runtime sets its own endpoint and fake credentials for the whole process."""


@pytest.fixture(scope="module")
def runtime(start_runtime):
    topology = load_topology()
    topology = topology.model_copy(
        update={"dns": topology.dns.model_copy(update={"record": topology.dns.record.model_copy(update={"ttl": TTL})})}
    )
    return start_runtime(topology, build=False)


def ask(server: str, *, source: str, timeout: float = 1.0) -> list[str] | str:
    """A from the client site; the answer's addresses, or "timeout"."""
    query = dns.message.make_query("sample.cluster.local.", dns.rdatatype.A)
    try:
        response = dns.query.udp(query, server, timeout=timeout, source=source)
    except dns.exception.Timeout:
        return "timeout"
    return sorted(r.address for rrset in response.answer for r in rrset if rrset.rdtype == dns.rdatatype.A)


def test_build_state_machine_runs_through_the_server(runtime):
    execution = runtime.build()

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    sfn = runtime.clients.client("stepfunctions", runtime.region)
    listed = sfn.list_executions(stateMachineArn=runtime.state_machine_arn("BuildStateMachine"))["executions"]
    assert [e["name"] for e in listed] == [execution.name]
    assert execution.output["record"]["ip"] == "10.0.110.10"
    # The handlers really ran through Lambda Invoke: one invocation per task at least.
    invoked = {i.function for i in runtime.aws.invocations}
    assert {"regionha-ValidateTopologyFunction", "regionha-UpsertRecordFunction"} <= {
        f.split(":")[-1] for f in invoked
    }
    runtime.settle()


def test_every_path_answers_the_primary_from_the_client_site(runtime):
    src = netguard.to_local(client_source(runtime.topology))
    for path, where in runtime.dns_map().items():
        host = where.split(":")[0]
        assert until(lambda h=host: ask(h, source=src) == ["10.0.110.10"], 10), path


def _deny_client(runtime, vpc: str, subnet: str, *, deny: bool) -> None:
    """A network-ACL deny of the client network on a forwarder subnet, as the drill cuts a path."""
    topology = runtime.topology
    ec2 = runtime.clients.ec2(topology.region_of(vpc))
    subnet_id = ec2.describe_subnets(
        Filters=[{"Name": "tag:regionha:deployment", "Values": [topology.deployment]},
                 {"Name": "tag:regionha:name", "Values": [subnet]}]
    )["Subnets"][0]["SubnetId"]
    acl = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])[
        "NetworkAcls"
    ][0]
    if deny:
        ec2.create_network_acl_entry(
            NetworkAclId=acl["NetworkAclId"], RuleNumber=90, Protocol="-1", RuleAction="deny",
            Egress=False, CidrBlock=str(topology.client.cidr),
        )
    else:
        ec2.delete_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=90, Egress=False)
    runtime.settle()


def test_a_cut_path_drops_silently_and_the_other_path_still_resolves(runtime):
    src = netguard.to_local(client_source(runtime.topology))
    onprem = runtime.dns_map()["onprem"].split(":")[0]
    tokyo = runtime.dns_map()["tokyo-resolver/10.0.111.100"].split(":")[0]
    osaka = runtime.dns_map()["osaka-bind"].split(":")[0]

    _deny_client(runtime, "tokyo", "A3", deny=True)
    try:
        assert ask(tokyo, source=src) == "timeout"  # silent: no answer, no ICMP, no REFUSED
        assert ask(osaka, source=src) == ["10.0.110.10"]
        time.sleep(TTL + 0.5)  # let the on-prem cache expire, so its answer is fresh
        assert until(lambda: ask(onprem, source=src, timeout=3.0) == ["10.0.110.10"], 15)
    finally:
        _deny_client(runtime, "tokyo", "A3", deny=False)

    assert until(lambda: ask(tokyo, source=src) == ["10.0.110.10"], 5)
    assert ask(osaka, source=src) == ["10.0.110.10"]


def test_a_network_acl_deny_between_the_client_and_a_node_fails_the_canarys_node_check(runtime, monkeypatch):
    """The canary's node checks leave from the client site, as its DNS probes do: a cut between the client
    network and the primary's subnet fails the primary's node check (NodeUp 0), the standby's stays up."""
    from regionha.watch import canary

    monkeypatch.setenv(netguard.LOCAL_ENV, "1")  # as the canary function runs in the twin
    topology = runtime.topology
    primary, standby = topology.primary, next(n for n in topology.nodes if n.name != topology.primary.name)
    truth = canary.read_truth(topology, runtime.clients)

    def nodes_up() -> dict[str, bool]:
        run = canary.run_canary(topology, truth, timeout=1.0, source=canary.client_source(topology))
        return {name: check.reachable for name, check in run.nodes.items()}

    assert nodes_up() == {primary.name: True, standby.name: True}
    _deny_client(runtime, primary.vpc, primary.subnet, deny=True)
    try:
        assert nodes_up() == {primary.name: False, standby.name: True}
    finally:
        _deny_client(runtime, primary.vpc, primary.subnet, deny=False)
    assert until(lambda: nodes_up() == {primary.name: True, standby.name: True}, 10)


def _client_route_table(runtime) -> tuple[object, dict]:
    topology = runtime.topology
    ec2 = runtime.clients.ec2(topology.region_of(topology.client.vpc))
    table = ec2.describe_route_tables(
        Filters=[{"Name": "tag:regionha:deployment", "Values": [topology.deployment]},
                 {"Name": "tag:regionha:name", "Values": ["C1-rt"]}]
    )["RouteTables"][0]
    return ec2, table


def _connects(host: str, port: int, source: str) -> str:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0, source_address=(source, 0)):
            return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as e:
        return type(e).__name__


def test_deleting_the_client_route_to_tokyo_stops_the_tokyo_paths(runtime):
    # Mutation: the route tables decide reachability in the twin, as the VPC router does on AWS.
    src = netguard.to_local(client_source(runtime.topology))
    tokyo = [runtime.dns_map()[f"tokyo-resolver/{ip}"].split(":")[0] for ip in ("10.0.111.100", "10.0.111.101")]
    osaka = runtime.dns_map()["osaka-bind"].split(":")[0]
    ec2, table = _client_route_table(runtime)
    route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "10.0.0.0/16")

    ec2.delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="10.0.0.0/16")
    runtime.settle()
    try:
        assert [ask(host, source=src) for host in tokyo] == ["timeout", "timeout"]
        assert ask(osaka, source=src) == ["10.0.110.10"]
        reason = runtime.world.last["paths"]["tokyo-resolver"]["10.0.111.100"]["udp"]
        assert reason.startswith("route: route table C1-rt:")
        # Server-A's port is behind the same route: silent too (no RST), Server-B still answers.
        assert _connects(netguard.to_local("10.0.110.10"), 80, src) == "timeout"
        assert _connects(netguard.to_local("10.1.110.10"), 80, src) == "connected"
    finally:
        ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="10.0.0.0/16",
                         VpcPeeringConnectionId=route["VpcPeeringConnectionId"])
        runtime.settle()
    assert until(lambda: ask(tokyo[0], source=src) == ["10.0.110.10"], 5)


def test_an_upsert_is_visible_through_bind_once_the_ttl_expires(runtime):
    src = netguard.to_local(client_source(runtime.topology))
    onprem = runtime.dns_map()["onprem"].split(":")[0]
    assert until(lambda: ask(onprem, source=src) == ["10.0.110.10"], 10)
    # The TTL is 3 real seconds here: start from an answer named has just fetched (its full TTL left),
    # or an entry cached long ago could expire between the UPSERT and the next question.
    from regionha.local.clock import real_ttl

    full = real_ttl(runtime.clock, TTL)
    assert until(lambda: fresh_from_forwarders(onprem, src, full), 10)

    from regionha.converge.dns import upsert_record

    try:
        upsert_record(runtime.topology, runtime.clients, "10.1.110.10", poll_seconds=0.05)
        cached = ask(onprem, source=src)
        moved = until(lambda: ask(onprem, source=src) == ["10.1.110.10"], TTL + 10)

        assert cached == ["10.0.110.10"]  # the TTL is honoured: the old answer is served from cache first
        assert moved
    finally:
        upsert_record(runtime.topology, runtime.clients, "10.0.110.10", poll_seconds=0.05)


def fresh_from_forwarders(server: str, source: str, full: int) -> bool:
    """True when the on-prem resolver's answer carries its full TTL (just fetched); else waits it out."""
    query = dns.message.make_query("sample.cluster.local.", dns.rdatatype.A)
    response = dns.query.udp(query, server, timeout=1.0, source=source)
    left = min((rrset.ttl for rrset in response.answer), default=0)
    if left >= full:
        return True
    time.sleep(left + 0.2)
    return False


def test_stopping_the_active_node_fails_over_and_the_onprem_resolver_follows(runtime):
    """Built-in mode: the EC2 stop reaches the failover controller through the forwarded state-change
    event; the record moves to the healthy standby and the on-prem resolver answers it once the TTL
    has run out. The stopped node answers nothing; started again, it comes back (failback is manual)."""
    import http.client

    from regionha.converge.dns import read_record
    from regionha.failover import manual_switch

    src = netguard.to_local(client_source(runtime.topology))
    onprem = runtime.dns_map()["onprem"].split(":")[0]
    ec2 = runtime.clients.ec2("ap-northeast-1")
    instance_id = ec2.describe_instances(
        Filters=[{"Name": "tag:regionha:name", "Values": ["Server-A"]},
                 {"Name": "instance-state-name", "Values": ["running"]}]
    )["Reservations"][0]["Instances"][0]["InstanceId"]

    def node_answers() -> str | None:
        conn = http.client.HTTPConnection("127.0.110.10", 80, timeout=1)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode().strip()
        except OSError:
            return None
        finally:
            conn.close()

    assert node_answers() == "Server-A"
    assert until(lambda: ask(onprem, source=src) == ["10.0.110.10"], 10)

    ec2.stop_instances(InstanceIds=[instance_id])
    runtime.settle()

    assert node_answers() is None
    record = until(lambda: (read_record(runtime.topology, runtime.clients) or {}).get("ip") == "10.1.110.10", 20)
    assert record, "the failover controller did not move the record"
    assert until(lambda: ask(onprem, source=src) == ["10.1.110.10"], TTL + 10)
    # Started, not finished: the nested probe/controller may still be returning when its effect shows.
    invoked = {f.split(":")[-1] for f in runtime.aws.invoked_functions()}
    assert "regionha-FailoverControllerFunction" in invoked

    ec2.start_instances(InstanceIds=[instance_id])
    runtime.settle()
    assert until(node_answers, 5) == "Server-A"
    # Failback is manual by default: the record stays on Server-B until an operator moves it.
    assert read_record(runtime.topology, runtime.clients)["ip"] == "10.1.110.10"
    manual_switch(runtime.topology, runtime.clients, "Server-A",
                  table=runtime.stack.physical_id("StateTable"), table_region=runtime.region)
    assert read_record(runtime.topology, runtime.clients)["ip"] == "10.0.110.10"


def test_teardown_then_stop_leaves_nothing_behind(runtime):
    named_pids = [p.pid for p in runtime.fleet.processes.values() if p.pid]
    assert len(named_pids) == 2  # the Osaka forwarder and the on-prem resolver
    namespace = runtime.state()["netns"]
    assert namespace in netns.namespaces()

    execution = runtime.teardown()
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)

    runtime.stop()

    addresses = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    assert "lo:rha" not in addresses
    assert "htb" not in subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout
    for pid in named_pids:
        assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
    assert not netguard.local_mode_enabled()
    assert namespace not in netns.namespaces()  # its addresses, qdisc and processes went with it
