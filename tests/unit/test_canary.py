"""Canary runs against real scripted DNS servers and real HTTP node services, all on loopback.

Every test runs in local mode with the socket guard on: cloud addresses map to 127.x and nothing but
loopback can be dialled. Servers are fakes (tests/dnsfake.py) on port 0, reached through the
``servers``/``node_addresses`` overrides that ``regionha canary run --server-map`` also uses.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import dns.rcode
import pytest

from regionha.cli import main
from regionha.errors import ConfigurationError
from regionha.inventory import save_inventory
from regionha.watch import canary
from regionha.watch.canary import (
    FORWARDER_PATH,
    ONPREM,
    ONPREM_RESOLVER,
    Truth,
    canary_targets,
    metrics,
    run_canary,
    truth_from_record,
)
from regionha.watch.metrics import put_metric_data

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
from dnsfake import Action, FakeDNSServer, answer, drop, rcode, sequence  # noqa: E402
from inprocess import NodeService  # noqa: E402
from localmode import local_mode  # noqa: E402, F401 - autouse fixture

A_IP, B_IP = "10.0.110.10", "10.1.110.10"
# Loopback replies take well under 10 ms, but a loaded 2-core CI machine can stall a thread for
# hundreds; a dropping path costs one BOUND, so keep it modest.
BOUND = 1.5
PATHS = ("tokyo-resolver/10.0.111.100", "tokyo-resolver/10.0.111.101", "osaka-bind", ONPREM)
FORWARDER_LABELS = PATHS[:-1]


@dataclass
class Site:
    """Fake DNS servers per path and HTTP services per node, with the overrides that reach them."""

    dns: dict[str, FakeDNSServer]
    nodes: dict[str, NodeService]

    @property
    def servers(self) -> dict[str, tuple[str, int]]:
        return {path: (s.address, s.port) for path, s in self.dns.items()}

    @property
    def node_addresses(self) -> dict[str, tuple[str, int]]:
        return {name: (n.host, n.port) for name, n in self.nodes.items()}

    def run(self, topology, truth: Truth, **kwargs) -> canary.CanaryRun:
        return run_canary(topology, truth, timeout=BOUND, servers=self.servers,
                          node_addresses=self.node_addresses, **kwargs)


@pytest.fixture
def site_factory(topology) -> Iterator:
    with ExitStack() as stack:

        def make(actions: dict[str, Action] | None = None, default: Action | None = None,
                 nodes_up: tuple[str, ...] = ("Server-A", "Server-B")) -> Site:
            actions = actions or {}
            default = default or answer(A_IP)
            dns = {}
            for i, path in enumerate(PATHS):
                server = FakeDNSServer(actions.get(path, default), address=f"127.0.53.{i + 1}")
                dns[path] = stack.enter_context(server)
            nodes = {}
            for i, node in enumerate(topology.nodes):
                service = NodeService(node.name, f"127.0.80.{i + 1}", 0)
                service.start()
                stack.callback(service.stop)
                if node.name not in nodes_up:
                    service.stop()  # keeps its port: now nothing listens there
                nodes[node.name] = service
            return Site(dns, nodes)

        yield make


def truth(topology, ip: str | None = A_IP) -> Truth:
    return truth_from_record(topology, {"ip": ip, "ttl": 60} if ip else None)


# --- targets and truth -------------------------------------------------------------------------------


def test_targets_are_every_endpoint_ip_every_bind_forwarder_then_onprem(topology):
    targets = canary_targets(topology)
    assert [(t.path, t.forwarder, t.server, t.kind) for t in targets] == [
        ("tokyo-resolver/10.0.111.100", "tokyo-resolver", "10.0.111.100", FORWARDER_PATH),
        ("tokyo-resolver/10.0.111.101", "tokyo-resolver", "10.0.111.101", FORWARDER_PATH),
        ("osaka-bind", "osaka-bind", "10.1.111.10", FORWARDER_PATH),
        # The on-prem resolver is a target of its own kind: no forwarder path, whatever the labels.
        ("onprem", None, "10.2.10.10", ONPREM_RESOLVER),
    ]


def test_the_onprem_resolver_is_found_by_kind_not_by_a_path_name(topology, site_factory):
    # A forwarder path named like the on-prem label (validation refuses it; the canary must not care).
    renamed = topology.model_copy(deep=True)
    renamed.forwarder_paths[1] = renamed.forwarder_paths[1].model_copy(update={"name": "OnPrem"})
    site = site_factory({"osaka-bind": answer(B_IP), ONPREM: answer(A_IP)})
    servers = {("OnPrem" if label == "osaka-bind" else label): address for label, address in site.servers.items()}
    run = run_canary(renamed, truth(renamed), timeout=BOUND, servers=servers, node_addresses=site.node_addresses)
    assert (run.onprem.kind, run.onprem.forwarder, run.onprem.answers) == (ONPREM_RESOLVER, None, (A_IP,))
    assert [p.path for p in run.forwarder_paths][-1] == "OnPrem"
    dims = {tuple(sorted(d.dimensions.items())) for d in metrics(run) if d.name == "PathSuccess"}
    assert (("Deployment", "regionha-ref"), ("Path", ONPREM)) not in dims


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"ip": A_IP, "ttl": 60}, Truth(A_IP, 60, "Server-A")),
        ({"ip": B_IP, "ttl": 30}, Truth(B_IP, 30, "Server-B")),
        ({"ip": "10.9.9.9", "ttl": 60}, Truth("10.9.9.9", 60, None)),
        (None, Truth(None, None, None)),
    ],
)
def test_truth_names_the_node_of_the_record(topology, record, expected):
    assert truth_from_record(topology, record) == expected


# --- runs --------------------------------------------------------------------------------------------


def test_all_paths_ok(topology, site_factory):
    site = site_factory()
    run = site.run(topology, truth(topology))

    assert [p.path for p in run.paths] == list(PATHS)
    for p in run.paths:
        assert (p.outcome, p.answers, p.matches_truth, p.node, p.node_reachable) == (
            "ok", (A_IP,), True, "Server-A", True), p
        assert p.success
    assert run.all_succeeded and run.failover_healthy
    for path, server in site.dns.items():
        assert [(r.name, r.rdtype) for r in server.received] == [("sample.cluster.local.", "A")], path


def test_probes_leave_from_the_client_address_in_local_mode(topology, site_factory):
    site = site_factory()
    site.run(topology, truth(topology), source=canary.client_source(topology))
    # 10.2.10.4, the first free host of the client subnet, as its loopback image.
    assert {r.peer[0] for s in site.dns.values() for r in s.received} == {"127.2.10.4"}


def test_one_path_dropping_times_out_alone(topology, site_factory):
    site = site_factory({"osaka-bind": drop()})
    run = site.run(topology, truth(topology))

    outcomes = {p.path: p.outcome for p in run.paths}
    assert outcomes == {**dict.fromkeys(PATHS, "ok"), "osaka-bind": "timeout"}
    dropped = next(p for p in run.paths if p.path == "osaka-bind")
    assert dropped.tries == 2 and not dropped.success and dropped.node is None
    assert site.dns["osaka-bind"].count("udp") == 2  # retried inside the bound, then gave up
    assert not run.all_succeeded


def test_paths_are_probed_at_the_same_time(topology, site_factory):
    # Each healthy server answers only once all three have been asked: probed one after another,
    # the first would wait in vain and time out. The dropping path must not hold the others up.
    barrier = threading.Barrier(3)

    def together(query, transport):
        try:
            barrier.wait(timeout=BOUND)
        except threading.BrokenBarrierError:
            return None
        return answer(A_IP)(query, transport)

    site = site_factory({"osaka-bind": drop()}, default=together)
    run = site.run(topology, truth(topology))
    assert {p.path: p.outcome for p in run.paths} == {**dict.fromkeys(PATHS, "ok"), "osaka-bind": "timeout"}


def test_answer_that_disagrees_with_the_truth(topology, site_factory):
    site = site_factory({"tokyo-resolver/10.0.111.101": answer(B_IP), ONPREM: answer(B_IP)})
    run = site.run(topology, truth(topology))

    stale = {p.path: p for p in run.paths}["tokyo-resolver/10.0.111.101"]
    assert (stale.outcome, stale.matches_truth, stale.node, stale.node_reachable) == (
        "wrong_answer", False, "Server-B", True)
    assert not stale.success
    points = {(d.name, tuple(sorted(d.dimensions.items()))): d.value for d in metrics(run)}
    dep = (("Deployment", "regionha-ref"),)
    # A stale on-prem answer still resolves (clients reach a node), but it is not the truth.
    assert points[("OnPremResolvable", dep)] == 1.0
    assert points[("OnPremMatchesTruth", dep)] == 0.0


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        (rcode(dns.rcode.SERVFAIL), "servfail"),
        (rcode(dns.rcode.NXDOMAIN), "nxdomain"),
        (rcode(dns.rcode.REFUSED), "refused"),
        (sequence(drop(), answer(A_IP)), "ok"),
    ],
)
def test_onprem_outcomes_decide_resolvable(topology, site_factory, action, outcome):
    run = site_factory({ONPREM: action}).run(topology, truth(topology))
    assert run.onprem.outcome == outcome
    resolvable = next(d for d in metrics(run) if d.name == "OnPremResolvable")
    assert resolvable.value == float(outcome == "ok")


def test_node_unreachable_fails_every_path_and_the_failover(topology, site_factory):
    site = site_factory(nodes_up=("Server-B",))
    run = site.run(topology, truth(topology))

    for p in run.paths:
        assert (p.outcome, p.matches_truth, p.node, p.node_reachable, p.success) == (
            "ok", True, "Server-A", False, False)
    assert not run.nodes["Server-A"].reachable and run.nodes["Server-B"].reachable
    # The record names a dead node while the other one answers: the failover failed.
    assert run.failover_healthy is False


def test_failover_healthy_when_the_record_follows_the_live_node(topology, site_factory):
    site = site_factory(default=answer(B_IP), nodes_up=("Server-B",))
    run = site.run(topology, truth(topology, B_IP))
    assert run.all_succeeded and run.failover_healthy


def test_failover_not_blamed_when_no_node_is_up(topology, site_factory):
    run = site_factory(nodes_up=()).run(topology, truth(topology))
    assert run.failover_healthy is True
    assert not any(p.success for p in run.paths)


def test_node_answering_as_another_node_is_not_reachable(topology, site_factory):
    site = site_factory()
    site.nodes["Server-A"].name = "impostor"  # the service reports this name from its next start
    site.nodes["Server-A"].stop()
    site.nodes["Server-A"].start()
    run = site.run(topology, truth(topology))
    assert run.nodes["Server-A"].name == "impostor"
    assert not any(p.node_reachable for p in run.paths)


def test_missing_record_fails_every_path(topology, site_factory):
    run = site_factory().run(topology, truth(topology, None))
    assert all(p.outcome == "ok" and not p.matches_truth and not p.success for p in run.paths)
    assert run.failover_healthy is False  # the record names no node while nodes are up


def test_override_for_an_unknown_path_is_a_configuration_error(topology):
    with pytest.raises(ConfigurationError, match="unknown name"):
        run_canary(topology, truth(topology), servers={"nope": ("127.0.0.1", 53)})


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_per_path_node_and_deployment(topology, site_factory):
    site = site_factory({"osaka-bind": drop()})
    run = site.run(topology, truth(topology))
    points = metrics(run)
    by_key = {(d.name, tuple(sorted(d.dimensions.items()))): d for d in points}
    dep = {"Deployment": "regionha-ref"}

    for path in FORWARDER_LABELS:
        dims = tuple(sorted((dep | {"Path": path}).items()))
        ok = path != "osaka-bind"
        assert by_key[("PathSuccess", dims)].value == float(ok)
        assert by_key[("AnswerMatchesTruth", dims)].value == float(ok)
        assert by_key[("NodeReachable", dims)].value == float(ok)
        assert by_key[("PathLatency", dims)].unit == "Milliseconds"
        outcome = "ok" if ok else "timeout"
        outcome_dims = tuple(sorted((dep | {"Path": path, "Outcome": outcome}).items()))
        assert by_key[("PathOutcome", outcome_dims)].value == 1
    for node, target in (("Server-A", 1.0), ("Server-B", 0.0)):
        dims = tuple(sorted((dep | {"Node": node}).items()))
        assert by_key[("RecordTarget", dims)].value == target
        assert by_key[("NodeUp", dims)].value == 1.0
    dims = tuple(sorted(dep.items()))
    for name, value in (("OnPremSuccess", 1), ("OnPremResolvable", 1), ("OnPremMatchesTruth", 1),
                        ("FailoverHealthy", 1), ("CanaryHeartbeat", 1)):
        assert by_key[(name, dims)].value == value
    assert by_key[("OnPremOutcome", tuple(sorted((dep | {"Outcome": "ok"}).items())))].value == 1
    assert len(by_key) == len(points)  # no datapoint twice
    # The on-prem resolver is never a Path; what the 10-second alarms read is high resolution.
    assert all(d.dimensions.get("Path") != ONPREM for d in points)
    fast = {d.name for d in points if d.resolution == 1}
    assert fast == {"PathSuccess", "NodeUp", "OnPremSuccess", "OnPremResolvable"}
    assert all(d.resolution == 60 for d in metrics(run, high_resolution=False))


def test_put_metric_data_puts_every_datapoint(topology, site_factory):
    run = site_factory().run(topology, truth(topology))

    class Recorder:
        calls: list = []

        def put_metric_data(self, **kwargs):
            self.calls.append(kwargs)

    recorder = Recorder()
    assert put_metric_data(metrics(run), recorder) == len(metrics(run))
    (call,) = recorder.calls
    assert call["Namespace"] == "regionha"
    success = [d for d in call["MetricData"] if d["MetricName"] == "PathSuccess"]
    paths = [next(x["Value"] for x in d["Dimensions"] if x["Name"] == "Path") for d in success]
    assert sorted(paths) == sorted(FORWARDER_LABELS)
    assert {d["StorageResolution"] for d in success} == {1}


# --- the handler, with moto in-process -----------------------------------------------------------------


@dataclass
class LambdaContext:
    function_name: str = "RunCanaryFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:ap-southeast-1:123456789012:function:RunCanaryFunction"
    aws_request_id: str = "req-1"


@pytest.fixture
def handler():
    spec = importlib.util.spec_from_file_location("run_canary_app", REPO / "functions/run_canary/app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


@pytest.fixture
def stack(moto_aws, monkeypatch, topology):
    """The state table, a private zone with the record on Server-A, and the handler's environment."""
    monkeypatch.setenv("STATE_TABLE", "state")
    monkeypatch.setenv("DEPLOYMENT", topology.deployment)
    monkeypatch.setenv("AWS_REGION", "ap-southeast-1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "regionha")
    boto3.client("dynamodb", region_name="ap-southeast-1").create_table(
        TableName="state",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    ec2 = boto3.client("ec2", region_name="ap-northeast-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    r53 = boto3.client("route53")
    zone = r53.create_hosted_zone(
        Name="cluster.local", CallerReference="test",
        VPC={"VPCRegion": "ap-northeast-1", "VPCId": vpc},
        # The comment converge_private_zone creates zones with: how read_record finds the deployment's zone.
        HostedZoneConfig={"PrivateZone": True,
                          "Comment": f"managed by regionha, deployment {topology.deployment}"},
    )["HostedZone"]["Id"]

    def point_record_at(ip: str) -> None:
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
            "Action": "UPSERT",
            "ResourceRecordSet": {"Name": "sample.cluster.local.", "Type": "A", "TTL": 60,
                                  "ResourceRecords": [{"Value": ip}]}}]})

    point_record_at(A_IP)
    return point_record_at


