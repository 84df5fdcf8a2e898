"""The failover controller: the pure decision table, the DNS resource and the controller against moto.

Nodes' service ports are real HTTP servers (``NodeService``) on 127.0.0.1, reached through the
``service_endpoint`` seam; the netguard socket guard is on, so a mapping mistake fails instead of
sending a packet anywhere but loopback.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import moto  # noqa: F401  (registers moto's request hook for every boto3 session made later)
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError

from inprocess import NodeService
from regionha import failover, netguard, record
from regionha.aws import Clients, tag_spec, tags
from regionha.converge.dns import converge_private_zone, read_record, upsert_record
from regionha.errors import ConfigurationError, TransientError
from regionha.failover import (
    ControllerSettings,
    Decision,
    Fence,
    RetryPolicy,
    Trigger,
    activate,
    claim_fence,
    deactivate,
    manual_switch,
    monitor,
    read_fence,
    run_controller,
)
from regionha.topology import Failover

ROOT = Path(__file__).resolve().parents[2]
STACK_REGION = "ap-southeast-1"
T0 = 1_714_555_800.0  # 2024-05-01T09:30:00Z
IDS = {"Server-A": "i-aaaa", "Server-B": "i-bbbb"}
A_IP, B_IP = "10.0.110.10", "10.1.110.10"
AMI = "ami-0123456789abcdef0"  # moto does not check it; looking up a real one takes seconds


def with_failover(topology, **kwargs):
    return topology.model_copy(update={"failover": Failover(**kwargs)})



def test_a_node_answering_as_another_is_not_healthy(topology, node_services, moto_world):
    # Server-A's address answers, but as Server-B: the name would lead clients to the wrong node.
    failover_endpoints = {"Server-A": node_services["Server-B"], "Server-B": node_services["Server-B"]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(failover, "service_endpoint", lambda n: ("127.0.0.1", failover_endpoints[n.name].port))
        health = failover.node_health(
            topology, failover.node_instances(topology, moto_world.clients), sleep=lambda s: None
        )
    assert not health["Server-A"].healthy and "answers as 'Server-B'" in health["Server-A"].detail
    assert health["Server-B"].healthy


# --- the AWS world (moto) ---------------------------------------------------------------------------


@functools.cache
def _helper_session() -> boto3.session.Session:
    # Made after moto is imported (see the imports), so moto's request hook is in every client.
    return boto3.session.Session()


@functools.cache
def helper(service: str, region: str = STACK_REGION):
    """Test-side clients: from a session of their own, so ``call_counter`` sees only the code under
    test, and cached across tests (making a client costs about 0.1 s)."""
    return _helper_session().client(service, region_name=region)


@functools.cache
def template() -> dict:
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse((ROOT / "template.yaml").read_text())


def create_table(logical_id: str, name: str) -> str:
    """A table shaped exactly as template.yaml declares it."""
    props = template()["Resources"][logical_id]["Properties"]
    ddb = helper("dynamodb")
    ddb.create_table(
        TableName=name,
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode=props["BillingMode"],
    )
    if "TimeToLiveSpecification" in props:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
    return name


@dataclass
class World:
    topology: object
    clients: Clients
    instances: dict[str, str]  # node name -> instance id
    table: str

    def ec2(self, node: str):
        return helper("ec2", self.topology.region_of(self.topology.node(node).vpc))


def build_world(topology, clients: Clients) -> World:
    """The nodes' VPCs, subnets and instances, the private zone with the record on the primary, the
    state table: what the build leaves behind, made directly with the same tags."""
    dep = topology.deployment
    instances = {}
    for node in topology.nodes:
        vpc = topology.vpc(node.vpc)
        ec2 = helper("ec2", vpc.region)
        vpc_id = ec2.create_vpc(CidrBlock=str(vpc.cidr), TagSpecifications=tag_spec("vpc", dep, vpc.name))[
            "Vpc"
        ]["VpcId"]
        subnet = vpc.subnet(node.subnet)
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(subnet.cidr), AvailabilityZone=subnet.az)[
            "Subnet"
        ]["SubnetId"]
        instances[node.name] = ec2.run_instances(
            ImageId=AMI,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_id,
            PrivateIpAddress=str(node.ip),
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [*tags(dep, node.name), {"Key": "regionha:role", "Value": "node"}],
                }
            ],
        )["Instances"][0]["InstanceId"]
    converge_private_zone(topology, clients, "run-1")
    upsert_record(topology, clients, str(topology.primary.ip))
    return World(topology, clients, instances, create_table("StateTable", "regionha-state"))


@pytest.fixture
def local_only(monkeypatch):
    """Local mode and the socket guard: anything but loopback raises instead of leaving the machine."""
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    netguard.install_socket_guard()
    yield
    netguard.uninstall_socket_guard()


@pytest.fixture
def node_services(local_only, monkeypatch):
    """A real HTTP service per node on 127.0.0.1, where the controller's port checks go."""
    from regionha.topology import load_topology

    services = {n.name: NodeService(n.name, "127.0.0.1", 0) for n in load_topology().nodes}
    for s in services.values():
        s.start()
    monkeypatch.setattr(failover, "service_endpoint", lambda node: ("127.0.0.1", services[node.name].port))
    yield services
    for s in services.values():
        s.stop()


