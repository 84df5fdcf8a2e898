"""Benchmark: every failure kind of issue 14 in one run, detected by the real controller (moto in-process,
the ``failover.check_node`` seam scripted per kind) on an emulated clock, against Route 53
health-check-style detectors (3 failures at 10 s and at 30 s) on the same clock. Prints figures;
asserts nothing. No network, no root.

Per kind and run: the failure starts at a random second of the scheduled minute; the controller runs
as deployed (an EC2 state-change event for stops, else the scheduled invocation looping every
``check_interval_seconds``); a timed-out check costs ``failover.check_timeout_seconds`` of clock. Figures:
detection (failure → decision), record INSYNC (moto is INSYNC at once, so + the change's own time),
and on-prem answering the new node, bounded by INSYNC + the record TTL (the rendered caches never
keep it longer: tests/unit/test_bind.py proves that bound with a real named).

    python benchmarks/failure_kinds.py [--runs N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from dataclasses import dataclass

for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "ap-southeast-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
}.items():
    os.environ[key] = value
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from regionha import failover  # noqa: E402
from regionha.aws import Clients, tag_spec, tags  # noqa: E402
from regionha.converge.dns import converge_private_zone, read_record, upsert_record  # noqa: E402
from regionha.failover import (  # noqa: E402
    ControllerSettings,
    Trigger,
    controller,  # noqa: E402
)
from regionha.topology import load_topology  # noqa: E402
from regionha.watch.canary import NodeCheck  # noqa: E402

T0 = 1_714_555_800.0
TABLE = "regionha-state"
STACK = "ap-southeast-1"
# kind -> (instance action, client answer, peer answer, Route 53 throttles before accepting)
KINDS = {
    "instance stopped": ("stop", "up", "up", 0),
    "instance terminated": ("terminate", "up", "up", 0),
    "node frozen": (None, "timeout", "timeout", 0),
    "service dead": (None, "refused", "refused", 0),
    "region isolated": (None, "timeout", "timeout", 0),
    "client link cut": (None, "timeout", "up", 0),
    "Route 53 throttled x2": (None, "refused", "refused", 2),
}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


@dataclass
class Outcome:
    detected: float | None
    insync: float | None


def world(topology):
    clients = Clients()
    instances = {}
    for node in topology.nodes:
        vpc = topology.vpc(node.vpc)
        ec2 = boto3.client("ec2", region_name=vpc.region)
        vpc_id = ec2.create_vpc(
            CidrBlock=str(vpc.cidr), TagSpecifications=tag_spec("vpc", topology.deployment, vpc.name)
        )
        sub = vpc.subnet(node.subnet)
        subnet = ec2.create_subnet(VpcId=vpc_id["Vpc"]["VpcId"], CidrBlock=str(sub.cidr), AvailabilityZone=sub.az)
        instances[node.name] = ec2.run_instances(
            ImageId="ami-0123456789abcdef0",
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet["Subnet"]["SubnetId"],
            PrivateIpAddress=str(node.ip),
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags(topology.deployment, node.name)}],
        )["Instances"][0]["InstanceId"]
    converge_private_zone(topology, clients, "bench")
    upsert_record(topology, clients, str(topology.primary.ip), poll_seconds=0.01)
    boto3.client("dynamodb", region_name=STACK).create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    )
    return clients, instances


def one_run(topology, kind: str, offset: float) -> Outcome:
    """The failure starts ``offset`` seconds into a scheduled minute; returns seconds from the failure."""
    action, client, peer, throttles = KINDS[kind]
    names = {str(n.ip): n.name for n in topology.nodes}
    clock = Clock(T0)
    failed_at = T0 + offset
    with mock_aws():
        import regionha.local  # noqa: F401  (Route 53 change batches validated as AWS does)

        clients, instances = world(topology)
        left = {"throttles": throttles}

        def throttle(**kwargs):
            if left["throttles"] > 0:
                left["throttles"] -= 1
                from botocore.awsrequest import AWSResponse

                return (
                    AWSResponse("https://route53.amazonaws.com/", 400, {}, None),
                    {
                        "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                        "ResponseMetadata": {"HTTPStatusCode": 400},
                    },
                )
            return None

        clients.route53().meta.events.register("before-call.route53.ChangeResourceRecordSets", throttle)

        def check_node(ip, port, t, *, source=None, **kw):
            name = names[ip]
            answer = "up"
            if name == "Server-A" and clock.t >= failed_at and action is None:
                answer = client if source is None else peer
            if answer == "timeout":
                if source is None:  # a silent node costs the whole timeout (the peer check runs alongside)
                    clock.t += t
                return NodeCheck(ip, False, None, t * 1000, "TimeoutError")
            clock.t += 0.01
            return NodeCheck(
                ip, answer == "up", name if answer == "up" else None, 10.0, None if answer == "up" else "refused"
            )

        failover.check_node = check_node
        settings = ControllerSettings(poll_seconds=0.01, wait_seconds=1, sleep=clock.sleep, now=clock.now)

        def run(trigger):
            return failover.run_controller(
                topology, clients, trigger, table=TABLE, table_region=STACK, settings=settings
            )

        if action is not None:
            clock.t = failed_at
            ec2 = boto3.client("ec2", region_name=topology.region_of(topology.node("Server-A").vpc))
            (ec2.stop_instances if action == "stop" else ec2.terminate_instances)(InstanceIds=[instances["Server-A"]])
            # EventBridge delivers the state change within about a second (an emulated 1 s here).
            clock.t += 1.0
            result = run(Trigger("instance_state", "ev", clock.t, "ap-northeast-1", instances["Server-A"], "stopped"))
            return Outcome(clock.t - failed_at if result.moved else None, clock.t - failed_at if result.moved else None)
        seen: dict[str, float] = {}
        evaluate = controller.run_controller

        def timed(*a, **kw):
            # The moment an evaluation decides (moves the record, or flags the cut client link).
            result = evaluate(*a, **kw)
            if result.moved or result.decision.client_link:
                seen.setdefault("at", clock.t)
            return result

        controller.run_controller = timed  # what watch() calls each interval
        try:
            for minute in range(3):
                clock.t = max(clock.t, T0 + 60 * minute)
                failover.watch(
                    topology,
                    clients,
                    Trigger("health_check", f"hc-{minute}", clock.t, STACK),
                    table=TABLE,
                    table_region=STACK,
                    seconds=55,
                    settings=settings,
                )
                if "at" in seen:
                    break
        finally:
            controller.run_controller = evaluate
        detected = seen["at"] - failed_at if "at" in seen else None
        moved = read_record(topology, clients)["ip"] != str(topology.primary.ip)
        return Outcome(detected, detected if moved else None)


def route53_detector(offset: float, interval: float, threshold: int = 3, rng=random) -> float:
    """Route 53 health checkers probe every ``interval`` s at their own phase; failed after
    ``threshold`` failures in a row (then DNS answers change at once)."""
    phase = rng.uniform(0, interval)
    first = phase if phase >= 0 else phase + interval
    return first + (threshold - 1) * interval


def fmt(xs: list[float]) -> str:
    if not xs:
        return "      -"
    return f"{statistics.mean(xs):6.1f} (max {max(xs):5.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--threshold", type=int, help="failover.failure_threshold (default: the topology's)")
    parser.add_argument("--interval", type=float, help="failover.check_interval_seconds (default: the topology's)")
    parser.add_argument("--timeout", type=float, help="failover.check_timeout_seconds (default: the topology's)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    topology = load_topology()
    given = (
        ("failure_threshold", args.threshold),
        ("check_interval_seconds", args.interval),
        ("check_timeout_seconds", args.timeout),
    )
    detection = {k: v for k, v in given if v}
    if detection:
        topology = topology.model_copy(update={"failover": topology.failover.model_copy(update=detection)})
    ttl = topology.dns.record.ttl
    print(
        f"topology {topology.deployment}: TTL {ttl} s, {topology.failover.failure_threshold} checks "
        f"{topology.failover.check_interval_seconds:g} s apart, timeout {topology.failover.check_timeout_seconds:g} s; "
        f"{args.runs} runs per kind; seconds from the failure, mean (max)"
    )
    print(
        f"{'kind':24} {'detect':>16} {'INSYNC':>16} {'on-prem <=':>16} {'R53 10x3':>9} {'R53 30x3':>9} "
        f"{'vs 10x3':>7} {'vs 30x3':>7}"
    )
    for kind in KINDS:
        outs = [one_run(topology, kind, rng.uniform(0, 60)) for _ in range(args.runs)]
        det = [o.detected for o in outs if o.detected is not None]
        ins = [o.insync for o in outs if o.insync is not None]
        onprem = [x + ttl for x in ins]
        fast = [route53_detector(0, 10, rng=rng) for _ in range(args.runs)]
        slow = [route53_detector(0, 30, rng=rng) for _ in range(args.runs)]

        def ratio(r: list[float], det: list[float] = det) -> str:
            return f"{statistics.mean(det) / statistics.mean(r):7.2f}" if det else "      -"

        note = "" if ins or kind != "client link cut" else "  (no failover, ClientLinkDown: as designed)"
        print(
            f"{kind:24} {fmt(det):>16} {fmt(ins):>16} {fmt(onprem):>16} {statistics.mean(fast):9.1f} "
            f"{statistics.mean(slow):9.1f} {ratio(fast)} {ratio(slow)}{note}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