def save_build(topology) -> None:
    from regionha.aws import Clients

    save_inventory(Clients(), "state", "ap-southeast-1",
                   {"deployment": topology.deployment, "topology": topology.to_json()})


def emf_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


def test_handler_runs_the_canary_and_emits_metrics(
    topology, site_factory, stack, handler, monkeypatch, capsys, caplog
):
    site = site_factory({"osaka-bind": drop()})
    monkeypatch.setattr(canary, "run_canary", functools.partial(
        run_canary, timeout=BOUND, servers=site.servers, node_addresses=site.node_addresses))
    save_build(topology)

    scheduled = json.loads((REPO / "events/canary-scheduled.json").read_text())
    # A schedule of this minute: CloudWatch drops (and Powertools warns about) EMF timestamps older
    # than 14 days, as the sample event's would be.
    scheduled["time"] = datetime.now(UTC).replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = handler(scheduled, LambdaContext())

    assert result["truth"] == {"ip": A_IP, "ttl": 60, "node": "Server-A"}
    assert {p["path"]: p["outcome"] for p in result["paths"]} == {**dict.fromkeys(PATHS, "ok"),
                                                                  "osaka-bind": "timeout"}
    out = capsys.readouterr().out
    logged = {r.path: r.outcome for r in caplog.records if r.getMessage() == "canary path"}
    assert logged == {**dict.fromkeys(PATHS, "ok"), "osaka-bind": "timeout"}
    emitted = {}
    for line in emf_lines(out):
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        (name,) = [m["Name"] for m in directive["Metrics"]]
        (dims,) = directive["Dimensions"]
        value = line[name]  # Powertools may write a value as a one-element list
        key = (name, tuple(sorted((d, line[d]) for d in dims)))
        emitted[key] = value[0] if isinstance(value, list) else value
    # Exactly the dimensions the alarms match on: no Powertools "service" dimension sneaks in.
    assert emitted[("PathSuccess", (("Deployment", "regionha-ref"), ("Path", "osaka-bind")))] == 0.0
    assert emitted[("OnPremSuccess", (("Deployment", "regionha-ref"),))] == 1.0
    # High resolution for the 10-second alarms, stamped with the schedule's time.
    success = next(line for line in emf_lines(out)
                   if line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == "PathSuccess")
    assert success["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"] == 1
    assert success["_aws"]["Timestamp"] == int(datetime.fromisoformat(
        scheduled["time"].replace("Z", "+00:00")).timestamp() * 1000)
    assert emitted[("CanaryHeartbeat", (("Deployment", "regionha-ref"),))] == 1.0