@pytest.fixture
def metrics_to_cloudwatch(monkeypatch):
    monkeypatch.setenv("REGIONHA_METRICS_SINK", "cloudwatch")


@pytest.fixture
def moto_world(monkeypatch, call_counter, topology) -> World:
    # moto loads ~1300 default AMIs per region otherwise (half a second each); no test needs them.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    return build_world(topology, Clients())


def stop_node(world: World, services: dict[str, NodeService], node: str) -> None:
    world.ec2(node).stop_instances(InstanceIds=[world.instances[node]])
    services[node].stop()


def start_node(world: World, services: dict[str, NodeService], node: str) -> None:
    world.ec2(node).start_instances(InstanceIds=[world.instances[node]])
    services[node].start()


def metric_sums(deployment: str) -> dict[str, float]:
    """Sum of every regionha metric the controller published with PutMetricData."""
    cw = helper("cloudwatch")
    now = datetime.now(UTC)
    sums: dict[str, float] = {}
    for m in cw.list_metrics(Namespace="regionha")["Metrics"]:
        assert m["Dimensions"] == [{"Name": "Deployment", "Value": deployment}]
        data = cw.get_metric_data(
            MetricDataQueries=[
                {"Id": "m", "MetricStat": {"Metric": m, "Period": 60, "Stat": "Sum"}, "ReturnData": True}
            ],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(hours=1),
        )["MetricDataResults"][0]["Values"]
        sums[m["MetricName"]] = sum(data)
    return sums


def route53_writes(counter) -> list[tuple[str, str]]:
    return [c for c in counter.mutating if c[0] == "route-53"]


FAST = ControllerSettings(poll_seconds=0.01, wait_seconds=1, sleep=lambda s: None)


def run(world: World, trigger: Trigger, settings: ControllerSettings = FAST, topology=None):
    return run_controller(
        topology or world.topology,
        world.clients,
        trigger,
        table=world.table,
        table_region=STACK_REGION,
        settings=settings,
    )


def stopped_event(world: World, node: str, at: float, event_id: str = "ev-stop") -> Trigger:
    return Trigger("instance_state", event_id, at, "ap-northeast-1", world.instances[node], "stopped")


# --- the DNS resource -------------------------------------------------------------------------------


def test_monitor_never_writes(moto_world, call_counter):
    before, writes = len(call_counter.calls), len(call_counter.mutating)
    status_a = monitor(moto_world.topology, moto_world.clients, "Server-A")
    status_b = monitor(moto_world.topology, moto_world.clients, "Server-B")
    assert status_a.names_active and status_a.ttl_matches and status_a.ip == A_IP
    assert not status_b.names_active and status_b.node == "Server-A"
    assert ("route-53", "ListResourceRecordSets") in call_counter.calls[before:], "monitor must read Route 53"
    assert call_counter.mutating[writes:] == []


def test_deactivate_leaves_the_record_unless_asked(moto_world, call_counter):
    topo, clients = moto_world.topology, moto_world.clients
    writes = len(call_counter.mutating)
    assert [o.action for o in deactivate(topo, clients, "Server-A")] == ["unchanged"]
    assert [o.action for o in deactivate(topo, clients, "Server-B", delete=True)] == ["unchanged"]
    assert len(call_counter.mutating) == writes and read_record(topo, clients)["ip"] == A_IP
    assert [o.action for o in deactivate(topo, clients, "Server-A", delete=True)] == ["deleted"]
    assert read_record(topo, clients) is None
    assert [o.action for o in deactivate(topo, clients, "Server-A", delete=True)] == ["absent"]


def test_activate_moves_the_record_and_is_idempotent(moto_world, call_counter):
    topo, clients = moto_world.topology, moto_world.clients
    assert [o.action for o in activate(topo, clients, "Server-B", poll_seconds=0.01)] == ["updated"]
    writes = len(call_counter.mutating)
    assert [o.action for o in activate(topo, clients, "Server-B", poll_seconds=0.01)] == ["unchanged"]
    assert len(call_counter.mutating) == writes
    assert read_record(topo, clients) == {"name": "sample.cluster.local.", "ip": B_IP, "ttl": 60}
    with pytest.raises(ConfigurationError):
        activate(topo, clients, "Server-C")


def throttle(clients: Clients, operation: str, times: int | None, code: str = "Throttling"):
    """Answer ``operation`` with a throttling error ``times`` times (None: always), before any HTTP
    request, so botocore's own retries do not run and every attempt is ours."""
    seen = {"n": 0}

    def hook(**kwargs):
        seen["n"] += 1
        if times is None or seen["n"] <= times:
            error = {
                "Error": {"Code": code, "Message": "Rate exceeded"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            return AWSResponse("https://route53.amazonaws.com/", 400, {}, None), error
        return None

    clients.route53().meta.events.register(f"before-call.route53.{operation}", hook)
    return seen


@pytest.mark.parametrize("code", ["Throttling", "PriorRequestNotComplete"])
def test_route53_throttling_is_retried_with_backoff(moto_world, code):
    sleeps: list[float] = []
    seen = throttle(moto_world.clients, "ChangeResourceRecordSets", 2, code)
    policy = RetryPolicy(attempts=4, base_seconds=0.5, cap_seconds=8)
    activate(
        moto_world.topology,
        moto_world.clients,
        "Server-B",
        poll_seconds=0.01,
        retry=policy,
        sleep=sleeps.append,
    )
    assert seen["n"] == 3
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP


def test_route53_throttling_retries_are_bounded(moto_world):
    sleeps: list[float] = []
    seen = throttle(moto_world.clients, "ChangeResourceRecordSets", None)
    with pytest.raises(TransientError, match="still throttled after 3 attempts"):
        activate(
            moto_world.topology,
            moto_world.clients,
            "Server-B",
            retry=RetryPolicy(attempts=3),
            sleep=sleeps.append,
        )
    assert seen["n"] == 3 and len(sleeps) == 2
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == A_IP


def test_other_route53_errors_are_not_retried(moto_world):
    seen = throttle(moto_world.clients, "ChangeResourceRecordSets", None, code="AccessDenied")
    with pytest.raises(ClientError):
        activate(moto_world.topology, moto_world.clients, "Server-B", sleep=lambda s: None)
    assert seen["n"] == 1


def answer_changes_pending(r53, poll):
    """Route 53 answers every change PENDING, and ``poll(**kwargs)`` answers its GetChange calls."""

    def pending_change(parsed, **kwargs):
        parsed["ChangeInfo"]["Status"] = "PENDING"

    r53.meta.events.register("after-call.route53.ChangeResourceRecordSets", pending_change)
    r53.meta.events.register("before-call.route53.GetChange", poll)


def test_insync_wait_is_bounded(moto_world):
    # Route 53 answers PENDING and never reaches INSYNC.
    r53 = moto_world.clients.route53()
    polls = {"n": 0}

    def pending_poll(**kwargs):
        polls["n"] += 1
        change = {"Id": "/change/C1", "Status": "PENDING", "SubmittedAt": "2024-01-01T00:00:00Z"}
        return AWSResponse("https://route53.amazonaws.com/", 200, {}, None), {"ChangeInfo": change}

    answer_changes_pending(r53, pending_poll)
    with pytest.raises(TransientError, match="PENDING"):
        activate(moto_world.topology, moto_world.clients, "Server-B", wait_seconds=0.05, poll_seconds=0.01)
    assert polls["n"] == math.ceil(0.05 / 0.01)


# --- the controller ---------------------------------------------------------------------------------


def test_active_node_stops_record_moves_to_standby(moto_world, node_services, metrics_to_cloudwatch):
    stop_node(moto_world, node_services, "Server-A")
    result = run(
        moto_world,
        stopped_event(moto_world, "Server-A", T0),
        ControllerSettings(poll_seconds=0.01, now=lambda: T0 + 4.5),
    )
    assert result.decision.action == "failover" and result.moved and result.generation == 1
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, "regionha-ref")
    assert (fence.generation, fence.active, fence.changed_at, fence.event_id) == (
        1,
        "Server-B",
        T0,
        "ev-stop",
    )
    assert metric_sums("regionha-ref") == {
        "FailoverStarted": 1,
        "FailoverCompleted": 1,
        "FailoverSeconds": 4.5,
    }


def test_a_move_whose_insync_wait_fails_after_the_fence_is_still_a_completed_failover(
    moto_world, node_services, metrics_to_cloudwatch
):
    """Route 53 accepted the move (PENDING) and the fence recorded it; then GetChange is throttled past
    botocore's retries. Raising now would make Lambda's retry a screened-out duplicate: the failover would
    never be reported. It is reported, and the record and the fence agree."""
    r53 = moto_world.clients.route53()
    polls = {"n": 0}

    def throttled_poll(**kwargs):
        polls["n"] += 1
        error = {"Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://route53.amazonaws.com/", 400, {}, None), error

    answer_changes_pending(r53, throttled_poll)
    stop_node(moto_world, node_services, "Server-A")
    result = run(moto_world, stopped_event(moto_world, "Server-A", T0),
                 ControllerSettings(poll_seconds=0.01, now=lambda: T0 + 4.5, sleep=lambda s: None))

    assert polls["n"] >= 1
    assert result.decision.action == "failover" and result.moved and result.generation == 1
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, "regionha-ref")
    assert (fence.generation, fence.active) == (1, "Server-B")
    assert metric_sums("regionha-ref") == {"FailoverStarted": 1, "FailoverCompleted": 1, "FailoverSeconds": 4.5}