def test_handler_puts_metrics_at_the_scheduled_time_with_the_cloudwatch_sink(
    topology, site_factory, stack, handler, monkeypatch
):
    # The local runtime's way: PutMetricData, stamped with the (emulated) time of the schedule.
    monkeypatch.setenv("REGIONHA_METRICS_SINK", "cloudwatch")
    site = site_factory({"osaka-bind": drop()})
    monkeypatch.setattr(canary, "run_canary", functools.partial(
        run_canary, timeout=BOUND, servers=site.servers, node_addresses=site.node_addresses))
    save_build(topology)
    at = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=5)
    event = json.loads((REPO / "events/canary-scheduled.json").read_text()) | {"time": at.isoformat()}

    handler(event, LambdaContext())

    cw = boto3.client("cloudwatch", region_name="ap-southeast-1")
    for metric, path, value in (("PathSuccess", "osaka-bind", 0.0), ("OnPremSuccess", None, 1.0)):
        stats = cw.get_metric_statistics(
            Namespace="regionha", MetricName=metric, Statistics=["Minimum"], Period=60,
            Dimensions=[{"Name": "Deployment", "Value": "regionha-ref"},
                        *([{"Name": "Path", "Value": path}] if path else [])],
            StartTime=at - timedelta(seconds=30), EndTime=at + timedelta(seconds=30),
        )["Datapoints"]
        assert [d["Minimum"] for d in stats] == [value], path