def test_metrics_go_to_emf_by_default(moto_world, node_services, capsys, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "regionha")
    stop_node(moto_world, node_services, "Server-A")
    run(moto_world, stopped_event(moto_world, "Server-A", T0))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = [m["Name"] for line in lines for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    assert names == ["FailoverStarted", "FailoverCompleted", "FailoverSeconds"]
    assert all(
        d["Dimensions"] == [["Deployment"]] for line in lines for d in line["_aws"]["CloudWatchMetrics"]
    )
    assert helper("cloudwatch").list_metrics()["Metrics"] == []


def test_standby_unhealthy_refuses_without_writing(
    moto_world, node_services, call_counter, metrics_to_cloudwatch
):
    stop_node(moto_world, node_services, "Server-A")
    node_services["Server-B"].stop()  # instance running, service down
    writes = len(call_counter.mutating)
    result = run(moto_world, stopped_event(moto_world, "Server-A", T0))
    assert result.decision.action == "refuse" and "Server-B service down" in result.decision.reason
    assert [c for c in call_counter.mutating[writes:] if c[0] not in ("cloudwatch", "monitoring")] == []
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == A_IP
    assert metric_sums("regionha-ref") == {"FailoverRefused": 1, "FailoverStuck": 1}


def test_both_nodes_down(moto_world, node_services, call_counter, metrics_to_cloudwatch):
    stop_node(moto_world, node_services, "Server-A")
    stop_node(moto_world, node_services, "Server-B")
    writes = len(route53_writes(call_counter))
    result = run(moto_world, Trigger("health_check", "hc-1", T0, STACK_REGION))
    assert result.decision.action == "refuse"
    assert result.decision.reason.endswith("(Server-A stopped; Server-B stopped)")
    assert len(route53_writes(call_counter)) == writes
    assert metric_sums("regionha-ref") == {"FailoverRefused": 1, "FailoverStuck": 1}


def test_external_mode_never_writes_the_record(
    moto_world, node_services, call_counter, metrics_to_cloudwatch
):
    external = with_failover(moto_world.topology, mode="external")
    stop_node(moto_world, node_services, "Server-A")
    writes = len(call_counter.mutating)
    for i, trigger in enumerate(
        [stopped_event(moto_world, "Server-A", T0), Trigger("health_check", "hc", T0 + 60, STACK_REGION)]
    ):
        result = run(moto_world, trigger, topology=external)
        assert result.decision.action == "observe" and result.decision.needed, i
    assert [c for c in call_counter.mutating[writes:] if c[0] not in ("cloudwatch", "monitoring")] == []
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == A_IP
    assert metric_sums("regionha-ref") == {"FailoverRefused": 2}


def test_hold_down_then_move_back(moto_world, node_services):
    topo = with_failover(moto_world.topology, hold_down_seconds=120)
    stop_node(moto_world, node_services, "Server-A")
    assert run(moto_world, stopped_event(moto_world, "Server-A", T0), topology=topo).moved
    start_node(moto_world, node_services, "Server-A")
    stop_node(moto_world, node_services, "Server-B")
    held = run(moto_world, stopped_event(moto_world, "Server-B", T0 + 60, "ev-b"), topology=topo)
    assert held.decision.action == "hold_down" and not held.moved
    assert read_record(topo, moto_world.clients)["ip"] == B_IP
    later = run(moto_world, Trigger("health_check", "hc", T0 + 120, STACK_REGION), topology=topo)
    assert later.decision.action == "failover" and later.generation == 2
    assert read_record(topo, moto_world.clients)["ip"] == A_IP


def test_late_running_after_newer_failover_does_nothing(moto_world, node_services, call_counter):
    topo = with_failover(moto_world.topology, failback="automatic", hold_down_seconds=60)
    stop_node(moto_world, node_services, "Server-A")
    assert run(moto_world, stopped_event(moto_world, "Server-A", T0), topology=topo).moved
    start_node(moto_world, node_services, "Server-A")
    writes = len(call_counter.mutating)
    late = Trigger(
        "instance_state", "ev-late", T0 - 30, "ap-northeast-1", moto_world.instances["Server-A"], "running"
    )
    result = run(moto_world, late, topology=topo)
    assert result.decision.action == "ignore" and result.decision.reason.startswith("stale")
    assert call_counter.mutating[writes:] == []
    assert read_record(topo, moto_world.clients)["ip"] == B_IP
    # The same live state, seen by a health check after the hold-down, fails back as configured.
    back = run(moto_world, Trigger("health_check", "hc", T0 + 61, STACK_REGION), topology=topo)
    assert back.decision.failback and back.moved and read_record(topo, moto_world.clients)["ip"] == A_IP


def test_duplicate_event_moves_nothing_twice(moto_world, node_services, call_counter):
    stop_node(moto_world, node_services, "Server-A")
    event = stopped_event(moto_world, "Server-A", T0)
    assert run(moto_world, event).moved
    writes = len(call_counter.mutating)
    again = run(moto_world, event)
    assert again.decision.action == "ignore" and again.decision.reason.startswith("duplicate")
    assert call_counter.mutating[writes:] == []


def test_route53_race_only_one_decider_moves_the_record(moto_world, node_services, call_counter, monkeypatch):
    """Two deciders (the stopping and the stopped event, or the controllers of two regions) read the
    same fence and record, then both try the compare-and-swap: Route 53 accepts exactly one."""
    stop_node(moto_world, node_services, "Server-A")
    both_decided = threading.Barrier(2, timeout=10)
    # Route 53 applies change batches one at a time; moto in threads does not promise it, so the two
    # writes are serialised here, after both deciders have made their decision.
    one_write_at_a_time = threading.Lock()
    original = record.swap_record

    def racing_swap(*args, **kwargs):
        both_decided.wait()
        with one_write_at_a_time:
            return original(*args, **kwargs)

    monkeypatch.setattr(record, "swap_record", racing_swap)
    writes = len(route53_writes(call_counter))
    results: dict[str, object] = {}

    def decider(event_id: str, at: float) -> None:
        results[event_id] = run(moto_world, stopped_event(moto_world, "Server-A", at, event_id))

    threads = [threading.Thread(target=decider, args=(eid, T0)) for eid in ("ev-stopping", "ev-stopped")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    actions = sorted(r.decision.action for r in results.values())
    assert actions == ["failover", "ignore"], [r.decision.reason for r in results.values()]
    loser = next(r for r in results.values() if r.decision.action == "ignore")
    assert loser.decision.reason.startswith("another controller or an operator moved the record first")
    assert not loser.moved and "Server-B" in loser.decision.reason
    assert len(route53_writes(call_counter)) - writes == 1
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, "regionha-ref")
    assert fence.generation == 1


def test_claim_fence_is_conditional_on_the_generation(moto_world):
    ddb = moto_world.clients.client("dynamodb", STACK_REGION)
    seen = read_fence(ddb, moto_world.table, "regionha-ref")
    kwargs = {"active": "Server-B", "changed_at": T0, "reason": "test"}
    first = claim_fence(ddb, moto_world.table, "regionha-ref", seen, event_id="e1", **kwargs)
    assert first == Fence(1, "Server-B", T0, "e1", "test")
    assert claim_fence(ddb, moto_world.table, "regionha-ref", seen, event_id="e2", **kwargs) is None
    second = claim_fence(ddb, moto_world.table, "regionha-ref", first, event_id="e3", **kwargs)
    assert second is not None and second.generation == 2
    assert claim_fence(ddb, moto_world.table, "regionha-ref", first, event_id="e4", **kwargs) is None
    assert read_fence(ddb, moto_world.table, "regionha-ref").event_id == "e3"


def test_manual_switch_is_fenced(moto_world):
    result = failover.manual_switch(
        moto_world.topology,
        moto_world.clients,
        "Server-B",
        table=moto_world.table,
        table_region=STACK_REGION,
        settings=FAST,
    )
    assert result.generation == 1 and read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    assert isinstance(result.decision, Decision) and result.decision.target == "Server-B"


def test_unknown_metrics_sink_is_a_configuration_error(monkeypatch):
    from regionha.watch import metrics

    monkeypatch.setenv("REGIONHA_METRICS_SINK", "statsd")
    with pytest.raises(ConfigurationError, match="REGIONHA_METRICS_SINK"):
        metrics.emit([metrics.Datapoint("FailoverStarted", 1.0)])


def test_port_checks_through_an_unreachable_probe_function_count_as_unhealthy(topology, moto_aws, monkeypatch):
    """On AWS the canary function checks the ports from inside; if it cannot be asked, no node is
    healthy, so the controller refuses instead of failing over blind."""
    from regionha.failover import node_health

    monkeypatch.setenv("CHECK_NODES_FUNCTION", "no-such-function")
    monkeypatch.setenv("AWS_REGION", "ap-southeast-1")
    instances = {n.name: [{"id": f"i-{n.name}", "state": "running"}] for n in topology.nodes}

    health = node_health(topology, instances, timeout=0.5, sleep=lambda s: None)

    assert {h.service for h in health.values()} == {False}
    assert all("check_nodes function" in (h.detail or "") for h in health.values())


# --- failed writes consume nothing; Route 53 arbitrates ------------------------------------------------


def test_a_throttled_failover_consumes_nothing_and_its_retry_moves_at_once(
    moto_world, node_services, metrics_to_cloudwatch
):
    # GIVEN the active node stopped and Route 53 throttling every write past the retries
    stop_node(moto_world, node_services, "Server-A")
    seen = throttle(moto_world.clients, "ChangeResourceRecordSets", 4)
    event = stopped_event(moto_world, "Server-A", T0)
    settings = ControllerSettings(poll_seconds=0.01, wait_seconds=1, sleep=lambda s: None, retry=RetryPolicy(4))
    # WHEN the controller runs THEN it fails (Lambda retries the event), bounded, having written nothing
    with pytest.raises(TransientError, match="not written"):
        run(moto_world, event, settings)
    assert seen["n"] == 4
    ddb = moto_world.clients.client("dynamodb", STACK_REGION)
    assert read_fence(ddb, moto_world.table, "regionha-ref") == Fence()
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == A_IP
    assert metric_sums("regionha-ref") == {"FailoverStarted": 1, "FailoverStuck": 1}
    # WHEN Lambda retries the same event (Route 53 accepts writes again) THEN it moves the record now
    retry = run(moto_world, event, settings)
    assert retry.moved and retry.generation == 1
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    assert read_fence(ddb, moto_world.table, "regionha-ref").event_id == "ev-stop"


def test_a_route53_outage_is_stuck_not_consumed(moto_world, node_services, metrics_to_cloudwatch):
    # Route 53 erroring (not throttling): no retries of ours (botocore's standard mode has its own),
    # FailoverStuck, and the next health check inside the hold-down still moves the record.
    stop_node(moto_world, node_services, "Server-A")
    throttle(moto_world.clients, "ChangeResourceRecordSets", 1, code="ServiceUnavailable")
    with pytest.raises(TransientError, match="not written"):
        run(moto_world, stopped_event(moto_world, "Server-A", T0))
    later = run(moto_world, Trigger("health_check", "hc-1", T0 + 30, STACK_REGION))
    assert later.moved and read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    assert metric_sums("regionha-ref")["FailoverStuck"] == 1


def test_swap_refuses_a_record_someone_else_changed(moto_world, call_counter):
    from regionha.record import RecordChanged, swap_record

    topo, clients = moto_world.topology, moto_world.clients
    # The record moved to Server-B after we read Server-A: our swap must not overwrite it.
    upsert_record(topo, clients, B_IP, poll_seconds=0.01)
    writes = len(route53_writes(call_counter))
    with pytest.raises(RecordChanged, match="holds 10.1.110.10, expected 10.0.110.10"):
        swap_record(topo, clients, A_IP, "10.1.110.99")
    assert len(route53_writes(call_counter)) == writes
    swap = swap_record(topo, clients, B_IP, A_IP)
    assert swap.outcome.action == "updated" and swap.change is not None
    assert read_record(topo, clients)["ip"] == A_IP


def test_a_record_given_an_extra_value_still_fails_over(moto_world, node_services, metrics_to_cloudwatch):
    # An operator or a tool added a second address to the record: it still names the failed node first
    # (half the clients use it). The compare-and-swap deletes the set exactly as read and creates the
    # single-value record, instead of taking the set for another controller's move and doing nothing.
    topo = moto_world.topology
    zone = helper("route53").list_hosted_zones()["HostedZones"][0]["Id"]
    both = [{"Value": A_IP}, {"Value": "10.0.110.99"}]
    helper("route53").change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT",
        "ResourceRecordSet": {"Name": topo.dns.record.name, "Type": "A", "TTL": 60, "ResourceRecords": both}}]})
    stop_node(moto_world, node_services, "Server-A")
    result = run(moto_world, stopped_event(moto_world, "Server-A", T0))
    assert result.decision.action == "failover" and result.moved, result.decision.reason
    assert record.values(record.record_set(moto_world.clients.route53(), zone, topo.dns.record.name)) == [B_IP]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ([("DELETE", A_IP, 60), ("CREATE", B_IP, 60)], None),
        ([("DELETE", B_IP, 60), ("CREATE", B_IP, 60)], "do not match the current"),
        ([("DELETE", A_IP, 300), ("CREATE", B_IP, 60)], "do not match the current"),
        ([("CREATE", B_IP, 60)], "already exists"),
        ([("DELETE", A_IP, 60), ("DELETE", A_IP, 60)], "was not found"),
        ([("DELETE", A_IP, 60), ("CREATE", B_IP, 60), ("CREATE", B_IP, 60)], "already exists"),
    ],
    ids=["exact swap", "stale value", "stale ttl", "create over existing", "delete twice", "create twice"],
)
def test_the_twin_validates_change_batches_as_route53_does(moto_world, changes, message):
    """AWS validates a batch whole and applies all or nothing; moto alone accepts a DELETE of any value
    ever written and a CREATE of an existing name (regionha.local.aws.route53 closes both)."""
    import inprocess  # noqa: F401  (installs the twin's Route 53 validation)
    from regionha.record import zone_id_or_raise

    r53 = moto_world.clients.route53()
    upsert_record(moto_world.topology, moto_world.clients, B_IP, poll_seconds=0.01)  # B once written
    upsert_record(moto_world.topology, moto_world.clients, A_IP, poll_seconds=0.01)  # A now
    batch = [
        {
            "Action": action,
            "ResourceRecordSet": {
                "Name": "sample.cluster.local.", "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": ip}]
            },
        }
        for action, ip, ttl in changes
    ]
    zone = zone_id_or_raise(r53, moto_world.topology)
    if message is None:
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": batch})
        assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
        return
    with pytest.raises(ClientError, match=message) as e:
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": batch})
    assert e.value.response["Error"]["Code"] == "InvalidChangeBatch"
    sets = r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert [(s["TTL"], s["ResourceRecords"]) for s in sets if s["Type"] == "A"] == [(60, [{"Value": A_IP}])]


@pytest.mark.parametrize("twin", [True, False], ids=["twin", "plain moto"])
def test_the_record_swaps_back_and_forth_and_refuses_a_stale_value(moto_world, twin):
    """Failover, failback, failover again: each swap's CREATE repeats an earlier one, which moto's
    journal refuses although the batch's DELETE frees the name (AWS does not); the product copes with
    plain moto too, and a stale expectation is still refused."""
    from inprocess import twin_route53
    from regionha.record import RecordChanged, swap_record

    if not twin:
        twin_route53.uninstall()
    try:
        topo, clients = moto_world.topology, moto_world.clients
        for frm, to in [(A_IP, B_IP), (B_IP, A_IP), (A_IP, B_IP), (B_IP, A_IP)]:
            assert swap_record(topo, clients, frm, to).outcome.action == "updated"
            assert read_record(topo, clients)["ip"] == to
        with pytest.raises(RecordChanged):
            swap_record(topo, clients, B_IP, "10.1.110.99")
        assert read_record(topo, clients)["ip"] == A_IP
    finally:
        twin_route53.install()


def test_a_controller_in_another_region_fails_over_without_the_stack_region(
    moto_world, node_services, monkeypatch
):
    """The controller's own region down: the other cluster region's controller (its own state table,
    or none readable at all) still moves the record, and Route 53 keeps the two from both writing."""
    stop_node(moto_world, node_services, "Server-A")
    # A controller whose state table cannot be read (its region is the one that is down)
    broken = moto_world.clients.client("dynamodb", STACK_REGION)

    def unreachable(**kwargs):
        from botocore.exceptions import EndpointConnectionError

        raise EndpointConnectionError(endpoint_url="https://dynamodb.ap-southeast-1.amazonaws.com")

    broken.meta.events.register("before-call.dynamodb.GetItem", unreachable)
    broken.meta.events.register("before-call.dynamodb.PutItem", unreachable)
    osaka = run(moto_world, Trigger("health_check", "hc-osaka", T0, "ap-northeast-3"))
    assert osaka.moved and read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    broken.meta.events.unregister("before-call.dynamodb.GetItem", unreachable)
    broken.meta.events.unregister("before-call.dynamodb.PutItem", unreachable)
    # The Tokyo controller (back, or late) decided on the old value: its swap writes nothing.
    from regionha.record import swap_record

    assert swap_record(moto_world.topology, moto_world.clients, A_IP, B_IP).change is None
    # and its next run sees the record on a healthy node
    assert run(moto_world, Trigger("health_check", "hc-tokyo", T0 + 5, STACK_REGION)).decision.action == "nothing"