def test_handler_follows_the_record(topology, site_factory, stack, handler, monkeypatch):
    site = site_factory()  # every path still answers Server-A
    monkeypatch.setattr(canary, "run_canary", functools.partial(
        run_canary, timeout=BOUND, servers=site.servers, node_addresses=site.node_addresses))
    save_build(topology)
    stack(B_IP)

    result = handler({}, LambdaContext())
    assert result["truth"]["node"] == "Server-B"
    assert {p["outcome"] for p in result["paths"]} == {"wrong_answer"}


def test_handler_without_a_build_is_a_configuration_error(stack, handler):
    with pytest.raises(ConfigurationError, match="run a build first"):
        handler({}, LambdaContext())


# --- the command line ---------------------------------------------------------------------------------


def cli_args(site: Site, *extra: str) -> list[str]:
    args = ["canary", "run", "--expect", A_IP, "--timeout", str(BOUND)]
    for path, (host, port) in site.servers.items():
        args += ["--server-map", f"{path}={host}:{port}"]
    for node, (host, port) in site.node_addresses.items():
        args += ["--node-map", f"{node}={host}:{port}"]
    return args + list(extra)


def test_cli_prints_a_table_and_exits_0_when_all_paths_succeed(site_factory, capsys):
    site = site_factory()
    assert main(cli_args(site)) == 0
    out = capsys.readouterr().out.splitlines()
    assert "record -> 10.0.110.10 (Server-A)" in out[0]
    assert out[1].split() == ["PATH", "OUTCOME", "ANSWER", "TRUTH?", "NODE", "LATENCY"]
    rows = {line.split()[0]: line.split()[1:5] for line in out[2:]}
    assert rows == {path: ["ok", A_IP, "yes", "Server-A"] for path in PATHS}