@pytest.mark.parametrize("serves", [False, True], ids=["region lost", "only its API lost"])
def test_a_region_whose_ec2_api_is_down_is_judged_by_its_ports(moto_world, node_services, serves):
    """The controller of the other region runs on while the active node's region is down: EC2 there does
    not answer (bounded, seconds), so the node's state is unknown and its port checks decide."""
    from botocore.exceptions import EndpointConnectionError

    from regionha.failover.health import BOUNDED

    tokyo = moto_world.clients.client("ec2", "ap-northeast-1", config=BOUNDED)

    def unreachable(**kwargs):
        raise EndpointConnectionError(endpoint_url="https://ec2.ap-northeast-1.amazonaws.com")

    tokyo.meta.events.register("before-call.ec2.DescribeInstances", unreachable)
    try:
        if not serves:
            node_services["Server-A"].stop()
        result = run(moto_world, Trigger("health_check", "hc-osaka", T0, "ap-northeast-3"))
    finally:
        tokyo.meta.events.unregister("before-call.ec2.DescribeInstances", unreachable)
    assert result.health["Server-A"].instance_state == "unknown"
    assert result.moved is not serves
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == (A_IP if serves else B_IP)


@pytest.mark.parametrize("serves", [False, True], ids=["node down", "node serves"])
def test_a_state_change_event_while_its_regions_ec2_api_blips_is_judged_by_the_ports(
    moto_world, node_services, serves
):
    """The EventBridge event of a node's instance arrives while DescribeInstances in its region fails
    (throttled past botocore's retries, a timeout): the instance cannot be matched to a node, but that is
    no sign it is foreign. The event is not dropped; the node's port checks decide, threshold and all."""
    from botocore.exceptions import ReadTimeoutError

    from regionha.failover.health import BOUNDED

    tokyo = moto_world.clients.client("ec2", "ap-northeast-1", config=BOUNDED)

    def blip(**kwargs):
        raise ReadTimeoutError(endpoint_url="https://ec2.ap-northeast-1.amazonaws.com")

    if not serves:
        stop_node(moto_world, node_services, "Server-A")
    tokyo.meta.events.register("before-call.ec2.DescribeInstances", blip)
    try:
        event = Trigger("instance_state", "ev-a", T0, "ap-northeast-1", moto_world.instances["Server-A"],
                        "running" if serves else "stopped")
        result = run(moto_world, event)
    finally:
        tokyo.meta.events.unregister("before-call.ec2.DescribeInstances", blip)
    assert result.decision.action == ("nothing" if serves else "failover"), result.decision.reason
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == (A_IP if serves else B_IP)
    # A truly foreign instance is still ignored when every region answered.
    foreign = Trigger("instance_state", "ev-x", T0 + 1, "ap-northeast-1", "i-0123456789abcdef0", "stopped")
    assert run(moto_world, foreign).decision.reason.endswith("is not a cluster node")


# --- a write Route 53 applied but whose answer was lost (read timeout, dropped connection) --------------
# The move happened, so it is recorded like any other (fence generation, event id, hold-down); else the
# next evaluation sees the new record as nobody's change and an automatic failback flips it back unheld.

def lose_answer(clients, times: int = 1) -> dict[str, int]:
    """Let ChangeResourceRecordSets reach Route 53 (moto applies it), then lose its answer ``times``."""
    seen = {"n": 0}

    def hook(**kwargs):
        seen["n"] += 1
        if seen["n"] <= times:
            raise ReadTimeoutError(endpoint_url="https://route53.amazonaws.com/")

    clients.route53().meta.events.register("after-call.route53.ChangeResourceRecordSets", hook)
    return seen


def test_a_failover_applied_whose_answer_was_lost_is_recorded(moto_world, node_services, metrics_to_cloudwatch):
    topo = with_failover(moto_world.topology, failback="automatic", hold_down_seconds=120)
    stop_node(moto_world, node_services, "Server-A")
    lose_answer(moto_world.clients)
    event = stopped_event(moto_world, "Server-A", T0)
    first = run(moto_world, event, FAST, topology=topo)
    # The record did move; the controller knows it from reading the record back, not from the answer.
    assert read_record(topo, moto_world.clients)["ip"] == B_IP
    assert first.decision.action == "failover" and first.moved and first.generation == 1
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, "regionha-ref")
    assert (fence.generation, fence.active, fence.event_id) == (1, "Server-B", "ev-stop")
    assert metric_sums("regionha-ref")["FailoverCompleted"] == 1
    # Server-A is back at once: the automatic failback waits out the hold-down of the move that happened.
    start_node(moto_world, node_services, "Server-A")
    held = run(moto_world, Trigger("health_check", "hc-1", T0 + 30, STACK_REGION), FAST, topology=topo)
    assert held.decision.action == "hold_down" and read_record(topo, moto_world.clients)["ip"] == B_IP
    back = run(moto_world, Trigger("health_check", "hc-2", T0 + 121, STACK_REGION), FAST, topology=topo)
    assert back.moved and read_record(topo, moto_world.clients)["ip"] == A_IP