def test_cli_exits_1_when_a_path_fails(site_factory, capsys):
    site = site_factory({"osaka-bind": drop()})
    assert main(cli_args(site, "--interval", "0.01", "--count", "2", "--json")) == 1
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(runs) == 2
    assert all({p["path"]: p["outcome"] for p in r["paths"]}["osaka-bind"] == "timeout" for r in runs)


@pytest.mark.parametrize(
    "extra",
    [["--server-map", "osaka-bind"], ["--server-map", "nope=127.0.0.1:53"], ["--expect", "not-an-ip"],
     ["--node-map", "Server-A=127.0.0.1:0"]],
)
def test_cli_bad_overrides_exit_2(site_factory, capsys, extra):
    assert main([*cli_args(site_factory()), *extra]) == 2
    assert "regionha canary run:" in capsys.readouterr().err


def test_a_dispatched_run_makes_no_aws_call(topology, site_factory, stack, handler, monkeypatch, call_counter):
    """Inside the client VPC the canary reaches no AWS API: the dispatcher hands it topology and truth."""
    site = site_factory()
    monkeypatch.setattr(canary, "run_canary", functools.partial(
        run_canary, timeout=BOUND, servers=site.servers, node_addresses=site.node_addresses))
    monkeypatch.setenv("REGIONHA_METRICS_SINK", "emf")
    event = {"topology": topology.to_json(), "truth": {"ip": A_IP, "ttl": 60, "node": "Server-A"},
             "time": "2026-11-25T10:00:00Z"}

    result = handler(event, LambdaContext())

    assert result["truth"] == {"ip": A_IP, "ttl": 60, "node": "Server-A"}
    assert all(p["outcome"] == "ok" for p in result["paths"])
    assert call_counter.calls == []