def test_a_lost_answer_of_a_write_route53_did_not_apply_is_retried_afresh(moto_world, node_services):
    # The request never reached Route 53 (the hook fires before the call): nothing moved, nothing recorded.
    stop_node(moto_world, node_services, "Server-A")

    def unreachable(**kwargs):
        raise ReadTimeoutError(endpoint_url="https://route53.amazonaws.com/")

    r53 = moto_world.clients.route53()
    r53.meta.events.register("before-call.route53.ChangeResourceRecordSets", unreachable)
    with pytest.raises(TransientError, match="not written"):
        run(moto_world, stopped_event(moto_world, "Server-A", T0), FAST)
    r53.meta.events.unregister("before-call.route53.ChangeResourceRecordSets", unreachable)
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == A_IP
    ddb = moto_world.clients.client("dynamodb", STACK_REGION)
    assert read_fence(ddb, moto_world.table, "regionha-ref").generation == 0
    assert run(moto_world, stopped_event(moto_world, "Server-A", T0), FAST).moved


def test_a_batch_botocore_resent_after_a_lost_answer_is_recognised_as_ours(moto_world, node_services):
    # botocore's standard retry mode re-sends a request whose answer it lost; Route 53 had applied the
    # first copy, so the second is refused with InvalidChangeBatch (its DELETE no longer matches). That
    # refusal, with RetryAttempts > 0 and the record naming our target, is our own move.
    stop_node(moto_world, node_services, "Server-A")
    seen: dict = {"n": 0}

    def keep(params, **kwargs):
        seen["params"] = dict(params)

    def applied_then_resent(**kwargs):
        seen["n"] += 1
        if seen["n"] > 1:
            return None
        helper("route53").change_resource_record_sets(**seen["params"])  # the first copy lands
        error = {
            "Error": {"Code": "InvalidChangeBatch", "Message": "Tried to delete resource record set but not found"},
            "ResponseMetadata": {"HTTPStatusCode": 400, "RetryAttempts": 1},
        }
        return AWSResponse("https://route53.amazonaws.com/", 400, {}, None), error

    events = moto_world.clients.route53().meta.events
    events.register("provide-client-params.route53.ChangeResourceRecordSets", keep)
    events.register("before-call.route53.ChangeResourceRecordSets", applied_then_resent)
    result = run(moto_world, stopped_event(moto_world, "Server-A", T0), FAST)
    assert result.moved and result.generation == 1
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, "regionha-ref")
    assert (fence.generation, fence.active, fence.event_id) == (1, "Server-B", "ev-stop")


def test_a_manual_switch_applied_whose_answer_was_lost_is_recorded(moto_world):
    lose_answer(moto_world.clients)
    result = manual_switch(
        moto_world.topology, moto_world.clients, "Server-B", table=moto_world.table, table_region=STACK_REGION,
        settings=FAST,
    )
    assert result.moved and result.generation == 1
    assert read_record(moto_world.topology, moto_world.clients)["ip"] == B_IP
    fence = read_fence(moto_world.clients.client("dynamodb", STACK_REGION), moto_world.table, "regionha-ref")
    assert (fence.generation, fence.active) == (1, "Server-B")
